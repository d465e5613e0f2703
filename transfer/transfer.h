/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

#include "archive-util.h"
#include "job-args.h"

/* The bodies of the jobs, run by stamp-transfer (see stamp-transfer.c, and job-args.h for how the
 * daemon hands them their arguments). Each returns 0, or a negative errno after job_child_fail() said
 * why. */

/* CreateTemplate (template.c). */
int transfer_template(JobChild *c, const JobArgs *a);

typedef struct ExportArgs {
        const char *name;
        int image_fd;
        int out_fd;
        ExportFormat format;
        bool read_only;
        uint64_t usage; /* UINT64_MAX: unknown */
        bool snapshot;  /* export from a read-only snapshot, made as the job's temporary */
} ExportArgs;

int transfer_export(JobChild *c, const ExportArgs *a);

typedef struct ImportArgs {
        const char *name;
        int in_fd;
        bool read_only;
} ImportArgs;

int transfer_import(JobChild *c, const ImportArgs *a);

typedef struct PullArgs {
        const char *url;
        const char *sums_url;
        const char *file; /* the file name @url ends in, as SHA256SUMS names it */
        const char *name;
        bool verify;
        bool read_only;
} PullArgs;

int transfer_pull(JobChild *c, const PullArgs *a);

/* CopyToMachine and its kin (copy.c): JOB_COPY_TO or JOB_COPY_FROM. */
int transfer_copy(JobChild *c, const JobArgs *a);
/* PullImage and PushImage (oci.c). */
int transfer_pull_image(JobChild *c, const JobArgs *a);
int transfer_push_image(JobChild *c, const JobArgs *a);

/* Called once the stream is extracted, or has failed with @result (then @err says why). Returns 0 to
 * go on (on failure: @err is the job's error), > 0 when the job fails for a reason someone else has
 * already reported, or a negative errno after job_child_fail(). */
typedef int (*ImportFinishFn)(JobChild *c, int result, const ExtractResult *extract, void *userdata);

/* Make the job's hidden temporary in the store, extract @in_fd into it, bring a one-directory layout
 * to the top, mark it read-only if asked, and rename it to @name. On failure the temporary stays for
 * the job's parent to remove. */
int import_stream_into_store(JobChild *c, int in_fd, uint64_t in_size, const char *name, bool read_only,
                             ImportFinishFn finish, void *userdata);

/* ExportImage and ImportImage (export-image.c, import-image.c): a tar archive as ExportTar and
 * ImportTar make and read, or a btrfs send stream behind a header of stamp's own (btrfs-stream.h). */
int transfer_export_image(JobChild *c, const JobArgs *a);
int transfer_import_image(JobChild *c, const JobArgs *a);
