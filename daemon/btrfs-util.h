/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

#include <stdbool.h>
#include <stdint.h>

/* Checks and the few btrfs ioctls libbtrfsutil does not wrap (quota groups, resize). */

int fd_is_btrfs(int fd);
/* > 0 if @fd is the root directory of a btrfs subvolume. */
int fd_is_subvolume(int fd);

int btrfs_quota_enable(int fd);
/* > 0 if quota groups are enabled on the filesystem of @fd. */
int btrfs_quota_is_enabled(int fd);
/* Referenced and exclusive bytes of the level-0 quota group of @subvol_id. -ENOENT if none. */
int btrfs_qgroup_usage(int fd, uint64_t subvol_id, uint64_t *ret_referenced, uint64_t *ret_exclusive);
/* Grow the filesystem of @fd to the size of its (only) device. */
int btrfs_resize_max(int fd);
