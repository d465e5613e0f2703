/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <crypt.h>
#include <ctype.h>
#include <fcntl.h>
#include <sys/stat.h>

#include "authz.h"
#include "errors.h"
#include "escape.h"
#include "image.h"
#include "job.h"
#include "image-dbus.h"
#include "job-dbus.h"
#include "job-util.h"
#include "options.h"
#include "template.h"

/* CreateTemplate: a Debian base made by debootstrap, as a job, into a hidden temporary of the store
 * that is renamed into place only when it is complete. Here the method: read, validate, cap,
 * authorize, start, reply; the build itself is stamp-transfer's (transfer/template.c). */

#define DEBOOTSTRAP_SCRIPTS "/usr/share/debootstrap/scripts"

#define SUITE_MAX 64
#define PACKAGE_NAME_MAX 64
/* With the other limits, keeps a recipe well within what image_read_recipe() reads. */
#define INCLUDE_MAX 64
#define MIRROR_MAX 512
#define PASSWORD_HASH_MAX 512
/* debootstrap's scripts are a few KiB. */
#define SCRIPT_MAX (64 * 1024)

static const char *const variants[] = {"minbase", "buildd", "fakechroot", NULL};

const OptionSpec template_options[] = {
        {"variant", OPTION_STRING, offsetof(TemplateOptions, variant)},
        {"arch", OPTION_STRING, offsetof(TemplateOptions, arch)},
        {"include", OPTION_STRV, offsetof(TemplateOptions, include)},
        {"mirror", OPTION_STRING, offsetof(TemplateOptions, mirror)},
        {"package_tarball", OPTION_FD, offsetof(TemplateOptions, package_tarball)},
        {"root_password_hashed", OPTION_STRING, offsetof(TemplateOptions, root_password_hashed)},
        {"bootable", OPTION_BOOL, offsetof(TemplateOptions, bootable)},
        {"from", OPTION_STRING, offsetof(TemplateOptions, from)},
        {"image_cache", OPTION_BOOL, offsetof(TemplateOptions, image_cache)},
        {},
};

/* The options as read, freed only once bus_read_options() has set every field. */
typedef struct ReadOptions {
        TemplateOptions o;
        bool read;
} ReadOptions;

static void read_options_done(ReadOptions *r)
{
        if (r->read)
                options_free(template_options, &r->o);
}

/* ---- validation, in the daemon ---- */

static bool strv_contains(const char *const *l, const char *s)
{
        for (; l && *l; l++)
                if (streq(*l, s))
                        return true;
        return false;
}

/* A suite is a file name under debootstrap's scripts and part of a cache path: a plain word. */
static bool suite_is_valid(const char *s)
{
        size_t n = strlen(s);

        if (n == 0 || n > SUITE_MAX || !isalnum((unsigned char) s[0]))
                return false;
        for (; *s; s++)
                if (!isalnum((unsigned char) *s) && !strchr("._-", *s))
                        return false;
        return true;
}

/* Debian policy 5.6.1; also keeps commas out of debootstrap's --include list. */
static bool package_name_is_valid(const char *s)
{
        size_t n = strlen(s);

        if (n < 2 || n > PACKAGE_NAME_MAX || !(islower((unsigned char) s[0]) || isdigit((unsigned char) s[0])))
                return false;
        for (; *s; s++)
                if (!(islower((unsigned char) *s) || isdigit((unsigned char) *s) || strchr("+-.", *s)))
                        return false;
        return true;
}

/* A mirror as an error message may show it: "user:password@" becomes "***@", a query or fragment
 * "?..." (either may hold a token). */
static char *mirror_shown(const char *mirror)
{
        const char *authority = strstr(mirror, "://"), *at = NULL;
        g_autofree char *redacted = NULL;
        size_t n = 0, end;

        if (strlen(mirror) > 80)
                return g_strdup("(too long to show)");
        if (authority) {
                authority += 3;
                n = strcspn(authority, "/?#");
                at = memrchr(authority, '@', n);
        }
        end = strcspn(mirror, "?#");
        if (at)
                redacted = g_strdup_printf("%.*s***%.*s%s", (int) (authority - mirror), mirror,
                                           (int) (end - (size_t) (at - mirror)), at, mirror[end] ? "?..." : "");
        else
                redacted = g_strdup_printf("%.*s%s", (int) end, mirror, mirror[end] ? "?..." : "");
        return text_escape(redacted, 0, ESCAPE_MESSAGE);
}

/* A credential of a mirror, decoded, goes into a line of wget's configuration: no control
 * character, no space at either end (wget would drop it). */
static bool credential_is_valid(const char *s)
{
        size_t n = strlen(s);

        if (n == 0 || n > 256 || s[0] == ' ' || s[n - 1] == ' ')
                return false;
        for (; *s; s++)
                if ((unsigned char) *s < ' ' || *s == 0x7f)
                        return false;
        return true;
}

/* Split a (valid) mirror into what debootstrap and the recipe see, without "user:password@", and the
 * credentials, percent-decoded, which reach only wget (see transfer/template.c). */
static int split_mirror(const char *mirror, TemplateJobArgs *t, sd_bus_error *error)
{
        g_autofree char *scheme = NULL, *user = NULL, *password = NULL, *host = NULL, *path = NULL, *query = NULL,
                        *fragment = NULL, *shown = mirror_shown(mirror);
        g_autoptr(GError) e = NULL;
        int port;

        if (!g_uri_split_with_user(mirror, G_URI_FLAGS_ENCODED | G_URI_FLAGS_HAS_PASSWORD, &scheme, &user, &password,
                                   NULL, &host, &port, &path, &query, &fragment, &e) ||
            isempty(host))
                return sd_bus_error_setf(error, SD_BUS_ERROR_INVALID_ARGS,
                                         "Invalid mirror \"%s\": an http:// or https:// URL of a Debian archive",
                                         shown);
        /* debootstrap appends the archive's paths to the mirror: a query has no place there, and
         * would show the token it may hold on a command line and in the recipe. */
        if (query || fragment)
                return sd_bus_error_setf(error, SD_BUS_ERROR_INVALID_ARGS,
                                         "Invalid mirror \"%s\": a mirror has no query or fragment", shown);
        if (!user && !password) {
                t->mirror = strdup(mirror);
                return t->mirror ? 0 : -ENOMEM;
        }
        t->mirror = g_uri_join(G_URI_FLAGS_ENCODED, scheme, NULL, host, port, path, query, fragment);
        t->mirror_user = g_uri_unescape_string(user ?: "", NULL);
        t->mirror_password = password ? g_uri_unescape_string(password, NULL) : NULL;
        if (!t->mirror_user || !credential_is_valid(t->mirror_user) ||
            (password && (!t->mirror_password || !credential_is_valid(t->mirror_password))))
                /* The credentials are not repeated back. */
                return sd_bus_error_setf(error, SD_BUS_ERROR_INVALID_ARGS,
                                         "Invalid mirror \"%s\": its user name or password is empty, holds a "
                                         "control character or begins or ends with a space",
                                         shown);
        return 0;
}

/* A mirror URL the caller gave: valid, then its credentials apart (split_mirror()). */
static int check_mirror(const char *mirror, TemplateJobArgs *t, sd_bus_error *error)
{
        if (strlen(mirror) > MIRROR_MAX || !debian_mirror_is_valid(mirror)) {
                g_autofree char *shown = mirror_shown(mirror);
                return sd_bus_error_setf(error, SD_BUS_ERROR_INVALID_ARGS,
                                         "Invalid mirror \"%s\": an http:// or https:// URL of a Debian archive",
                                         shown);
        }
        return split_mirror(mirror, t, error);
}

/* The keyring debootstrap's script for @suite verifies the archive against ("keyring PATH"); NULL
 * if it names none. */
static int suite_keyring(const char *script, char **ret)
{
        g_autofree char *text = NULL;
        g_auto(GStrv) lines = NULL;
        /* debootstrap's scripts are symlinks to one another (bookworm → sid): followed, to a file
         * only; non-blocking, so that nothing there can stall the loop. */
        _cleanup_close_ int fd = open(script, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
        struct stat st;
        ssize_t n;

        if (fd < 0 || fstat(fd, &st) < 0)
                return -errno;
        if (!S_ISREG(st.st_mode) || st.st_size > SCRIPT_MAX)
                return -EBADMSG;
        text = g_malloc((size_t) st.st_size + 1);
        n = read(fd, text, (size_t) st.st_size);
        if (n < 0)
                return -errno;
        text[n] = '\0';
        *ret = NULL;
        lines = g_strsplit(text, "\n", -1);
        for (char **l = lines; *l; l++)
                if (g_str_has_prefix(*l, "keyring ")) {
                        *ret = g_strdup(g_strstrip(*l + strlen("keyring ")));
                        break;
                }
        return 0;
}

/* What goes into /etc/shadow: a crypt(3) hash of a method libcrypt knows, nothing that could break the
 * line it is written into. */
static bool password_hash_is_valid(const char *s)
{
        size_t n = strlen(s);

        if (n < 4 || n > PASSWORD_HASH_MAX || s[0] != '$')
                return false;
        for (const char *p = s; *p; p++)
                if (!isalnum((unsigned char) *p) && !strchr("./$=,+-", *p))
                        return false;
        return crypt_checksalt(s) == CRYPT_SALT_OK;
}

static int check_tarball_fd(int fd, sd_bus_error *error)
{
        struct stat st;
        int flags;

        if (fstat(fd, &st) < 0)
                return sd_bus_error_set_errnof(error, errno, "Cannot inspect the package_tarball fd: %m");
        if (!S_ISREG(st.st_mode) && !S_ISFIFO(st.st_mode))
                return sd_bus_error_setf(error, SD_BUS_ERROR_INVALID_ARGS,
                                         "Option \"package_tarball\" must be an fd of a regular file or pipe, "
                                         "not of a %s",
                                         S_ISDIR(st.st_mode)    ? "directory"
                                         : S_ISSOCK(st.st_mode) ? "socket"
                                         : S_ISCHR(st.st_mode)  ? "character device"
                                         : S_ISBLK(st.st_mode)  ? "block device"
                                                                : "file of another kind");
        flags = fcntl(fd, F_GETFL);
        if (flags < 0)
                return sd_bus_error_set_errnof(error, errno, "Cannot inspect the package_tarball fd: %m");
        if ((flags & O_PATH) || (flags & O_ACCMODE) == O_WRONLY)
                return sd_bus_error_setf(error, SD_BUS_ERROR_INVALID_ARGS,
                                         "Option \"package_tarball\" must be an fd open for reading");
        return 0;
}

static int check_include(char **include, sd_bus_error *error)
{
        size_t n = 0;

        for (char **p = include; p && *p; p++, n++) {
                if (!package_name_is_valid(*p)) {
                        g_autofree char *shown = text_shown(*p);
                        return sd_bus_error_setf(error, SD_BUS_ERROR_INVALID_ARGS,
                                                 "Option \"include\": \"%s\" is not a Debian package name", shown);
                }
        }
        if (n > INCLUDE_MAX)
                return sd_bus_error_setf(error, SD_BUS_ERROR_INVALID_ARGS,
                                         "Option \"include\" lists %zu packages; at most %d can be given", n,
                                         INCLUDE_MAX);
        return 0;
}

/* Everything but the name, checked on the event loop before anything starts. What a build gets from
 * it besides the options as given goes into @t: the mirror without its credentials and the
 * credentials apart, and the keyring an online build must verify against. */
static int check_options(const char *suite, TemplateOptions *o, TemplateJobArgs *t, sd_bus_error *error)
{
        char script[sizeof DEBOOTSTRAP_SCRIPTS + SUITE_MAX + 1];
        g_autofree char *keyring = NULL;
        int k;

        if (isempty(suite))
                return sd_bus_error_setf(error, SD_BUS_ERROR_INVALID_ARGS, "No suite given (e.g. bookworm)");
        if (!suite_is_valid(suite)) {
                g_autofree char *shown = text_shown(suite);
                return sd_bus_error_setf(error, SD_BUS_ERROR_INVALID_ARGS,
                                         "Invalid suite \"%s\": a suite is a plain word like bookworm", shown);
        }
        if (o->variant && !strv_contains(variants, o->variant)) {
                g_autofree char *shown = text_escape(o->variant, 0, ESCAPE_MESSAGE);
                return sd_bus_error_setf(error, SD_BUS_ERROR_INVALID_ARGS,
                                         "Unknown variant \"%s\": use minbase, buildd or fakechroot", shown);
        }
        if (o->arch && !debian_arch_is_valid(o->arch)) {
                g_autofree char *shown = text_escape(o->arch, 0, ESCAPE_MESSAGE);
                return sd_bus_error_setf(error, SD_BUS_ERROR_INVALID_ARGS,
                                         "Invalid arch \"%s\": a Debian architecture name like amd64", shown);
        }
        if ((k = check_include(o->include, error)) < 0)
                return k;
        if (o->mirror && (k = check_mirror(o->mirror, t, error)) < 0)
                return k;
        if (o->root_password_hashed && !password_hash_is_valid(o->root_password_hashed))
                /* The value is a secret of sorts: not repeated back. */
                return sd_bus_error_setf(error, SD_BUS_ERROR_INVALID_ARGS,
                                         "Option \"root_password_hashed\" is not a crypt(3) hash this system knows "
                                         "(such as one from \"openssl passwd -6\" or mkpasswd)");
        if (o->package_tarball >= 0 && (k = check_tarball_fd(o->package_tarball, error)) < 0)
                return k;

        if (access(DEBOOTSTRAP_SCRIPTS, F_OK) < 0)
                return sd_bus_error_setf(error, STAMP_ERROR_NOT_SUPPORTED,
                                         "Creating templates needs debootstrap, which is not installed");
        snprintf(script, sizeof script, "%s/%s", DEBOOTSTRAP_SCRIPTS, suite);
        if (access(script, R_OK) < 0)
                return sd_bus_error_setf(error, SD_BUS_ERROR_INVALID_ARGS,
                                         "Unknown suite \"%s\": debootstrap has no script for it", suite);

        /* A package tarball is what the caller vouches for; what comes from a mirror must be signed
         * by a key the host trusts for the suite. Without one, debootstrap would take unsigned
         * packages from whatever mirror the caller named. */
        if (o->package_tarball >= 0)
                return 0;
        k = suite_keyring(script, &keyring);
        if (k < 0)
                return sd_bus_error_set_errnof(error, -k, "Cannot read debootstrap's script for suite %s: %m", suite);
        if (!keyring)
                return sd_bus_error_setf(error, STAMP_ERROR_NOT_SUPPORTED,
                                         "debootstrap names no keyring to verify suite %s against; "
                                         "build it from a package_tarball instead",
                                         suite);
        if (keyring[0] != '/' || access(keyring, R_OK) < 0) {
                g_autofree char *shown = text_escape(keyring, 0, ESCAPE_MESSAGE);
                return sd_bus_error_setf(error, STAMP_ERROR_NOT_SUPPORTED,
                                         "The keyring to verify suite %s against, %s, is not installed: install "
                                         "the package that has it, or build from a package_tarball",
                                         suite, shown);
        }
        t->keyring = TAKE_PTR(keyring);
        return 0;
}

/* A derived build (option "from"): a snapshot of a template of the store with more packages installed
 * by apt inside it. What the parent fixed (suite, variant, architecture, the package set it started
 * from) cannot be asked for again; the suite, if given, must be the parent's. */
static int check_derived_options(Manager *m, const char *suite, TemplateOptions *o, TemplateJobArgs *t,
                                 sd_bus_error *error)
{
        g_autoptr(GVariant) recipe = NULL;
        const char *parent_suite = NULL, *parent_arch = NULL;
        Image *img = NULL;
        int k;

        if ((k = bus_check_image_name(o->from, "template", error)) < 0)
                return k;
        if (o->variant || o->arch || o->package_tarball >= 0 || o->bootable >= 0)
                return sd_bus_error_setf(error, SD_BUS_ERROR_INVALID_ARGS,
                                         "Options \"variant\", \"arch\", \"package_tarball\" and \"bootable\" "
                                         "come from the template a derived one is made from (%s); drop them",
                                         o->from);
        if ((k = check_include(o->include, error)) < 0)
                return k;
        if (o->mirror) {
                if ((k = check_mirror(o->mirror, t, error)) < 0)
                        return k;
                /* apt inside the template would keep them in its sources for every clone to read. */
                if (t->mirror_user)
                        return sd_bus_error_setf(error, SD_BUS_ERROR_INVALID_ARGS,
                                                 "A derived template cannot use a mirror with credentials");
        }
        if (o->root_password_hashed && !password_hash_is_valid(o->root_password_hashed))
                return sd_bus_error_setf(error, SD_BUS_ERROR_INVALID_ARGS,
                                         "Option \"root_password_hashed\" is not a crypt(3) hash this system knows "
                                         "(such as one from \"openssl passwd -6\" or mkpasswd)");

        if ((k = bus_check_image_exists(m, o->from, &img, error)) < 0)
                return k;
        recipe = image_is_template(m, img) ? image_read_recipe(m, img) : NULL;
        if (recipe) {
                (void) g_variant_lookup(recipe, "suite", "&s", &parent_suite);
                (void) g_variant_lookup(recipe, "arch", "&s", &parent_arch);
        }
        if (!parent_suite || !suite_is_valid(parent_suite) || !parent_arch || !debian_arch_is_valid(parent_arch))
                return sd_bus_error_setf(error, SD_BUS_ERROR_INVALID_ARGS,
                                         "Image %s is not a template made by CreateTemplate; only such a one can be "
                                         "derived from",
                                         o->from);
        if (!isempty(suite) && !streq(suite, parent_suite)) {
                g_autofree char *shown = text_shown(suite);
                return sd_bus_error_setf(error, SD_BUS_ERROR_INVALID_ARGS,
                                         "Suite \"%s\" is not that of template %s (%s); give none or the same", shown,
                                         o->from, parent_suite);
        }
        t->suite = strdup(parent_suite);
        t->arch = strdup(parent_arch);
        t->from = strdup(o->from);
        return t->suite && t->arch && t->from ? 0 : -ENOMEM;
}

/* ---- the method ---- */

int method_create_template(sd_bus_message *msg, void *userdata, sd_bus_error *error)
{
        Manager *m = userdata;
        _cleanup_(job_freep) Job *j = NULL;
        _cleanup_(job_args_done) JobArgs a;
        _cleanup_(read_options_done) ReadOptions r = {};
        TemplateOptions *o = &r.o;
        TemplateJobArgs *t = &a.template;
        const char *name, *suite;
        int k;

        job_args_init(&a, JOB_CREATE_TEMPLATE);
        k = sd_bus_message_read(msg, "ss", &name, &suite);
        if (k < 0)
                return k;
        k = bus_read_options(msg, template_options, o, error);
        if (k < 0)
                return k;
        r.read = true;

        if ((k = bus_check_image_name(name, "image name", error)) < 0 ||
            (k = o->from ? check_derived_options(m, suite, o, t, error) : check_options(suite, o, t, error)) < 0 ||
            (k = bus_check_image_absent(m, name, error)) < 0)
                return k;

        /* A derived build names its parent; the NULL ends the details early for the others. */
        const char *details[] = {
                "verb", "create-template", "image", name, "suite", t->suite ?: suite, t->from ? "from" : NULL, t->from,
                NULL};
        /* The caps and the lock on the name, before polkit is asked; the job is made again when the
         * call comes back with the answer. */
        k = job_new_authorized(m, JOB_CREATE_TEMPLATE, name, true, msg, STAMP_ACTION_CREATE_TEMPLATE, NULL, details, &j,
                               error);
        if (k <= 0)
                return k < 0 ? k : 1;
        if ((k = job_make_image(j, msg, &a, name, error)) < 0)
                return k;

        if (!t->suite)
                t->suite = strdup(suite);
        if (!t->suite)
                return -ENOMEM;
        t->variant = TAKE_PTR(o->variant);
        if (!t->arch)
                t->arch = TAKE_PTR(o->arch);
        t->cache_max = m->settings.package_cache_max;
        t->image_cache_skip = o->image_cache == 0;
        t->image_cache_max = m->settings.template_cache_images;
        t->include = TAKE_PTR(o->include);
        t->root_password_hashed = TAKE_PTR(o->root_password_hashed);
        t->bootable = o->bootable != 0; /* bootable unless asked not to be */
        t->package_tarball = TAKE_FD(o->package_tarball);

        return job_start_reply(&j, &a, msg);
}
