/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* SHA-256 by libcrypto (transfer/sha256.c), which checks every OCI blob, pulled archive and cached
 * .deb: FIPS 180-2's vectors, a digest fed in uneven pieces, reset, and agreement with GChecksum on
 * random data. */
#include <glib.h>

#include "sha256.h"

static void test_vectors(void)
{
        static const struct {
                const char *in, *hex;
        } cases[] = {
                {"", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"},
                {"abc", "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"},
                {"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq",
                 "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"},
        };

        for (size_t i = 0; i < G_N_ELEMENTS(cases); i++) {
                char hex[65];
                sha256_hex(cases[i].in, strlen(cases[i].in), hex);
                g_assert_cmpstr(hex, ==, cases[i].hex);

                g_autoptr(Sha256) s = sha256_new();
                for (const char *p = cases[i].in; *p; p++)
                        sha256_update(s, p, 1);
                g_assert_cmpstr(sha256_get_string(s), ==, cases[i].hex);
                /* asked again: the same, not a digest of a digest */
                g_assert_cmpstr(sha256_get_string(s), ==, cases[i].hex);
        }
}

static void test_reset_and_glib(void)
{
        g_autoptr(GRand) rand = g_rand_new_with_seed(7);
        size_t size = 3 * 1024 * 1024 + 17;
        g_autofree guint8 *data = g_malloc(size);
        for (size_t i = 0; i < size; i++)
                data[i] = (guint8) g_rand_int(rand);

        g_autoptr(Sha256) s = sha256_new();
        sha256_update(s, "noise", 5);
        sha256_reset(s);
        for (size_t off = 0, step = 1; off < size; off += step, step = step * 3 + 1)
                sha256_update(s, data + off, MIN(step, size - off));

        g_autofree char *expected = g_compute_checksum_for_data(G_CHECKSUM_SHA256, data, size);
        g_assert_cmpstr(sha256_get_string(s), ==, expected);
}

int main(int argc, char **argv)
{
        g_test_init(&argc, &argv, NULL);
        g_test_add_func("/sha256/vectors", test_vectors);
        g_test_add_func("/sha256/reset-and-glib", test_reset_and_glib);
        return g_test_run();
}
