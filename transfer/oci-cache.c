/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <fcntl.h>
#include <inttypes.h>
#include <sys/stat.h>

#include <btrfsutil.h>

#include "btrfs-util.h"
#include "oci.h"
#include "owners.h"
#include "sha256.h"

/* The blobs of images pulled, by digest, so that what a host has once is not fetched again (a
 * clone's template layer, above all). Only the job helper writes here, and only through a hidden
 * temporary renamed to the digest once its content was verified; a blob is verified again before
 * use, and one that no longer matches is dropped. */

bool oci_digest_is_valid(const char *d)
{
        if (!d || strncmp(d, "sha256:", 7) != 0 || strlen(d) != 7 + 64)
                return false;
        for (const char *p = d + 7; *p; p++)
                if (!((*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'f')))
                        return false;
        return true;
}

int oci_cache_open(int store_fd)
{
        _cleanup_close_ int meta = -1, blobs = -1;

        meta = open_private_dir(store_fd, STORE_META_DIR, true);
        if (meta < 0)
                return meta;
        blobs = open_private_dir(meta, "oci-blobs", true);
        if (blobs < 0)
                return blobs;
        return open_private_dir(blobs, "sha256", true);
}

int fd_sha256(int fd, char ret[static 72], uint64_t *ret_size)
{
        g_autoptr(Sha256) sum = sha256_new();
        _cleanup_free_ uint8_t *buf = malloc(1 << 20);
        uint64_t size = 0;
        off_t off = 0;

        if (!buf)
                return -ENOMEM;
        for (;;) {
                ssize_t n = pread(fd, buf, 1 << 20, off);
                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        return -errno;
                }
                if (n == 0)
                        break;
                sha256_update(sum, buf, n);
                off += n;
                size += (uint64_t) n;
        }
        snprintf(ret, 72, "sha256:%s", sha256_get_string(sum));
        if (ret_size)
                *ret_size = size;
        return 0;
}

int oci_cache_open_blob(int cache_fd, const char *digest, uint64_t size)
{
        _cleanup_close_ int fd = -1;
        char actual[72];
        struct stat st;
        uint64_t n;
        int k;

        if (!oci_digest_is_valid(digest))
                return -EINVAL;
        fd = openat(cache_fd, digest + 7, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
        if (fd < 0)
                return -errno;
        if (fstat(fd, &st) < 0)
                return -errno;
        if (!S_ISREG(st.st_mode) || (uint64_t) st.st_size != size) {
                (void) unlinkat(cache_fd, digest + 7, 0);
                return -ENOENT;
        }
        k = fd_sha256(fd, actual, &n);
        if (k < 0)
                return k;
        if (!streq(actual, digest)) {
                (void) unlinkat(cache_fd, digest + 7, 0);
                return -ENOENT;
        }
        /* Its use marks it recent, for the trim. */
        (void) futimens(fd, NULL);
        return TAKE_FD(fd);
}

int oci_cache_add(int cache_fd, int fd, const char *digest)
{
        char path[64];

        if (!oci_digest_is_valid(digest))
                return -EINVAL;
        /* An O_TMPFILE file is linked in under its name at once; what is there already stays. */
        snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
        if (linkat(AT_FDCWD, path, cache_fd, digest + 7, AT_SYMLINK_FOLLOW) < 0 && errno != EEXIST)
                return -errno;
        return 0;
}

/* The blob at @fd, from its start, to @tee_fd; a reader that stopped taking it said why itself. */
static int blob_copy(int fd, int tee_fd)
{
        _cleanup_free_ uint8_t *buf = malloc(1 << 20);
        off_t off = 0;

        if (!buf)
                return -ENOMEM;
        for (;;) {
                ssize_t n = pread(fd, buf, 1 << 20, off);
                if (n < 0 && errno == EINTR)
                        continue;
                if (n < 0)
                        return -errno;
                if (n == 0 || loop_write(tee_fd, buf, (size_t) n) < 0)
                        return 0;
                off += n;
        }
}

int oci_cache_fetch(JobChild *c, Registry *r, int cache_fd, const char *digest, uint64_t size, int tee_fd,
                    bool *ret_fetched)
{
        _cleanup_close_ int fd = -1;
        int k;

        fd = oci_cache_open_blob(cache_fd, digest, size);
        if (fd >= 0) {
                *ret_fetched = false;
                if (tee_fd >= 0 && (k = blob_copy(fd, tee_fd)) < 0)
                        return job_child_fail(c, -k, "Cannot read blob %s: %s", digest, strerror(-k));
                return TAKE_FD(fd);
        }
        /* Unnamed until it is verified: a crash leaves nothing. */
        fd = openat(cache_fd, ".", O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
        if (fd < 0)
                return job_child_fail(c, errno, "Cannot make room for blob %s: %s", digest, strerror(errno));
        k = registry_get_blob(r, digest, size, fd, tee_fd);
        if (k < 0)
                return k;
        k = oci_cache_add(cache_fd, fd, digest);
        if (k < 0)
                return job_child_fail(c, -k, "Cannot keep blob %s: %s", digest, strerror(-k));
        if (lseek(fd, 0, SEEK_SET) < 0)
                return job_child_fail(c, errno, "Cannot read blob %s: %s", digest, strerror(errno));
        *ret_fetched = true;
        return TAKE_FD(fd);
}

typedef struct CacheEntry {
        char name[65];
        uint64_t size;
        struct timespec mtime;
} CacheEntry;

static int entry_cmp(const void *a, const void *b)
{
        const CacheEntry *x = a, *y = b;

        if (x->mtime.tv_sec != y->mtime.tv_sec)
                return x->mtime.tv_sec < y->mtime.tv_sec ? -1 : 1;
        if (x->mtime.tv_nsec != y->mtime.tv_nsec)
                return x->mtime.tv_nsec < y->mtime.tv_nsec ? -1 : 1;
        return 0;
}

void oci_cache_trim(int cache_fd, uint64_t max, char *const *keep)
{
        g_autoptr(GArray) entries = g_array_new(false, false, sizeof(CacheEntry));
        DIR *d = opendir_at(cache_fd, ".");
        struct dirent *de;
        uint64_t total = 0;

        if (!d)
                return;
        while ((de = readdir(d))) {
                CacheEntry e = {};
                struct stat st;
                bool kept = false;

                if (strlen(de->d_name) != 64 || fstatat(cache_fd, de->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0 ||
                    !S_ISREG(st.st_mode))
                        continue;
                for (char *const *k = keep; k && *k; k++)
                        if (streq(*k + 7, de->d_name))
                                kept = true;
                total += (uint64_t) st.st_size;
                if (kept)
                        continue;
                memcpy(e.name, de->d_name, 65);
                e.size = (uint64_t) st.st_size;
                e.mtime = st.st_mtim;
                g_array_append_val(entries, e);
        }
        closedir(d);
        g_array_sort(entries, entry_cmp);
        for (guint i = 0; i < entries->len && total > max; i++) {
                CacheEntry *e = &g_array_index(entries, CacheEntry, i);
                if (unlinkat(cache_fd, e->name, 0) >= 0)
                        total -= e->size;
        }
}

/* ---- layer records ---- */

#define LAYER_RECORD_MAX 1024

static int layers_dir_open(int store_fd, bool create)
{
        _cleanup_close_ int meta = open_private_dir(store_fd, STORE_META_DIR, create);

        if (meta < 0)
                return meta;
        return open_private_dir(meta, "oci-layers", create);
}

int oci_layer_record_write(int store_fd, const char *name, int image_fd, const OciLayerRecord *r)
{
        _cleanup_close_ int dir = layers_dir_open(store_fd, true);
        char identity[STORE_IDENTITY_MAX], text[LAYER_RECORD_MAX];
        int k;

        if (dir < 0)
                return dir;
        k = store_image_identity(image_fd, identity);
        if (k < 0)
                return k;
        snprintf(text, sizeof text, "%s\n%s\n%s\n%" PRIu64 "\n%s\n", identity, r->digest, r->diff_id, r->size,
                 r->media_type);
        return write_file_atomic_at(dir, name, text, strlen(text), 0600, true);
}

static int record_parse(int dir, const char *name, char identity[static STORE_IDENTITY_MAX], OciLayerRecord *ret)
{
        _cleanup_close_ int fd = openat(dir, name, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
        char buf[LAYER_RECORD_MAX + 1];
        g_auto(GStrv) lines = NULL;
        ssize_t n;

        if (fd < 0)
                return -errno;
        n = read(fd, buf, LAYER_RECORD_MAX);
        if (n < 0)
                return -errno;
        buf[n] = '\0';
        lines = g_strsplit(buf, "\n", 6);
        if (g_strv_length(lines) < 5 || strlen(lines[0]) >= STORE_IDENTITY_MAX || !oci_digest_is_valid(lines[1]) ||
            !oci_digest_is_valid(lines[2]) || strlen(lines[4]) >= sizeof ret->media_type)
                return -EBADMSG;
        strcpy(identity, lines[0]);
        strcpy(ret->digest, lines[1]);
        strcpy(ret->diff_id, lines[2]);
        ret->size = g_ascii_strtoull(lines[3], NULL, 10);
        strcpy(ret->media_type, lines[4]);
        return 0;
}

int oci_layer_record_read(int store_fd, const char *name, int image_fd, OciLayerRecord *ret)
{
        _cleanup_close_ int dir = layers_dir_open(store_fd, false);
        char recorded[STORE_IDENTITY_MAX], actual[STORE_IDENTITY_MAX];
        int k;

        if (dir < 0)
                return dir == -ENOENT ? -ENOENT : dir;
        k = record_parse(dir, name, recorded, ret);
        if (k < 0)
                return k == -EBADMSG ? -ENOENT : k;
        k = store_image_identity(image_fd, actual);
        if (k < 0)
                return k;
        return streq(recorded, actual) ? 0 : -ENOENT;
}

int oci_layer_record_find(int store_fd, const char *digest, char **ret_name, int *ret_fd)
{
        _cleanup_close_ int dir = layers_dir_open(store_fd, false);
        struct dirent *de;
        DIR *d;
        int found = -ENOENT;

        if (dir < 0)
                return -ENOENT;
        d = opendir_at(dir, ".");
        if (!d)
                return -errno;
        while (found < 0 && (de = readdir(d))) {
                char recorded[STORE_IDENTITY_MAX], actual[STORE_IDENTITY_MAX];
                _cleanup_close_ int fd = -1;
                OciLayerRecord r;

                if (de->d_name[0] == '.' || record_parse(dir, de->d_name, recorded, &r) < 0 || !streq(r.digest, digest))
                        continue;
                fd = openat(store_fd, de->d_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
                if (fd < 0 || store_image_identity(fd, actual) < 0 || !streq(recorded, actual))
                        continue;
                /* Only a read-only subvolume is what it was when its layer was made. */
                bool ro = false;
                if (fd_is_subvolume(fd) <= 0 || btrfs_util_get_subvolume_read_only_fd(fd, &ro) != BTRFS_UTIL_OK || !ro)
                        continue;
                *ret_name = strdup(de->d_name);
                if (!*ret_name)
                        found = -ENOMEM;
                else {
                        *ret_fd = TAKE_FD(fd);
                        found = 0;
                }
        }
        closedir(d);
        return found;
}
