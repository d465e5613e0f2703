/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* read_small_file_in_root(): what stampd reads of an image's tree on its event loop. It must open
 * nothing but a regular file, never block, never leave the root, and bound what it reads. */
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>

#include <glib.h>
#include <glib/gstdio.h>

#include "util.h"

typedef struct Tree {
        char *outside; /* a directory beside the root, standing for the host */
        char *root;
        int root_fd;
} Tree;

static void tree_make(Tree *t)
{
        g_autofree char *top = g_dir_make_tmp("stamp-read-in-root-XXXXXX", NULL);

        g_assert_nonnull(top);
        t->outside = g_build_filename(top, "host", NULL);
        t->root = g_build_filename(top, "image", NULL);
        g_assert_cmpint(g_mkdir_with_parents(t->outside, 0755), ==, 0);
        g_assert_cmpint(g_mkdir_with_parents(t->root, 0755), ==, 0);
        {
                g_autofree char *etc = g_build_filename(t->root, "etc", NULL);
                g_assert_cmpint(g_mkdir_with_parents(etc, 0755), ==, 0);
        }
        t->root_fd = open(t->root, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        g_assert_cmpint(t->root_fd, >=, 0);
}

static void tree_write(Tree *t, const char *rel, const char *text)
{
        g_autofree char *path = g_build_filename(t->root, rel, NULL);
        g_assert_true(g_file_set_contents(path, text, -1, NULL));
}

static void tree_free(Tree *t)
{
        g_autofree char *top = g_path_get_dirname(t->root);
        g_autofree char *cmd = g_strdup_printf("rm -rf '%s'", top);

        close(t->root_fd);
        g_assert_cmpint(system(cmd), ==, 0);
        g_free(t->outside);
        g_free(t->root);
}

static int read_it(Tree *t, const char *rel, size_t max, char **ret)
{
        return read_small_file_in_root(t->root_fd, rel, max, ret, NULL);
}

static void test_regular_file(void)
{
        Tree t;
        g_autofree char *text = NULL;
        size_t n = 0;

        tree_make(&t);
        tree_write(&t, "etc/os-release", "ID=test\n");
        g_assert_cmpint(read_small_file_in_root(t.root_fd, "etc/os-release", 4096, &text, &n), ==, 0);
        g_assert_cmpstr(text, ==, "ID=test\n");
        g_assert_cmpuint(n, ==, 8);
        tree_free(&t);
}

static void test_size_cap(void)
{
        Tree t;
        g_autofree char *text = NULL;

        tree_make(&t);
        tree_write(&t, "etc/big", "0123456789");
        g_assert_cmpint(read_it(&t, "etc/big", 9, &text), ==, -EFBIG);
        g_assert_null(text);
        g_assert_cmpint(read_it(&t, "etc/big", 10, &text), ==, 0);
        g_assert_cmpstr(text, ==, "0123456789");
        tree_free(&t);
}

static void test_fifo_is_refused_without_blocking(void)
{
        Tree t;
        g_autofree char *fifo = NULL, *text = NULL;

        tree_make(&t);
        fifo = g_build_filename(t.root, "etc/os-release", NULL);
        g_assert_cmpint(mkfifo(fifo, 0644), ==, 0);
        /* an open of it for reading would wait for a writer for ever: the test would hang */
        g_assert_cmpint(read_it(&t, "etc/os-release", 4096, &text), ==, -EBADFD);
        g_assert_null(text);
        tree_free(&t);
}

static void test_link_to_fifo_is_refused(void)
{
        Tree t;
        g_autofree char *fifo = NULL, *link = NULL, *text = NULL;

        tree_make(&t);
        fifo = g_build_filename(t.root, "etc/fifo", NULL);
        link = g_build_filename(t.root, "etc/os-release", NULL);
        g_assert_cmpint(mkfifo(fifo, 0644), ==, 0);
        g_assert_cmpint(symlink("/etc/fifo", link), ==, 0); /* absolute: resolved inside the root */
        g_assert_cmpint(read_it(&t, "etc/os-release", 4096, &text), ==, -EBADFD);
        tree_free(&t);
}

static void test_device_node_is_refused(void)
{
        Tree t;
        g_autofree char *node = NULL, *text = NULL;

        if (geteuid() != 0) {
                g_test_skip("mknod needs root");
                return;
        }
        tree_make(&t);
        node = g_build_filename(t.root, "etc/os-release", NULL);
        g_assert_cmpint(mknod(node, S_IFCHR | 0644, makedev(1, 5)), ==, 0); /* /dev/zero: endless */
        g_assert_cmpint(read_it(&t, "etc/os-release", 4096, &text), ==, -EBADFD);
        tree_free(&t);
}

static void test_directory_and_missing(void)
{
        Tree t;
        g_autofree char *text = NULL;

        tree_make(&t);
        g_assert_cmpint(read_it(&t, "etc", 4096, &text), ==, -EISDIR);
        g_assert_cmpint(read_it(&t, "etc/none", 4096, &text), ==, -ENOENT);
        tree_free(&t);
}

static void test_links_stay_inside(void)
{
        Tree t;
        g_autofree char *secret = NULL, *link = NULL, *link2 = NULL, *text = NULL;

        tree_make(&t);
        secret = g_build_filename(t.outside, "secret", NULL);
        g_assert_true(g_file_set_contents(secret, "host\n", -1, NULL));
        tree_write(&t, "secret", "image\n");
        /* climbing out by .. ends at the root, as at / */
        link = g_build_filename(t.root, "etc/up", NULL);
        g_assert_cmpint(symlink("../../../../host/secret", link), ==, 0);
        g_assert_cmpint(read_it(&t, "etc/up", 4096, &text), ==, -ENOENT);
        /* an absolute link means the image's own / */
        link2 = g_build_filename(t.root, "etc/abs", NULL);
        g_assert_cmpint(symlink("/secret", link2), ==, 0);
        g_assert_cmpint(read_it(&t, "etc/abs", 4096, &text), ==, 0);
        g_assert_cmpstr(text, ==, "image\n");
        g_clear_pointer(&text, free);
        /* /proc is the image's own (none here), never the host's with its magic links */
        g_assert_cmpint(read_it(&t, "/proc/self/root/etc/hostname", 4096, &text), ==, -ENOENT);
        g_assert_null(text);
        tree_free(&t);
}

/* Renames elsewhere on the system, a pause between each, until told to stop. */
typedef struct Renamer {
        char *a, *b;
        gint stop;
} Renamer;

static void *renamer_run(void *p)
{
        Renamer *r = p;

        while (!g_atomic_int_get(&r->stop)) {
                g_assert_cmpint(rename(r->a, r->b), ==, 0);
                g_assert_cmpint(rename(r->b, r->a), ==, 0);
                g_usleep(50);
        }
        return NULL;
}

/* A ".." on the way (etc/os-release is a link to ../usr/lib/os-release) under RESOLVE_IN_ROOT: the
 * kernel says EAGAIN when any rename raced with the walk; os-release must still be read every time. */
static void test_dotdot_while_renames_go_on(void)
{
        Tree t;
        Renamer r = {0};
        GThread *thread;
        unsigned failed = 0;

        tree_make(&t);
        {
                g_autofree char *lib = g_build_filename(t.root, "usr/lib", NULL);
                g_autofree char *link = g_build_filename(t.root, "etc/os-release", NULL);
                g_assert_cmpint(g_mkdir_with_parents(lib, 0755), ==, 0);
                tree_write(&t, "usr/lib/os-release", "ID=debian\n");
                g_assert_cmpint(symlink("../usr/lib/os-release", link), ==, 0);
        }
        r.a = g_build_filename(t.outside, "a", NULL);
        r.b = g_build_filename(t.outside, "b", NULL);
        g_assert_cmpint(mkdir(r.a, 0755), ==, 0);
        thread = g_thread_new("renamer", renamer_run, &r);
        for (unsigned i = 0; i < 20000; i++) {
                g_autofree char *text = NULL;
                int k = read_it(&t, "etc/os-release", 4096, &text);
                if (k < 0)
                        failed++;
                else
                        g_assert_cmpstr(text, ==, "ID=debian\n");
        }
        g_atomic_int_set(&r.stop, 1);
        g_thread_join(thread);
        g_assert_cmpuint(failed, ==, 0);
        g_free(r.a);
        g_free(r.b);
        tree_free(&t);
}

int main(int argc, char *argv[])
{
        g_test_init(&argc, &argv, NULL);
        g_test_add_func("/read-in-root/regular-file", test_regular_file);
        g_test_add_func("/read-in-root/size-cap", test_size_cap);
        g_test_add_func("/read-in-root/fifo", test_fifo_is_refused_without_blocking);
        g_test_add_func("/read-in-root/link-to-fifo", test_link_to_fifo_is_refused);
        g_test_add_func("/read-in-root/device-node", test_device_node_is_refused);
        g_test_add_func("/read-in-root/directory-and-missing", test_directory_and_missing);
        g_test_add_func("/read-in-root/links-stay-inside", test_links_stay_inside);
        g_test_add_func("/read-in-root/dotdot-while-renames-go-on", test_dotdot_while_renames_go_on);
        return g_test_run();
}
