/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>

#include "authz.h"
#include "errors.h"
#include "image-dbus.h"
#include "disk-limits.h"
#include "names.h"
#include "operation.h"
#include "pool.h"
#include "snapshot-dbus.h"

int image_bus_path(const char *name, char **ret)
{
        return sd_bus_path_encode(STAMP_IMAGE_PREFIX, name, ret);
}

int bus_check_image_name(const char *name, const char *what, sd_bus_error *error)
{
        return stamp_error_check_name(error, what, name, image_name_invalid_reason(name));
}

int bus_check_image_exists(Manager *m, const char *name, Image **ret, sd_bus_error *error)
{
        Image *img = NULL;
        int k = manager_get_image(m, name, &img);

        if (k == -ENOENT)
                return sd_bus_error_setf(error, STAMP_ERROR_NO_SUCH_IMAGE, "No image named %s", name);
        if (k < 0)
                return sd_bus_error_set_errnof(error, k, "Cannot read image %s: %m", name);
        if (ret)
                *ret = img;
        return 0;
}

int bus_check_image_absent(Manager *m, const char *name, sd_bus_error *error)
{
        Image *img = NULL;
        int k = manager_get_image(m, name, &img);

        if (k == 0)
                return sd_bus_error_setf(error, STAMP_ERROR_IMAGE_EXISTS, "An image named %s already exists", name);
        if (k != -ENOENT)
                return sd_bus_error_set_errnof(error, k, "Cannot check for image %s: %m", name);
        if (faccessat(m->store_fd, name, F_OK, AT_SYMLINK_NOFOLLOW) == 0)
                return sd_bus_error_setf(error, STAMP_ERROR_IMAGE_EXISTS,
                                         "Something that is not an image is named %s in the store", name);
        return 0;
}

int bus_check_image_not_busy(Manager *m, const char *name, sd_bus_error *error)
{
        const char *why = manager_image_busy_reason(m, name);

        if (why)
                return sd_bus_error_setf(error, STAMP_ERROR_IMAGE_BUSY, "Image %s is busy (%s)", name, why);
        if (manager_image_has_readers(m, name))
                return sd_bus_error_setf(error, STAMP_ERROR_IMAGE_BUSY, "Image %s is busy (being exported)", name);
        return 0;
}

int image_user_usage(Manager *m, uid_t uid, unsigned *ret_images, uint64_t *ret_bytes)
{
        g_autoptr(GPtrArray) all = NULL;
        unsigned n = GPOINTER_TO_UINT(g_hash_table_lookup(m->images_pending, GUINT_TO_POINTER((unsigned) uid)));
        uint64_t bytes = 0;
        int k;

        k = image_list(m, &all);
        if (k < 0)
                return k;
        for (guint i = 0; i < all->len; i++) {
                const Image *img = all->pdata[i];
                if (image_owner(m, img) != uid)
                        continue;
                n++;
                if (img->usage_exclusive != UINT64_MAX)
                        bytes += img->usage_exclusive;
                bytes += image_snapshots_exclusive(m, img);
        }
        *ret_images = n;
        /* Bytes are what the quota groups know: unknown where the store has none. */
        *ret_bytes = m->quota_enabled ? bytes : UINT64_MAX;
        return 0;
}

int bus_check_user_limits(Manager *m, uid_t uid, sd_bus_error *error)
{
        unsigned n;
        uint64_t bytes;
        int k;

        if (uid == 0 || (m->settings.images_per_user == UINT_MAX && m->settings.bytes_per_user == UINT64_MAX))
                return 0;
        k = image_user_usage(m, uid, &n, &bytes);
        if (k < 0)
                return sd_bus_error_set_errnof(error, k, "Cannot count the caller's images: %m");
        if (n >= m->settings.images_per_user)
                return sd_bus_error_setf(error, STAMP_ERROR_QUOTA_EXCEEDED,
                                         "User %u has %u images, %u more than ImagesPerUser=%u allows before a new "
                                         "one; remove %s first",
                                         (unsigned) uid, n, n + 1 - m->settings.images_per_user,
                                         m->settings.images_per_user,
                                         n + 1 - m->settings.images_per_user == 1 ? "one" : "some");
        if (bytes != UINT64_MAX && bytes >= m->settings.bytes_per_user)
                return sd_bus_error_setf(error, STAMP_ERROR_QUOTA_EXCEEDED,
                                         "User %u uses %" PRIu64 " bytes in the store, %" PRIu64
                                         " over BytesPerUser=%" PRIu64 "; remove an image first",
                                         (unsigned) uid, bytes, bytes - m->settings.bytes_per_user,
                                         m->settings.bytes_per_user);
        return 0;
}

/* Whose @img is, for choosing between manage-own-images and manage-images. A clone source is shared
 * when it is a template of root's (read-only): anyone may make their own clone of it. */
static AuthzOwner image_authz_owner(Manager *m, const Image *img, bool as_clone_source)
{
        uid_t owner = image_owner(m, img);

        return (AuthzOwner) {
                .own_action = STAMP_ACTION_MANAGE_OWN_IMAGES,
                .owner = owner,
                .shared = as_clone_source && owner == 0 && img->read_only,
        };
}

/* The caller's uid after authorization; ENODATA cannot happen then, but say so if it does. */
static int bus_caller_uid(Manager *m, sd_bus_message *msg, uid_t *ret, sd_bus_error *error)
{
        int k = authz_caller_uid(m->authz, msg, ret);

        if (k < 0)
                return sd_bus_error_set_errnof(error, k, "Cannot tell who the caller is: %m");
        return 0;
}

/* ---- clone ---- */

typedef struct CloneArgs {
        char *source;
        char *new_name;
        StoreCloneFlags flags;
        uid_t owner;
} CloneArgs;

static void clone_args_free(void *p)
{
        CloneArgs *a = p;
        free(a->source);
        free(a->new_name);
        free(a);
}

static int clone_work(Manager *m, void *userdata, char *err, size_t errlen)
{
        CloneArgs *a = userdata;
        return store_clone_image(m->store_fd, m->store_is_btrfs, a->source, a->new_name, a->flags, a->owner, err,
                                 errlen);
}

static void clone_done(Manager *m, int result, void *userdata)
{
        CloneArgs *a = userdata;

        if (a->owner != UID_INVALID)
                manager_image_pending(m, a->owner, -1);
        if (result >= 0) {
                log_info("Cloned %s to %s%s%s.", a->source, a->new_name,
                         a->flags & STORE_CLONE_READ_ONLY ? " (read-only)" : "",
                         a->flags & STORE_CLONE_FRESH_IDENTITY ? " with a fresh identity" : "");
                (void) manager_send_image_added(m, a->new_name);
        }
}

int image_method_clone(Manager *m, sd_bus_message *msg, const char *source, const char *new_name, const CloneOptions *o,
                       sd_bus_error *error)
{
        const char *details[] = {"verb", "clone", "image", source, "new_name", new_name, NULL};
        const char *locks[] = {new_name, NULL};
        Image *img = NULL; /* the manager's, valid during this dispatch */
        AuthzOwner owner;
        bool read_only_source;
        uid_t uid;
        CloneArgs *a;
        int k;

        if ((k = bus_check_image_name(source, "image name", error)) < 0 ||
            (k = bus_check_image_name(new_name, "new image name", error)) < 0 ||
            (k = bus_check_image_exists(m, source, &img, error)) < 0)
                return k;
        owner = image_authz_owner(m, img, true);
        read_only_source = img->read_only;
        if ((k = bus_check_image_absent(m, new_name, error)) < 0 ||
            (k = bus_check_image_not_busy(m, new_name, error)) < 0)
                return k;

        k = authz_verify_owned(m->authz, msg, STAMP_ACTION_MANAGE_IMAGES, &owner, details, NULL, error);
        if (k <= 0)
                return k < 0 ? k : 1;
        if ((k = bus_caller_uid(m, msg, &uid, error)) < 0 || (k = bus_check_user_limits(m, uid, error)) < 0)
                return k;

        a = calloc(1, sizeof *a);
        if (!a || !(a->source = strdup(source)) || !(a->new_name = strdup(new_name))) {
                if (a)
                        clone_args_free(a);
                return -ENOMEM;
        }
        /* Root's images need no record: an image without one is root's. */
        a->owner = uid == 0 ? UID_INVALID : uid;
        if (o->read_only > 0)
                a->flags |= STORE_CLONE_READ_ONLY;
        /* A clone of a template (a read-only image) is a new machine, not the template again. A clone
         * of a writable image is a copy of that machine, as machinectl clone makes it. */
        if (read_only_source && o->keep_identity <= 0)
                a->flags |= STORE_CLONE_FRESH_IDENTITY;
        pool_maybe_grow(m);
        /* The new name is held until the clone is in place, so no second clone races to it. */
        k = operation_start(m, msg, locks, clone_work, clone_done, a, clone_args_free, error);
        if (k >= 0 && uid != 0)
                manager_image_pending(m, uid, +1);
        return k;
}

/* ---- remove ---- */

static int remove_work(Manager *m, void *userdata, char *err, size_t errlen)
{
        return store_remove_image(m->store_fd, m->store_is_btrfs, userdata, err, errlen);
}

static void remove_done(Manager *m, int result, void *userdata)
{
        if (result >= 0) {
                log_info("Removed image %s.", (char *) userdata);
                (void) manager_send_image_removed(m, userdata);
        }
}

int image_method_remove(Manager *m, sd_bus_message *msg, const char *name, sd_bus_error *error)
{
        const char *details[] = {"verb", "remove", "image", name, NULL};
        const char *locks[] = {name, NULL};
        Image *img = NULL;
        AuthzOwner owner;
        int k;

        if ((k = bus_check_image_name(name, "image name", error)) < 0 ||
            (k = bus_check_image_exists(m, name, &img, error)) < 0)
                return k;
        owner = image_authz_owner(m, img, false);
        if ((k = bus_check_image_not_busy(m, name, error)) < 0 || (k = bus_check_no_snapshots(m, img, error)) < 0)
                return k;

        k = authz_verify_owned(m->authz, msg, STAMP_ACTION_MANAGE_IMAGES, &owner, details, NULL, error);
        if (k <= 0)
                return k < 0 ? k : 1;

        return operation_start(m, msg, locks, remove_work, remove_done, strdup(name), free, error);
}

/* ---- rename ---- */

typedef struct RenameArgs {
        char *name;
        char *new_name;
} RenameArgs;

static void rename_args_free(void *p)
{
        RenameArgs *a = p;
        free(a->name);
        free(a->new_name);
        free(a);
}

static int rename_work(Manager *m, void *userdata, char *err, size_t errlen)
{
        RenameArgs *a = userdata;
        return store_rename_image(m->store_fd, a->name, a->new_name, err, errlen);
}

static void rename_done(Manager *m, int result, void *userdata)
{
        RenameArgs *a = userdata;

        if (result >= 0) {
                log_info("Renamed image %s to %s.", a->name, a->new_name);
                (void) manager_send_image_removed(m, a->name);
                (void) manager_send_image_added(m, a->new_name);
        }
}

int image_method_rename(Manager *m, sd_bus_message *msg, const char *name, const char *new_name, sd_bus_error *error)
{
        const char *details[] = {"verb", "rename", "image", name, "new_name", new_name, NULL};
        const char *locks[] = {name, new_name, NULL};
        Image *img = NULL;
        AuthzOwner owner;
        RenameArgs *a;
        int k;

        if ((k = bus_check_image_name(name, "image name", error)) < 0 ||
            (k = bus_check_image_name(new_name, "new image name", error)) < 0 ||
            (k = bus_check_image_exists(m, name, &img, error)) < 0)
                return k;
        owner = image_authz_owner(m, img, false);
        if ((k = bus_check_image_absent(m, new_name, error)) < 0 ||
            (k = bus_check_image_not_busy(m, name, error)) < 0 ||
            (k = bus_check_image_not_busy(m, new_name, error)) < 0)
                return k;

        k = authz_verify_owned(m->authz, msg, STAMP_ACTION_MANAGE_IMAGES, &owner, details, NULL, error);
        if (k <= 0)
                return k < 0 ? k : 1;

        a = calloc(1, sizeof *a);
        if (!a || !(a->name = strdup(name)) || !(a->new_name = strdup(new_name))) {
                if (a)
                        rename_args_free(a);
                return -ENOMEM;
        }
        return operation_start(m, msg, locks, rename_work, rename_done, a, rename_args_free, error);
}

/* ---- read-only ---- */

typedef struct ReadOnlyArgs {
        char *name;
        bool read_only;
} ReadOnlyArgs;

static void read_only_args_free(void *p)
{
        ReadOnlyArgs *a = p;
        free(a->name);
        free(a);
}

static int read_only_work(Manager *m, void *userdata, char *err, size_t errlen)
{
        ReadOnlyArgs *a = userdata;
        return store_set_image_read_only(m->store_fd, a->name, a->read_only, err, errlen);
}

static void read_only_done(Manager *m, int result, void *userdata)
{
        ReadOnlyArgs *a = userdata;
        _cleanup_free_ char *path = NULL;

        if (result >= 0 && image_bus_path(a->name, &path) >= 0)
                (void) sd_bus_emit_properties_changed(m->bus, path, STAMP_IMAGE_IFACE, "ReadOnly", NULL);
}

int image_method_mark_read_only(Manager *m, sd_bus_message *msg, const char *name, int read_only, sd_bus_error *error)
{
        const char *details[] = {"verb", read_only ? "mark-read-only" : "mark-writable", "image", name, NULL};
        const char *locks[] = {name, NULL};
        Image *img = NULL;
        AuthzOwner owner;
        ReadOnlyArgs *a;
        int k;

        if ((k = bus_check_image_name(name, "image name", error)) < 0 ||
            (k = bus_check_image_exists(m, name, &img, error)) < 0)
                return k;
        owner = image_authz_owner(m, img, false);
        if ((k = bus_check_image_not_busy(m, name, error)) < 0)
                return k;

        k = authz_verify_owned(m->authz, msg, STAMP_ACTION_MANAGE_IMAGES, &owner, details, NULL, error);
        if (k <= 0)
                return k < 0 ? k : 1;

        a = calloc(1, sizeof *a);
        if (!a || !(a->name = strdup(name))) {
                free(a);
                return -ENOMEM;
        }
        a->read_only = read_only;
        return operation_start(m, msg, locks, read_only_work, read_only_done, a, read_only_args_free, error);
}

/* ---- the Image object ---- */

static int image_name_from_path(const char *path, char **ret)
{
        _cleanup_free_ char *name = NULL;
        int k = sd_bus_path_decode(path, STAMP_IMAGE_PREFIX, &name);

        if (k <= 0)
                return k;
        if (!image_name_is_valid(name))
                return 0;
        *ret = TAKE_PTR(name);
        return 1;
}

int image_object_find(sd_bus *bus, const char *path, const char *interface, void *userdata, void **found,
                      sd_bus_error *error)
{
        Manager *m = userdata;
        _cleanup_free_ char *name = NULL;
        Image *img = NULL;

        if (image_name_from_path(path, &name) <= 0)
                return 0;
        if (manager_get_image(m, name, &img) < 0)
                return 0;
        *found = img;
        return 1;
}

int image_node_enumerator(sd_bus *bus, const char *path, void *userdata, char ***nodes, sd_bus_error *error)
{
        Manager *m = userdata;
        g_autoptr(GPtrArray) images = NULL;
        char **l;
        int k;

        k = image_list(m, &images);
        if (k < 0)
                return k;
        l = calloc(images->len + 1, sizeof(char *));
        if (!l)
                return -ENOMEM;
        for (guint i = 0; i < images->len; i++) {
                k = image_bus_path(((Image *) images->pdata[i])->name, &l[i]);
                if (k < 0) {
                        strv_freep(&l);
                        return k;
                }
        }
        *nodes = l;
        return 0;
}

static int property_get_type(sd_bus *bus, const char *path, const char *interface, const char *property,
                             sd_bus_message *reply, void *userdata, sd_bus_error *error)
{
        Image *img = userdata;
        return sd_bus_message_append(reply, "s", image_type_to_string(img->type));
}

static int property_get_read_only(sd_bus *bus, const char *path, const char *interface, const char *property,
                                  sd_bus_message *reply, void *userdata, sd_bus_error *error)
{
        Image *img = userdata; /* sd-bus's own getter for "b" reads an int; ours is a bool */
        return sd_bus_message_append(reply, "b", (int) img->read_only);
}

static int property_get_template(sd_bus *bus, const char *path, const char *interface, const char *property,
                                 sd_bus_message *reply, void *userdata, sd_bus_error *error)
{
        Image *img = userdata;
        return sd_bus_message_append(reply, "b", image_is_template(img->manager, img));
}

static int property_get_path(sd_bus *bus, const char *path, const char *interface, const char *property,
                             sd_bus_message *reply, void *userdata, sd_bus_error *error)
{
        Image *img = userdata;
        _cleanup_free_ char *p = NULL;

        if (asprintf(&p, "%s/%s", img->manager->store, img->name) < 0)
                return -ENOMEM;
        return sd_bus_message_append(reply, "s", p);
}

static int property_get_owner(sd_bus *bus, const char *path, const char *interface, const char *property,
                              sd_bus_message *reply, void *userdata, sd_bus_error *error)
{
        Image *img = userdata;
        return sd_bus_message_append(reply, "u", (uint32_t) image_owner(img->manager, img));
}

static int property_get_origin(sd_bus *bus, const char *path, const char *interface, const char *property,
                               sd_bus_message *reply, void *userdata, sd_bus_error *error)
{
        Image *img = userdata;
        _cleanup_free_ char *origin = NULL;

        (void) image_find_origin(img->manager, img, NULL, &origin);
        return sd_bus_message_append(reply, "s", origin ?: "");
}

/* Append a GVariant of the few types a recipe holds as the contents of a "v". */
static int append_variant(sd_bus_message *reply, GVariant *v)
{
        const char *t = g_variant_get_type_string(v);
        int k;

        if (streq(t, "s"))
                return sd_bus_message_append(reply, "v", "s", g_variant_get_string(v, NULL));
        if (streq(t, "b"))
                return sd_bus_message_append(reply, "v", "b", (int) g_variant_get_boolean(v));
        if (streq(t, "t"))
                return sd_bus_message_append(reply, "v", "t", g_variant_get_uint64(v));
        if (streq(t, "x"))
                return sd_bus_message_append(reply, "v", "x", g_variant_get_int64(v));
        if (streq(t, "u"))
                return sd_bus_message_append(reply, "v", "u", g_variant_get_uint32(v));
        if (streq(t, "i"))
                return sd_bus_message_append(reply, "v", "i", g_variant_get_int32(v));
        if (streq(t, "d"))
                return sd_bus_message_append(reply, "v", "d", g_variant_get_double(v));
        if (streq(t, "as")) {
                g_autofree const char **strv = g_variant_get_strv(v, NULL);
                k = sd_bus_message_open_container(reply, 'v', "as");
                if (k >= 0)
                        k = sd_bus_message_append_strv(reply, (char **) strv);
                if (k >= 0)
                        k = sd_bus_message_close_container(reply);
                return k;
        }
        /* image_read_recipe() lets no other type through. */
        return -EINVAL;
}

static int property_get_recipe(sd_bus *bus, const char *path, const char *interface, const char *property,
                               sd_bus_message *reply, void *userdata, sd_bus_error *error)
{
        Image *img = userdata;
        g_autoptr(GVariant) recipe = image_read_recipe(img->manager, img);
        g_autoptr(GVariant) uuid = recipe ? g_variant_lookup_value(recipe, "uuid", G_VARIANT_TYPE_STRING) : NULL;
        GVariantIter it;
        const char *key;
        GVariant *value;
        int k;

        /* A clone (a snapshot) or an import of a template carries its xattr along: the recipe is the
         * template's, not this image's, and is not shown as if it were. */
        if (uuid && img->has_uuid) {
                char hex[33];
                uuid_to_hex(img->uuid, hex);
                if (!streq(g_variant_get_string(uuid, NULL), hex))
                        g_clear_pointer(&recipe, g_variant_unref);
        }
        k = sd_bus_message_open_container(reply, 'a', "{sv}");
        if (k < 0)
                return k;
        if (recipe) {
                g_variant_iter_init(&it, recipe);
                while (g_variant_iter_next(&it, "{&sv}", &key, &value)) {
                        k = sd_bus_message_open_container(reply, 'e', "sv");
                        if (k >= 0)
                                k = sd_bus_message_append(reply, "s", key);
                        if (k >= 0)
                                k = append_variant(reply, value);
                        if (k >= 0)
                                k = sd_bus_message_close_container(reply);
                        g_variant_unref(value);
                        if (k < 0)
                                return k;
                }
        }
        return sd_bus_message_close_container(reply);
}

static int property_get_os_release(sd_bus *bus, const char *path, const char *interface, const char *property,
                                   sd_bus_message *reply, void *userdata, sd_bus_error *error)
{
        Image *img = userdata;
        g_autoptr(GPtrArray) kv = NULL;
        int k;

        k = sd_bus_message_open_container(reply, 'a', "{ss}");
        if (k < 0)
                return k;
        if (image_read_os_release(img->manager, img->name, &kv) >= 0)
                for (guint i = 0; i + 1 < kv->len; i += 2) {
                        k = sd_bus_message_append(reply, "{ss}", kv->pdata[i], kv->pdata[i + 1]);
                        if (k < 0)
                                return k;
                }
        return sd_bus_message_close_container(reply);
}

static int method_clone(sd_bus_message *msg, void *userdata, sd_bus_error *error)
{
        Image *img = userdata;
        const char *new_name;
        int read_only, k;

        k = sd_bus_message_read(msg, "sb", &new_name, &read_only);
        if (k < 0)
                return k;
        return image_method_clone(img->manager, msg, img->name, new_name,
                                  &(CloneOptions) {.read_only = read_only, .keep_identity = -1}, error);
}

static int method_remove(sd_bus_message *msg, void *userdata, sd_bus_error *error)
{
        Image *img = userdata;
        return image_method_remove(img->manager, msg, img->name, error);
}

static int method_rename(sd_bus_message *msg, void *userdata, sd_bus_error *error)
{
        Image *img = userdata;
        const char *new_name;
        int k;

        k = sd_bus_message_read(msg, "s", &new_name);
        if (k < 0)
                return k;
        return image_method_rename(img->manager, msg, img->name, new_name, error);
}

static int method_mark_read_only(sd_bus_message *msg, void *userdata, sd_bus_error *error)
{
        Image *img = userdata;
        int read_only, k;

        k = sd_bus_message_read(msg, "b", &read_only);
        if (k < 0)
                return k;
        return image_method_mark_read_only(img->manager, msg, img->name, read_only, error);
}

static int property_get_limit(sd_bus *bus, const char *path, const char *interface, const char *property,
                              sd_bus_message *reply, void *userdata, sd_bus_error *error)
{
        Image *img = userdata;
        return sd_bus_message_append(reply, "t", image_limit(img->manager, img));
}

const sd_bus_vtable image_vtable[] = {
        SD_BUS_VTABLE_START(0),
        SD_BUS_PROPERTY("Name", "s", NULL, offsetof(Image, name), 0),
        SD_BUS_PROPERTY("Path", "s", property_get_path, 0, 0),
        SD_BUS_PROPERTY("Type", "s", property_get_type, 0, 0),
        SD_BUS_PROPERTY("ReadOnly", "b", property_get_read_only, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("CreationTimestamp", "t", NULL, offsetof(Image, crtime_usec), 0),
        SD_BUS_PROPERTY("ModificationTimestamp", "t", NULL, offsetof(Image, mtime_usec), 0),
        SD_BUS_PROPERTY("Usage", "t", NULL, offsetof(Image, usage), 0),
        SD_BUS_PROPERTY("UsageExclusive", "t", NULL, offsetof(Image, usage_exclusive), 0),
        SD_BUS_PROPERTY("Limit", "t", property_get_limit, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("Template", "b", property_get_template, 0, 0),
        SD_BUS_PROPERTY("Origin", "s", property_get_origin, 0, 0),
        SD_BUS_PROPERTY("Owner", "u", property_get_owner, 0, 0),
        SD_BUS_PROPERTY("Recipe", "a{sv}", property_get_recipe, 0, 0),
        SD_BUS_PROPERTY("OSRelease", "a{ss}", property_get_os_release, 0, 0),
        SD_BUS_PROPERTY("Snapshots", "u", image_property_get_snapshots, 0, 0),
        SD_BUS_METHOD_WITH_ARGS("Clone", SD_BUS_ARGS("s", new_name, "b", read_only), SD_BUS_NO_RESULT, method_clone,
                                SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD("Remove", "", "", method_remove, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("Rename", SD_BUS_ARGS("s", new_name), SD_BUS_NO_RESULT, method_rename,
                                SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("MarkReadOnly", SD_BUS_ARGS("b", read_only), SD_BUS_NO_RESULT, method_mark_read_only,
                                SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_VTABLE_END,
};
