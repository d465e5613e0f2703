/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include "sha256.h"

#include <openssl/evp.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct Sha256 {
        EVP_MD_CTX *ctx;
        bool done;
        char hex[65];
};

static void sha256_start(Sha256 *s)
{
        /* Fails only without memory, or without SHA-256 in libcrypto: neither can be carried on from. */
        if (EVP_DigestInit_ex(s->ctx, EVP_sha256(), NULL) != 1)
                g_error("libcrypto: cannot start a SHA-256 digest");
        s->done = false;
}

Sha256 *sha256_new(void)
{
        Sha256 *s = g_new0(Sha256, 1);
        s->ctx = EVP_MD_CTX_new();
        if (!s->ctx)
                g_error("libcrypto: out of memory");
        sha256_start(s);
        return s;
}

void sha256_update(Sha256 *s, const void *data, size_t size)
{
        g_return_if_fail(!s->done);
        if (size > 0 && EVP_DigestUpdate(s->ctx, data, size) != 1)
                g_error("libcrypto: SHA-256 update failed");
}

void sha256_reset(Sha256 *s)
{
        sha256_start(s);
}

const char *sha256_get_string(Sha256 *s)
{
        if (!s->done) {
                unsigned char md[EVP_MAX_MD_SIZE];
                unsigned n = 0;
                if (EVP_DigestFinal_ex(s->ctx, md, &n) != 1 || n != 32)
                        g_error("libcrypto: SHA-256 final failed");
                for (unsigned i = 0; i < n; i++)
                        snprintf(s->hex + 2 * i, 3, "%02x", md[i]);
                s->done = true;
        }
        return s->hex;
}

void sha256_free(Sha256 *s)
{
        if (!s)
                return;
        EVP_MD_CTX_free(s->ctx);
        g_free(s);
}

void sha256_hex(const void *data, size_t size, char ret[static 65])
{
        g_autoptr(Sha256) s = sha256_new();
        sha256_update(s, data, size);
        memcpy(ret, sha256_get_string(s), 65);
}
