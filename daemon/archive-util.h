/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

#include <archive.h>
#include <archive_entry.h>

#include "job-child.h"
#include "tar-util.h"

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

/* Write the tree at @tree_fd as a tar stream in @format to @out_fd, reporting progress against
 * @total_bytes (0: unknown). Returns 0 or a negative errno, with a sentence for the caller in @err:
 * -EPIPE when the reader went away. Changes the working directory. */
int archive_write_tree(JobChild *c, int tree_fd, int out_fd, ExportFormat format, uint64_t total_bytes, char *err,
                       size_t errlen);

/* Bytes of file data below @tree_fd (holes not counted), for progress; 0 if it cannot tell. */
uint64_t tree_count_bytes(int tree_fd);

typedef struct ExtractResult {
        bool input_ended; /* the input reached its end (a writer on the other side is done) */
        uint64_t entries;
} ExtractResult;

/* Read a tar stream (any compression libarchive knows) from @in_fd and extract it into the working
 * directory, which is the root of the new image. @in_size (0: unknown) drives progress. Refuses with
 * -EBADMSG what would land outside the image, what is not a tar archive and an archive that ends
 * early. Returns 0 or a negative errno, with a sentence for the caller in @err. */
int archive_extract_stream(JobChild *c, int in_fd, uint64_t in_size, ExtractResult *result, char *err,
                           size_t errlen);

/* If the tree at @root_fd is a single directory holding an OS tree (the layout of many root
 * tarballs), move that directory's contents up and drop it. Returns 1 if it did, 0 if not. */
int tree_flatten_single_dir(int root_fd);
