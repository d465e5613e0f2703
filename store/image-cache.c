/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <dirent.h>
#include <fcntl.h>
#include <inttypes.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/xattr.h>

#include <glib.h>

#include "image-cache.h"
#include "store.h"

/* Deeper than this, a tree is not counted further (a Debian base is about 12 levels deep). */
#define TREE_DEPTH_MAX 64

/* An entry's name: 64 lowercase hex digits. */
static bool entry_name_is_valid(const char *s)
{
        size_t n = 0;

        for (; s[n]; n++)
                if (!g_ascii_isxdigit(s[n]) || g_ascii_isupper(s[n]))
                        return false;
        return n == 64;
}

int store_image_cache_open(int cache_fd)
{
        return open_private_dir(cache_fd, STORE_IMAGE_CACHE_DIR, true);
}

int store_image_cache_lock(int images_fd, const char *key, bool wait)
{
        g_autofree char *name = g_strconcat(key, STORE_IMAGE_CACHE_LOCK_SUFFIX, NULL);

        for (;;) {
                _cleanup_close_ int fd = openat(images_fd, name, O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600);
                struct stat held, named;

                if (fd < 0)
                        return -errno;
                while (flock(fd, LOCK_EX | (wait ? 0 : LOCK_NB)) < 0)
                        if (errno != EINTR)
                                return -errno;
                if (fstat(fd, &held) < 0)
                        return -errno;
                if (fstatat(images_fd, name, &named, AT_SYMLINK_NOFOLLOW) < 0) {
                        if (errno != ENOENT)
                                return -errno;
                        continue; /* removed by the holder before us */
                }
                if (held.st_dev == named.st_dev && held.st_ino == named.st_ino)
                        return TAKE_FD(fd);
        }
}

/* Whether KEY has an entry or a temporary. */
static bool key_in_use(int images_fd, const char *key)
{
        g_autofree char *temp = g_strconcat(STORE_IMAGE_CACHE_NEW_PREFIX, key, NULL);

        return faccessat(images_fd, key, F_OK, AT_SYMLINK_NOFOLLOW) >= 0 ||
               faccessat(images_fd, temp, F_OK, AT_SYMLINK_NOFOLLOW) >= 0;
}

void store_image_cache_unlock(int images_fd, const char *key, int fd)
{
        if (fd < 0)
                return;
        if (!key_in_use(images_fd, key)) {
                g_autofree char *name = g_strconcat(key, STORE_IMAGE_CACHE_LOCK_SUFFIX, NULL);
                (void) unlinkat(images_fd, name, 0);
        }
        safe_close(fd);
}

/* The locks of no entry that no build holds: removed. */
static void sweep_locks(int images_fd)
{
        g_autoptr(GPtrArray) keys = g_ptr_array_new_with_free_func(g_free);
        struct dirent *de;
        DIR *d = opendir_at(images_fd, ".");

        if (!d)
                return;
        while ((de = readdir(d)))
                if (g_str_has_suffix(de->d_name, STORE_IMAGE_CACHE_LOCK_SUFFIX))
                        g_ptr_array_add(keys, g_strndup(de->d_name,
                                                        strlen(de->d_name) - strlen(STORE_IMAGE_CACHE_LOCK_SUFFIX)));
        closedir(d);
        for (guint i = 0; i < keys->len; i++) {
                const char *key = keys->pdata[i];
                int fd;
                if (!entry_name_is_valid(key) || key_in_use(images_fd, key))
                        continue;
                fd = store_image_cache_lock(images_fd, key, false);
                store_image_cache_unlock(images_fd, key, fd);
        }
}

uint64_t store_image_cache_xattr_u64(int fd, const char *name)
{
        char text[32];
        ssize_t n = fgetxattr(fd, name, text, sizeof text - 1);

        if (n <= 0)
                return 0;
        text[n] = '\0';
        return g_ascii_strtoull(text, NULL, 10);
}

uint64_t store_image_cache_count(int cache_fd)
{
        _cleanup_close_ int images =
                openat(cache_fd, STORE_IMAGE_CACHE_DIR, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        struct dirent *de;
        uint64_t sum = 0;
        DIR *d;

        if (images < 0 || !(d = fdopendir(images)))
                return 0;
        images = -1; /* d's */
        while ((de = readdir(d))) {
                _cleanup_close_ int fd = -1;
                if (!entry_name_is_valid(de->d_name))
                        continue;
                fd = openat(dirfd(d), de->d_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
                if (fd >= 0)
                        sum += store_image_cache_xattr_u64(fd, STORE_IMAGE_CACHE_XATTR_BYTES);
        }
        closedir(d);
        return sum;
}

int store_image_cache_remove(int images_fd, const char *name)
{
        return store_remove_tree(images_fd, name);
}

/* The key an entry or a temporary belongs to (the name of its lock without the suffix); NULL if @name is
 * neither. */
static const char *key_of(const char *name)
{
        if (g_str_has_prefix(name, STORE_IMAGE_CACHE_NEW_PREFIX))
                name += strlen(STORE_IMAGE_CACHE_NEW_PREFIX);
        return entry_name_is_valid(name) ? name : NULL;
}

int store_image_cache_clean(int cache_fd, uint64_t *ret_freed, unsigned *ret_busy)
{
        _cleanup_close_ int images =
                openat(cache_fd, STORE_IMAGE_CACHE_DIR, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        g_autoptr(GPtrArray) names = g_ptr_array_new_with_free_func(g_free);
        uint64_t freed = 0;
        unsigned busy = 0;
        struct dirent *de;
        DIR *d;
        int k = 0;

        *ret_freed = 0;
        *ret_busy = 0;
        if (images < 0)
                return errno == ENOENT ? 0 : -errno;
        d = opendir_at(images, ".");
        if (!d)
                return -errno;
        while ((de = readdir(d)))
                if (key_of(de->d_name))
                        g_ptr_array_add(names, g_strdup(de->d_name));
        closedir(d);

        for (guint i = 0; i < names->len; i++) {
                const char *name = names->pdata[i];
                _cleanup_close_ int lock = store_image_cache_lock(images, key_of(name), false), fd = -1;
                uint64_t bytes = 0;
                int r;

                if (lock == -EWOULDBLOCK) {
                        busy++;
                        continue;
                }
                fd = openat(images, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
                if (fd >= 0)
                        bytes = store_image_cache_xattr_u64(fd, STORE_IMAGE_CACHE_XATTR_BYTES);
                fd = safe_close(fd);
                r = store_image_cache_remove(images, name);
                if (r < 0)
                        k = r;
                else
                        freed += bytes;
                store_image_cache_unlock(images, key_of(name), TAKE_FD(lock));
        }
        sweep_locks(images);
        *ret_freed = freed;
        *ret_busy = busy;
        return k;
}

typedef struct Entry {
        char *name;
        uint64_t created;
} Entry;

static gint compare_created(gconstpointer a, gconstpointer b)
{
        const Entry *x = a, *y = b;

        return x->created < y->created ? -1 : x->created > y->created;
}

int store_image_cache_trim(int images_fd, uint64_t max)
{
        g_autoptr(GArray) entries = g_array_new(FALSE, FALSE, sizeof(Entry));
        struct dirent *de;
        guint n;
        DIR *d = opendir_at(images_fd, ".");
        int k = 0;

        if (!d)
                return -errno;
        while ((de = readdir(d))) {
                _cleanup_close_ int fd = -1;
                Entry e;
                if (!entry_name_is_valid(de->d_name))
                        continue;
                fd = openat(dirfd(d), de->d_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
                if (fd < 0)
                        continue;
                e.name = g_strdup(de->d_name);
                e.created = store_image_cache_xattr_u64(fd, STORE_IMAGE_CACHE_XATTR_CREATED);
                g_array_append_val(entries, e);
        }
        closedir(d);
        g_array_sort(entries, compare_created);
        n = entries->len;
        for (guint i = 0; i < entries->len; i++) {
                Entry *e = &g_array_index(entries, Entry, i);
                if (n > max) {
                        int lock = store_image_cache_lock(images_fd, e->name, false);
                        if (lock >= 0) {
                                int r = store_image_cache_remove(images_fd, e->name);
                                if (r < 0)
                                        k = r;
                                else
                                        n--;
                                store_image_cache_unlock(images_fd, e->name, lock);
                        }
                }
                g_free(e->name);
        }
        sweep_locks(images_fd);
        return k;
}

uint64_t store_tree_allocated(int fd)
{
        uint64_t sum = 0;

        tree_walk(fd, TREE_DEPTH_MAX, tree_add_allocated, &sum);
        return sum;
}
