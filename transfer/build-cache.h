/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

#include "job-child.h"

/* The image cache of online template builds, as a build uses it (store/image-cache.h has the layout): the
 * key of a recipe, the suite's InRelease fetched and verified with gpgv against the suite's keyring, the
 * entry of the recipe taken when it was made from that same InRelease, and the tree of a full build kept
 * for the next one. */
typedef struct BuildCache {
        int cache_fd;
        int images_fd;
        int lock_fd;        /* KEY.lock, held from the lookup to the end of the save (or take) */
        char key[65];       /* the entry's name: SHA-256 of key_text */
        char *key_text;     /* the recipe, one "name value" line each */
        char inrelease[65]; /* SHA-256 of the verified InRelease; "" if it was not verified (nothing is kept) */
        bool hit;
        uint64_t created; /* µs, CLOCK_REALTIME: when the entry taken was made */
} BuildCache;

#define BUILD_CACHE_INIT                                                                                               \
        {                                                                                                              \
                .cache_fd = -1, .images_fd = -1, .lock_fd = -1                                                         \
        }

void build_cache_done(BuildCache *bc);

/* The Valid-Until field of an InRelease @text (@len bytes, clearsigned), read from its signed part alone,
 * as apt reads it: 1 and the time in *@ret_usec (CLOCK_REALTIME) if it has one, 0 if not, -EBADMSG if the
 * text is no clearsigned message or the date cannot be read. Needs curl_try_load(). */
int inrelease_valid_until(const char *text, size_t len, uint64_t *ret_usec);

/* Lock the entry of @key_text, fetch <mirror>/dists/<suite>/InRelease and verify it against @keyring; a hit
 * if the entry was made from that very file and @reuse. Fails nothing: what goes wrong is logged, and the
 * build goes on without the cache (mmdebstrap fetches and verifies the same file and says what is wrong). */
void build_cache_lookup(JobChild *c, BuildCache *bc, int store_fd, const char *key_text, const char *mirror,
                        const char *suite, const char *keyring, bool reuse);

/* A hit: the entry snapshotted (writable) as @temp in @store_fd. 0, or a negative errno after
 * job_child_fail(). */
int build_cache_take(JobChild *c, BuildCache *bc, int store_fd, const char *temp);

/* After a full build: the tree of @tree_fd as it is now kept as the recipe's entry, replacing one of an
 * older InRelease, if the InRelease the builder used (the one in @lists_dir, apt's lists) is the one
 * verified; then at most @max entries kept, oldest out. Fails nothing. */
void build_cache_save(JobChild *c, BuildCache *bc, int tree_fd, const char *lists_dir, const char *suite, uint64_t max);
