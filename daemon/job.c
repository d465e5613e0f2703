/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <fcntl.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>

#include "config.h"
#include "errors.h"
#include "image-dbus.h"
#include "authz.h"
#include "image.h"
#include "job-dbus.h"
#include "names.h"

static const char *const job_type_table[_JOB_TYPE_MAX] = {
        [JOB_CREATE_TEMPLATE] = "create-template",
        [JOB_EXPORT_TAR] = "export-tar",
        [JOB_IMPORT_TAR] = "import-tar",
        [JOB_PULL_TAR] = "pull-tar",
        [JOB_EXPORT] = "export",
        [JOB_IMPORT] = "import",
        [JOB_COPY_TO] = "copy-to",
        [JOB_COPY_FROM] = "copy-from",
        [JOB_PULL_IMAGE] = "pull",
        [JOB_PUSH_IMAGE] = "push",
};

const char *job_type_to_string(JobType t)
{
        return t < _JOB_TYPE_MAX ? job_type_table[t] : NULL;
}

const char *job_result_to_string(JobState s)
{
        /* An ended job's result is the name of its final state; a running one has none yet. */
        return s == JOB_DONE || s == JOB_FAILED || s == JOB_CANCELED ? job_state_to_string(s) : "";
}

const char *job_state_to_string(JobState s)
{
        switch (s) {
        case JOB_RUNNING:
                return "running";
        case JOB_CANCELING:
                return "canceling";
        case JOB_DONE:
                return "done";
        case JOB_FAILED:
                return "failed";
        case JOB_CANCELED:
                return "canceled";
        }
        return "unknown";
}

static const char *job_action(JobType t)
{
        switch (t) {
        case JOB_CREATE_TEMPLATE:
                return STAMP_ACTION_CREATE_TEMPLATE;
        case JOB_EXPORT_TAR:
        case JOB_EXPORT:
                return STAMP_ACTION_EXPORT;
        case JOB_IMPORT_TAR:
        case JOB_IMPORT:
                return STAMP_ACTION_IMPORT;
        case JOB_PUSH_IMAGE:
                return STAMP_ACTION_PUSH;
        default:
                return STAMP_ACTION_PULL;
        }
}

Job *job_find(Manager *m, uint32_t id)
{
        return g_hash_table_lookup(m->jobs, GUINT_TO_POINTER(id));
}

Job *job_free(Job *j)
{
        if (!j)
                return NULL;
        if (j->manager && g_hash_table_lookup(j->manager->jobs, GUINT_TO_POINTER(j->id)) == j)
                g_hash_table_remove(j->manager->jobs, GUINT_TO_POINTER(j->id));
        if (j->lock_held)
                manager_image_unlock(j->manager, j->image);
        if (j->reader_held)
                manager_image_reader_remove(j->manager, j->image);
        if (j->image_pending)
                manager_image_pending(j->manager, j->image_owner, -1);
        if (j->pid > 0) {
                /* Daemon shutting down with the job running: its namespace goes with it. */
                (void) kill(-j->pid, SIGKILL);
                (void) kill(j->pid, SIGKILL);
                (void) waitpid(j->pid, NULL, 0);
        }
        sd_event_source_disable_unref(j->comm_source);
        sd_event_source_disable_unref(j->child_source);
        sd_event_source_disable_unref(j->progress_timer);
        sd_event_source_disable_unref(j->kill_timer);
        safe_close(j->comm_fd);
        free(j->image);
        free(j->object_path);
        free(j->owner);
        free(j->temp_name);
        free(j->description);
        free(j->error_message);
        free(j);
        return NULL;
}

void jobs_free_all(Manager *m)
{
        GList *all = g_hash_table_get_values(m->jobs);

        for (GList *l = all; l; l = l->next)
                job_free(l->data);
        g_list_free(all);
}

static unsigned jobs_of_owner(Manager *m, const char *owner)
{
        GHashTableIter it;
        gpointer v;
        unsigned n = 0;

        g_hash_table_iter_init(&it, m->jobs);
        while (g_hash_table_iter_next(&it, NULL, &v))
                if (streq_ptr(((Job *) v)->owner, owner))
                        n++;
        return n;
}

int job_new(Manager *m, JobType type, const char *image, bool lock, sd_bus_message *msg, Job **ret, sd_bus_error *error)
{
        _cleanup_(job_freep) Job *j = NULL;
        _cleanup_free_ char *caller = NULL;
        int k;

        /* Counted per uid (see manager_caller_key()). The uid is unknown only when a handler makes its
         * job before authorization, on a connection's first call: polkit is asked then, and the job,
         * dropped meanwhile, is made again when the call comes back, with the uid known. */
        k = manager_caller_key(m, msg, &caller);
        if (k < 0 && k != -ENODATA)
                return k;
        if (caller && jobs_of_owner(m, caller) >= m->settings.jobs_per_user_max)
                return sd_bus_error_setf(error, SD_BUS_ERROR_LIMITS_EXCEEDED,
                                         "Too many jobs running for %s (at most %u %s)", caller,
                                         m->settings.jobs_per_user_max, manager_caller_cap_scope(caller));
        if (g_hash_table_size(m->jobs) >= m->settings.jobs_max)
                return sd_bus_error_setf(error, SD_BUS_ERROR_LIMITS_EXCEEDED,
                                         "Too many jobs running (at most %u in all); try again when one has ended",
                                         m->settings.jobs_max);

        j = calloc(1, sizeof *j);
        if (!j)
                return -ENOMEM;
        j->comm_fd = -1;
        j->image_owner = UID_INVALID;
        j->type = type;
        j->action = job_action(type);
        j->progress = -1;
        j->state = JOB_RUNNING;
        j->image = strdup(image);
        j->owner = caller ? TAKE_PTR(caller) : strdup("a caller not known yet");
        if (!j->image || !j->owner)
                return -ENOMEM;

        if (lock) {
                if (manager_image_lock(m, image, job_type_to_string(type)) < 0)
                        return sd_bus_error_setf(error, STAMP_ERROR_IMAGE_BUSY, "Image %s is busy (%s)", image,
                                                 manager_image_busy_reason(m, image) ?: "in use");
                j->lock_held = true;
        }
        j->manager = m;
        j->id = m->next_job_id++;
        if (m->next_job_id == 0)
                m->next_job_id = 1;
        if (asprintf(&j->object_path, STAMP_JOB_PREFIX "/%" PRIu32, j->id) < 0)
                return -ENOMEM;

        *ret = TAKE_PTR(j);
        return 0;
}

/* ---- the parent side ---- */

static void job_handle_message(Job *j, const char *buf)
{
        char kind = buf[0];
        char *end;
        long num = strtol(buf + 1, &end, 10);
        const char *text = *end == ' ' ? end + 1 : end;

        switch (kind) {
        case 'P': {
                double p = strtod(text, NULL);
                if (!(p >= -1.0 && p <= 1.0)) /* also refuses NaN */
                        break;
                if (p != j->progress) {
                        j->progress = p;
                        job_emit_progress(j);
                }
                break;
        }
        case 'L':
                (void) job_send_log(j, (int) num, text);
                break;
        case 'I':
                /* Another image the job made besides its own (a pulled clone's template): in sight
                 * already, so announced at once. Only a valid name that is there now. */
                if (image_name_is_valid(text) && faccessat(j->manager->store_fd, text, F_OK, AT_SYMLINK_NOFOLLOW) == 0)
                        (void) manager_send_image_added(j->manager, text);
                break;
        case 'E':
                j->error = num > 0 ? (int) num : EIO;
                free(j->error_message);
                j->error_message = strdup(text);
                break;
        default:
                break;
        }
}

static void job_drain(Job *j)
{
        char buf[JOB_MSG_MAX + 1];

        for (;;) {
                ssize_t n = recv(j->comm_fd, buf, JOB_MSG_MAX, MSG_DONTWAIT);
                if (n <= 0)
                        break;
                buf[n] = '\0';
                job_handle_message(j, buf);
        }
}

static int on_comm(sd_event_source *s, int fd, uint32_t revents, void *userdata)
{
        Job *j = userdata;

        job_drain(j);
        if (revents & (EPOLLHUP | EPOLLERR))
                j->comm_source = sd_event_source_disable_unref(j->comm_source);
        return 0;
}

static void job_finalize(Job *j)
{
        Manager *m = j->manager;
        const char *result = job_result_to_string(j->state);

        if (j->state == JOB_FAILED)
                log_warning("Job %" PRIu32 " (%s %s) failed: %s", j->id, job_type_to_string(j->type), j->image,
                            j->error_message ?: "unknown error");
        else
                log_info("Job %" PRIu32 " (%s %s) %s.", j->id, job_type_to_string(j->type), j->image, result);

        /* The last value held back by the rate limit, before the object goes. */
        if (j->progress_dirty)
                (void) sd_bus_emit_properties_changed(m->bus, j->object_path, STAMP_JOB_IFACE, "Progress", NULL);
        /* How it ended, with the named error of a failure, for callers that watch the job object:
         * JobRemoved carries only the result word. */
        (void) sd_bus_emit_properties_changed(m->bus, j->object_path, STAMP_JOB_IFACE, "State", "Result", "ErrorName",
                                              "ErrorMessage", NULL);
        if (j->state == JOB_DONE && j->makes_image)
                (void) manager_send_image_added(m, j->image);
        (void) sd_bus_emit_signal(m->bus, STAMP_MANAGER_PATH, STAMP_MANAGER_IFACE, "JobRemoved", "uos", j->id,
                                  j->object_path, result);
        (void) sd_bus_emit_object_removed(m->bus, j->object_path);
        manager_note_activity(m);
        job_free(j);
}

/* ---- running stamp-transfer ---- */

/* Next to the running stampd if it is there (an installation, also one below a destdir), in the
 * build tree's transfer/ beside daemon/, else where it was installed. */
static char *transfer_path(void)
{
        g_autofree char *exe = g_file_read_link("/proc/self/exe", NULL);

        if (exe) {
                g_autofree char *dir = g_path_get_dirname(exe);
                const char *candidates[] = {"stamp-transfer", "../transfer/stamp-transfer"};
                for (size_t i = 0; i < ELEMENTSOF(candidates); i++) {
                        g_autofree char *p = g_build_filename(dir, candidates[i], NULL);
                        if (access(p, X_OK) == 0)
                                return strdup(p);
                }
        }
        return strdup(LIBEXECDIR "/stamp-transfer");
}

/* Execute stamp-transfer for @args with @comm_fd as its socket to the daemon, the fds in the places
 * job-args.h names. Everything the child needs is made before the fork: stampd has threads
 * (polkit's, GDBus's, the worker pool's), and a lock another thread held at the fork (malloc's,
 * GLib's) stays locked for ever in the child. So between fork() and execve() there are only
 * async-signal-safe calls: those of safe_fork() (close, signal, sigprocmask, prctl, getppid,
 * setpgid), fcntl(), dup2(), send() and _exit(). */
static int job_spawn(Job *j, const JobArgs *args, int comm_fd, pid_t *ret_pid)
{
        _cleanup_free_ char *path = transfer_path();
        _cleanup_close_ int args_fd = -1;
        char *argv[] = {(char *) "stamp-transfer", (char *) job_verb_to_string(args->type), args->name, NULL};
        int fds[3 + JOB_ARGS_FDS_MAX];
        char failed[PATH_MAX + 64];
        size_t n_fds = 0, n;
        int len;
        pid_t pid;

        if (!path)
                return -ENOMEM;
        args_fd = job_args_encode(args, fds + 3, &n_fds);
        if (args_fd < 0)
                return args_fd;
        fds[0] = comm_fd;
        fds[1] = j->manager->store_fd;
        fds[2] = args_fd;
        n = 3 + n_fds;
        /* What the child says if the exec fails, made here: the job-child protocol's 'E' message. */
        len = snprintf(failed, sizeof failed, "E%d Cannot run %s", ENOENT, path);
        if (len < 0 || (size_t) len >= sizeof failed)
                return -ENAMETOOLONG;

        /* Fork and exec at once: between them only async-signal-safe calls (see above). */
        pid = safe_fork(true);
        if (pid < 0)
                return (int) pid;
        if (pid == 0) {
                /* Out of the way of the numbers they get first, then into place: dup2() leaves the
                 * copies open across exec. */
                for (size_t i = 0; i < n; i++) {
                        fds[i] = fcntl(fds[i], F_DUPFD_CLOEXEC, (int) (JOB_ARGS_FD_COMM + n));
                        if (fds[i] < 0)
                                _exit(EXIT_FAILURE);
                }
                for (size_t i = 0; i < n; i++)
                        if (dup2(fds[i], (int) (JOB_ARGS_FD_COMM + i)) < 0)
                                _exit(EXIT_FAILURE);
                execve(path, argv, environ);
                (void) send(JOB_ARGS_FD_COMM, failed, (size_t) len, MSG_NOSIGNAL);
                _exit(EXIT_FAILURE);
        }
        *ret_pid = pid;
        return 0;
}

static int on_cleanup_done(sd_event_source *s, const siginfo_t *si, void *userdata);

/* Remove what the work left half-made, off the loop, in stamp-transfer too. */
static int job_start_cleanup(Job *j)
{
        _cleanup_(job_args_done) JobArgs a;
        _cleanup_close_ int ours = -1, theirs = -1;
        int sv[2], k;

        job_args_init(&a, JOB_REMOVE_TEMPORARY);
        a.name = strdup(j->image);
        a.temp_name = strdup(j->temp_name);
        a.store_is_btrfs = j->manager->store_is_btrfs;
        if (!a.name || !a.temp_name)
                return -ENOMEM;
        if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0)
                return -errno;
        /* What it could say would only overwrite why the job failed: nobody listens. */
        ours = sv[0];
        theirs = sv[1];
        k = job_spawn(j, &a, theirs, &j->pid);
        if (k < 0)
                return k;
        return sd_event_add_child(j->manager->event, &j->child_source, j->pid, WEXITED, on_cleanup_done, j);
}

static int on_cleanup_done(sd_event_source *s, const siginfo_t *si, void *userdata)
{
        Job *j = userdata;

        j->child_source = sd_event_source_disable_unref(j->child_source);
        j->pid = 0;
        job_finalize(j);
        return 0;
}

static int on_child_exit(sd_event_source *s, const siginfo_t *si, void *userdata)
{
        Job *j = userdata;

        j->child_source = sd_event_source_disable_unref(j->child_source);
        j->kill_timer = sd_event_source_disable_unref(j->kill_timer);
        j->pid = 0;
        job_drain(j);

        if (si->si_code == CLD_EXITED && si->si_status == 0)
                j->state = JOB_DONE; /* finished before a late cancel could stop it: it is done */
        else if (j->state == JOB_CANCELING)
                j->state = JOB_CANCELED;
        else {
                j->state = JOB_FAILED;
                if (!j->error_message) {
                        j->error = EIO;
                        if (asprintf(&j->error_message,
                                     si->si_code == CLD_EXITED ? "The job's process failed (exit status %d)"
                                                               : "The job's process was killed by signal %d",
                                     si->si_status) < 0)
                                j->error_message = NULL;
                }
        }
        if (j->state == JOB_FAILED && j->error_message)
                (void) job_send_log(j, LOG_LEVEL_ERR, j->error_message);

        if (j->state == JOB_DONE || !j->temp_name) {
                job_finalize(j);
                return 0;
        }

        /* Report once the temporary is gone. */
        if (job_start_cleanup(j) < 0) {
                if (j->pid > 0)
                        (void) waitpid(j->pid, NULL, 0);
                j->pid = 0;
                job_finalize(j);
        }
        return 0;
}

int job_claim_owner(Job *j, sd_bus_message *msg, JobArgs *args, sd_bus_error *error)
{
        uid_t uid;
        int k;

        k = authz_caller_uid(j->manager->authz, msg, &uid);
        if (k < 0)
                return sd_bus_error_set_errnof(error, k, "Cannot tell who the caller is: %m");
        if (uid == 0)
                return 0; /* an image without a record is root's; root has no limits */
        k = bus_check_user_limits(j->manager, uid, error);
        if (k < 0)
                return k;
        j->image_owner = uid;
        args->owner = uid;
        return 0;
}

int job_start(Job *j, JobArgs *args)
{
        Manager *m = j->manager;
        _cleanup_close_ int theirs = -1;
        int sv[2], k;

        if (args->type != j->type)
                return -EINVAL;
        args->store_is_btrfs = m->store_is_btrfs;
        free(args->store_path);
        args->store_path = strdup(m->store);
        free(args->temp_name);
        args->temp_name = j->temp_name ? strdup(j->temp_name) : NULL;
        if (!args->store_path || (j->temp_name && !args->temp_name))
                return -ENOMEM;

        free(j->description);
        j->description = job_describe(args);

        if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0)
                return -errno;
        j->comm_fd = sv[0];
        theirs = sv[1];
        k = job_spawn(j, args, theirs, &j->pid);
        if (k < 0)
                return k;

        k = sd_event_add_io(m->event, &j->comm_source, j->comm_fd, EPOLLIN, on_comm, j);
        if (k >= 0)
                k = sd_event_add_child(m->event, &j->child_source, j->pid, WEXITED, on_child_exit, j);
        if (k < 0)
                return k; /* job_free() kills the child */

        g_hash_table_insert(m->jobs, GUINT_TO_POINTER(j->id), j);
        if (j->image_owner != UID_INVALID) {
                manager_image_pending(m, j->image_owner, +1);
                j->image_pending = true;
        }
        log_info("Job %" PRIu32 ": %s %s started for %s.", j->id, job_type_to_string(j->type), j->image, j->owner);
        (void) sd_bus_emit_object_added(m->bus, j->object_path);
        return 0;
}

static int on_kill_timer(sd_event_source *s, uint64_t usec, void *userdata)
{
        Job *j = userdata;

        if (j->pid > 0)
                (void) kill(-j->pid, SIGKILL);
        return 0;
}

int job_cancel(Job *j)
{
        if (j->state != JOB_RUNNING)
                return 0;
        j->state = JOB_CANCELING;
        (void) sd_bus_emit_properties_changed(j->manager->bus, j->object_path, STAMP_JOB_IFACE, "State", NULL);
        if (j->pid > 0) {
                /* The work is PID 1 of its namespace: SIGTERM from here reaches it; if it does not end
                 * soon, SIGKILL to the whole group. */
                (void) kill(-j->pid, SIGTERM);
                (void) sd_event_add_time_relative(j->manager->event, &j->kill_timer, CLOCK_MONOTONIC, 3 * USEC_PER_SEC,
                                                  0, on_kill_timer, j);
        }
        return 1;
}
