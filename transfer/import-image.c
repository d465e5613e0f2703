/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* ImportImage: a tar archive or a stamp btrfs stream, told apart by their content once decompressed.
 * A btrfs stream is received by stamp's own receiver (btrfs-receive.h) into the job's hidden
 * temporary: a new subvolume, or for a delta a writable snapshot of the parent the header names; it is
 * renamed into place only once the whole stream has been applied and checked. */
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/xattr.h>

#include <btrfsutil.h>

#include "btrfs-receive.h"
#include "btrfs-stream.h"
#include "btrfs-util.h"
#include "store.h"
#include "transfer.h"

typedef struct Input {
        struct archive *a;
        char peek[STAMP_STREAM_HEADER_MAX];
        size_t peek_len, peek_pos;
        JobChild *c;
        uint64_t in_size; /* 0: unknown */
        char error[512];
} Input;

static ssize_t input_read(void *userdata, void *buf, size_t n)
{
        Input *in = userdata;
        la_ssize_t r;

        if (in->peek_pos < in->peek_len) {
                size_t m = in->peek_len - in->peek_pos < n ? in->peek_len - in->peek_pos : n;
                memcpy(buf, in->peek + in->peek_pos, m);
                in->peek_pos += m;
                return (ssize_t) m;
        }
        r = archive_read_data(in->a, buf, n);
        if (r < 0) {
                snprintf(in->error, sizeof in->error, "%s", archive_error_string(in->a) ?: "cannot decompress");
                return -EBADMSG;
        }
        return r;
}

static void input_progress(void *userdata)
{
        Input *in = userdata;
        int64_t done = archive_filter_bytes(in->a, -1);

        if (in->in_size > 0 && done > 0)
                job_child_progress(in->c,
                                   (double) done >= (double) in->in_size ? 0.99 : (double) done / (double) in->in_size);
}

/* For a tar archive on an input that cannot be read again from its start: what was read already, and
 * the rest, decompressed, through a pipe to the tar import. */
typedef struct Feeder {
        Input *in;
        int fd;
} Feeder;

static void *feed_thread(void *p)
{
        Feeder *f = p;
        char buf[65536];

        for (;;) {
                ssize_t n = input_read(f->in, buf, sizeof buf);
                if (n <= 0 || loop_write(f->fd, buf, (size_t) n) < 0)
                        break;
        }
        f->fd = safe_close(f->fd);
        return NULL;
}

static int import_tar(JobChild *c, const JobArgs *j, Input *in, int in_fd, off_t start, uint64_t size)
{
        Feeder f = {.in = in, .fd = -1};
        pthread_t thread;
        int pipefd[2], k;

        if (start >= 0 && lseek(in_fd, start, SEEK_SET) == start) {
                archive_read_free(in->a);
                in->a = NULL;
                return import_stream_into_store(c, in_fd, size, j->name, j->import.read_only, NULL, NULL);
        }
        if (pipe2(pipefd, O_CLOEXEC) < 0)
                return job_child_fail(c, errno, "Cannot make a pipe: %s", strerror(errno));
        f.fd = pipefd[1];
        k = pthread_create(&thread, NULL, feed_thread, &f);
        if (k != 0) {
                safe_close(pipefd[0]);
                safe_close(pipefd[1]);
                return job_child_fail(c, k, "Cannot start reading the archive: %s", strerror(k));
        }
        k = import_stream_into_store(c, pipefd[0], 0, j->name, j->import.read_only, NULL, NULL);
        safe_close(pipefd[0]); /* a feeder still writing gets EPIPE and ends */
        (void) pthread_join(thread, NULL);
        return k;
}

static int open_parent(JobChild *c, const StampStreamHeader *h, int *ret)
{
        char hex[33];
        _cleanup_close_ int fd = -1;
        int k;

        uuid_to_hex(h->parent_uuid, hex);
        fd = openat(c->store_fd, h->parent, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (fd < 0 && errno == ENOENT)
                return job_child_fail(c, ENOENT,
                                      "The stream is a delta against image %s, which this store does not have: "
                                      "import a full btrfs export of %s first (stampctl export %s FILE --format "
                                      "btrfs where it is, then stampctl import FILE here)",
                                      h->parent, h->parent, h->parent);
        if (fd < 0)
                return job_child_fail(c, errno, "Cannot open image %s, the delta's parent: %s", h->parent,
                                      strerror(errno));
        k = fd_is_subvolume(fd) > 0 ? btrfs_subvol_matches_uuid(fd, h->parent_uuid) : 0;
        if (k > 0) {
                BtrfsSubvolInfo info;
                if (btrfs_subvol_info_fd(fd, &info) < 0 || !info.read_only)
                        return job_child_fail(c, EBUSY,
                                              "Image %s, the delta's parent, is writable here: it may have changed "
                                              "since it was received, and a delta applies only to the image it was "
                                              "made against; mark it read-only if it has not changed",
                                              h->parent);
        }
        if (k <= 0)
                return job_child_fail(c, ENOENT,
                                      "Image %s here is not the image the delta was made against (that one's uuid is "
                                      "%s): import a full btrfs export of the sender's %s first, under that name",
                                      h->parent, hex, h->parent);
        if (h->parent_transid != 0) { /* streams that say which state of the parent they need */
                uint64_t state = 0;
                k = btrfs_subvol_state(fd, &state);
                if (k == -ESTALE)
                        return job_child_fail(c, ENOENT,
                                              "Image %s here was changed since it was received (made writable and "
                                              "written to): the delta applies only to %s as it was sent; import a "
                                              "full btrfs export of the sender's %s again, under another name or "
                                              "after removing this one",
                                              h->parent, h->parent, h->parent);
                if (k < 0)
                        return job_child_fail(c, -k, "Cannot read the state of image %s: %s", h->parent, strerror(-k));
                if (state != h->parent_transid)
                        return job_child_fail(c, ENOENT,
                                              "Image %s here is not in the state the delta was made against: one of "
                                              "the two copies changed since they were the same; import a full btrfs "
                                              "export of the sender's %s again",
                                              h->parent, h->parent);
        }
        *ret = TAKE_FD(fd);
        return 0;
}

/* A template's recipe names the subvolume it was written for by uuid (see image_is_template()): the
 * received copy of a template is that template here, so its recipe is made to name the copy. */
static void adopt_recipe(JobChild *c, int root_fd, const uint8_t sent_uuid[16])
{
        g_autoptr(GVariant) recipe = NULL, uuid = NULL;
        g_autofree char *text = NULL;
        GVariantBuilder b;
        GVariantIter it;
        BtrfsSubvolInfo info;
        char buf[8192], sent[33], mine[33];
        const char *key;
        GVariant *value;
        ssize_t n;

        n = fgetxattr(root_fd, RECIPE_XATTR, buf, sizeof buf - 1);
        if (n < 0)
                return;
        buf[n] = '\0';
        recipe = g_variant_parse(G_VARIANT_TYPE_VARDICT, buf, NULL, NULL, NULL);
        if (!recipe)
                return;
        uuid = g_variant_lookup_value(recipe, "uuid", G_VARIANT_TYPE_STRING);
        uuid_to_hex(sent_uuid, sent);
        if (!uuid || !streq(g_variant_get_string(uuid, NULL), sent) || btrfs_subvol_info_fd(root_fd, &info) < 0)
                return;
        uuid_to_hex(info.uuid, mine);
        g_variant_builder_init(&b, G_VARIANT_TYPE_VARDICT);
        g_variant_iter_init(&it, recipe);
        while (g_variant_iter_next(&it, "{&sv}", &key, &value)) {
                if (streq(key, "uuid"))
                        g_variant_builder_add(&b, "{sv}", key, g_variant_new_string(mine));
                else
                        g_variant_builder_add(&b, "{sv}", key, value);
                g_variant_unref(value);
        }
        text = g_variant_print(g_variant_ref_sink(g_variant_builder_end(&b)), TRUE);
        if (fsetxattr(root_fd, RECIPE_XATTR, text, strlen(text), 0) < 0)
                job_child_log(c, LOG_LEVEL_WARNING, "Cannot keep the template's recipe: %s", strerror(errno));
}

static int import_btrfs(JobChild *c, const JobArgs *j, Input *in)
{
        _cleanup_(btrfs_send_reader_freep) BtrfsSendReader *reader = NULL;
        _cleanup_close_ int parent_fd = -1, root_fd = -1;
        const char *temp = c->temp_name, *name = j->name;
        StampStreamHeader h;
        BtrfsReceiveArgs args = {.c = c, .parent_fd = -1, .progress = input_progress, .userdata = in};
        char err[1024] = "";
        uint8_t uuid[16];
        uint64_t ctransid;
        bool read_only;
        int k;

        k = stamp_stream_header_parse(in->peek, in->peek_len, &h, err, sizeof err);
        if (k == 0)
                return job_child_fail(c, EBADMSG, "Importing image %s failed: the stream ends within its header", name);
        if (k < 0)
                return job_child_fail(c, EBADMSG, "Importing image %s failed: %s", name, err);
        in->peek_pos = (size_t) k;

        if (!c->store_is_btrfs)
                return job_child_fail(c, EOPNOTSUPP,
                                      "The image store is not on btrfs: a btrfs stream cannot be received here "
                                      "(export the image as tar instead)");
        if (!streq(h.name, name))
                job_child_log(c, LOG_LEVEL_INFO, "The stream holds image %s; importing it as %s", h.name, name);

        if (h.delta) {
                k = open_parent(c, &h, &parent_fd);
                if (k < 0)
                        return k;
                enum btrfs_util_error e;
                errno = 0;
                e = btrfs_util_create_snapshot_fd2(parent_fd, c->store_fd, temp, 0, NULL, NULL);
                if (e != BTRFS_UTIL_OK)
                        return job_child_fail(c, errno ?: EIO, "Cannot take a snapshot of image %s: %s", h.parent,
                                              btrfs_util_strerror(e));
        } else {
                int subvolume_error = 0;
                k = store_make_tree(c->store_fd, true, temp, &subvolume_error);
                if (k < 0 || subvolume_error != 0)
                        return job_child_fail(c, k < 0 ? -k : subvolume_error, "Cannot make the new image %s: %s", name,
                                              strerror(k < 0 ? -k : subvolume_error));
        }
        root_fd = openat(c->store_fd, temp, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (root_fd < 0)
                return job_child_fail(c, errno, "Cannot open the new image %s: %s", name, strerror(errno));

        /* Every path is resolved beneath root_fd already; the chroot is a second fence. */
        if (fchdir(root_fd) < 0)
                return job_child_fail(c, errno, "Cannot enter the new image %s: %s", name, strerror(errno));
        if (chroot(".") < 0)
                job_child_log(c, LOG_LEVEL_DEBUG, "Receiving without a chroot: %s", strerror(errno));
        (void) umask(0);

        k = btrfs_send_reader_new(input_read, in, &reader);
        if (k < 0)
                return job_child_fail(c, k == -EBADMSG ? EBADMSG : -k, "Importing image %s failed: %s", name,
                                      in->error[0] ? in->error : btrfs_send_reader_error(reader));
        args.root_fd = root_fd;
        args.parent_fd = parent_fd;
        args.delta = h.delta;
        memcpy(args.parent_uuid, h.parent_uuid, 16);
        k = btrfs_receive(&args, reader, uuid, &ctransid, err, sizeof err);
        if (k < 0)
                return job_child_fail(c, -k, "Importing image %s failed: %s", name, in->error[0] ? in->error : err);
        {
                char extra;
                if (input_read(in, &extra, 1) != 0)
                        return job_child_fail(c, EBADMSG, "Importing image %s failed: %s", name,
                                              in->error[0] ? in->error : "there is more after the stream's end");
        }

        adopt_recipe(c, root_fd, uuid);
        /* The files' data on disk before the name can point at them, as a tar import's: a transaction
         * commit alone (set_received makes one) need not include the data written before it. */
        if (syncfs(root_fd) < 0)
                return job_child_fail(c, errno, "Cannot write image %s to disk: %s", name, strerror(errno));
        /* Last of what changes the content: a change after this one counts as a change since it was
         * received (btrfs_subvol_state()). */
        k = btrfs_set_received(root_fd, uuid, ctransid);
        if (k < 0)
                return job_child_fail(c, -k, "Cannot record where image %s came from: %s", name, strerror(-k));
        read_only = h.read_only || j->import.read_only;
        if (read_only) {
                k = store_set_read_only_fd(root_fd, true);
                if (k < 0)
                        return job_child_fail(c, -k, "Cannot mark image %s read-only: %s", name, strerror(-k));
        }
        k = job_child_record_owner(c, name, root_fd);
        if (k < 0)
                return k;
        if (renameat2(c->store_fd, temp, c->store_fd, name, RENAME_NOREPLACE) < 0) {
                k = errno;
                job_child_drop_owner(c, name);
                if (k == EEXIST)
                        return job_child_fail(c, EEXIST, "An image named %s already exists", name);
                return job_child_fail(c, k, "Cannot put image %s in place: %s", name, strerror(k));
        }
        job_child_progress(c, 1.0);
        return 0;
}

int transfer_import_image(JobChild *c, const JobArgs *j)
{
        Input in = {.c = c};
        struct archive_entry *e;
        struct stat st;
        off_t start = -1;
        int k;

        if (!c->temp_name)
                return job_child_fail(c, EINVAL, "stamp-transfer: invalid arguments");
        (void) signal(SIGPIPE, SIG_IGN);
        if (fstat(j->import.in_fd, &st) == 0 && S_ISREG(st.st_mode)) {
                start = lseek(j->import.in_fd, 0, SEEK_CUR);
                if (start >= 0 && start < st.st_size)
                        in.in_size = (uint64_t) (st.st_size - start);
        }

        in.a = archive_read_new();
        if (!in.a)
                return job_child_fail(c, ENOMEM, "Out of memory");
        archive_read_support_filter_all(in.a);
        archive_read_support_format_raw(in.a);
        if (archive_read_open_fd(in.a, j->import.in_fd, 65536) != ARCHIVE_OK ||
            archive_read_next_header(in.a, &e) != ARCHIVE_OK) {
                k = job_child_fail(c, EBADMSG, "Importing image %s failed: %s", j->name,
                                   archive_error_string(in.a) ?: "the input is empty");
                archive_read_free(in.a);
                return k;
        }
        while (in.peek_len < sizeof in.peek) {
                la_ssize_t n = archive_read_data(in.a, in.peek + in.peek_len, sizeof in.peek - in.peek_len);
                if (n < 0) {
                        k = job_child_fail(c, EBADMSG, "Importing image %s failed: %s", j->name,
                                           archive_error_string(in.a) ?: "cannot decompress");
                        archive_read_free(in.a);
                        return k;
                }
                if (n == 0)
                        break;
                in.peek_len += (size_t) n;
        }

        if (stamp_stream_is_btrfs(in.peek, in.peek_len))
                k = import_btrfs(c, j, &in);
        else
                k = import_tar(c, j, &in, j->import.in_fd, start, in.in_size);
        if (in.a)
                archive_read_free(in.a);
        return k;
}
