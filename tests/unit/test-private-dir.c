/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* open_private_dir(): the store's own directories (.stamp, its owner records, caches, snapshots) are
 * believed only when nobody but root can have written into them. Runs as root (chown). */
#include <fcntl.h>
#include <sys/stat.h>

#include <glib.h>
#include <glib/gstdio.h>

#include "util.h"

static char *top;
static int top_fd = -1;

static mode_t mode_of(const char *name)
{
        struct stat st;

        g_assert_cmpint(fstatat(top_fd, name, &st, AT_SYMLINK_NOFOLLOW), ==, 0);
        return st.st_mode & 07777;
}

static void test_made_private(void)
{
        int fd = open_private_dir(top_fd, "made", true);

        g_assert_cmpint(fd, >=, 0);
        close(fd);
        g_assert_cmpint(mode_of("made"), ==, 0700);
        /* not made unless asked */
        g_assert_cmpint(open_private_dir(top_fd, "missing", false), ==, -ENOENT);
}

static void test_readable_is_closed_again(void)
{
        int fd;

        g_assert_cmpint(mkdirat(top_fd, "open", 0755), ==, 0);
        g_assert_cmpint(fchmodat(top_fd, "open", 0755, 0), ==, 0);
        fd = open_private_dir(top_fd, "open", false);
        g_assert_cmpint(fd, >=, 0);
        close(fd);
        g_assert_cmpint(mode_of("open"), ==, 0700);
}

static void test_untrusted_refused(void)
{
        g_assert_cmpint(mkdirat(top_fd, "group-writable", 0700), ==, 0);
        g_assert_cmpint(fchmodat(top_fd, "group-writable", 0770, 0), ==, 0);
        g_assert_cmpint(open_private_dir(top_fd, "group-writable", true), ==, -EPERM);
        g_assert_cmpint(mode_of("group-writable"), ==, 0770); /* refused, not repaired */

        g_assert_cmpint(mkdirat(top_fd, "users", 0700), ==, 0);
        g_assert_cmpint(fchownat(top_fd, "users", 1000, 1000, 0), ==, 0);
        g_assert_cmpint(open_private_dir(top_fd, "users", true), ==, -EPERM);

        /* a link to a directory is not followed */
        g_assert_cmpint(symlinkat("made", top_fd, "link"), ==, 0);
        g_assert_cmpint(open_private_dir(top_fd, "link", true), <, 0);
}

int main(int argc, char *argv[])
{
        int r;

        g_test_init(&argc, &argv, NULL);
        if (geteuid() != 0) {
                g_test_skip("needs root (chown)");
                return g_test_run();
        }
        top = g_dir_make_tmp("stamp-private-dir-XXXXXX", NULL);
        g_assert_nonnull(top);
        top_fd = open(top, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        g_assert_cmpint(top_fd, >=, 0);
        g_test_add_func("/private-dir/made", test_made_private);
        g_test_add_func("/private-dir/readable-is-closed-again", test_readable_is_closed_again);
        g_test_add_func("/private-dir/untrusted-refused", test_untrusted_refused);
        r = g_test_run();
        {
                g_autofree char *cmd = g_strdup_printf("rm -rf '%s'", top);
                g_assert_cmpint(system(cmd), ==, 0);
        }
        return r;
}
