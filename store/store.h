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

/* The blocking acts on disk. They run in stampd's worker threads (operation.c) or in stamp-transfer, never on the event loop.
 * Each returns 0 or a negative errno, with a sentence for the caller in @err. */
int store_clone_image(int store_fd, bool is_btrfs, const char *source, const char *new_name, bool read_only,
                    char *err, size_t errlen);
int store_remove_image(int store_fd, bool is_btrfs, const char *name, char *err, size_t errlen);
int store_rename_image(int store_fd, const char *name, const char *new_name, char *err, size_t errlen);
int store_set_image_read_only(int store_fd, const char *name, bool read_only, char *err, size_t errlen);
/* Mark the image at @fd read-only or writable: the btrfs flag, or the immutable flag of a directory. */
int store_set_read_only_fd(int fd, bool read_only);
/* Remove a tree at @name below @store_fd, whatever it is (subvolume or directory). */
int store_remove_tree(int store_fd, const char *name);
