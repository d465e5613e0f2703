/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* The redaction of URLs (common/redact.c) that keeps pull and mirror credentials out of what a job
 * shows: log lines, errors, properties, polkit details. */
#include <glib.h>

#include "redact.h"

#define E "\xe2\x80\xa6" /* … */

static void check(char *(*f)(const char *), const char *in, const char *expected)
{
        g_autofree char *got = f(in);

        if (g_strcmp0(got, expected) != 0)
                g_error("redacting \"%s\": expected \"%s\", got \"%s\"", in, expected, got);
}

static void test_url(void)
{
        static const struct {
                const char *in, *out;
        } cases[] = {
                {"https://user:pw@host/p?q", "https://***@host/p?" E},
                {"https://user:pw@host:8443/a/b/img.tar.zst?token=s3cr3t&x=1#frag",
                 "https://***@host:8443/a/b/img.tar.zst?" E},
                /* nothing secret: unchanged */
                {"https://host/p/img.tar", "https://host/p/img.tar"},
                {"http://127.0.0.1:8080/", "http://127.0.0.1:8080/"},
                {"https://deb.debian.org/debian", "https://deb.debian.org/debian"},
                /* only a user, or an empty userinfo: still hidden */
                {"https://token@host/p", "https://***@host/p"},
                {"https://@host/p", "https://***@host/p"},
                /* an unencoded '@' in the password: everything up to the host's '@' goes */
                {"https://u:p@ss@host/p", "https://***@host/p"},
                /* no path */
                {"https://u:p@host", "https://***@host"},
                {"https://u:p@host?t=1", "https://***@host?" E},
                {"https://host#frag", "https://host#" E},
                {"https://host/p?", "https://host/p?" E},
                /* an '@' in the path hides all before it: the '/' may be a password's */
                {"https://host/a@b/c", "https://***@b/c"},
                {"https://u:123/pw@host/x", "https://***@host/x"},
                /* an '@' in the query or fragment is not userinfo; they go anyway */
                {"https://host/p#a@b", "https://host/p#" E},
                {"https://host/p?next=u:p@evil", "https://host/p?" E},
                /* IPv6 literal */
                {"http://u:p@[::1]:80/x", "http://***@[::1]:80/x"},
                /* other schemes are treated alike */
                {"ftp://u:p@host/x", "ftp://***@host/x"},
                {"HTTPS://U:P@HOST/X?Y", "HTTPS://***@HOST/X?" E},
                /* no "scheme://": the authority starts at the beginning */
                {"u:p@host/x", "***@host/x"},
                {"/img.tar", "/img.tar"},
                {"", ""},
                {"relative/img.tar?t=1", "relative/img.tar?" E},
        };

        for (size_t i = 0; i < G_N_ELEMENTS(cases); i++) {
                g_autofree char *once = url_redact(cases[i].in);
                check(url_redact, cases[i].in, cases[i].out);
                check(url_redact, once, cases[i].out);
        }
        g_assert_null(url_redact(NULL));
}

static void test_text(void)
{
        static const struct {
                const char *in, *out;
        } cases[] = {
                {"", ""},
                {"no url here", "no url here"},
                {"Cannot download img.tar from https://u:pw@host/d/img.tar?t=1: HTTP 404",
                 "Cannot download img.tar from https://***@host/d/img.tar?" E ": HTTP 404"},
                /* already redacted: nothing more goes */
                {"from https://***@host/d/img.tar?" E ": HTTP 404", "from https://***@host/d/img.tar?" E ": HTTP 404"},
                /* sentence punctuation after a URL stays, inside it does not end it */
                {"see https://u:p@h/a.b, or https://h/c?d;e.", "see https://***@h/a.b, or https://h/c?" E "."},
                {"at https://u:p@h:8080: refused", "at https://***@h:8080: refused"},
                {"Verifying img.tar against https://u:pw@host/d/SHA256SUMS",
                 "Verifying img.tar against https://***@host/d/SHA256SUMS"},
                /* two URLs, quoted and not */
                {"\"http://a:b@x/1\" and http://c:d@y/2?z end", "\"http://***@x/1\" and http://***@y/2?" E " end"},
                /* a scheme glued to what precedes it is found all the same */
                {"url=https://u:pw@h/", "url=https://***@h/"},
                {"1https://u:pw@h/", "1https://***@h/"},
                {"(https://u:pw@h/x)", "(https://***@h/x)"},
                /* ends at white space, and at closing quotes and brackets before it */
                {"<https://u:pw@h/x> ok", "<https://***@h/x> ok"},
                {"'https://u:pw@h/x?y': ok", "'https://***@h/x?" E "': ok"},
                {"(\"https://h/x?y\").", "(\"https://h/x?" E "\")."},
                /* a quote or a backslash inside the userinfo does not end the URL before its '@' */
                {"https://u:p\\\"w@h/x", "https://***@h/x"},
                {"https://u:p\"w@h/x", "https://***@h/x"},
                {"https://u:pw@h/x\tnext", "https://***@h/x\tnext"},
                {"a://", "a://"},
                {"://u:pw@h", "://***@h"},
                {":// and ://", ":// and ://"},
                /* a URL with nothing secret is left as it was */
                {"I: Retrieving InRelease from http://deb.debian.org/debian",
                 "I: Retrieving InRelease from http://deb.debian.org/debian"},
        };

        for (size_t i = 0; i < G_N_ELEMENTS(cases); i++)
                check(text_redact_urls, cases[i].in, cases[i].out);
        g_assert_null(text_redact_urls(NULL));
}

/* The result must fit in what was allocated however the markers pile up (ASan tells if not). */
static void test_worst_case_growth(void)
{
        g_autoptr(GString) in = g_string_new(NULL), out = g_string_new(NULL);

        for (int i = 0; i < 1000; i++) {
                g_string_append(in, "://@# ");
                g_string_append(out, "://***@#" E " ");
        }
        check(text_redact_urls, in->str, out->str);

        g_autofree char *one = url_redact("a://@?");
        g_assert_cmpstr(one, ==, "a://***@?" E);
}

int main(int argc, char *argv[])
{
        g_test_init(&argc, &argv, NULL);
        g_test_add_func("/redact/url", test_url);
        g_test_add_func("/redact/text", test_text);
        g_test_add_func("/redact/worst-case-growth", test_worst_case_growth);
        return g_test_run();
}
