/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <fcntl.h>
#include <signal.h>

#include <btrfsutil.h>

#include "store.h"
#include "transfer.h"

int transfer_export(JobChild *c, const ExportArgs *a)
{
        const char *snapshot_name = a->snapshot ? c->temp_name : NULL;
        int store_fd = c->store_fd;
        _cleanup_close_ int snapshot_fd = -1;
        int tree_fd = a->image_fd;
        char err[1024];
        TreeTotal total;
        int k;

        /* A reader that goes away must fail the job with a reason, not kill it. */
        (void) signal(SIGPIPE, SIG_IGN);

        if (snapshot_name) {
                enum btrfs_util_error e;

                errno = 0;
                e = btrfs_util_create_snapshot_fd2(a->image_fd, store_fd, snapshot_name,
                                                   BTRFS_UTIL_CREATE_SNAPSHOT_READ_ONLY, NULL, NULL);
                if (e != BTRFS_UTIL_OK)
                        return job_child_fail(c, errno ?: EIO, "Cannot take a snapshot of image %s to export: %s",
                                              a->name, btrfs_util_strerror(e));
                snapshot_fd = openat(store_fd, snapshot_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
                if (snapshot_fd < 0)
                        return job_child_fail(c, errno, "Cannot open the snapshot of image %s: %s", a->name,
                                              strerror(errno));
                tree_fd = snapshot_fd;
        } else if (!a->read_only)
                job_child_log(c, LOG_LEVEL_NOTICE,
                              "Image %s is a plain directory and cannot be snapshotted: exporting it as it is",
                              a->name);

        (void) tree_total_start(&total, tree_fd, a->usage);
        job_child_progress(c, 0);

        k = archive_write_tree(c, tree_fd, snapshot_fd >= 0 ? a->image_fd : -1, a->out_fd, a->format, &total, err,
                               sizeof err);
        tree_total_stop(&total);
        if (fchdir(store_fd) < 0) /* only the snapshot's removal below needs it */
                job_child_log(c, LOG_LEVEL_WARNING, "Cannot return to the store: %s", strerror(errno));
        snapshot_fd = safe_close(snapshot_fd);
        if (k < 0)
                return job_child_fail(c, -k, "Exporting image %s failed: %s", a->name, err);

        /* On failure the job's parent removes the snapshot; on success it is ours to remove. */
        if (snapshot_name) {
                k = store_remove_tree(store_fd, snapshot_name);
                if (k < 0)
                        job_child_log(c, LOG_LEVEL_WARNING, "Cannot remove the export snapshot %s: %s", snapshot_name,
                                      strerror(-k));
        }
        job_child_progress(c, 1.0);
        return 0;
}
