/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

#include <stdint.h>

#include <glib.h>

/* What changed between two read-only btrfs subvolumes, from btrfs's own knowledge: the kernel sends
 * the difference (BTRFS_IOC_SEND with @base_fd as parent, without file data) and the stream's commands
 * are followed, not the trees walked (only a renamed directory's contents are listed, as they moved).
 *
 * @change: 'A' added, 'M' modified (contents, mode, owner, extended attributes; times alone do not
 * count), 'D' deleted, 'T' the type changed (a file became a symlink, say). Paths are relative to the
 * subvolume's root, without a leading '/', in strcmp() order; directories are reported like files. A
 * rename is reported as D of the old path and A of the new one, and so is every entry beneath a renamed
 * directory. Returning a negative errno from the callback stops the walk with that error. */
typedef int (*btrfs_diff_cb)(char change /* 'A','M','D','T' */, const char *path, void *userdata);

/* The changes that turn the read-only subvolume @base_fd into the read-only subvolume @image_fd
 * (callers that have a writable image take a temporary read-only snapshot first). Needs CAP_SYS_ADMIN;
 * blocks: for a worker, a helper or an operation child. The send runs in a child process. Returns 0 or
 * a negative errno: -EINVAL if either is not a read-only subvolume, -EBADMSG if the stream could not be read,
 * -E2BIG if the two differ in more than a million objects. */
int btrfs_diff(int base_fd, int image_fd, btrfs_diff_cb cb, void *userdata);

/* The same changes found without the kernel's send, when @image_fd is a snapshot of @base_fd (or @base_fd
 * of @image_fd) and the older of the two is read-only and unchanged since: a search of the metadata
 * leaves the younger one rewrote since it was made (BTRFS_IOC_TREE_SEARCH_V2 with a minimum transid),
 * compared item by item with the other's (store/btrfs-tree-diff.c). Neither needs to be read-only, as
 * long as the younger is not being changed meanwhile. Needs CAP_SYS_ADMIN; blocks. Returns -ENOTTY
 * before reporting anything when it does not apply (not snapshot and ancestor, the ancestor changed or
 * is writable, a nested subvolume in the way): the caller then falls back to btrfs_diff(). Same report,
 * same errors otherwise. */
int btrfs_tree_diff(int base_fd, int image_fd, btrfs_diff_cb cb, void *userdata);

/* With the same search, how many bytes of file data @image_fd, a snapshot of @base_fd, has that
 * @base_fd does not (what a send against @base_fd writes, but for its commands): an estimate for the
 * progress of that send. -ENOTTY where btrfs_tree_diff() does not apply. */
int btrfs_tree_diff_data_bytes(int base_fd, int image_fd, uint64_t *ret);

/* Shared by both: everything beneath the directory @path of @root_fd added to @set (g_free'd keys), and
 * the final report from the paths that were there before (@had), are there now (@now), or were changed
 * in place (@modified). */
int btrfs_diff_walk_into(int root_fd, const char *path, GHashTable *set, int depth);
int btrfs_diff_report_sets(int base_fd, int image_fd, GHashTable *had, GHashTable *now, GHashTable *modified,
                           btrfs_diff_cb cb, void *userdata);
