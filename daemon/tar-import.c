/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <fcntl.h>
#include <locale.h>
#include <sys/stat.h>

#include <btrfsutil.h>

#include "archive-util.h"
#include "btrfs-util.h"
#include "authz.h"
#include "errors.h"
#include "image.h"
#include "manager-methods.h"
#include "pool.h"

int bus_check_import_target(Manager *m, const char *name, sd_bus_error *error)
{
        int k = bus_check_image_not_busy(m, name, error);
        return k < 0 ? k : bus_check_image_absent(m, name, error);
}

static int make_temporary(JobChild *c, int store_fd, const char *temp)
{
        Manager *m = job_child_manager(c);

        if (m->store_is_btrfs) {
                errno = 0;
                if (btrfs_util_create_subvolume_fd(store_fd, temp, 0, NULL, NULL) == BTRFS_UTIL_OK)
                        return 0;
                job_child_log(c, LOG_LEVEL_WARNING, "Cannot make a subvolume for the image (%s); using a directory",
                              strerror(errno ?: EIO));
        }
        if (mkdirat(store_fd, temp, 0755) < 0)
                return -errno;
        return 0;
}

int import_stream_into_store(JobChild *c, int in_fd, uint64_t in_size, const char *name, bool read_only,
                             ImportFinishFn finish, void *userdata)
{
        const char *temp = job_child_temp_name(c);
        int store_fd = job_child_store_fd(c);
        _cleanup_close_ int root_fd = -1;
        ExtractResult extract;
        char err[1024] = "";
        bool is_subvolume;
        int k, f;

        k = make_temporary(c, store_fd, temp);
        if (k < 0)
                return job_child_fail(c, -k, "Cannot make the new image %s: %s", name, strerror(-k));
        root_fd = openat(store_fd, temp, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (root_fd < 0)
                return job_child_fail(c, errno, "Cannot open the new image %s: %s", name, strerror(errno));

        /* The archive is extracted with libarchive's checks against paths that leave the tree, and in a
         * chroot besides: whatever slips past the checks still lands inside the temporary. Only this
         * process is confined; the store stays reachable through store_fd for the final rename. */
        (void) setlocale(LC_CTYPE, "C.UTF-8"); /* see archive_extract_stream() */
        if (fchdir(root_fd) < 0)
                return job_child_fail(c, errno, "Cannot enter the new image %s: %s", name, strerror(errno));
        if (chroot(".") < 0)
                job_child_log(c, LOG_LEVEL_DEBUG, "Extracting without a chroot: %s", strerror(errno));
        (void) umask(0022);

        k = archive_extract_stream(c, in_fd, in_size, &extract, err, sizeof err);
        if (finish) {
                f = finish(c, k, &extract, userdata);
                if (f > 0)
                        return -EIO;
                if (f < 0)
                        return f;
        }
        if (k < 0)
                return job_child_fail(c, -k, "Importing image %s failed: %s", name, err);

        k = tree_flatten_single_dir(root_fd);
        if (k < 0)
                return job_child_fail(c, -k, "Cannot move the tree of image %s to its top: %s", name, strerror(-k));
        if (k > 0)
                job_child_log(c, LOG_LEVEL_INFO, "The archive holds its tree in one directory; moved it to the top");

        /* A read-only subvolume can be renamed, an immutable directory cannot: that one is marked
         * once in place, and taken back out of sight if that fails. */
        is_subvolume = fd_is_subvolume(root_fd) > 0;
        if (read_only && is_subvolume) {
                k = image_set_read_only_fd(root_fd, true);
                if (k < 0)
                        return job_child_fail(c, -k, "Cannot mark image %s read-only: %s", name, strerror(-k));
        }

        if (renameat2(store_fd, temp, store_fd, name, RENAME_NOREPLACE) < 0) {
                if (errno == EEXIST)
                        return job_child_fail(c, EEXIST, "An image named %s already exists", name);
                return job_child_fail(c, errno, "Cannot put image %s in place: %s", name, strerror(errno));
        }

        if (read_only && !is_subvolume) {
                k = image_set_read_only_fd(root_fd, true);
                if (k < 0) {
                        (void) renameat2(store_fd, name, store_fd, temp, RENAME_NOREPLACE);
                        return job_child_fail(c, -k, "Cannot mark image %s read-only: %s", name, strerror(-k));
                }
        }
        job_child_progress(c, 1.0);
        return 0;
}

typedef struct ImportArgs {
        char *name;
        int in_fd;
        bool read_only;
} ImportArgs;

static void import_args_free(void *p)
{
        ImportArgs *a = p;

        if (!a)
                return;
        safe_close(a->in_fd);
        free(a->name);
        free(a);
}

static void import_args_freep(ImportArgs **a)
{
        import_args_free(*a);
}

static int import_run(JobChild *c, void *userdata)
{
        ImportArgs *a = userdata;
        uint64_t size = 0;
        struct stat st;

        if (fstat(a->in_fd, &st) == 0 && S_ISREG(st.st_mode)) {
                off_t pos = lseek(a->in_fd, 0, SEEK_CUR);
                if (pos >= 0 && pos < st.st_size)
                        size = (uint64_t) (st.st_size - pos);
        }
        return import_stream_into_store(c, a->in_fd, size, a->name, a->read_only, NULL, NULL);
}

int method_import_tar(sd_bus_message *msg, void *userdata, sd_bus_error *error)
{
        Manager *m = userdata;
        _cleanup_(job_freep) Job *j = NULL;
        _cleanup_(import_args_freep) ImportArgs *a = NULL;
        const char *name;
        int fd, read_only, k;

        k = sd_bus_message_read(msg, "hsb", &fd, &name, &read_only);
        if (k < 0)
                return k;

        if ((k = bus_check_image_name(name, "image name", error)) < 0 ||
            (k = bus_check_archive_fd(fd, false, error)) < 0 || (k = bus_check_import_target(m, name, error)) < 0)
                return k;

        const char *details[] = {"verb", "import", "image", name, NULL};
        k = authz_verify(m->authz, msg, STAMP_ACTION_IMPORT, details, error);
        if (k <= 0)
                return k < 0 ? k : 1;

        /* The name is held until the image is in place, so no second import or clone races to it. */
        k = job_new(m, JOB_IMPORT_TAR, name, true, msg, &j, error);
        if (k < 0)
                return k;
        j->makes_image = true;
        j->temp_name = store_temp_name(name);
        if (!j->temp_name)
                return -ENOMEM;

        a = calloc(1, sizeof *a);
        if (!a)
                return -ENOMEM;
        a->read_only = read_only;
        a->in_fd = fcntl(fd, F_DUPFD_CLOEXEC, 3);
        if (a->in_fd < 0)
                return -errno;
        a->name = strdup(name);
        if (!a->name)
                return -ENOMEM;

        pool_maybe_grow(m);
        k = job_start(j, msg, import_run, TAKE_PTR(a), import_args_free);
        if (job_find(m, j->id) == j)
                TAKE_PTR(j);
        return k;
}
