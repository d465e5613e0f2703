/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* Image names (common/names.c): every rule of SPEC.md, with the reason given for each refusal. */
#include <string.h>

#include <glib.h>

#include "names.h"

/* The rule as SPEC.md words it, written independently of names.c. */
static gboolean reference_is_valid(const char *s)
{
        size_t n = strlen(s);

        if (n < 1 || n > 64 || s[0] == '.' || s[0] == '-' || strcmp(s, ".") == 0 || strcmp(s, "..") == 0)
                return FALSE;
        for (size_t i = 0; i < n; i++)
                if (!g_ascii_isalnum(s[i]) && !strchr("-_.", s[i]))
                        return FALSE;
        return TRUE;
}

static void assert_valid(const char *name)
{
        g_assert_true(image_name_is_valid(name));
        g_assert_null(image_name_invalid_reason(name));
        g_assert_true(reference_is_valid(name));
}

static void assert_invalid(const char *name, const char *reason_part)
{
        const char *why = image_name_invalid_reason(name);

        g_assert_false(image_name_is_valid(name));
        g_assert_nonnull(why);
        g_assert_cmpstr(why, !=, "");
        if (reason_part && !strstr(why, reason_part))
                g_error("reason for \"%s\" is \"%s\", which does not say \"%s\"", name, why, reason_part);
        if (name)
                g_assert_false(reference_is_valid(name));
}

static void test_good_names(void)
{
        char max[65];

        memset(max, 'a', 64);
        max[64] = '\0';
        assert_valid("a");
        assert_valid("Z");
        assert_valid("0");
        assert_valid("0start");
        assert_valid("base");
        assert_valid("A-Z_a-z.0-9");
        assert_valid("x..y");
        assert_valid("a.");
        assert_valid("a-");
        assert_valid("a_");
        assert_valid("_");
        assert_valid("__init__");
        assert_valid(max);
}

static void test_bad_names(void)
{
        char long_name[66];

        memset(long_name, 'a', 65);
        long_name[65] = '\0';
        assert_invalid(NULL, "empty");
        assert_invalid("", "empty");
        assert_invalid(long_name, "64");
        assert_invalid("../x", "'.'");
        assert_invalid("a/b", "'/'");
        assert_invalid("/", "'/'");
        assert_invalid("a/", "'/'");
        assert_invalid(".x", "'.'");
        assert_invalid(".", "'.'");
        assert_invalid("..", "'.'");
        assert_invalid(".#stamp-web-0123", "'.'");
        assert_invalid("-x", "'-'");
        assert_invalid("-", "'-'");
        assert_invalid("\xc3\xbc", "non-ASCII"); /* ü */
        assert_invalid("a\xc3\xbc", "non-ASCII");
        assert_invalid("\xff", "non-ASCII");
        assert_invalid("a b", NULL);
        assert_invalid("x\ny", NULL);
        assert_invalid("tab\t", NULL);
        assert_invalid("del\x7f", NULL);
        assert_invalid("bell\a", NULL);
        assert_invalid("a*", NULL);
        assert_invalid("a:b", NULL);
        assert_invalid("a\\b", NULL);
        assert_invalid("$(id)", NULL);
}

static void test_every_byte(void)
{
        /* Each byte 1..255 as a name's 2nd character: only the 65 allowed ones pass. */
        unsigned ok = 0;

        for (unsigned c = 1; c < 256; c++) {
                char name[3] = {'a', (char) c, '\0'};
                gboolean want = g_ascii_isalnum((char) c) || c == '-' || c == '_' || c == '.';

                g_assert_cmpint(image_name_is_valid(name), ==, want);
                g_assert_cmpint(image_name_invalid_reason(name) == NULL, ==, want);
                ok += want;
        }
        g_assert_cmpuint(ok, ==, 26 + 26 + 10 + 3);
}

static void test_all_short_names_match_reference(void)
{
        /* Every name of 1 and 2 bytes from an alphabet with each kind of character. */
        static const char alphabet[] = "aZ09-_./ \n\x7f\x80\xc3\xbc";

        for (const char *x = alphabet; *x; x++) {
                char one[2] = {*x, '\0'};
                g_assert_cmpint(image_name_is_valid(one), ==, reference_is_valid(one));
                for (const char *y = alphabet; *y; y++) {
                        char two[3] = {*x, *y, '\0'};
                        g_assert_cmpint(image_name_is_valid(two), ==, reference_is_valid(two));
                }
        }
}

static void test_huge_name(void)
{
        /* A caller may send megabytes in one string: the check must not walk all of it, and must not
         * read past its end (ASan checks the latter). */
        size_t n = 16 << 20;
        char *big = g_malloc(n + 1);

        memset(big, 'a', n);
        big[n] = '\0';
        assert_invalid(big, "64");
        big[0] = '.';
        g_assert_false(image_name_is_valid(big));
        g_free(big);
}

int main(int argc, char *argv[])
{
        g_test_init(&argc, &argv, NULL);
        g_test_add_func("/names/good", test_good_names);
        g_test_add_func("/names/bad", test_bad_names);
        g_test_add_func("/names/every-byte", test_every_byte);
        g_test_add_func("/names/short-names-match-reference", test_all_short_names_match_reference);
        g_test_add_func("/names/huge", test_huge_name);
        return g_test_run();
}
