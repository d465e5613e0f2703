/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <errno.h>
#include <stddef.h>
#include <string.h>

#include <glib.h>

#include "settings.h"
#include "util.h"

void settings_defaults(Settings *s)
{
        *s = (Settings) {
                .images_per_user = SETTINGS_DEFAULT_IMAGES_PER_USER,
                .bytes_per_user = UINT64_MAX,
                .jobs_max = SETTINGS_DEFAULT_JOBS,
                .jobs_per_user_max = SETTINGS_DEFAULT_JOBS_PER_USER,
                .machines_max = SETTINGS_DEFAULT_MACHINES,
                .machines_per_user_max = SETTINGS_DEFAULT_MACHINES_PER_USER,
                .operations_max = SETTINGS_DEFAULT_OPERATIONS,
                .operations_per_user_max = SETTINGS_DEFAULT_OPERATIONS_PER_USER,
                .snapshots_per_image = SETTINGS_DEFAULT_SNAPSHOTS_PER_IMAGE,
                .blob_cache_bytes = SETTINGS_DEFAULT_BLOB_CACHE_BYTES,
                .registry_credentials = SETTINGS_DEFAULT_REGISTRY_CREDENTIALS,
                .package_cache_max = SETTINGS_DEFAULT_PACKAGE_CACHE,
                .template_cache_images = SETTINGS_DEFAULT_TEMPLATE_CACHE_IMAGES,
        };
}

int parse_size(const char *s, uint64_t *ret)
{
        static const char units[] = "KMGTPE";
        guint64 n;
        char *end;

        if (streq(s, "infinity")) {
                *ret = UINT64_MAX;
                return 0;
        }
        if (!g_ascii_isdigit(s[0]))
                return -EINVAL;
        errno = 0;
        n = g_ascii_strtoull(s, &end, 10);
        if (errno != 0)
                return -EINVAL;
        if (*end) {
                const char *u = strchr(units, g_ascii_toupper(*end));
                if (!u || !*u || (end[1] && !(g_ascii_toupper(end[1]) == 'B' && !end[2])))
                        return -EINVAL;
                for (const char *p = units; p <= u; p++) {
                        if (n > UINT64_MAX / 1024)
                                return -ERANGE;
                        n *= 1024;
                }
        }
        *ret = n;
        return 0;
}

/* The caps of [Limits]: a number from 1 to SETTINGS_CAP_MAX each. */
static const struct {
        const char *key;
        size_t offset;
} caps[] = {
        {"Jobs", offsetof(Settings, jobs_max)},
        {"JobsPerUser", offsetof(Settings, jobs_per_user_max)},
        {"Machines", offsetof(Settings, machines_max)},
        {"MachinesPerUser", offsetof(Settings, machines_per_user_max)},
        {"Operations", offsetof(Settings, operations_max)},
        {"OperationsPerUser", offsetof(Settings, operations_per_user_max)},
        {"SnapshotsPerImage", offsetof(Settings, snapshots_per_image)},
};

static const char *const known_limits[] = {"ImagesPerUser",
                                           "BytesPerUser",
                                           "Jobs",
                                           "JobsPerUser",
                                           "Machines",
                                           "MachinesPerUser",
                                           "Operations",
                                           "OperationsPerUser",
                                           "SnapshotsPerImage",
                                           "BlobCacheBytes",
                                           "PackageCacheBytes",
                                           "TemplateCacheImages",
                                           NULL};

/* A size key of [Limits] (20G, or infinity) into *field, which keeps its value if the key's is none;
 * @example goes into the warning. */
static void read_size(GKeyFile *kf, const char *path, const char *key, const char *example, uint64_t *field)
{
        g_autofree char *v = NULL;
        uint64_t n;

        if (!g_key_file_has_key(kf, "Limits", key, NULL))
                return;
        v = g_key_file_get_string(kf, "Limits", key, NULL);
        if (v && parse_size(v, &n) >= 0)
                *field = n;
        else
                log_warning("%s: %s=%s is not a size such as %s (or infinity); ignored", path, key, v ?: "", example);
}

int settings_load(Settings *s, const char *path)
{
        g_autoptr(GKeyFile) kf = g_key_file_new();
        g_autoptr(GError) err = NULL;
        g_auto(GStrv) groups = NULL;

        if (!g_key_file_load_from_file(kf, path, G_KEY_FILE_NONE, &err)) {
                if (g_error_matches(err, G_FILE_ERROR, G_FILE_ERROR_NOENT))
                        return -ENOENT;
                log_error("Cannot read %s: %s; using the defaults", path, err->message);
                return -EINVAL;
        }

        groups = g_key_file_get_groups(kf, NULL);
        for (char **g = groups; g && *g; g++) {
                g_auto(GStrv) keys = NULL;
                if (streq(*g, "Registries"))
                        continue;
                if (!streq(*g, "Limits")) {
                        log_warning("%s: unknown section [%s], ignored", path, *g);
                        continue;
                }
                keys = g_key_file_get_keys(kf, *g, NULL, NULL);
                for (char **k = keys; k && *k; k++)
                        if (!g_strv_contains(known_limits, *k))
                                log_warning("%s: unknown key %s= in [Limits], ignored", path, *k);
        }

        if (g_key_file_has_key(kf, "Limits", "ImagesPerUser", NULL)) {
                g_autofree char *v = g_key_file_get_string(kf, "Limits", "ImagesPerUser", NULL);
                guint64 n;
                if (v && streq(v, "infinity"))
                        s->images_per_user = UINT_MAX;
                else if (v && g_ascii_string_to_unsigned(v, 10, 0, 1000000, &n, NULL))
                        s->images_per_user = (unsigned) n;
                else
                        log_warning("%s: ImagesPerUser=%s is not a number of images (or infinity); keeping %u", path,
                                    v ?: "", s->images_per_user);
        }
        read_size(kf, path, "BytesPerUser", "20G", &s->bytes_per_user);
        read_size(kf, path, "BlobCacheBytes", "10G", &s->blob_cache_bytes);
        read_size(kf, path, "PackageCacheBytes", "2G", &s->package_cache_max);
        if (g_key_file_has_key(kf, "Registries", "CredentialsFile", NULL)) {
                g_autofree char *v = g_key_file_get_string(kf, "Registries", "CredentialsFile", NULL);
                if (v && v[0] == '/' && strlen(v) < sizeof s->registry_credentials)
                        strcpy(s->registry_credentials, v);
                else
                        log_warning("%s: CredentialsFile= must be an absolute path; ignored", path);
        }
        if (g_key_file_has_key(kf, "Limits", "TemplateCacheImages", NULL)) {
                g_autofree char *v = g_key_file_get_string(kf, "Limits", "TemplateCacheImages", NULL);
                guint64 n;
                if (v && g_ascii_string_to_unsigned(v, 10, 0, SETTINGS_CAP_MAX, &n, NULL))
                        s->template_cache_images = n;
                else
                        log_warning("%s: TemplateCacheImages=%s is not a number from 0 to %d; ignored", path, v ?: "",
                                    SETTINGS_CAP_MAX);
        }
        for (size_t i = 0; i < G_N_ELEMENTS(caps); i++) {
                unsigned *field = (unsigned *) ((char *) s + caps[i].offset);
                g_autofree char *v = g_key_file_get_string(kf, "Limits", caps[i].key, NULL);
                guint64 n;

                if (!v)
                        continue;
                if (g_ascii_string_to_unsigned(v, 10, 1, SETTINGS_CAP_MAX, &n, NULL))
                        *field = (unsigned) n;
                else
                        log_warning("%s: %s=%s is not a number from 1 to %d; keeping %u", path, caps[i].key, v,
                                    SETTINGS_CAP_MAX, *field);
        }
        return 0;
}
