/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* ExportImage: a tar archive, as ExportTar writes it, or a btrfs send stream (full, or the difference
 * from a read-only parent) behind stamp's header (btrfs-stream.h), compressed the same way. */
#include <fcntl.h>
#include <linux/btrfs.h>
#include <pthread.h>
#include <signal.h>
#include <sys/ioctl.h>

#include <btrfsutil.h>

#include "btrfs-diff.h"
#include "btrfs-receive.h"
#include "btrfs-stream.h"
#include "btrfs-util.h"
#include "store.h"
#include "transfer.h"

#define EXPORT_STREAM_BLOCK_SIZE (256 * 1024)
#define PROGRESS_STEP 0.005

typedef struct Sender {
        int tree_fd;
        int pipe_fd; /* the write end: closed once the send is done */
        uint64_t parent_id;
        bool delta;
        int result; /* 0 or a positive errno */
} Sender;

/* A thread of its own: the send ioctl writes into the pipe until it is done, while the main thread
 * reads the other end and compresses. */
static void *send_thread(void *p)
{
        Sender *s = p;
        __u64 sources[1] = {s->parent_id};
        struct btrfs_ioctl_send_args args = {
                .send_fd = s->pipe_fd,
                .clone_sources_count = s->delta ? 1 : 0,
                .clone_sources = s->delta ? sources : NULL,
                .parent_root = s->delta ? s->parent_id : 0,
        };

        s->result = ioctl(s->tree_fd, BTRFS_IOC_SEND, &args) < 0 ? errno : 0;
        s->pipe_fd = safe_close(s->pipe_fd);
        return NULL;
}

/* A delta's size is not known beforehand: estimated from the file data the image has and its parent
 * has not (btrfs_tree_diff_data_bytes()), in a thread of its own beside the send, for the progress. */
typedef struct Estimate {
        int parent_fd, image_fd;
        uint64_t bytes; /* read once done is set */
        int done;       /* 1 with bytes, -1 without */
} Estimate;

static void *estimate_thread(void *p)
{
        Estimate *e = p;
        uint64_t data = 0;
        bool ok = btrfs_tree_diff_data_bytes(e->parent_fd, e->image_fd, &data) >= 0;

        /* The stream's commands, paths and headers besides the data. */
        e->bytes = data + data / 32 + 64 * 1024;
        __atomic_store_n(&e->done, ok ? 1 : -1, __ATOMIC_RELEASE);
        return NULL;
}

/* Compression in worker threads (@workers) hands them jobs of several MiB: a stream of a few MiB, as a
 * delta mostly is, would then be compressed only once it has all been sent. Without them it is
 * compressed here as the send makes it, beside the send's own thread. */
static int set_compression(struct archive *w, ExportFormat f, bool workers)
{
        char threads[16];
        int r;

        snprintf(threads, sizeof threads, "%ld", sysconf(_SC_NPROCESSORS_ONLN) > 0 ? sysconf(_SC_NPROCESSORS_ONLN) : 1);
        switch (f) {
        case EXPORT_ZSTD:
                r = archive_write_add_filter_zstd(w);
                if (r == ARCHIVE_OK && workers)
                        (void) archive_write_set_filter_option(w, NULL, "threads", threads);
                return r;
        case EXPORT_XZ:
                r = archive_write_add_filter_xz(w);
                if (r == ARCHIVE_OK && workers)
                        (void) archive_write_set_filter_option(w, NULL, "threads", threads);
                return r;
        case EXPORT_GZIP:
                return archive_write_add_filter_gzip(w);
        case EXPORT_BZIP2:
                return archive_write_add_filter_bzip2(w);
        case EXPORT_UNCOMPRESSED:
                return archive_write_add_filter_none(w);
        default:
                return ARCHIVE_FATAL;
        }
}

static int export_btrfs(JobChild *c, const JobArgs *j, int tree_fd)
{
        _cleanup_(archive_write_freep) struct archive *w = NULL;
        _cleanup_(archive_entry_freep) struct archive_entry *e = NULL;
        _cleanup_close_ int rfd = -1;
        ExportFormat format = export_format_from_string(j->export.format);
        StampStreamHeader h = {.read_only = j->export.read_only};
        BtrfsSubvolInfo parent_info = {};
        char header[STAMP_STREAM_HEADER_MAX];
        uint64_t sent = 0, usage = j->export.usage;
        Sender s = {.tree_fd = tree_fd, .pipe_fd = -1};
        Estimate est = {.parent_fd = -1, .image_fd = -1};
        pthread_t thread, est_thread;
        bool estimating = false;
        int pipefd[2], k, hlen;
        bool failed = false;
        double reported = 0;

        snprintf(h.name, sizeof h.name, "%s", j->name);
        if (j->export.parent) {
                if (j->export.parent_fd < 0 || btrfs_subvol_info_fd(j->export.parent_fd, &parent_info) < 0 ||
                    btrfs_subvol_stream_uuid(j->export.parent_fd, h.parent_uuid) < 0 || !parent_info.read_only)
                        return job_child_fail(c, EINVAL, "The parent %s is not a read-only btrfs subvolume",
                                              j->export.parent);
                k = btrfs_subvol_state(j->export.parent_fd, &h.parent_transid);
                if (k == -ESTALE)
                        return job_child_fail(c, ENOENT,
                                              "The parent %s was changed here since it was received (made writable "
                                              "and written to): no other store has it as it is now, so a delta "
                                              "against it could not be applied anywhere; export %s in full instead",
                                              j->export.parent, j->name);
                if (k < 0)
                        return job_child_fail(c, -k, "Cannot read the state of the parent %s: %s", j->export.parent,
                                              strerror(-k));
                snprintf(h.parent, sizeof h.parent, "%s", j->export.parent);
                h.delta = true;
                s.delta = true;
                s.parent_id = parent_info.id;
                usage = UINT64_MAX; /* the size of a difference is not known beforehand: estimated below */
                est.parent_fd = j->export.parent_fd;
                est.image_fd = j->export.image_fd;
        }
        hlen = stamp_stream_header_format(&h, header, sizeof header);
        if (hlen < 0)
                return job_child_fail(c, EINVAL, "Cannot write the stream's header");

        w = archive_write_new();
        e = archive_entry_new();
        if (!w || !e)
                return job_child_fail(c, ENOMEM, "Out of memory");
        if (archive_write_set_format_raw(w) != ARCHIVE_OK || set_compression(w, format, !h.delta) != ARCHIVE_OK)
                return job_child_fail(c, EPROTONOSUPPORT, "Cannot compress with %s: %s", j->export.format,
                                      archive_error_string(w) ?: "not built in");
        /* Written out in large blocks (the default of 10 KiB costs a write() each); none padded. */
        archive_write_set_bytes_per_block(w, EXPORT_STREAM_BLOCK_SIZE);
        archive_write_set_bytes_in_last_block(w, 1);
        if (archive_write_open_fd(w, j->export.out_fd) != ARCHIVE_OK)
                return job_child_fail(c, EIO, "Cannot write the export: %s", archive_error_string(w));
        archive_entry_set_pathname(e, j->name);
        archive_entry_set_filetype(e, AE_IFREG);
        archive_entry_set_perm(e, 0644);
        if (archive_write_header(w, e) != ARCHIVE_OK ||
            archive_write_data(w, header, (size_t) hlen) != (la_ssize_t) hlen)
                return job_child_fail(c, errno ?: EIO, "Cannot write the export: %s", archive_error_string(w));

        if (pipe2(pipefd, O_CLOEXEC) < 0)
                return job_child_fail(c, errno, "Cannot make a pipe: %s", strerror(errno));
        rfd = pipefd[0];
        s.pipe_fd = pipefd[1];
        /* Room for the send to run ahead, and for reads of more than one of its commands. */
        (void) fcntl(s.pipe_fd, F_SETPIPE_SZ, 1024 * 1024);
        k = pthread_create(&thread, NULL, send_thread, &s);
        if (k != 0) {
                safe_close(s.pipe_fd);
                return job_child_fail(c, k, "Cannot start the send: %s", strerror(k));
        }

        if (h.delta)
                estimating = pthread_create(&est_thread, NULL, estimate_thread, &est) == 0;
        job_child_log(c, LOG_LEVEL_INFO, "Sending image %s as a btrfs stream%s%s", j->name,
                      h.delta ? ", the difference from " : "", h.delta ? h.parent : "");
        for (;;) {
                static char buf[256 * 1024];
                ssize_t n = read(rfd, buf, sizeof buf);
                if (n < 0 && errno == EINTR)
                        continue;
                if (n <= 0) {
                        if (n < 0)
                                failed = true;
                        break;
                }
                if (archive_write_data(w, buf, (size_t) n) != n) {
                        failed = true;
                        break;
                }
                sent += (uint64_t) n;
                /* Past the first 4 MiB the estimate is waited for (it takes a search, not a send, and
                 * is mostly done by then): a stream that long always reports its progress. */
                if (estimating && sent >= 4 * 1024 * 1024 && __atomic_load_n(&est.done, __ATOMIC_ACQUIRE) == 0) {
                        (void) pthread_join(est_thread, NULL);
                        estimating = false;
                        if (est.done > 0)
                                usage = est.bytes;
                }
                if (usage == UINT64_MAX && estimating && __atomic_load_n(&est.done, __ATOMIC_ACQUIRE) > 0)
                        usage = est.bytes;
                /* Reported as it moves by a step: reads of the pipe come a command at a time, each would
                 * otherwise be a message to stampd. */
                if (usage != UINT64_MAX && usage > 0) {
                        double p = sent >= usage ? 0.99 : (double) sent / (double) usage;
                        if (p >= reported + PROGRESS_STEP) {
                                job_child_progress(c, p);
                                reported = p;
                        }
                }
        }
        /* A reader that stopped: the sender's writes fail with EPIPE and it ends. */
        rfd = safe_close(rfd);
        (void) pthread_join(thread, NULL);
        if (estimating)
                (void) pthread_join(est_thread, NULL);
        /* A write that failed first: the sender's own failure (EPIPE) is only its consequence. */
        if (failed && (archive_errno(w) == EPIPE || archive_errno(w) == ECONNRESET))
                return job_child_fail(c, EPIPE, "Exporting image %s failed: the reader closed the stream", j->name);
        if (failed)
                return job_child_fail(c, EIO, "Cannot write the export: %s",
                                      archive_error_string(w) ?: "the stream ended early");
        if (s.result != 0)
                return job_child_fail(c, s.result, "Sending image %s failed: %s", j->name, strerror(s.result));
        if (archive_write_close(w) != ARCHIVE_OK)
                return job_child_fail(c, EIO, "Cannot write the export: %s", archive_error_string(w) ?: "");
        job_child_log(c, LOG_LEVEL_INFO, "Sent %" PRIu64 " bytes of btrfs stream", sent);
        return 0;
}

int transfer_export_image(JobChild *c, const JobArgs *j)
{
        const char *snapshot_name = j->export.snapshot ? c->temp_name : NULL;
        _cleanup_close_ int snapshot_fd = -1;
        int tree_fd = j->export.image_fd, k;

        if (!j->export.btrfs) {
                ExportArgs a = {
                        .name = j->name,
                        .image_fd = j->export.image_fd,
                        .out_fd = j->export.out_fd,
                        .format = export_format_from_string(j->export.format),
                        .read_only = j->export.read_only,
                        .usage = j->export.usage,
                        .snapshot = j->export.snapshot,
                };
                if (a.format == _EXPORT_FORMAT_INVALID || (a.snapshot && !c->temp_name))
                        return job_child_fail(c, EINVAL, "stamp-transfer: invalid arguments");
                return transfer_export(c, &a);
        }

        (void) signal(SIGPIPE, SIG_IGN);
        if (export_format_from_string(j->export.format) == _EXPORT_FORMAT_INVALID || (snapshot_name && !c->temp_name))
                return job_child_fail(c, EINVAL, "stamp-transfer: invalid arguments");

        /* The send needs a read-only subvolume: a writable image is sent from a snapshot. */
        if (snapshot_name) {
                enum btrfs_util_error e;

                errno = 0;
                e = btrfs_util_create_snapshot_fd2(j->export.image_fd, c->store_fd, snapshot_name,
                                                   BTRFS_UTIL_CREATE_SNAPSHOT_READ_ONLY, NULL, NULL);
                if (e != BTRFS_UTIL_OK)
                        return job_child_fail(c, errno ?: EIO, "Cannot take a snapshot of image %s to export: %s",
                                              j->name, btrfs_util_strerror(e));
                snapshot_fd = openat(c->store_fd, snapshot_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
                if (snapshot_fd < 0)
                        return job_child_fail(c, errno, "Cannot open the snapshot of image %s: %s", j->name,
                                              strerror(errno));
                tree_fd = snapshot_fd;
        }
        job_child_progress(c, 0);
        k = export_btrfs(c, j, tree_fd);
        snapshot_fd = safe_close(snapshot_fd);
        if (k < 0)
                return k;
        if (snapshot_name) {
                k = store_remove_tree(c->store_fd, snapshot_name);
                if (k < 0)
                        job_child_log(c, LOG_LEVEL_WARNING, "Cannot remove the export snapshot %s: %s", snapshot_name,
                                      strerror(-k));
        }
        job_child_progress(c, 1.0);
        return 0;
}
