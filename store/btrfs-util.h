/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include <glib.h>

/* Checks and the few btrfs ioctls libbtrfsutil does not wrap (quota groups, resize). */

int fd_is_btrfs(int fd);
/* > 0 if @fd is the root directory of a btrfs subvolume. */
int fd_is_subvolume(int fd);

/* What one BTRFS_IOC_GET_SUBVOL_INFO tells of the subvolume whose root is @fd. */
typedef struct BtrfsSubvolInfo {
        uint64_t id;
        bool read_only;
        uint8_t uuid[16];
        uint8_t parent_uuid[16];
        uint64_t otime_usec;
} BtrfsSubvolInfo;
/* One ioctl, no privilege needed. -ENOTTY (or another errno) if @fd is not a btrfs subvolume root's
 * directory; callers check st_ino == BTRFS_FIRST_FREE_OBJECTID first, which is cheaper. */
int btrfs_subvol_info_fd(int fd, BtrfsSubvolInfo *ret);

/* 32 lowercase hex digits and a NUL. */
static inline void uuid_to_hex(const uint8_t uuid[16], char hex[33])
{
        static const char digits[] = "0123456789abcdef";
        for (int i = 0; i < 16; i++) {
                hex[2 * i] = digits[uuid[i] >> 4];
                hex[2 * i + 1] = digits[uuid[i] & 15];
        }
        hex[32] = '\0';
}

/* Simple quotas where the kernel has them (*@ret_simple true), else full quota groups. */
int btrfs_quota_enable(int fd, bool *ret_simple);
/* > 0 if quota groups are enabled on the filesystem of @fd. */
int btrfs_quota_is_enabled(int fd);
/* Referenced and exclusive bytes of the level-0 quota group of @subvol_id. -ENOENT if none. */
int btrfs_qgroup_usage(int fd, uint64_t subvol_id, uint64_t *ret_referenced, uint64_t *ret_exclusive);
/* The limit on the bytes the level-0 quota group of @subvol_id refers to; UINT64_MAX if none. */
int btrfs_qgroup_get_limit(int fd, uint64_t subvol_id, uint64_t *ret);
/* Set that limit (UINT64_MAX: none). The ioctl works on any fd of the file system. */
int btrfs_qgroup_set_limit(int fd, uint64_t subvol_id, uint64_t bytes);
/* Grow the filesystem of @fd to the size of its (only) device. */
int btrfs_resize_max(int fd);

/* Every subvolume whose root is an entry of the directory @dir_fd, found with one search of the
 * root tree (CAP_SYS_ADMIN): entry name → BtrfsSubvolInfo* (g_free'd by the table). */
int btrfs_subvols_in_dir(int dir_fd, GHashTable **ret);

typedef struct BtrfsQgroupUsage {
        uint64_t referenced;
        uint64_t exclusive;
} BtrfsQgroupUsage;
/* Usage of every level-0 quota group of the file system of @fd, in one search of the quota tree:
 * subvolume id (a g_int64 key) → BtrfsQgroupUsage*. */
int btrfs_qgroup_usage_all(int fd, GHashTable **ret);
