/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <dirent.h>
#include <inttypes.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>

#include <glib.h>

#include "cache.h"
#include "image-cache.h"

/* Deeper than the layout in cache.h goes, nothing is counted or removed. */
#define CACHE_DEPTH_MAX 4

int store_cache_open(int store_fd)
{
        _cleanup_close_ int meta = open_private_dir(store_fd, ".stamp", true);

        if (meta < 0)
                return meta;
        return open_private_dir(meta, "cache", true);
}

/* What the cache holds but for its counter (and the counter's temporary, write_file_atomic_at()'s) and the
 * image cache (store_image_cache_count() has its entries' sizes, counted once when they were made). */
static TreeAction count_visit(int parent_fd, const char *name, const struct stat *st, unsigned depth, bool after,
                              void *userdata)
{
        if (depth == 0 && ((S_ISREG(st->st_mode) && (g_str_has_prefix(name, STORE_CACHE_USAGE_FILE) ||
                                                     g_str_has_prefix(name, ".#" STORE_CACHE_USAGE_FILE))) ||
                           (S_ISDIR(st->st_mode) && streq(name, STORE_IMAGE_CACHE_DIR))))
                return TREE_SKIP;
        return tree_add_allocated(parent_fd, name, st, depth, after, userdata);
}

static uint64_t package_cache_count(int cache_fd)
{
        uint64_t sum = 0;

        tree_walk(cache_fd, CACHE_DEPTH_MAX, count_visit, &sum);
        return sum;
}

uint64_t store_cache_count(int cache_fd)
{
        return package_cache_count(cache_fd) + store_image_cache_count(cache_fd);
}

int store_cache_write_usage(int cache_fd, uint64_t bytes)
{
        char text[32];
        int n = snprintf(text, sizeof text, "%" PRIu64 "\n", bytes);

        return write_file_atomic_at(cache_fd, STORE_CACHE_USAGE_FILE, text, (size_t) n, 0600, false);
}

uint64_t store_cache_read_usage(int store_fd)
{
        _cleanup_close_ int fd = openat(store_fd, STORE_CACHE_DIR "/" STORE_CACHE_USAGE_FILE,
                                        O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
        char text[32];
        ssize_t n;

        if (fd < 0)
                return 0;
        n = read(fd, text, sizeof text - 1);
        if (n <= 0)
                return 0;
        text[n] = '\0';
        return g_ascii_strtoull(text, NULL, 10);
}

/* Everything below the walk's directory goes; the bytes of its regular files are added to the uint64_t at
 * @userdata. */
static TreeAction empty_visit(int parent_fd, const char *name, const struct stat *st, unsigned depth, bool after,
                              void *userdata)
{
        if (S_ISDIR(st->st_mode)) {
                if (after)
                        (void) unlinkat(parent_fd, name, AT_REMOVEDIR);
        } else if (unlinkat(parent_fd, name, 0) >= 0 && S_ISREG(st->st_mode))
                *(uint64_t *) userdata += (uint64_t) st->st_blocks * 512;
        return TREE_DESCEND;
}

int store_cache_clean(int store_fd, uint64_t *ret_freed, unsigned *ret_busy)
{
        static const char *const kinds[] = {"debootstrap", "mmdebstrap", "apt"};
        _cleanup_close_ int cache = -1;
        uint64_t freed = 0, image_bytes = 0;
        unsigned busy = 0, images_busy = 0;
        int k;

        cache = openat(store_fd, STORE_CACHE_DIR, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (cache < 0) {
                *ret_freed = 0;
                *ret_busy = 0;
                return errno == ENOENT ? 0 : -errno;
        }
        for (size_t i = 0; i < ELEMENTSOF(kinds); i++) {
                _cleanup_close_ int kind = openat(cache, kinds[i], O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
                struct dirent *de;
                DIR *d;

                if (kind < 0 || !(d = fdopendir(kind)))
                        continue;
                kind = -1; /* d's */
                while ((de = readdir(d))) {
                        _cleanup_close_ int sub = -1;
                        if (de->d_name[0] == '.')
                                continue;
                        sub = openat(dirfd(d), de->d_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
                        if (sub < 0)
                                continue;
                        /* A build is using it: its files stay. */
                        if (flock(sub, LOCK_EX | LOCK_NB) < 0) {
                                busy++;
                                continue;
                        }
                        /* Its contents only: a build may have it open already, waiting for the lock. */
                        tree_walk(sub, CACHE_DEPTH_MAX - 2, empty_visit, &freed);
                }
                closedir(d);
        }
        k = store_image_cache_clean(cache, &image_bytes, &images_busy);
        (void) store_cache_write_usage(cache, store_cache_count(cache));
        *ret_freed = freed + image_bytes;
        *ret_busy = busy + images_busy;
        return k;
}

typedef struct CachedFile {
        int dir_fd; /* borrowed */
        char *name;
        uint64_t bytes;
        struct timespec mtime;
} CachedFile;

static void collect_debs(int dir_fd, unsigned depth, GArray *files, GPtrArray *dirs)
{
        struct dirent *de;
        DIR *d;
        int fd;

        if (depth > 2)
                return;
        fd = openat(dir_fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (fd < 0 || !(d = fdopendir(fd))) {
                safe_close(fd);
                return;
        }
        g_ptr_array_add(dirs, d);
        while ((de = readdir(d))) {
                struct stat st;
                if (streq(de->d_name, ".") || streq(de->d_name, ".."))
                        continue;
                if (fstatat(dirfd(d), de->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0)
                        continue;
                if (S_ISREG(st.st_mode) && g_str_has_suffix(de->d_name, ".deb")) {
                        CachedFile f = {dirfd(d), g_strdup(de->d_name), (uint64_t) st.st_blocks * 512, st.st_mtim};
                        g_array_append_val(files, f);
                } else if (S_ISDIR(st.st_mode)) {
                        _cleanup_close_ int sub =
                                openat(dirfd(d), de->d_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
                        if (sub >= 0)
                                collect_debs(sub, depth + 1, files, dirs);
                }
        }
}

static gint compare_mtime(gconstpointer a, gconstpointer b)
{
        const CachedFile *x = a, *y = b;

        if (x->mtime.tv_sec != y->mtime.tv_sec)
                return x->mtime.tv_sec < y->mtime.tv_sec ? -1 : 1;
        return x->mtime.tv_nsec < y->mtime.tv_nsec ? -1 : x->mtime.tv_nsec > y->mtime.tv_nsec;
}

static void dir_close(gpointer p)
{
        closedir(p);
}

int store_cache_trim(int cache_fd, int dir_fd, uint64_t max)
{
        /* The limit is the package cache's: the image cache has one of its own. */
        uint64_t total = package_cache_count(cache_fd);

        if (max != UINT64_MAX && total > max) {
                g_autoptr(GArray) files = g_array_new(FALSE, FALSE, sizeof(CachedFile));
                g_autoptr(GPtrArray) dirs = g_ptr_array_new_with_free_func(dir_close);

                collect_debs(dir_fd, 0, files, dirs);
                g_array_sort(files, compare_mtime);
                for (guint i = 0; i < files->len; i++) {
                        CachedFile *f = &g_array_index(files, CachedFile, i);
                        if (total > max && unlinkat(f->dir_fd, f->name, 0) >= 0)
                                total = total > f->bytes ? total - f->bytes : 0;
                        g_free(f->name);
                }
        }
        return store_cache_write_usage(cache_fd, total + store_image_cache_count(cache_fd));
}
