/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>

#include "authz.h"
#include "errors.h"
#include "image-dbus.h"
#include "machine.h"
#include "names.h"
#include "operation.h"
#include "options.h"
#include "snapshot-dbus.h"
#include "snapshots.h"

/* The key that serializes changes to one image's snapshots (never an image name: it has a '/'). A
 * snapshot may be taken while a machine holds the image itself. */
static char *snapshots_lock_key(const char *name)
{
        char *key;

        if (asprintf(&key, "%s/snapshots", name) < 0)
                return NULL;
        return key;
}

static int image_open_fd(Manager *m, const char *name)
{
        int fd = openat(m->store_fd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        return fd < 0 ? -errno : fd;
}

static int bus_check_snapshot_name(const char *snapshot, sd_bus_error *error)
{
        return stamp_error_check_name(error, "snapshot name", snapshot, image_name_invalid_reason(snapshot));
}

static int bus_check_subvolume(const Image *img, sd_bus_error *error)
{
        if (img->type != IMAGE_SUBVOLUME)
                return sd_bus_error_setf(error, STAMP_ERROR_NOT_SUPPORTED,
                                         "Image %s is a plain directory, not a btrfs subvolume: it can have no "
                                         "snapshots",
                                         img->name);
        return 0;
}

static int bus_check_snapshots_not_busy(Manager *m, const char *name, sd_bus_error *error)
{
        _cleanup_free_ char *key = snapshots_lock_key(name);

        if (!key)
                return -ENOMEM;
        if (manager_image_busy_reason(m, key))
                return sd_bus_error_setf(error, STAMP_ERROR_IMAGE_BUSY,
                                         "The snapshots of image %s are busy (another snapshot operation)", name);
        return 0;
}

/* NoSuchSnapshot unless @img has @snapshot. */
static int bus_check_snapshot_exists(Manager *m, const Image *img, const char *snapshot, sd_bus_error *error)
{
        _cleanup_close_ int fd = image_open_fd(m, img->name);
        int k = fd < 0 ? fd : store_snapshot_exists(m->store_fd, fd, snapshot);

        if (k < 0)
                return sd_bus_error_set_errnof(error, k, "Cannot read the snapshots of image %s: %m", img->name);
        if (k == 0)
                return sd_bus_error_setf(error, STAMP_ERROR_NO_SUCH_SNAPSHOT, "Image %s has no snapshot named %s",
                                         img->name, snapshot);
        return 0;
}

int bus_check_snapshot_can_be_made(Manager *m, const Image *img, const char *snapshot, sd_bus_error *error)
{
        _cleanup_close_ int fd = -1;
        unsigned n;
        int k;

        if ((k = bus_check_snapshot_name(snapshot, error)) < 0 || (k = bus_check_subvolume(img, error)) < 0)
                return k;
        fd = image_open_fd(m, img->name);
        if (fd < 0)
                return sd_bus_error_set_errnof(error, fd, "Cannot open image %s: %m", img->name);
        k = store_snapshot_exists(m->store_fd, fd, snapshot);
        if (k < 0)
                return sd_bus_error_set_errnof(error, k, "Cannot read the snapshots of image %s: %m", img->name);
        if (k > 0)
                return sd_bus_error_setf(error, STAMP_ERROR_IMAGE_EXISTS, "Image %s already has a snapshot named %s",
                                         img->name, snapshot);
        n = store_snapshots_count(m->store_fd, fd);
        if (n >= m->settings.snapshots_per_image)
                return sd_bus_error_setf(error, STAMP_ERROR_QUOTA_EXCEEDED,
                                         "Image %s has %u snapshots, as many as SnapshotsPerImage=%u allows; remove "
                                         "one first",
                                         img->name, n, m->settings.snapshots_per_image);
        return 0;
}

int bus_check_no_snapshots(Manager *m, const Image *img, sd_bus_error *error)
{
        _cleanup_close_ int fd = -1;
        unsigned n;
        int k;

        if ((k = bus_check_snapshots_not_busy(m, img->name, error)) < 0)
                return k;
        fd = image_open_fd(m, img->name);
        if (fd < 0)
                return 0;
        n = store_snapshots_count(m->store_fd, fd);
        if (n > 0)
                return sd_bus_error_setf(error, STAMP_ERROR_IMAGE_BUSY,
                                         "Image %s has %u snapshot%s; remove %s first, or remove the image with "
                                         "%s (RemoveImageEx with with_snapshots, stampctl remove --with-snapshots)",
                                         img->name, n, n == 1 ? "" : "s", n == 1 ? "it" : "them",
                                         n == 1 ? "it" : "them");
        return 0;
}

uint64_t image_snapshots_exclusive(Manager *m, const Image *img)
{
        _cleanup_close_ int fd = -1, dir = -1;
        g_autoptr(GPtrArray) list = NULL;
        uint64_t sum = 0;

        if (!m->quota_enabled || img->type != IMAGE_SUBVOLUME)
                return 0;
        fd = image_open_fd(m, img->name);
        if (fd < 0 || store_snapshots_list(m->store_fd, fd, &list) < 0)
                return 0;
        for (guint i = 0; i < list->len; i++) {
                const StoreSnapshot *s = list->pdata[i];
                uint64_t referenced, exclusive;
                if (btrfs_qgroup_usage(m->store_fd, s->subvol_id, &referenced, &exclusive) >= 0)
                        sum += exclusive;
        }
        return sum;
}

int image_property_get_snapshots(sd_bus *bus, const char *path, const char *interface, const char *property,
                                 sd_bus_message *reply, void *userdata, sd_bus_error *error)
{
        Image *img = userdata;
        _cleanup_close_ int fd = -1;
        unsigned n = 0;

        if (img->type == IMAGE_SUBVOLUME) {
                fd = image_open_fd(img->manager, img->name);
                if (fd >= 0)
                        n = store_snapshots_count(img->manager->store_fd, fd);
        }
        return sd_bus_message_append(reply, "u", (uint32_t) n);
}

static AuthzOwner snapshot_authz_owner(Manager *m, const Image *img)
{
        return (AuthzOwner) {.own_action = STAMP_ACTION_MANAGE_OWN_IMAGES, .owner = image_owner(m, img)};
}

/* A new snapshot is charged to the image's owner: refused while that user is at BytesPerUser=. */
static int bus_check_owner_bytes(Manager *m, sd_bus_message *msg, uid_t owner, sd_bus_error *error)
{
        unsigned images;
        uint64_t bytes;
        uid_t caller;
        int k;

        if (owner == 0 || m->settings.bytes_per_user == UINT64_MAX)
                return 0;
        if (authz_caller_uid(m->authz, msg, &caller) >= 0 && caller == 0)
                return 0;
        k = image_user_usage(m, owner, &images, &bytes);
        if (k < 0)
                return sd_bus_error_set_errnof(error, k, "Cannot count the images of user %u: %m", (unsigned) owner);
        if (bytes != UINT64_MAX && bytes >= m->settings.bytes_per_user)
                return sd_bus_error_setf(error, STAMP_ERROR_QUOTA_EXCEEDED,
                                         "User %u uses %" PRIu64 " bytes in the store, %" PRIu64
                                         " over BytesPerUser=%" PRIu64 "; remove an image or a snapshot first",
                                         (unsigned) owner, bytes, bytes - m->settings.bytes_per_user,
                                         m->settings.bytes_per_user);
        return 0;
}

typedef struct SnapshotArgs {
        char *name;
        char *snapshot;
        bool with_snapshots;
} SnapshotArgs;

static void snapshot_args_free(void *p)
{
        SnapshotArgs *a = p;

        if (!a)
                return;
        free(a->name);
        free(a->snapshot);
        free(a);
}

static SnapshotArgs *snapshot_args_new(const char *name, const char *snapshot)
{
        SnapshotArgs *a = calloc(1, sizeof *a);

        if (!a || !(a->name = strdup(name)) || (snapshot && !(a->snapshot = strdup(snapshot)))) {
                snapshot_args_free(a);
                return NULL;
        }
        return a;
}

/* ---- SnapshotImage ---- */

static int snapshot_work(Manager *m, void *userdata, char *err, size_t errlen)
{
        SnapshotArgs *a = userdata;
        return store_snapshot_create(m->store_fd, a->name, a->snapshot, err, errlen);
}

static void snapshot_done(Manager *m, int result, void *userdata)
{
        SnapshotArgs *a = userdata;

        if (result >= 0)
                log_info("Took snapshot %s of image %s.", a->snapshot, a->name);
}

int method_snapshot_image(sd_bus_message *msg, void *userdata, sd_bus_error *error)
{
        Manager *m = userdata;
        const char *name, *snapshot;
        _cleanup_free_ char *key = NULL;
        const char *locks[3] = {};
        AuthzOwner owner;
        SnapshotArgs *a;
        Image *img;
        int k;

        k = sd_bus_message_read(msg, "ss", &name, &snapshot);
        if (k < 0)
                return k;
        const char *details[] = {"verb", "snapshot", "image", name, "snapshot", snapshot, NULL};
        if ((k = bus_check_image_name(name, "image name", error)) < 0 ||
            (k = bus_check_snapshot_name(snapshot, error)) < 0 ||
            (k = bus_check_image_exists(m, name, &img, error)) < 0 ||
            (k = bus_check_snapshot_can_be_made(m, img, snapshot, error)) < 0 ||
            (k = bus_check_snapshots_not_busy(m, name, error)) < 0)
                return k;
        /* A running machine holds its image: a snapshot of it then is as a crash would leave it, which
         * is what btrfs makes it (one atomic act). Anything else that holds it is changing it. */
        if (!machine_holding_image(m, name) && (k = bus_check_image_not_busy(m, name, error)) < 0)
                return k;
        owner = snapshot_authz_owner(m, img);

        k = authz_verify_owned(m->authz, msg, STAMP_ACTION_MANAGE_IMAGES, &owner, details, NULL, error);
        if (k <= 0)
                return k < 0 ? k : 1;
        if ((k = bus_check_owner_bytes(m, msg, owner.owner, error)) < 0)
                return k;

        key = snapshots_lock_key(name);
        a = snapshot_args_new(name, snapshot);
        if (!key || !a) {
                snapshot_args_free(a);
                return -ENOMEM;
        }
        locks[0] = key;
        if (!machine_holding_image(m, name))
                locks[1] = name;
        return operation_start(m, msg, locks, snapshot_work, snapshot_done, a, snapshot_args_free, error);
}

/* What RestoreImage and RemoveSnapshot do once their checks passed: authorize (the owner's own action
 * first), then act on the snapshots of @img in an operation holding their lock, and the image's too if
 * @lock_image. */
static int authorize_and_start(Manager *m, sd_bus_message *msg, Image *img, const char *snapshot,
                               const char *const *details, bool lock_image, OperationWorkFn work, OperationDoneFn done,
                               sd_bus_error *error)
{
        AuthzOwner owner = snapshot_authz_owner(m, img);
        _cleanup_free_ char *key = NULL;
        SnapshotArgs *a;
        int k;

        k = authz_verify_owned(m->authz, msg, STAMP_ACTION_MANAGE_IMAGES, &owner, details, NULL, error);
        if (k <= 0)
                return k < 0 ? k : 1;

        key = snapshots_lock_key(img->name);
        a = snapshot_args_new(img->name, snapshot);
        if (!key || !a) {
                snapshot_args_free(a);
                return -ENOMEM;
        }
        const char *locks[] = {img->name, key, NULL};
        return operation_start(m, msg, lock_image ? locks : locks + 1, work, done, a, snapshot_args_free, error);
}

/* ---- RestoreImage ---- */

static int restore_work(Manager *m, void *userdata, char *err, size_t errlen)
{
        SnapshotArgs *a = userdata;
        return store_snapshot_restore(m->store_fd, a->name, a->snapshot, err, errlen);
}

static void restore_done(Manager *m, int result, void *userdata)
{
        SnapshotArgs *a = userdata;

        if (result >= 0)
                log_info("Restored image %s from its snapshot %s.", a->name, a->snapshot);
}

int method_restore_image(sd_bus_message *msg, void *userdata, sd_bus_error *error)
{
        Manager *m = userdata;
        const char *name, *snapshot;
        Image *img;
        int k;

        k = sd_bus_message_read(msg, "ss", &name, &snapshot);
        if (k < 0)
                return k;
        const char *details[] = {"verb", "restore", "image", name, "snapshot", snapshot, NULL};
        if ((k = bus_check_image_name(name, "image name", error)) < 0 ||
            (k = bus_check_snapshot_name(snapshot, error)) < 0 ||
            (k = bus_check_image_exists(m, name, &img, error)) < 0 || (k = bus_check_subvolume(img, error)) < 0 ||
            (k = bus_check_snapshot_exists(m, img, snapshot, error)) < 0)
                return k;
        /* A read-only image is a template others' clones come from: it is not rolled back under them. */
        if (img->read_only)
                return sd_bus_error_setf(error, STAMP_ERROR_IMAGE_READ_ONLY,
                                         "Image %s is read-only; mark it writable before restoring it", name);
        if ((k = bus_check_image_not_busy(m, name, error)) < 0 ||
            (k = bus_check_snapshots_not_busy(m, name, error)) < 0)
                return k;
        return authorize_and_start(m, msg, img, snapshot, details, true, restore_work, restore_done, error);
}

/* ---- RemoveSnapshot ---- */

static int remove_snapshot_work(Manager *m, void *userdata, char *err, size_t errlen)
{
        SnapshotArgs *a = userdata;
        return store_snapshot_remove(m->store_fd, a->name, a->snapshot, err, errlen);
}

static void remove_snapshot_done(Manager *m, int result, void *userdata)
{
        SnapshotArgs *a = userdata;

        if (result >= 0)
                log_info("Removed snapshot %s of image %s.", a->snapshot, a->name);
}

int method_remove_snapshot(sd_bus_message *msg, void *userdata, sd_bus_error *error)
{
        Manager *m = userdata;
        const char *name, *snapshot;
        Image *img;
        int k;

        k = sd_bus_message_read(msg, "ss", &name, &snapshot);
        if (k < 0)
                return k;
        const char *details[] = {"verb", "remove-snapshot", "image", name, "snapshot", snapshot, NULL};
        if ((k = bus_check_image_name(name, "image name", error)) < 0 ||
            (k = bus_check_snapshot_name(snapshot, error)) < 0 ||
            (k = bus_check_image_exists(m, name, &img, error)) < 0 || (k = bus_check_subvolume(img, error)) < 0 ||
            (k = bus_check_snapshot_exists(m, img, snapshot, error)) < 0 ||
            (k = bus_check_snapshots_not_busy(m, name, error)) < 0)
                return k;
        /* The image itself is not touched: a machine may run on it meanwhile. */
        return authorize_and_start(m, msg, img, snapshot, details, false, remove_snapshot_work, remove_snapshot_done,
                                   error);
}

/* ---- ListSnapshots ---- */

int method_list_snapshots(sd_bus_message *msg, void *userdata, sd_bus_error *error)
{
        Manager *m = userdata;
        _cleanup_bus_message_ sd_bus_message *reply = NULL;
        g_autoptr(GPtrArray) list = NULL;
        _cleanup_close_ int fd = -1;
        const char *name;
        Image *img;
        int k;

        k = sd_bus_message_read(msg, "s", &name);
        if (k < 0)
                return k;
        if ((k = bus_check_image_name(name, "image name", error)) < 0 ||
            (k = bus_check_image_exists(m, name, &img, error)) < 0)
                return k;
        if (img->type == IMAGE_SUBVOLUME) {
                fd = image_open_fd(m, name);
                k = fd < 0 ? fd : store_snapshots_list(m->store_fd, fd, &list);
                if (k < 0)
                        return sd_bus_error_set_errnof(error, k, "Cannot read the snapshots of image %s: %m", name);
        }

        k = sd_bus_message_new_method_return(msg, &reply);
        if (k >= 0)
                k = sd_bus_message_open_container(reply, 'a', "(stt)");
        for (guint i = 0; k >= 0 && list && i < list->len; i++) {
                const StoreSnapshot *s = list->pdata[i];
                uint64_t referenced, exclusive = UINT64_MAX;

                if (m->quota_enabled && btrfs_qgroup_usage(m->store_fd, s->subvol_id, &referenced, &exclusive) < 0)
                        exclusive = UINT64_MAX;
                k = sd_bus_message_append(reply, "(stt)", s->name, s->crtime_usec, exclusive);
        }
        if (k >= 0)
                k = sd_bus_message_close_container(reply);
        if (k < 0)
                return k;
        return sd_bus_send(NULL, reply, NULL);
}

/* ---- RemoveImageEx ---- */

typedef struct RemoveExOptions {
        int with_snapshots;
} RemoveExOptions;

static const OptionSpec remove_ex_options[] = {
        {"with_snapshots", OPTION_BOOL, offsetof(RemoveExOptions, with_snapshots)},
        {},
};

static int remove_with_snapshots_work(Manager *m, void *userdata, char *err, size_t errlen)
{
        SnapshotArgs *a = userdata;
        int k;

        /* The snapshots first: a crash in between leaves the image without them, never snapshots
         * without their image. */
        k = store_snapshots_remove_all(m->store_fd, a->name, err, errlen);
        if (k < 0)
                return k;
        return store_remove_image(m->store_fd, m->store_is_btrfs, a->name, err, errlen);
}

static void remove_with_snapshots_done(Manager *m, int result, void *userdata)
{
        SnapshotArgs *a = userdata;

        if (result >= 0) {
                log_info("Removed image %s with its snapshots.", a->name);
                (void) manager_send_image_removed(m, a->name);
        }
}

int method_remove_image_ex(sd_bus_message *msg, void *userdata, sd_bus_error *error)
{
        Manager *m = userdata;
        _cleanup_free_ char *key = NULL;
        RemoveExOptions o;
        const char *name;
        AuthzOwner owner;
        SnapshotArgs *a;
        Image *img;
        int k;

        k = sd_bus_message_read(msg, "s", &name);
        if (k < 0)
                return k;
        k = bus_read_options(msg, remove_ex_options, &o, error);
        if (k < 0)
                return k;
        if (o.with_snapshots <= 0)
                return image_method_remove(m, msg, name, error);

        const char *details[] = {"verb", "remove", "image", name, "with_snapshots", "yes", NULL};
        if ((k = bus_check_image_name(name, "image name", error)) < 0 ||
            (k = bus_check_image_exists(m, name, &img, error)) < 0 ||
            (k = bus_check_image_not_busy(m, name, error)) < 0 ||
            (k = bus_check_snapshots_not_busy(m, name, error)) < 0)
                return k;
        owner = snapshot_authz_owner(m, img);

        k = authz_verify_owned(m->authz, msg, STAMP_ACTION_MANAGE_IMAGES, &owner, details, NULL, error);
        if (k <= 0)
                return k < 0 ? k : 1;

        key = snapshots_lock_key(name);
        a = snapshot_args_new(name, NULL);
        if (!key || !a) {
                snapshot_args_free(a);
                return -ENOMEM;
        }
        return operation_start(m, msg, (const char *[]) {name, key, NULL}, remove_with_snapshots_work,
                               remove_with_snapshots_done, a, snapshot_args_free, error);
}
