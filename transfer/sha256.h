/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

#include <glib.h>
#include <stddef.h>

/* SHA-256 of what stamp-transfer reads and writes in bulk (OCI layers and blobs, pulled archives, cached
 * .debs), by libcrypto: it uses the CPU's SHA instructions where there are some. On the 2-CPU Xeon this was
 * measured on, 300 MB took 0.24 s where a portable implementation such as GChecksum's took about 0.9 s,
 * which made hashing one of the largest costs of a push. The interface is GChecksum's, less what is not
 * used. */
typedef struct Sha256 Sha256;

Sha256 *sha256_new(void);
void sha256_update(Sha256 *s, const void *data, size_t size);
/* Starts over, as if new. */
void sha256_reset(Sha256 *s);
/* The 64 lowercase hex digits of what was given so far; nothing may be added after. The string is the
 * object's. */
const char *sha256_get_string(Sha256 *s);
void sha256_free(Sha256 *s);
/* The hex digits of one buffer, in ret. */
void sha256_hex(const void *data, size_t size, char ret[static 65]);

G_DEFINE_AUTOPTR_CLEANUP_FUNC(Sha256, sha256_free)
