/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

#include <limits.h>
#include <stdbool.h>
#include <stdint.h>

/* stampd's configuration file, /etc/stamp/stampd.conf (GKeyFile, see stampd.conf(5)); stampd --config
 * reads another. A missing file is the defaults; a key with a value that cannot be read is reported
 * and keeps its default, so that a typo never leaves the service unreachable. */

#define SETTINGS_DEFAULT_IMAGES_PER_USER 32
/* What callers can make stampd hold at once, in all and per user (each of root's connections
 * counting as a user of its own): jobs, machines, short acts on disk. */
#define SETTINGS_DEFAULT_JOBS 16
#define SETTINGS_DEFAULT_JOBS_PER_USER 4
#define SETTINGS_DEFAULT_MACHINES 64
#define SETTINGS_DEFAULT_MACHINES_PER_USER 16
#define SETTINGS_DEFAULT_OPERATIONS 64
#define SETTINGS_DEFAULT_OPERATIONS_PER_USER 16
/* Snapshots one image may have (SnapshotsPerImage=). */
#define SETTINGS_DEFAULT_SNAPSHOTS_PER_IMAGE 16
/* Bytes of layers the OCI blob cache in the store keeps (LRU) after a pull. */
#define SETTINGS_DEFAULT_BLOB_CACHE_BYTES (UINT64_C(10) << 30)
/* Registry credentials (stampd.conf(5), [Registries] CredentialsFile=): read by the pull and push
 * jobs only, never by the daemon. */
#define SETTINGS_DEFAULT_REGISTRY_CREDENTIALS "/etc/stamp/registries.conf"
/* The package cache of template builds, <store>/.stamp/cache: a bookworm minbase is ~70 MiB of .debs. */
#define SETTINGS_DEFAULT_PACKAGE_CACHE (UINT64_C(2) << 30)
/* The image cache of online template builds (store/image-cache.h): whole trees, ~200 MiB each for a
 * bookworm minbase, most of it shared with the templates made from them. */
#define SETTINGS_DEFAULT_TEMPLATE_CACHE_IMAGES 4
/* Above this, a cap would let callers hold more than the daemon is built for (fds, processes). */
#define SETTINGS_CAP_MAX 4096

typedef struct Settings {
        /* [Limits]: what one user (not root) may have in the store at once */
        unsigned images_per_user; /* UINT_MAX: no limit */
        uint64_t bytes_per_user;  /* UINT64_MAX: no limit */
        unsigned jobs_max, jobs_per_user_max;
        unsigned machines_max, machines_per_user_max;
        unsigned operations_max, operations_per_user_max;
        unsigned snapshots_per_image;
        uint64_t blob_cache_bytes;
        char registry_credentials[256]; /* [Registries] CredentialsFile= */
        uint64_t package_cache_max;     /* [Limits] PackageCacheBytes=: the template builds' package cache */
        uint64_t template_cache_images; /* [Limits] TemplateCacheImages=: trees the image cache keeps; 0: off */
} Settings;

void settings_defaults(Settings *s);

/* Read @path into @s (over the defaults). -ENOENT if it does not exist, which callers treat as
 * "defaults" for the default path and as an error for one named on the command line. */
int settings_load(Settings *s, const char *path);

/* "10G", "512M", "1T", "4096", "infinity" (base 1024) → bytes; -EINVAL if it is none of these. */
int parse_size(const char *s, uint64_t *ret);
