/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* Object paths of images: the bus-label escaping round trip, and that a path never names anything
 * but an image of the store (image_object_find, image_node_enumerator, and image_load's own name
 * check). */
#include <fcntl.h>
#include <sys/stat.h>

#include <glib.h>
#include <glib/gstdio.h>

#include "image-dbus.h"
#include "names.h"
#include "stamp-bus.h"

static void assert_round_trip(const char *name)
{
        g_autofree char *path = NULL, *back = NULL;
        const char *label;

        g_assert_cmpint(image_bus_path(name, &path), >=, 0);
        g_assert_true(sd_bus_object_path_is_valid(path));
        g_assert_true(g_str_has_prefix(path, STAMP_IMAGE_PREFIX "/"));
        label = path + strlen(STAMP_IMAGE_PREFIX "/");
        g_assert_cmpstr(label, !=, "");
        g_assert_null(strchr(label, '/'));
        g_assert_cmpint(sd_bus_path_decode(path, STAMP_IMAGE_PREFIX, &back), >, 0);
        g_assert_cmpstr(back, ==, name);
}

static void test_known_escapes(void)
{
        static const struct {
                const char *name, *label;
        } cases[] = {
                {"base", "base"},
                {"my-image.v2", "my_2dimage_2ev2"},
                {"1st_one", "_31st_5fone"},
                {"A", "A"},
                {"a0", "a0"},
                {"_", "_5f"},
        };

        for (size_t i = 0; i < G_N_ELEMENTS(cases); i++) {
                g_autofree char *path = NULL;
                g_autofree char *want = g_strconcat(STAMP_IMAGE_PREFIX "/", cases[i].label, NULL);

                g_assert_cmpint(image_bus_path(cases[i].name, &path), >=, 0);
                g_assert_cmpstr(path, ==, want);
                assert_round_trip(cases[i].name);
        }
}

static void test_random_valid_names_round_trip(void)
{
        static const char chars[] = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.";
        GRand *r = g_rand_new_with_seed(4711);

        for (unsigned i = 0; i < 20000; i++) {
                char name[65];
                int n = g_rand_int_range(r, 1, 65);

                for (int k = 0; k < n; k++)
                        name[k] = chars[g_rand_int_range(r, 0, sizeof chars - 1)];
                name[n] = '\0';
                if (!image_name_is_valid(name))
                        continue;
                assert_round_trip(name);
        }
        g_rand_free(r);
}

static void test_any_string_round_trips(void)
{
        /* The escaping itself must hold for every string, not just valid names: whatever comes in,
         * the path stays one label below the prefix. */
        static const char *const odd[] = {"..",   ".",        "a/b", "../../etc", "/",
                                          "x\ny", "\xc3\xbc", "_2f", "%2f",       "\xff\xfe"};

        for (size_t i = 0; i < G_N_ELEMENTS(odd); i++)
                assert_round_trip(odd[i]);
}

/* ---- image_object_find on a real (non-btrfs) store ---- */

typedef struct {
        Manager *m;
        char *dir;
        char *outside;
} Store;

static void store_setup(Store *s, gconstpointer data)
{
        g_autofree char *top = g_dir_make_tmp("stamp-unit-XXXXXX", NULL);

        g_assert_nonnull(top);
        s->dir = g_build_filename(top, "store", NULL);
        s->outside = g_build_filename(top, "outside", NULL);
        g_assert_cmpint(g_mkdir(s->dir, 0755), ==, 0);
        g_assert_cmpint(g_mkdir(s->outside, 0755), ==, 0);
        for (const char *const *n =
                     (const char *const[]) {"base", "a", "my-image.v2", ".#stamp-half-made-0000", "-dash", NULL};
             *n; n++) {
                g_autofree char *p = g_build_filename(s->dir, *n, NULL);
                g_assert_cmpint(g_mkdir(p, 0755), ==, 0);
        }
        {
                /* Something nested that an escaped '/' might reach, and a link out of the store. */
                g_autofree char *nested = g_build_filename(s->dir, "a", "b", NULL);
                g_autofree char *link = g_build_filename(s->dir, "evil", NULL);
                g_assert_cmpint(g_mkdir(nested, 0755), ==, 0);
                g_assert_cmpint(symlink(s->outside, link), ==, 0);
        }

        g_assert_cmpint(manager_new(&s->m), >=, 0);
        s->m->store = g_strdup(s->dir);
        s->m->store_fd = open(s->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        g_assert_cmpint(s->m->store_fd, >=, 0);
}

static void store_teardown(Store *s, gconstpointer data)
{
        g_autofree char *top = g_path_get_dirname(s->dir);
        char *argv[] = {(char *) "rm", (char *) "-rf", (char *) "--", top, NULL};

        /* manager_free() frees m->store with free(): it was g_strdup'd, which is malloc on glibc. */
        manager_free(s->m);
        g_assert_true(g_spawn_sync(NULL, argv, NULL, G_SPAWN_SEARCH_PATH, NULL, NULL, NULL, NULL, NULL, NULL));
        g_free(s->dir);
        g_free(s->outside);
}

static gboolean finds(Store *s, const char *path, const char **name)
{
        void *found = NULL;
        sd_bus_error error = SD_BUS_ERROR_NULL;
        int k = image_object_find(NULL, path, STAMP_IMAGE_IFACE, s->m, &found, &error);

        g_assert_cmpint(k, >=, 0);
        sd_bus_error_free(&error);
        if (k > 0 && name)
                *name = ((Image *) found)->name;
        return k > 0;
}

static void test_object_find(Store *s, gconstpointer data)
{
        const char *name = NULL;

        g_assert_true(finds(s, STAMP_IMAGE_PREFIX "/base", &name));
        g_assert_cmpstr(name, ==, "base");
        g_assert_true(finds(s, STAMP_IMAGE_PREFIX "/my_2dimage_2ev2", &name));
        g_assert_cmpstr(name, ==, "my-image.v2");

        /* What must never resolve to an object: */
        g_assert_false(finds(s, STAMP_IMAGE_PREFIX, NULL));
        g_assert_false(finds(s, STAMP_IMAGE_PREFIX "/missing", NULL));
        g_assert_false(finds(s, STAMP_IMAGE_PREFIX "/_2e", NULL));       /* "."  */
        g_assert_false(finds(s, STAMP_IMAGE_PREFIX "/_2e_2e", NULL));    /* ".." */
        g_assert_false(finds(s, STAMP_IMAGE_PREFIX "/a_2fb", NULL));     /* "a/b", which exists */
        g_assert_false(finds(s, STAMP_IMAGE_PREFIX "/a/b", NULL));       /* a sub-path */
        g_assert_false(finds(s, STAMP_IMAGE_PREFIX "/_2d_64ash", NULL)); /* "-dash", on disk */
        g_assert_false(finds(s, STAMP_IMAGE_PREFIX "/_2e_23stamp_2dhalf_2dmade_2d0000", NULL));
        g_assert_false(finds(s, STAMP_IMAGE_PREFIX "/evil", NULL)); /* a symlink out */
        g_assert_false(finds(s, STAMP_IMAGE_PREFIX "x/base", NULL));
        g_assert_false(finds(s, "/io/stamp/Stamp1/machine/base", NULL));
}

static void test_node_enumerator(Store *s, gconstpointer data)
{
        sd_bus_error error = SD_BUS_ERROR_NULL;
        char **nodes = NULL;

        g_assert_cmpint(image_node_enumerator(NULL, STAMP_IMAGE_PREFIX, s->m, &nodes, &error), >=, 0);
        g_assert_nonnull(nodes);
        g_assert_cmpuint(g_strv_length(nodes), ==, 3);
        g_assert_cmpstr(nodes[0], ==, STAMP_IMAGE_PREFIX "/a");
        g_assert_cmpstr(nodes[1], ==, STAMP_IMAGE_PREFIX "/base");
        g_assert_cmpstr(nodes[2], ==, STAMP_IMAGE_PREFIX "/my_2dimage_2ev2");
        for (char **n = nodes; *n; n++)
                free(*n);
        free(nodes);
        sd_bus_error_free(&error);
}

/* image_load() checks the name itself, not only the bus handlers before it: a name that is no image
 * name never loads, even where something by that name is there to open. */
static void test_image_load_names(Store *s, gconstpointer data)
{
        static const char *const refused[] = {
                ".#stamp-half-made-0000", "-dash", ".", "..", "../outside", "a/b", "", "evil/", "./base"};
        Image *img = NULL;

        g_assert_cmpint(image_load(s->m, "base", &img), ==, 0);
        g_assert_cmpstr(img->name, ==, "base");
        image_free(img);
        for (size_t i = 0; i < G_N_ELEMENTS(refused); i++) {
                img = NULL;
                if (image_load(s->m, refused[i], &img) != -EINVAL)
                        g_error("image_load(\"%s\") did not refuse the name", refused[i]);
                g_assert_null(img);
        }
}

int main(int argc, char *argv[])
{
        g_test_init(&argc, &argv, NULL);
        g_test_add_func("/bus-path/known-escapes", test_known_escapes);
        g_test_add_func("/bus-path/random-valid-names", test_random_valid_names_round_trip);
        g_test_add_func("/bus-path/any-string", test_any_string_round_trips);
        g_test_add("/bus-path/object-find", Store, NULL, store_setup, test_object_find, store_teardown);
        g_test_add("/bus-path/node-enumerator", Store, NULL, store_setup, test_node_enumerator, store_teardown);
        g_test_add("/bus-path/image-load-names", Store, NULL, store_setup, test_image_load_names, store_teardown);
        return g_test_run();
}
