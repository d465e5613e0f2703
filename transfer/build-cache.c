/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <dirent.h>
#include <fcntl.h>
#include <grp.h>
#include <inttypes.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <sys/xattr.h>

#include <btrfsutil.h>

#include "build-cache.h"
#include "cache.h"
#include "config.h"
#include "curl-util.h"
#include "image-cache.h"
#include "sha256.h"
#include "store.h"

/* bookworm's InRelease is 150 KB. */
#define INRELEASE_MAX (8 * 1024 * 1024)
#define GPGV "/usr/bin/gpgv"
/* gpgv reads what the mirror sent: as nobody, not as root. */
#define NOBODY 65534

static const char *const entry_xattrs[] = {STORE_IMAGE_CACHE_XATTR_INRELEASE, STORE_IMAGE_CACHE_XATTR_KEY,
                                           STORE_IMAGE_CACHE_XATTR_CREATED, STORE_IMAGE_CACHE_XATTR_BYTES};

void build_cache_done(BuildCache *bc)
{
        store_image_cache_unlock(bc->images_fd, bc->key, bc->lock_fd);
        safe_close(bc->images_fd);
        safe_close(bc->cache_fd);
        g_free(bc->key_text);
        bc->lock_fd = bc->images_fd = bc->cache_fd = -1;
        bc->key_text = NULL;
}

static size_t on_data(char *data, size_t size, size_t n, void *userdata)
{
        GByteArray *buf = userdata;

        if (buf->len + size * n > INRELEASE_MAX)
                return 0; /* fails the transfer */
        g_byte_array_append(buf, (const guint8 *) data, (guint) (size * n));
        return size * n;
}

static int fetch(JobChild *c, const char *url, GByteArray *buf)
{
        const char *e = curl_try_load();
        CURL *h;
        CURLcode code;
        char errbuf[CURL_ERROR_SIZE] = "";

        if (e) {
                job_child_log(c, LOG_LEVEL_WARNING, "Cannot load libcurl (%s): the image cache is not used.", e);
                return -ENOPKG;
        }
        h = curl_request_new(url, errbuf, on_data, NULL, buf);
        if (!h)
                return -ENOMEM;
        (void) curl.easy_setopt(h, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
        (void) curl.easy_setopt(h, CURLOPT_FOLLOWLOCATION, 1L);
        (void) curl.easy_setopt(h, CURLOPT_MAXREDIRS, 10L);
        (void) curl.easy_setopt(h, CURLOPT_FAILONERROR, 1L);
        code = curl.easy_perform(h);
        curl.easy_cleanup(h);
        if (code != CURLE_OK) {
                job_child_log(c, LOG_LEVEL_WARNING,
                              "Cannot fetch the suite's InRelease (%s): the image cache is not used.",
                              errbuf[0] ? errbuf : curl.easy_strerror(code));
                return -EIO;
        }
        return 0;
}

/* gpgv on @data (a memfd as its stdin), as nobody, with the suite's keyring alone: 0 if it found a good
 * signature. */
static int verify(JobChild *c, const GByteArray *data, const char *keyring)
{
        char *argv[] = {(char *) GPGV, (char *) "--quiet", (char *) "--keyring", (char *) keyring, (char *) "-", NULL};
        char *envp[] = {(char *) "PATH=/usr/bin:/bin", (char *) "HOME=/nonexistent", (char *) "LC_ALL=C", NULL};
        _cleanup_close_ int fd = memfd_create("InRelease", MFD_CLOEXEC);
        int status;
        pid_t pid;

        if (fd < 0 || loop_write(fd, data->data, data->len) < 0 || lseek(fd, 0, SEEK_SET) < 0)
                return -errno;
        pid = safe_fork(false);
        if (pid < 0)
                return (int) pid;
        if (pid == 0) {
                int null = open("/dev/null", O_RDWR | O_CLOEXEC);
                if (null < 0 || dup2(fd, STDIN_FILENO) < 0 || dup2(null, STDOUT_FILENO) < 0 ||
                    dup2(null, STDERR_FILENO) < 0 || setgroups(0, NULL) < 0 || setresgid(NOBODY, NOBODY, NOBODY) < 0 ||
                    setresuid(NOBODY, NOBODY, NOBODY) < 0)
                        _exit(126);
                execve(GPGV, argv, envp);
                _exit(127);
        }
        while (waitpid(pid, &status, 0) < 0)
                if (errno != EINTR)
                        return -errno;
        if (WIFEXITED(status) && WEXITSTATUS(status) == 0)
                return 0;
        job_child_log(c, LOG_LEVEL_WARNING,
                      "The suite's InRelease is not signed by a key of %s (gpgv: status %d): the image cache is not "
                      "used.",
                      keyring, WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status));
        return -EBADMSG;
}

#define CLEARSIGN_BEGIN "-----BEGIN PGP SIGNED MESSAGE-----\n"
#define SIGNATURE_BEGIN "\n-----BEGIN PGP SIGNATURE-----"
#define VALID_UNTIL "Valid-Until:"

int inrelease_valid_until(const char *text, size_t len, uint64_t *ret_usec)
{
        g_autofree char *copy = g_strndup(text, len);
        char *body, *end, *line, *next;
        bool found = false;

        if (strlen(copy) != len || !g_str_has_prefix(copy, CLEARSIGN_BEGIN))
                return -EBADMSG;
        /* The armor's headers (Hash:) end at the first empty line; the signed text, at the signature. */
        body = strstr(copy, "\n\n");
        end = strstr(copy, SIGNATURE_BEGIN);
        if (!body || !end || end < body)
                return -EBADMSG;
        *end = '\0';
        for (line = body + 2; line; line = next) {
                next = strchr(line, '\n');
                if (next)
                        *next++ = '\0';
                if (g_ascii_strncasecmp(line, VALID_UNTIL, strlen(VALID_UNTIL)) != 0)
                        continue;
                /* Two would leave it to the reader which counts. */
                if (found)
                        return -EBADMSG;
                found = true;
                time_t t = curl.getdate(g_strstrip(line + strlen(VALID_UNTIL)), NULL);
                if (t < 0)
                        return -EBADMSG;
                *ret_usec = (uint64_t) t * 1000000;
        }
        return found;
}

static void format_date(uint64_t usec, char *buf, size_t size)
{
        g_autoptr(GDateTime) t = g_date_time_new_from_unix_utc((gint64) (usec / 1000000));
        g_autofree char *s = t ? g_date_time_format(t, "%Y-%m-%d %H:%M:%S UTC") : NULL;

        snprintf(buf, size, "%s", s ?: "an unknown date");
}

void build_cache_lookup(JobChild *c, BuildCache *bc, int store_fd, const char *key_text, const char *mirror,
                        const char *suite, const char *keyring, bool reuse)
{
        g_autoptr(GByteArray) data = g_byte_array_new();
        g_autofree char *url =
                g_strdup_printf("%s%sdists/%s/InRelease", mirror, g_str_has_suffix(mirror, "/") ? "" : "/", suite);
        _cleanup_close_ int entry = -1;
        char have[65] = "";
        uint64_t start, fetched, until = 0;
        ssize_t n;
        int k;

        bc->key_text = g_strdup(key_text);
        sha256_hex(key_text, strlen(key_text), bc->key);
        bc->cache_fd = store_cache_open(store_fd);
        if (bc->cache_fd < 0 || (bc->images_fd = store_image_cache_open(bc->cache_fd)) < 0) {
                job_child_log(c, LOG_LEVEL_WARNING, "Cannot open the image cache: %s",
                              strerror(bc->cache_fd < 0 ? -bc->cache_fd : -bc->images_fd));
                return;
        }
        k = store_image_cache_lock(bc->images_fd, bc->key, false);
        if (k == -EWOULDBLOCK) {
                job_child_log(c, LOG_LEVEL_INFO, "Waiting for another build of the same recipe…");
                k = store_image_cache_lock(bc->images_fd, bc->key, true);
        }
        if (k < 0) {
                job_child_log(c, LOG_LEVEL_WARNING, "Cannot lock the image cache: %s", strerror(-k));
                return;
        }
        bc->lock_fd = k;
        if (!reuse)
                job_child_log(
                        c, LOG_LEVEL_INFO,
                        "Not using the image cache, as asked: a full build, whose tree the cache keeps instead of "
                        "what it has for this recipe.");

        start = now_usec(CLOCK_MONOTONIC);
        if (fetch(c, url, data) < 0)
                return;
        fetched = now_usec(CLOCK_MONOTONIC);
        if (verify(c, data, keyring) < 0)
                return;
        /* A mirror may serve an old InRelease again, one signed when it was true: apt refuses it past its
         * Valid-Until (which suites such as security set), and so does the cache, whatever it holds. */
        k = inrelease_valid_until((const char *) data->data, data->len, &until);
        if (k < 0) {
                job_child_log(c, LOG_LEVEL_INFO,
                              "Cannot read the Valid-Until of the suite's InRelease: the image cache is not used.");
                return;
        }
        if (k > 0 && until <= now_usec(CLOCK_REALTIME)) {
                char date[64];
                format_date(until, date, sizeof date);
                job_child_log(c, LOG_LEVEL_INFO,
                              "The suite's InRelease expired on %s (its Valid-Until): the image cache is not used.",
                              date);
                return;
        }
        sha256_hex(data->data, data->len, bc->inrelease);
        job_child_log(c, LOG_LEVEL_DEBUG, "InRelease (%u bytes) fetched in %" PRIu64 " ms, verified in %" PRIu64 " ms.",
                      data->len, (fetched - start) / 1000, (now_usec(CLOCK_MONOTONIC) - fetched) / 1000);

        entry = openat(bc->images_fd, bc->key, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (entry < 0) {
                job_child_log(c, LOG_LEVEL_INFO, "The image cache has no tree of this recipe: a full build.");
                return;
        }
        n = fgetxattr(entry, STORE_IMAGE_CACHE_XATTR_INRELEASE, have, sizeof have - 1);
        if (n != 64 || strcmp(have, bc->inrelease) != 0) {
                job_child_log(c, LOG_LEVEL_INFO,
                              "The image cache's tree of this recipe was made from another InRelease of the mirror: a "
                              "full build, which replaces it.");
                return;
        }
        bc->created = store_image_cache_xattr_u64(entry, STORE_IMAGE_CACHE_XATTR_CREATED);
        if (reuse)
                bc->hit = true;
}

int build_cache_take(JobChild *c, BuildCache *bc, int store_fd, const char *temp)
{
        _cleanup_close_ int entry = openat(bc->images_fd, bc->key, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        _cleanup_close_ int tree = -1;
        uint64_t start = now_usec(CLOCK_MONOTONIC);
        enum btrfs_util_error e;
        char date[64];

        if (entry < 0)
                return job_child_fail(c, errno, "Cannot open the image cache's tree: %s", strerror(errno));
        e = btrfs_util_create_snapshot_fd2(entry, store_fd, temp, 0, NULL, NULL);
        if (e != BTRFS_UTIL_OK)
                return job_child_fail(c, errno ?: EIO, "Cannot snapshot the image cache's tree: %s",
                                      btrfs_util_strerror(e));
        tree = openat(store_fd, temp, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (tree < 0)
                return job_child_fail(c, errno, "Cannot open the new tree: %s", strerror(errno));
        for (size_t i = 0; i < ELEMENTSOF(entry_xattrs); i++)
                if (fremovexattr(tree, entry_xattrs[i]) < 0 && errno != ENODATA)
                        return job_child_fail(c, errno, "Cannot clear the new tree's attributes: %s", strerror(errno));
        format_date(bc->created, date, sizeof date);
        job_child_log(c, LOG_LEVEL_INFO,
                      "Reused the tree of an identical build of %s from the image cache (the mirror's InRelease is "
                      "unchanged, SHA256 %s): nothing downloaded, nothing installed.",
                      date, bc->inrelease);
        job_child_log(c, LOG_LEVEL_DEBUG, "Snapshot of the cached tree in %" PRIu64 " ms.",
                      (now_usec(CLOCK_MONOTONIC) - start) / 1000);
        bc->lock_fd = safe_close(bc->lock_fd);
        return 0;
}

/* The SHA-256 of the InRelease of @suite in apt's lists @lists_dir; false if there is none. */
static bool lists_inrelease(const char *lists_dir, const char *suite, char ret[static 65])
{
        g_autofree char *suffix = g_strdup_printf("_dists_%s_InRelease", suite);
        g_autofree char *found = NULL;
        struct dirent *de;
        DIR *d = opendir(lists_dir);

        if (!d)
                return false;
        while ((de = readdir(d)))
                if (g_str_has_suffix(de->d_name, suffix)) {
                        g_free(found);
                        found = g_strdup(de->d_name);
                }
        if (found) {
                _cleanup_close_ int fd = openat(dirfd(d), found, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
                g_autoptr(Sha256) sum = sha256_new();
                uint8_t buf[64 * 1024];
                ssize_t n = -1;

                while (fd >= 0 && (n = read(fd, buf, sizeof buf)) > 0)
                        sha256_update(sum, buf, (size_t) n);
                if (n == 0)
                        snprintf(ret, 65, "%s", sha256_get_string(sum));
                else
                        found = (g_free(found), NULL);
        }
        closedir(d);
        return found != NULL;
}

static int set_xattr_text(int fd, const char *name, const char *value)
{
        return fsetxattr(fd, name, value, strlen(value), 0) < 0 ? -errno : 0;
}

/* The hidden snapshot @temp of @tree_fd made an entry: its attributes, read-only, into place. */
static int make_entry(BuildCache *bc, int tree_fd, const char *temp)
{
        _cleanup_close_ int entry = -1;
        enum btrfs_util_error e;
        char number[32];
        int k;

        e = btrfs_util_create_snapshot_fd2(tree_fd, bc->images_fd, temp, 0, NULL, NULL);
        if (e != BTRFS_UTIL_OK)
                return errno > 0 ? -errno : -EIO;
        entry = openat(bc->images_fd, temp, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (entry < 0)
                return -errno;
        snprintf(number, sizeof number, "%" PRIu64, now_usec(CLOCK_REALTIME));
        if ((k = set_xattr_text(entry, STORE_IMAGE_CACHE_XATTR_INRELEASE, bc->inrelease)) < 0 ||
            (k = set_xattr_text(entry, STORE_IMAGE_CACHE_XATTR_KEY, bc->key_text)) < 0 ||
            (k = set_xattr_text(entry, STORE_IMAGE_CACHE_XATTR_CREATED, number)) < 0)
                return k;
        snprintf(number, sizeof number, "%" PRIu64, store_tree_allocated(entry));
        if ((k = set_xattr_text(entry, STORE_IMAGE_CACHE_XATTR_BYTES, number)) < 0 ||
            (k = store_set_read_only_fd(entry, true)) < 0)
                return k;
        /* Into place in one step, the older tree of the recipe out of it, then gone. */
        if (renameat2(bc->images_fd, temp, bc->images_fd, bc->key, RENAME_EXCHANGE) >= 0) {
                (void) store_image_cache_remove(bc->images_fd, temp);
                return 0;
        }
        if (errno != ENOENT || renameat2(bc->images_fd, temp, bc->images_fd, bc->key, RENAME_NOREPLACE) < 0)
                return -errno;
        return 0;
}

void build_cache_save(JobChild *c, BuildCache *bc, int tree_fd, const char *lists_dir, const char *suite, uint64_t max)
{
        g_autofree char *temp = g_strconcat(STORE_IMAGE_CACHE_NEW_PREFIX, bc->key, NULL);
        uint64_t start = now_usec(CLOCK_MONOTONIC);
        char used[65];
        int k;

        if (bc->lock_fd < 0 || !bc->inrelease[0] || max == 0)
                return;
        if (!lists_inrelease(lists_dir, suite, used) || !streq(used, bc->inrelease)) {
                job_child_log(
                        c, LOG_LEVEL_INFO,
                        "The mirror's InRelease changed during the build: its tree is not kept in the image cache.");
                return;
        }
        /* Left by a build killed while it made one: the lock is ours. */
        (void) store_image_cache_remove(bc->images_fd, temp);
        k = make_entry(bc, tree_fd, temp);
        if (k < 0) {
                job_child_log(c, LOG_LEVEL_WARNING, "Cannot keep the tree in the image cache: %s", strerror(-k));
                (void) store_image_cache_remove(bc->images_fd, temp);
                return;
        }
        job_child_log(c, LOG_LEVEL_INFO, "Kept the tree in the image cache, for the next build of this recipe.");
        job_child_log(c, LOG_LEVEL_DEBUG, "Snapshot into the image cache in %" PRIu64 " ms.",
                      (now_usec(CLOCK_MONOTONIC) - start) / 1000);
        bc->lock_fd = safe_close(bc->lock_fd);
        k = store_image_cache_trim(bc->images_fd, max);
        if (k < 0)
                job_child_log(c, LOG_LEVEL_WARNING, "Cannot trim the image cache: %s", strerror(-k));
}
