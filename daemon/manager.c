/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <fcntl.h>
#include <malloc.h>
#include <signal.h>
#include <sys/stat.h>

#include <systemd/sd-daemon.h>

#include "config.h"
#include "authz.h"
#include "btrfs-util.h"
#include "errors.h"
#include "exec.h"
#include "image-dbus.h"
#include "job-dbus.h"
#include "machine-dbus.h"
#include "manager-dbus.h"
#include "owners.h"
#include "operation.h"
#include "pool.h"
#include "snapshots.h"

static void image_free_void(gpointer p)
{
        image_free(p);
}

int manager_new(Manager **ret)
{
        _cleanup_(manager_freep) Manager *m = NULL;
        int k;

        m = calloc(1, sizeof *m);
        if (!m)
                return -ENOMEM;
        m->store_fd = -1;
        m->next_job_id = 1;
        m->idle_timeout_usec = (uint64_t) DEFAULT_IDLE_TIMEOUT_SEC * USEC_PER_SEC;
        m->busy_images = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
        m->image_readers = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
        m->operations_per_caller = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
        m->jobs = g_hash_table_new(g_direct_hash, g_direct_equal);
        m->machines = g_hash_table_new(g_str_hash, g_str_equal);
        m->execs = g_hash_table_new(g_direct_hash, g_direct_equal);
        m->image_cache = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, image_free_void);
        m->uuid_hints = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, g_free);
        m->images_pending = g_hash_table_new(g_direct_hash, g_direct_equal);
        settings_defaults(&m->settings);

        k = sd_event_default(&m->event);
        if (k < 0)
                return k;
        k = authz_new(m->event, &m->authz);
        if (k < 0)
                return k;

        *ret = TAKE_PTR(m);
        return 0;
}

Manager *manager_free(Manager *m)
{
        if (!m)
                return NULL;

        /* Worker threads may still be in an act that uses the Manager: they end first. The name stays
         * ours meanwhile, so no second instance starts on the store (and removes their temporaries)
         * while they work. */
        operations_shutdown(m);
        jobs_free_all(m);
        execs_free_all(m);
        machines_free_all(m);
        m->authz = authz_free(m->authz);
        sd_bus_slot_unref(m->filter_slot);
        sd_event_source_disable_unref(m->idle_timer);
        sd_event_source_disable_unref(m->pool_timer);
        sd_event_source_disable_unref(m->trim_timer);
        sd_event_source_disable_unref(m->image_cache_flush);
        g_hash_table_destroy(m->image_cache);
        g_hash_table_destroy(m->uuid_hints);
        g_hash_table_destroy(m->images_pending);
        sd_bus_flush_close_unref(m->bus);
        sd_event_unref(m->event);
        safe_close(m->store_fd);
        g_hash_table_destroy(m->busy_images);
        g_hash_table_destroy(m->image_readers);
        g_hash_table_destroy(m->operations_per_caller);
        g_hash_table_destroy(m->jobs);
        g_hash_table_destroy(m->machines);
        g_hash_table_destroy(m->execs);
        free(m->store);
        free(m->pool_raw);
        free(m);
        return NULL;
}

int manager_open_store(Manager *m)
{
        struct stat st;
        int k;

        m->store_fd = safe_close(m->store_fd);
        m->store_fd = open(m->store, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (m->store_fd < 0)
                return log_error_errno(errno, "Cannot open image store %s", m->store);

        k = fd_is_btrfs(m->store_fd);
        if (k < 0)
                return log_error_errno(k, "Cannot tell the file system of %s", m->store);
        m->store_is_btrfs = k > 0;
        m->quota_enabled = m->store_is_btrfs && btrfs_quota_is_enabled(m->store_fd) > 0;
        log_info("Image store %s: %s%s.", m->store, m->store_is_btrfs ? "btrfs" : "not btrfs (clones are copies)",
                 m->quota_enabled ? ", quota groups on" : "");

        /* Root in a user's machine (a user namespace whose root is uid 0 on disk, since images stay
         * 0-based) can make setuid-root files and device nodes: no host user may reach them. */
        if (fstat(m->store_fd, &st) >= 0 && (st.st_mode & 0077) != 0) {
                if (fchmod(m->store_fd, 0700) < 0)
                        log_warning_errno(errno,
                                          "The image store %s can be entered by others (mode %04o) and "
                                          "cannot be made private",
                                          m->store, st.st_mode & 07777);
                else
                        log_notice("Made the image store %s private (mode 0700, was %04o): machines write files "
                                   "owned by root into it.",
                                   m->store, st.st_mode & 07777);
        }

        /* Before the temporaries go: an interrupted restore is told apart by which tree the name holds. */
        store_snapshots_recover(m->store_fd);
        store_remove_temporaries(m->store_fd, m->store_is_btrfs);
        store_owners_clean(m->store_fd);
        return 0;
}

bool manager_is_idle(Manager *m)
{
        return g_hash_table_size(m->jobs) == 0 && g_hash_table_size(m->machines) == 0 && m->n_operations == 0 &&
               authz_n_pending(m->authz) == 0;
}

/* After a burst of work the heap holds freed memory (a large ListImages, many clones at once):
 * give it back once things have been quiet a while, so the idle daemon stays small. */
static int on_trim_timer(sd_event_source *s, uint64_t usec, void *userdata)
{
        Manager *m = userdata;

        if (usec < m->last_activity_usec + TRIM_AFTER_QUIET_USEC) {
                (void) sd_event_source_set_time(s, m->last_activity_usec + TRIM_AFTER_QUIET_USEC);
                return sd_event_source_set_enabled(s, SD_EVENT_ONESHOT);
        }
        (void) malloc_trim(0);
        return 0; /* off until the next activity */
}

void manager_note_activity(Manager *m)
{
        int enabled = SD_EVENT_OFF;

        m->last_activity_usec = now_usec(CLOCK_MONOTONIC);
        if (!m->event)
                return;
        if (!m->trim_timer) {
                if (sd_event_add_time(m->event, &m->trim_timer, CLOCK_MONOTONIC,
                                      m->last_activity_usec + TRIM_AFTER_QUIET_USEC, USEC_PER_SEC / 10, on_trim_timer,
                                      m) >= 0)
                        (void) sd_event_source_set_enabled(m->trim_timer, SD_EVENT_ONESHOT);
                return;
        }
        if (sd_event_source_get_enabled(m->trim_timer, &enabled) >= 0 && enabled == SD_EVENT_OFF) {
                (void) sd_event_source_set_time(m->trim_timer, m->last_activity_usec + TRIM_AFTER_QUIET_USEC);
                (void) sd_event_source_set_enabled(m->trim_timer, SD_EVENT_ONESHOT);
        }
}

static int on_idle_timer(sd_event_source *s, uint64_t usec, void *userdata)
{
        Manager *m = userdata;

        if (manager_is_idle(m) && usec >= m->last_activity_usec + m->idle_timeout_usec) {
                log_info("Idle for %" PRIu64 " s, exiting.", m->idle_timeout_usec / USEC_PER_SEC);
                /* Give up the name first, so a call racing with our exit activates a new instance. */
                (void) sd_bus_release_name(m->bus, STAMP_BUS_NAME);
                return sd_event_exit(m->event, 0);
        }
        return sd_event_source_set_time(s, MAX(usec, m->last_activity_usec) + m->idle_timeout_usec);
}

static int on_bus_message(sd_bus_message *msg, void *userdata, sd_bus_error *error)
{
        manager_note_activity(userdata);
        return 0;
}

static int on_image_cache_flush(sd_event_source *s, void *userdata)
{
        Manager *m = userdata;

        g_hash_table_remove_all(m->image_cache);
        m->image_cache_flush = sd_event_source_disable_unref(m->image_cache_flush);
        return 0;
}

void manager_image_pending(Manager *m, uid_t uid, int delta)
{
        gpointer key = GUINT_TO_POINTER((unsigned) uid);
        unsigned n = GPOINTER_TO_UINT(g_hash_table_lookup(m->images_pending, key));

        n = (unsigned) ((int) n + delta);
        if (n == 0)
                g_hash_table_remove(m->images_pending, key);
        else
                g_hash_table_replace(m->images_pending, key, GUINT_TO_POINTER(n));
}

int manager_get_image(Manager *m, const char *name, Image **ret)
{
        Image *img = g_hash_table_lookup(m->image_cache, name);
        int k;

        if (img) {
                *ret = img;
                return 0;
        }
        k = image_load(m, name, &img);
        if (k < 0)
                return k;
        if (!m->image_cache_flush) {
                k = sd_event_add_defer(m->event, &m->image_cache_flush, on_image_cache_flush, m);
                if (k < 0) {
                        image_free(img);
                        return k;
                }
        }
        g_hash_table_insert(m->image_cache, g_strdup(name), img);
        *ret = img;
        return 0;
}

int manager_image_lock(Manager *m, const char *name, const char *reason)
{
        if (g_hash_table_contains(m->busy_images, name))
                return -EBUSY;
        g_hash_table_insert(m->busy_images, g_strdup(name), (gpointer) reason);
        return 0;
}

void manager_image_unlock(Manager *m, const char *name)
{
        g_hash_table_remove(m->busy_images, name);
}

const char *manager_image_busy_reason(Manager *m, const char *name)
{
        return g_hash_table_lookup(m->busy_images, name);
}

void manager_image_reader_add(Manager *m, const char *name)
{
        unsigned n = GPOINTER_TO_UINT(g_hash_table_lookup(m->image_readers, name));
        g_hash_table_replace(m->image_readers, g_strdup(name), GUINT_TO_POINTER(n + 1));
}

void manager_image_reader_remove(Manager *m, const char *name)
{
        unsigned n = GPOINTER_TO_UINT(g_hash_table_lookup(m->image_readers, name));
        if (n <= 1)
                g_hash_table_remove(m->image_readers, name);
        else
                g_hash_table_replace(m->image_readers, g_strdup(name), GUINT_TO_POINTER(n - 1));
}

bool manager_image_has_readers(Manager *m, const char *name)
{
        return g_hash_table_contains(m->image_readers, name);
}

int manager_caller_key(Manager *m, sd_bus_message *msg, char **ret)
{
        const char *sender = sd_bus_message_get_sender(msg);
        uid_t uid;
        int k;

        k = authz_caller_uid(m->authz, msg, &uid);
        if (k < 0)
                return k;
        if (uid == 0)
                k = asprintf(ret, "root's connection %s", sender ?: "(direct)");
        else
                k = asprintf(ret, "user %u", (unsigned) uid);
        return k < 0 ? -ENOMEM : 0;
}

const char *manager_caller_cap_scope(const char *key)
{
        return g_str_has_prefix(key, "user ") ? "per user" : "per connection of root";
}

int manager_operation_acquire(Manager *m, const char *caller, sd_bus_error *error)
{
        unsigned n = GPOINTER_TO_UINT(g_hash_table_lookup(m->operations_per_caller, caller));

        if (n >= m->settings.operations_per_user_max)
                return sd_bus_error_setf(error, SD_BUS_ERROR_LIMITS_EXCEEDED,
                                         "Too many operations in progress for %s (at most %u %s); try again when "
                                         "some have ended",
                                         caller, m->settings.operations_per_user_max, manager_caller_cap_scope(caller));
        if (m->n_operations >= m->settings.operations_max)
                return sd_bus_error_setf(error, SD_BUS_ERROR_LIMITS_EXCEEDED,
                                         "Too many operations in progress (at most %u in all); try again when "
                                         "some have ended",
                                         m->settings.operations_max);
        g_hash_table_replace(m->operations_per_caller, g_strdup(caller), GUINT_TO_POINTER(n + 1));
        m->n_operations++;
        return 0;
}

void manager_operation_release(Manager *m, const char *caller)
{
        unsigned n = GPOINTER_TO_UINT(g_hash_table_lookup(m->operations_per_caller, caller));

        if (n <= 1)
                g_hash_table_remove(m->operations_per_caller, caller);
        else
                g_hash_table_replace(m->operations_per_caller, g_strdup(caller), GUINT_TO_POINTER(n - 1));
        if (m->n_operations > 0)
                m->n_operations--;
}

static int send_image_signal(Manager *m, const char *member, const char *name)
{
        _cleanup_free_ char *path = NULL;
        int k;

        k = image_bus_path(name, &path);
        if (k < 0)
                return k;
        return sd_bus_emit_signal(m->bus, STAMP_MANAGER_PATH, STAMP_MANAGER_IFACE, member, "so", name, path);
}

int manager_send_image_added(Manager *m, const char *name)
{
        int k = send_image_signal(m, "ImageAdded", name);
        if (k >= 0) {
                _cleanup_free_ char *path = NULL;
                if (image_bus_path(name, &path) >= 0)
                        (void) sd_bus_emit_object_added(m->bus, path);
        }
        return k;
}

int manager_send_image_removed(Manager *m, const char *name)
{
        _cleanup_free_ char *path = NULL;

        if (image_bus_path(name, &path) >= 0)
                (void) sd_bus_emit_object_removed(m->bus, path);
        return send_image_signal(m, "ImageRemoved", name);
}

static int on_pool_timer(sd_event_source *s, uint64_t usec, void *userdata)
{
        Manager *m = userdata;

        pool_maybe_grow(m);
        return sd_event_source_set_time(s, usec + POOL_CHECK_INTERVAL_USEC);
}

int manager_connect_bus(Manager *m)
{
        int k;

        k = sd_bus_default_system(&m->bus);
        if (k < 0)
                return log_error_errno(k, "Cannot connect to the system bus");
        safe_fork_close_in_child(sd_bus_get_fd(m->bus));

        (void) sd_bus_error_add_map(stamp_error_map);

        k = sd_bus_add_object_vtable(m->bus, NULL, STAMP_MANAGER_PATH, STAMP_MANAGER_IFACE, manager_vtable, m);
        if (k >= 0)
                k = sd_bus_add_fallback_vtable(m->bus, NULL, STAMP_IMAGE_PREFIX, STAMP_IMAGE_IFACE, image_vtable,
                                               image_object_find, m);
        if (k >= 0)
                k = sd_bus_add_node_enumerator(m->bus, NULL, STAMP_IMAGE_PREFIX, image_node_enumerator, m);
        if (k >= 0)
                k = sd_bus_add_object_manager(m->bus, NULL, STAMP_MANAGER_PATH);
        if (k >= 0)
                k = manager_add_job_objects(m);
        if (k >= 0)
                k = manager_add_machine_objects(m);
        if (k < 0)
                return log_error_errno(k, "Cannot register bus objects");

        k = sd_bus_add_filter(m->bus, &m->filter_slot, on_bus_message, m);
        if (k < 0)
                return log_error_errno(k, "Cannot add bus filter");

        k = sd_bus_request_name(m->bus, STAMP_BUS_NAME, 0);
        if (k < 0)
                return log_error_errno(k, "Cannot own %s on the system bus", STAMP_BUS_NAME);

        k = sd_bus_attach_event(m->bus, m->event, SD_EVENT_PRIORITY_NORMAL);
        if (k < 0)
                return log_error_errno(k, "Cannot attach the bus to the event loop");
        return 0;
}

void manager_check_stopped(Manager *m)
{
        if (m->stopping && m->n_operations == 0)
                (void) sd_event_exit(m->event, 0);
}

/* SIGTERM, SIGINT: the short acts in the worker threads finish, and their callers get their
 * answers, before the loop ends (ending it closes the bus connection). Queued acts are answered
 * without being started; jobs and machines are stopped when the Manager is freed. */
static int on_stop_signal(sd_event_source *s, const struct signalfd_siginfo *si, void *userdata)
{
        Manager *m = userdata;

        if (!m->stopping) {
                m->stopping = true;
                operations_stop();
                if (m->n_operations > 0)
                        log_info("Stopping once %u operation(s) in progress have ended.", m->n_operations);
        }
        manager_check_stopped(m);
        return 0;
}

int manager_run(Manager *m)
{
        int k;

        k = sd_event_add_signal(m->event, NULL, SIGTERM, on_stop_signal, m);
        if (k >= 0)
                k = sd_event_add_signal(m->event, NULL, SIGINT, on_stop_signal, m);
        if (k < 0)
                return log_error_errno(k, "Cannot watch signals");

        manager_note_activity(m);
        if (m->idle_timeout_usec > 0) {
                k = sd_event_add_time_relative(m->event, &m->idle_timer, CLOCK_MONOTONIC, m->idle_timeout_usec,
                                               USEC_PER_SEC / 10, on_idle_timer, m);
                if (k >= 0)
                        k = sd_event_source_set_enabled(m->idle_timer, SD_EVENT_ON);
                if (k < 0)
                        return log_error_errno(k, "Cannot set up the idle timer");
        }
        if (m->pool_raw) {
                k = sd_event_add_time_relative(m->event, &m->pool_timer, CLOCK_MONOTONIC, POOL_CHECK_INTERVAL_USEC,
                                               USEC_PER_SEC, on_pool_timer, m);
                if (k >= 0)
                        k = sd_event_source_set_enabled(m->pool_timer, SD_EVENT_ON);
                if (k < 0)
                        return log_error_errno(k, "Cannot set up the pool timer");
        }

        (void) sd_notify(false, "READY=1\nSTATUS=Serving.");
        log_info("Serving %s.", STAMP_BUS_NAME);
        k = sd_event_loop(m->event);
        (void) sd_notify(false, "STOPPING=1");
        return k;
}
