/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* btrfs_tree_diff(): what a snapshot changed against the subvolume it was taken of, from the metadata
 * items themselves. The leaves the younger subvolume rewrote since its creation are found with one
 * search filtered by transid (btrfs skips every subtree both still share); the inodes those leaves hold
 * are then read from both trees and compared: inode items (type, mode, owner, size, generation),
 * extent items (contents), extended attributes (names and values), and a directory's entries. Every
 * comparison is of the bytes themselves, never of a digest that two different contents could share. Paths come from the
 * entries and BTRFS_IOC_INO_LOOKUP; what moved is listed as btrfs_diff() lists it. */
#include <endian.h>
#include <inttypes.h>
#include <linux/btrfs.h>
#include <linux/btrfs_tree.h>
#include <stddef.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>

#include "btrfs-diff.h"
#include "util.h"

/* Inodes one comparison follows before it gives up with -E2BIG (as btrfs_diff() does). */
#define TREE_DIFF_INODES_MAX 1000000
/* Objectids closer than this are read in one search rather than two. */
#define TREE_DIFF_RANGE_GAP 64
/* Items held from each side's search (about 160 MiB with their bytes, at most). */
#define TREE_DIFF_ITEMS_MAX 1000000
#define SEARCH_BUF_SIZE (256 * 1024)

typedef struct TreeInode {
        bool have_item;
        uint64_t gen, size, rdev;
        uint32_t mode, uid, gid;
        bool content_differs; /* file extents or extended attributes, set by read_run() */
        GPtrArray *refs;      /* "<parent as 16 hex digits>/name", g_free'd */
        GHashTable *entries;  /* a directory's: name → ENTRY(child objectid, BTRFS_FT_*) */
} TreeInode;

#define ENTRY(oid, type) GSIZE_TO_POINTER(((gsize) (oid) << 4) | ((type) &15))
#define ENTRY_OID(e) ((uint64_t) (GPOINTER_TO_SIZE(e) >> 4))
#define ENTRY_IS_DIR(e) ((GPOINTER_TO_SIZE(e) & 15) == BTRFS_FT_DIR)

typedef struct TreeSide {
        int fd;
        GHashTable *inodes;   /* objectid (g_int64) → TreeInode* */
        GHashTable *dirpaths; /* objectid (g_int64) → "a/b/" */
        bool nested;          /* an entry names another subvolume */
        uint64_t new_data;    /* bytes of file extents the other side does not have (as a send writes) */
} TreeSide;

static void tree_inode_free(void *p)
{
        TreeInode *t = p;

        if (t->refs)
                g_ptr_array_unref(t->refs);
        if (t->entries)
                g_hash_table_unref(t->entries);
        g_free(t);
}

static int get_info(int fd, struct btrfs_ioctl_get_subvol_info_args *ret)
{
        memset(ret, 0, sizeof *ret);
        return ioctl(fd, BTRFS_IOC_GET_SUBVOL_INFO, ret) < 0 ? -errno : 0;
}

/* Call @fn for every item of the tree of @fd in [@min_oid, @max_oid] from leaves at least @min_transid
 * old. */
typedef int (*item_fn)(void *userdata, const struct btrfs_ioctl_search_header *h, const uint8_t *data);
/* Called after each buffer of items (@last false) and once the search is done (@last true). */
typedef int (*batch_fn)(void *userdata, bool last);

/* Search buffers come from mmap() and go back with munmap(): a diff's few megabytes of metadata must not
 * stay in the daemon's heap once it is answered. A few freed ones are kept for the next search of the
 * same diff (this thread's), as fresh pages cost a fault each; search_bufs_release() unmaps them. */
#define SEARCH_BUF_POOL 8
static __thread void *search_buf_pool[SEARCH_BUF_POOL];
static __thread unsigned search_buf_pooled;

static void *search_buf_new(void)
{
        void *p;

        if (search_buf_pooled > 0)
                return search_buf_pool[--search_buf_pooled];
        p = mmap(NULL, sizeof(struct btrfs_ioctl_search_args_v2) + SEARCH_BUF_SIZE, PROT_READ | PROT_WRITE,
                 MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        return p == MAP_FAILED ? NULL : p;
}

static void search_buf_free(void *p)
{
        if (!p)
                return;
        if (search_buf_pooled < SEARCH_BUF_POOL) {
                search_buf_pool[search_buf_pooled++] = p;
                return;
        }
        (void) munmap(p, sizeof(struct btrfs_ioctl_search_args_v2) + SEARCH_BUF_SIZE);
}

static void search_bufs_release(void)
{
        while (search_buf_pooled > 0)
                (void) munmap(search_buf_pool[--search_buf_pooled],
                              sizeof(struct btrfs_ioctl_search_args_v2) + SEARCH_BUF_SIZE);
}

static void search_buf_freep(struct btrfs_ioctl_search_args_v2 **p)
{
        search_buf_free(*p);
}

static int tree_search(int fd, uint64_t min_oid, uint64_t max_oid, uint64_t min_transid, item_fn fn, void *userdata,
                       GPtrArray *keep, batch_fn batch)
{
        _cleanup_(search_buf_freep) struct btrfs_ioctl_search_args_v2 *args = NULL;
        struct btrfs_ioctl_search_key key = {
                .tree_id = 0,
                .min_objectid = min_oid,
                .max_objectid = max_oid,
                .min_offset = 0,
                .max_offset = UINT64_MAX,
                .min_transid = min_transid,
                .max_transid = UINT64_MAX,
                .min_type = 0,
                .max_type = UINT32_MAX,
        };

        args = search_buf_new();
        if (!args)
                return -ENOMEM;
        for (;;) {
                size_t off = 0;
                struct btrfs_ioctl_search_header h = {0};

                args->key = key;
                args->key.nr_items = UINT32_MAX;
                args->buf_size = SEARCH_BUF_SIZE;
                if (ioctl(fd, BTRFS_IOC_TREE_SEARCH_V2, args) < 0)
                        return -errno;
                if (args->key.nr_items == 0)
                        return batch ? batch(userdata, true) : 0;
                for (uint32_t i = 0; i < args->key.nr_items; i++) {
                        const uint8_t *p = (const uint8_t *) args->buf + off;
                        int k;

                        if (off + sizeof h > SEARCH_BUF_SIZE)
                                return -EIO;
                        memcpy(&h, p, sizeof h);
                        if (off + sizeof h + h.len > SEARCH_BUF_SIZE)
                                return -EIO;
                        k = fn(userdata, &h, p + sizeof h);
                        if (k < 0)
                                return k;
                        off += sizeof h + h.len;
                }
                if (keep) {
                        /* The items stay where they are, for @fn's pointers: a new buffer for the next. */
                        g_ptr_array_add(keep, TAKE_PTR(args));
                        args = search_buf_new();
                        if (!args)
                                return -ENOMEM;
                }
                /* Resume after the last key found. */
                key.min_objectid = h.objectid;
                key.min_type = h.type;
                key.min_offset = h.offset;
                if (key.min_offset < UINT64_MAX)
                        key.min_offset++;
                else if (key.min_type < UINT8_MAX) {
                        key.min_type++;
                        key.min_offset = 0;
                } else {
                        if (key.min_objectid >= max_oid)
                                return batch ? batch(userdata, true) : 0;
                        key.min_objectid++;
                        key.min_type = 0;
                        key.min_offset = 0;
                }
                if (batch) {
                        int k = batch(userdata, false);
                        if (k < 0)
                                return k;
                }
                if (key.min_objectid > max_oid)
                        return batch ? batch(userdata, true) : 0;
        }
}

/* ---- reading one side's inodes ---- */

static TreeInode *side_inode(TreeSide *s, uint64_t oid)
{
        TreeInode *t = g_hash_table_lookup(s->inodes, &oid);

        if (t)
                return t;
        if (g_hash_table_size(s->inodes) >= TREE_DIFF_INODES_MAX)
                return NULL;
        t = g_new0(TreeInode, 1);
        uint64_t *key = g_new(uint64_t, 1);
        *key = oid;
        g_hash_table_insert(s->inodes, key, t);
        return t;
}

static void add_ref(TreeInode *t, uint64_t parent, const uint8_t *name, size_t len)
{
        if (!t->refs)
                t->refs = g_ptr_array_new_with_free_func(g_free);
        g_ptr_array_add(t->refs, g_strdup_printf("%016" PRIx64 "/%.*s", parent, (int) len, (const char *) name));
}

/* The names an INODE_REF item (its parent directory: the key's offset) or an INODE_EXTREF item (a parent
 * in each entry) gives inode @t. */
static int read_refs(TreeInode *t, const struct btrfs_ioctl_search_header *h, const uint8_t *data)
{
        const bool ext = h->type == BTRFS_INODE_EXTREF_KEY;
        const size_t head = ext ? sizeof(struct btrfs_inode_extref) : sizeof(struct btrfs_inode_ref);

        for (size_t off = 0; off + head <= h->len;) {
                uint64_t parent = h->offset;
                size_t n;
                if (ext) {
                        struct btrfs_inode_extref r;
                        memcpy(&r, data + off, sizeof r);
                        parent = le64toh(r.parent_objectid);
                        n = le16toh(r.name_len);
                } else {
                        struct btrfs_inode_ref r;
                        memcpy(&r, data + off, sizeof r);
                        n = le16toh(r.name_len);
                }
                off += head;
                if (off + n > h->len)
                        return -EIO;
                add_ref(t, parent, data + off, n);
                off += n;
        }
        return 0;
}

static int read_item(void *userdata, const struct btrfs_ioctl_search_header *h, const uint8_t *data)
{
        TreeSide *s = userdata;
        TreeInode *t;

        if (h->objectid < BTRFS_FIRST_FREE_OBJECTID || h->objectid > BTRFS_LAST_FREE_OBJECTID)
                return 0;
        switch (h->type) {
        case BTRFS_INODE_ITEM_KEY:
        case BTRFS_INODE_REF_KEY:
        case BTRFS_INODE_EXTREF_KEY:
        case BTRFS_XATTR_ITEM_KEY:
        case BTRFS_DIR_INDEX_KEY:
        case BTRFS_EXTENT_DATA_KEY:
                break;
        default:
                return 0;
        }
        t = side_inode(s, h->objectid);
        if (!t)
                return -E2BIG;

        switch (h->type) {
        case BTRFS_INODE_ITEM_KEY: {
                struct btrfs_inode_item ii;
                if (h->len < sizeof ii)
                        return -EIO;
                memcpy(&ii, data, sizeof ii);
                t->have_item = true;
                t->gen = le64toh(ii.generation);
                t->size = le64toh(ii.size);
                t->rdev = le64toh(ii.rdev);
                t->mode = le32toh(ii.mode);
                t->uid = le32toh(ii.uid);
                t->gid = le32toh(ii.gid);
                return 0;
        }
        case BTRFS_INODE_REF_KEY:
        case BTRFS_INODE_EXTREF_KEY:
                return read_refs(t, h, data);
        case BTRFS_DIR_INDEX_KEY: {
                struct btrfs_dir_item d;
                if (h->len < sizeof d)
                        return -EIO;
                memcpy(&d, data, sizeof d);
                size_t n = le16toh(d.name_len);
                if (sizeof d + n > h->len)
                        return -EIO;
                if (d.location.type == BTRFS_ROOT_ITEM_KEY)
                        s->nested = true;
                if (!t->entries)
                        t->entries = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
                g_hash_table_replace(t->entries, g_strndup((const char *) data + sizeof d, n),
                                     ENTRY(le64toh(d.location.objectid), d.type));
                return 0;
        }
        default: /* extended attributes and file extents: compared as bytes by read_run() */
                return 0;
        }
}

static const char *dirpath(TreeSide *s, uint64_t oid)
{
        const char *p = g_hash_table_lookup(s->dirpaths, &oid);
        struct btrfs_ioctl_ino_lookup_args args = {
                .treeid = 0,
                .objectid = oid,
        };

        if (p)
                return p;
        if (ioctl(s->fd, BTRFS_IOC_INO_LOOKUP, &args) < 0)
                return NULL;
        args.name[sizeof args.name - 1] = '\0';
        uint64_t *key = g_new(uint64_t, 1);
        *key = oid;
        char *v = g_strdup(args.name);
        g_hash_table_insert(s->dirpaths, key, v);
        return v;
}

/* ---- comparing ---- */

static bool same_inode(TreeInode *a, TreeInode *b)
{
        return a && b && a->have_item && b->have_item && a->gen == b->gen;
}

static bool changed_in_place(TreeInode *a, TreeInode *b)
{
        return a->mode != b->mode || a->uid != b->uid || a->gid != b->gid || a->rdev != b->rdev || a->content_differs ||
               b->content_differs || (!S_ISDIR(a->mode) && a->size != b->size);
}

/* The entry @name of directory @dir on side @s went away (or came): its path, and for a directory
 * everything beneath it, into @set. */
static int entry_gone(TreeSide *s, uint64_t dir, const char *name, bool is_dir, GHashTable *set)
{
        const char *d = dirpath(s, dir);
        char *p;

        if (!d)
                return -ENOTTY; /* changing under us */
        p = g_strconcat(d, name, NULL);
        g_hash_table_add(set, p);
        return is_dir ? btrfs_diff_walk_into(s->fd, p, set, 0) : 0;
}

static int compare(TreeSide *base, TreeSide *image, GArray *oids, GHashTable *had, GHashTable *now,
                   GHashTable *modified)
{
        for (guint i = 0; i < oids->len; i++) {
                uint64_t oid = g_array_index(oids, uint64_t, i);
                TreeInode *b = g_hash_table_lookup(base->inodes, &oid), *n = g_hash_table_lookup(image->inodes, &oid);
                int k;

                if (!same_inode(b, n))
                        continue; /* made or removed: its parent directory's entries tell where */

                /* Changed in place: every path it has in both, under the same directories. */
                if (oid != BTRFS_FIRST_FREE_OBJECTID && changed_in_place(b, n) && b->refs && n->refs)
                        for (guint r = 0; r < n->refs->len; r++) {
                                const char *ref = n->refs->pdata[r];
                                bool found = false;
                                for (guint q = 0; !found && q < b->refs->len; q++)
                                        found = streq(b->refs->pdata[q], ref);
                                if (!found)
                                        continue;
                                uint64_t parent = g_ascii_strtoull(ref, NULL, 16);
                                const char *bd = dirpath(base, parent), *nd = dirpath(image, parent);
                                if (!bd || !nd)
                                        return -ENOTTY;
                                if (streq(bd, nd))
                                        g_hash_table_add(modified, g_strconcat(nd, ref + 17, NULL));
                        }

                if (!S_ISDIR(n->mode))
                        continue;
                /* A directory's entries: gone, new, or now naming another inode. */
                TreeInode *sides[2] = {b, n};
                for (int w = 0; w < 2; w++) {
                        GHashTable *mine = sides[w]->entries, *theirs = sides[1 - w]->entries;
                        GHashTableIter it;
                        void *name, *e;
                        if (!mine)
                                continue;
                        g_hash_table_iter_init(&it, mine);
                        while (g_hash_table_iter_next(&it, &name, &e)) {
                                uint64_t c = ENTRY_OID(e);
                                TreeInode *bc = g_hash_table_lookup(base->inodes, &c),
                                          *nc = g_hash_table_lookup(image->inodes, &c);
                                if (theirs && g_hash_table_lookup(theirs, name) == e &&
                                    !(bc && nc && bc->have_item && nc->have_item && bc->gen != nc->gen))
                                        continue;
                                k = entry_gone(w == 0 ? base : image, oid, name, ENTRY_IS_DIR(e), w == 0 ? had : now);
                                if (k < 0)
                                        return k;
                        }
                }
        }
        return 0;
}

/* The items of one search, copied: most inodes are compared as bytes and never parsed. */
typedef struct RawItem {
        uint64_t oid, offset;
        const uint8_t *data;
        uint32_t len;
        uint8_t type;
} RawItem;

typedef struct RawList {
        GPtrArray *bufs; /* the search buffers the items point into */
        GArray *items;   /* RawItem */
} RawList;

static bool item_kept(uint8_t type)
{
        switch (type) {
        case BTRFS_INODE_ITEM_KEY:
        case BTRFS_INODE_REF_KEY:
        case BTRFS_INODE_EXTREF_KEY:
        case BTRFS_XATTR_ITEM_KEY:
        case BTRFS_DIR_INDEX_KEY:
        case BTRFS_EXTENT_DATA_KEY:
                return true;
        default: /* DIR_ITEM repeats DIR_INDEX; the rest is not part of what a diff reports */
                return false;
        }
}

static int raw_add(void *userdata, const struct btrfs_ioctl_search_header *h, const uint8_t *data)
{
        RawList *l = userdata;
        RawItem it = {
                .oid = h->objectid,
                .offset = h->offset,
                .data = data,
                .len = h->len,
                .type = (uint8_t) h->type,
        };

        if (!item_kept(it.type) || h->objectid < BTRFS_FIRST_FREE_OBJECTID || h->objectid > BTRFS_LAST_FREE_OBJECTID)
                return 0;
        if (l->items->len >= TREE_DIFF_ITEMS_MAX)
                return -ENOBUFS; /* a tree this big goes the way of the send, which holds less */
        g_array_append_val(l->items, it);
        return 0;
}

/* Whether two items say the same, as far as a diff goes: an inode item's times, transids, link count
 * and the like do not count (a read updates the access time). Anything else that differs is looked at
 * closely by read_item() and compare(). */
static bool raw_same(const RawList *a, const RawItem *x, const RawList *b, const RawItem *y)
{
        const uint8_t *p = x->data, *q = y->data;

        if (x->type != y->type || x->offset != y->offset || x->len != y->len)
                return false;
        if (x->type == BTRFS_INODE_ITEM_KEY && x->len >= sizeof(struct btrfs_inode_item)) {
                const size_t gen = offsetof(struct btrfs_inode_item, generation),
                             size = offsetof(struct btrfs_inode_item, size),
                             uid = offsetof(struct btrfs_inode_item, uid),
                             flags = offsetof(struct btrfs_inode_item, flags);
                return memcmp(p + gen, q + gen, 8) == 0 && memcmp(p + size, q + size, 8) == 0 &&
                       memcmp(p + uid, q + uid, flags - uid) == 0; /* uid, gid, mode, rdev */
        }
        return memcmp(p, q, x->len) == 0;
}

static int parse_slice(TreeSide *s, const RawList *l, guint from, guint to)
{
        for (guint i = from; i < to; i++) {
                const RawItem *it = &g_array_index(l->items, RawItem, i);
                struct btrfs_ioctl_search_header h = {
                        .objectid = it->oid,
                        .offset = it->offset,
                        .type = it->type,
                        .len = it->len,
                };
                int k = read_item(s, &h, it->data);
                if (k < 0)
                        return k;
        }
        return 0;
}

static void raw_list_init(RawList *l)
{
        l->items = g_array_new(false, false, sizeof(RawItem));
        l->bufs = g_ptr_array_new_with_free_func(search_buf_free);
}

static void raw_list_done(RawList *l)
{
        if (l->items)
                g_array_unref(l->items);
        if (l->bufs)
                g_ptr_array_unref(l->bufs);
}

#define RAW(l, i) (&g_array_index((l)->items, RawItem, (i)))

/* Whether every key of @o's items [oi, oe) is among @y's items [yi, ye) (both in key order). */
static bool keys_covered(const RawList *o, guint oi, guint oe, const RawList *y, guint yi, guint ye)
{
        for (; oi < oe; oi++) {
                while (yi < ye && (RAW(y, yi)->type < RAW(o, oi)->type ||
                                   (RAW(y, yi)->type == RAW(o, oi)->type && RAW(y, yi)->offset < RAW(o, oi)->offset)))
                        yi++;
                if (yi == ye || RAW(y, yi)->type != RAW(o, oi)->type || RAW(y, yi)->offset != RAW(o, oi)->offset)
                        return false;
        }
        return true;
}

static bool slices_same(const RawList *o, guint oi, guint oe, const RawList *y, guint yi, guint ye)
{
        if (oe - oi != ye - yi)
                return false;
        for (; oi < oe; oi++, yi++)
                if (!raw_same(o, RAW(o, oi), y, RAW(y, yi)))
                        return false;
        return true;
}

/* The objectids @oids[@from, @to) (nearby ones): the older side's items read with one search, the
 * younger's taken from its rewritten leaves (@young) — those are all of an inode's items unless some
 * also sit in a leaf both still share, which then holds what the older side has under the same key:
 * such an inode is read again whole. Inodes whose items differ are parsed into the sides' tables. */
/* The bytes of @y's file extents [yi, ye) that @o's [oi, oe) does not have as they are. */
static uint64_t new_extent_bytes(const RawList *o, guint oi, guint oe, const RawList *y, guint yi, guint ye)
{
        const size_t head = offsetof(struct btrfs_file_extent_item, disk_bytenr);
        uint64_t sum = 0;

        for (; yi < ye; yi++) {
                const RawItem *it = RAW(y, yi);
                bool found = false;
                if (it->type != BTRFS_EXTENT_DATA_KEY || it->len < head)
                        continue;
                for (guint q = oi; !found && q < oe; q++)
                        found = raw_same(o, RAW(o, q), y, it);
                if (found)
                        continue;
                if (it->data[offsetof(struct btrfs_file_extent_item, type)] == BTRFS_FILE_EXTENT_INLINE)
                        sum += it->len - head;
                else if (it->len >= sizeof(struct btrfs_file_extent_item)) {
                        struct btrfs_file_extent_item fe;
                        memcpy(&fe, it->data, sizeof fe);
                        sum += le64toh(fe.num_bytes);
                }
        }
        return sum;
}

/* An inode's file extents, as the items say them but for the transid that wrote each: the same ranges
 * with the same extents, in the same order (their keys'). */
static bool extents_same(const RawList *o, guint oi, guint oe, const RawList *y, guint yi, guint ye)
{
        const size_t after_transid = offsetof(struct btrfs_file_extent_item, ram_bytes);

        for (;;) {
                while (oi < oe && RAW(o, oi)->type != BTRFS_EXTENT_DATA_KEY)
                        oi++;
                while (yi < ye && RAW(y, yi)->type != BTRFS_EXTENT_DATA_KEY)
                        yi++;
                if (oi == oe || yi == ye)
                        return oi == oe && yi == ye;
                const RawItem *a = RAW(o, oi++), *b = RAW(y, yi++);
                if (a->offset != b->offset || a->len != b->len || a->len < after_transid ||
                    memcmp(a->data + after_transid, b->data + after_transid, a->len - after_transid) != 0)
                        return false;
        }
}

/* One extended attribute: its name and value, as they follow their header. */
typedef struct Xattr {
        const uint8_t *p;
        size_t name_len, len;
} Xattr;

static int xattr_cmp(const void *x, const void *y)
{
        const Xattr *a = x, *b = y;

        if (a->name_len != b->name_len)
                return a->name_len < b->name_len ? -1 : 1;
        if (a->len != b->len)
                return a->len < b->len ? -1 : 1;
        return memcmp(a->p, b->p, a->len);
}

/* The extended attributes of one side's items [i, e), sorted; NULL if an item is malformed. */
static GArray *xattrs_of(const RawList *l, guint i, guint e)
{
        g_autoptr(GArray) a = g_array_new(false, false, sizeof(Xattr));

        for (; i < e; i++) {
                const RawItem *it = RAW(l, i);
                if (it->type != BTRFS_XATTR_ITEM_KEY)
                        continue;
                for (size_t off = 0; off + sizeof(struct btrfs_dir_item) <= it->len;) {
                        struct btrfs_dir_item d;
                        memcpy(&d, it->data + off, sizeof d);
                        Xattr x = {.name_len = le16toh(d.name_len)};
                        x.len = x.name_len + le16toh(d.data_len);
                        off += sizeof d;
                        if (off + x.len > it->len)
                                return NULL;
                        x.p = it->data + off;
                        g_array_append_val(a, x);
                        off += x.len;
                }
        }
        g_array_sort(a, xattr_cmp);
        return g_steal_pointer(&a);
}

/* The same names with the same values, whatever the order of the items (one per name's hash) and of the
 * entries in one item (names of the same hash), and whatever transid each says. */
static bool xattrs_same(const RawList *o, guint oi, guint oe, const RawList *y, guint yi, guint ye)
{
        g_autoptr(GArray) a = xattrs_of(o, oi, oe), b = xattrs_of(y, yi, ye);

        if (!a || !b || a->len != b->len)
                return false;
        for (guint i = 0; i < a->len; i++)
                if (xattr_cmp(&g_array_index(a, Xattr, i), &g_array_index(b, Xattr, i)) != 0)
                        return false;
        return true;
}

static void mark_content_differs(TreeSide *s, uint64_t oid)
{
        TreeInode *t = g_hash_table_lookup(s->inodes, &oid);

        if (t)
                t->content_differs = true;
}

static int read_run(TreeSide *old, TreeSide *yside, const RawList *young, guint *yi, GArray *oids, guint from, guint to)
{
        RawList o = {}, again = {};
        guint oi = 0;
        int k;

        raw_list_init(&o);
        k = tree_search(old->fd, g_array_index(oids, uint64_t, from), g_array_index(oids, uint64_t, to - 1), 0, raw_add,
                        &o, o.bufs, NULL);
        for (guint n = from; k >= 0 && n < to; n++) {
                uint64_t oid = g_array_index(oids, uint64_t, n);
                guint oe, ye;
                const RawList *y = young;
                guint ys, young_end;

                while (oi < o.items->len && RAW(&o, oi)->oid < oid)
                        oi++;
                for (oe = oi; oe < o.items->len && RAW(&o, oe)->oid == oid; oe++)
                        ;
                while (*yi < young->items->len && RAW(young, *yi)->oid < oid)
                        (*yi)++;
                for (ye = *yi; ye < young->items->len && RAW(young, ye)->oid == oid; ye++)
                        ;
                ys = *yi;
                young_end = ye;
                if (!keys_covered(&o, oi, oe, young, ys, ye)) {
                        raw_list_done(&again);
                        raw_list_init(&again);
                        k = tree_search(yside->fd, oid, oid, 0, raw_add, &again, again.bufs, NULL);
                        if (k < 0)
                                break;
                        y = &again;
                        ys = 0;
                        ye = again.items->len;
                }
                if (!slices_same(&o, oi, oe, y, ys, ye)) {
                        k = parse_slice(old, &o, oi, oe);
                        if (k >= 0)
                                k = parse_slice(yside, y, ys, ye);
                        if (k >= 0 && !(extents_same(&o, oi, oe, y, ys, ye) && xattrs_same(&o, oi, oe, y, ys, ye))) {
                                mark_content_differs(old, oid);
                                mark_content_differs(yside, oid);
                        }
                        yside->new_data += new_extent_bytes(&o, oi, oe, y, ys, ye);
                }
                oi = oe;
                *yi = young_end;
        }
        raw_list_done(&o);
        raw_list_done(&again);
        return k;
}

static int read_sides(TreeSide *old, TreeSide *yside, const RawList *young, GArray *oids)
{
        guint yi = 0;

        /* Runs of nearby objectids, one search each. */
        for (guint i = 0; i < oids->len;) {
                guint j = i + 1;
                int k;

                while (j < oids->len &&
                       g_array_index(oids, uint64_t, j) - g_array_index(oids, uint64_t, j - 1) <= TREE_DIFF_RANGE_GAP)
                        j++;
                k = read_run(old, yside, young, &yi, oids, i, j);
                if (k < 0)
                        return k;
                i = j;
        }
        return 0;
}

/* The younger side's rewritten leaves, searched a buffer at a time: each buffer's inodes are compared
 * with the older side's as soon as all their items are there (the last one's may go on in the next
 * buffer), and the buffers no item points into any more go back. */
typedef struct Collector {
        RawList pending; /* first: raw_add() fills it */
        TreeSide *old, *yside;
        GArray *oids; /* all of them, for compare() */
} Collector;

static int collector_batch(void *userdata, bool last)
{
        Collector *c = userdata;
        RawList *p = &c->pending, batch = {};
        g_autoptr(GArray) oids = g_array_new(false, false, sizeof(uint64_t));
        guint n = p->items->len;
        int k;

        if (!last && n > 0) {
                uint64_t held = RAW(p, n - 1)->oid;
                while (n > 0 && RAW(p, n - 1)->oid == held)
                        n--;
        }
        if (n == 0)
                return 0;
        batch.items = g_array_sized_new(false, false, sizeof(RawItem), n);
        g_array_append_vals(batch.items, p->items->data, n);
        for (guint i = 0; i < n; i++) {
                uint64_t oid = RAW(p, i)->oid;
                if (oids->len == 0 || g_array_index(oids, uint64_t, oids->len - 1) != oid) {
                        g_array_append_val(oids, oid);
                        g_array_append_val(c->oids, oid);
                }
        }
        k = read_sides(c->old, c->yside, &batch, oids);
        g_array_unref(batch.items);
        g_array_remove_range(p->items, 0, n);

        for (guint b = 0; b < p->bufs->len;) {
                const uint8_t *lo = p->bufs->pdata[b],
                              *hi = lo + sizeof(struct btrfs_ioctl_search_args_v2) + SEARCH_BUF_SIZE;
                bool used = false;
                for (guint i = 0; !used && i < p->items->len; i++)
                        used = RAW(p, i)->data >= lo && RAW(p, i)->data < hi;
                if (used)
                        b++;
                else
                        g_ptr_array_remove_index(p->bufs, b);
        }
        return k;
}

static void sides_done(TreeSide *base, TreeSide *image)
{
        TreeSide *sides[] = {base, image};

        for (size_t i = 0; i < ELEMENTSOF(sides); i++) {
                if (sides[i]->inodes)
                        g_hash_table_unref(sides[i]->inodes);
                if (sides[i]->dirpaths)
                        g_hash_table_unref(sides[i]->dirpaths);
        }
}

/* Everything but the comparison of paths: the checks that the fast way applies, then the inodes that
 * differ, parsed into @base and @image (to be released with sides_done() in any case), their objectids
 * in @oids. *@ret_image_young says which one is the snapshot of the other. */
static int tree_read(int base_fd, int image_fd, TreeSide *base, TreeSide *image, GArray *oids, bool *ret_image_young)
{
        struct btrfs_ioctl_get_subvol_info_args bi, ii, *old, *young;
        int k;

        base->fd = base_fd;
        image->fd = image_fd;
        if (get_info(base_fd, &bi) < 0 || get_info(image_fd, &ii) < 0)
                return -ENOTTY;
        /* One must be a snapshot of the other, taken when the other already was as it is now: read-only,
         * and last changed no later than the transaction that made the snapshot. */
        if (memcmp(ii.parent_uuid, bi.uuid, sizeof bi.uuid) == 0)
                old = &bi, young = &ii;
        else if (memcmp(bi.parent_uuid, ii.uuid, sizeof ii.uuid) == 0)
                old = &ii, young = &bi;
        else
                return -ENOTTY;
        if (!(old->flags & BTRFS_ROOT_SUBVOL_RDONLY) || old->ctransid > young->otransid || young->otransid == 0)
                return -ENOTTY;
        *ret_image_young = young == &ii;

        /* btrfs keeps recent inode items and directory entries in memory, out of the trees a search sees,
         * until the transaction commits, and the extent items of file data until that is written: write
         * out and commit what is pending (what a snapshot for the send would do too). */
        if (syncfs(image_fd) < 0)
                return -ENOTTY;

        base->inodes = g_hash_table_new_full(g_int64_hash, g_int64_equal, g_free, tree_inode_free);
        base->dirpaths = g_hash_table_new_full(g_int64_hash, g_int64_equal, g_free, g_free);
        image->inodes = g_hash_table_new_full(g_int64_hash, g_int64_equal, g_free, tree_inode_free);
        image->dirpaths = g_hash_table_new_full(g_int64_hash, g_int64_equal, g_free, g_free);

        Collector col = {
                .old = young == &ii ? base : image,
                .yside = young == &ii ? image : base,
                .oids = oids,
        };
        raw_list_init(&col.pending);
        k = tree_search(young == &ii ? image_fd : base_fd, BTRFS_FIRST_FREE_OBJECTID, BTRFS_LAST_FREE_OBJECTID,
                        young->otransid, raw_add, &col, col.pending.bufs, collector_batch);
        raw_list_done(&col.pending);
        if (k >= 0 && (base->nested || image->nested))
                k = -ENOTTY;
        return k;
}

int btrfs_tree_diff(int base_fd, int image_fd, btrfs_diff_cb cb, void *userdata)
{
        g_autoptr(GArray) oids = g_array_new(false, false, sizeof(uint64_t));
        g_autoptr(GHashTable) had = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
        g_autoptr(GHashTable) now = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
        g_autoptr(GHashTable) modified = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
        TreeSide base = {}, image = {};
        bool image_young;
        int k;

        k = tree_read(base_fd, image_fd, &base, &image, oids, &image_young);
        if (k >= 0)
                k = compare(&base, &image, oids, had, now, modified);
        if (k < 0 && k != -E2BIG && k != -ENOMEM)
                k = -ENOTTY;
        if (k >= 0)
                k = btrfs_diff_report_sets(base_fd, image_fd, had, now, modified, cb, userdata);
        sides_done(&base, &image);
        search_bufs_release();
        return k < 0 ? k : 0;
}

int btrfs_tree_diff_data_bytes(int base_fd, int image_fd, uint64_t *ret)
{
        g_autoptr(GArray) oids = g_array_new(false, false, sizeof(uint64_t));
        TreeSide base = {}, image = {};
        bool image_young = false;
        int k;

        k = tree_read(base_fd, image_fd, &base, &image, oids, &image_young);
        if (k >= 0 && !image_young)
                k = -ENOTTY;
        if (k >= 0)
                *ret = image.new_data;
        sides_done(&base, &image);
        search_bufs_release();
        return k < 0 ? k : 0;
}
