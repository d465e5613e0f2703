/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <fcntl.h>
#include <signal.h>
#include <strings.h>
#include <sys/wait.h>

#include <curl/curl.h>

#include "archive-util.h"
#include "authz.h"
#include "config.h"
#include "errors.h"
#include "image.h"
#include "manager-methods.h"
#include "names.h"
#include "options.h"
#include "pool.h"

#define URL_MAX 4096
#define SUMS_MAX (1024 * 1024)
#define SUMS_FILE "SHA256SUMS"
#define PROGRESS_INTERVAL_USEC (USEC_PER_SEC / 10)

/* ---- the URL ---- */

static void curl_url_cleanupp(CURLU **u)
{
        if (*u)
                curl_url_cleanup(*u);
}

static void curl_freep(char **s)
{
        if (*s)
                curl_free(*s);
}

/* The file name a URL ends in, and the URL of the SHA256SUMS beside it. */
static int pull_parse_url(const char *url, char **ret_file, char **ret_sums_url, sd_bus_error *error)
{
        _cleanup_(curl_url_cleanupp) CURLU *u = NULL;
        _cleanup_(curl_freep) char *scheme = NULL, *host = NULL, *path = NULL, *decoded = NULL, *sums = NULL;
        _cleanup_free_ char *sums_path = NULL;
        g_autofree char *shown = NULL;
        const char *slash;
        CURLUcode rc;

        if (strnlen(url, URL_MAX + 1) > URL_MAX)
                return sd_bus_error_setf(error, SD_BUS_ERROR_INVALID_ARGS, "The URL is longer than %d bytes",
                                         URL_MAX);
        shown = g_strescape(url, NULL);
        u = curl_url();
        if (!u)
                return -ENOMEM;
        rc = curl_url_set(u, CURLUPART_URL, url, CURLU_NON_SUPPORT_SCHEME);
        if (rc != CURLUE_OK)
                return sd_bus_error_setf(error, SD_BUS_ERROR_INVALID_ARGS, "Invalid URL \"%s\": %s", shown,
                                         curl_url_strerror(rc));
        if (curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) != CURLUE_OK ||
            (strcasecmp(scheme, "http") != 0 && strcasecmp(scheme, "https") != 0))
                return sd_bus_error_setf(error, SD_BUS_ERROR_INVALID_ARGS,
                                         "Cannot pull \"%s\": only http and https URLs are supported", shown);
        if (curl_url_get(u, CURLUPART_HOST, &host, 0) != CURLUE_OK || isempty(host))
                return sd_bus_error_setf(error, SD_BUS_ERROR_INVALID_ARGS, "The URL \"%s\" names no host", shown);
        if (curl_url_get(u, CURLUPART_PATH, &path, 0) != CURLUE_OK ||
            curl_url_get(u, CURLUPART_PATH, &decoded, CURLU_URLDECODE) != CURLUE_OK)
                return sd_bus_error_setf(error, SD_BUS_ERROR_INVALID_ARGS, "The URL \"%s\" names no file", shown);

        slash = strrchr(decoded, '/');
        slash = slash ? slash + 1 : decoded;
        if (isempty(slash) || streq(slash, ".") || streq(slash, ".."))
                return sd_bus_error_setf(error, SD_BUS_ERROR_INVALID_ARGS, "The URL \"%s\" names no file", shown);
        *ret_file = strdup(slash);

        slash = strrchr(path, '/');
        if (asprintf(&sums_path, "%.*s/" SUMS_FILE, slash ? (int) (slash - path) : 0, path) < 0)
                return -ENOMEM;
        if (curl_url_set(u, CURLUPART_PATH, sums_path, 0) != CURLUE_OK ||
            curl_url_set(u, CURLUPART_QUERY, NULL, 0) != CURLUE_OK ||
            curl_url_set(u, CURLUPART_FRAGMENT, NULL, 0) != CURLUE_OK ||
            curl_url_get(u, CURLUPART_URL, &sums, 0) != CURLUE_OK)
                return -ENOMEM;
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
        static const char *const suffixes[] = {".tar.zst", ".tar.zstd", ".tar.xz", ".tar.gz", ".tar.bz2", ".tzst",
                                               ".txz",     ".tgz",      ".tbz2",   ".tar",    NULL};
        size_t n = strlen(file);

        for (size_t i = 0; suffixes[i]; i++) {
                size_t s = strlen(suffixes[i]);
                if (n > s && strcasecmp(file + n - s, suffixes[i]) == 0) {
                        n -= s;
                        break;
                }
        }
        return strndup(file, n);
}

/* ---- the download, in a process of its own ---- */

typedef struct Download {
        JobChild *c;
        int fd;
        GChecksum *sha256;
        uint64_t next_usec;
        int write_error;
        /* SHA256SUMS goes to memory instead. */
        char *buf;
        size_t size;
} Download;

static size_t on_data(char *ptr, size_t size, size_t nmemb, void *userdata)
{
        Download *d = userdata;
        size_t n = size * nmemb;
        int k;

        if (d->fd < 0) {
                char *nb;
                if (d->size + n > SUMS_MAX) {
                        d->write_error = EFBIG;
                        return 0;
                }
                nb = realloc(d->buf, d->size + n + 1);
                if (!nb) {
                        d->write_error = ENOMEM;
                        return 0;
                }
                d->buf = nb;
                memcpy(d->buf + d->size, ptr, n);
                d->size += n;
                d->buf[d->size] = '\0';
                return n;
        }

        if (d->sha256)
                g_checksum_update(d->sha256, (const guchar *) ptr, (gssize) n);
        k = loop_write(d->fd, ptr, n);
        if (k < 0) {
                d->write_error = -k;
                return 0;
        }
        return n;
}

static int on_progress(void *userdata, curl_off_t dltotal, curl_off_t dlnow, curl_off_t ultotal, curl_off_t ulnow)
{
        Download *d = userdata;
        uint64_t now;

        if (d->fd < 0 || dltotal <= 0)
                return 0;
        now = now_usec(CLOCK_MONOTONIC);
        if (now < d->next_usec)
                return 0;
        d->next_usec = now + PROGRESS_INTERVAL_USEC;
        job_child_progress(d->c, MIN(0.99, (double) dlnow / (double) dltotal));
        return 0;
}

static void curl_easy_cleanupp(CURL **e)
{
        if (*e)
                curl_easy_cleanup(*e);
}

/* Fetch @url into @d; 0, or a negative errno after job_child_fail() said why (-EPIPE silently: the
 * importer went away and has said why). */
static int fetch(JobChild *c, const char *url, Download *d, const char *what)
{
        _cleanup_(curl_easy_cleanupp) CURL *e = curl_easy_init();
        char errbuf[CURL_ERROR_SIZE] = "";
        curl_off_t got = 0, expected = -1;
        long status = 0;
        CURLcode code;

        if (!e)
                return job_child_fail(c, ENOMEM, "Cannot set up the download");
        (void) curl_easy_setopt(e, CURLOPT_URL, url);
        (void) curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
        (void) curl_easy_setopt(e, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
        (void) curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, 1L);
        (void) curl_easy_setopt(e, CURLOPT_MAXREDIRS, 10L);
        (void) curl_easy_setopt(e, CURLOPT_FAILONERROR, 1L);
        (void) curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
        (void) curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT, 30L);
        /* A stalled server fails the job instead of holding it forever. */
        (void) curl_easy_setopt(e, CURLOPT_LOW_SPEED_LIMIT, 1L);
        (void) curl_easy_setopt(e, CURLOPT_LOW_SPEED_TIME, 60L);
        (void) curl_easy_setopt(e, CURLOPT_USERAGENT, "stampd/" PACKAGE_VERSION);
        (void) curl_easy_setopt(e, CURLOPT_ERRORBUFFER, errbuf);
        (void) curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_data);
        (void) curl_easy_setopt(e, CURLOPT_WRITEDATA, d);
        (void) curl_easy_setopt(e, CURLOPT_XFERINFOFUNCTION, on_progress);
        (void) curl_easy_setopt(e, CURLOPT_XFERINFODATA, d);
        (void) curl_easy_setopt(e, CURLOPT_NOPROGRESS, 0L);

        code = curl_easy_perform(e);
        (void) curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &status);
        (void) curl_easy_getinfo(e, CURLINFO_SIZE_DOWNLOAD_T, &got);
        (void) curl_easy_getinfo(e, CURLINFO_CONTENT_LENGTH_DOWNLOAD_T, &expected);
        if (code == CURLE_OK)
                return 0;
        if (d->write_error == EPIPE)
                return -EPIPE;
        if (d->write_error == EFBIG)
                return job_child_fail(c, EFBIG, "%s at %s is larger than %d bytes", what, url, SUMS_MAX);
        if (d->write_error)
                return job_child_fail(c, d->write_error, "Cannot pass on %s: %s", what, strerror(d->write_error));
        if (code == CURLE_HTTP_RETURNED_ERROR)
                return job_child_fail(c, EIO, "Cannot download %s: the server answered HTTP %ld for %s", what, status,
                                      url);
        if (code == CURLE_PARTIAL_FILE || code == CURLE_RECV_ERROR || code == CURLE_GOT_NOTHING) {
                if (expected >= 0)
                        return job_child_fail(c, EIO,
                                              "The connection was cut while downloading %s from %s: got %" PRId64
                                              " of %" PRId64 " bytes",
                                              what, url, (int64_t) got, (int64_t) expected);
                return job_child_fail(c, EIO,
                                      "The connection was cut while downloading %s from %s after %" PRId64 " bytes",
                                      what, url, (int64_t) got);
        }
        return job_child_fail(c, EIO, "Cannot download %s from %s: %s", what, url,
                              errbuf[0] ? errbuf : curl_easy_strerror(code));
}

/* The hex SHA-256 that a SHA256SUMS text gives for @file ("<hex>  <file>" or "<hex> *<file>"). */
static bool find_checksum(const char *sums, size_t size, const char *file, char ret[static 65])
{
        const char *p = sums, *end = sums + size;

        while (p < end) {
                const char *nl = memchr(p, '\n', (size_t) (end - p));
                const char *eol = nl ?: end;
                size_t len = (size_t) (eol - p);
                bool hex;

                if (len > 0 && p[len - 1] == '\r')
                        len--;
                hex = len > 66;
                for (size_t i = 0; hex && i < 64; i++)
                        hex = g_ascii_isxdigit(p[i]);
                if (hex && p[64] == ' ' && (p[65] == ' ' || p[65] == '*') && len - 66 == strlen(file) &&
                    memcmp(p + 66, file, len - 66) == 0) {
                        for (size_t i = 0; i < 64; i++)
                                ret[i] = g_ascii_tolower(p[i]);
                        ret[64] = '\0';
                        return true;
                }
                p = eol + 1;
        }
        return false;
}

typedef struct PullArgs {
        char *url;
        char *sums_url;
        char *file;
        char *name;
        bool verify;
        bool read_only;
} PullArgs;

static int download(JobChild *c, const PullArgs *a, int out_fd)
{
        g_autoptr(GChecksum) sha256 = NULL;
        Download sums = {.c = c, .fd = -1};
        char expected[65] = "";
        int k;

        (void) signal(SIGPIPE, SIG_IGN);
        if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
                return job_child_fail(c, EIO, "Cannot set up libcurl");

        if (a->verify) {
                k = fetch(c, a->sums_url, &sums, SUMS_FILE);
                if (k >= 0 && !find_checksum(sums.buf ?: "", sums.size, a->file, expected))
                        k = job_child_fail(c, EBADMSG, "%s at %s has no checksum for %s", SUMS_FILE, a->sums_url,
                                           a->file);
                free(sums.buf);
                if (k < 0)
                        return k;
                sha256 = g_checksum_new(G_CHECKSUM_SHA256);
                job_child_log(c, LOG_LEVEL_INFO, "Verifying %s against %s", a->file, a->sums_url);
        }

        Download d = {.c = c, .fd = out_fd, .sha256 = sha256};
        k = fetch(c, a->url, &d, a->file);
        safe_close(out_fd);
        if (k < 0)
                return k;

        if (sha256 && !streq(g_checksum_get_string(sha256), expected))
                return job_child_fail(c, EBADMSG, "%s does not match its checksum: its SHA-256 is %s, %s says %s",
                                      a->url, g_checksum_get_string(sha256), SUMS_FILE, expected);
        return 0;
}

/* ---- the import side ---- */

typedef struct Downloader {
        pid_t pid;
        int fd;
} Downloader;

static int wait_exit_status(pid_t pid)
{
        int status;

        while (waitpid(pid, &status, 0) < 0)
                if (errno != EINTR)
                        return -errno;
        return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

static int pull_finish(JobChild *c, int result, const ExtractResult *extract, void *userdata)
{
        Downloader *d = userdata;
        char buf[64 * 1024];

        if (result < 0 && !extract->input_ended) {
                /* Refused while it was still coming in: stop the download, the refusal is the reason. */
                (void) kill(d->pid, SIGKILL);
                (void) wait_exit_status(d->pid);
                return 0;
        }
        /* The checksum covers every byte, also those after the end of the tar stream. */
        if (result >= 0)
                while (read(d->fd, buf, sizeof buf) > 0)
                        ;
        if (wait_exit_status(d->pid) != 0)
                return 1; /* the download failed (a cut, an HTTP error, a mismatch) and said so */
        return 0;
}

static int pull_run(JobChild *c, void *userdata)
{
        PullArgs *a = userdata;
        _cleanup_close_ int in_fd = -1;
        Downloader d;
        int p[2];

        if (pipe2(p, O_CLOEXEC) < 0)
                return job_child_fail(c, errno, "Cannot make a pipe: %s", strerror(errno));
        /* curl runs apart from the importer: the importer confines itself to the new image, and the
         * download needs the host's resolver and certificates. */
        d.pid = safe_fork(false);
        if (d.pid < 0) {
                safe_close(p[0]);
                safe_close(p[1]);
                return job_child_fail(c, (int) -d.pid, "Cannot start the download: %s", strerror((int) -d.pid));
        }
        if (d.pid == 0) {
                safe_close(p[0]);
                _exit(download(c, a, p[1]) < 0 ? EXIT_FAILURE : EXIT_SUCCESS);
        }
        safe_close(p[1]);
        in_fd = d.fd = p[0];
        return import_stream_into_store(c, in_fd, 0, a->name, a->read_only, pull_finish, &d);
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

static void pull_args_free(void *p)
{
        PullArgs *a = p;

        if (!a)
                return;
        free(a->url);
        free(a->sums_url);
        free(a->file);
        free(a->name);
        free(a);
}

static void pull_args_freep(PullArgs **a)
{
        pull_args_free(*a);
}

int method_pull_tar(sd_bus_message *msg, void *userdata, sd_bus_error *error)
{
        Manager *m = userdata;
        _cleanup_(job_freep) Job *j = NULL;
        _cleanup_(pull_args_freep) PullArgs *a = NULL;
        _cleanup_(pull_options_done) PullOptions o = {};
        const char *url, *name;
        int k;

        k = sd_bus_message_read(msg, "ss", &url, &name);
        if (k < 0)
                return k;
        k = bus_read_options(msg, pull_option_table, &o, error);
        if (k < 0)
                return k;

        a = calloc(1, sizeof *a);
        if (!a)
                return -ENOMEM;
        k = pull_parse_url(url, &a->file, &a->sums_url, error);
        if (k < 0)
                return k;
        if (isempty(name)) {
                a->name = name_from_file(a->file);
                if (!a->name)
                        return -ENOMEM;
                if (!image_name_is_valid(a->name)) {
                        g_autofree char *f = g_strescape(a->file, NULL);
                        return sd_bus_error_setf(error, STAMP_ERROR_INVALID_NAME,
                                                 "Cannot make an image name of \"%s\" (%s); give one", f,
                                                 image_name_invalid_reason(a->name));
                }
        } else {
                if ((k = bus_check_image_name(name, "image name", error)) < 0)
                        return k;
                a->name = strdup(name);
                if (!a->name)
                        return -ENOMEM;
        }
        if (isempty(o.verify) || streq(o.verify, "checksum"))
                a->verify = true;
        else if (streq(o.verify, "no"))
                a->verify = false;
        else {
                g_autofree char *v = g_strescape(o.verify, NULL);
                return sd_bus_error_setf(error, SD_BUS_ERROR_INVALID_ARGS,
                                         "Unknown value \"%s\" for option verify (known: checksum, no)", v);
        }
        a->read_only = o.read_only > 0;
        a->url = strdup(url);
        if (!a->url)
                return -ENOMEM;
        if ((k = bus_check_import_target(m, a->name, error)) < 0)
                return k;

        const char *details[] = {"verb", "pull", "image", a->name, "url", url, NULL};
        k = authz_verify(m->authz, msg, STAMP_ACTION_PULL, details, error);
        if (k <= 0)
                return k < 0 ? k : 1;

        k = job_new(m, JOB_PULL_TAR, a->name, true, msg, &j, error);
        if (k < 0)
                return k;
        j->makes_image = true;
        j->temp_name = store_temp_name(a->name);
        if (!j->temp_name)
                return -ENOMEM;

        pool_maybe_grow(m);
        k = job_start(j, msg, pull_run, TAKE_PTR(a), pull_args_free);
        if (job_find(m, j->id) == j)
                TAKE_PTR(j);
        return k;
}
