/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* stampd.conf (daemon/settings.c): sizes, the defaults, what a file sets, and what it cannot. */
#include <glib.h>
#include <glib/gstdio.h>

#include "settings.h"

static void test_parse_size(void)
{
        static const struct {
                const char *in;
                uint64_t out;
        } good[] = {
                {"0", 0},
                {"4096", 4096},
                {"1K", 1024},
                {"1k", 1024},
                {"20G", UINT64_C(20) << 30},
                {"3T", UINT64_C(3) << 40},
                {"2MB", UINT64_C(2) << 20},
                {"infinity", UINT64_MAX},
        };
        static const char *const bad[] = {
                "", "G", "-1", "1.5G", "12Q", "1GiB", "1 G", "20GG", "99999999999999999999", "16E", "infinite"};
        uint64_t v;

        for (size_t i = 0; i < G_N_ELEMENTS(good); i++) {
                g_assert_cmpint(parse_size(good[i].in, &v), ==, 0);
                g_assert_cmpuint(v, ==, good[i].out);
        }
        for (size_t i = 0; i < G_N_ELEMENTS(bad); i++)
                g_assert_cmpint(parse_size(bad[i], &v), <, 0);
}

static char *write_config(const char *text)
{
        g_autoptr(GError) err = NULL;
        char *path = NULL;
        int fd = g_file_open_tmp("stampd-XXXXXX.conf", &path, &err);

        g_assert_no_error(err);
        g_assert_true(g_file_set_contents(path, text, -1, &err));
        g_assert_no_error(err);
        close(fd);
        return path;
}

static void test_defaults_and_missing_file(void)
{
        Settings s;

        settings_defaults(&s);
        g_assert_cmpuint(s.images_per_user, ==, 32);
        g_assert_cmpuint(s.bytes_per_user, ==, UINT64_MAX);
        g_assert_cmpuint(s.jobs_max, ==, 16);
        g_assert_cmpuint(s.jobs_per_user_max, ==, 4);
        g_assert_cmpint(settings_load(&s, "/nonexistent/stampd.conf"), ==, -ENOENT);
        g_assert_cmpuint(s.images_per_user, ==, 32);
}

static void test_file_sets_limits(void)
{
        g_autofree char *path = write_config("# a comment\n[Limits]\nImagesPerUser=5\nBytesPerUser=20G\nJobs=3\n"
                                             "JobsPerUser=1\nMachines=8\nMachinesPerUser=2\nOperations=9\n"
                                             "OperationsPerUser=7\n");
        Settings s;

        settings_defaults(&s);
        g_assert_cmpint(settings_load(&s, path), ==, 0);
        g_assert_cmpuint(s.images_per_user, ==, 5);
        g_assert_cmpuint(s.bytes_per_user, ==, UINT64_C(20) << 30);
        g_assert_cmpuint(s.jobs_max, ==, 3);
        g_assert_cmpuint(s.jobs_per_user_max, ==, 1);
        g_assert_cmpuint(s.machines_max, ==, 8);
        g_assert_cmpuint(s.machines_per_user_max, ==, 2);
        g_assert_cmpuint(s.operations_max, ==, 9);
        g_assert_cmpuint(s.operations_per_user_max, ==, 7);
        (void) g_unlink(path);
}

static void test_bad_values_keep_defaults(void)
{
        g_autofree char *path = write_config("[Limits]\nImagesPerUser=lots\nBytesPerUser=12Q\nJobs=0\n"
                                             "JobsPerUser=100000\nMachines=-1\nFrobs=2\n[Other]\nX=1\n");
        Settings s;

        settings_defaults(&s);
        g_assert_cmpint(settings_load(&s, path), ==, 0);
        g_assert_cmpuint(s.images_per_user, ==, 32);
        g_assert_cmpuint(s.bytes_per_user, ==, UINT64_MAX);
        g_assert_cmpuint(s.jobs_max, ==, 16);
        g_assert_cmpuint(s.jobs_per_user_max, ==, 4);
        g_assert_cmpuint(s.machines_max, ==, 64);
        (void) g_unlink(path);
}

static void test_infinity(void)
{
        g_autofree char *path = write_config("[Limits]\nImagesPerUser=infinity\nBytesPerUser=infinity\n");
        Settings s;

        settings_defaults(&s);
        s.bytes_per_user = 1;
        g_assert_cmpint(settings_load(&s, path), ==, 0);
        g_assert_cmpuint(s.images_per_user, ==, UINT_MAX);
        g_assert_cmpuint(s.bytes_per_user, ==, UINT64_MAX);
        (void) g_unlink(path);
}

static void test_package_cache(void)
{
        g_autofree char *path = write_config("[Limits]\nPackageCacheBytes=512M\n");
        g_autofree char *bad = write_config("[Limits]\nPackageCacheBytes=lots\n");
        Settings s;

        settings_defaults(&s);
        g_assert_cmpuint(s.package_cache_max, ==, SETTINGS_DEFAULT_PACKAGE_CACHE);
        g_assert_cmpint(settings_load(&s, path), ==, 0);
        g_assert_cmpuint(s.package_cache_max, ==, UINT64_C(512) << 20);
        settings_defaults(&s);
        g_assert_cmpint(settings_load(&s, bad), ==, 0);
        g_assert_cmpuint(s.package_cache_max, ==, SETTINGS_DEFAULT_PACKAGE_CACHE);
        (void) g_unlink(path);
        (void) g_unlink(bad);
}

static void test_template_cache_images(void)
{
        g_autofree char *path = write_config("[Limits]\nTemplateCacheImages=0\n");
        g_autofree char *bad = write_config("[Limits]\nTemplateCacheImages=-1\n");
        Settings s;

        settings_defaults(&s);
        g_assert_cmpuint(s.template_cache_images, ==, SETTINGS_DEFAULT_TEMPLATE_CACHE_IMAGES);
        g_assert_cmpint(settings_load(&s, path), ==, 0);
        g_assert_cmpuint(s.template_cache_images, ==, 0);
        settings_defaults(&s);
        g_assert_cmpint(settings_load(&s, bad), ==, 0);
        g_assert_cmpuint(s.template_cache_images, ==, SETTINGS_DEFAULT_TEMPLATE_CACHE_IMAGES);
        (void) g_unlink(path);
        (void) g_unlink(bad);
}

static void test_unreadable_file(void)
{
        g_autofree char *path = write_config("[Limits\nImagesPerUser=5\n");
        Settings s;

        settings_defaults(&s);
        g_assert_cmpint(settings_load(&s, path), ==, -EINVAL);
        g_assert_cmpuint(s.images_per_user, ==, 32);
        (void) g_unlink(path);
}

static void test_snapshots_per_image(void)
{
        g_autofree char *good = write_config("[Limits]\nSnapshotsPerImage=3\n");
        g_autofree char *bad = write_config("[Limits]\nSnapshotsPerImage=0\n");
        Settings s;

        settings_defaults(&s);
        g_assert_cmpuint(s.snapshots_per_image, ==, SETTINGS_DEFAULT_SNAPSHOTS_PER_IMAGE);
        g_assert_cmpint(settings_load(&s, good), ==, 0);
        g_assert_cmpuint(s.snapshots_per_image, ==, 3);
        settings_defaults(&s);
        g_assert_cmpint(settings_load(&s, bad), ==, 0);
        g_assert_cmpuint(s.snapshots_per_image, ==, SETTINGS_DEFAULT_SNAPSHOTS_PER_IMAGE);
        (void) g_unlink(good);
        (void) g_unlink(bad);
}

static void test_registries(void)
{
        g_autofree char *path = write_config("[Limits]\nBlobCacheBytes=2G\n[Registries]\n"
                                             "CredentialsFile=/etc/other/registries.conf\n");
        g_autofree char *bad = write_config("[Limits]\nBlobCacheBytes=lots\n[Registries]\nCredentialsFile=relative\n");
        Settings s;

        settings_defaults(&s);
        g_assert_cmpuint(s.blob_cache_bytes, ==, UINT64_C(10) << 30);
        g_assert_cmpstr(s.registry_credentials, ==, "/etc/stamp/registries.conf");
        g_assert_cmpint(settings_load(&s, path), ==, 0);
        g_assert_cmpuint(s.blob_cache_bytes, ==, UINT64_C(2) << 30);
        g_assert_cmpstr(s.registry_credentials, ==, "/etc/other/registries.conf");
        settings_defaults(&s);
        g_assert_cmpint(settings_load(&s, bad), ==, 0);
        g_assert_cmpuint(s.blob_cache_bytes, ==, UINT64_C(10) << 30);
        g_assert_cmpstr(s.registry_credentials, ==, "/etc/stamp/registries.conf");
        (void) g_unlink(path);
        (void) g_unlink(bad);
}

int main(int argc, char *argv[])
{
        g_test_init(&argc, &argv, NULL);
        g_test_add_func("/settings/parse-size", test_parse_size);
        g_test_add_func("/settings/defaults", test_defaults_and_missing_file);
        g_test_add_func("/settings/file", test_file_sets_limits);
        g_test_add_func("/settings/bad-values", test_bad_values_keep_defaults);
        g_test_add_func("/settings/infinity", test_infinity);
        g_test_add_func("/settings/unreadable", test_unreadable_file);
        g_test_add_func("/settings/snapshots-per-image", test_snapshots_per_image);
        g_test_add_func("/settings/registries", test_registries);
        g_test_add_func("/settings/package-cache", test_package_cache);
        g_test_add_func("/settings/template-cache-images", test_template_cache_images);
        return g_test_run();
}
