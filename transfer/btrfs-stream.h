/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* The header stamp puts before a btrfs send stream (ExportImage format "btrfs"), then the stream
 * itself, the whole compressed as a tar export would be. Text, so that `zstdcat F | head` tells what
 * a file is:
 *
 *   stamp-btrfs-stream 1
 *   name=web
 *   read-only=no
 *   parent=base                              (a delta only)
 *   parent-uuid=0123456789abcdef0123456789abcdef   (a delta only: what the receiver's copy of the
 *                                            parent must have as its uuid or received uuid)
 *   parent-transid=1234                      (a delta only: the transid of the parent's state, which the
 *                                            receiver's copy must be in; see btrfs_subvol_state())
 *   (an empty line)
 *
 * Lines of other keys are skipped (later versions may add some); a change that older readers must
 * not misread raises the version. */

#define STAMP_STREAM_MAGIC "stamp-btrfs-stream "
#define STAMP_STREAM_VERSION 1
/* The header's bytes at most, the empty line included. */
#define STAMP_STREAM_HEADER_MAX 4096

typedef struct StampStreamHeader {
        char name[65];
        bool read_only;
        bool delta;
        char parent[65];
        uint8_t parent_uuid[16];
        /* The state of the parent the delta was made against (btrfs_subvol_state()); 0 in streams of
         * stamp versions that did not say. */
        uint64_t parent_transid;
} StampStreamHeader;

/* The header's text in @buf (NUL-terminated); -ENOBUFS if it does not fit. */
int stamp_stream_header_format(const StampStreamHeader *h, char *buf, size_t size);

/* Parse the header at the start of @buf (@n bytes). Returns its length (through the empty line), 0
 * if @buf does not yet hold all of it (and may, at @n < STAMP_STREAM_HEADER_MAX), or -EBADMSG with a
 * reason in @err. */
int stamp_stream_header_parse(const char *buf, size_t n, StampStreamHeader *ret, char *err, size_t errlen);

/* Whether @buf (@n bytes, the start of a decompressed stream) begins like a stamp btrfs stream. */
bool stamp_stream_is_btrfs(const void *buf, size_t n);
