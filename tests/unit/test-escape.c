/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* Showing text that came from elsewhere (common/escape.c): nothing a terminal acts on gets through,
 * messages stay as g_strescape() made them, long values are cut or left out. */
#include <string.h>

#include <glib.h>

#include "escape.h"

static void assert_escaped(const char *in, EscapeFlags flags, const char *out)
{
        g_autofree char *s = text_escape(in, 0, flags);
        g_assert_cmpstr(s, ==, out);
}

/* Nothing in @s that a terminal would act on: no C0 control, no DEL, no C1 control as a byte or as a
 * UTF-8 character, and valid UTF-8 throughout. */
static void assert_terminal_safe(const char *s)
{
        g_assert_true(g_utf8_validate(s, -1, NULL));
        for (const char *p = s; *p; p = g_utf8_next_char(p)) {
                gunichar c = g_utf8_get_char(p);
                g_assert_false(c < 0x20 || c == 0x7f || (c >= 0x80 && c <= 0x9f));
        }
}

static void test_terminal(void)
{
        assert_escaped("plain text, 1-2_3.", ESCAPE_TERMINAL, "plain text, 1-2_3.");
        assert_escaped("\x1b[31mred\x1b[0m", ESCAPE_TERMINAL, "\\033[31mred\\033[0m");
        assert_escaped("\x1b]0;title\a", ESCAPE_TERMINAL, "\\033]0;title\\007");
        assert_escaped("a\nforged line", ESCAPE_TERMINAL, "a\\nforged line");
        assert_escaped("tab\there\r", ESCAPE_TERMINAL, "tab\\there\\r");
        assert_escaped("del\x7f", ESCAPE_TERMINAL, "del\\177");
        assert_escaped("back\\slash", ESCAPE_TERMINAL, "back\\\\slash");
        assert_escaped("say \"hi\"", ESCAPE_TERMINAL, "say \"hi\"");
        /* printable UTF-8 stays readable */
        assert_escaped("Debian GNU/Linux 12 (bookworm) – café ✓ 😀", ESCAPE_TERMINAL,
                       "Debian GNU/Linux 12 (bookworm) – café ✓ 😀");
        /* CSI as a single 8-bit byte, and as the UTF-8 character U+009B */
        assert_escaped("\x9b"
                       "31m",
                       ESCAPE_TERMINAL,
                       "\\233"
                       "31m");
        assert_escaped("\xc2\x9b"
                       "31m",
                       ESCAPE_TERMINAL,
                       "\\302\\233"
                       "31m");
        /* not UTF-8: overlong, surrogate, beyond U+10FFFF, a sequence cut short */
        assert_escaped("\xc0\xaf", ESCAPE_TERMINAL, "\\300\\257");
        assert_escaped("\xed\xa0\x80", ESCAPE_TERMINAL, "\\355\\240\\200");
        assert_escaped("\xf4\x90\x80\x80", ESCAPE_TERMINAL, "\\364\\220\\200\\200");
        assert_escaped("caf\xc3", ESCAPE_TERMINAL, "caf\\303");
        assert_escaped("\xe2\x9c"
                       "x",
                       ESCAPE_TERMINAL, "\\342\\234x");
        assert_escaped("", ESCAPE_TERMINAL, "");
        assert_escaped(NULL, ESCAPE_TERMINAL, "(null)");

        /* every byte, alone and after a lead byte */
        for (unsigned c = 1; c < 256; c++) {
                char in[3] = {(char) c, 0, 0}, in2[3] = {(char) 0xe2, (char) c, 0};
                g_autofree char *a = text_escape(in, 0, ESCAPE_TERMINAL);
                g_autofree char *b = text_escape(in2, 0, ESCAPE_TERMINAL);
                assert_terminal_safe(a);
                assert_terminal_safe(b);
        }
}

static void test_message(void)
{
        /* byte for byte what g_strescape() gives, which error messages have always used */
        char all[256];

        for (unsigned c = 1; c < 256; c++)
                all[c - 1] = (char) c;
        all[255] = '\0';
        {
                g_autofree char *ours = text_escape(all, 0, ESCAPE_MESSAGE);
                g_autofree char *glib = g_strescape(all, NULL);
                g_assert_cmpstr(ours, ==, glib);
                g_assert_true(g_utf8_validate(ours, -1, NULL));
        }
        assert_escaped("café", ESCAPE_MESSAGE, "caf\\303\\251");
        assert_escaped("say \"hi\"", ESCAPE_MESSAGE, "say \\\"hi\\\"");
}

static void test_cut_and_shown(void)
{
        char long_value[SHOWN_MAX + 1];
        g_autofree char *cut = text_escape("abcdef", 3, ESCAPE_MESSAGE);
        g_autofree char *cut_utf8 = text_escape("ab\xc3\xa9", 3, ESCAPE_TERMINAL);
        g_autofree char *huge = g_strnfill(1 << 20, '\x1b');
        g_autofree char *huge_escaped = text_escape(huge, 0, ESCAPE_TERMINAL);

        g_assert_cmpstr(cut, ==, "abc");
        /* a character cut in two shows its first byte escaped, never raw */
        g_assert_cmpstr(cut_utf8, ==, "ab\\303");
        /* every byte may become four */
        g_assert_cmpuint(strlen(huge_escaped), ==, 4u << 20);

        memset(long_value, 'a', SHOWN_MAX - 1);
        long_value[SHOWN_MAX - 1] = '\0';
        {
                g_autofree char *s = text_shown(long_value);
                g_assert_cmpstr(s, ==, long_value);
        }
        long_value[SHOWN_MAX - 1] = 'a';
        long_value[SHOWN_MAX] = '\0';
        {
                g_autofree char *s = text_shown(long_value);
                g_assert_cmpstr(s, ==, "(too long to show)");
        }
        {
                g_autofree char *s = text_shown("a\nb\x1b");
                g_assert_cmpstr(s, ==, "a\\nb\\033");
        }
        {
                g_autofree char *s = text_shown(NULL);
                g_assert_cmpstr(s, ==, "(null)");
        }
}

int main(int argc, char *argv[])
{
        g_test_init(&argc, &argv, NULL);
        g_test_add_func("/escape/terminal", test_terminal);
        g_test_add_func("/escape/message", test_message);
        g_test_add_func("/escape/cut-and-shown", test_cut_and_shown);
        return g_test_run();
}
