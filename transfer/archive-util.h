/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

#include <archive.h>
#include <archive_entry.h>
#include <pthread.h>
#include <stdatomic.h>

#include "job-child.h"
#include "formats.h"

/* The tar work of ExportTar, ImportTar and PullTar, done with libarchive in stamp-transfer. */

static inline void archive_read_freep(struct archive **a)
{
        if (*a)
                archive_read_free(*a);
}
static inline void archive_write_freep(struct archive **a)
{
        if (*a)
                archive_write_free(*a);
}
static inline void archive_entry_freep(struct archive_entry **e)
{
        if (*e)
                archive_entry_free(*e);
}

/* Why an entry named @path (as stored in the archive) would land outside the image: an absolute path
 * or a ".." component; NULL if it stays inside. Also used for the targets of hard links. */
const char *archive_path_unsafe_reason(const char *path);
/* Why a symlink at @path pointing to @target leads out of the image: a relative target that climbs
 * above the image's root; NULL if it does not. Absolute targets are fine: they resolve in the image's
 * root when the container runs, and nothing here follows them. */
const char *archive_symlink_unsafe_reason(const char *path, const char *target);

/* The checks a tar import makes on each entry (names, link targets, file types), for other readers of
 * tar streams (OCI layers): 0, or -EBADMSG with a sentence in @err. */
int archive_entry_check_safe(struct archive_entry *e, char *err, size_t errlen);

/* How deep the count of a tree goes; what lies deeper is left out of the estimate. */
#define TREE_COUNT_MAX_DEPTH 128
/* How long an export runs before its tree is counted. */
#define TREE_COUNT_DELAY_MSEC 500

/* The bytes of file data an export will read (holes not counted), for its progress: known at once
 * (quota groups), or counted by a thread of its own once the export has run for
 * TREE_COUNT_DELAY_MSEC, so the walk costs the export no time; 0 (no progress said) until then. */
typedef struct TreeTotal {
        _Atomic uint64_t bytes;
        _Atomic bool stop;
        int tree_fd; /* borrowed: open until tree_total_stop() */
        pthread_t thread;
        bool counting;
} TreeTotal;

/* Set the total to @known, or, if that is 0 or UINT64_MAX (unknown), start counting the tree at
 * @tree_fd, which must stay open until tree_total_stop(). Without a count (it could not start)
 * progress is simply not said. */
int tree_total_start(TreeTotal *t, int tree_fd, uint64_t known);
/* End the count if it still runs. */
void tree_total_stop(TreeTotal *t);

/* Write the tree at @tree_fd as a tar stream in @format to @out_fd, reporting progress against
 * @total. If @tree_fd is a read-only snapshot of the live tree at @live_fd (else -1), the data of
 * big files is read through the live tree where its extents show it is still the snapshot's (see
 * archive-util.c). Returns 0 or a negative errno, with a sentence for the caller in @err: -EPIPE
 * when the reader went away. Changes the working directory. */
int archive_write_tree(JobChild *c, int tree_fd, int live_fd, int out_fd, ExportFormat format, const TreeTotal *total,
                       char *err, size_t errlen);

typedef struct ExtractResult {
        bool input_ended; /* the input reached its end (a writer on the other side is done) */
        uint64_t entries;
} ExtractResult;

/* Read a tar stream (any compression libarchive knows) from @in_fd and extract it into the working
 * directory, which is the root of the new image. @in_size (0: unknown) drives progress. Refuses with
 * -EBADMSG what would land outside the image, what is not a tar archive and an archive that ends
 * early. Returns 0 or a negative errno, with a sentence for the caller in @err. */
int archive_extract_stream(JobChild *c, int in_fd, uint64_t in_size, ExtractResult *result, char *err, size_t errlen);

/* If the tree at @root_fd is a single directory holding an OS tree (the layout of many root
 * tarballs), move that directory's contents up and drop it. Returns 1 if it did, 0 if not. */
int tree_flatten_single_dir(int root_fd);
