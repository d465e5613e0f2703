/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* DiffImage: what an image changed against its origin (or another image), from btrfs's own knowledge
 * (store/btrfs-diff.h), worked out in an operation's worker thread. */
#include <fcntl.h>

#include <btrfsutil.h>

#include "authz.h"
#include "btrfs-diff.h"
#include "delta.h"
#include "btrfs-util.h"
#include "errors.h"
#include "image-dbus.h"
#include "operation.h"

/* Callers whose uid is being asked of the bus, so that an owner's diff needs no polkit check. */
#define DIFF_UID_LOOKUPS_MAX 64
/* The bytes of paths one answer may carry: well below the bus's cap on a message. */
#define DIFF_REPLY_BYTES_MAX (16u * 1024 * 1024)

typedef struct DiffArgs {
        char *name;
        char *base;
        GPtrArray *changes; /* "Xpath": the change's letter, then the path */
        size_t bytes;
} DiffArgs;

static void diff_args_free(void *p)
{
        DiffArgs *a = p;

        if (!a)
                return;
        free(a->name);
        free(a->base);
        if (a->changes)
                g_ptr_array_unref(a->changes);
        free(a);
}

static int collect(char change, const char *path, void *userdata)
{
        DiffArgs *a = userdata;
        size_t n = strlen(path);

        if (a->bytes + n + 16 > DIFF_REPLY_BYTES_MAX)
                return -E2BIG;
        a->bytes += n + 16;
        g_ptr_array_add(a->changes, g_strdup_printf("%c%s", change, path));
        return 0;
}

/* @name's tree as a read-only subvolume: itself, or a read-only snapshot of it named *@ret_temp. */
static int open_read_only(Manager *m, const char *name, int *ret_fd, char **ret_temp, char *err, size_t errlen)
{
        _cleanup_close_ int fd = -1;
        BtrfsSubvolInfo info;
        enum btrfs_util_error e;
        _cleanup_free_ char *temp = NULL;
        int k;

        fd = openat(m->store_fd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (fd < 0)
                return errbuf_set(err, errlen, errno, "Cannot open image %s: %s", name, strerror(errno));
        k = fd_is_subvolume(fd);
        if (k <= 0)
                return errbuf_set(err, errlen, EOPNOTSUPP,
                                  "Image %s is a plain directory, not a btrfs subvolume: "
                                  "there is no btrfs history to compare",
                                  name);
        k = btrfs_subvol_info_fd(fd, &info);
        if (k < 0)
                return errbuf_set(err, errlen, -k, "Cannot read the subvolume of image %s: %s", name, strerror(-k));
        if (info.read_only) {
                *ret_fd = TAKE_FD(fd);
                return 0;
        }

        /* The send needs a tree that cannot change under it. */
        temp = store_temp_name(name);
        if (!temp)
                return -ENOMEM;
        errno = 0;
        e = btrfs_util_create_snapshot_fd2(fd, m->store_fd, temp, BTRFS_UTIL_CREATE_SNAPSHOT_READ_ONLY, NULL, NULL);
        if (e != BTRFS_UTIL_OK)
                return errbuf_set(err, errlen, errno ?: EIO, "Cannot take a snapshot of image %s to compare: %s", name,
                                  btrfs_util_strerror(e));
        safe_close(fd);
        fd = openat(m->store_fd, temp, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (fd < 0) {
                k = errno;
                (void) store_remove_tree(m->store_fd, temp);
                return errbuf_set(err, errlen, k, "Cannot open the snapshot of image %s: %s", name, strerror(k));
        }
        *ret_fd = TAKE_FD(fd);
        *ret_temp = TAKE_PTR(temp);
        return 0;
}

static int diff_work(Manager *m, void *userdata, char *err, size_t errlen)
{
        DiffArgs *a = userdata;
        _cleanup_close_ int image_fd = -1, base_fd = -1;
        _cleanup_free_ char *image_temp = NULL, *base_temp = NULL;
        int k;

        /* The fast path: a clone and its template (either way round) compared by their metadata, as
         * they are, without snapshots. Anything else (unrelated images, a template changed since, a
         * nested subvolume, a tree that changed under the search) goes the way of the kernel's send. */
        image_fd = openat(m->store_fd, a->name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        base_fd = openat(m->store_fd, a->base, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        k = image_fd >= 0 && base_fd >= 0 ? btrfs_tree_diff(base_fd, image_fd, collect, a) : -ENOTTY;
        image_fd = safe_close(image_fd);
        base_fd = safe_close(base_fd);
        if (k != -ENOTTY) {
                log_debug("DiffImage %s against %s: compared the metadata trees", a->name, a->base);
                goto done;
        }
        log_debug("DiffImage %s against %s: not a snapshot of an unchanged read-only base, comparing by send", a->name,
                  a->base);

        k = open_read_only(m, a->name, &image_fd, &image_temp, err, errlen);
        if (k >= 0)
                k = open_read_only(m, a->base, &base_fd, &base_temp, err, errlen);
        if (k < 0)
                goto cleanup;
        k = btrfs_diff(base_fd, image_fd, collect, a);
done:
        if (k < 0) {
                if (k == -E2BIG)
                        k = errbuf_set(err, errlen, E2BIG,
                                       "Image %s differs from %s in too many paths to answer in one message (over %u "
                                       "bytes of paths)",
                                       a->name, a->base, DIFF_REPLY_BYTES_MAX);
                else if (k < 0)
                        /* Not the caller's stream: whatever went wrong is an I/O failure here. */
                        k = errbuf_set(err, errlen, k == -EBADMSG ? EIO : -k, "Cannot compare image %s with %s: %s",
                                       a->name, a->base, strerror(-k));
        }
cleanup:
        image_fd = safe_close(image_fd);
        base_fd = safe_close(base_fd);
        if (image_temp)
                (void) store_remove_tree(m->store_fd, image_temp);
        if (base_temp)
                (void) store_remove_tree(m->store_fd, base_temp);
        return k;
}

static int diff_reply(Manager *m, sd_bus_message *reply, void *userdata, sd_bus_error *error)
{
        DiffArgs *a = userdata;
        int k;

        k = sd_bus_message_open_container(reply, 'a', "(ss)");
        for (guint i = 0; k >= 0 && i < a->changes->len; i++) {
                const char *c = a->changes->pdata[i];
                char change[2] = {c[0], '\0'};
                k = sd_bus_message_append(reply, "(ss)", change, c + 1);
        }
        if (k >= 0)
                k = sd_bus_message_close_container(reply);
        return k;
}

/* ---- who is asking ---- */

/* Calls whose sender's uid was asked of the bus (each referenced), to be delivered again once it
 * answered; a call found here is on its second pass. */
static GHashTable *asked;

static void sd_bus_slot_unrefp_(sd_bus_slot **s)
{
        sd_bus_slot_unref(*s);
}

typedef struct UidLookup {
        Manager *manager;
        sd_bus_message *msg;
} UidLookup;

static void message_unref(void *p)
{
        sd_bus_message_unref(p);
}

static void uid_lookup_free(void *p)
{
        UidLookup *l = p;

        sd_bus_message_unref(l->msg);
        free(l);
}

static int on_caller_uid(sd_bus_message *reply, void *userdata, sd_bus_error *ret_error)
{
        UidLookup *l = userdata;
        uint32_t uid;

        if (!sd_bus_message_is_method_error(reply, NULL) && sd_bus_message_read(reply, "u", &uid) >= 0)
                authz_remember_caller_uid(l->manager->authz, sd_bus_message_get_sender(l->msg), uid);
        /* Delivered again: the handler now knows the uid, or (without it) asks polkit. */
        (void) sd_bus_enqueue_for_read(sd_bus_message_get_bus(l->msg), l->msg);
        return 0;
}

/* Ask the bus for the uid of @msg's sender; the call is delivered again once it answered. */
static int ask_caller_uid(Manager *m, sd_bus_message *msg, sd_bus_error *error)
{
        sd_bus *bus = sd_bus_message_get_bus(msg);
        _cleanup_(sd_bus_slot_unrefp_) sd_bus_slot *slot = NULL;
        UidLookup *l;
        int k;

        if (!asked)
                asked = g_hash_table_new_full(g_direct_hash, g_direct_equal, message_unref, NULL);
        if (g_hash_table_size(asked) >= DIFF_UID_LOOKUPS_MAX)
                return sd_bus_error_setf(error, SD_BUS_ERROR_LIMITS_EXCEEDED,
                                         "Too many image comparisons are waiting to learn who called (at most %d); "
                                         "try again",
                                         DIFF_UID_LOOKUPS_MAX);
        l = calloc(1, sizeof *l);
        if (!l)
                return -ENOMEM;
        l->manager = m;
        l->msg = sd_bus_message_ref(msg);
        k = sd_bus_call_method_async(bus, &slot, "org.freedesktop.DBus", "/org/freedesktop/DBus",
                                     "org.freedesktop.DBus", "GetConnectionUnixUser", on_caller_uid, l, "s",
                                     sd_bus_message_get_sender(msg));
        if (k < 0) {
                uid_lookup_free(l);
                return sd_bus_error_set_errnof(error, k, "Cannot ask the bus who the caller is: %m");
        }
        (void) sd_bus_slot_set_destroy_callback(slot, uid_lookup_free);
        (void) sd_bus_slot_set_floating(slot, 1);
        g_hash_table_add(asked, sd_bus_message_ref(msg));
        return 1;
}

int method_diff_image(sd_bus_message *msg, void *userdata, sd_bus_error *error)
{
        Manager *m = userdata;
        const char *name, *base;
        _cleanup_free_ char *origin = NULL;
        Image *img = NULL, *base_img = NULL;
        uid_t owner, base_owner, uid;
        bool base_shared, asked_before;
        DiffArgs *a;
        int k;

        /* A call delivered again after its caller's uid was asked: not asked again, whatever
         * happens below. */
        asked_before = asked && g_hash_table_remove(asked, msg);

        k = sd_bus_message_read(msg, "ss", &name, &base);
        if (k < 0)
                return k;
        if ((k = bus_check_image_name(name, "image name", error)) < 0 ||
            (!isempty(base) && (k = bus_check_image_name(base, "base image name", error)) < 0) ||
            (k = bus_check_image_exists(m, name, &img, error)) < 0)
                return k;
        if (!m->store_is_btrfs)
                return sd_bus_error_setf(error, STAMP_ERROR_NOT_SUPPORTED,
                                         "The image store %s is not on btrfs: images have no btrfs history to compare",
                                         m->store);
        owner = image_owner(m, img);
        if (isempty(base)) {
                k = image_find_origin(m, img, NULL, &origin);
                if (k < 0)
                        return sd_bus_error_set_errnof(error, k, "Cannot find the origin of image %s: %m", name);
                if (!origin)
                        return sd_bus_error_setf(
                                error, STAMP_ERROR_NO_SUCH_IMAGE,
                                "Image %s has no origin in the store to compare with; name a base image", name);
                base = origin;
        }
        if ((k = bus_check_image_exists(m, base, &base_img, error)) < 0)
                return k;
        base_owner = image_owner(m, base_img);
        base_shared = base_owner == 0 && base_img->read_only;

        /* The owner reads their own image's changes without asking, against a base of theirs or a
         * shared template; anyone else needs manage-images, as for any act on someone's image. */
        k = authz_caller_uid(m->authz, msg, &uid);
        if (k == -ENODATA && sd_bus_message_get_sender(msg) && !asked_before)
                return ask_caller_uid(m, msg, error);
        if (k < 0 || (uid != 0 && (uid != owner || (base_owner != uid && !base_shared)))) {
                const char *details[] = {"verb", "diff", "image", name, "base", base, NULL};
                k = authz_verify(m->authz, msg, STAMP_ACTION_MANAGE_IMAGES, details, error);
                if (k <= 0)
                        return k < 0 ? k : 1;
        }

        a = calloc(1, sizeof *a);
        if (!a || !(a->name = strdup(name)) || !(a->base = strdup(base)) ||
            !(a->changes = g_ptr_array_new_with_free_func(g_free))) {
                diff_args_free(a);
                return -ENOMEM;
        }
        return operation_start_with_reply(m, msg, NULL, diff_work, diff_reply, NULL, a, diff_args_free, error);
}
