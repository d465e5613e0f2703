/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* inrelease_valid_until(): what the image cache reads of a suite's verified InRelease before it serves a
 * tree made from it. Only the signed text counts, a date it cannot read is no date in the future. */
#include <glib.h>

#include "build-cache.h"
#include "curl-util.h"

#define HEAD "-----BEGIN PGP SIGNED MESSAGE-----\nHash: SHA512\n\n"
#define SIG "\n-----BEGIN PGP SIGNATURE-----\n\niHUEARYKAB0WIQ\n-----END PGP SIGNATURE-----\n"
#define FIELDS "Origin: Debian\nSuite: stable-security\nCodename: bookworm-security\n"
/* 2026-12-12 20:17:40 UTC */
#define UNTIL_USEC (UINT64_C(1797106660) * 1000000)

static int valid_until(const char *text, uint64_t *ret)
{
        *ret = 0;
        return inrelease_valid_until(text, strlen(text), ret);
}

static void test_read(void)
{
        uint64_t t;

        g_assert_cmpint(valid_until(HEAD FIELDS
                                    "Date: Sat, 05 Dec 2026 20:17:40 UTC\n"
                                    "Valid-Until: Sat, 12 Dec 2026 20:17:40 UTC\nArchitectures: amd64\n" SIG,
                                    &t),
                        ==, 1);
        g_assert_cmpuint(t, ==, UNTIL_USEC);
        /* field names are case-blind, as in every deb822 file; a zone as a number */
        g_assert_cmpint(valid_until(HEAD FIELDS "valid-until: Sat, 12 Dec 2026 21:17:40 +0100\n" SIG, &t), ==, 1);
        g_assert_cmpuint(t, ==, UNTIL_USEC);
}

static void test_none(void)
{
        uint64_t t;

        g_assert_cmpint(valid_until(HEAD FIELDS "Date: Sat, 05 Dec 2026 20:17:40 UTC\n" SIG, &t), ==, 0);
        /* a field that only begins the same */
        g_assert_cmpint(valid_until(HEAD FIELDS "Valid-Until-Not: Sat, 12 Dec 2026 20:17:40 UTC\n" SIG, &t), ==, 0);
}

static void test_unsigned_parts_do_not_count(void)
{
        uint64_t t;

        /* after the signature: nothing gpgv vouched for */
        g_assert_cmpint(valid_until(HEAD FIELDS SIG "Valid-Until: Sat, 12 Dec 2099 20:17:40 UTC\n", &t), ==, 0);
        /* an armor header is not signed text either */
        g_assert_cmpint(valid_until("-----BEGIN PGP SIGNED MESSAGE-----\nHash: SHA512\nValid-Until: Sat, 12 Dec "
                                    "2099 20:17:40 UTC\n\n" FIELDS SIG,
                                    &t),
                        ==, 0);
}

static void test_refused(void)
{
        uint64_t t;

        /* no clearsigned message at all, or text before it */
        g_assert_cmpint(valid_until(FIELDS "Valid-Until: Sat, 12 Dec 2026 20:17:40 UTC\n", &t), ==, -EBADMSG);
        g_assert_cmpint(valid_until("junk\n" HEAD FIELDS SIG, &t), ==, -EBADMSG);
        /* no signature, no end of the signed text */
        g_assert_cmpint(valid_until(HEAD FIELDS, &t), ==, -EBADMSG);
        /* a date that says nothing, or two */
        g_assert_cmpint(valid_until(HEAD FIELDS "Valid-Until: soon\n" SIG, &t), ==, -EBADMSG);
        g_assert_cmpint(valid_until(HEAD FIELDS "Valid-Until: Sat, 12 Dec 2026 20:17:40 UTC\n"
                                                "Valid-Until: Sat, 12 Dec 2099 20:17:40 UTC\n" SIG,
                                    &t),
                        ==, -EBADMSG);
        /* a NUL inside */
        g_assert_cmpint(inrelease_valid_until(HEAD "\0" FIELDS SIG, sizeof(HEAD "\0" FIELDS SIG) - 1, &t), ==,
                        -EBADMSG);
}

int main(int argc, char *argv[])
{
        g_test_init(&argc, &argv, NULL);
        g_assert_null(curl_try_load());
        g_test_add_func("/inrelease/read", test_read);
        g_test_add_func("/inrelease/none", test_none);
        g_test_add_func("/inrelease/unsigned-parts-do-not-count", test_unsigned_parts_do_not_count);
        g_test_add_func("/inrelease/refused", test_refused);
        return g_test_run();
}
