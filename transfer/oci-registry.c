/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <strings.h>
#include <sys/stat.h>

#include <json-glib/json-glib.h>

#include "config.h"
#include "curl-util.h"
#include "oci.h"
#include "sha256.h"

/* The distribution API v2 over libcurl, which is loaded here only (as for PullTar: exports and
 * imports do not pay for it). Authentication as the distribution spec has it: a 401 names a scheme;
 * "Bearer" sends us to the token realm (with the credentials file's user and password, if it names
 * this registry; anonymous otherwise), "Basic" takes the credentials directly. Neither a token nor a
 * password ever reaches a log line or an error message. */

struct Registry {
        JobChild *c;
        char *host; /* as given: what messages name */
        char *base; /* "https://host" or "http://host" */
        char *repository;
        bool insecure;
        bool push;
        bool probed;
        char *user, *password; /* from the credentials file, or NULL */
        char *authorization;   /* the header to send, once a challenge was answered */
        uint64_t received, sent;
        uint64_t progress_total, progress_done, next_usec;
};

uint64_t registry_bytes_received(const Registry *r)
{
        return r->received;
}

void registry_set_progress(Registry *r, uint64_t total, uint64_t done)
{
        r->progress_total = total;
        r->progress_done = done;
}

static void secret_free(char *s)
{
        if (s) {
                explicit_bzero(s, strlen(s));
                free(s);
        }
}

Registry *registry_free(Registry *r)
{
        if (!r)
                return NULL;
        free(r->host);
        free(r->base);
        free(r->repository);
        secret_free(r->user);
        secret_free(r->password);
        secret_free(r->authorization);
        free(r);
        return NULL;
}

/* ---- one request ---- */

typedef struct Exchange {
        Registry *r;
        /* the body received: into @out_fd, or into memory up to @max */
        int out_fd;
        size_t max;
        char *body;
        size_t size;
        uint64_t got;
        uint64_t limit; /* of a blob: its size; more is an error */
        Sha256 *sha256;
        int tee_fd;  /* a copy of a 200's body goes here too while it takes it (a pipe to the extraction), or -1 */
        long status; /* of the response whose body comes, from its status line */
        int write_error;
        /* what is sent */
        int in_fd;
        bool in_stream; /* @in_fd is read to its end (a pipe), its size unknown */
        const uint8_t *in_data;
        uint64_t in_size, in_done;
        /* headers seen */
        char *www_authenticate;
        char *location;
        char *content_type;
        char *docker_digest;
} Exchange;

static void exchange_done(Exchange *x)
{
        free(x->body);
        free(x->www_authenticate);
        free(x->location);
        free(x->content_type);
        free(x->docker_digest);
        if (x->sha256)
                sha256_free(x->sha256);
}

static size_t on_body(char *ptr, size_t size, size_t nmemb, void *userdata)
{
        Exchange *x = userdata;
        size_t n = size * nmemb;

        x->got += n;
        x->r->received += n;
        if (x->limit > 0 && x->got > x->limit) {
                x->write_error = EFBIG;
                return 0;
        }
        if (x->sha256)
                sha256_update(x->sha256, ptr, n);
        if (x->out_fd >= 0) {
                int k = loop_write(x->out_fd, ptr, n);
                if (k < 0) {
                        x->write_error = -k;
                        return 0;
                }
                /* A reader that gave up said why itself; the blob is still fetched and verified. */
                if (x->tee_fd >= 0 && x->status == 200 && loop_write(x->tee_fd, ptr, n) < 0)
                        x->tee_fd = -1;
                return n;
        }
        if (x->size + n > x->max) {
                x->write_error = EFBIG;
                return 0;
        }
        char *nb = realloc(x->body, x->size + n + 1);
        if (!nb) {
                x->write_error = ENOMEM;
                return 0;
        }
        x->body = nb;
        memcpy(x->body + x->size, ptr, n);
        x->size += n;
        x->body[x->size] = '\0';
        return n;
}

static size_t on_send(char *ptr, size_t size, size_t nmemb, void *userdata)
{
        Exchange *x = userdata;
        size_t n = size * nmemb;
        uint64_t left = x->in_size - x->in_done;

        if (x->in_stream) {
                ssize_t k;
                do
                        k = read(x->in_fd, ptr, n);
                while (k < 0 && errno == EINTR);
                if (k < 0) {
                        x->write_error = errno;
                        return CURL_READFUNC_ABORT;
                }
                x->in_done += (uint64_t) k;
                x->r->sent += (uint64_t) k;
                return (size_t) k;
        }
        if (n > left)
                n = (size_t) left;
        if (n == 0)
                return 0;
        if (x->in_fd >= 0) {
                ssize_t k = pread(x->in_fd, ptr, n, (off_t) x->in_done);
                if (k <= 0) {
                        x->write_error = k < 0 ? errno : EIO;
                        return CURL_READFUNC_ABORT;
                }
                n = (size_t) k;
        } else
                memcpy(ptr, x->in_data + x->in_done, n);
        x->in_done += n;
        x->r->sent += n;
        return n;
}

static char *header_value(const char *line, size_t n, const char *name)
{
        size_t l = strlen(name);

        if (n <= l + 1 || strncasecmp(line, name, l) != 0 || line[l] != ':')
                return NULL;
        line += l + 1;
        n -= l + 1;
        while (n > 0 && (*line == ' ' || *line == '\t'))
                line++, n--;
        while (n > 0 && (line[n - 1] == '\r' || line[n - 1] == '\n' || line[n - 1] == ' '))
                n--;
        return strndup(line, n);
}

static size_t on_header(char *ptr, size_t size, size_t nmemb, void *userdata)
{
        Exchange *x = userdata;
        size_t n = size * nmemb;
        char *v;

        /* A new response (after a redirect): forget the last one's. */
        if (n >= 5 && strncmp(ptr, "HTTP/", 5) == 0) {
                const char *sp = memchr(ptr, ' ', n);
                free(x->location);
                x->location = NULL;
                x->status = sp && (size_t) (sp - ptr) + 4 <= n ? strtol(sp + 1, NULL, 10) : 0;
        }
        if ((v = header_value(ptr, n, "WWW-Authenticate"))) {
                free(x->www_authenticate);
                x->www_authenticate = v;
        } else if ((v = header_value(ptr, n, "Location"))) {
                free(x->location);
                x->location = v;
        } else if ((v = header_value(ptr, n, "Content-Type"))) {
                free(x->content_type);
                x->content_type = v;
        } else if ((v = header_value(ptr, n, "Docker-Content-Digest"))) {
                free(x->docker_digest);
                x->docker_digest = v;
        }
        return n;
}

static int on_progress(void *userdata, curl_off_t dltotal, curl_off_t dlnow, curl_off_t ultotal, curl_off_t ulnow)
{
        Exchange *x = userdata;
        Registry *r = x->r;
        uint64_t now;

        if (r->progress_total == 0)
                return 0;
        now = now_usec(CLOCK_MONOTONIC);
        if (now < r->next_usec)
                return 0;
        r->next_usec = now + JOB_PROGRESS_INTERVAL_USEC;
        double v = (double) (r->progress_done + (uint64_t) dlnow + (uint64_t) ulnow) / (double) r->progress_total;
        job_child_progress(r->c, v > 0.99 ? 0.99 : v);
        return 0;
}

static void curl_slist_freep(struct curl_slist **l)
{
        if (*l)
                curl.slist_free_all(*l);
}

typedef enum { HTTP_GET, HTTP_HEAD, HTTP_POST, HTTP_PUT, HTTP_PATCH } HttpMethod;

/* One request; *ret_status is the HTTP status. Returns 0, a negative errno after job_child_fail()
 * for a transport failure, or -ECONNREFUSED/-EPROTO unreported for the caller's fallback to plain
 * http (@quiet). @shown names what is fetched in messages. */
static int perform(Registry *r, HttpMethod method, const char *url, struct curl_slist *headers, Exchange *x,
                   long *ret_status, const char *shown, bool quiet)
{
        char errbuf[CURL_ERROR_SIZE] = "";
        _cleanup_(curl_easy_cleanupp) CURL *e = curl_request_new(url, errbuf, on_body, on_progress, x);
        long status = 0;
        CURLcode code;

        if (!e)
                return job_child_fail(r->c, ENOMEM, "Cannot set up a request");
        /* Blob GETs are redirected to storage elsewhere; the Authorization header is not sent along
         * to another host (libcurl's default, kept). */
        (void) curl.easy_setopt(e, CURLOPT_REDIR_PROTOCOLS_STR, r->insecure ? "http,https" : "https");
        (void) curl.easy_setopt(e, CURLOPT_FOLLOWLOCATION, method == HTTP_GET ? 1L : 0L);
        (void) curl.easy_setopt(e, CURLOPT_MAXREDIRS, 5L);
        (void) curl.easy_setopt(e, CURLOPT_HEADERFUNCTION, on_header);
        (void) curl.easy_setopt(e, CURLOPT_HEADERDATA, x);
        /* Layers are tens or hundreds of MiB: fewer, bigger reads and writes. */
        (void) curl.easy_setopt(e, CURLOPT_BUFFERSIZE, 512L * 1024);
        (void) curl.easy_setopt(e, CURLOPT_UPLOAD_BUFFERSIZE, 2L * 1024 * 1024);
        if (r->insecure) {
                (void) curl.easy_setopt(e, CURLOPT_SSL_VERIFYPEER, 0L);
                (void) curl.easy_setopt(e, CURLOPT_SSL_VERIFYHOST, 0L);
        }
        switch (method) {
        case HTTP_GET:
                break;
        case HTTP_HEAD:
                (void) curl.easy_setopt(e, CURLOPT_NOBODY, 1L);
                break;
        case HTTP_POST:
                (void) curl.easy_setopt(e, CURLOPT_POST, 1L);
                (void) curl.easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t) 0);
                (void) curl.easy_setopt(e, CURLOPT_POSTFIELDS, "");
                break;
        case HTTP_PUT:
                (void) curl.easy_setopt(e, CURLOPT_UPLOAD, 1L);
                (void) curl.easy_setopt(e, CURLOPT_READFUNCTION, on_send);
                (void) curl.easy_setopt(e, CURLOPT_READDATA, x);
                (void) curl.easy_setopt(e, CURLOPT_INFILESIZE_LARGE, (curl_off_t) x->in_size);
                break;
        case HTTP_PATCH:
                /* Of unknown size: sent chunked. */
                (void) curl.easy_setopt(e, CURLOPT_UPLOAD, 1L);
                (void) curl.easy_setopt(e, CURLOPT_CUSTOMREQUEST, "PATCH");
                (void) curl.easy_setopt(e, CURLOPT_READFUNCTION, on_send);
                (void) curl.easy_setopt(e, CURLOPT_READDATA, x);
                (void) curl.easy_setopt(e, CURLOPT_INFILESIZE_LARGE, (curl_off_t) -1);
                break;
        }
        (void) curl.easy_setopt(e, CURLOPT_HTTPHEADER, headers);

        code = curl.easy_perform(e);
        (void) curl.easy_getinfo(e, CURLINFO_RESPONSE_CODE, &status);
        *ret_status = status;
        if (code == CURLE_OK)
                return 0;
        if (x->write_error == EFBIG)
                return job_child_fail(r->c, EBADMSG, "%s from %s is larger than it should be", shown, r->host);
        if (x->write_error)
                return job_child_fail(r->c, x->write_error, "Cannot store %s: %s", shown, strerror(x->write_error));
        if (quiet && (code == CURLE_SSL_CONNECT_ERROR || code == CURLE_RECV_ERROR || code == CURLE_GOT_NOTHING ||
                      code == CURLE_WEIRD_SERVER_REPLY))
                return -EPROTO;
        if (code == CURLE_PEER_FAILED_VERIFICATION || code == CURLE_SSL_CACERT_BADFILE ||
            code == CURLE_SSL_CONNECT_ERROR)
                return job_child_fail(r->c, EIO,
                                      "Cannot make a verified TLS connection to %s: %s (for a registry on this "
                                      "machine, the option insecure)",
                                      r->host, errbuf[0] ? errbuf : curl.easy_strerror(code));
        return job_child_fail(r->c, EIO, "Cannot reach %s for %s: %s", r->host, shown,
                              errbuf[0] ? errbuf : curl.easy_strerror(code));
}

/* ---- authentication ---- */

/* The value of @key in a challenge's parameters: key="value", comma-separated. */
static char *challenge_param(const char *params, const char *key)
{
        size_t l = strlen(key);

        for (const char *p = params; p && *p;) {
                p += strspn(p, " ,");
                if (strncasecmp(p, key, l) == 0 && p[l] == '=') {
                        p += l + 1;
                        if (*p == '"') {
                                const char *end = strchr(p + 1, '"');
                                return end ? strndup(p + 1, (size_t) (end - p - 1)) : NULL;
                        }
                        return strndup(p, strcspn(p, ", "));
                }
                /* skip to the next parameter, past a quoted value */
                while (*p && *p != ',') {
                        if (*p == '"') {
                                const char *end = strchr(p + 1, '"');
                                if (!end)
                                        return NULL;
                                p = end;
                        }
                        p++;
                }
        }
        return NULL;
}

static char *basic_header(const Registry *r)
{
        g_autofree char *pair = g_strdup_printf("%s:%s", r->user, r->password);
        g_autofree char *b64 = g_base64_encode((const guchar *) pair, strlen(pair));
        char *h;

        explicit_bzero(pair, strlen(pair));
        h = g_strdup_printf("Authorization: Basic %s", b64);
        explicit_bzero(b64, strlen(b64));
        return h;
}

static int fetch_token(Registry *r, const char *params)
{
        _cleanup_free_ char *realm = challenge_param(params, "realm"), *service = challenge_param(params, "service"),
                            *scope = challenge_param(params, "scope");
        _cleanup_(curl_slist_freep) struct curl_slist *headers = NULL;
        _cleanup_(curl_easy_cleanupp) CURL *esc = curl.easy_init();
        g_autoptr(JsonParser) parser = json_parser_new();
        g_autoptr(GString) url = NULL;
        g_autofree char *basic = NULL;
        Exchange x = {.r = r, .out_fd = -1, .in_fd = -1, .max = OCI_TOKEN_MAX};
        const char *token = NULL;
        JsonNode *root;
        long status = 0;
        int k;

        if (!realm || (strncmp(realm, "https://", 8) != 0 && !(r->insecure && strncmp(realm, "http://", 7) == 0)))
                return job_child_fail(r->c, EKEYREJECTED,
                                      "Registry %s asks for a token from a realm that is not an https URL", r->host);
        if (!esc)
                return -ENOMEM;
        url = g_string_new(realm);
        g_string_append_c(url, strchr(realm, '?') ? '&' : '?');
        if (service) {
                char *s = curl.easy_escape(esc, service, 0);
                g_string_append_printf(url, "service=%s&", s ?: "");
                curl.free(s);
        }
        {
                g_autofree char *want =
                        scope ? NULL
                              : g_strdup_printf("repository:%s:%s", r->repository, r->push ? "pull,push" : "pull");
                char *s = curl.easy_escape(esc, scope ?: want, 0);
                g_string_append_printf(url, "scope=%s", s ?: "");
                curl.free(s);
        }
        if (r->user) {
                basic = basic_header(r);
                headers = curl.slist_append(headers, basic);
        }
        k = perform(r, HTTP_GET, url->str, headers, &x, &status, "a token", false);
        if (basic)
                explicit_bzero(basic, strlen(basic));
        if (k < 0) {
                exchange_done(&x);
                return k;
        }
        if (status == 401 || status == 403) {
                exchange_done(&x);
                return job_child_fail(r->c, EKEYREJECTED, "Registry %s refused a token for %s%s (HTTP %ld)", r->host,
                                      r->repository,
                                      r->user ? " with the configured credentials" : " without credentials", status);
        }
        if (status != 200 || !x.body || !json_parser_load_from_data(parser, x.body, (gssize) x.size, NULL) ||
            !(root = json_parser_get_root(parser)) || !JSON_NODE_HOLDS_OBJECT(root)) {
                exchange_done(&x);
                return job_child_fail(r->c, EKEYREJECTED, "Registry %s gave no token (HTTP %ld)", r->host, status);
        }
        JsonObject *o = json_node_get_object(root);
        if (json_object_has_member(o, "token"))
                token = json_object_get_string_member_with_default(o, "token", NULL);
        if (!token && json_object_has_member(o, "access_token"))
                token = json_object_get_string_member_with_default(o, "access_token", NULL);
        if (!token || !*token || strpbrk(token, "\r\n")) {
                exchange_done(&x);
                return job_child_fail(r->c, EKEYREJECTED, "Registry %s gave no usable token", r->host);
        }
        secret_free(r->authorization);
        r->authorization = g_strdup_printf("Authorization: Bearer %s", token);
        explicit_bzero(x.body, x.size);
        exchange_done(&x);
        return 0;
}

/* Answer the challenge of a 401: 0 if the request can be made again, or a failure said. */
static int authenticate(Registry *r, const char *challenge, bool already_tried)
{
        if (already_tried)
                return job_child_fail(r->c, EKEYREJECTED, "Registry %s refused access to %s%s", r->host, r->repository,
                                      r->user ? " with the configured credentials" : " without credentials");
        if (challenge && strncasecmp(challenge, "Bearer ", 7) == 0)
                return fetch_token(r, challenge + 7);
        if (challenge && strncasecmp(challenge, "Basic", 5) == 0) {
                if (!r->user)
                        return job_child_fail(r->c, EKEYREJECTED,
                                              "Registry %s wants a user and password for %s, and none is configured "
                                              "for it",
                                              r->host, r->repository);
                secret_free(r->authorization);
                r->authorization = basic_header(r);
                return 0;
        }
        return job_child_fail(r->c, EKEYREJECTED,
                              "Registry %s refused access to %s, with no way to authenticate offered", r->host,
                              r->repository);
}

/* A request with the authentication answered as needed; x is reset before each try. Returns 0 with
 * *ret_status, or a failure said. */
static int request(Registry *r, HttpMethod method, const char *path_or_url, const char *const *extra, Exchange *x,
                   long *ret_status, const char *shown)
{
        g_autofree char *url = NULL;
        bool tried = false;
        int k;

        if (strncmp(path_or_url, "http://", 7) == 0 || strncmp(path_or_url, "https://", 8) == 0)
                url = g_strdup(path_or_url);
        else
                url = g_strdup_printf("%s%s", r->base, path_or_url);
        for (;;) {
                _cleanup_(curl_slist_freep) struct curl_slist *headers = NULL;
                long status = 0;

                for (const char *const *h = extra; h && *h; h++)
                        headers = curl.slist_append(headers, *h);
                if (r->authorization)
                        headers = curl.slist_append(headers, r->authorization);
                x->got = x->size = x->in_done = 0;
                if (x->sha256)
                        sha256_reset(x->sha256);
                if (x->out_fd >= 0 && (ftruncate(x->out_fd, 0) < 0 || lseek(x->out_fd, 0, SEEK_SET) < 0))
                        return job_child_fail(r->c, errno, "Cannot store %s: %s", shown, strerror(errno));
                k = perform(r, method, url, headers, x, &status, shown, false);
                if (k < 0)
                        return k;
                if (status != 401) {
                        *ret_status = status;
                        return 0;
                }
                k = authenticate(r, x->www_authenticate, tried);
                if (k < 0)
                        return k;
                tried = true;
        }
}

/* The first contact: GET /v2/, which says whether the registry speaks the API, and over which
 * scheme when insecure (https without verification, else plain http). */
static int probe(Registry *r)
{
        Exchange x = {.r = r, .out_fd = -1, .in_fd = -1, .max = 64 * 1024};
        g_autofree char *url = g_strdup_printf("%s/v2/", r->base);
        long status = 0;
        int k;

        k = perform(r, HTTP_GET, url, NULL, &x, &status, "the API version", r->insecure);
        exchange_done(&x);
        if (k == -EPROTO && r->insecure) {
                free(r->base);
                r->base = g_strdup_printf("http://%s", r->host);
                x = (Exchange) {.r = r, .out_fd = -1, .in_fd = -1, .max = 64 * 1024};
                g_free(url);
                url = g_strdup_printf("%s/v2/", r->base);
                k = perform(r, HTTP_GET, url, NULL, &x, &status, "the API version", false);
                exchange_done(&x);
        }
        if (k < 0)
                return k;
        if (status != 200 && status != 401)
                return job_child_fail(r->c, EPROTONOSUPPORT,
                                      "%s does not answer as an OCI registry (HTTP %ld for /v2/)", r->host, status);
        r->probed = true;
        return 0;
}

int registry_new(JobChild *c, const char *host, const char *repository, bool insecure, bool push,
                 const RegistryCredentials *credentials, Registry **ret)
{
        Registry *r;
        int k;

        k = curl_load(c, "registries");
        if (k < 0)
                return k;
        (void) signal(SIGPIPE, SIG_IGN);
        r = calloc(1, sizeof *r);
        if (!r)
                return -ENOMEM;
        r->c = c;
        r->host = strdup(host);
        r->base = g_strdup_printf("https://%s", host);
        r->repository = strdup(repository);
        r->insecure = insecure;
        r->push = push;
        if (credentials && credentials->user) {
                r->user = strdup(credentials->user);
                r->password = strdup(credentials->password ?: "");
        }
        if (!r->host || !r->repository) {
                registry_free(r);
                return -ENOMEM;
        }
        k = probe(r);
        if (k < 0) {
                registry_free(r);
                return k;
        }
        *ret = r;
        return 0;
}

/* ---- the API ---- */

static int status_failure(Registry *r, long status, const char *what, const char *body)
{
        if (status == 404)
                return job_child_fail(r->c, ENOENT, "Registry %s has no %s in %s", r->host, what, r->repository);
        if (status == 403)
                return job_child_fail(r->c, EKEYREJECTED, "Registry %s refused access to %s in %s (HTTP 403)", r->host,
                                      what, r->repository);
        /* The registry's own error code (JSON "errors":[{"code": …}]) says more than the status. */
        if (body) {
                g_autoptr(JsonParser) p = json_parser_new();
                JsonNode *root;
                if (json_parser_load_from_data(p, body, -1, NULL) && (root = json_parser_get_root(p)) &&
                    JSON_NODE_HOLDS_OBJECT(root)) {
                        JsonArray *errs = json_object_get_array_member(json_node_get_object(root), "errors");
                        if (errs && json_array_get_length(errs) > 0) {
                                JsonNode *n0 = json_array_get_element(errs, 0);
                                if (JSON_NODE_HOLDS_OBJECT(n0)) {
                                        const char *code = json_object_get_string_member_with_default(
                                                json_node_get_object(n0), "code", "?");
                                        g_autofree char *shown = g_strescape(code, NULL);
                                        if (streq(code, "MANIFEST_INVALID") || streq(code, "DIGEST_INVALID") ||
                                            streq(code, "BLOB_UNKNOWN") || streq(code, "MANIFEST_BLOB_UNKNOWN"))
                                                return job_child_fail(r->c, EBADMSG,
                                                                      "Registry %s refused %s: %.64s (HTTP %ld)",
                                                                      r->host, what, shown, status);
                                        return job_child_fail(r->c, EIO, "Registry %s answered %.64s for %s (HTTP %ld)",
                                                              r->host, shown, what, status);
                                }
                        }
                }
        }
        return job_child_fail(r->c, EIO, "Registry %s answered HTTP %ld for %s", r->host, status, what);
}

int registry_get_manifest(Registry *r, const char *reference, char **ret_body, size_t *ret_size, char **ret_type,
                          char **ret_digest)
{
        static const char *const accept[] = {
                "Accept: " OCI_MANIFEST_TYPE ", " OCI_INDEX_TYPE ", " DOCKER_MANIFEST_TYPE ", " DOCKER_LIST_TYPE,
                NULL,
        };
        Exchange x = {.r = r, .out_fd = -1, .in_fd = -1, .max = OCI_MANIFEST_MAX};
        g_autofree char *path = g_strdup_printf("/v2/%s/manifests/%s", r->repository, reference);
        g_autofree char *what = g_strdup_printf("manifest %s", reference);
        long status;
        int k;

        k = request(r, HTTP_GET, path, accept, &x, &status, what);
        if (k < 0) {
                exchange_done(&x);
                return k;
        }
        if (status != 200) {
                k = status_failure(r, status, what, x.body);
                exchange_done(&x);
                return k;
        }
        *ret_body = x.body ? x.body : strdup("");
        *ret_size = x.size;
        x.body = NULL;
        /* parameters (";charset=…") are not part of the type */
        *ret_type = x.content_type ? strndup(x.content_type, strcspn(x.content_type, "; ")) : strdup("");
        if (ret_digest) {
                *ret_digest = x.docker_digest;
                x.docker_digest = NULL;
        }
        exchange_done(&x);
        return 0;
}

static int blob_get(Registry *r, const char *digest, uint64_t size, int fd, int tee_fd, size_t max, char **ret,
                    size_t *ret_size)
{
        Exchange x = {.r = r, .out_fd = fd, .tee_fd = tee_fd, .in_fd = -1, .max = max, .limit = size ?: UINT64_MAX};
        g_autofree char *path = g_strdup_printf("/v2/%s/blobs/%s", r->repository, digest);
        g_autofree char *what = g_strdup_printf("blob %s", digest);
        long status;
        int k;

        x.sha256 = sha256_new();
        k = request(r, HTTP_GET, path, NULL, &x, &status, what);
        if (k >= 0 && status != 200)
                k = status_failure(r, status, what, fd < 0 ? x.body : NULL);
        if (k >= 0 && x.got != size)
                k = job_child_fail(r->c, EBADMSG,
                                   "Blob %s from %s has %" PRIu64 " bytes, not the %" PRIu64 " its manifest says",
                                   digest, r->host, x.got, size);
        if (k >= 0 && !streq(digest + strlen("sha256:"), sha256_get_string(x.sha256)))
                k = job_child_fail(r->c, EBADMSG, "Blob %s from %s does not match its digest: its SHA-256 is %s",
                                   digest, r->host, sha256_get_string(x.sha256));
        if (k >= 0 && ret) {
                *ret = x.body ? x.body : strdup("");
                *ret_size = x.size;
                x.body = NULL;
        }
        exchange_done(&x);
        return k;
}

int registry_get_blob(Registry *r, const char *digest, uint64_t size, int fd, int tee_fd)
{
        return blob_get(r, digest, size, fd, tee_fd, 0, NULL, NULL);
}

int registry_get_blob_small(Registry *r, const char *digest, uint64_t size, size_t max, char **ret, size_t *ret_size)
{
        if (size > max)
                return job_child_fail(r->c, EBADMSG, "Blob %s is %" PRIu64 " bytes, more than %zu", digest, size, max);
        return blob_get(r, digest, size, -1, -1, max, ret, ret_size);
}

int registry_has_blob(Registry *r, const char *digest)
{
        Exchange x = {.r = r, .out_fd = -1, .in_fd = -1, .max = 64 * 1024};
        g_autofree char *path = g_strdup_printf("/v2/%s/blobs/%s", r->repository, digest);
        g_autofree char *what = g_strdup_printf("blob %s", digest);
        long status;
        int k;

        k = request(r, HTTP_HEAD, path, NULL, &x, &status, what);
        exchange_done(&x);
        if (k < 0)
                return k;
        return status == 200;
}

/* Where an upload goes on: a Location may be relative to the registry. */
static char *location_url(Registry *r, const char *location)
{
        if (strncmp(location, "http://", 7) == 0 || strncmp(location, "https://", 8) == 0)
                return strdup(location);
        if (location[0] == '/')
                return g_strdup_printf("%s%s", r->base, location);
        return NULL;
}

int registry_put_blob(Registry *r, const char *digest, int fd, const void *data, uint64_t size)
{
        Exchange start = {.r = r, .out_fd = -1, .in_fd = -1, .max = 64 * 1024};
        g_autofree char *path = g_strdup_printf("/v2/%s/blobs/uploads/", r->repository);
        g_autofree char *what = g_strdup_printf("the upload of blob %s", digest);
        _cleanup_free_ char *url = NULL;
        g_autofree char *put = NULL;
        long status;
        int k;

        k = request(r, HTTP_POST, path, NULL, &start, &status, what);
        if (k >= 0 && status != 202)
                k = status_failure(r, status, what, start.body);
        if (k >= 0 && (!start.location || !(url = location_url(r, start.location))))
                k = job_child_fail(r->c, EIO, "Registry %s gave no place to upload blob %s to", r->host, digest);
        exchange_done(&start);
        if (k < 0)
                return k;
        put = g_strdup_printf("%s%cdigest=%s", url, strchr(url, '?') ? '&' : '?', digest);

        static const char *const headers[] = {"Content-Type: application/octet-stream", NULL};
        Exchange x = {.r = r, .out_fd = -1, .in_fd = fd, .in_data = data, .in_size = size, .max = 64 * 1024};
        k = request(r, HTTP_PUT, put, headers, &x, &status, what);
        if (k >= 0 && status != 201)
                k = status_failure(r, status, what, x.body);
        exchange_done(&x);
        return k;
}

int registry_stream_begin(Registry *r, char **ret_url)
{
        Exchange x = {.r = r, .out_fd = -1, .in_fd = -1, .max = 64 * 1024};
        g_autofree char *path = g_strdup_printf("/v2/%s/blobs/uploads/", r->repository);
        long status;
        int k;

        k = request(r, HTTP_POST, path, NULL, &x, &status, "an upload");
        if (k >= 0 && status != 202)
                k = status_failure(r, status, "an upload", x.body);
        if (k >= 0 && (!x.location || !(*ret_url = location_url(r, x.location))))
                k = job_child_fail(r->c, EIO, "Registry %s gave no place to upload to", r->host);
        exchange_done(&x);
        return k;
}

int registry_stream_send(Registry *r, const char *url, int fd, char **ret_url)
{
        static const char *const headers[] = {"Content-Type: application/octet-stream", NULL};
        _cleanup_(curl_slist_freep) struct curl_slist *h = NULL;
        Exchange x = {.r = r, .out_fd = -1, .in_fd = fd, .in_stream = true, .max = 64 * 1024};
        uint64_t total = r->progress_total;
        long status = 0;
        int k;

        /* No authentication round here: the stream cannot be sent twice. The POST before has it. */
        for (const char *const *p = headers; *p; p++)
                h = curl.slist_append(h, *p);
        if (r->authorization)
                h = curl.slist_append(h, r->authorization);
        r->progress_total = 0; /* the layer's making reports progress meanwhile */
        k = perform(r, HTTP_PATCH, url, h, &x, &status, "the layer", false);
        r->progress_total = total;
        if (k >= 0 && status != 202 && status != 204)
                k = status_failure(r, status, "the layer", x.body);
        if (k >= 0 && (!x.location || !(*ret_url = location_url(r, x.location))))
                *ret_url = strdup(url);
        exchange_done(&x);
        return k;
}

int registry_stream_finish(Registry *r, const char *url, const char *digest)
{
        g_autofree char *put = g_strdup_printf("%s%cdigest=%s", url, strchr(url, '?') ? '&' : '?', digest);
        g_autofree char *what = g_strdup_printf("the upload of blob %s", digest);
        Exchange x = {.r = r, .out_fd = -1, .in_fd = -1, .in_size = 0, .max = 64 * 1024};
        long status;
        int k;

        k = request(r, HTTP_PUT, put, NULL, &x, &status, what);
        if (k >= 0 && status != 201)
                k = status_failure(r, status, what, x.body);
        exchange_done(&x);
        return k;
}

int registry_put_manifest(Registry *r, const char *tag, const char *type, const char *body, size_t size)
{
        g_autofree char *path = g_strdup_printf("/v2/%s/manifests/%s", r->repository, tag);
        g_autofree char *ct = g_strdup_printf("Content-Type: %s", type);
        g_autofree char *what = g_strdup_printf("manifest %s", tag);
        const char *headers[] = {ct, NULL};
        Exchange x = {.r = r,
                      .out_fd = -1,
                      .in_fd = -1,
                      .in_data = (const uint8_t *) body,
                      .in_size = size,
                      .max = 64 * 1024};
        long status;
        int k;

        k = request(r, HTTP_PUT, path, headers, &x, &status, what);
        if (k >= 0 && status != 201)
                k = status_failure(r, status, what, x.body);
        exchange_done(&x);
        return k;
}
