/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

#include <sys/types.h>

#include "util.h"

/* Who made each image through stampd. The records live in the store's metadata directory, which
 * only stampd writes and which is no image (its name is hidden):
 *
 *   <store>/.stamp/          0700 root
 *   <store>/.stamp/owners/   one file per image name: "<uid> <identity>\n"
 *
 * Nothing that runs inside a machine and nothing inside an imported archive can reach them, unlike
 * an xattr on the image's own root. The identity is that of the image the record was written for
 * (a btrfs subvolume's UUID; a directory's inode number and birth time): a record is believed only
 * while the image under its name still has that identity, so an image made by hand, by machined
 * or after a crash never inherits a stale record. An image without a valid record belongs to root.
 *
 * Every change is ordered so that a crash at any moment leaves no image without its record: a
 * record is written before its image is renamed into sight, moves by copy-rename-remove around an
 * image's rename, and goes only after its image is out of sight. What a crash leaves over is a
 * record without an image, which store_owners_clean() removes at the next start. */

#define STORE_META_DIR ".stamp"
#define STORE_OWNERS_DIR STORE_META_DIR "/owners"
#define STORE_IDENTITY_MAX 64

/* The identity of the image at @image_fd, as records keep it. */
int store_image_identity(int image_fd, char ret[static STORE_IDENTITY_MAX]);

/* Open (making it first if @create) the owners directory, checking it and the metadata directory are
 * root's, mode 0700, no links. Returns an O_DIRECTORY fd; -ENOENT if missing and not @create. Made only
 * with the first record, so a store that never had an image made through stampd has none. */
int store_open_owners(int store_fd, bool create);

/* Record @uid as the owner of the image at @image_fd that is (or is about to be renamed to) @name. */
int store_owner_write(int store_fd, const char *name, int image_fd, uid_t uid);

/* The owner of the image @name at @image_fd: its recorded uid, or 0 (root) where there is no valid
 * record. Never fails: what cannot be read is root's. */
uid_t store_owner_read(int store_fd, const char *name, int image_fd);

/* Before renaming image @name to @new_name: a copy of @name's record under @new_name. After it:
 * store_owner_remove(@name). */
int store_owner_copy(int store_fd, const char *name, const char *new_name);

/* Drop the record of @name (after its image went out of sight). Missing is fine. */
int store_owner_remove(int store_fd, const char *name);
/* Drop the record of @name unless the image now named @name is the one it was written for. */
int store_owner_remove_if_stale(int store_fd, const char *name);

/* Drop every record whose image is gone or is another image now. Blocking; run at start. */
void store_owners_clean(int store_fd);
