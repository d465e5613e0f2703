/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

#include <glib.h>

#include "btrfs-util.h"
#include "manager.h"
#include "options.h"
#include "store.h"

typedef enum { IMAGE_SUBVOLUME, IMAGE_DIRECTORY } ImageType;

/* A snapshot of what one image of the store is like; loaded on demand, never cached. */
typedef struct Image {
        Manager *manager;
        char *name;
        ImageType type;
        bool read_only;
        uint64_t crtime_usec;
        uint64_t mtime_usec;
        uint64_t usage;           /* UINT64_MAX: unknown */
        uint64_t usage_exclusive; /* UINT64_MAX: unknown */
        uint64_t subvol_id;
        bool has_uuid;
        uint8_t uuid[16];
        uint8_t parent_uuid[16];
} Image;

/* A recipe (written by the template build, see RECIPE_XATTR) is a few hundred bytes, at most ~5 KiB
 * with template.c's limits; a bigger xattr is not read at all. */
#define RECIPE_XATTR_MAX (8 * 1024)
#define RECIPE_KEY_MAX 64

/* How many UUID → name hints the manager keeps for Origin (see Manager.uuid_hints). */
#define UUID_HINTS_MAX 8192

const char *image_type_to_string(ImageType t);

Image *image_free(Image *i);
static inline void image_freep(Image **i)
{
        image_free(*i);
}
#define _cleanup_image_ _cleanup_(image_freep)

/* Load the image @name (a valid name) of the store. -ENOENT if there is none. */
int image_load(Manager *m, const char *name, Image **ret);
/* Every image of the store, sorted by name (GPtrArray of Image*, freeing them). */
int image_list(Manager *m, GPtrArray **ret);
/* The name of the image this one was cloned from (btrfs parent UUID), or NULL. */
int image_find_origin(Manager *m, const Image *img, GPtrArray *all, char **ret);
/* The recipe of a template, NULL if the image has none (or none that is valid): an a{sv} of recipe keys
 * with values of the types a recipe has; anything else in the xattr is dropped. Describes how the image
 * was made, as far as its own tree tells: nothing to base a decision on. */
GVariant *image_read_recipe(Manager *m, const Image *img);
bool image_is_template(Manager *m, const Image *img);
/* The uid that made the image through stampd (see store/owners.h); 0 for images made any other way. */
uid_t image_owner(Manager *m, const Image *img);
/* os-release of the image as key/value pairs (a GPtrArray of char*, alternating), never following links
 * out of the image. */
int image_read_os_release(Manager *m, const char *name, GPtrArray **ret);

/* CloneImageEx's options; CloneImage and Image.Clone give read_only alone. */
typedef struct CloneOptions {
        int read_only;     /* -1: absent (no) */
        int keep_identity; /* -1: absent (no): a clone of a template gets a fresh identity */
} CloneOptions;
extern const OptionSpec clone_options[];
int image_method_clone(Manager *m, sd_bus_message *msg, const char *source, const char *new_name, const CloneOptions *o,
                       sd_bus_error *error);
