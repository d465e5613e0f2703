/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

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
 * a negative errno: -EINVAL if either is not a read-only subvolume, -EBADMSG if the stream could not be read. */
int btrfs_diff(int base_fd, int image_fd, btrfs_diff_cb cb, void *userdata);
