/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

#include <stdbool.h>
#include <stddef.h>

/* The stream of a copy into or out of a machine or an image (CopyToMachine and its kin), written and
 * read by stamp-transfer inside the machine and by stampctl on the host: a tar stream (pax,
 * uncompressed) whose first entry is the thing copied (a file or a directory) and whose other
 * entries lie below it, their first component being the first entry's name. Owners are numeric,
 * modes, times, xattrs and ACLs kept. Linked by stamp-transfer and stampctl only: libarchive and
 * libc, nothing of the daemon. */

/* How long a name a copy's top may have, and how deep a path below it. */
#define COPY_NAME_MAX 255

/* Write what @src_fd is open on (a regular file or a directory, O_RDONLY) to @out_fd, the top entry
 * named @top_name. A directory is walked from the working directory, which this changes, without
 * following symlinks or crossing into other file systems. Returns 0 or a negative errno with a
 * sentence in @err: -EPIPE when the reader went away. */
int copy_stream_write(int src_fd, const char *top_name, int out_fd, char *err, size_t errlen);

/* Read such a stream from @in_fd and make its tree in the directory @dir_fd (the working directory
 * is changed to it), under @name or, if NULL, under the name the stream gives its top. The tree is
 * made under a hidden name and renamed into place only when complete (-EEXIST if something of that
 * name is there by then); on failure nothing of it is left. Paths that would leave the tree, writes
 * through symlinks and a top that is not a single name are -EBADMSG. Owners are set only if
 * @keep_owners. Returns 0 or a negative errno with a sentence in @err. */
int copy_stream_extract(int in_fd, int dir_fd, const char *name, bool keep_owners, char *err, size_t errlen);

/* A file descriptor that, once readable, ends copy_stream_extract() with -ECANCELED (the tree it made
 * removed): stamp-transfer's signalfd for a cancel's SIGTERM. -1 (the default): none. */
void copy_stream_set_cancel_fd(int fd);

/* Whether @name may be a copy's top: one path component, not "." or "..", at most COPY_NAME_MAX. */
bool copy_name_is_valid(const char *name);
