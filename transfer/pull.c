/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>

#include <glib.h>

#include "config.h"
#include "curl-util.h"
#include "redact.h"
#include "sha256.h"
#include "transfer.h"

#define SUMS_MAX (1024 * 1024)
#define SUMS_FILE "SHA256SUMS"

typedef struct Download {
        JobChild *c;
        int fd;
        Sha256 *sha256;
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
                sha256_update(d->sha256, ptr, n);
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
        d->next_usec = now + JOB_PROGRESS_INTERVAL_USEC;
        job_child_progress(d->c, MIN(0.99, (double) dlnow / (double) dltotal));
        return 0;
}

/* Fetch @url into @d; 0, or a negative errno after job_child_fail() said why (-EPIPE silently: the
 * importer went away and has said why). Messages name the URL as @shown, without its secrets: they
 * go to the job's log, which every local user may receive. */
static int fetch(JobChild *c, const char *url, const char *shown, Download *d, const char *what)
{
        char errbuf[CURL_ERROR_SIZE] = "";
        _cleanup_(curl_easy_cleanupp) CURL *e = curl_request_new(url, errbuf, on_data, on_progress, d);
        curl_off_t got = 0, expected = -1;
        long status = 0;
        CURLcode code;

        if (!e)
                return job_child_fail(c, ENOMEM, "Cannot set up the download");
        (void) curl.easy_setopt(e, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
        (void) curl.easy_setopt(e, CURLOPT_FOLLOWLOCATION, 1L);
        (void) curl.easy_setopt(e, CURLOPT_MAXREDIRS, 10L);
        (void) curl.easy_setopt(e, CURLOPT_FAILONERROR, 1L);

        code = curl.easy_perform(e);
        (void) curl.easy_getinfo(e, CURLINFO_RESPONSE_CODE, &status);
        (void) curl.easy_getinfo(e, CURLINFO_SIZE_DOWNLOAD_T, &got);
        (void) curl.easy_getinfo(e, CURLINFO_CONTENT_LENGTH_DOWNLOAD_T, &expected);
        if (code == CURLE_OK)
                return 0;
        if (d->write_error == EPIPE)
                return -EPIPE;
        if (d->write_error == EFBIG)
                return job_child_fail(c, EFBIG, "%s at %s is larger than %d bytes", what, shown, SUMS_MAX);
        if (d->write_error)
                return job_child_fail(c, d->write_error, "Cannot pass on %s: %s", what, strerror(d->write_error));
        if (code == CURLE_HTTP_RETURNED_ERROR)
                return job_child_fail(c, EIO, "Cannot download %s: the server answered HTTP %ld for %s", what, status,
                                      shown);
        if (code == CURLE_PARTIAL_FILE || code == CURLE_RECV_ERROR || code == CURLE_GOT_NOTHING) {
                if (expected >= 0)
                        return job_child_fail(c, EIO,
                                              "The connection was cut while downloading %s from %s: got %" PRId64
                                              " of %" PRId64 " bytes",
                                              what, shown, (int64_t) got, (int64_t) expected);
                return job_child_fail(c, EIO,
                                      "The connection was cut while downloading %s from %s after %" PRId64 " bytes",
                                      what, shown, (int64_t) got);
        }
        return job_child_fail(c, EIO, "Cannot download %s from %s: %s", what, shown,
                              errbuf[0] ? errbuf : curl.easy_strerror(code));
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

static int download(JobChild *c, const PullArgs *a, int out_fd)
{
        g_autoptr(Sha256) sha256 = NULL;
        _cleanup_free_ char *shown_url = url_redact(a->url), *shown_sums_url = url_redact(a->sums_url);
        Download sums = {.c = c, .fd = -1};
        char expected[65] = "";
        int k;

        if (!shown_url || (a->sums_url && !shown_sums_url))
                return job_child_fail(c, ENOMEM, "Out of memory");
        (void) signal(SIGPIPE, SIG_IGN);
        k = curl_load(c, "pulls");
        if (k < 0)
                return k;

        if (a->verify) {
                k = fetch(c, a->sums_url, shown_sums_url, &sums, SUMS_FILE);
                if (k >= 0 && !find_checksum(sums.buf ?: "", sums.size, a->file, expected))
                        k = job_child_fail(c, EBADMSG, "%s at %s has no checksum for %s", SUMS_FILE, shown_sums_url,
                                           a->file);
                free(sums.buf);
                if (k < 0)
                        return k;
                sha256 = sha256_new();
                job_child_log(c, LOG_LEVEL_INFO, "Verifying %s against %s", a->file, shown_sums_url);
        }

        Download d = {.c = c, .fd = out_fd, .sha256 = sha256};
        k = fetch(c, a->url, shown_url, &d, a->file);
        safe_close(out_fd);
        if (k < 0)
                return k;

        if (sha256 && !streq(sha256_get_string(sha256), expected))
                return job_child_fail(c, EBADMSG, "%s does not match its checksum: its SHA-256 is %s, %s says %s",
                                      shown_url, sha256_get_string(sha256), SUMS_FILE, expected);
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

int transfer_pull(JobChild *c, const PullArgs *a)
{
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
