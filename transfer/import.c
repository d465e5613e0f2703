/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <fcntl.h>
#include <locale.h>
#include <sys/stat.h>

#include "btrfs-util.h"
#include "store.h"
#include "transfer.h"

static int make_temporary(JobChild *c, int store_fd, const char *temp)
{
        int subvolume_error, k;

        k = store_make_tree(store_fd, c->store_is_btrfs, temp, &subvolume_error);
        if (subvolume_error != 0)
                job_child_log(c, LOG_LEVEL_WARNING, "Cannot make a subvolume for the image (%s); using a directory",
                              strerror(subvolume_error));
        return k < 0 ? k : 0;
}

int import_stream_into_store(JobChild *c, int in_fd, uint64_t in_size, const char *name, bool read_only,
                             ImportFinishFn finish, void *userdata)
{
        const char *temp = c->temp_name;
        int store_fd = c->store_fd;
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
                k = store_set_read_only_fd(root_fd, true);
                if (k < 0)
                        return job_child_fail(c, -k, "Cannot mark image %s read-only: %s", name, strerror(-k));
        }

        k = job_child_record_owner(c, name, root_fd);
        if (k < 0)
                return k;
        if (renameat2(store_fd, temp, store_fd, name, RENAME_NOREPLACE) < 0) {
                k = errno;
                job_child_drop_owner(c, name);
                if (k == EEXIST)
                        return job_child_fail(c, EEXIST, "An image named %s already exists", name);
                return job_child_fail(c, k, "Cannot put image %s in place: %s", name, strerror(k));
        }

        if (read_only && !is_subvolume) {
                k = store_set_read_only_fd(root_fd, true);
                if (k < 0) {
                        (void) renameat2(store_fd, name, store_fd, temp, RENAME_NOREPLACE);
                        return job_child_fail(c, -k, "Cannot mark image %s read-only: %s", name, strerror(-k));
                }
        }
        job_child_progress(c, 1.0);
        return 0;
}

int transfer_import(JobChild *c, const ImportArgs *a)
{
        uint64_t size = 0;
        struct stat st;

        if (fstat(a->in_fd, &st) == 0 && S_ISREG(st.st_mode)) {
                off_t pos = lseek(a->in_fd, 0, SEEK_CUR);
                if (pos >= 0 && pos < st.st_size)
                        size = (uint64_t) (st.st_size - pos);
        }
        return import_stream_into_store(c, a->in_fd, size, a->name, a->read_only, NULL, NULL);
}
