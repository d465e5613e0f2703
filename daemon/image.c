/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <dirent.h>
#include <fcntl.h>
#include <linux/btrfs_tree.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/wait.h>
#include <sys/xattr.h>

#include <btrfsutil.h>

#include "btrfs-util.h"
#include "image.h"
#include "owners.h"
#include "names.h"
#include "snapshots.h"

const char *image_type_to_string(ImageType t)
{
        return t == IMAGE_SUBVOLUME ? "subvolume" : "directory";
}

Image *image_free(Image *i)
{
        if (!i)
                return NULL;
        free(i->name);
        free(i);
        return NULL;
}

static void image_free_void(gpointer p)
{
        image_free(p);
}

static int image_open(Manager *m, const char *name)
{
        int fd = openat(m->store_fd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        return fd < 0 ? -errno : fd;
}

/* Remember under which name a subvolume was seen, so Origin need not list the whole store. */
static void uuid_hint_note(Manager *m, const Image *img)
{
        char hex[33];

        if (!img->has_uuid)
                return;
        if (g_hash_table_size(m->uuid_hints) >= UUID_HINTS_MAX)
                g_hash_table_remove_all(m->uuid_hints);
        uuid_to_hex(img->uuid, hex);
        g_hash_table_replace(m->uuid_hints, g_strdup(hex), g_strdup(img->name));
}

static Image *image_new(Manager *m, const char *name)
{
        _cleanup_image_ Image *img = calloc(1, sizeof *img);

        if (!img)
                return NULL;
        img->manager = m;
        img->name = strdup(name);
        if (!img->name)
                return NULL;
        img->usage = img->usage_exclusive = UINT64_MAX;
        return TAKE_PTR(img);
}

static void image_set_times(Image *img, const struct statx *stx)
{
        img->mtime_usec = (uint64_t) stx->stx_mtime.tv_sec * USEC_PER_SEC + stx->stx_mtime.tv_nsec / 1000;
        if (stx->stx_mask & STATX_BTIME)
                img->crtime_usec = (uint64_t) stx->stx_btime.tv_sec * USEC_PER_SEC + stx->stx_btime.tv_nsec / 1000;
}

static void image_set_subvolume(Image *img, const BtrfsSubvolInfo *info)
{
        img->type = IMAGE_SUBVOLUME;
        img->subvol_id = info->id;
        img->read_only = info->read_only;
        img->has_uuid = true;
        memcpy(img->uuid, info->uuid, 16);
        memcpy(img->parent_uuid, info->parent_uuid, 16);
        img->crtime_usec = info->otime_usec;
}

static int image_load_fd(Manager *m, const char *name, int fd, Image **ret)
{
        _cleanup_image_ Image *img = image_new(m, name);
        BtrfsSubvolInfo info;
        struct statx stx;

        if (!img)
                return -ENOMEM;
        if (statx(fd, "", AT_EMPTY_PATH, STATX_BTIME | STATX_MTIME | STATX_INO, &stx) < 0)
                return -errno;
        image_set_times(img, &stx);

        /* A subvolume's root directory is always inode 256; one ioctl then says the rest (a foreign
         * file system mounted in the store answers it with ENOTTY and is a directory image). */
        if (m->store_is_btrfs && stx.stx_ino == BTRFS_FIRST_FREE_OBJECTID && btrfs_subvol_info_fd(fd, &info) >= 0) {
                image_set_subvolume(img, &info);
                if (m->quota_enabled && img->subvol_id != 0)
                        (void) btrfs_qgroup_usage(fd, img->subvol_id, &img->usage, &img->usage_exclusive);
        } else {
                unsigned attr = 0;

                img->type = IMAGE_DIRECTORY;
                /* Like machined: a directory image is read-only while it carries the immutable flag. */
                if (ioctl(fd, FS_IOC_GETFLAGS, &attr) >= 0)
                        img->read_only = (attr & FS_IMMUTABLE_FL) != 0;
        }

        uuid_hint_note(m, img);
        *ret = TAKE_PTR(img);
        return 0;
}

int image_load(Manager *m, const char *name, Image **ret)
{
        _cleanup_close_ int fd = -1;

        if (!image_name_is_valid(name))
                return -EINVAL;
        fd = image_open(m, name);
        if (fd == -ENOTDIR || fd == -ELOOP)
                return -ENOENT; /* a file or link in the store is not an image */
        if (fd < 0)
                return fd;
        return image_load_fd(m, name, fd, ret);
}

static gint image_compare(gconstpointer a, gconstpointer b)
{
        const Image *x = *(Image *const *) a, *y = *(Image *const *) b;
        return strcmp(x->name, y->name);
}

/* One entry of the store for image_list(): from what the whole-store searches found and one statx
 * by name, without opening it; what they cannot tell is loaded the slow way. */
static int image_list_entry(Manager *m, const char *name, GHashTable *subvols, GHashTable *usage, Image **ret)
{
        _cleanup_image_ Image *img = NULL;
        const BtrfsSubvolInfo *info = NULL;
        struct statx stx;

        if (!subvols)
                return image_load(m, name, ret);
        if (statx(m->store_fd, name, AT_SYMLINK_NOFOLLOW | AT_NO_AUTOMOUNT,
                  STATX_TYPE | STATX_BTIME | STATX_MTIME | STATX_INO, &stx) < 0)
                return -errno;
        if (!S_ISDIR(stx.stx_mode))
                return -ENOENT;
        if (stx.stx_ino == BTRFS_FIRST_FREE_OBJECTID) {
                info = g_hash_table_lookup(subvols, name);
                if (!info) /* made after the search, or something mounted here */
                        return image_load(m, name, ret);
        } else if (!(stx.stx_attributes_mask & STATX_ATTR_IMMUTABLE))
                return image_load(m, name, ret);

        img = image_new(m, name);
        if (!img)
                return -ENOMEM;
        image_set_times(img, &stx);
        if (info) {
                image_set_subvolume(img, info);
                if (usage) {
                        const BtrfsQgroupUsage *u = g_hash_table_lookup(usage, &info->id);
                        if (u) {
                                img->usage = u->referenced;
                                img->usage_exclusive = u->exclusive;
                        }
                }
        } else {
                img->type = IMAGE_DIRECTORY;
                img->read_only = (stx.stx_attributes & STATX_ATTR_IMMUTABLE) != 0;
        }
        *ret = TAKE_PTR(img);
        return 0;
}

int image_list(Manager *m, GPtrArray **ret)
{
        g_autoptr(GPtrArray) images = g_ptr_array_new_with_free_func(image_free_void);
        g_autoptr(GHashTable) subvols = NULL, usage = NULL;
        DIR *d = opendir_at(m->store_fd, ".");
        struct dirent *de;

        if (!d)
                return -errno;

        /* Two searches of btrfs's trees say what an ioctl per image would (the root tree: which
         * subvolumes sit in the store, their UUIDs, times and flags; the quota tree: usage). Without
         * them (no privilege for the search, say) each image is opened and asked. */
        if (m->store_is_btrfs && btrfs_subvols_in_dir(m->store_fd, &subvols) >= 0 && m->quota_enabled)
                (void) btrfs_qgroup_usage_all(m->store_fd, &usage);

        while ((de = readdir(d))) {
                Image *img = NULL;

                if (de->d_type != DT_DIR && de->d_type != DT_UNKNOWN)
                        continue;
                if (!image_name_is_valid(de->d_name))
                        continue; /* hidden temporaries and foreign names */
                if (image_list_entry(m, de->d_name, subvols, usage, &img) >= 0)
                        g_ptr_array_add(images, img);
        }
        closedir(d);

        g_ptr_array_sort(images, image_compare);
        *ret = g_steal_pointer(&images);
        return 0;
}

/* A restored image's btrfs parent is one of its (hidden) snapshots: its origin is kept beside them
 * (see store/snapshots.h). */
static int image_find_origin_of_restored(Manager *m, const Image *img, GPtrArray *all, char **ret)
{
        _cleanup_close_ int fd = image_open(m, img->name);
        uint8_t origin[16];

        if (fd < 0 || store_snapshots_origin(m->store_fd, fd, origin) <= 0)
                return 0;
        for (guint i = 0; i < all->len; i++) {
                const Image *o = all->pdata[i];
                if (o->has_uuid && memcmp(o->uuid, origin, 16) == 0) {
                        *ret = strdup(o->name);
                        return *ret ? 1 : -ENOMEM;
                }
        }
        return 0;
}

int image_find_origin(Manager *m, const Image *img, GPtrArray *all, char **ret)
{
        g_autoptr(GPtrArray) owned = NULL;
        static const uint8_t zero[16];

        *ret = NULL;
        if (!img->has_uuid || memcmp(img->parent_uuid, zero, 16) == 0)
                return 0;
        if (!all) {
                const char *hint;
                char hex[33];

                /* Usually the origin was seen before (a clone's source is loaded to check it exists):
                 * one image to load instead of all of them, if it still is what it was. */
                uuid_to_hex(img->parent_uuid, hex);
                hint = g_hash_table_lookup(m->uuid_hints, hex);
                if (hint) {
                        _cleanup_image_ Image *o = NULL;
                        if (image_load(m, hint, &o) >= 0 && o->has_uuid && memcmp(o->uuid, img->parent_uuid, 16) == 0) {
                                *ret = strdup(o->name);
                                return *ret ? 1 : -ENOMEM;
                        }
                }
                int k = image_list(m, &owned);
                if (k < 0)
                        return k;
                all = owned;
                for (guint i = 0; i < all->len; i++)
                        uuid_hint_note(m, all->pdata[i]);
        }
        for (guint i = 0; i < all->len; i++) {
                const Image *o = all->pdata[i];
                if (o->has_uuid && memcmp(o->uuid, img->parent_uuid, 16) == 0) {
                        *ret = strdup(o->name);
                        return *ret ? 1 : -ENOMEM;
                }
        }
        return image_find_origin_of_restored(m, img, all, ret);
}

/* What a recipe value may be: the types template.c writes. */
static bool recipe_value_is_valid(GVariant *v)
{
        static const char *const types[] = {"s", "b", "t", "x", "u", "i", "d", "as"};
        const char *t = g_variant_get_type_string(v);

        for (size_t i = 0; i < ELEMENTSOF(types); i++)
                if (streq(t, types[i]))
                        return true;
        return false;
}

static bool recipe_key_is_valid(const char *key)
{
        size_t n = strlen(key);

        if (n == 0 || n > RECIPE_KEY_MAX)
                return false;
        for (size_t i = 0; i < n; i++)
                if (!g_ascii_isalnum(key[i]) && key[i] != '_' && key[i] != '-')
                        return false;
        return true;
}

GVariant *image_read_recipe(Manager *m, const Image *img)
{
        _cleanup_close_ int fd = image_open(m, img->name);
        g_autoptr(GVariant) parsed = NULL;
        _cleanup_free_ char *buf = NULL;
        GVariantBuilder bld;
        GVariantIter it;
        const char *key;
        GVariant *value;
        ssize_t size, n;

        if (fd < 0)
                return NULL;
        /* The xattr sits on the image's root, where root inside a machine, or an imported archive, can
         * write anything: a bounded read, a parse constrained to a{sv}, and only keys and value types
         * that a recipe has; whatever else is dropped, never shown. */
        size = fgetxattr(fd, RECIPE_XATTR, NULL, 0);
        if (size <= 0)
                return NULL;
        if (size > RECIPE_XATTR_MAX) {
                log_debug("Ignoring the recipe of image %s: %zd bytes, more than %d.", img->name, size,
                          RECIPE_XATTR_MAX);
                return NULL;
        }
        buf = malloc((size_t) size + 1);
        if (!buf)
                return NULL;
        n = fgetxattr(fd, RECIPE_XATTR, buf, (size_t) size); /* ERANGE if it grew meanwhile */
        if (n <= 0)
                return NULL;
        buf[n] = '\0';
        if (strlen(buf) != (size_t) n)
                return NULL; /* a NUL inside: not the text of a recipe */
        /* A reference of our own already (not floating): no ref_sink, or it stays for ever. */
        parsed = g_variant_parse(G_VARIANT_TYPE_VARDICT, buf, NULL, NULL, NULL);
        if (!parsed)
                return NULL;

        g_variant_builder_init(&bld, G_VARIANT_TYPE_VARDICT);
        g_variant_iter_init(&it, parsed);
        while (g_variant_iter_next(&it, "{&sv}", &key, &value)) {
                if (recipe_key_is_valid(key) && recipe_value_is_valid(value))
                        g_variant_builder_add(&bld, "{sv}", key, value);
                g_variant_unref(value);
        }
        return g_variant_ref_sink(g_variant_builder_end(&bld));
}

uid_t image_owner(Manager *m, const Image *img)
{
        _cleanup_close_ int fd = image_open(m, img->name);

        return fd < 0 ? 0 : store_owner_read(m->store_fd, img->name, fd);
}

bool image_is_template(Manager *m, const Image *img)
{
        g_autoptr(GVariant) recipe = image_read_recipe(m, img);
        g_autoptr(GVariant) uuid = NULL;
        char hex[33];

        if (!recipe || !img->read_only)
                return false;
        if (!img->has_uuid)
                return true;
        /* A snapshot inherits the xattr of its source: only the subvolume the recipe was written for
         * is the template itself. */
        uuid = g_variant_lookup_value(recipe, "uuid", G_VARIANT_TYPE_STRING);
        if (!uuid)
                return false;
        uuid_to_hex(img->uuid, hex);
        return streq(g_variant_get_string(uuid, NULL), hex);
}

/* os-release is a few hundred bytes; what is bigger is not one. */
#define OS_RELEASE_MAX (64 * 1024)

int image_read_os_release(Manager *m, const char *name, GPtrArray **ret)
{
        g_autoptr(GPtrArray) kv = g_ptr_array_new_with_free_func(g_free);
        _cleanup_close_ int root = image_open(m, name);
        _cleanup_free_ char *text = NULL;
        char *line, *next;
        int k;

        if (root < 0)
                return root;
        /* This runs on the event loop, and the tree is the image's: whoever runs in it may have made
         * either name a FIFO or a device node, or a link to one. read_small_file_in_root() opens
         * nothing but a regular file, never waits, and resolves links inside the image (usr/lib/
         * os-release usually is one). */
        k = read_small_file_in_root(root, "etc/os-release", OS_RELEASE_MAX, &text, NULL);
        if (k == -ENOENT)
                k = read_small_file_in_root(root, "usr/lib/os-release", OS_RELEASE_MAX, &text, NULL);
        if (k < 0) {
                if (k != -ENOENT)
                        log_debug_errno(k, "Not reading the os-release of image %s", name);
                *ret = g_steal_pointer(&kv);
                return 0;
        }
        for (line = text; line; line = next) {
                char *eq, *value;

                next = strchr(line, '\n');
                if (next)
                        *next++ = '\0';
                g_strstrip(line);
                if (line[0] == '\0' || line[0] == '#')
                        continue;
                eq = strchr(line, '=');
                if (!eq || eq == line)
                        continue;
                *eq = '\0';
                value = g_shell_unquote(eq + 1, NULL);
                if (!value || !g_utf8_validate(line, -1, NULL) || !g_utf8_validate(value, -1, NULL)) {
                        g_free(value);
                        continue;
                }
                g_ptr_array_add(kv, g_strdup(line));
                g_ptr_array_add(kv, value);
        }
        *ret = g_steal_pointer(&kv);
        return 0;
}
