/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

#include "util.h"

/* Acts on the image store through its directory fd, shared by stampd and stamp-transfer. Nothing here
 * knows the daemon or the bus. */

/* xattr on an image's root holding its recipe (GVariant text of an a{sv}): written by a template
 * build (transfer/template.c), read by stampd. */
#define RECIPE_XATTR "user.stamp.recipe"

/* Prefix of hidden temporaries in the store; removed when the daemon starts. */
#define STORE_TEMP_PREFIX ".#stamp-"

/* A fresh hidden name for something being made in the store from @name. */
char *store_temp_name(const char *name);
/* Remove what a crash left behind: every hidden temporary of the store. Blocking; run at start. */
void store_remove_temporaries(int store_fd, bool is_btrfs);

/* The blocking acts on disk. They run in stampd's worker threads (operation.c) or in stamp-transfer, never on the event
 * loop. Each returns 0 or a negative errno, with a sentence for the caller in @err. */
typedef enum StoreCloneFlags {
        STORE_CLONE_READ_ONLY = 1 << 0,
        STORE_CLONE_FRESH_IDENTITY = 1 << 1, /* see store_reset_identity() */
} StoreCloneFlags;
/* The clone's owner is recorded as @owner (see owners.h); UID_INVALID records none (root's). */
int store_clone_image(int store_fd, bool is_btrfs, const char *source, const char *new_name, StoreCloneFlags flags,
                      uid_t owner, char *err, size_t errlen);
int store_remove_image(int store_fd, bool is_btrfs, const char *name, char *err, size_t errlen);
int store_rename_image(int store_fd, const char *name, const char *new_name, char *err, size_t errlen);
int store_set_image_read_only(int store_fd, const char *name, bool read_only, char *err, size_t errlen);
/* Mark the image at @fd read-only or writable: the btrfs flag, or the immutable flag of a directory. */
int store_set_read_only_fd(int fd, bool read_only);
/* Make the empty tree of a new image at @name below @store_fd: a subvolume where the store is btrfs
 * and one can be made, else a directory (mode 0755). Returns 1 for a subvolume, 0 for a directory,
 * negative errno if neither could be made; *ret_subvolume_error, if given, is the errno of a failed
 * attempt at a subvolume (0 if none failed). */
int store_make_tree(int store_fd, bool is_btrfs, const char *name, int *ret_subvolume_error);

/* Below this much free space, a tool that failed on the store most likely failed for want of space. */
#define STORE_FULL_BELOW (UINT64_C(4) << 20)
/* Whether the file system of @fd has less than STORE_FULL_BELOW free. */
bool store_is_full(int fd);

/* Remove a tree at @name below @store_fd, whatever it is (subvolume or directory). */
int store_remove_tree(int store_fd, const char *name);
/* The same, retrying for up to 5 s while it is busy: the mounts of a namespace that used it (a
 * container's, a job's) may take a moment to go after its last process ended. Blocking. */
int store_remove_tree_retrying(int store_fd, const char *name);

/* The pool is mounted nosuid,nodev, so that nothing a machine made works as such on the host (see
 * pool_mount()). Inside a machine, and for a template build's tools, its tree should work as any root
 * file system: give @path a bind mount of its own without those two flags. Only in a private mount
 * namespace (a machine's supervisor, a job): the host never sees it. 1 if remounted, 0 if there was
 * nothing to lift, negative errno (and errno set) on failure. */
int store_mount_allow_dev_suid(const char *path);
