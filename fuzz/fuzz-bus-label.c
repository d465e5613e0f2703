/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* Bus-label escaping of image names into object paths, both ways.
 *
 * Encoding: any string becomes a valid object path exactly one label below the prefix, and decodes
 * back to itself. Decoding: any object path a caller may send either names no image, or names a
 * valid image name whose own path is that one label — and image_object_find() on a real store then
 * finds only real images of that store (never a hidden temporary, a nested directory, or a symlink
 * out of the store). */
#include <fcntl.h>
#include <sys/stat.h>

#include <glib.h>

#include "fuzz-util.h"
#include "image-dbus.h"
#include "names.h"
#include "stamp-bus.h"

static Manager *manager;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
        char tmpl[] = "/tmp/stamp-fuzz-label-XXXXXX";
        char *top = mkdtemp(tmpl);
        static const char *const dirs[] = {"store",
                                           "outside",
                                           "store/base",
                                           "store/a",
                                           "store/a/b",
                                           "store/my-image.v2",
                                           "store/.#stamp-web-0000",
                                           "store/-x",
                                           NULL};
        char p[PATH_MAX];

        if (!top)
                abort();
        for (const char *const *d = dirs; *d; d++) {
                snprintf(p, sizeof p, "%s/%s", top, *d);
                if (mkdir(p, 0755) < 0)
                        abort();
        }
        snprintf(p, sizeof p, "%s/store/evil", top);
        if (symlink("../outside", p) < 0)
                abort();
        if (manager_new(&manager) < 0)
                abort();
        snprintf(p, sizeof p, "%s/store", top);
        manager->store = strdup(p);
        manager->store_fd = open(p, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (manager->store_fd < 0)
                abort();
        return 0;
}

static void check_encode(const char *s)
{
        char *path = NULL, *back = NULL;
        const char *label;

        FUZZ_CHECK(sd_bus_path_encode(STAMP_IMAGE_PREFIX, s, &path) >= 0, "cannot encode \"%s\"", s);
        FUZZ_CHECK(sd_bus_object_path_is_valid(path), "\"%s\" → invalid object path %s", s, path);
        FUZZ_CHECK(strncmp(path, STAMP_IMAGE_PREFIX "/", strlen(STAMP_IMAGE_PREFIX) + 1) == 0, "%s outside prefix",
                   path);
        label = path + strlen(STAMP_IMAGE_PREFIX) + 1;
        FUZZ_CHECK(label[0] && !strchr(label, '/'), "\"%s\" → %s is not one label", s, path);
        FUZZ_CHECK(sd_bus_path_decode(path, STAMP_IMAGE_PREFIX, &back) > 0, "%s does not decode", path);
        FUZZ_CHECK(strcmp(back, s) == 0, "\"%s\" → %s → \"%s\"", s, path, back);
        free(path);
        free(back);
}

static void check_decode(const char *path)
{
        char *name = NULL;
        void *found = NULL;
        sd_bus_error error = SD_BUS_ERROR_NULL;
        int k;

        if (!sd_bus_object_path_is_valid(path))
                return; /* the bus daemon never delivers such a path */

        k = sd_bus_path_decode(path, STAMP_IMAGE_PREFIX, &name);
        if (k > 0 && image_name_is_valid(name)) {
                char *canonical = NULL;
                /* A name that passes is a plain name: the path held one label. */
                FUZZ_CHECK(!strchr(path + strlen(STAMP_IMAGE_PREFIX) + 1, '/'), "%s → \"%s\"", path, name);
                FUZZ_CHECK(image_bus_path(name, &canonical) >= 0, "no path for %s", name);
                check_encode(name);
                free(canonical);
        }

        k = image_object_find(NULL, path, STAMP_IMAGE_IFACE, manager, &found, &error);
        FUZZ_CHECK(k >= 0, "image_object_find(%s) = %d", path, k);
        if (k > 0) {
                const Image *img = found;
                struct stat st;

                FUZZ_CHECK(name && strcmp(img->name, name) == 0, "%s found image %s", path, img->name);
                FUZZ_CHECK(image_name_is_valid(img->name), "%s found invalid name %s", path, img->name);
                FUZZ_CHECK(strcmp(img->name, "base") == 0 || strcmp(img->name, "a") == 0 ||
                                   strcmp(img->name, "my-image.v2") == 0,
                           "%s found %s, which is no image", path, img->name);
                FUZZ_CHECK(fstatat(manager->store_fd, img->name, &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISDIR(st.st_mode),
                           "%s: %s is no directory of the store", path, img->name);
        }
        /* Found images are cached per dispatched call; empty the cache as the event loop would. */
        g_hash_table_remove_all(manager->image_cache);
        sd_bus_error_free(&error);
        free(name);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
        char *s = malloc(size + 1);
        char *path;

        if (!s)
                abort();
        memcpy(s, data, size);
        s[size] = '\0';

        check_encode(s);
        check_decode(s);
        /* The same bytes as a label right below the prefix, as most hostile paths would be. */
        if (asprintf(&path, STAMP_IMAGE_PREFIX "/%s", s) < 0)
                abort();
        check_decode(path);
        free(path);
        free(s);
        return 0;
}
