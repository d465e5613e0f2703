/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <endian.h>
#include <errno.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/vfs.h>

#include <linux/btrfs.h>
#include <linux/btrfs_tree.h>
#include <linux/magic.h>

#include "btrfs-util.h"

int fd_is_btrfs(int fd)
{
        struct statfs sfs;

        if (fstatfs(fd, &sfs) < 0)
                return -errno;
        return sfs.f_type == BTRFS_SUPER_MAGIC;
}

int fd_is_subvolume(int fd)
{
        struct stat st;
        int k;

        if (fstat(fd, &st) < 0)
                return -errno;
        if (!S_ISDIR(st.st_mode) || st.st_ino != BTRFS_FIRST_FREE_OBJECTID)
                return 0;
        k = fd_is_btrfs(fd);
        return k;
}

int btrfs_quota_enable(int fd)
{
        struct btrfs_ioctl_quota_ctl_args args = {.cmd = BTRFS_QUOTA_CTL_ENABLE};

        if (ioctl(fd, BTRFS_IOC_QUOTA_CTL, &args) < 0)
                return -errno;
        return 0;
}

/* Search the quota tree for items of @type at @offset; copies the first item's body into @buf. */
static int quota_tree_find(int fd, uint8_t type, uint64_t offset, void *buf, size_t size)
{
        struct btrfs_ioctl_search_args args = {
                .key = {
                        .tree_id = BTRFS_QUOTA_TREE_OBJECTID,
                        .min_objectid = 0,
                        .max_objectid = UINT64_MAX,
                        .min_type = type,
                        .max_type = type,
                        .min_offset = offset,
                        .max_offset = offset,
                        .min_transid = 0,
                        .max_transid = UINT64_MAX,
                        .nr_items = 1,
                },
        };
        struct btrfs_ioctl_search_header sh;

        if (ioctl(fd, BTRFS_IOC_TREE_SEARCH, &args) < 0)
                return -errno; /* ENOENT when the quota tree does not exist */
        if (args.key.nr_items == 0)
                return -ENOENT;
        memcpy(&sh, args.buf, sizeof sh);
        if (sh.type != type || sh.len < size)
                return -ENOENT;
        memcpy(buf, args.buf + sizeof sh, size);
        return 0;
}

int btrfs_quota_is_enabled(int fd)
{
        struct btrfs_qgroup_status_item status;
        int k;

        k = quota_tree_find(fd, BTRFS_QGROUP_STATUS_KEY, 0, &status, sizeof status);
        if (k == -ENOENT)
                return 0;
        if (k < 0)
                return k;
        return (le64toh(status.flags) & BTRFS_QGROUP_STATUS_FLAG_ON) != 0;
}

int btrfs_qgroup_usage(int fd, uint64_t subvol_id, uint64_t *ret_referenced, uint64_t *ret_exclusive)
{
        struct btrfs_qgroup_info_item info;
        int k;

        k = quota_tree_find(fd, BTRFS_QGROUP_INFO_KEY, subvol_id, &info, sizeof info);
        if (k < 0)
                return k;
        *ret_referenced = le64toh(info.rfer);
        *ret_exclusive = le64toh(info.excl);
        return 0;
}

int btrfs_resize_max(int fd)
{
        struct btrfs_ioctl_vol_args args = {};

        strcpy(args.name, "max");
        if (ioctl(fd, BTRFS_IOC_RESIZE, &args) < 0)
                return -errno;
        return 0;
}
