/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <fcntl.h>
#include <signal.h>

#include <btrfsutil.h>

#include "archive-util.h"
#include "authz.h"
#include "errors.h"
#include "image.h"
#include "manager-methods.h"

typedef struct ExportArgs {
        char *name;
        int image_fd;
        int out_fd;
        ExportFormat format;
        bool read_only;
        uint64_t usage;      /* UINT64_MAX: unknown */
        char *snapshot_name; /* NULL: exported as it is */
} ExportArgs;

static void export_args_free(void *p)
{
        ExportArgs *a = p;

        if (!a)
                return;
        safe_close(a->image_fd);
        safe_close(a->out_fd);
        free(a->name);
        free(a->snapshot_name);
        free(a);
}

static void export_args_freep(ExportArgs **a)
{
        export_args_free(*a);
}

static int export_run(JobChild *c, void *userdata)
{
        ExportArgs *a = userdata;
        int store_fd = job_child_store_fd(c);
        _cleanup_close_ int snapshot_fd = -1;
        int tree_fd = a->image_fd;
        char err[1024];
        uint64_t total;
        int k;

        /* A reader that goes away must fail the job with a reason, not kill it. */
        (void) signal(SIGPIPE, SIG_IGN);

        if (a->snapshot_name) {
                enum btrfs_util_error e;

                errno = 0;
                e = btrfs_util_create_snapshot_fd2(a->image_fd, store_fd, a->snapshot_name,
                                                   BTRFS_UTIL_CREATE_SNAPSHOT_READ_ONLY, NULL, NULL);
                if (e != BTRFS_UTIL_OK)
                        return job_child_fail(c, errno ?: EIO, "Cannot take a snapshot of image %s to export: %s",
                                              a->name, btrfs_util_strerror(e));
                snapshot_fd = openat(store_fd, a->snapshot_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
                if (snapshot_fd < 0)
                        return job_child_fail(c, errno, "Cannot open the snapshot of image %s: %s", a->name,
                                              strerror(errno));
                tree_fd = snapshot_fd;
        } else if (!a->read_only)
                job_child_log(c, LOG_LEVEL_NOTICE,
                              "Image %s is a plain directory and cannot be snapshotted: exporting it as it is",
                              a->name);

        total = a->usage != UINT64_MAX && a->usage > 0 ? a->usage : tree_count_bytes(tree_fd);
        job_child_progress(c, 0);

        k = archive_write_tree(c, tree_fd, a->out_fd, a->format, total, err, sizeof err);
        (void) fchdir(store_fd);
        snapshot_fd = safe_close(snapshot_fd);
        if (k < 0)
                return job_child_fail(c, -k, "Exporting image %s failed: %s", a->name, err);

        /* On failure the job's parent removes the snapshot; on success it is ours to remove. */
        if (a->snapshot_name) {
                k = store_remove_tree(store_fd, a->snapshot_name);
                if (k < 0)
                        job_child_log(c, LOG_LEVEL_WARNING, "Cannot remove the export snapshot %s: %s",
                                      a->snapshot_name, strerror(-k));
        }
        job_child_progress(c, 1.0);
        return 0;
}

int method_export_tar(sd_bus_message *msg, void *userdata, sd_bus_error *error)
{
        Manager *m = userdata;
        _cleanup_(job_freep) Job *j = NULL;
        _cleanup_(export_args_freep) ExportArgs *a = NULL;
        const char *name, *format_name;
        ExportFormat format;
        Image *img;
        int fd, k;

        k = sd_bus_message_read(msg, "shs", &name, &fd, &format_name);
        if (k < 0)
                return k;

        if ((k = bus_check_image_name(name, "image name", error)) < 0)
                return k;
        format = export_format_from_string(format_name);
        if (format == _EXPORT_FORMAT_INVALID) {
                g_autofree char *f = g_strescape(strnlen(format_name, 80) >= 80 ? "(too long to show)" : format_name,
                                                 NULL);
                return sd_bus_error_setf(error, STAMP_ERROR_UNSUPPORTED_FORMAT,
                                         "Unsupported export format \"%s\" (known: zstd, xz, gzip, bzip2, uncompressed)",
                                         f);
        }
        if ((k = bus_check_archive_fd(fd, true, error)) < 0)
                return k;
        k = manager_get_image(m, name, &img);
        if (k == -ENOENT)
                return sd_bus_error_setf(error, STAMP_ERROR_NO_SUCH_IMAGE, "No image named %s", name);
        if (k < 0)
                return sd_bus_error_set_errnof(error, k, "Cannot read image %s: %m", name);

        const char *details[] = {"verb", "export", "image", name, "format", export_format_to_string(format), NULL};
        k = authz_verify(m->authz, msg, STAMP_ACTION_EXPORT, details, error);
        if (k <= 0)
                return k < 0 ? k : 1;

        /* No lock: exports read a snapshot, so they run beside machines, other exports and changes. */
        k = job_new(m, JOB_EXPORT_TAR, name, false, msg, &j, error);
        if (k < 0)
                return k;

        a = calloc(1, sizeof *a);
        if (!a)
                return -ENOMEM;
        a->image_fd = a->out_fd = -1;
        a->format = format;
        a->read_only = img->read_only;
        a->usage = img->usage;
        a->name = strdup(name);
        if (!a->name)
                return -ENOMEM;
        a->image_fd = openat(m->store_fd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (a->image_fd < 0)
                return sd_bus_error_setf(error, STAMP_ERROR_NO_SUCH_IMAGE, "Cannot open image %s: %s", name,
                                         strerror(errno));
        a->out_fd = fcntl(fd, F_DUPFD_CLOEXEC, 3);
        if (a->out_fd < 0)
                return -errno;

        /* Every subvolume is exported from a read-only snapshot: it is instant, and the export then
         * does not depend on what happens to the image (or a machine running on it) meanwhile. */
        if (m->store_is_btrfs && img->type == IMAGE_SUBVOLUME) {
                j->temp_name = store_temp_name(name);
                a->snapshot_name = j->temp_name ? strdup(j->temp_name) : NULL;
                if (!a->snapshot_name)
                        return -ENOMEM;
        }

        k = job_start(j, msg, export_run, TAKE_PTR(a), export_args_free);
        if (job_find(m, j->id) == j)
                TAKE_PTR(j);
        return k;
}
