/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <ctype.h>
#include <fcntl.h>
#include <stddef.h>
#include <sys/mman.h>
#include <sys/stat.h>

#include <glib.h>

#include "job-args.h"

typedef enum { ARG_STRING, ARG_STRV, ARG_BOOL, ARG_U64, ARG_FD } ArgType;

typedef struct ArgField {
        const char *key;
        ArgType type;
        size_t offset; /* in JobArgs */
        bool required;
} ArgField;

#define FIELD(key, type, member, required)                                                                             \
        {                                                                                                              \
                key, type, offsetof(JobArgs, member), required                                                         \
        }

/* What every job gets. */
static const ArgField common_fields[] = {
        FIELD("name", ARG_STRING, name, true),
        FIELD("store-path", ARG_STRING, store_path, false),
        FIELD("store-btrfs", ARG_BOOL, store_is_btrfs, false),
        FIELD("temp", ARG_STRING, temp_name, false),
        FIELD("owner", ARG_U64, owner, false),
        {},
};

static const ArgField template_fields[] = {
        FIELD("suite", ARG_STRING, template.suite, true),
        FIELD("variant", ARG_STRING, template.variant, false),
        FIELD("arch", ARG_STRING, template.arch, false),
        FIELD("include", ARG_STRV, template.include, false),
        FIELD("mirror", ARG_STRING, template.mirror, false),
        FIELD("mirror-user", ARG_STRING, template.mirror_user, false),
        FIELD("mirror-password", ARG_STRING, template.mirror_password, false),
        FIELD("keyring", ARG_STRING, template.keyring, false),
        FIELD("root-password-hashed", ARG_STRING, template.root_password_hashed, false),
        FIELD("bootable", ARG_BOOL, template.bootable, false),
        FIELD("package-tarball", ARG_FD, template.package_tarball, false),
        FIELD("from", ARG_STRING, template.from, false),
        FIELD("cache-max", ARG_U64, template.cache_max, false),
        FIELD("image-cache-skip", ARG_BOOL, template.image_cache_skip, false),
        FIELD("image-cache-max", ARG_U64, template.image_cache_max, false),
        {},
};

static const ArgField export_fields[] = {
        FIELD("format", ARG_STRING, export.format, true),
        FIELD("read-only", ARG_BOOL, export.read_only, false),
        FIELD("usage", ARG_U64, export.usage, false),
        FIELD("snapshot", ARG_BOOL, export.snapshot, false),
        FIELD("image", ARG_FD, export.image_fd, true),
        FIELD("out", ARG_FD, export.out_fd, true),
        {},
};

static const ArgField export_image_fields[] = {
        FIELD("format", ARG_STRING, export.format, true),    FIELD("read-only", ARG_BOOL, export.read_only, false),
        FIELD("usage", ARG_U64, export.usage, false),        FIELD("snapshot", ARG_BOOL, export.snapshot, false),
        FIELD("image", ARG_FD, export.image_fd, true),       FIELD("out", ARG_FD, export.out_fd, true),
        FIELD("btrfs", ARG_BOOL, export.btrfs, false),       FIELD("parent", ARG_STRING, export.parent, false),
        FIELD("parent-fd", ARG_FD, export.parent_fd, false), {},
};

static const ArgField import_fields[] = {
        FIELD("read-only", ARG_BOOL, import.read_only, false),
        FIELD("in", ARG_FD, import.in_fd, true),
        {},
};

static const ArgField pull_fields[] = {
        FIELD("url", ARG_STRING, pull.url, true),
        FIELD("sums-url", ARG_STRING, pull.sums_url, true),
        FIELD("file", ARG_STRING, pull.file, true),
        FIELD("verify", ARG_BOOL, pull.verify, false),
        FIELD("read-only", ARG_BOOL, pull.read_only, false),
        {},
};

static const ArgField copy_fields[] = {
        FIELD("path", ARG_STRING, copy.path, true),
        FIELD("root", ARG_FD, copy.root_fd, true),
        FIELD("userns", ARG_FD, copy.userns_fd, false),
        FIELD("data", ARG_FD, copy.data_fd, true),
        {},
};

static const ArgField pull_image_fields[] = {
        FIELD("registry", ARG_STRING, oci.registry, true),
        FIELD("repository", ARG_STRING, oci.repository, true),
        FIELD("reference", ARG_STRING, oci.reference, true),
        FIELD("credentials-file", ARG_STRING, oci.credentials_file, false),
        FIELD("insecure", ARG_BOOL, oci.insecure, false),
        FIELD("read-only", ARG_BOOL, oci.read_only, false),
        FIELD("cache-max", ARG_U64, oci.cache_max, false),
        {},
};

static const ArgField push_image_fields[] = {
        FIELD("registry", ARG_STRING, oci.registry, true),
        FIELD("repository", ARG_STRING, oci.repository, true),
        FIELD("reference", ARG_STRING, oci.reference, true),
        FIELD("credentials-file", ARG_STRING, oci.credentials_file, false),
        FIELD("compression", ARG_STRING, oci.compression, false),
        FIELD("insecure", ARG_BOOL, oci.insecure, false),
        FIELD("snapshot", ARG_BOOL, oci.snapshot, false),
        FIELD("cache-max", ARG_U64, oci.cache_max, false),
        FIELD("image", ARG_FD, oci.image_fd, true),
        FIELD("base", ARG_FD, oci.base_fd, false),
        FIELD("kind", ARG_STRING, oci.kind, false),
        FIELD("origin", ARG_STRING, oci.origin, false),
        FIELD("uuid", ARG_STRING, oci.uuid, false),
        FIELD("origin-uuid", ARG_STRING, oci.origin_uuid, false),
        FIELD("recipe", ARG_STRING, oci.recipe, false),
        {},
};

static const ArgField no_fields[] = {{}};

static const struct {
        const char *verb;
        const ArgField *fields;
} verbs[_JOB_VERB_MAX] = {
        [JOB_CREATE_TEMPLATE] = {"template", template_fields},
        [JOB_EXPORT_TAR] = {"export", export_fields},
        [JOB_IMPORT_TAR] = {"import", import_fields},
        [JOB_PULL_TAR] = {"pull", pull_fields},
        [JOB_EXPORT] = {"export-image", export_image_fields},
        [JOB_IMPORT] = {"import-image", import_fields},
        [JOB_COPY_TO] = {"copy-to", copy_fields},
        [JOB_COPY_FROM] = {"copy-from", copy_fields},
        [JOB_PULL_IMAGE] = {"pull-image", pull_image_fields},
        [JOB_PUSH_IMAGE] = {"push-image", push_image_fields},
        [JOB_REMOVE_TEMPORARY] = {"remove-temporary", no_fields},
};

const char *job_verb_to_string(JobType type)
{
        return type >= 0 && type < _JOB_VERB_MAX ? verbs[type].verb : NULL;
}

static JobType job_verb_from_string(const char *s)
{
        for (JobType t = 0; t < _JOB_VERB_MAX; t++)
                if (streq(verbs[t].verb, s))
                        return t;
        return _JOB_TYPE_INVALID;
}

#define FIELD_PTR(a, f, type) ((type *) (void *) ((uint8_t *) (a) + (f)->offset))

static void fields_init(JobArgs *a, const ArgField *fields)
{
        for (const ArgField *f = fields; f->key; f++)
                if (f->type == ARG_FD)
                        *FIELD_PTR(a, f, int) = -1;
}

void job_args_init(JobArgs *a, JobType type)
{
        *a = (JobArgs) {.type = type};
        for (JobType t = 0; t < _JOB_VERB_MAX; t++)
                fields_init(a, verbs[t].fields);
        a->export.usage = UINT64_MAX;
        a->template.cache_max = UINT64_MAX;
        a->owner = UINT64_MAX;
        a->oci.cache_max = UINT64_MAX;
}

static void fields_done(JobArgs *a, const ArgField *fields)
{
        for (const ArgField *f = fields; f->key; f++)
                switch (f->type) {
                case ARG_STRING: {
                        char **s = FIELD_PTR(a, f, char *);
                        free(*s);
                        *s = NULL;
                        break;
                }
                case ARG_STRV:
                        strv_freep(FIELD_PTR(a, f, char **));
                        *FIELD_PTR(a, f, char **) = NULL;
                        break;
                case ARG_FD: {
                        int *fd = FIELD_PTR(a, f, int);
                        *fd = safe_close(*fd);
                        break;
                }
                default:
                        break;
                }
}

void job_args_done(JobArgs *a)
{
        if (!a)
                return;
        /* The secrets do not outlive their use in memory that may be reused. */
        if (a->template.mirror_password)
                explicit_bzero(a->template.mirror_password, strlen(a->template.mirror_password));
        fields_done(a, common_fields);
        for (JobType t = 0; t < _JOB_VERB_MAX; t++)
                fields_done(a, verbs[t].fields);
}

static int fields_encode(const JobArgs *a, const ArgField *fields, GVariantBuilder *b, int fds[], size_t *n_fds)
{
        for (const ArgField *f = fields; f->key; f++) {
                GVariant *v = NULL;

                switch (f->type) {
                case ARG_STRING: {
                        const char *s = *FIELD_PTR(a, f, char *);
                        if (s)
                                v = g_variant_new_string(s);
                        break;
                }
                case ARG_STRV: {
                        char **l = *FIELD_PTR(a, f, char **);
                        if (l)
                                v = g_variant_new_strv((const char *const *) l, -1);
                        break;
                }
                case ARG_BOOL:
                        v = g_variant_new_boolean(*FIELD_PTR(a, f, bool));
                        break;
                case ARG_U64:
                        v = g_variant_new_uint64(*FIELD_PTR(a, f, uint64_t));
                        break;
                case ARG_FD: {
                        int fd = *FIELD_PTR(a, f, int);
                        if (fd < 0)
                                break;
                        if (*n_fds >= JOB_ARGS_FDS_MAX)
                                return -E2BIG;
                        fds[*n_fds] = fd;
                        v = g_variant_new_handle((int32_t) (*n_fds)++);
                        break;
                }
                }
                if (v)
                        g_variant_builder_add(b, "{sv}", f->key, v);
                else if (f->required)
                        return -EINVAL;
        }
        return 0;
}

int job_args_encode(const JobArgs *a, int fds[], size_t *ret_n_fds)
{
        g_autoptr(GVariant) v = NULL;
        GVariantBuilder b;
        _cleanup_close_ int memfd = -1;
        size_t n_fds = 0;
        int k;

        if (!job_verb_to_string(a->type))
                return -EINVAL;
        g_variant_builder_init(&b, G_VARIANT_TYPE_VARDICT);
        if ((k = fields_encode(a, common_fields, &b, fds, &n_fds)) < 0 ||
            (k = fields_encode(a, verbs[a->type].fields, &b, fds, &n_fds)) < 0) {
                g_variant_builder_clear(&b);
                return k;
        }
        v = g_variant_ref_sink(g_variant_new("(sa{sv})", job_verb_to_string(a->type), &b));

        /* Sealed: once the helper has it, what it reads is what was written here. */
        memfd = memfd_create("stamp-job-args", MFD_CLOEXEC | MFD_ALLOW_SEALING);
        if (memfd < 0)
                return -errno;
        if ((k = loop_write(memfd, g_variant_get_data(v), g_variant_get_size(v))) < 0)
                return k;
        if (fcntl(memfd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE | F_SEAL_SEAL) < 0 ||
            lseek(memfd, 0, SEEK_SET) < 0)
                return -errno;
        *ret_n_fds = n_fds;
        return TAKE_FD(memfd);
}

static const GVariantType *field_variant_type(ArgType t)
{
        switch (t) {
        case ARG_STRING:
                return G_VARIANT_TYPE_STRING;
        case ARG_STRV:
                return G_VARIANT_TYPE_STRING_ARRAY;
        case ARG_BOOL:
                return G_VARIANT_TYPE_BOOLEAN;
        case ARG_U64:
                return G_VARIANT_TYPE_UINT64;
        case ARG_FD:
                return G_VARIANT_TYPE_HANDLE;
        }
        return NULL;
}

static const ArgField *field_find(const ArgField *fields, const char *key)
{
        for (const ArgField *f = fields; f->key; f++)
                if (streq(f->key, key))
                        return f;
        return NULL;
}

static int field_decode(JobArgs *a, const ArgField *f, GVariant *v)
{
        if (!g_variant_is_of_type(v, field_variant_type(f->type)))
                return -EBADMSG;
        switch (f->type) {
        case ARG_STRING:
                if (*FIELD_PTR(a, f, char *))
                        return -EBADMSG; /* twice */
                *FIELD_PTR(a, f, char *) = g_variant_dup_string(v, NULL);
                break;
        case ARG_STRV:
                if (*FIELD_PTR(a, f, char **))
                        return -EBADMSG;
                *FIELD_PTR(a, f, char **) = g_variant_dup_strv(v, NULL);
                break;
        case ARG_BOOL:
                *FIELD_PTR(a, f, bool) = g_variant_get_boolean(v);
                break;
        case ARG_U64:
                *FIELD_PTR(a, f, uint64_t) = g_variant_get_uint64(v);
                break;
        case ARG_FD: {
                int32_t h = g_variant_get_handle(v);
                int fd;
                if (h < 0 || h >= JOB_ARGS_FDS_MAX || *FIELD_PTR(a, f, int) >= 0)
                        return -EBADMSG;
                fd = JOB_ARGS_FD_FIRST + h;
                if (fcntl(fd, F_SETFD, FD_CLOEXEC) < 0)
                        return -EBADMSG;
                *FIELD_PTR(a, f, int) = fd;
                break;
        }
        }
        return 0;
}

static bool fields_complete(const JobArgs *a, const ArgField *fields)
{
        for (const ArgField *f = fields; f->key; f++) {
                if (!f->required)
                        continue;
                if ((f->type == ARG_STRING && !*FIELD_PTR(a, f, char *)) ||
                    (f->type == ARG_STRV && !*FIELD_PTR(a, f, char **)) ||
                    (f->type == ARG_FD && *FIELD_PTR(a, f, int) < 0))
                        return false;
        }
        return true;
}

int job_args_decode(int args_fd, JobArgs *ret)
{
        g_autoptr(GVariant) v = NULL, dict = NULL;
        g_autofree uint8_t *data = NULL;
        const char *verb;
        GVariantIter it;
        struct stat st;
        JobType type;
        JobArgs a;
        ssize_t n;
        int k = 0;

        if (fstat(args_fd, &st) < 0)
                return -errno;
        if (!S_ISREG(st.st_mode) || st.st_size <= 0 || st.st_size > JOB_ARGS_SIZE_MAX)
                return -EBADMSG;
        data = g_malloc((size_t) st.st_size);
        n = pread(args_fd, data, (size_t) st.st_size, 0);
        if (n != st.st_size)
                return n < 0 ? -errno : -EBADMSG;
        v = g_variant_ref_sink(
                g_variant_new_from_data(G_VARIANT_TYPE("(sa{sv})"), data, (gsize) n, FALSE, g_free, data));
        data = NULL; /* v's */
        if (!g_variant_is_normal_form(v))
                return -EBADMSG;
        g_variant_get(v, "(&s@a{sv})", &verb, &dict);
        type = job_verb_from_string(verb);
        if (type < 0)
                return -EBADMSG;

        job_args_init(&a, type);
        g_variant_iter_init(&it, dict);
        while (k >= 0) {
                g_autoptr(GVariant) value = NULL;
                const char *key;
                const ArgField *f;

                if (!g_variant_iter_next(&it, "{&sv}", &key, &value))
                        break;
                f = field_find(common_fields, key) ?: field_find(verbs[type].fields, key);
                k = f ? field_decode(&a, f, value) : -EBADMSG;
        }
        if (k >= 0 && (!fields_complete(&a, common_fields) || !fields_complete(&a, verbs[type].fields)))
                k = -EBADMSG;
        if (k < 0) {
                job_args_done(&a);
                return k;
        }
        *ret = a;
        return 0;
}

bool debian_arch_is_valid(const char *s)
{
        size_t n = strlen(s);

        if (n == 0 || n > 32)
                return false;
        for (; *s; s++)
                if (!(islower((unsigned char) *s) || isdigit((unsigned char) *s)))
                        return false;
        return true;
}

/* Only network mirrors: a file: or copy: mirror would have the daemon read a path the caller named. */
bool debian_mirror_is_valid(const char *s)
{
        const char *rest;

        if (strncmp(s, "http://", 7) == 0)
                rest = s + 7;
        else if (strncmp(s, "https://", 8) == 0)
                rest = s + 8;
        else
                return false;
        if (!isalnum((unsigned char) rest[0]) && rest[0] != '[')
                return false;
        for (; *s; s++)
                if ((unsigned char) *s <= ' ' || (unsigned char) *s >= 0x7f || strchr("\"'\\`<>", *s))
                        return false;
        return true;
}
