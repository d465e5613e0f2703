/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* The import's own checks of entry names, as the extraction applies them (transfer/archive-util.c).
 *
 * libarchive refuses absolute paths and ".." too (the extraction asks it to), so an archive test
 * through the bus cannot tell whether stamp's own check still runs. Here each hostile entry must be
 * refused in stamp's words, before libarchive sees it, and nothing may be made outside the
 * extraction's directory. */
#include <fcntl.h>
#include <sys/stat.h>

#include <glib.h>
#include <glib/gstdio.h>

#include "archive-util.h"

typedef struct Entry {
        const char *path;
        mode_t type; /* S_IFREG, S_IFDIR, S_IFLNK; 0: a hard link */
        const char *target;
} Entry;

/* A tar archive holding @entries, in a file; returns its fd, at offset 0. */
static int make_tar(const Entry *entries, size_t n)
{
        _cleanup_(archive_write_freep) struct archive *w = archive_write_new();
        size_t size = 1 << 20, used = 0;
        g_autofree char *buf = g_malloc(size);
        g_autofree char *path = NULL;
        int fd;

        g_assert_nonnull(w);
        g_assert_cmpint(archive_write_set_format_pax_restricted(w), ==, ARCHIVE_OK);
        g_assert_cmpint(archive_write_open_memory(w, buf, size, &used), ==, ARCHIVE_OK);
        for (size_t i = 0; i < n; i++) {
                _cleanup_(archive_entry_freep) struct archive_entry *e = archive_entry_new();

                archive_entry_set_pathname(e, entries[i].path);
                archive_entry_set_uid(e, getuid()); /* so that the test also runs unprivileged */
                archive_entry_set_gid(e, getgid());
                if (entries[i].type == 0) {
                        archive_entry_set_filetype(e, AE_IFREG);
                        archive_entry_set_perm(e, 0644);
                        archive_entry_set_hardlink(e, entries[i].target);
                } else {
                        archive_entry_set_filetype(e, entries[i].type);
                        archive_entry_set_perm(e, entries[i].type == S_IFDIR ? 0755 : 0644);
                        if (entries[i].type == S_IFLNK)
                                archive_entry_set_symlink(e, entries[i].target);
                        if (entries[i].type == S_IFREG)
                                archive_entry_set_size(e, 2);
                }
                g_assert_cmpint(archive_write_header(w, e), ==, ARCHIVE_OK);
                if (entries[i].type == S_IFREG)
                        g_assert_cmpint(archive_write_data(w, "x\n", 2), ==, 2);
        }
        g_assert_cmpint(archive_write_close(w), ==, ARCHIVE_OK);

        fd = g_file_open_tmp("stamp-test-XXXXXX.tar", &path, NULL);
        g_assert_cmpint(fd, >=, 0);
        g_assert_cmpint(g_unlink(path), ==, 0); /* the fd is all the test needs */
        g_assert_cmpint(write(fd, buf, used), ==, (ssize_t) used);
        g_assert_cmpint(lseek(fd, 0, SEEK_SET), ==, 0);
        return fd;
}

/* Extract @entries into a fresh directory "root" inside a fresh directory; returns what the extraction
 * said, its message in @err. The outer directory must hold nothing but "root" afterwards. */
static int extract(const Entry *entries, size_t n, char *err, size_t errlen)
{
        g_autofree char *top = g_dir_make_tmp("stamp-test-XXXXXX", NULL);
        g_autofree char *root = g_build_filename(top, "root", NULL);
        g_autofree char *cmd = NULL;
        JobChild c = {.fd = -1, .store_fd = -1};
        ExtractResult result;
        int old_cwd, fd, k;
        GDir *d;
        const char *name;

        g_assert_nonnull(top);
        g_assert_cmpint(g_mkdir(root, 0755), ==, 0);
        fd = make_tar(entries, n);
        old_cwd = open(".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        g_assert_cmpint(old_cwd, >=, 0);
        g_assert_cmpint(chdir(root), ==, 0);
        err[0] = '\0';
        k = archive_extract_stream(&c, fd, 0, &result, err, errlen);
        g_assert_cmpint(fchdir(old_cwd), ==, 0);
        close(old_cwd);
        close(fd);

        d = g_dir_open(top, 0, NULL);
        g_assert_nonnull(d);
        while ((name = g_dir_read_name(d)))
                if (!g_str_equal(name, "root"))
                        g_error("the extraction made \"%s\" outside its directory", name);
        g_dir_close(d);
        cmd = g_strdup_printf("rm -rf '%s'", top);
        g_assert_cmpint(system(cmd), ==, 0);
        return k;
}

static void assert_refused(const Entry *entries, size_t n, const char *phrase)
{
        char err[1024];
        int k = extract(entries, n, err, sizeof err);

        if (k != -EBADMSG)
                g_error("%s: expected -EBADMSG, got %d (%s)", entries[n - 1].path, k, err);
        /* stamp's own wording: libarchive's refusal would say "Path contains '..'" or similar */
        if (!strstr(err, "Refusing the archive: entry") || !strstr(err, phrase))
                g_error("%s: refused, but not by stamp's own check (\"%s\" not in: %s)", entries[n - 1].path, phrase,
                        err);
}

static void test_dot_dot(void)
{
        static const Entry dir = {"a", S_IFDIR, NULL};
        static const char *const paths[] = {"../escape", "a/../../escape", "./../escape", "a/../..", ".."};

        for (size_t i = 0; i < G_N_ELEMENTS(paths); i++) {
                Entry e[] = {dir, {paths[i], S_IFREG, NULL}};
                assert_refused(e, G_N_ELEMENTS(e), "has a \"..\" component");
        }
        /* ".." inside a name that stays in the tree is refused too: stamp does not resolve it */
        Entry inside[] = {dir, {"a/../b", S_IFREG, NULL}};
        assert_refused(inside, G_N_ELEMENTS(inside), "has a \"..\" component");
}

static void test_absolute(void)
{
        Entry e[] = {{"/escape", S_IFREG, NULL}};
        assert_refused(e, G_N_ELEMENTS(e), "is an absolute path");
}

static void test_hard_links(void)
{
        Entry e[] = {{"f", S_IFREG, NULL}, {"link", 0, "../f"}};
        assert_refused(e, G_N_ELEMENTS(e), "is a hard link to");
        Entry abs[] = {{"f", S_IFREG, NULL}, {"link", 0, "/etc/passwd"}};
        assert_refused(abs, G_N_ELEMENTS(abs), "is a hard link to");
}

static void test_symlinks_out(void)
{
        Entry e[] = {{"a", S_IFDIR, NULL}, {"a/up", S_IFLNK, "../../escape"}};
        assert_refused(e, G_N_ELEMENTS(e), "leads out of the image");
}

static void test_safe_archive_extracts(void)
{
        Entry e[] = {{"etc", S_IFDIR, NULL},
                     {"usr", S_IFDIR, NULL},
                     {"usr/lib", S_IFDIR, NULL},
                     {"usr/lib/os-release", S_IFREG, NULL},
                     {"etc/os-release", S_IFLNK, "../usr/lib/os-release"},
                     {"etc/abs", S_IFLNK, "/usr/lib/os-release"},
                     {"etc/same", 0, "usr/lib/os-release"},
                     {"a..b", S_IFREG, NULL}};
        char err[1024];

        g_assert_cmpint(extract(e, G_N_ELEMENTS(e), err, sizeof err), ==, 0);
}

int main(int argc, char *argv[])
{
        g_test_init(&argc, &argv, NULL);
        g_test_add_func("/import-checks/safe", test_safe_archive_extracts);
        g_test_add_func("/import-checks/dot-dot", test_dot_dot);
        g_test_add_func("/import-checks/absolute", test_absolute);
        g_test_add_func("/import-checks/hard-links", test_hard_links);
        g_test_add_func("/import-checks/symlinks-out", test_symlinks_out);
        return g_test_run();
}
