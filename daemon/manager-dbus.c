/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <limits.h>

#include "authz.h"
#include "delta.h"
#include "errors.h"
#include "exec.h"
#include "image-dbus.h"
#include "job-dbus.h"
#include "disk-limits.h"
#include "machine-dbus.h"
#include "manager-dbus.h"
#include "package-cache.h"
#include "pool.h"
#include "snapshot-dbus.h"

static int property_get_pool_path(sd_bus *bus, const char *path, const char *interface, const char *property,
                                  sd_bus_message *reply, void *userdata, sd_bus_error *error)
{
        Manager *m = userdata;
        return sd_bus_message_append(reply, "s", m->store);
}

static int property_get_pool_usage(sd_bus *bus, const char *path, const char *interface, const char *property,
                                   sd_bus_message *reply, void *userdata, sd_bus_error *error)
{
        Manager *m = userdata;
        uint64_t usage = UINT64_MAX, limit = UINT64_MAX;

        (void) pool_get_usage(m, &usage, &limit);
        return sd_bus_message_append(reply, "t", streq(property, "PoolUsage") ? usage : limit);
}

static int method_list_images(sd_bus_message *msg, void *userdata, sd_bus_error *error)
{
        Manager *m = userdata;
        _cleanup_bus_message_ sd_bus_message *reply = NULL;
        g_autoptr(GPtrArray) images = NULL;
        int k;

        k = image_list(m, &images);
        if (k < 0)
                return sd_bus_error_set_errnof(error, k, "Cannot list the image store: %m");

        k = sd_bus_message_new_method_return(msg, &reply);
        if (k >= 0)
                k = sd_bus_message_open_container(reply, 'a', "(ssbttto)");
        for (guint i = 0; k >= 0 && i < images->len; i++) {
                const Image *img = images->pdata[i];
                _cleanup_free_ char *path = NULL;
                int ro = img->read_only;

                /* Field by field: a format string per entry costs more than the rest. */
                k = image_bus_path(img->name, &path);
                if (k >= 0)
                        k = sd_bus_message_open_container(reply, 'r', "ssbttto");
                if (k >= 0)
                        k = sd_bus_message_append_basic(reply, 's', img->name);
                if (k >= 0)
                        k = sd_bus_message_append_basic(reply, 's', image_type_to_string(img->type));
                if (k >= 0)
                        k = sd_bus_message_append_basic(reply, 'b', &ro);
                if (k >= 0)
                        k = sd_bus_message_append_basic(reply, 't', &img->crtime_usec);
                if (k >= 0)
                        k = sd_bus_message_append_basic(reply, 't', &img->mtime_usec);
                if (k >= 0)
                        k = sd_bus_message_append_basic(reply, 't', &img->usage);
                if (k >= 0)
                        k = sd_bus_message_append_basic(reply, 'o', path);
                if (k >= 0)
                        k = sd_bus_message_close_container(reply);
        }
        if (k >= 0)
                k = sd_bus_message_close_container(reply);
        if (k < 0)
                return k;
        return sd_bus_send(NULL, reply, NULL);
}

static int method_get_image(sd_bus_message *msg, void *userdata, sd_bus_error *error)
{
        Manager *m = userdata;
        _cleanup_free_ char *path = NULL;
        const char *name;
        int k;

        k = sd_bus_message_read(msg, "s", &name);
        if (k < 0)
                return k;
        if ((k = bus_check_image_name(name, "image name", error)) < 0)
                return k;
        if ((k = bus_check_image_exists(m, name, NULL, error)) < 0)
                return k;
        k = image_bus_path(name, &path);
        if (k < 0)
                return k;
        return sd_bus_reply_method_return(msg, "o", path);
}

static int method_get_user_usage(sd_bus_message *msg, void *userdata, sd_bus_error *error)
{
        Manager *m = userdata;
        unsigned images;
        uint64_t bytes;
        uint32_t uid;
        int k;

        k = sd_bus_message_read(msg, "u", &uid);
        if (k < 0)
                return k;
        k = image_user_usage(m, (uid_t) uid, &images, &bytes);
        if (k < 0)
                return sd_bus_error_set_errnof(error, k, "Cannot count the images of user %u: %m", uid);
        /* Root has no limits. */
        return sd_bus_reply_method_return(msg, "uutt", (uint32_t) images,
                                          (uint32_t) (uid == 0 ? UINT_MAX : m->settings.images_per_user), bytes,
                                          uid == 0 ? UINT64_MAX : m->settings.bytes_per_user);
}

static int method_clone_image(sd_bus_message *msg, void *userdata, sd_bus_error *error)
{
        const char *source, *new_name;
        int read_only, k;

        k = sd_bus_message_read(msg, "ssb", &source, &new_name, &read_only);
        if (k < 0)
                return k;
        return image_method_clone(userdata, msg, source, new_name,
                                  &(CloneOptions) {.read_only = read_only, .keep_identity = -1}, error);
}

const OptionSpec clone_options[] = {
        {"read_only", OPTION_BOOL, offsetof(CloneOptions, read_only)},
        {"keep_identity", OPTION_BOOL, offsetof(CloneOptions, keep_identity)},
        {},
};

static int method_clone_image_ex(sd_bus_message *msg, void *userdata, sd_bus_error *error)
{
        const char *source, *new_name;
        CloneOptions o;
        int k;

        k = sd_bus_message_read(msg, "ss", &source, &new_name);
        if (k < 0)
                return k;
        k = bus_read_options(msg, clone_options, &o, error);
        if (k < 0)
                return k;
        return image_method_clone(userdata, msg, source, new_name, &o, error);
}

static int method_remove_image(sd_bus_message *msg, void *userdata, sd_bus_error *error)
{
        const char *name;
        int k;

        k = sd_bus_message_read(msg, "s", &name);
        if (k < 0)
                return k;
        return image_method_remove(userdata, msg, name, error);
}

static int method_rename_image(sd_bus_message *msg, void *userdata, sd_bus_error *error)
{
        const char *name, *new_name;
        int k;

        k = sd_bus_message_read(msg, "ss", &name, &new_name);
        if (k < 0)
                return k;
        return image_method_rename(userdata, msg, name, new_name, error);
}

static int method_mark_image_read_only(sd_bus_message *msg, void *userdata, sd_bus_error *error)
{
        const char *name;
        int read_only, k;

        k = sd_bus_message_read(msg, "sb", &name, &read_only);
        if (k < 0)
                return k;
        return image_method_mark_read_only(userdata, msg, name, read_only, error);
}

static gint compare_ids(gconstpointer a, gconstpointer b)
{
        guint x = GPOINTER_TO_UINT(a), y = GPOINTER_TO_UINT(b);
        return x < y ? -1 : x > y;
}

static int method_list_jobs(sd_bus_message *msg, void *userdata, sd_bus_error *error)
{
        Manager *m = userdata;
        _cleanup_bus_message_ sd_bus_message *reply = NULL;
        g_autoptr(GList) ids = g_hash_table_get_keys(m->jobs);
        int k;

        ids = g_list_sort(ids, compare_ids);
        k = sd_bus_message_new_method_return(msg, &reply);
        if (k >= 0)
                k = sd_bus_message_open_container(reply, 'a', "(ussdo)");
        for (GList *l = ids; k >= 0 && l; l = l->next) {
                Job *j = job_find(m, GPOINTER_TO_UINT(l->data));
                k = sd_bus_message_append(reply, "(ussdo)", j->id, job_type_to_string(j->type), j->image, j->progress,
                                          j->object_path);
        }
        if (k >= 0)
                k = sd_bus_message_close_container(reply);
        if (k < 0)
                return k;
        return sd_bus_send(NULL, reply, NULL);
}

static int method_cancel_job(sd_bus_message *msg, void *userdata, sd_bus_error *error)
{
        Manager *m = userdata;
        uint32_t id;
        Job *j;
        int k;

        k = sd_bus_message_read(msg, "u", &id);
        if (k < 0)
                return k;
        j = job_find(m, id);
        if (!j)
                return sd_bus_error_setf(error, STAMP_ERROR_NO_SUCH_JOB, "No job with id %" PRIu32, id);
        return job_method_cancel(m, j, msg, error);
}

const sd_bus_vtable manager_vtable[] = {
        SD_BUS_VTABLE_START(0),
        SD_BUS_PROPERTY("PoolPath", "s", property_get_pool_path, 0, SD_BUS_VTABLE_PROPERTY_CONST),
        SD_BUS_PROPERTY("PoolUsage", "t", property_get_pool_usage, 0, 0),
        SD_BUS_PROPERTY("PoolLimit", "t", property_get_pool_usage, 0, 0),
        SD_BUS_PROPERTY("CacheUsage", "t", property_get_cache_usage, 0, 0),
        SD_BUS_METHOD_WITH_ARGS("ListImages", SD_BUS_NO_ARGS, SD_BUS_RESULT("a(ssbttto)", images), method_list_images,
                                SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("GetImage", SD_BUS_ARGS("s", name), SD_BUS_RESULT("o", image), method_get_image,
                                SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("CreateTemplate", SD_BUS_ARGS("s", name, "s", suite, "a{sv}", options),
                                SD_BUS_RESULT("u", job_id, "o", job), method_create_template,
                                SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("CloneImage", SD_BUS_ARGS("s", source, "s", new_name, "b", read_only), SD_BUS_NO_RESULT,
                                method_clone_image, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("GetUserUsage", SD_BUS_ARGS("u", uid),
                                SD_BUS_RESULT("u", images, "u", images_max, "t", bytes, "t", bytes_max),
                                method_get_user_usage, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("CloneImageEx", SD_BUS_ARGS("s", source, "s", new_name, "a{sv}", options),
                                SD_BUS_NO_RESULT, method_clone_image_ex, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("RemoveImage", SD_BUS_ARGS("s", name), SD_BUS_NO_RESULT, method_remove_image,
                                SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("RenameImage", SD_BUS_ARGS("s", name, "s", new_name), SD_BUS_NO_RESULT,
                                method_rename_image, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("MarkImageReadOnly", SD_BUS_ARGS("s", name, "b", read_only), SD_BUS_NO_RESULT,
                                method_mark_image_read_only, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("RemoveImageEx", SD_BUS_ARGS("s", name, "a{sv}", options), SD_BUS_NO_RESULT,
                                method_remove_image_ex, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("SnapshotImage", SD_BUS_ARGS("s", name, "s", snapshot), SD_BUS_NO_RESULT,
                                method_snapshot_image, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("RestoreImage", SD_BUS_ARGS("s", name, "s", snapshot), SD_BUS_NO_RESULT,
                                method_restore_image, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("RemoveSnapshot", SD_BUS_ARGS("s", name, "s", snapshot), SD_BUS_NO_RESULT,
                                method_remove_snapshot, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("ListSnapshots", SD_BUS_ARGS("s", name), SD_BUS_RESULT("a(stt)", snapshots),
                                method_list_snapshots, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("StartMachine", SD_BUS_ARGS("s", image, "a{sv}", options), SD_BUS_RESULT("o", machine),
                                method_start_machine, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("ListMachines", SD_BUS_NO_ARGS, SD_BUS_RESULT("a(sssuo)", machines),
                                method_list_machines, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("StopMachine", SD_BUS_ARGS("s", name), SD_BUS_NO_RESULT, method_stop_machine,
                                SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("KillMachine", SD_BUS_ARGS("s", name, "i", signal), SD_BUS_NO_RESULT,
                                method_kill_machine, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("ExecMachine", SD_BUS_ARGS("s", name, "as", argv, "a{sv}", options),
                                SD_BUS_RESULT("u", exec_id), method_exec_machine, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("KillExec", SD_BUS_ARGS("u", exec_id, "i", signal), SD_BUS_NO_RESULT, method_kill_exec,
                                SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("KillMachineEx", SD_BUS_ARGS("s", name, "s", whom, "i", signal), SD_BUS_NO_RESULT,
                                method_kill_machine_ex, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("ExportTar", SD_BUS_ARGS("s", name, "h", fd, "s", format),
                                SD_BUS_RESULT("u", job_id, "o", job), method_export_tar, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("ImportTar", SD_BUS_ARGS("h", fd, "s", name, "b", read_only),
                                SD_BUS_RESULT("u", job_id, "o", job), method_import_tar, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("PullTar", SD_BUS_ARGS("s", url, "s", name, "a{sv}", options),
                                SD_BUS_RESULT("u", job_id, "o", job), method_pull_tar, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("CopyToMachine", SD_BUS_ARGS("s", name, "s", path, "h", fd, "a{sv}", options),
                                SD_BUS_RESULT("u", job_id, "o", job), method_copy_to_machine,
                                SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("CopyFromMachine", SD_BUS_ARGS("s", name, "s", path, "h", fd, "a{sv}", options),
                                SD_BUS_RESULT("u", job_id, "o", job), method_copy_from_machine,
                                SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("CopyToImage", SD_BUS_ARGS("s", name, "s", path, "h", fd, "a{sv}", options),
                                SD_BUS_RESULT("u", job_id, "o", job), method_copy_to_image, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("CopyFromImage", SD_BUS_ARGS("s", name, "s", path, "h", fd, "a{sv}", options),
                                SD_BUS_RESULT("u", job_id, "o", job), method_copy_from_image,
                                SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("SetImageLimit", SD_BUS_ARGS("s", name, "t", bytes), SD_BUS_NO_RESULT,
                                method_set_image_limit, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("SetPoolLimit", SD_BUS_ARGS("t", bytes), SD_BUS_NO_RESULT, method_set_pool_limit,
                                SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("PushImage", SD_BUS_ARGS("s", name, "s", reference, "a{sv}", options),
                                SD_BUS_RESULT("u", job_id, "o", job), method_push_image, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("PullImage", SD_BUS_ARGS("s", reference, "s", name, "a{sv}", options),
                                SD_BUS_RESULT("u", job_id, "o", job), method_pull_image, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("CleanCache", SD_BUS_ARGS("a{sv}", options), SD_BUS_NO_RESULT, method_clean_cache,
                                SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("ListJobs", SD_BUS_NO_ARGS, SD_BUS_RESULT("a(ussdo)", jobs), method_list_jobs,
                                SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("CancelJob", SD_BUS_ARGS("u", job_id), SD_BUS_NO_RESULT, method_cancel_job,
                                SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("ExportImage", SD_BUS_ARGS("s", name, "h", fd, "a{sv}", options),
                                SD_BUS_RESULT("u", job_id, "o", job), method_export_image, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("ImportImage", SD_BUS_ARGS("h", fd, "s", name, "a{sv}", options),
                                SD_BUS_RESULT("u", job_id, "o", job), method_import_image, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("DiffImage", SD_BUS_ARGS("s", name, "s", base), SD_BUS_RESULT("a(ss)", changes),
                                method_diff_image, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_SIGNAL_WITH_ARGS("JobNew", SD_BUS_ARGS("u", id, "o", job), 0),
        SD_BUS_SIGNAL_WITH_ARGS("JobRemoved", SD_BUS_ARGS("u", id, "o", job, "s", result), 0),
        SD_BUS_SIGNAL_WITH_ARGS("MachineNew", SD_BUS_ARGS("s", name, "o", machine), 0),
        SD_BUS_SIGNAL_WITH_ARGS("MachineRemoved", SD_BUS_ARGS("s", name, "o", machine, "i", exit_status), 0),
        SD_BUS_SIGNAL_WITH_ARGS("ExecExited",
                                SD_BUS_ARGS("u", exec_id, "s", machine, "s", result, "i", status, "s", message), 0),
        SD_BUS_SIGNAL_WITH_ARGS("ImageAdded", SD_BUS_ARGS("s", name, "o", image), 0),
        SD_BUS_SIGNAL_WITH_ARGS("ImageRemoved", SD_BUS_ARGS("s", name, "o", image), 0),
        SD_BUS_VTABLE_END,
};
