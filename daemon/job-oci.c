/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <fcntl.h>
#include <inttypes.h>
#include <sys/stat.h>

#include "authz.h"
#include "errors.h"
#include "escape.h"
#include "image.h"
#include "image-dbus.h"
#include "job.h"
#include "job-dbus.h"
#include "job-util.h"
#include "machine.h"
#include "names.h"
#include "operation.h"
#include "options.h"
#include "pool.h"

/* PushImage and PullImage: jobs of stamp-transfer (transfer/oci.c). Here the reference is read and
 * checked, the caller authorized, and the job started; the registry is spoken to by the helper alone,
 * which also reads the credentials file, so that no secret passes through the daemon. */

#define REFERENCE_MAX 512

typedef struct OciReference {
        char *host;       /* host[:port] */
        char *repository; /* a/b/c */
        char *tag;        /* or NULL */
        char *digest;     /* "sha256:…", or NULL */
} OciReference;

static void oci_reference_done(OciReference *r)
{
        free(r->host);
        free(r->repository);
        free(r->tag);
        free(r->digest);
}

static bool host_is_valid(const char *s, size_t n)
{
        size_t colon = n;

        if (n == 0 || n > 255)
                return false;
        for (size_t i = 0; i < n; i++) {
                char ch = s[i];
                if (ch == ':') {
                        if (colon != n)
                                return false;
                        colon = i;
                } else if (colon != n) {
                        if (!g_ascii_isdigit(ch))
                                return false;
                } else if (!g_ascii_isalnum(ch) && ch != '.' && ch != '-')
                        return false;
        }
        return colon > 0 && colon != n - 1 && s[0] != '-' && s[0] != '.';
}

/* The distribution spec's repository name: path components of [a-z0-9]+([._-][a-z0-9]+)*. */
static bool repository_is_valid(const char *s)
{
        size_t n = strlen(s);

        if (n == 0 || n > 255)
                return false;
        for (const char *p = s; *p;) {
                size_t len = strcspn(p, "/");
                if (len == 0)
                        return false;
                for (size_t i = 0; i < len; i++) {
                        char ch = p[i];
                        bool alnum = g_ascii_islower(ch) || g_ascii_isdigit(ch);
                        bool sep = ch == '.' || ch == '_' || ch == '-';
                        if (!alnum && !sep)
                                return false;
                        if (sep && (i == 0 || i == len - 1))
                                return false;
                }
                p += len;
                if (*p == '/') {
                        p++;
                        if (!*p)
                                return false;
                }
        }
        return true;
}

static bool tag_is_valid(const char *s)
{
        size_t n = strlen(s);

        if (n == 0 || n > 128 || !(g_ascii_isalnum(s[0]) || s[0] == '_'))
                return false;
        for (; *s; s++)
                if (!g_ascii_isalnum(*s) && *s != '_' && *s != '.' && *s != '-')
                        return false;
        return true;
}

static bool digest_is_valid(const char *d)
{
        if (strncmp(d, "sha256:", 7) != 0 || strlen(d) != 7 + 64)
                return false;
        for (const char *p = d + 7; *p; p++)
                if (!g_ascii_isdigit(*p) && !(*p >= 'a' && *p <= 'f'))
                        return false;
        return true;
}

static int oci_reference_parse(const char *ref, bool allow_digest, OciReference *ret, sd_bus_error *error)
{
        g_autofree char *shown = NULL;
        const char *slash, *rest, *at, *colon;
        g_autofree char *repo = NULL;

        if (strnlen(ref, REFERENCE_MAX + 1) > REFERENCE_MAX)
                return sd_bus_error_setf(error, SD_BUS_ERROR_INVALID_ARGS, "The reference is longer than %d bytes",
                                         REFERENCE_MAX);
        shown = text_escape(ref, 0, ESCAPE_MESSAGE);
        slash = strchr(ref, '/');
        if (!slash || !host_is_valid(ref, (size_t) (slash - ref)))
                return sd_bus_error_setf(error, SD_BUS_ERROR_INVALID_ARGS,
                                         "Invalid reference \"%s\": it must be host[:port]/repository[:tag]", shown);
        rest = slash + 1;
        at = strchr(rest, '@');
        if (at) {
                if (!allow_digest)
                        return sd_bus_error_setf(error, SD_BUS_ERROR_INVALID_ARGS,
                                                 "Invalid reference \"%s\": a push needs a tag, not a digest", shown);
                if (!digest_is_valid(at + 1))
                        return sd_bus_error_setf(
                                error, SD_BUS_ERROR_INVALID_ARGS,
                                "Invalid reference \"%s\": the digest must be sha256: and 64 hex digits", shown);
                repo = g_strndup(rest, (size_t) (at - rest));
                ret->digest = strdup(at + 1);
        } else {
                colon = strrchr(rest, ':');
                if (colon) {
                        if (!tag_is_valid(colon + 1))
                                return sd_bus_error_setf(error, SD_BUS_ERROR_INVALID_ARGS,
                                                         "Invalid reference \"%s\": invalid tag", shown);
                        repo = g_strndup(rest, (size_t) (colon - rest));
                        ret->tag = strdup(colon + 1);
                } else {
                        repo = g_strdup(rest);
                        ret->tag = strdup("latest");
                }
        }
        if (!repository_is_valid(repo)) {
                oci_reference_done(ret);
                *ret = (OciReference) {};
                return sd_bus_error_setf(error, SD_BUS_ERROR_INVALID_ARGS,
                                         "Invalid reference \"%s\": the repository must be lowercase path components "
                                         "of letters, digits and . _ -",
                                         shown);
        }
        ret->host = strndup(ref, (size_t) (slash - ref));
        ret->repository = strdup(repo);
        if (!ret->host || !ret->repository || (!ret->tag && !ret->digest))
                return -ENOMEM;
        return 0;
}

/* ---- options ---- */

typedef struct OciOptions {
        int insecure;
        char *compression;
        int read_only;
} OciOptions;

static const OptionSpec pull_image_options[] = {
        {"insecure", OPTION_BOOL, offsetof(OciOptions, insecure)},
        {"compression", OPTION_STRING, offsetof(OciOptions, compression)},
        {"read_only", OPTION_BOOL, offsetof(OciOptions, read_only)},
        {},
};

static const OptionSpec push_image_options[] = {
        {"insecure", OPTION_BOOL, offsetof(OciOptions, insecure)},
        {"compression", OPTION_STRING, offsetof(OciOptions, compression)},
        {},
};

static void pull_options_done(OciOptions *o)
{
        options_free(pull_image_options, o);
}

static void push_options_done(OciOptions *o)
{
        options_free(push_image_options, o);
}

static int check_compression(const char *c, sd_bus_error *error)
{
        if (isempty(c) || streq(c, "gzip") || streq(c, "zstd"))
                return 0;
        g_autofree char *shown = text_escape(c, 0, ESCAPE_MESSAGE);
        return sd_bus_error_setf(error, STAMP_ERROR_UNSUPPORTED_FORMAT,
                                 "Unsupported compression \"%s\" (known: gzip, zstd)", shown);
}

static int oci_args_fill(Manager *m, JobArgs *a, OciReference *ref, const OciOptions *o)
{
        a->oci.registry = TAKE_PTR(ref->host);
        a->oci.repository = TAKE_PTR(ref->repository);
        a->oci.reference = ref->digest ? TAKE_PTR(ref->digest) : TAKE_PTR(ref->tag);
        a->oci.credentials_file = strdup(m->settings.registry_credentials);
        a->oci.insecure = o->insecure > 0;
        a->oci.cache_max = m->settings.blob_cache_bytes;
        if (!a->oci.credentials_file)
                return -ENOMEM;
        return 0;
}

int method_pull_image(sd_bus_message *msg, void *userdata, sd_bus_error *error)
{
        Manager *m = userdata;
        _cleanup_(job_freep) Job *j = NULL;
        _cleanup_(job_args_done) JobArgs a;
        _cleanup_(pull_options_done) OciOptions o = {.insecure = -1, .read_only = -1};
        _cleanup_(oci_reference_done) OciReference ref = {};
        _cleanup_free_ char *image = NULL;
        const char *reference, *name;
        int k;

        job_args_init(&a, JOB_PULL_IMAGE);
        k = sd_bus_message_read(msg, "ss", &reference, &name);
        if (k < 0)
                return k;
        k = bus_read_options(msg, pull_image_options, &o, error);
        if (k < 0)
                return k;
        k = oci_reference_parse(reference, true, &ref, error);
        if (k < 0)
                return k;
        if ((k = check_compression(o.compression, error)) < 0)
                return k;
        if (isempty(name)) {
                const char *last = strrchr(ref.repository, '/');
                image = strdup(last ? last + 1 : ref.repository);
                if (!image)
                        return -ENOMEM;
                if (!image_name_is_valid(image))
                        return sd_bus_error_setf(error, STAMP_ERROR_INVALID_NAME,
                                                 "Cannot make an image name of repository %s (%s); give one",
                                                 ref.repository, image_name_invalid_reason(image));
        } else {
                if ((k = bus_check_image_name(name, "image name", error)) < 0)
                        return k;
                image = strdup(name);
                if (!image)
                        return -ENOMEM;
        }
        if ((k = bus_check_import_target(m, image, error)) < 0)
                return k;

        g_autofree char *shown_ref = text_escape(reference, 0, ESCAPE_MESSAGE);
        const char *details[] = {"verb", "pull", "image", image, "reference", shown_ref, NULL};
        k = job_new_authorized(m, JOB_PULL_IMAGE, image, true, msg, STAMP_ACTION_PULL, NULL, details, &j, error);
        if (k <= 0)
                return k < 0 ? k : 1;
        if ((k = job_make_image(j, msg, &a, image, error)) < 0)
                return k;

        if ((k = oci_args_fill(m, &a, &ref, &o)) < 0)
                return k;
        a.oci.read_only = o.read_only > 0;

        return job_start_reply(&j, &a, msg);
}

static char *uuid_string(const uint8_t u[16])
{
        static const uint8_t zero[16] = {};

        if (memcmp(u, zero, 16) == 0)
                return NULL;
        return g_strdup_printf("%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", u[0], u[1], u[2],
                               u[3], u[4], u[5], u[6], u[7], u[8], u[9], u[10], u[11], u[12], u[13], u[14], u[15]);
}

int method_push_image(sd_bus_message *msg, void *userdata, sd_bus_error *error)
{
        Manager *m = userdata;
        _cleanup_(job_freep) Job *j = NULL;
        _cleanup_(job_args_done) JobArgs a;
        _cleanup_(push_options_done) OciOptions o = {.insecure = -1, .read_only = -1};
        _cleanup_(oci_reference_done) OciReference ref = {};
        Image *img = NULL; /* the manager's */
        const char *reference, *name;
        bool snapshot;
        int k;

        job_args_init(&a, JOB_PUSH_IMAGE);
        k = sd_bus_message_read(msg, "ss", &name, &reference);
        if (k < 0)
                return k;
        k = bus_read_options(msg, push_image_options, &o, error);
        if (k < 0)
                return k;
        if ((k = bus_check_image_name(name, "image name", error)) < 0)
                return k;
        k = oci_reference_parse(reference, false, &ref, error);
        if (k < 0)
                return k;
        if ((k = check_compression(o.compression, error)) < 0)
                return k;
        if ((k = bus_check_image_exists(m, name, &img, error)) < 0)
                return k;
        /* As an export: a read-only image nobody holds is read in place, a writable subvolume from a
         * snapshot, and nothing is read in place under a running machine. */
        if ((k = bus_check_image_readable(m, name, img, "", NULL, &snapshot, error)) < 0)
                return k;

        g_autofree char *shown_ref = text_escape(reference, 0, ESCAPE_MESSAGE);
        const char *details[] = {"verb", "push", "image", name, "reference", shown_ref, NULL};
        k = job_new_authorized(m, JOB_PUSH_IMAGE, name, false, msg, STAMP_ACTION_PUSH, NULL, details, &j, error);
        if (k <= 0)
                return k < 0 ? k : 1;

        a.oci.image_fd = bus_open_image(m, name, error);
        if (a.oci.image_fd < 0)
                return a.oci.image_fd;
        if ((k = job_read_image(j, name, snapshot)) < 0)
                return k;
        a.oci.snapshot = snapshot;
        a.name = strdup(name);
        if (!a.name || (k = oci_args_fill(m, &a, &ref, &o)) < 0)
                return -ENOMEM;
        a.oci.compression = strdup(isempty(o.compression) ? "gzip" : o.compression);
        if (!a.oci.compression)
                return -ENOMEM;

        /* stamp's annotations: what the image is, where it came from. */
        bool template = image_is_template(m, img);
        a.oci.kind = strdup(template ? "template" : "image");
        if (img->has_uuid)
                a.oci.uuid = uuid_string(img->uuid), a.oci.origin_uuid = uuid_string(img->parent_uuid);
        (void) image_find_origin(m, img, NULL, &a.oci.origin);
        /* A clone of a template: the template's layer and one of the clone's changes, which btrfs
         * tells from a read-only view of the clone (a snapshot, or the image itself). */
        Image *origin = NULL;
        if (!template && a.oci.origin && (snapshot || img->read_only) &&
            manager_get_image(m, a.oci.origin, &origin) >= 0 && image_is_template(m, origin)) {
                a.oci.base_fd = openat(m->store_fd, a.oci.origin, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
                if (a.oci.base_fd >= 0) {
                        free(a.oci.kind);
                        a.oci.kind = strdup("clone");
                }
        }
        if (template) {
                g_autoptr(GVariant) recipe = image_read_recipe(m, img);
                if (recipe)
                        a.oci.recipe = g_variant_print(recipe, true);
        }

        return job_start_reply(&j, &a, msg);
}

/* ---- the blob cache, for CleanCache (package-cache.c) ---- */

int oci_blob_cache_clean(int store_fd, uint64_t *freed, char *err, size_t errlen)
{
        _cleanup_close_ int fd =
                openat(store_fd, ".stamp/oci-blobs/sha256", O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        struct dirent *de;
        DIR *d;
        int k = 0;

        if (fd < 0)
                return errno == ENOENT
                               ? 0
                               : errbuf_set(err, errlen, errno, "Cannot open the blob cache: %s", strerror(errno));
        d = opendir_at(fd, ".");
        if (!d)
                return errbuf_set(err, errlen, errno, "Cannot read the blob cache: %s", strerror(errno));
        while ((de = readdir(d))) {
                struct stat st;
                if (strlen(de->d_name) != 64 || fstatat(fd, de->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0 ||
                    !S_ISREG(st.st_mode))
                        continue;
                if (unlinkat(fd, de->d_name, 0) < 0) {
                        k = errbuf_set(err, errlen, errno, "Cannot remove a blob of the cache: %s", strerror(errno));
                        break;
                }
                *freed += (uint64_t) st.st_size;
        }
        closedir(d);
        return k;
}
