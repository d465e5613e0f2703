/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

#include "util.h"

/* The image cache of online template builds, beside the package cache (cache.h), on btrfs stores only:
 *
 *   <store>/.stamp/cache/images/            0700 root
 *   <store>/.stamp/cache/images/KEY         a read-only subvolume: the tree as the builder left it, before
 *                                           the per-template steps; KEY is the SHA-256 of the recipe
 *                                           (builder, mirror, suite, arch, variant, packages)
 *   <store>/.stamp/cache/images/KEY.lock    held (flock LOCK_EX) by the build that reads or replaces KEY;
 *                                           there only while KEY is, or a build of it runs (one left by a
 *                                           killed build goes at the next trim or clean)
 *   <store>/.stamp/cache/images/.new-KEY    a snapshot being made into an entry (under KEY.lock); one
 *                                           found there while the lock is free is left from a killed build
 *
 * An entry is made complete (its xattrs below set, read-only) under its hidden name and renamed into place,
 * replacing the entry of the same recipe made from an older InRelease. Nothing but stamp-transfer's template
 * jobs and CleanCache (stampd's operation child) writes here. */

#define STORE_IMAGE_CACHE_DIR "images"
#define STORE_IMAGE_CACHE_NEW_PREFIX ".new-"
#define STORE_IMAGE_CACHE_LOCK_SUFFIX ".lock"

/* On an entry's root directory: the hex SHA-256 of the signed InRelease it was built from, the recipe
 * text its name is the hash of, when it was made (decimal µs, CLOCK_REALTIME), and the bytes its files
 * allocate (decimal). */
#define STORE_IMAGE_CACHE_XATTR_INRELEASE "user.stamp.cache.inrelease"
#define STORE_IMAGE_CACHE_XATTR_KEY "user.stamp.cache.key"
#define STORE_IMAGE_CACHE_XATTR_CREATED "user.stamp.cache.created"
#define STORE_IMAGE_CACHE_XATTR_BYTES "user.stamp.cache.bytes"

/* The images directory below the cache directory @cache_fd, made if missing. */
int store_image_cache_open(int cache_fd);

/* Open and lock (LOCK_EX, waiting if @wait) KEY.lock; the fd, or -EWOULDBLOCK, or another -errno. A lock
 * file removed while this waited for it is no lock: it takes the one under the name then. */
int store_image_cache_lock(int images_fd, const char *key, bool wait);

/* Let go of the lock @fd of KEY (store_image_cache_lock()), removing KEY.lock first where KEY has neither an
 * entry nor a temporary: the lock of a recipe no longer cached does not stay behind. */
void store_image_cache_unlock(int images_fd, const char *key, int fd);

/* A decimal xattr of @fd; 0 if missing. */
uint64_t store_image_cache_xattr_u64(int fd, const char *name);

/* The sum of the entries' bytes attributes: what their files allocate. On btrfs those extents are shared
 * with the templates made from them, so this is what removing them frees at most. A small read per entry. */
uint64_t store_image_cache_count(int cache_fd);

/* Remove entry (or temporary) @name of @images_fd, whose lock the caller holds. */
int store_image_cache_remove(int images_fd, const char *name);

/* Remove every entry and temporary whose lock no build holds; *ret_freed their bytes, *ret_busy how many
 * were held and kept. Blocking. */
int store_image_cache_clean(int cache_fd, uint64_t *ret_freed, unsigned *ret_busy);

/* Remove the oldest entries whose lock is free until at most @max remain, and the locks of no entry that no
 * build holds. Blocking. */
int store_image_cache_trim(int images_fd, uint64_t max);

/* Bytes the regular files below @fd allocate. Blocking. */
uint64_t store_tree_allocated(int fd);
