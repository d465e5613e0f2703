/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <fcntl.h>
#include <strings.h>

#include "authz.h"
#include "errors.h"
#include "formats.h"
#include "escape.h"
#include "image.h"
#include "job.h"
#include "image-dbus.h"
#include "job-dbus.h"
#include "names.h"
#include "options.h"
#include "job-util.h"
#include "redact.h"

#define URL_MAX 4096
#define SUMS_FILE "SHA256SUMS"

/* ---- the URL ---- */

/* The file name a URL ends in, and the URL of the SHA256SUMS beside it. GLib reads it here: libcurl,
 * which downloads it, is stamp-transfer's alone. */
static int pull_parse_url(const char *url, char **ret_file, char **ret_sums_url, sd_bus_error *error)
{
        g_autoptr(GUri) u = NULL;
        g_autoptr(GError) e = NULL;
        g_autofree char *escaped = NULL, *decoded = NULL, *sums_path = NULL, *sums = NULL;
        _cleanup_free_ char *shown = NULL;
        const char *scheme, *host, *path, *slash, *file;

        if (strnlen(url, URL_MAX + 1) > URL_MAX)
                return sd_bus_error_setf(error, SD_BUS_ERROR_INVALID_ARGS, "The URL is longer than %d bytes", URL_MAX);
        /* Errors name the URL as every message about a pull does: without its credentials or query.
         * Escaped first, so that the "…" of the redaction stays itself; escaping leaves alone the
         * characters the redaction goes by. */
        escaped = text_escape(url, 0, ESCAPE_MESSAGE);
        shown = url_redact(escaped);
        if (!shown)
                return -ENOMEM;
        /* What libcurl refuses too. */
        for (const char *p = url; *p; p++)
                if ((unsigned char) *p <= ' ' || *p == 0x7f)
                        return sd_bus_error_setf(error, SD_BUS_ERROR_INVALID_ARGS,
                                                 "Invalid URL \"%s\": it holds a space or a control character", shown);
        u = g_uri_parse(url, G_URI_FLAGS_ENCODED, &e);
        if (!u && !streq(shown, escaped))
                /* GLib's reason may quote a piece of the authority ("Could not parse port 'pw'"): a
                 * password's, when one was given. */
                return sd_bus_error_setf(error, SD_BUS_ERROR_INVALID_ARGS, "Invalid URL \"%s\"", shown);
        if (!u)
                return sd_bus_error_setf(error, SD_BUS_ERROR_INVALID_ARGS, "Invalid URL \"%s\": %s", shown, e->message);
        scheme = g_uri_get_scheme(u);
        if (g_ascii_strcasecmp(scheme, "http") != 0 && g_ascii_strcasecmp(scheme, "https") != 0)
                return sd_bus_error_setf(error, SD_BUS_ERROR_INVALID_ARGS,
                                         "Cannot pull \"%s\": only http and https URLs are supported", shown);
        host = g_uri_get_host(u);
        if (isempty(host))
                return sd_bus_error_setf(error, SD_BUS_ERROR_INVALID_ARGS, "The URL \"%s\" names no host", shown);
        path = g_uri_get_path(u);
        decoded = g_uri_unescape_string(path, NULL);
        file = decoded ? strrchr(decoded, '/') : NULL;
        file = file ? file + 1 : decoded;
        if (isempty(file) || streq(file, ".") || streq(file, ".."))
                return sd_bus_error_setf(error, SD_BUS_ERROR_INVALID_ARGS, "The URL \"%s\" names no file", shown);

        slash = strrchr(path, '/');
        sums_path = g_strdup_printf("%.*s/" SUMS_FILE, slash ? (int) (slash - path) : 0, path);
        sums = g_uri_join(G_URI_FLAGS_ENCODED, scheme, g_uri_get_userinfo(u), host, g_uri_get_port(u), sums_path, NULL,
                          NULL);
        *ret_file = strdup(file);
        *ret_sums_url = strdup(sums);
        if (!*ret_file || !*ret_sums_url) {
                free(*ret_file);
                free(*ret_sums_url);
                return -ENOMEM;
        }
        return 0;
}

/* "debian-12.tar.xz" → "debian-12". */
static char *name_from_file(const char *file)
{
        return strndup(file, archive_name_strip_suffix(file, strlen(file)));
}

/* ---- the method ---- */

typedef struct PullOptions {
        char *verify;
        int read_only;
} PullOptions;

static const OptionSpec pull_option_table[] = {
        {"verify", OPTION_STRING, offsetof(PullOptions, verify)},
        {"read_only", OPTION_BOOL, offsetof(PullOptions, read_only)},
        {},
};

static void pull_options_done(PullOptions *o)
{
        options_free(pull_option_table, o);
}

int method_pull_tar(sd_bus_message *msg, void *userdata, sd_bus_error *error)
{
        Manager *m = userdata;
        _cleanup_(job_freep) Job *j = NULL;
        _cleanup_(job_args_done) JobArgs a;
        _cleanup_(pull_options_done) PullOptions o = {};
        _cleanup_free_ char *file = NULL, *sums_url = NULL, *image = NULL;
        const char *url, *name;
        bool verify;
        int k;

        job_args_init(&a, JOB_PULL_TAR);
        k = sd_bus_message_read(msg, "ss", &url, &name);
        if (k < 0)
                return k;
        k = bus_read_options(msg, pull_option_table, &o, error);
        if (k < 0)
                return k;

        k = pull_parse_url(url, &file, &sums_url, error);
        if (k < 0)
                return k;
        if (isempty(name)) {
                image = name_from_file(file);
                if (!image)
                        return -ENOMEM;
                if (!image_name_is_valid(image)) {
                        g_autofree char *f = text_escape(file, 0, ESCAPE_MESSAGE);
                        return sd_bus_error_setf(error, STAMP_ERROR_INVALID_NAME,
                                                 "Cannot make an image name of \"%s\" (%s); give one", f,
                                                 image_name_invalid_reason(image));
                }
        } else {
                if ((k = bus_check_image_name(name, "image name", error)) < 0)
                        return k;
                image = strdup(name);
                if (!image)
                        return -ENOMEM;
        }
        if (isempty(o.verify) || streq(o.verify, "checksum"))
                verify = true;
        else if (streq(o.verify, "no"))
                verify = false;
        else {
                g_autofree char *v = text_escape(o.verify, 0, ESCAPE_MESSAGE);
                return sd_bus_error_setf(error, SD_BUS_ERROR_INVALID_ARGS,
                                         "Unknown value \"%s\" for option verify (known: checksum, no)", v);
        }
        if ((k = bus_check_import_target(m, image, error)) < 0)
                return k;

        /* polkit shows the details to whoever is asked to authenticate, an administrator perhaps. */
        _cleanup_free_ char *shown_url = url_redact(url);
        if (!shown_url)
                return -ENOMEM;
        const char *details[] = {"verb", "pull", "image", image, "url", shown_url, NULL};
        k = job_new_authorized(m, JOB_PULL_TAR, image, true, msg, STAMP_ACTION_PULL, NULL, details, &j, error);
        if (k <= 0)
                return k < 0 ? k : 1;
        if ((k = job_make_image(j, msg, &a, image, error)) < 0)
                return k;

        /* The URLs go in the arguments' memfd, not on the command line: they may carry tokens. */
        a.pull.url = strdup(url);
        a.pull.sums_url = TAKE_PTR(sums_url);
        a.pull.file = TAKE_PTR(file);
        if (!a.pull.url)
                return -ENOMEM;
        a.pull.verify = verify;
        a.pull.read_only = o.read_only > 0;

        return job_start_reply(&j, &a, msg);
}
