/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* Export formats and archive suffixes (common/formats.c) and the path checks of archive import. */
#include <string.h>

#include <glib.h>

#include "archive-util.h"
#include "formats.h"

static void test_export_formats(void)
{
        static const char *const bad[] = {"ZSTD", "zstd ", " zstd", "gz", "tar", "lz4", "zst", "none", "xz\n"};

        g_assert_true(export_format_is_valid(""));
        g_assert_false(export_format_is_valid(NULL));
        g_assert_cmpint(export_format_from_string(""), ==, EXPORT_ZSTD);
        for (int f = 0; f < _EXPORT_FORMAT_MAX; f++)
                g_assert_true(export_format_is_valid(export_format_to_string(f)));
        for (size_t i = 0; i < G_N_ELEMENTS(bad); i++) {
                g_assert_false(export_format_is_valid(bad[i]));
                g_assert_cmpint(export_format_from_string(bad[i]), ==, _EXPORT_FORMAT_INVALID);
        }
}

/* One table of suffixes for stampctl's default format and name and for stampd's PullTar name. */
static void test_archive_suffixes(void)
{
        static const struct {
                const char *in, *stripped;
                ExportFormat format;
        } cases[] = {
                {"debian-12.tar.xz", "debian-12", EXPORT_XZ},
                {"a.tar.zst", "a", EXPORT_ZSTD},
                {"a.tar.zstd", "a", EXPORT_ZSTD},
                {"a.tzst", "a", EXPORT_ZSTD},
                {"a.zst", "a", EXPORT_ZSTD},
                {"a.txz", "a", EXPORT_XZ},
                {"a.tgz", "a", EXPORT_GZIP},
                {"a.tar.gz", "a", EXPORT_GZIP},
                {"a.tbz", "a", EXPORT_BZIP2},
                {"a.tbz2", "a", EXPORT_BZIP2},
                {"a.tar.bz2", "a", EXPORT_BZIP2},
                {"a.tar", "a", EXPORT_UNCOMPRESSED},
                {"A.TAR.XZ", "A", EXPORT_XZ},
                {"a.tgz.tar", "a.tgz", EXPORT_UNCOMPRESSED},
                {"a.img", "a.img", _EXPORT_FORMAT_INVALID},
                {"xz", "xz", _EXPORT_FORMAT_INVALID},
                {".xz", ".xz", _EXPORT_FORMAT_INVALID},
                {"a.tar.xz.part", "a.tar.xz.part", _EXPORT_FORMAT_INVALID},
        };

        for (size_t i = 0; i < G_N_ELEMENTS(cases); i++) {
                size_t n = archive_name_strip_suffix(cases[i].in, strlen(cases[i].in));
                g_assert_cmpint(n, ==, strlen(cases[i].stripped));
                g_assert_true(strncmp(cases[i].in, cases[i].stripped, n) == 0);
                g_assert_cmpint(export_format_from_filename(cases[i].in), ==, cases[i].format);
        }
        g_assert_cmpint(export_format_from_filename(NULL), ==, _EXPORT_FORMAT_INVALID);
}

static void test_entry_paths(void)
{
        static const char *const safe[] = {"a",   "a/b",     "./a",  ".",     "./",   "a/...", "..a",
                                           "a..", "a/.../b", "a//b", "a/./b", "etc/", "...",   ".a/..b"};
        static const struct {
                const char *path, *why;
        } unsafe[] = {
                {"", "empty"},      {"/", "absolute"},        {"/etc/passwd", "absolute"},
                {"..", ".."},       {"../x", ".."},           {"a/../b", ".."},
                {"a/..", ".."},     {"a/../..", ".."},        {"./..", ".."},
                {"a//..//b", ".."}, {"a/b/../../../c", ".."},
        };

        for (size_t i = 0; i < G_N_ELEMENTS(safe); i++)
                if (archive_path_unsafe_reason(safe[i]))
                        g_error("\"%s\" refused: %s", safe[i], archive_path_unsafe_reason(safe[i]));
        for (size_t i = 0; i < G_N_ELEMENTS(unsafe); i++) {
                const char *why = archive_path_unsafe_reason(unsafe[i].path);
                g_assert_nonnull(why);
                g_assert_nonnull(strstr(why, unsafe[i].why));
        }
        g_assert_nonnull(archive_path_unsafe_reason(NULL));
}

static void test_symlink_targets(void)
{
        static const struct {
                const char *path, *target;
                gboolean safe;
        } cases[] = {
                {"a", "b", TRUE},
                {"a", "/etc/shadow", TRUE}, /* absolute: resolves inside the image when it runs */
                {"a", "..", FALSE},
                {"a", "../x", FALSE},
                {"a", "./../x", FALSE},
                {"a", "x/../../y", FALSE},
                {"a", "x/../y", TRUE},
                {"a/b", "../x", TRUE},
                {"a/b", "..", TRUE},
                {"a/b", "../../x", FALSE},
                {"./a/b", "../x", TRUE},
                {"./a/./b", "../../x", FALSE},
                {"a//b", "../x", TRUE},
                {"a/b/c", "../../x", TRUE},
                {"a/b/c", "../../../x", FALSE},
                {"etc/os-release", "../usr/lib/os-release", TRUE},
                {"usr/bin/sh", "../../../bin/busybox", FALSE},
                {"a", "", FALSE},
        };

        for (size_t i = 0; i < G_N_ELEMENTS(cases); i++) {
                const char *why = archive_symlink_unsafe_reason(cases[i].path, cases[i].target);
                if ((why == NULL) != cases[i].safe)
                        g_error("%s -> %s: expected %s, got %s", cases[i].path, cases[i].target,
                                cases[i].safe ? "safe" : "refused", why ?: "safe");
        }
        g_assert_nonnull(archive_symlink_unsafe_reason("a", NULL));
}

int main(int argc, char *argv[])
{
        g_test_init(&argc, &argv, NULL);
        g_test_add_func("/formats/export", test_export_formats);
        g_test_add_func("/formats/archive-suffixes", test_archive_suffixes);
        g_test_add_func("/archive/entry-paths", test_entry_paths);
        g_test_add_func("/archive/symlink-targets", test_symlink_targets);
        return g_test_run();
}
