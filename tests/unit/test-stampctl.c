/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* Unit tests of stampctl's pure logic. */

#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <glib.h>

#include "formats.h"
#include "progress.h"
#include "table.h"
#include "util.h"

static void test_format_bytes(void)
{
        static const struct {
                uint64_t in;
                const char *out;
        } cases[] = {
                {0, "0B"},
                {1, "1B"},
                {1023, "1023B"},
                {1024, "1.0K"},
                {1536, "1.5K"},
                {10 * 1024 - 1, "9.9K"},
                {10 * 1024, "10K"},
                {1023 * 1024, "1023K"},
                {1024 * 1024, "1.0M"},
                {1288490189, "1.2G"}, /* 1.2 GiB */
                {UINT64_C(5) << 40, "5.0T"},
                {UINT64_C(3) << 50, "3.0P"},
                {UINT64_C(1) << 60, "1.0E"},
                {UINT64_MAX - 1, "15E"},
                {UINT64_MAX, "-"}, /* unknown */
        };
        char buf[FORMAT_BYTES_MAX];

        for (size_t i = 0; i < ELEMENTSOF(cases); i++)
                g_assert_cmpstr(format_bytes(buf, sizeof(buf), cases[i].in), ==, cases[i].out);
}

static void test_format_timestamp(void)
{
        char buf[FORMAT_TIMESTAMP_MAX];

        setenv("TZ", "UTC", 1);
        tzset();
        g_assert_cmpstr(format_timestamp(buf, sizeof(buf), 0), ==, "-");
        g_assert_cmpstr(format_timestamp(buf, sizeof(buf), UINT64_MAX), ==, "-");
        g_assert_cmpstr(format_timestamp(buf, sizeof(buf), UINT64_C(1700000000) * 1000000 + 999999), ==,
                        "Tue 2023-11-14 22:13:20 UTC");

        setenv("TZ", "Europe/Berlin", 1);
        tzset();
        format_timestamp(buf, sizeof(buf), UINT64_C(1700000000) * 1000000);
        /* Local time, where the zone data is installed. */
        g_assert_true(strcmp(buf, "Tue 2023-11-14 23:13:20 CET") == 0 ||
                      strcmp(buf, "Tue 2023-11-14 22:13:20 Europe") == 0 ||
                      g_str_has_prefix(buf, "Tue 2023-11-14 22:13:20"));
        setenv("TZ", "UTC", 1);
        tzset();
}

static void test_export_format_from_filename(void)
{
        static const struct {
                const char *in;
                const char *out;
        } cases[] = {
                {"a.tar.zst", "zstd"},
                {"a.zst", "zstd"},
                {"a.tar.zstd", "zstd"},
                {"a.tzst", "zstd"},
                {"dir/a.tar.xz", "xz"},
                {"a.txz", "xz"},
                {"a.tar.gz", "gzip"},
                {"a.tgz", "gzip"},
                {"a.tar.bz2", "bzip2"},
                {"a.tbz2", "bzip2"},
                {"a.tbz", "bzip2"},
                {"a.tar", "uncompressed"},
                {"A.TAR.XZ", "xz"},
                {"a.img", NULL},
                {"a", NULL},
                {".xz", NULL},
                /* a suffix alone is a name */ {"xz", NULL},
                {"", NULL},
                {"a.tar.xz.part", NULL},
        };

        for (size_t i = 0; i < ELEMENTSOF(cases); i++)
                g_assert_cmpstr(export_format_to_string(export_format_from_filename(cases[i].in)), ==, cases[i].out);
        g_assert_cmpint(export_format_from_filename(NULL), ==, _EXPORT_FORMAT_INVALID);
}

static void test_image_name_from_filename(void)
{
        static const struct {
                const char *in;
                const char *out;
        } cases[] = {
                {"nginx.tar.xz", "nginx"},
                {"/srv/exports/nginx.tar.zst", "nginx"},
                {"nginx.tgz", "nginx"},
                {"nginx.xz", "nginx"},
                {"nginx.tar", "nginx"},
                {"nginx", "nginx"},
                {"debian-12.1_amd64.tar.gz", "debian-12.1_amd64"},
                {"x.tar.tar", "x.tar"},
                {"https://example.org/images/debian-12.tar.zst", "debian-12"},
                {"https://example.org/images/debian-12.tar.zst?token=1#frag", "debian-12"},
                {"https://example.org/images/web/", "web"},
                {"dir/", "dir"},
                {".hidden.tar", NULL},
                {"-dash.tar", NULL},
                {"a b.tar", NULL},
                {".tar", NULL},
                {"", NULL},
                {"/", NULL},
                {"https://example.org/", NULL},
        };

        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                _cleanup_(freep) char *name = image_name_from_filename(cases[i].in);
                g_assert_cmpstr(name, ==, cases[i].out);
        }
}

static void test_signal_from_string(void)
{
        g_assert_cmpint(signal_from_string("TERM"), ==, SIGTERM);
        g_assert_cmpint(signal_from_string("SIGTERM"), ==, SIGTERM);
        g_assert_cmpint(signal_from_string("sigterm"), ==, SIGTERM);
        g_assert_cmpint(signal_from_string("KILL"), ==, SIGKILL);
        g_assert_cmpint(signal_from_string("SIGKILL"), ==, SIGKILL);
        g_assert_cmpint(signal_from_string("HUP"), ==, SIGHUP);
        g_assert_cmpint(signal_from_string("USR1"), ==, SIGUSR1);
        g_assert_cmpint(signal_from_string("IOT"), ==, SIGABRT);
        g_assert_cmpint(signal_from_string("9"), ==, 9);
        g_assert_cmpint(signal_from_string("15"), ==, 15);
        g_assert_cmpint(signal_from_string("RTMIN"), ==, SIGRTMIN);
        g_assert_cmpint(signal_from_string("RTMIN+4"), ==, SIGRTMIN + 4);
        g_assert_cmpint(signal_from_string("SIGRTMIN+4"), ==, SIGRTMIN + 4);
        g_assert_cmpint(signal_from_string("RTMAX"), ==, SIGRTMAX);
        g_assert_cmpint(signal_from_string("SIGRTMAX-1"), ==, SIGRTMAX - 1);
        g_assert_cmpint(signal_from_string(NULL), ==, -EINVAL);
        g_assert_cmpint(signal_from_string(""), ==, -EINVAL);
        g_assert_cmpint(signal_from_string("0"), ==, -EINVAL);
        g_assert_cmpint(signal_from_string("-9"), ==, -EINVAL);
        g_assert_cmpint(signal_from_string("65"), ==, -EINVAL);
        g_assert_cmpint(signal_from_string("9x"), ==, -EINVAL);
        g_assert_cmpint(signal_from_string("FOO"), ==, -EINVAL);
        g_assert_cmpint(signal_from_string("SIG"), ==, -EINVAL);
        g_assert_cmpint(signal_from_string("RTMIN+"), ==, -EINVAL);
        g_assert_cmpint(signal_from_string("RTMIN-1"), ==, -EINVAL);
        g_assert_cmpint(signal_from_string("RTMIN+999"), ==, -EINVAL);
        g_assert_cmpstr(signal_to_string(SIGTERM), ==, "TERM");
        g_assert_cmpstr(signal_to_string(SIGABRT), ==, "ABRT");
}

static void test_parse_boolean(void)
{
        g_assert_cmpint(parse_boolean("yes"), ==, 1);
        g_assert_cmpint(parse_boolean("TRUE"), ==, 1);
        g_assert_cmpint(parse_boolean("on"), ==, 1);
        g_assert_cmpint(parse_boolean("1"), ==, 1);
        g_assert_cmpint(parse_boolean("no"), ==, 0);
        g_assert_cmpint(parse_boolean("false"), ==, 0);
        g_assert_cmpint(parse_boolean("0"), ==, 0);
        g_assert_cmpint(parse_boolean("maybe"), ==, -EINVAL);
        g_assert_cmpint(parse_boolean(""), ==, -EINVAL);
        g_assert_cmpint(parse_boolean(NULL), ==, -EINVAL);
}

static void test_comma_list(void)
{
        _cleanup_(strv_freep) char **l = NULL;

        g_assert_cmpint(strv_extend_comma_list(&l, "vim,curl,,git,"), ==, 0);
        g_assert_cmpint(strv_extend_comma_list(&l, "less"), ==, 0);
        g_assert_cmpuint(strv_length(l), ==, 4);
        g_assert_cmpstr(l[0], ==, "vim");
        g_assert_cmpstr(l[1], ==, "curl");
        g_assert_cmpstr(l[2], ==, "git");
        g_assert_cmpstr(l[3], ==, "less");
        g_assert_null(l[4]);
}

static char *tree_render(const char *const *names, const char *const *origins, size_t n)
{
        size_t order[16];
        long parent[16];
        unsigned depth[16];
        GString *s = g_string_new(NULL);

        g_assert_cmpuint(n, <=, 16);
        tree_order(names, origins, n, order, parent, depth);
        for (size_t k = 0; k < n; k++) {
                size_t i = order[k];
                /* every parent comes before its child */
                if (parent[i] >= 0) {
                        bool before = false;
                        for (size_t j = 0; j < k; j++)
                                if (order[j] == (size_t) parent[i])
                                        before = true;
                        g_assert_true(before);
                        g_assert_cmpuint(depth[i], ==, depth[parent[i]] + 1);
                } else
                        g_assert_cmpuint(depth[i], ==, 0);
                g_string_append_printf(s, "%s%u%s", k ? " " : "", depth[i], names[i]);
        }
        return g_string_free(s, FALSE);
}

static void test_tree_order(void)
{
        /* Templates with their clones beneath, siblings by name. */
        const char *names[] = {"web", "base", "dev", "db", "orphan", "loopA", "loopB", "self", "trixie"};
        const char *origins[] = {"base", "", "base", "web", "gone", "loopB", "loopA", "self", NULL};
        g_autofree char *s = tree_render(names, origins, ELEMENTSOF(names));

        /* orphan: its origin is not listed; loopA/loopB: a loop, broken at the smaller name;
         * self: its own origin. */
        g_assert_cmpstr(s, ==, "0base 1dev 1web 2db 0loopA 1loopB 0orphan 0self 0trixie");

        /* No origins at all: sorted by name. */
        const char *flat_names[] = {"c", "a", "b"};
        const char *flat_origins[] = {NULL, NULL, NULL};
        g_autofree char *f = tree_render(flat_names, flat_origins, 3);
        g_assert_cmpstr(f, ==, "0a 0b 0c");

        /* A chain. */
        const char *chain_names[] = {"c3", "c1", "c2", "c0"};
        const char *chain_origins[] = {"c2", "c0", "c1", ""};
        g_autofree char *c = tree_render(chain_names, chain_origins, 4);
        g_assert_cmpstr(c, ==, "0c0 1c1 2c2 3c3");

        /* A loop of three with a tail hanging off it. */
        const char *loop_names[] = {"z", "y", "x", "tail"};
        const char *loop_origins[] = {"y", "x", "z", "y"};
        g_autofree char *l = tree_render(loop_names, loop_origins, 4);
        g_assert_cmpstr(l, ==, "0x 1y 2tail 2z");

        tree_order(NULL, NULL, 0, NULL, NULL, NULL);
}

static void test_json_fputs(void)
{
        char *buf = NULL;
        size_t len = 0;
        FILE *f = open_memstream(&buf, &len);

        json_fputs("a\"b\\c\nd\te\x01", f);
        fputc(' ', f);
        json_fputs(NULL, f);
        fputc(' ', f);
        json_fputs("Grüße", f);
        fclose(f);
        g_assert_cmpstr(buf, ==, "\"a\\\"b\\\\c\\nd\\te\\u0001\" null \"Grüße\"");
        free(buf);
}

static void test_progress_format(void)
{
        char buf[256];

        progress_format(buf, sizeof(buf), "job", 0.5, 30);
        g_assert_cmpstr(buf, ==, "job [#########          ]  50%");
        g_assert_cmpuint(strlen(buf), ==, 30);

        progress_format(buf, sizeof(buf), "job", 1.5, 30);
        g_assert_true(g_str_has_suffix(buf, "] 100%"));

        progress_format(buf, sizeof(buf), "job", -1, 30);
        g_assert_true(g_str_has_suffix(buf, "]   ?%"));
        g_assert_null(strchr(buf, '#'));

        /* A long label is shortened, never the line made wider than asked. */
        progress_format(buf, sizeof(buf), "create-template a-very-long-template-name-indeed", 0.25, 40);
        g_assert_cmpuint(strlen(buf), <=, 40);
        g_assert_true(g_str_has_suffix(buf, "  25%"));

        /* Never wider than the buffer. */
        char small[20];
        progress_format(small, sizeof(small), "job", 0.5, 200);
        g_assert_cmpuint(strlen(small), <, sizeof(small));
}

static void test_edit_distance(void)
{
        g_assert_cmpuint(edit_distance("list", "list"), ==, 0);
        g_assert_cmpuint(edit_distance("lsit", "list"), ==, 2);
        g_assert_cmpuint(edit_distance("clne", "clone"), ==, 1);
        g_assert_cmpuint(edit_distance("", "jobs"), ==, 4);
        g_assert_cmpuint(edit_distance("machine", "machines"), ==, 1);
        g_assert_cmpuint(edit_distance("kitten", "sitting"), ==, 3);
        {
                char long_word[100];
                memset(long_word, 'a', sizeof(long_word) - 1);
                long_word[sizeof(long_word) - 1] = '\0';
                g_assert_cmpuint(edit_distance(long_word, "list"), ==, UINT_MAX);
        }
}

static void test_progress_lines(void)
{
        const uint64_t s = 1000 * 1000;

        /* The first value, each new tenth, and otherwise only after PROGRESS_LINE_USEC. */
        g_assert_true(progress_line_due(-1, 0, 0, 0));
        g_assert_false(progress_line_due(0, 0, 0, s));
        g_assert_false(progress_line_due(0, 0, 9, s));
        g_assert_true(progress_line_due(9, 0, 10, s));
        g_assert_false(progress_line_due(10, s, 15, 2 * s));
        g_assert_true(progress_line_due(10, s, 15, s + PROGRESS_LINE_USEC));
        g_assert_true(progress_line_due(99, 0, 100, s));
        {
                int lines = 0, last = -1;
                for (int pct = 0; pct <= 100; pct++)
                        if (progress_line_due(last, 0, pct, 0)) {
                                lines++;
                                last = pct;
                        }
                g_assert_cmpint(lines, ==, 11); /* 0, 10, ..., 100 */
        }
}

static void test_exit_code_from_machine_status(void)
{
        g_assert_cmpint(exit_code_from_machine_status(0, false), ==, 0);
        g_assert_cmpint(exit_code_from_machine_status(7, false), ==, 7);
        g_assert_cmpint(exit_code_from_machine_status(128 + SIGKILL, false), ==, 137);
        g_assert_cmpint(exit_code_from_machine_status(128 + SIGTERM, false), ==, 143);
        /* our Ctrl-C stopped it: what a shell says for its foreground command */
        g_assert_cmpint(exit_code_from_machine_status(128 + SIGTERM, true), ==, 130);
        g_assert_cmpint(exit_code_from_machine_status(3, true), ==, 3);
        g_assert_cmpint(exit_code_from_machine_status(-1, false), ==, 129);
        g_assert_cmpint(exit_code_from_machine_status(1000, false), ==, 255);
}

static void test_term_is_valid(void)
{
        g_assert_true(term_is_valid("xterm-256color"));
        g_assert_true(term_is_valid("screen.xterm-256color"));
        g_assert_true(term_is_valid("rxvt-unicode+x"));
        g_assert_false(term_is_valid(NULL));
        g_assert_false(term_is_valid(""));
        g_assert_false(term_is_valid("xterm\nPATH=/evil"));
        g_assert_false(term_is_valid("a b"));
        g_assert_false(term_is_valid("x=y"));
        g_assert_false(term_is_valid("12345678901234567890123456789012345678901234567890123456789012345"));
}

static void test_json_key_from_property(void)
{
        static const char *const cases[][2] = {
                {"Name", "name"},
                {"ReadOnly", "ro"},
                {"CreationTimestamp", "created"},
                {"ModificationTimestamp", "modified"},
                {"UsageExclusive", "usage_exclusive"},
                {"OSRelease", "os_release"},
                {"UserNamespace", "userns"},
                {"UIDShift", "uid_shift"},
                {"ExitStatus", "exit_status"},
                {"PoolPath", "pool_path"},
                {"Leader", "leader"},
        };

        for (size_t i = 0; i < G_N_ELEMENTS(cases); i++) {
                g_autofree char *key = json_key_from_property(cases[i][0]);
                g_assert_cmpstr(key, ==, cases[i][1]);
        }
        g_assert_null(json_key_from_property(NULL));
}

static void test_json_compact(void)
{
        static const char *const cases[][2] = {
                {"{\n  \"a\": [1, 2],\n  \"b\": \"x y\\\" z\"\n}\n", "{\"a\":[1,2],\"b\":\"x y\\\" z\"}"},
                {"{}\n{}\n", "{}\n{}"},
                {"  7 ", "7"},
                {"", ""},
        };

        for (size_t i = 0; i < G_N_ELEMENTS(cases); i++) {
                g_autofree char *c = json_compact(cases[i][0]);
                g_assert_cmpstr(c, ==, cases[i][1]);
        }
}

static void test_ellipsize(void)
{
        static const struct {
                const char *in;
                size_t width;
                const char *out;
        } cases[] = {
                {"bookworm-base", 20, "bookworm-base"},
                {"bookworm-base", 13, "bookworm-base"},
                {"bookworm-base", 8, "bookwor…"},
                {"bookworm-base", 1, "b…"},
                {"", 4, ""},
                {"ünïcödé-name", 5, "ünïc…"},
        };

        for (size_t i = 0; i < G_N_ELEMENTS(cases); i++) {
                g_autofree char *e = ellipsize(cases[i].in, cases[i].width);
                g_assert_cmpstr(e, ==, cases[i].out);
        }
}

static void test_format_timestamp_short(void)
{
        char buf[FORMAT_TIMESTAMP_MAX];

        g_assert_cmpstr(format_timestamp_short(buf, sizeof(buf), 0), ==, "-");
        g_assert_cmpstr(format_timestamp_short(buf, sizeof(buf), UINT64_MAX), ==, "-");
        g_assert_cmpuint(strlen(format_timestamp_short(buf, sizeof(buf), UINT64_C(1700000000) * 1000000)), ==,
                         strlen("2023-11-14 22:13"));
}

static void test_progress_summary(void)
{
        char buf[256];

        progress_format_summary(buf, sizeof buf, "export-tar base", 8.24, UINT64_C(1288490189), "written");
        g_assert_cmpstr(buf, ==, "export-tar base: done in 8.2 s, 1.2G written");
        progress_format_summary(buf, sizeof buf, "pull-tar x", 0.5, UINT64_MAX, NULL);
        g_assert_cmpstr(buf, ==, "pull-tar x: done in 0.5 s");
}

int main(int argc, char *argv[])
{
        g_test_init(&argc, &argv, NULL);

        g_test_add_func("/stampctl/format-bytes", test_format_bytes);
        g_test_add_func("/stampctl/format-timestamp", test_format_timestamp);
        g_test_add_func("/stampctl/export-format-from-filename", test_export_format_from_filename);
        g_test_add_func("/stampctl/image-name-from-filename", test_image_name_from_filename);
        g_test_add_func("/stampctl/signal-from-string", test_signal_from_string);
        g_test_add_func("/stampctl/parse-boolean", test_parse_boolean);
        g_test_add_func("/stampctl/comma-list", test_comma_list);
        g_test_add_func("/stampctl/tree-order", test_tree_order);
        g_test_add_func("/stampctl/json-fputs", test_json_fputs);
        g_test_add_func("/stampctl/progress-format", test_progress_format);
        g_test_add_func("/stampctl/progress-lines", test_progress_lines);
        g_test_add_func("/stampctl/edit-distance", test_edit_distance);
        g_test_add_func("/stampctl/exit-code-from-machine-status", test_exit_code_from_machine_status);
        g_test_add_func("/stampctl/term-is-valid", test_term_is_valid);
        g_test_add_func("/stampctl/json-key-from-property", test_json_key_from_property);
        g_test_add_func("/stampctl/json-compact", test_json_compact);
        g_test_add_func("/stampctl/ellipsize", test_ellipsize);
        g_test_add_func("/stampctl/progress-summary", test_progress_summary);
        g_test_add_func("/stampctl/format-timestamp-short", test_format_timestamp_short);

        return g_test_run();
}
