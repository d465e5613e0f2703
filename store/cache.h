/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

#include "util.h"

/* The package cache of template builds, in the store's metadata directory (owners.h), shared by
 * every build and written only by stamp-transfer's template jobs and stampd:
 *
 *   <store>/.stamp/cache/                       0700 root
 *   <store>/.stamp/cache/debootstrap/SUITE-ARCH  .debs of builds by debootstrap (--cache-dir)
 *   <store>/.stamp/cache/mmdebstrap/SUITE-ARCH/  online builds by mmdebstrap: archives/ and lists/
 *   <store>/.stamp/cache/apt/SUITE-ARCH/         derived builds: archives/ and lists/ of apt
 *   <store>/.stamp/cache/images/                 whole trees of online builds (image-cache.h)
 *   <store>/.stamp/cache/usage                   its size in bytes, as last counted (with the images')
 *
 * Each SUITE-ARCH directory is held with flock(LOCK_EX) by the build that uses it; what cleans or
 * trims the cache skips one that is held. Nothing in it is trusted: debootstrap checks every cached
 * .deb against the signed indices, and a derived build removes each one whose SHA256 is not what the
 * signed lists say (see transfer/template.c) before apt can take it. */

#define STORE_CACHE_DIR ".stamp/cache"
#define STORE_CACHE_USAGE_FILE "usage"

/* Open (making it, and .stamp, if missing) the cache directory of @store_fd. */
int store_cache_open(int store_fd);

/* Bytes the cache holds (allocated blocks; the image cache's entries as store_image_cache_count() counts
 * them), counted now. Blocking. */
uint64_t store_cache_count(int cache_fd);

/* Write @bytes as the cache's usage (replacing the file). */
int store_cache_write_usage(int cache_fd, uint64_t bytes);

/* The usage as last written; 0 if there is no cache or no usage file. A small read. */
uint64_t store_cache_read_usage(int store_fd);

/* Empty every SUITE-ARCH directory and remove every cached image that no build holds; *ret_freed the bytes that went,
 * *ret_busy how many were held and kept. Updates the usage file. Blocking. */
int store_cache_clean(int store_fd, uint64_t *ret_freed, unsigned *ret_busy);

/* Remove the oldest .debs of the directory @dir_fd (held by the caller), below it up to two levels,
 * until the package cache at @cache_fd (without the image cache) holds at most @max bytes. Updates the usage file.
 * Blocking. */
int store_cache_trim(int cache_fd, int dir_fd, uint64_t max);
