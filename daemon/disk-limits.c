/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <fcntl.h>
#include <inttypes.h>
#include <linux/btrfs.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/statvfs.h>

#include "authz.h"
#include "errors.h"
#include "image-dbus.h"
#include "disk-limits.h"
#include "operation.h"
#include "owners.h"

#define POOL_LIMIT_FILE "pool-limit"
/* Below this, a btrfs on a loop device has no room for its own metadata. */
#define POOL_LIMIT_MIN (UINT64_C(256) << 20)

/* The pool's limit as its file says, read once: only SetPoolLimit changes it, on the event loop. */
static uint64_t pool_limit_cached = UINT64_MAX;
static bool pool_limit_loaded;

uint64_t pool_limit_get(Manager *m)
{
        _cleanup_close_ int dir = -1, fd = -1;
        char buf[32];
        ssize_t n;

        if (pool_limit_loaded)
                return pool_limit_cached;
        pool_limit_loaded = true;
        if (!m->pool_raw)
                return pool_limit_cached;
        dir = open_private_dir(m->store_fd, STORE_META_DIR, false);
        if (dir >= 0)
                fd = openat(dir, POOL_LIMIT_FILE, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
        if (fd < 0)
                return pool_limit_cached;
        n = read(fd, buf, sizeof buf - 1);
        if (n > 0) {
                char *end;
                uint64_t v;
                buf[n] = '\0';
                errno = 0;
                v = strtoull(buf, &end, 10);
                if (errno == 0 && end != buf && (*end == '\n' || *end == '\0') && v >= POOL_LIMIT_MIN)
                        pool_limit_cached = v;
        }
        return pool_limit_cached;
}

uint64_t image_limit(Manager *m, const Image *img)
{
        uint64_t limit = UINT64_MAX;

        if (!m->quota_enabled || img->type != IMAGE_SUBVOLUME || img->subvol_id == 0)
                return UINT64_MAX;
        if (btrfs_qgroup_get_limit(m->store_fd, img->subvol_id, &limit) < 0)
                return UINT64_MAX;
        return limit;
}

/* Limits are kept by the quota groups of a pool stampd made: on a btrfs the user brought quota
 * groups are the user's to set, and elsewhere there are none. */
static int check_limits_supported(Manager *m, sd_bus_error *error)
{
        if (!m->pool_raw || !m->store_is_btrfs)
                return sd_bus_error_setf(error, STAMP_ERROR_NOT_SUPPORTED,
                                         "Limits are kept only on a pool stampd made itself; the store %s is not one",
                                         m->store);
        if (!m->quota_enabled)
                return sd_bus_error_setf(error, STAMP_ERROR_NOT_SUPPORTED,
                                         "Quota groups are not enabled on the pool %s", m->store);
        return 0;
}

/* ---- SetImageLimit ---- */

typedef struct ImageLimitArgs {
        char *name;
        uint64_t subvol_id;
        uint64_t bytes;
} ImageLimitArgs;

static void image_limit_args_free(void *p)
{
        ImageLimitArgs *a = p;

        if (!a)
                return;
        free(a->name);
        free(a);
}

static int image_limit_work(Manager *m, void *userdata, char *err, size_t errlen)
{
        ImageLimitArgs *a = userdata;
        int k = btrfs_qgroup_set_limit(m->store_fd, a->subvol_id, a->bytes);

        if (k < 0)
                return errbuf_set(err, errlen, -k, "Cannot set the limit of image %s: %s", a->name, strerror(-k));
        return 0;
}

static void image_limit_done(Manager *m, int result, void *userdata)
{
        ImageLimitArgs *a = userdata;

        if (result < 0)
                return;
        if (a->bytes == UINT64_MAX)
                log_info("Image %s has no limit now.", a->name);
        else
                log_info("Image %s is limited to %" PRIu64 " bytes.", a->name, a->bytes);
        {
                _cleanup_free_ char *path = NULL;
                if (sd_bus_path_encode(STAMP_IMAGE_PREFIX, a->name, &path) >= 0)
                        (void) sd_bus_emit_properties_changed(m->bus, path, STAMP_IMAGE_IFACE, "Limit", NULL);
        }
}

int method_set_image_limit(sd_bus_message *msg, void *userdata, sd_bus_error *error)
{
        Manager *m = userdata;
        const char *locks[2] = {};
        const char *name;
        char number[32];
        ImageLimitArgs *a;
        uint64_t bytes;
        Image *img;
        int k;

        k = sd_bus_message_read(msg, "st", &name, &bytes);
        if (k < 0)
                return k;
        if ((k = bus_check_image_name(name, "image name", error)) < 0 ||
            (k = bus_check_image_exists(m, name, &img, error)) < 0 || (k = check_limits_supported(m, error)) < 0)
                return k;
        if (bytes == 0)
                return sd_bus_error_setf(error, SD_BUS_ERROR_INVALID_ARGS,
                                         "A limit of 0 bytes for image %s would refuse every write; %" PRIu64
                                         " (UINT64_MAX) removes the limit",
                                         name, UINT64_MAX);
        if (img->type != IMAGE_SUBVOLUME || img->subvol_id == 0)
                return sd_bus_error_setf(error, STAMP_ERROR_NOT_SUPPORTED,
                                         "Image %s is a plain directory, which quota groups cannot limit", name);
        if ((k = bus_check_image_not_busy(m, name, error)) < 0)
                return k;

        snprintf(number, sizeof number, "%" PRIu64, bytes);
        const char *details[] = {"verb", "set-limit", "image", name, "limit", number, NULL};
        AuthzOwner owner = {.own_action = STAMP_ACTION_MANAGE_OWN_IMAGES, .owner = image_owner(m, img)};
        k = authz_verify_owned(m->authz, msg, STAMP_ACTION_MANAGE_IMAGES, &owner, details, NULL, error);
        if (k <= 0)
                return k < 0 ? k : 1;

        a = calloc(1, sizeof *a);
        if (!a || !(a->name = strdup(name))) {
                free(a);
                return -ENOMEM;
        }
        a->subvol_id = img->subvol_id;
        a->bytes = bytes;
        locks[0] = a->name;
        return operation_start(m, msg, locks, image_limit_work, image_limit_done, a, image_limit_args_free, error);
}

/* ---- SetPoolLimit ---- */

typedef struct PoolLimitArgs {
        uint64_t bytes;
} PoolLimitArgs;

static int pool_limit_save(int store_fd, uint64_t bytes)
{
        _cleanup_close_ int dir = -1;
        char text[32];
        int n;

        dir = open_private_dir(store_fd, STORE_META_DIR, true);
        if (dir < 0)
                return dir;
        if (bytes == UINT64_MAX)
                return unlinkat(dir, POOL_LIMIT_FILE, 0) < 0 && errno != ENOENT ? -errno : 0;
        n = snprintf(text, sizeof text, "%" PRIu64 "\n", bytes);
        return write_file_atomic_at(dir, POOL_LIMIT_FILE, text, (size_t) n, 0644, true);
}

/* Shrink the pool to the limit if it is bigger; it grows up to the limit on demand (pool.c). */
static int pool_limit_work(Manager *m, void *userdata, char *err, size_t errlen)
{
        PoolLimitArgs *a = userdata;
        struct statvfs sv;
        uint64_t size;
        int k;

        if (fstatvfs(m->store_fd, &sv) < 0)
                return errbuf_set(err, errlen, errno, "Cannot inspect the pool: %s", strerror(errno));
        size = (uint64_t) sv.f_blocks * sv.f_frsize;
        if (a->bytes != UINT64_MAX && a->bytes < size) {
                struct btrfs_ioctl_vol_args args = {};
                _cleanup_close_ int raw = -1;

                snprintf(args.name, sizeof args.name, "1:%" PRIu64, a->bytes);
                if (ioctl(m->store_fd, BTRFS_IOC_RESIZE, &args) < 0) {
                        k = errno;
                        return errbuf_set(err, errlen, k == EFBIG || k == ENOSPC ? ENOSPC : k,
                                          "Cannot shrink the pool to %" PRIu64 " bytes: %s", a->bytes,
                                          k == ENOSPC ? "what it holds does not fit" : strerror(k));
                }
                /* The space beyond goes back to the host; the loop device never reads there again. */
                raw = open(m->pool_raw, O_WRONLY | O_NOFOLLOW | O_CLOEXEC);
                if (raw < 0 || ftruncate(raw, (off_t) a->bytes) < 0)
                        log_warning("Cannot shrink %s to the pool's new size: %s", m->pool_raw, strerror(errno));
        }
        k = pool_limit_save(m->store_fd, a->bytes);
        if (k < 0)
                return errbuf_set(err, errlen, -k, "Cannot record the pool's limit: %s", strerror(-k));
        return 0;
}

static void pool_limit_done(Manager *m, int result, void *userdata)
{
        PoolLimitArgs *a = userdata;

        if (result < 0)
                return;
        pool_limit_cached = a->bytes;
        pool_limit_loaded = true;
        log_info("The pool %s is limited to %" PRIu64 " bytes.", m->store, a->bytes);
        (void) sd_bus_emit_properties_changed(m->bus, STAMP_MANAGER_PATH, STAMP_MANAGER_IFACE, "PoolLimit", NULL);
}

int method_set_pool_limit(sd_bus_message *msg, void *userdata, sd_bus_error *error)
{
        Manager *m = userdata;
        PoolLimitArgs *a;
        struct statvfs sv;
        uint64_t bytes, used;
        char number[32];
        int k;

        k = sd_bus_message_read(msg, "t", &bytes);
        if (k < 0)
                return k;
        if ((k = check_limits_supported(m, error)) < 0)
                return k;
        if (fstatvfs(m->store_fd, &sv) < 0)
                return sd_bus_error_set_errnof(error, errno, "Cannot inspect the pool %s: %m", m->store);
        used = (uint64_t) (sv.f_blocks - sv.f_bfree) * sv.f_frsize;
        if (bytes != UINT64_MAX && bytes < POOL_LIMIT_MIN)
                return sd_bus_error_setf(error, SD_BUS_ERROR_INVALID_ARGS,
                                         "A pool limit of %" PRIu64 " bytes is below the least a pool needs (%" PRIu64
                                         "); %" PRIu64 " (UINT64_MAX) removes the limit",
                                         bytes, POOL_LIMIT_MIN, UINT64_MAX);
        if (bytes != UINT64_MAX && bytes < used)
                return sd_bus_error_setf(error, STAMP_ERROR_NO_SPACE,
                                         "A pool limit of %" PRIu64
                                         " bytes is below what the pool %s uses now (%" PRIu64 " bytes)",
                                         bytes, m->store, used);

        snprintf(number, sizeof number, "%" PRIu64, bytes);
        const char *details[] = {"verb", "set-pool-limit", "limit", number, NULL};
        k = authz_verify(m->authz, msg, STAMP_ACTION_MANAGE_IMAGES, details, error);
        if (k <= 0)
                return k < 0 ? k : 1;

        a = calloc(1, sizeof *a);
        if (!a)
                return -ENOMEM;
        a->bytes = bytes;
        return operation_start(m, msg, NULL, pool_limit_work, pool_limit_done, a, free, error);
}
