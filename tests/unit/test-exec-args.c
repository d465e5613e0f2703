/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* ExecMachine's checks of its arguments and the step's report (daemon/exec.c). */
#include <errno.h>
#include <string.h>

#include <glib.h>

#include "exec.h"

static void test_environment_entries(void)
{
        const char *good[] = {"A=b", "PATH=/bin:/usr/bin", "_X=", "a1_B2=x=y", "TERM=xterm-256color"};
        const char *bad[] = {"", "=x", "NOVALUE", "A B=x", "1A=x", "A-B=x", "Ä=x", "A\tB=c"};

        for (size_t i = 0; i < G_N_ELEMENTS(good); i++)
                g_assert_true(exec_environment_entry_valid(good[i]));
        for (size_t i = 0; i < G_N_ELEMENTS(bad); i++)
                g_assert_false(exec_environment_entry_valid(bad[i]));
}

static void test_users(void)
{
        g_autofree char *longest = g_strnfill(256, 'u'), *too_long = g_strnfill(257, 'u');
        const char *good[] = {"root", "alice", "0", "1000", "www-data", "a.b", "smb$", "_apt"};
        const char *bad[] = {"", "-rf", ".hidden", "../etc", "a/b", "a:b", "a b", "a\nb", "ü"};

        for (size_t i = 0; i < G_N_ELEMENTS(good); i++)
                g_assert_true(exec_user_valid(good[i]));
        for (size_t i = 0; i < G_N_ELEMENTS(bad); i++)
                g_assert_false(exec_user_valid(bad[i]));
        g_assert_true(exec_user_valid(longest));
        g_assert_false(exec_user_valid(too_long));
}

static void assert_report(const char *text, const char *result, int status, const char *message)
{
        g_autofree char *line = g_strdup(text);
        char got[EXEC_RESULT_MAX];
        const char *words = NULL;
        int st = -12345;

        g_assert_cmpint(exec_parse_report(line, got, &st, &words), ==, 0);
        g_assert_cmpstr(got, ==, result);
        g_assert_cmpint(st, ==, status);
        g_assert_cmpstr(words, ==, message);
}

static void assert_bad_report(const char *text)
{
        g_autofree char *line = g_strdup(text);
        char got[EXEC_RESULT_MAX];
        const char *words = NULL;
        int st = 0;

        g_assert_cmpint(exec_parse_report(line, got, &st, &words), ==, -EBADMSG);
}

static void test_reports(void)
{
        assert_report("exited 0\n", "exited", 0, "");
        assert_report("exited 3", "exited", 3, "");
        assert_report("killed 9\n", "killed", 9, "");
        assert_report("dumped 11\n", "dumped", 11, "");
        assert_report("failed 3 No user bob in machine web\n", "failed", 3, "No user bob in machine web");
        assert_report("exec-failed 2 Cannot run x in machine web: No such file\nrest", "exec-failed", 2,
                      "Cannot run x in machine web: No such file");
        assert_report("failed 5", "failed", 5, "");
        /* words after a status that is no failure's are not passed on */
        assert_report("exited 1 stray words", "exited", 1, "");

        assert_bad_report("");
        assert_bad_report("\n");
        assert_bad_report("exited");
        assert_bad_report("exited x");
        assert_bad_report("exited 3x");
        assert_bad_report("exitedd 3");
        assert_bad_report("failed-ish 1 x");
        assert_bad_report("killed 99999999999999999999");
        assert_bad_report("EXITED 0");
}

int main(int argc, char *argv[])
{
        g_test_init(&argc, &argv, NULL);
        g_test_add_func("/exec/environment", test_environment_entries);
        g_test_add_func("/exec/users", test_users);
        g_test_add_func("/exec/reports", test_reports);
        return g_test_run();
}
