/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include "btrfs-send.h"
#include "job-child.h"

/* stamp's own receiver of btrfs send streams, for ImportImage. It applies the stream's commands to
 * the new image's subvolume @root_fd only: every path the stream names was checked by the reader
 * (relative, no "." or ".." component), is resolved beneath @root_fd without following any symlink
 * and without crossing a mount (openat2 RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_XDEV), and
 * is acted on with *at() calls from there; data is written only into regular files. Clones may read
 * from the new subvolume itself or from the delta's parent, nothing else. A symlink the stream leaves
 * pointing above the image's root (by its relative target) fails the stream, as in a tar import.
 *
 * Why not `btrfs receive --chroot`: it would need the tool and its parsing of hostile input in the
 * job, would find the parent by searching the whole file system for a uuid (not the one image the
 * header names), and creates the subvolume itself under a name the stream chooses. Here the reader
 * that checks every command is ours, the subvolume is the job's hidden temporary made beforehand,
 * and the job's chroot into it comes on top. */

typedef struct BtrfsReceiveArgs {
        JobChild *c;
        int root_fd;   /* the new subvolume: empty, or a writable snapshot of the parent */
        int parent_fd; /* the delta's parent (read-only), or -1 for a full stream */
        bool delta;
        uint8_t parent_uuid[16]; /* a delta's SNAPSHOT must name this parent */
        /* Progress: called every few commands, may be NULL. */
        void (*progress)(void *userdata);
        void *userdata;
} BtrfsReceiveArgs;

/* Apply the rest of the stream @r (its header read). On success *@ret_uuid and *@ret_ctransid are
 * what the stream's SUBVOL or SNAPSHOT command said of the sent subvolume, for its received uuid.
 * Returns 0, or -EBADMSG for a stream that is corrupt, truncated or reaches for what it may not (a
 * reason in @err), or another negative errno. */
int btrfs_receive(const BtrfsReceiveArgs *a, BtrfsSendReader *r, uint8_t ret_uuid[16], uint64_t *ret_ctransid,
                  char *err, size_t errlen);

/* Record @uuid / @ctransid as the received uuid of the subvolume @fd (BTRFS_IOC_SET_RECEIVED_SUBVOL),
 * so that later deltas made against the same sent subvolume find it. */
int btrfs_set_received(int fd, const uint8_t uuid[16], uint64_t ctransid);

/* The uuid a delta against the subvolume @fd names as its parent: its received uuid when it has one
 * (it came from elsewhere), else its own uuid, as the kernel's send does. */
int btrfs_subvol_stream_uuid(int fd, uint8_t ret[16]);

/* Whether the subvolume @fd is the one a delta naming @uuid wants: its uuid or its received uuid. */
int btrfs_subvol_matches_uuid(int fd, const uint8_t uuid[16]);
/* Which state of its content the subvolume @fd is in, the same on every store that has a copy of it:
 * for a received one the transid its sender had (stransid), -ESTALE if it changed here since it was
 * received (made writable and written to: its ctransid passed its rtransid); for any other its own
 * ctransid, which any change of its content raises. A delta records its parent's and applies only to a
 * copy in the same state. */
int btrfs_subvol_state(int fd, uint64_t *ret_transid);
