/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

#include "util.h"

/* What a job is started with: one struct per job type, encoded by stampd and decoded by
 * stamp-transfer in this one place, with the job's fds.
 *
 * stampd fills a JobArgs, job_args_encode() turns it into a GVariant "(sa{sv})" (the verb and one
 * entry per field that is set) written to a sealed memfd, and collects the fds the fields name;
 * the variant holds each fd as a handle, an index into that list. stampd then executes
 * stamp-transfer with
 *
 *   fd 3  the job's socket to the daemon (job-child.h)
 *   fd 4  the image store (O_DIRECTORY)
 *   fd 5  the sealed memfd of the arguments
 *   fd 6… the fds of the list, in its order
 *
 * and nothing in argv but the verb and the image's name: the arguments may hold secrets (a pull's
 * URL, a mirror's credentials, a root password hash), and any local user can read a process's
 * command line. stamp-transfer decodes the memfd with job_args_decode(), which refuses an unknown
 * verb, an unknown key, a value of the wrong type, a missing required field and a handle that names
 * no open fd.
 *
 * A new job type is a JobType, a struct here, and its row of fields in job-args.c. */

#define JOB_ARGS_FD_COMM 3
#define JOB_ARGS_FD_STORE 4
#define JOB_ARGS_FD_ARGS 5
#define JOB_ARGS_FD_FIRST 6
/* fds one job may be handed (beyond the three above). */
#define JOB_ARGS_FDS_MAX 4
/* Bytes of the encoded arguments; far above what the daemon's own caps allow. */
#define JOB_ARGS_SIZE_MAX (1024 * 1024)

typedef enum {
        JOB_CREATE_TEMPLATE,
        JOB_EXPORT_TAR,
        JOB_IMPORT_TAR,
        JOB_PULL_TAR,
        JOB_EXPORT, /* ExportImage: a tar archive or a btrfs send stream */
        JOB_IMPORT, /* ImportImage: either, told apart by content */
        JOB_COPY_TO,
        JOB_COPY_FROM,
        JOB_PULL_IMAGE,
        JOB_PUSH_IMAGE,
        _JOB_TYPE_MAX,
        /* No job of its own: what stampd runs after a job that failed or was canceled, to remove the
         * temporary it left. */
        JOB_REMOVE_TEMPORARY = _JOB_TYPE_MAX,
        _JOB_VERB_MAX,
        _JOB_TYPE_INVALID = -1,
} JobType;

typedef struct TemplateJobArgs {
        char *suite;
        char *variant;
        char *arch; /* NULL: the host's */
        char **include;
        char *mirror;      /* NULL: the host's; never with credentials: debootstrap and the recipe see it */
        char *mirror_user; /* the mirror's credentials, percent-decoded; NULL if it has none */
        char *mirror_password;
        char *keyring; /* online: the keyring debootstrap must verify the archive against */
        char *root_password_hashed;
        bool bootable;
        int package_tarball; /* -1: an online build */
        char *from;          /* a derived build: the template it starts from (its suite is the parent's) */
        uint64_t cache_max;  /* the package cache's cap in bytes; UINT64_MAX: none */
        /* online: build anew even where the image cache has the tree (store/image-cache.h) */
        bool image_cache_skip;
        /* how many trees the image cache keeps; 0: none (the cache is off) */
        uint64_t image_cache_max;
} TemplateJobArgs;

typedef struct ExportJobArgs {
        char *format; /* export_format_to_string() */
        bool read_only;
        uint64_t usage; /* UINT64_MAX: unknown */
        bool snapshot;  /* export from a read-only snapshot, made as the job's temporary */
        int image_fd;
        int out_fd;
        /* ExportImage only: */
        bool btrfs;    /* a btrfs send stream (else a tar archive) */
        char *parent;  /* a delta against this read-only image; NULL: a full stream */
        int parent_fd; /* that image, opened by stampd */
} ExportJobArgs;

typedef struct ImportJobArgs {
        bool read_only;
        int in_fd;
} ImportJobArgs;

typedef struct PullJobArgs {
        char *url;
        char *sums_url;
        char *file; /* the file name @url ends in, as SHA256SUMS names it */
        bool verify;
        bool read_only;
} PullJobArgs;

/* A copy into (JOB_COPY_TO) or out of (JOB_COPY_FROM) a machine or an image: transfer/copy.c. */
typedef struct CopyJobArgs {
        char *path;    /* absolute, resolved in the root of @root_fd */
        int root_fd;   /* the machine's root (its /proc/PID/root) or the image's directory */
        int userns_fd; /* the machine's user namespace, joined for the copy; -1 if it has none */
        int data_fd;   /* the caller's tar stream: read by a copy in, written by a copy out */
} CopyJobArgs;
/* PullImage and PushImage (transfer/oci.c). */
typedef struct OciJobArgs {
        char *registry; /* host[:port] */
        char *repository;
        char *reference;        /* a tag, or (pulls) a "sha256:" digest */
        char *credentials_file; /* read by the helper: the credentials never pass through the daemon */
        char *compression;      /* push: "gzip" or "zstd" */
        bool insecure;
        bool read_only;     /* pull */
        bool snapshot;      /* push from a read-only snapshot, made as the job's temporary */
        uint64_t cache_max; /* bytes the blob cache may keep */
        int image_fd;       /* push */
        int base_fd;        /* push of a clone: its template, whose layer comes first */
        /* push: stamp's annotations */
        char *kind;
        char *origin;
        char *uuid;
        char *origin_uuid;
        char *recipe;
} OciJobArgs;

typedef struct JobArgs {
        JobType type;
        char *name;       /* the image the job reads or makes */
        char *store_path; /* for tools that take a path (debootstrap) */
        bool store_is_btrfs;
        char *temp_name; /* the job's hidden temporary in the store, or NULL */
        uint64_t owner;  /* the uid the image a job makes is recorded for (owners.h); UINT64_MAX: none */

        /* The one of @type; the others stay empty. */
        TemplateJobArgs template;
        ExportJobArgs export;
        ImportJobArgs import;
        PullJobArgs pull;
        CopyJobArgs copy;
        OciJobArgs oci;
} JobArgs;

/* Empty arguments of @type: every fd -1, usage unknown. */
void job_args_init(JobArgs *a, JobType type);
/* Free the strings and close the fds (a JobArgs owns its fds on both sides). */
void job_args_done(JobArgs *a);

/* stamp-transfer's verb for @type ("template", "export", ...). */
const char *job_verb_to_string(JobType type);

/* Returns the sealed memfd, and in @fds (at least JOB_ARGS_FDS_MAX) the fds to pass after it, still
 * owned by @a. */
int job_args_encode(const JobArgs *a, int fds[], size_t *ret_n_fds);
/* Read the arguments from @args_fd, with the fds from JOB_ARGS_FD_FIRST on; the fds become @ret's
 * (close-on-exec). -EBADMSG if they are not what job_args_encode() makes. */
int job_args_decode(int args_fd, JobArgs *ret);

/* What a Debian architecture name and a mirror of a template look like, for the daemon's checks
 * and the helper's choice of the host's own. */
bool debian_arch_is_valid(const char *s);
/* An http:// or https:// URL with nothing in it that could break a command line or a config line;
 * it may still carry user:password@. */
bool debian_mirror_is_valid(const char *s);
