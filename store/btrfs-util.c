/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <endian.h>
#include <errno.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/vfs.h>

#include <glib.h>

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

int btrfs_subvol_info_fd(int fd, BtrfsSubvolInfo *ret)
{
        struct btrfs_ioctl_get_subvol_info_args args = {};

        if (ioctl(fd, BTRFS_IOC_GET_SUBVOL_INFO, &args) < 0)
                return -errno;
        *ret = (BtrfsSubvolInfo) {
                .id = args.treeid,
                .read_only = (args.flags & BTRFS_ROOT_SUBVOL_RDONLY) != 0,
                .otime_usec = args.otime.sec * UINT64_C(1000000) + args.otime.nsec / 1000,
        };
        memcpy(ret->uuid, args.uuid, 16);
        memcpy(ret->parent_uuid, args.parent_uuid, 16);
        return 0;
}

#ifndef BTRFS_QUOTA_CTL_ENABLE_SIMPLE_QUOTA
#define BTRFS_QUOTA_CTL_ENABLE_SIMPLE_QUOTA 4 /* Linux 6.7 */
#endif

int btrfs_quota_enable(int fd, bool *ret_simple)
{
        struct btrfs_ioctl_quota_ctl_args args = {.cmd = BTRFS_QUOTA_CTL_ENABLE_SIMPLE_QUOTA};

        /* Simple quotas charge each extent to the subvolume that wrote it, with none of the
         * backreference walks that make full quota groups stall large pools. Older kernels say
         * EINVAL (an unknown command): full quota groups then. */
        if (ioctl(fd, BTRFS_IOC_QUOTA_CTL, &args) >= 0) {
                if (ret_simple)
                        *ret_simple = true;
                return 0;
        }
        args = (struct btrfs_ioctl_quota_ctl_args) {.cmd = BTRFS_QUOTA_CTL_ENABLE};
        if (ioctl(fd, BTRFS_IOC_QUOTA_CTL, &args) < 0)
                return -errno;
        if (ret_simple)
                *ret_simple = false;
        return 0;
}

/* Search the quota tree for items of @type at @offset; copies the first item's body into @buf. */
static int quota_tree_find(int fd, uint8_t type, uint64_t offset, void *buf, size_t size)
{
        struct btrfs_ioctl_search_args args = {
                .key =
                        {
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

int btrfs_qgroup_get_limit(int fd, uint64_t subvol_id, uint64_t *ret)
{
        struct btrfs_qgroup_limit_item limit;
        int k;

        k = quota_tree_find(fd, BTRFS_QGROUP_LIMIT_KEY, subvol_id, &limit, sizeof limit);
        if (k == -ENOENT) {
                *ret = UINT64_MAX;
                return 0;
        }
        if (k < 0)
                return k;
        *ret = (le64toh(limit.flags) & BTRFS_QGROUP_LIMIT_MAX_RFER) ? le64toh(limit.max_rfer) : UINT64_MAX;
        return 0;
}

int btrfs_qgroup_set_limit(int fd, uint64_t subvol_id, uint64_t bytes)
{
        struct btrfs_ioctl_qgroup_limit_args args = {
                .qgroupid = subvol_id,
                .lim =
                        {
                                .flags = BTRFS_QGROUP_LIMIT_MAX_RFER,
                                /* No limit is one the kernel takes as "unlimited". */
                                .max_rfer = bytes == UINT64_MAX ? (uint64_t) -1 : bytes,
                        },
        };

        return ioctl(fd, BTRFS_IOC_QGROUP_LIMIT, &args) < 0 ? -errno : 0;
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

/* ---- whole-tree searches: one pass instead of an ioctl per subvolume ---- */

/* Below glibc's mmap threshold: a larger buffer, mmapped and freed, would raise that threshold and
 * leave later large allocations in the heap. */
#define SEARCH_BUFFER_SIZE (64 * 1024)

typedef int (*SearchItemFn)(const struct btrfs_ioctl_search_header *sh, const void *body, void *userdata);

/* Call @fn for every item of tree @tree_id with a key between @min and @max (objectid, type,
 * offset compared in that order; items of other types in between are passed too: filter them). */
static int tree_search(int fd, uint64_t tree_id, const struct btrfs_key *min, const struct btrfs_key *max,
                       SearchItemFn fn, void *userdata)
{
        g_autofree struct btrfs_ioctl_search_args_v2 *args = g_malloc0(sizeof *args + SEARCH_BUFFER_SIZE);
        struct btrfs_ioctl_search_key *key = &args->key;

        key->tree_id = tree_id;
        key->min_objectid = min->objectid;
        key->min_type = min->type;
        key->min_offset = min->offset;
        key->max_objectid = max->objectid;
        key->max_type = max->type;
        key->max_offset = max->offset;
        key->max_transid = UINT64_MAX;

        for (;;) {
                struct btrfs_ioctl_search_header sh = {};
                size_t at = 0;

                key->nr_items = UINT32_MAX;
                args->buf_size = SEARCH_BUFFER_SIZE;
                if (ioctl(fd, BTRFS_IOC_TREE_SEARCH_V2, args) < 0)
                        return -errno;
                if (key->nr_items == 0)
                        return 0;
                for (uint32_t i = 0; i < key->nr_items; i++) {
                        int k;

                        if (at + sizeof sh > SEARCH_BUFFER_SIZE)
                                return -EBADMSG;
                        memcpy(&sh, args->buf + at, sizeof sh);
                        at += sizeof sh;
                        if (sh.len > SEARCH_BUFFER_SIZE - at)
                                return -EBADMSG;
                        k = fn(&sh, args->buf + at, userdata);
                        if (k < 0)
                                return k;
                        at += sh.len;
                }
                /* Go on after the last key seen. */
                key->min_objectid = sh.objectid;
                key->min_type = sh.type;
                key->min_offset = sh.offset;
                if (key->min_offset < UINT64_MAX)
                        key->min_offset++;
                else if (key->min_type < UINT8_MAX) {
                        key->min_type++;
                        key->min_offset = 0;
                } else if (key->min_objectid < key->max_objectid) {
                        key->min_objectid++;
                        key->min_type = 0;
                        key->min_offset = 0;
                } else
                        return 0;
        }
}

typedef struct SubvolScan {
        uint64_t parent_id;  /* the subvolume holding the directory */
        uint64_t dir_ino;    /* the directory */
        uint64_t current_id; /* the subvolume whose root item was seen last */
        BtrfsSubvolInfo current;
        bool have_current;
        GHashTable *found;
} SubvolScan;

static int on_root_tree_item(const struct btrfs_ioctl_search_header *sh, const void *body, void *userdata)
{
        SubvolScan *s = userdata;

        if (sh->type == BTRFS_ROOT_ITEM_KEY) {
                struct btrfs_root_item ri;

                s->have_current = false;
                /* Root items written by very old kernels lack UUIDs and times: leave those out. */
                if (sh->len < offsetof(struct btrfs_root_item, otime) + sizeof ri.otime)
                        return 0;
                memcpy(&ri, body, MIN(sizeof ri, (size_t) sh->len));
                s->current_id = sh->objectid;
                s->current = (BtrfsSubvolInfo) {
                        .id = sh->objectid,
                        .read_only = (le64toh(ri.flags) & BTRFS_ROOT_SUBVOL_RDONLY) != 0,
                        .otime_usec = le64toh(ri.otime.sec) * UINT64_C(1000000) + le32toh(ri.otime.nsec) / 1000,
                };
                memcpy(s->current.uuid, ri.uuid, 16);
                memcpy(s->current.parent_uuid, ri.parent_uuid, 16);
                s->have_current = true;
        } else if (sh->type == BTRFS_ROOT_BACKREF_KEY && s->have_current && sh->objectid == s->current_id &&
                   sh->offset == s->parent_id && sh->len >= sizeof(struct btrfs_root_ref)) {
                struct btrfs_root_ref ref;
                size_t name_len;

                memcpy(&ref, body, sizeof ref);
                name_len = le16toh(ref.name_len);
                if (le64toh(ref.dirid) != s->dir_ino || name_len == 0 || name_len > sh->len - sizeof ref)
                        return 0;
                g_hash_table_replace(s->found, g_strndup((const char *) body + sizeof ref, name_len),
                                     g_memdup2(&s->current, sizeof s->current));
        }
        return 0;
}

int btrfs_subvols_in_dir(int dir_fd, GHashTable **ret)
{
        struct btrfs_ioctl_ino_lookup_args lookup = {.objectid = BTRFS_FIRST_FREE_OBJECTID};
        const struct btrfs_key min = {.objectid = BTRFS_FIRST_FREE_OBJECTID, .type = BTRFS_ROOT_ITEM_KEY},
                               max = {.objectid = BTRFS_LAST_FREE_OBJECTID,
                                      .type = BTRFS_ROOT_BACKREF_KEY,
                                      .offset = UINT64_MAX};
        SubvolScan s = {};
        struct stat st;
        int k;

        if (fstat(dir_fd, &st) < 0)
                return -errno;
        if (ioctl(dir_fd, BTRFS_IOC_INO_LOOKUP, &lookup) < 0)
                return -errno;
        s.parent_id = lookup.treeid;
        s.dir_ino = st.st_ino;
        s.found = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, g_free);
        k = tree_search(dir_fd, BTRFS_ROOT_TREE_OBJECTID, &min, &max, on_root_tree_item, &s);
        if (k < 0) {
                g_hash_table_destroy(s.found);
                return k;
        }
        *ret = s.found;
        return 0;
}

static int on_qgroup_info(const struct btrfs_ioctl_search_header *sh, const void *body, void *userdata)
{
        struct btrfs_qgroup_info_item info;
        BtrfsQgroupUsage *u;

        /* Level-0 groups only: their id is the subvolume's. */
        if (sh->type != BTRFS_QGROUP_INFO_KEY || sh->objectid != 0 || (sh->offset >> 48) != 0 || sh->len < sizeof info)
                return 0;
        memcpy(&info, body, sizeof info);
        u = g_new(BtrfsQgroupUsage, 1);
        u->referenced = le64toh(info.rfer);
        u->exclusive = le64toh(info.excl);
        g_hash_table_replace(userdata, g_memdup2(&sh->offset, sizeof sh->offset), u);
        return 0;
}

int btrfs_qgroup_usage_all(int fd, GHashTable **ret)
{
        const struct btrfs_key min = {.objectid = 0, .type = BTRFS_QGROUP_INFO_KEY, .offset = 0},
                               max = {.objectid = 0, .type = BTRFS_QGROUP_INFO_KEY, .offset = UINT64_MAX};
        GHashTable *found = g_hash_table_new_full(g_int64_hash, g_int64_equal, g_free, g_free);
        int k;

        k = tree_search(fd, BTRFS_QUOTA_TREE_OBJECTID, &min, &max, on_qgroup_info, found);
        if (k < 0) {
                g_hash_table_destroy(found);
                return k;
        }
        *ret = found;
        return 0;
}
