/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

#include <glib.h>

#include "job-child.h"

/* The OCI side of stamp-transfer: PullImage and PushImage against a registry that speaks the
 * distribution API v2 (oci.c), the registry's HTTP with its authentication (oci-registry.c), the
 * content-addressed blob cache in the store (oci-cache.c) and the application of a layer with its
 * whiteouts (oci-layer.c). */

/* The media types stamp reads and writes. */
#define OCI_MANIFEST_TYPE "application/vnd.oci.image.manifest.v1+json"
#define OCI_INDEX_TYPE "application/vnd.oci.image.index.v1+json"
#define OCI_CONFIG_TYPE "application/vnd.oci.image.config.v1+json"
#define OCI_LAYER_TYPE "application/vnd.oci.image.layer.v1.tar"
#define DOCKER_MANIFEST_TYPE "application/vnd.docker.distribution.manifest.v2+json"
#define DOCKER_LIST_TYPE "application/vnd.docker.distribution.manifest.list.v2+json"
#define DOCKER_CONFIG_TYPE "application/vnd.docker.container.image.v1+json"

/* Annotations (and config labels) stamp writes on what it pushes. */
#define OCI_ANNOTATION_KIND "io.stamp.kind" /* "template" or "clone" */
#define OCI_ANNOTATION_NAME "io.stamp.name"
#define OCI_ANNOTATION_ORIGIN "io.stamp.origin"
#define OCI_ANNOTATION_UUID "io.stamp.uuid"
#define OCI_ANNOTATION_ORIGIN_UUID "io.stamp.origin-uuid"
#define OCI_ANNOTATION_RECIPE "io.stamp.recipe"

/* Caps on what a registry can make a pull hold or do. */
#define OCI_MANIFEST_MAX (4 * 1024 * 1024)
#define OCI_CONFIG_MAX (8 * 1024 * 1024)
#define OCI_LAYERS_MAX 256
#define OCI_TOKEN_MAX (64 * 1024)

/* "sha256:<64 lowercase hex>" */
bool oci_digest_is_valid(const char *d);

/* ---- oci-registry.c ---- */

typedef struct Registry Registry;

typedef struct RegistryCredentials {
        char *user;
        char *password;
} RegistryCredentials;

/* @host is "host[:port]"; @credentials may be NULL (anonymous and token auth only). */
int registry_new(JobChild *c, const char *host, const char *repository, bool insecure, bool push,
                 const RegistryCredentials *credentials, Registry **ret);
Registry *registry_free(Registry *r);
static inline void registry_freep(Registry **r)
{
        registry_free(*r);
}

/* Bytes received and sent, for progress and for tests that count what a pull fetched. */
uint64_t registry_bytes_received(const Registry *r);
void registry_set_progress(Registry *r, uint64_t total, uint64_t done);

/* GET a manifest by tag or digest; its body, media type and (if @ret_digest and the registry said
 * one) the digest the registry gives for it. Fails with ENOENT for a missing one. */
int registry_get_manifest(Registry *r, const char *reference, char **ret_body, size_t *ret_size, char **ret_type,
                          char **ret_digest);
/* GET blob @digest of @size bytes into @fd, verifying size and digest (EBADMSG if wrong); the bytes go
 * to @tee_fd too as they come (unverified: its reader must wait for the verdict), unless it is -1 or
 * its reader stops taking them. */
int registry_get_blob(Registry *r, const char *digest, uint64_t size, int fd, int tee_fd);
/* GET a small blob into memory, verified. */
int registry_get_blob_small(Registry *r, const char *digest, uint64_t size, size_t max, char **ret, size_t *ret_size);
/* 1 if the registry has blob @digest, 0 if not. */
int registry_has_blob(Registry *r, const char *digest);
/* Upload @size bytes from @fd (or @data if @fd < 0) as blob @digest. */
int registry_put_blob(Registry *r, const char *digest, int fd, const void *data, uint64_t size);
int registry_put_manifest(Registry *r, const char *tag, const char *type, const char *body, size_t size);
/* A blob uploaded while it is being made, its digest known at its end only: a POST for where it
 * goes (begin), its bytes read from @fd (a pipe) to the end in one chunked PATCH (send: it touches
 * nothing of @r but its counters, and may run in a thread of its own while nothing else uses @r),
 * and a PUT naming the digest (finish). Failures are said. */
int registry_stream_begin(Registry *r, char **ret_url);
int registry_stream_send(Registry *r, const char *url, int fd, char **ret_url);
int registry_stream_finish(Registry *r, const char *url, const char *digest);

/* ---- oci-cache.c: <store>/.stamp/oci-blobs/sha256/<hex>, root's, 0700 ---- */

#define OCI_CACHE_DIR ".stamp/oci-blobs"

/* The cache's sha256 directory, made if missing and checked (root's, no links). */
int oci_cache_open(int store_fd);
/* An fd of cached blob @digest of @size bytes, verified again; -ENOENT if it is not there (or was
 * damaged, then it is removed). */
int oci_cache_open_blob(int cache_fd, const char *digest, uint64_t size);
/* Fetch @digest into the cache (through a hidden temporary) unless it is there; returns an fd of it
 * at offset 0. *ret_fetched says whether it was downloaded. Its bytes go to @tee_fd as well (if not
 * -1) as they come, or, if it was in the cache, once verified. Failures are said. */
int oci_cache_fetch(JobChild *c, Registry *r, int cache_fd, const char *digest, uint64_t size, int tee_fd,
                    bool *ret_fetched);
/* Add the file at @fd (a finished blob, hashed as @digest) to the cache under its digest. */
int oci_cache_add(int cache_fd, int fd, const char *digest);
/* Remove the least recently used blobs until the cache holds at most @max bytes, never those of
 * @keep (a NULL-terminated list of digests). */
void oci_cache_trim(int cache_fd, uint64_t max, char *const *keep);
/* sha256 of what @fd holds from offset 0, as "sha256:<hex>"; the file size too. */
int fd_sha256(int fd, char ret[static 72], uint64_t *ret_size);

/* ---- oci-layer.c ---- */

/* Apply the tar layer (any compression) of @size bytes read from @fd (a file at the layer's start or a
 * pipe) to the tree at the working directory, which is the image's root (chrooted): entries with the
 * checks of a tar import, then ".wh.NAME" removes NAME and ".wh..wh..opq" empties its directory of
 * what earlier layers put there. All @size bytes are read, and the SHA-256 of the uncompressed tar
 * is checked against @diff_id (the config's) on the way. -EBADMSG with a sentence in @err for a
 * hostile or damaged layer or one that is not its diff_id. */
int oci_layer_apply(JobChild *c, int fd, uint64_t size, const char *diff_id, char *err, size_t errlen);

/* ---- oci-cache.c: which layer an image of the store is, <store>/.stamp/oci-layers/<name> ----
 *
 * Written when a template is pushed or pulled: the layer it is, so that a clone's push reuses that
 * very blob (same digest, so the registry and every host that has the template share it) and a
 * clone's pull on a host that has the template snapshots it instead of fetching its layer. Believed
 * only while the image under the name still has the identity recorded (see owners.h). */

typedef struct OciLayerRecord {
        char digest[72];
        char diff_id[72];
        uint64_t size;
        char media_type[128];
} OciLayerRecord;

int oci_layer_record_write(int store_fd, const char *name, int image_fd, const OciLayerRecord *r);
/* The record of image @name at @image_fd; -ENOENT if none (or a stale one). */
int oci_layer_record_read(int store_fd, const char *name, int image_fd, OciLayerRecord *ret);
/* The read-only image of the store whose layer is @digest: its name and an fd; -ENOENT if none. */
int oci_layer_record_find(int store_fd, const char *digest, char **ret_name, int *ret_fd);

/* ---- oci-delta.c ---- */

/* Write the changes that turn the read-only subvolume @base_fd into the read-only subvolume
 * @image_fd (as btrfs sends them) as a tar layer to @out_fd: what was added or changed as entries,
 * what was removed as whiteouts. */
int oci_delta_write(JobChild *c, int base_fd, int image_fd, int out_fd, bool zstd, char *err, size_t errlen);
