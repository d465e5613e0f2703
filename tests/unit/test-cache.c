/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/time.h>

#include <glib.h>
#include <glib/gstdio.h>

#include "cache.h"

/* The package cache's bookkeeping (store/cache.c) on a store of a temporary directory. */

static void write_file(int dir_fd, const char *name, size_t size, time_t mtime)
{
        g_autofree char *data = g_malloc0(size);
        struct timespec times[2] = {{mtime, 0}, {mtime, 0}};
        int fd = openat(dir_fd, name, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);

        g_assert_cmpint(fd, >=, 0);
        g_assert_cmpint(write(fd, data, size), ==, (ssize_t) size);
        g_assert_cmpint(futimens(fd, times), ==, 0);
        close(fd);
}

static int open_dir(int dir_fd, const char *path)
{
        int fd = openat(dir_fd, path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        g_assert_cmpint(fd, >=, 0);
        return fd;
}

static bool exists(int dir_fd, const char *path)
{
        return faccessat(dir_fd, path, F_OK, AT_SYMLINK_NOFOLLOW) == 0;
}

static void test_trim_and_clean(void)
{
        g_autofree char *dir = g_dir_make_tmp("stamp-cache-XXXXXX", NULL);
        g_autofree char *rm = NULL;
        int store = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC), cache, sub, held;
        uint64_t freed = 0, usage;
        unsigned busy = 0;

        g_assert_cmpint(store, >=, 0);
        if (geteuid() != 0) {
                /* The cache must be root's, as stampd's is. */
                g_test_skip("needs root");
                close(store);
                (void) g_rmdir(dir);
                return;
        }
        g_assert_cmpuint(store_cache_read_usage(store), ==, 0); /* no cache yet */
        cache = store_cache_open(store);
        g_assert_cmpint(cache, >=, 0);
        g_assert_cmpint(mkdirat(cache, "apt", 0700), ==, 0);
        g_assert_cmpint(mkdirat(cache, "apt/bookworm-amd64", 0755), ==, 0);
        g_assert_cmpint(mkdirat(cache, "apt/bookworm-amd64/archives", 0755), ==, 0);
        sub = open_dir(cache, "apt/bookworm-amd64/archives");
        write_file(sub, "old_1_all.deb", 64 * 1024, 1000);
        write_file(sub, "mid_1_all.deb", 64 * 1024, 2000);
        write_file(sub, "new_1_all.deb", 64 * 1024, 3000);
        write_file(sub, "lock", 0, 1000);

        /* within the cap: nothing goes, the usage is noted */
        held = open_dir(cache, "apt/bookworm-amd64");
        g_assert_cmpint(store_cache_trim(cache, held, UINT64_MAX), ==, 0);
        usage = store_cache_read_usage(store);
        g_assert_cmpuint(usage, >=, 3 * 64 * 1024);
        g_assert_cmpuint(usage, ==, store_cache_count(cache));

        /* over it: the oldest .debs go first, until it fits */
        g_assert_cmpint(store_cache_trim(cache, held, usage - 1), ==, 0);
        g_assert_false(exists(sub, "old_1_all.deb"));
        g_assert_true(exists(sub, "mid_1_all.deb"));
        g_assert_true(exists(sub, "new_1_all.deb"));
        g_assert_true(exists(sub, "lock"));
        g_assert_cmpuint(store_cache_read_usage(store), <, usage);

        /* a directory a build holds is kept by a clean; then emptied once free */
        g_assert_cmpint(flock(held, LOCK_EX), ==, 0);
        g_assert_cmpint(store_cache_clean(store, &freed, &busy), ==, 0);
        g_assert_cmpuint(busy, ==, 1);
        g_assert_cmpuint(freed, ==, 0);
        g_assert_true(exists(sub, "new_1_all.deb"));
        close(held);
        g_assert_cmpint(store_cache_clean(store, &freed, &busy), ==, 0);
        g_assert_cmpuint(busy, ==, 0);
        g_assert_cmpuint(freed, >=, 2 * 64 * 1024);
        g_assert_false(exists(cache, "apt/bookworm-amd64/archives"));
        g_assert_true(exists(cache, "apt/bookworm-amd64"));
        g_assert_cmpuint(store_cache_read_usage(store), ==, 0);

        close(sub);
        close(cache);
        close(store);
        rm = g_strdup_printf("rm -rf '%s'", dir);
        g_assert_cmpint(system(rm), ==, 0);
}

int main(int argc, char *argv[])
{
        g_test_init(&argc, &argv, NULL);
        g_test_add_func("/cache/trim-and-clean", test_trim_and_clean);
        return g_test_run();
}
