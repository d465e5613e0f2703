/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

#include <glib.h>

#include "owners.h"
#include "util.h"

/* Snapshots of an image: read-only btrfs snapshots kept in the store's metadata directory, where
 * neither the image list nor machinectl looks (a hidden name), nor anything inside an image:
 *
 *   <store>/.stamp/snapshots/<identity>/<snapshot>   one read-only subvolume per snapshot
 *   <store>/.stamp/restoring/<image name>            a restore in progress (see below)
 *
 * <identity> is the image's as owners.h keeps it (its subvolume's UUID), not its name: a rename
 * carries the snapshots along with nothing to do. A restore gives the image a new subvolume, hence a
 * new identity; it moves the directory to the new one right after the image is swapped in.
 *
 * A restore, crash-safe at every step: a writable snapshot of the snapshot is made under a hidden
 * temporary name; a journal (old identity, new identity, owner) is written; the two subvolumes are
 * swapped with one RENAME_EXCHANGE, so the name always holds either the old tree or the new one;
 * the snapshot directory and the owner record move to the new identity; the journal goes; last, the
 * old tree (now under the temporary name) is deleted. After a crash, store_snapshots_recover() reads
 * the journal and finishes or forgets the move according to which tree the name holds, and the
 * leftover temporary is removed with the others.
 *
 * A restored image's btrfs parent is a hidden snapshot, not the template it was cloned from: the
 * origin it had before its first restore is kept beside its snapshots, in ".origin" (the parent's
 * UUID in hex), and moves with them. */

#define STORE_SNAPSHOTS_DIR STORE_META_DIR "/snapshots"
#define STORE_RESTORING_DIR STORE_META_DIR "/restoring"

/* The environment variable that makes a restore stop for ever at a named point
 * ("restore-before-exchange", "restore-after-exchange"), so that a test can kill stampd there. */
#define STORE_TEST_PAUSE_ENV "STAMPD_TEST_PAUSE"

typedef struct StoreSnapshot {
        char *name;
        uint64_t crtime_usec;
        uint64_t subvol_id;
} StoreSnapshot;

void store_snapshot_free(void *p);

/* The snapshots of the image at @image_fd (a GPtrArray of StoreSnapshot*, sorted by creation time),
 * empty if it has none. Quick: a directory listing and one ioctl per snapshot. */
int store_snapshots_list(int store_fd, int image_fd, GPtrArray **ret);
/* How many snapshots the image at @image_fd has (0 if none or unknown). */
unsigned store_snapshots_count(int store_fd, int image_fd);
/* 1 if the image at @image_fd has a snapshot @snapshot, 0 if not, negative errno if it cannot tell. */
int store_snapshot_exists(int store_fd, int image_fd, const char *snapshot);
/* The open directory of the snapshots of the image at @image_fd; -ENOENT if it has none. */
int store_snapshots_open(int store_fd, int image_fd);

/* The origin an image had before it was first restored: 1 and its subvolume UUID in @ret, or 0. */
int store_snapshots_origin(int store_fd, int image_fd, uint8_t ret[16]);

/* The blocking acts (worker threads, a machine's supervisor). 0 or negative errno with a sentence in
 * @err, as store.h's. */
int store_snapshot_create(int store_fd, const char *name, const char *snapshot, char *err, size_t errlen);
int store_snapshot_remove(int store_fd, const char *name, const char *snapshot, char *err, size_t errlen);
int store_snapshot_restore(int store_fd, const char *name, const char *snapshot, char *err, size_t errlen);
/* Every snapshot of image @name out of sight at once, then deleted: before the image itself goes. */
int store_snapshots_remove_all(int store_fd, const char *name, char *err, size_t errlen);

/* At start, before store_owners_clean() and with the store's temporaries still there: finish or
 * forget the restores a crash interrupted; remove snapshot directories left half-removed. */
void store_snapshots_recover(int store_fd);
