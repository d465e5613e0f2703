/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <fcntl.h>
#include <inttypes.h>
#include <libdeflate.h>
#include <locale.h>
#include <pthread.h>
#include <sys/stat.h>

#include "archive-util.h"
#include "escape.h"
#include "oci.h"
#include "sha256.h"

/* A layer is a tar stream applied over what the layers before it made: its entries are extracted
 * with the checks of a tar import, and two kinds of names stand for changes instead of files (the
 * OCI image spec's whiteouts): ".wh.NAME" says NAME of a lower layer is gone, and ".wh..wh..opq" in
 * a directory says that nothing of the lower layers' in that directory is left. What this layer
 * itself puts there stays, whichever order the entries come in. All removals go by fd, never
 * through a symlink, in the chroot of the new image. */

#define WHITEOUT_PREFIX ".wh."
#define OPAQUE_NAME ".wh..wh..opq"
#define REMOVE_DEPTH_MAX 512

#define LAYER_EXTRACT_FLAGS                                                                                            \
        (ARCHIVE_EXTRACT_OWNER | ARCHIVE_EXTRACT_PERM | ARCHIVE_EXTRACT_TIME | ARCHIVE_EXTRACT_XATTR |                 \
         ARCHIVE_EXTRACT_ACL | ARCHIVE_EXTRACT_FFLAGS | ARCHIVE_EXTRACT_SECURE_SYMLINKS |                              \
         ARCHIVE_EXTRACT_SECURE_NODOTDOT | ARCHIVE_EXTRACT_SECURE_NOABSOLUTEPATHS)

/* "./a//b/" → "a/b"; "" for the root. */
static char *path_normalize(const char *p)
{
        GString *s = g_string_new(NULL);

        while (*p) {
                size_t n = strcspn(p, "/");
                if (n > 0 && !(n == 1 && p[0] == '.')) {
                        if (s->len > 0)
                                g_string_append_c(s, '/');
                        g_string_append_len(s, p, (gssize) n);
                }
                p += n;
                p += strspn(p, "/");
        }
        return g_string_free(s, false);
}

static int remove_recursive(int dir_fd, const char *name, unsigned depth)
{
        _cleanup_close_ int fd = -1;
        DIR *d;
        struct dirent *de;
        int k = 0;

        if (unlinkat(dir_fd, name, 0) >= 0 || errno == ENOENT)
                return 0;
        if (errno != EISDIR && errno != EPERM)
                return -errno;
        if (depth >= REMOVE_DEPTH_MAX)
                return -ELOOP;
        fd = openat(dir_fd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (fd < 0)
                return -errno;
        d = opendir_at(fd, ".");
        if (!d)
                return -errno;
        while (k >= 0 && (de = readdir(d)))
                if (!dot_or_dot_dot(de->d_name))
                        k = remove_recursive(fd, de->d_name, depth + 1);
        closedir(d);
        if (k < 0)
                return k;
        if (unlinkat(dir_fd, name, AT_REMOVEDIR) < 0 && errno != ENOENT)
                return -errno;
        return 0;
}

/* The directory @dir (normalized, "" for the root) opened without following any symlink on the way;
 * -ENOENT or -ENOTDIR when there is none such (then nothing of it needs removing). */
static int open_dir_nofollow(const char *dir)
{
        _cleanup_close_ int fd = open(".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);

        if (fd < 0)
                return -errno;
        for (const char *p = dir; *p;) {
                size_t n = strcspn(p, "/");
                g_autofree char *c = g_strndup(p, n);
                int next = openat(fd, c, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
                if (next < 0)
                        return errno == ELOOP ? -ENOTDIR : -errno;
                safe_close(fd);
                fd = next;
                p += n;
                p += strspn(p, "/");
        }
        return TAKE_FD(fd);
}

static void split(const char *path, char **ret_dir, const char **ret_base)
{
        const char *slash = strrchr(path, '/');

        *ret_dir = slash ? g_strndup(path, (size_t) (slash - path)) : g_strdup("");
        *ret_base = slash ? slash + 1 : path;
}

static int whiteout_apply(const char *dir, const char *name, GHashTable *made)
{
        _cleanup_close_ int fd = open_dir_nofollow(dir);
        g_autofree char *full = *dir ? g_strdup_printf("%s/%s", dir, name) : g_strdup(name);

        if (fd == -ENOENT || fd == -ENOTDIR)
                return 0;
        if (fd < 0)
                return fd;
        if (g_hash_table_contains(made, full))
                return 0; /* of this layer: a whiteout hides lower layers only */
        return remove_recursive(fd, name, 0);
}

static int opaque_apply(const char *dir, GHashTable *made)
{
        _cleanup_close_ int fd = open_dir_nofollow(dir);
        g_autoptr(GPtrArray) victims = g_ptr_array_new_with_free_func(g_free);
        struct dirent *de;
        DIR *d;
        int k;

        if (fd == -ENOENT || fd == -ENOTDIR)
                return 0;
        if (fd < 0)
                return fd;
        d = opendir_at(fd, ".");
        if (!d)
                return -errno;
        while ((de = readdir(d))) {
                g_autofree char *full = NULL;
                if (dot_or_dot_dot(de->d_name))
                        continue;
                full = *dir ? g_strdup_printf("%s/%s", dir, de->d_name) : g_strdup(de->d_name);
                if (!g_hash_table_contains(made, full))
                        g_ptr_array_add(victims, g_strdup(de->d_name));
        }
        closedir(d);
        for (guint i = 0; i < victims->len; i++)
                if ((k = remove_recursive(fd, victims->pdata[i], 0)) < 0)
                        return k;
        return 0;
}

/* What was at @path before this entry, if it cannot simply be replaced: a directory where a
 * non-directory comes, or the other way round. */
static int clear_conflict(const char *path, bool new_is_dir)
{
        g_autofree char *dir = NULL;
        _cleanup_close_ int fd = -1;
        const char *base;
        struct stat st;

        split(path, &dir, &base);
        if (!*base)
                return 0;
        fd = open_dir_nofollow(dir);
        if (fd < 0)
                return 0; /* libarchive makes the parents */
        if (fstatat(fd, base, &st, AT_SYMLINK_NOFOLLOW) < 0)
                return 0;
        if (S_ISDIR(st.st_mode) == new_is_dir)
                return 0;
        return remove_recursive(fd, base, 0);
}

static int layer_read_failure(struct archive *a, char *err, size_t errlen)
{
        if (archive_errno(a) == ENOMEM)
                return errbuf_set(err, errlen, ENOMEM, "Out of memory");
        return errbuf_set(err, errlen, EBADMSG, "The layer is damaged or not a tar archive: %s",
                          archive_error_string(a) ?: "unreadable");
}

static int layer_write_failure(struct archive *w, const char *path, char *err, size_t errlen)
{
        g_autofree char *p = text_escape(path, 200, ESCAPE_MESSAGE);
        int ae = archive_errno(w);

        if (ae == ENOSPC || ae == EDQUOT)
                return errbuf_set(err, errlen, ENOSPC, "No space left for the image while writing %s", p);
        if (ae == EIO || ae == EROFS || ae == ENOMEM)
                return errbuf_set(err, errlen, ae, "Cannot write %s: %s", p, archive_error_string(w));
        return errbuf_set(err, errlen, EBADMSG, "Refusing the layer at entry %s: %s", p,
                          archive_error_string(w) ?: "cannot be extracted");
}

/* Where a layer's tar comes from: @size bytes of @fd, uncompressed and hashed in a thread of their own,
 * so that the diff_id is checked in the same pass as the extraction and inflating overlaps with
 * writing the files. The thread fills a ring of buffers that the tar reader takes in turn (and
 * hashes).
 *
 * Gzip members of at most a block uncompressed (what stamp pushes: a member per MiB of tar) are
 * inflated whole by libdeflate, about twice as fast as zlib; anything else (one big member, zstd, no
 * compression) goes, from where that stopped, through a raw reader of libarchive's. */
#define LAYER_READ_BLOCK (1024 * 1024)
#define LAYER_RING 4
/* What is read ahead for a member: one of a block uncompressed is hardly ever more than this (a block
 * that does not compress at all is stored with a few bytes more). The buffer holds several, so that
 * what is left of it is moved to its start only now and then. */
#define LAYER_MEMBER_MAX (2 * 1024 * 1024)
#define LAYER_IN_MAX (8 * 1024 * 1024)

typedef struct LayerSource {
        int fd;
        uint64_t left; /* of the compressed bytes, not read yet */
        uint8_t *in;   /* compressed bytes read: [in_start, in_end) not used yet */
        size_t in_start, in_end;
        struct archive *raw;
        Sha256 *sum;

        pthread_t thread;
        bool started;
        pthread_mutex_t lock;
        pthread_cond_t changed;
        uint8_t *ring[LAYER_RING];
        size_t len[LAYER_RING];
        unsigned filled, taken; /* counts: slot i % LAYER_RING */
        bool held;              /* the slot last given to the tar reader, in use until its next read */
        bool done, stop;
        int error;
        char message[256];
} LayerSource;

static ssize_t source_read_fd(LayerSource *s, uint8_t *p, size_t max)
{
        size_t n = (size_t) MIN(s->left, (uint64_t) max);
        ssize_t k;

        if (n == 0)
                return 0;
        do
                k = read(s->fd, p, n);
        while (k < 0 && errno == EINTR);
        if (k < 0)
                return -errno;
        if (k == 0)
                return -EPIPE; /* short */
        s->left -= (uint64_t) k;
        return k;
}

/* libarchive's input: what the fast path left, then the rest. */
static la_ssize_t source_read(struct archive *a, void *userdata, const void **ret)
{
        LayerSource *s = userdata;
        ssize_t k;

        if (s->in_end > s->in_start) {
                *ret = s->in + s->in_start;
                k = (ssize_t) (s->in_end - s->in_start);
                s->in_start = s->in_end;
                return k;
        }
        k = source_read_fd(s, s->in, LAYER_READ_BLOCK);
        if (k == -EPIPE) {
                archive_set_error(a, EBADMSG, "The layer ends %" PRIu64 " bytes early", s->left);
                return -1;
        }
        if (k < 0) {
                archive_set_error(a, (int) -k, "Cannot read the layer: %s", strerror((int) -k));
                return -1;
        }
        s->in_start = s->in_end = 0;
        *ret = s->in;
        return k;
}

/* At least LAYER_MEMBER_MAX bytes in s->in unless the layer ends first. */
static int source_fill(LayerSource *s)
{
        if (s->in_end - s->in_start >= LAYER_MEMBER_MAX || s->left == 0)
                return 0;
        memmove(s->in, s->in + s->in_start, s->in_end - s->in_start);
        s->in_end -= s->in_start;
        s->in_start = 0;
        while (s->in_end < LAYER_MEMBER_MAX && s->left > 0) {
                ssize_t k = source_read_fd(s, s->in + s->in_end, LAYER_IN_MAX - s->in_end);
                if (k < 0)
                        return (int) k;
                s->in_end += (size_t) k;
        }
        return 0;
}

/* A free slot of the ring, or -1 when the reader stopped. */
static int slot_wait(LayerSource *s)
{
        int slot;

        pthread_mutex_lock(&s->lock);
        while (!s->stop && s->filled - s->taken >= LAYER_RING)
                pthread_cond_wait(&s->changed, &s->lock);
        slot = s->stop ? -1 : (int) (s->filled % LAYER_RING);
        pthread_mutex_unlock(&s->lock);
        return slot;
}

static void slot_publish(LayerSource *s, int slot, size_t n)
{
        pthread_mutex_lock(&s->lock);
        s->len[slot] = n;
        s->filled++;
        pthread_cond_broadcast(&s->changed);
        pthread_mutex_unlock(&s->lock);
}

static void source_end(LayerSource *s, int error, const char *message)
{
        pthread_mutex_lock(&s->lock);
        if (error) {
                s->error = error;
                snprintf(s->message, sizeof s->message, "%s", message);
        }
        s->done = true;
        pthread_cond_broadcast(&s->changed);
        pthread_mutex_unlock(&s->lock);
}

/* Whole gzip members by libdeflate while they come; 1 if the rest is for libarchive, 0 at the end,
 * 2 if the reader stopped, or a negative errno. */
static int inflate_members(LayerSource *s)
{
        struct libdeflate_decompressor *d = libdeflate_alloc_decompressor();
        bool any = false;
        int k = 1;

        if (!d)
                return -ENOMEM;
        for (;;) {
                size_t used, n;
                int slot;

                k = source_fill(s);
                if (k < 0)
                        break;
                if (s->in_end - s->in_start < 2 || s->in[s->in_start] != 0x1f || s->in[s->in_start + 1] != 0x8b) {
                        /* after members, nothing or padding: the end; before any, not gzip */
                        k = any || s->in_end == s->in_start ? 0 : 1;
                        break;
                }
                slot = slot_wait(s);
                if (slot < 0) {
                        k = 2;
                        break;
                }
                if (libdeflate_gzip_decompress_ex(d, s->in + s->in_start, s->in_end - s->in_start, s->ring[slot],
                                                  LAYER_READ_BLOCK, &used, &n) != LIBDEFLATE_SUCCESS) {
                        k = 1; /* a bigger member, or a damaged one: libarchive says which */
                        break;
                }
                s->in_start += used;
                any = true;
                if (n > 0)
                        slot_publish(s, slot, n);
        }
        libdeflate_free_decompressor(d);
        return k;
}

static void *inflate_thread(void *userdata)
{
        LayerSource *s = userdata;
        struct archive_entry *e;
        int k;

        k = inflate_members(s);
        if (k == -EPIPE) {
                source_end(s, EBADMSG, "The layer ends early");
                return NULL;
        }
        if (k < 0) {
                char m[128];
                snprintf(m, sizeof m, "Cannot read the layer: %s", strerror(-k));
                source_end(s, -k, m);
                return NULL;
        }
        if (k == 0 || k == 2) {
                source_end(s, 0, NULL);
                return NULL;
        }

        s->raw = archive_read_new();
        if (!s->raw) {
                source_end(s, ENOMEM, "Out of memory");
                return NULL;
        }
        archive_read_support_filter_gzip(s->raw);
        archive_read_support_filter_zstd(s->raw);
        archive_read_support_format_raw(s->raw);
        if (archive_read_open(s->raw, s, NULL, source_read, NULL) != ARCHIVE_OK ||
            archive_read_next_header(s->raw, &e) != ARCHIVE_OK) {
                source_end(s, EBADMSG, archive_error_string(s->raw) ?: "cannot be uncompressed");
                return NULL;
        }
        for (;;) {
                int slot = slot_wait(s);
                la_ssize_t n;

                if (slot < 0)
                        return NULL;
                n = archive_read_data(s->raw, s->ring[slot], LAYER_READ_BLOCK);
                if (n < 0) {
                        source_end(s, archive_errno(s->raw) > 0 ? archive_errno(s->raw) : EBADMSG,
                                   archive_error_string(s->raw) ?: "cannot be uncompressed");
                        return NULL;
                }
                if (n == 0) {
                        source_end(s, 0, NULL);
                        return NULL;
                }
                slot_publish(s, slot, (size_t) n);
        }
}

/* The next uncompressed bytes; 0 at the end. */
static la_ssize_t tar_read(struct archive *a, void *userdata, const void **ret)
{
        LayerSource *s = userdata;
        la_ssize_t n = 0;

        pthread_mutex_lock(&s->lock);
        if (s->held) {
                s->taken++;
                s->held = false;
                pthread_cond_broadcast(&s->changed);
        }
        while (s->filled == s->taken && !s->done)
                pthread_cond_wait(&s->changed, &s->lock);
        if (s->filled != s->taken) {
                unsigned slot = s->taken % LAYER_RING;
                *ret = s->ring[slot];
                n = (la_ssize_t) s->len[slot];
                s->held = true;
        } else if (s->error) {
                archive_set_error(a, s->error, "%s", s->message);
                n = -1;
        }
        pthread_mutex_unlock(&s->lock);
        /* Hashed here rather than beside the inflating, which has more to do. */
        if (n > 0)
                sha256_update(s->sum, *ret, (size_t) n);
        return n;
}

static void layer_source_stop(LayerSource *s)
{
        if (!s->started)
                return;
        pthread_mutex_lock(&s->lock);
        s->stop = true;
        pthread_cond_broadcast(&s->changed);
        pthread_mutex_unlock(&s->lock);
        (void) pthread_join(s->thread, NULL);
        pthread_mutex_destroy(&s->lock);
        pthread_cond_destroy(&s->changed);
        s->started = false;
}

static void layer_source_done(LayerSource *s)
{
        layer_source_stop(s);
        if (s->raw)
                archive_read_free(s->raw);
        free(s->in);
        for (size_t i = 0; i < LAYER_RING; i++)
                free(s->ring[i]);
        if (s->sum)
                sha256_free(s->sum);
}

static int layer_source_open(LayerSource *s, int fd, uint64_t size, char *err, size_t errlen)
{
        *s = (LayerSource) {.fd = fd, .left = size};
        s->in = malloc(LAYER_IN_MAX);
        s->sum = sha256_new();
        for (size_t i = 0; i < LAYER_RING; i++)
                if (!(s->ring[i] = malloc(LAYER_READ_BLOCK)))
                        return errbuf_set(err, errlen, ENOMEM, "Out of memory");
        if (!s->in || !s->sum)
                return errbuf_set(err, errlen, ENOMEM, "Out of memory");
        pthread_mutex_init(&s->lock, NULL);
        pthread_cond_init(&s->changed, NULL);
        if (pthread_create(&s->thread, NULL, inflate_thread, s) != 0) {
                pthread_mutex_destroy(&s->lock);
                pthread_cond_destroy(&s->changed);
                return errbuf_set(err, errlen, EAGAIN, "Cannot start uncompressing the layer");
        }
        s->started = true;
        return 0;
}

/* What follows the tar's end (its padding, hashed too: the diff_id is of all of it), and whatever
 * of the @size bytes the decompressor left. */
static int layer_source_finish(LayerSource *s, struct archive *a, const char *diff_id, char *err, size_t errlen)
{
        const void *p;
        la_ssize_t n;

        while ((n = tar_read(a, s, &p)) > 0)
                ;
        if (n < 0)
                return errbuf_set(err, errlen, EBADMSG, "The layer is damaged: %s",
                                  archive_error_string(a) ?: "cannot be uncompressed");
        layer_source_stop(s); /* it ended by itself */
        while (s->left > 0) {
                ssize_t k = source_read_fd(s, s->in, LAYER_IN_MAX);
                if (k < 0)
                        return errbuf_set(err, errlen, EBADMSG, "The layer is damaged: %s",
                                          k == -EPIPE ? "it ends early" : strerror((int) -k));
        }
        if (diff_id && !streq(diff_id + strlen("sha256:"), sha256_get_string(s->sum)))
                return errbuf_set(err, errlen, EBADMSG,
                                  "its uncompressed content does not match the diff_id %s its image config names "
                                  "(it is sha256:%s)",
                                  diff_id, sha256_get_string(s->sum));
        return 0;
}

int oci_layer_apply(JobChild *c, int fd, uint64_t layer_size, const char *diff_id, char *err, size_t errlen)
{
        _cleanup_(archive_read_freep) struct archive *a = archive_read_new();
        _cleanup_(archive_write_freep) struct archive *w = archive_write_disk_new();
        _cleanup_(layer_source_done) LayerSource src = {};
        g_autoptr(GHashTable) made = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
        uint64_t entries = 0;
        int r, k;

        if (!a || !w)
                return errbuf_set(err, errlen, ENOMEM, "Out of memory");
        (void) setlocale(LC_CTYPE, "C.UTF-8");
        k = layer_source_open(&src, fd, layer_size, err, errlen);
        if (k < 0)
                return k;
        archive_read_support_format_tar(a);
        archive_write_disk_set_options(w, LAYER_EXTRACT_FLAGS);
        if (archive_read_open(a, &src, NULL, tar_read, NULL) != ARCHIVE_OK)
                return layer_read_failure(a, err, errlen);

        for (;;) {
                struct archive_entry *e;
                g_autofree char *path = NULL, *dir = NULL;
                const char *base;

                r = archive_read_next_header(a, &e);
                if (r == ARCHIVE_EOF)
                        break;
                if (r == ARCHIVE_WARN)
                        job_child_log(c, LOG_LEVEL_WARNING, "%s", archive_error_string(a));
                else if (r != ARCHIVE_OK)
                        return layer_read_failure(a, err, errlen);

                k = archive_entry_check_safe(e, err, errlen);
                if (k < 0)
                        return k;
                path = path_normalize(archive_entry_pathname(e));
                split(path, &dir, &base);

                if (strncmp(base, WHITEOUT_PREFIX, strlen(WHITEOUT_PREFIX)) == 0) {
                        if (streq(base, OPAQUE_NAME))
                                k = opaque_apply(dir, made);
                        else if (base[strlen(WHITEOUT_PREFIX)] == '\0' || streq(base + strlen(WHITEOUT_PREFIX), ".") ||
                                 streq(base + strlen(WHITEOUT_PREFIX), ".."))
                                k = -EINVAL;
                        else
                                k = whiteout_apply(dir, base + strlen(WHITEOUT_PREFIX), made);
                        if (k == -EINVAL) {
                                g_autofree char *p = text_escape(path, 200, ESCAPE_MESSAGE);
                                return errbuf_set(err, errlen, EBADMSG,
                                                  "Refusing the layer: whiteout \"%s\" names nothing", p);
                        }
                        if (k < 0) {
                                g_autofree char *p = text_escape(path, 200, ESCAPE_MESSAGE);
                                return errbuf_set(err, errlen, -k, "Cannot apply whiteout %s: %s", p, strerror(-k));
                        }
                        entries++;
                        continue;
                }

                if (*path) {
                        k = clear_conflict(path, archive_entry_filetype(e) == AE_IFDIR && !archive_entry_hardlink(e));
                        if (k < 0)
                                return errbuf_set(err, errlen, -k, "Cannot replace %s: %s", path, strerror(-k));
                }
                r = archive_write_header(w, e);
                if (r < ARCHIVE_WARN)
                        return layer_write_failure(w, path, err, errlen);
                if (archive_entry_size(e) > 0)
                        for (;;) {
                                const void *buf;
                                size_t size;
                                int64_t offset;
                                r = archive_read_data_block(a, &buf, &size, &offset);
                                if (r == ARCHIVE_EOF)
                                        break;
                                if (r != ARCHIVE_OK)
                                        return layer_read_failure(a, err, errlen);
                                if (archive_write_data_block(w, buf, size, offset) < 0)
                                        return layer_write_failure(w, path, err, errlen);
                        }
                r = archive_write_finish_entry(w);
                if (r < ARCHIVE_WARN)
                        return layer_write_failure(w, path, err, errlen);
                g_hash_table_add(made, TAKE_PTR(path));
                entries++;
        }
        r = archive_write_close(w);
        if (r < ARCHIVE_WARN)
                return errbuf_set(err, errlen, archive_errno(w) == ENOSPC ? ENOSPC : EIO, "Cannot finish the layer: %s",
                                  archive_error_string(w));
        if (entries == 0 && archive_filter_bytes(a, 0) < 512)
                return errbuf_set(err, errlen, EBADMSG, "The layer is empty or not a tar archive");
        return layer_source_finish(&src, a, diff_id, err, errlen);
}
