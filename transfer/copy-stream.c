/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <archive.h>
#include <archive_entry.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "copy-stream.h"

#define COPY_BLOCK_SIZE (64 * 1024)
#define COPY_TEMP_PREFIX ".#stamp-copy-"
/* How deep a half-made tree is removed; what lies deeper stays (an archive that deep is no copy). */
#define REMOVE_MAX_DEPTH 512

static int fail(char *err, size_t errlen, int error, const char *fmt, ...) __attribute__((format(printf, 4, 5)));
static int fail(char *err, size_t errlen, int error, const char *fmt, ...)
{
        va_list ap;

        if (err && errlen > 0) {
                va_start(ap, fmt);
                vsnprintf(err, errlen, fmt, ap);
                va_end(ap);
        }
        return -abs(error);
}

static void archive_read_freep_(struct archive **a)
{
        if (*a)
                archive_read_free(*a);
}

static void archive_write_freep_(struct archive **a)
{
        if (*a)
                archive_write_free(*a);
}

static void archive_entry_freep_(struct archive_entry **e)
{
        if (*e)
                archive_entry_free(*e);
}

static void freep_(void *p)
{
        free(*(void **) p);
}

static int cancel_fd = -1;

void copy_stream_set_cancel_fd(int fd)
{
        cancel_fd = fd;
}

typedef struct Source {
        int fd;
        bool canceled;
        uint8_t buf[COPY_BLOCK_SIZE];
} Source;

/* The stream, read as it comes, until a cancel comes first. */
static la_ssize_t source_read(struct archive *a, void *userdata, const void **ret)
{
        Source *src = userdata;

        for (;;) {
                struct pollfd p[2] = {{.fd = src->fd, .events = POLLIN}, {.fd = cancel_fd, .events = POLLIN}};
                ssize_t n;

                if (poll(p, cancel_fd >= 0 ? 2 : 1, -1) < 0) {
                        if (errno == EINTR)
                                continue;
                        archive_set_error(a, errno, "Cannot wait for the copy's stream");
                        return -1;
                }
                if (cancel_fd >= 0 && (p[1].revents & POLLIN)) {
                        src->canceled = true;
                        archive_set_error(a, ECANCELED, "The copy was canceled");
                        return -1;
                }
                n = read(src->fd, src->buf, sizeof src->buf);
                if (n < 0 && (errno == EINTR || errno == EAGAIN))
                        continue;
                if (n < 0) {
                        archive_set_error(a, errno, "Cannot read the copy's stream");
                        return -1;
                }
                *ret = src->buf;
                return n;
        }
}

bool copy_name_is_valid(const char *name)
{
        size_t n = name ? strlen(name) : 0;

        return n > 0 && n <= COPY_NAME_MAX && !strchr(name, '/') && strcmp(name, ".") != 0 && strcmp(name, "..") != 0;
}

/* ---- writing ---- */

/* The archive's own error, or errno's: -EPIPE when the reader has gone. */
static int write_failure(struct archive *w, const char *what, char *err, size_t errlen)
{
        int e = archive_errno(w);

        if (e == EPIPE)
                return fail(err, errlen, EPIPE, "The reader of the copy went away");
        return fail(err, errlen, e > 0 ? e : EIO, "Cannot write %s to the copy's stream: %s", what,
                    archive_error_string(w) ?: strerror(e > 0 ? e : EIO));
}

static int write_file_data(struct archive *w, int fd, const char *what, char *err, size_t errlen)
{
        static uint8_t buf[COPY_BLOCK_SIZE];

        for (;;) {
                ssize_t n = read(fd, buf, sizeof buf);
                if (n < 0 && errno == EINTR)
                        continue;
                if (n < 0)
                        return fail(err, errlen, errno, "Cannot read %s: %s", what, strerror(errno));
                if (n == 0)
                        return 0;
                if (archive_write_data(w, buf, (size_t) n) != n)
                        return write_failure(w, what, err, errlen);
        }
}

static int write_tree(struct archive *w, int dir_fd, const char *top_name, char *err, size_t errlen)
{
        __attribute__((cleanup(archive_read_freep_))) struct archive *disk = archive_read_disk_new();
        __attribute__((cleanup(archive_entry_freep_))) struct archive_entry *e = archive_entry_new();

        if (!disk || !e)
                return fail(err, errlen, ENOMEM, "Out of memory");
        if (fchdir(dir_fd) < 0)
                return fail(err, errlen, errno, "Cannot enter %s: %s", top_name, strerror(errno));
        /* Names and owners as numbers: no user database is read, in the machine or out of it. */
        archive_read_disk_set_symlink_physical(disk);
        archive_read_disk_set_behavior(disk, ARCHIVE_READDISK_NO_TRAVERSE_MOUNTS);
        if (archive_read_disk_open(disk, ".") != ARCHIVE_OK)
                return fail(err, errlen, archive_errno(disk) ?: EIO, "Cannot read %s: %s", top_name,
                            archive_error_string(disk) ?: "unknown error");

        for (;;) {
                __attribute__((cleanup(freep_))) char *path = NULL;
                const char *p;
                int r;

                archive_entry_clear(e);
                r = archive_read_next_header2(disk, e);
                if (r == ARCHIVE_EOF)
                        return 0;
                if (r == ARCHIVE_RETRY)
                        continue;
                if (r < ARCHIVE_WARN)
                        return fail(err, errlen, archive_errno(disk) ?: EIO, "Cannot read %s: %s", top_name,
                                    archive_error_string(disk) ?: "unknown error");
                p = archive_entry_pathname(e);
                if (!p)
                        return fail(err, errlen, EIO, "An entry below %s has no name", top_name);
                if (strcmp(p, ".") == 0)
                        p = "";
                else if (strncmp(p, "./", 2) == 0)
                        p += 1;
                else
                        return fail(err, errlen, EIO, "Unexpected entry %s below %s", p, top_name);
                if (asprintf(&path, "%s%s", top_name, p) < 0)
                        return fail(err, errlen, ENOMEM, "Out of memory");
                archive_entry_set_pathname(e, path);
                (void) archive_read_disk_descend(disk);

                if (archive_write_header(w, e) < ARCHIVE_WARN)
                        return write_failure(w, path, err, errlen);
                if (archive_entry_filetype(e) == AE_IFREG && archive_entry_size(e) > 0) {
                        static uint8_t buf[COPY_BLOCK_SIZE];
                        la_ssize_t n;

                        /* tar keeps no holes: the data in sequence, holes as zeros. */
                        while ((n = archive_read_data(disk, buf, sizeof buf)) > 0)
                                if (archive_write_data(w, buf, (size_t) n) != n)
                                        return write_failure(w, path, err, errlen);
                        if (n < 0)
                                return fail(err, errlen, archive_errno(disk) ?: EIO, "Cannot read %s: %s", path,
                                            archive_error_string(disk) ?: "unknown error");
                }
                if (archive_write_finish_entry(w) < ARCHIVE_WARN)
                        return write_failure(w, path, err, errlen);
        }
}

static int write_file(struct archive *w, int fd, const struct stat *st, const char *top_name, char *err, size_t errlen)
{
        __attribute__((cleanup(archive_read_freep_))) struct archive *disk = archive_read_disk_new();
        __attribute__((cleanup(archive_entry_freep_))) struct archive_entry *e = archive_entry_new();

        if (!disk || !e)
                return fail(err, errlen, ENOMEM, "Out of memory");
        archive_entry_set_pathname(e, top_name);
        if (archive_read_disk_entry_from_file(disk, e, fd, st) < ARCHIVE_WARN)
                return fail(err, errlen, archive_errno(disk) ?: EIO, "Cannot read %s: %s", top_name,
                            archive_error_string(disk) ?: "unknown error");
        archive_entry_set_pathname(e, top_name);
        if (archive_write_header(w, e) < ARCHIVE_WARN)
                return write_failure(w, top_name, err, errlen);
        if (lseek(fd, 0, SEEK_SET) < 0 && errno != ESPIPE)
                return fail(err, errlen, errno, "Cannot read %s: %s", top_name, strerror(errno));
        return write_file_data(w, fd, top_name, err, errlen);
}

int copy_stream_write(int src_fd, const char *top_name, int out_fd, char *err, size_t errlen)
{
        __attribute__((cleanup(archive_write_freep_))) struct archive *w = archive_write_new();
        struct stat st;
        int k;

        if (!copy_name_is_valid(top_name))
                return fail(err, errlen, EINVAL, "Invalid name %s for what is copied", top_name);
        if (!w)
                return fail(err, errlen, ENOMEM, "Out of memory");
        if (fstat(src_fd, &st) < 0)
                return fail(err, errlen, errno, "Cannot inspect %s: %s", top_name, strerror(errno));
        if (!S_ISREG(st.st_mode) && !S_ISDIR(st.st_mode))
                return fail(err, errlen, EINVAL, "%s is neither a regular file nor a directory", top_name);

        /* A reader that leaves is an error to report, not a signal to die of. */
        (void) signal(SIGPIPE, SIG_IGN);
        if (archive_write_set_format_pax(w) != ARCHIVE_OK ||
            archive_write_set_format_option(w, "pax", "hdrcharset", "BINARY") != ARCHIVE_OK ||
            archive_write_add_filter_none(w) != ARCHIVE_OK)
                return fail(err, errlen, EIO, "Cannot set up the copy's stream: %s", archive_error_string(w));
        archive_write_set_bytes_per_block(w, COPY_BLOCK_SIZE);
        archive_write_set_bytes_in_last_block(w, 1);
        if (archive_write_open_fd(w, out_fd) != ARCHIVE_OK)
                return write_failure(w, "the start", err, errlen);

        k = S_ISDIR(st.st_mode) ? write_tree(w, src_fd, top_name, err, errlen)
                                : write_file(w, src_fd, &st, top_name, err, errlen);
        if (k < 0)
                return k;
        if (archive_write_close(w) != ARCHIVE_OK)
                return write_failure(w, "the end", err, errlen);
        return 0;
}

/* ---- reading ---- */

/* Remove what @name in @dir_fd is, a tree made by this process, without following symlinks. */
static void remove_tree_at(int dir_fd, const char *name, unsigned depth)
{
        struct stat st;
        DIR *d;
        int fd;

        if (fstatat(dir_fd, name, &st, AT_SYMLINK_NOFOLLOW) < 0)
                return;
        if (!S_ISDIR(st.st_mode)) {
                (void) unlinkat(dir_fd, name, 0);
                return;
        }
        if (depth < REMOVE_MAX_DEPTH) {
                fd = openat(dir_fd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
                if (fd >= 0) {
                        (void) fchmod(fd, 0700); /* entries of a read-only directory are ours to remove */
                        d = fdopendir(fd);
                        if (!d)
                                (void) close(fd);
                        else {
                                struct dirent *de;
                                while ((de = readdir(d)))
                                        if (strcmp(de->d_name, ".") != 0 && strcmp(de->d_name, "..") != 0)
                                                remove_tree_at(dirfd(d), de->d_name, depth + 1);
                                closedir(d);
                        }
                }
        }
        (void) unlinkat(dir_fd, name, AT_REMOVEDIR);
}

/* What an entry named @path becomes: @temp with what follows the top. The first entry (@top still
 * empty) names the top. NULL with @err set if the path leaves the tree or is not below the top. */
static char *rewrite_path(const char *path, char *top, size_t top_size, const char *temp, char *err, size_t errlen)
{
        const char *rest, *p;
        char *result;
        size_t n;

        if (!path || !*path) {
                fail(err, errlen, EBADMSG, "The copy's stream holds an entry without a name");
                return NULL;
        }
        while (strncmp(path, "./", 2) == 0)
                path += 2;
        if (path[0] == '/') {
                fail(err, errlen, EBADMSG, "The copy's stream holds an absolute path");
                return NULL;
        }
        /* No "..", no "." and no empty component anywhere (a trailing slash aside). */
        for (p = path; *p;) {
                size_t len = strcspn(p, "/");
                if ((len == 0 && p[len] == '/') || (len == 1 && p[0] == '.') ||
                    (len == 2 && p[0] == '.' && p[1] == '.')) {
                        fail(err, errlen, EBADMSG, "The copy's stream holds a path with a \"..\", \".\" or empty part");
                        return NULL;
                }
                p += len;
                if (*p == '/')
                        p++;
        }
        n = strcspn(path, "/");
        rest = path + n;
        if (!top[0]) {
                if (n == 0 || n >= top_size || rest[strspn(rest, "/")] != '\0') {
                        fail(err, errlen, EBADMSG, "The copy's stream does not start with what is copied");
                        return NULL;
                }
                memcpy(top, path, n);
                top[n] = '\0';
                if (!copy_name_is_valid(top)) {
                        fail(err, errlen, EBADMSG, "The copy's stream names what is copied \"%s\"", top);
                        return NULL;
                }
                rest = "";
        } else if (strlen(top) != n || strncmp(path, top, n) != 0 || rest[0] != '/' || rest[1] == '\0') {
                fail(err, errlen, EBADMSG, "The copy's stream holds an entry that is not below what is copied");
                return NULL;
        }
        if (asprintf(&result, "%s%s", temp, rest) < 0) {
                fail(err, errlen, ENOMEM, "Out of memory");
                return NULL;
        }
        return result;
}

/* Keep only the user.* extended attributes of @e: security.capability, trusted.* and the like would
 * give a file powers its copier may not have. */
static int keep_user_xattrs(struct archive_entry *e)
{
        __attribute__((cleanup(archive_entry_freep_))) struct archive_entry *kept = NULL;
        const char *name;
        const void *value;
        size_t size;
        bool other = false;

        archive_entry_xattr_reset(e);
        while (archive_entry_xattr_next(e, &name, &value, &size) == ARCHIVE_OK)
                if (strncmp(name, "user.", 5) != 0)
                        other = true;
        if (!other)
                return 0;
        kept = archive_entry_new();
        if (!kept)
                return -ENOMEM;
        archive_entry_xattr_reset(e);
        while (archive_entry_xattr_next(e, &name, &value, &size) == ARCHIVE_OK)
                if (strncmp(name, "user.", 5) == 0)
                        archive_entry_xattr_add_entry(kept, name, value, size);
        archive_entry_xattr_clear(e);
        archive_entry_xattr_reset(kept);
        while (archive_entry_xattr_next(kept, &name, &value, &size) == ARCHIVE_OK)
                archive_entry_xattr_add_entry(e, name, value, size);
        return 0;
}

static int extract_entries(struct archive *r, struct archive *w, const char *temp, char *top, size_t top_size,
                           char *err, size_t errlen)
{
        struct archive_entry *e;
        bool any = false;

        for (;;) {
                __attribute__((cleanup(freep_))) char *path = NULL, *link = NULL;
                const char *hard;
                int k;

                k = archive_read_next_header(r, &e);
                if (k == ARCHIVE_EOF)
                        break;
                if (k == ARCHIVE_RETRY)
                        continue;
                if (k < ARCHIVE_WARN)
                        return fail(err, errlen, EBADMSG, "The copy's stream is no tar archive or is cut short: %s",
                                    archive_error_string(r) ?: "unknown error");
                path = rewrite_path(archive_entry_pathname(e), top, top_size, temp, err, errlen);
                if (!path)
                        return -EBADMSG;
                if (!any && archive_entry_filetype(e) != AE_IFREG && archive_entry_filetype(e) != AE_IFDIR)
                        return fail(err, errlen, EBADMSG, "What the copy's stream holds is no file and no directory");
                /* Files, directories, symlinks and hard links: a device node would open a device of
                 * the host to whoever runs the machine. */
                if (!archive_entry_hardlink(e) && archive_entry_filetype(e) != AE_IFREG &&
                    archive_entry_filetype(e) != AE_IFDIR && archive_entry_filetype(e) != AE_IFLNK)
                        return fail(err, errlen, EBADMSG,
                                    "The copy's stream holds a device node, fifo or socket, which is not copied");
                if (keep_user_xattrs(e) < 0)
                        return fail(err, errlen, ENOMEM, "Out of memory");
                any = true;
                archive_entry_set_pathname(e, path);
                hard = archive_entry_hardlink(e);
                if (hard) {
                        link = rewrite_path(hard, top, top_size, temp, err, errlen);
                        if (!link)
                                return -EBADMSG;
                        archive_entry_set_hardlink(e, link);
                }
                k = archive_write_header(w, e);
                if (k < ARCHIVE_WARN) {
                        int e_ = archive_errno(w);
                        return fail(err, errlen, e_ == ENOSPC || e_ == EDQUOT ? e_ : EBADMSG,
                                    "Cannot make an entry of the copy: %s (%s)",
                                    archive_error_string(w) ?: "unknown error", strerror(e_ > 0 ? e_ : EIO));
                }
                if (k == ARCHIVE_OK && archive_entry_size(e) > 0) {
                        const void *buf;
                        size_t size;
                        int64_t offset;

                        while ((k = archive_read_data_block(r, &buf, &size, &offset)) == ARCHIVE_OK)
                                if (archive_write_data_block(w, buf, size, offset) < ARCHIVE_WARN) {
                                        int e_ = archive_errno(w);
                                        return fail(err, errlen, e_ > 0 ? e_ : EIO, "Cannot write the copy: %s",
                                                    archive_error_string(w) ?: strerror(e_ > 0 ? e_ : EIO));
                                }
                        if (k != ARCHIVE_EOF)
                                return fail(err, errlen, EBADMSG, "The copy's stream is cut short: %s",
                                            archive_error_string(r) ?: "unknown error");
                }
                if (archive_write_finish_entry(w) < ARCHIVE_WARN) {
                        int e_ = archive_errno(w);
                        return fail(err, errlen, e_ > 0 ? e_ : EIO, "Cannot write the copy: %s",
                                    archive_error_string(w) ?: strerror(e_ > 0 ? e_ : EIO));
                }
        }
        if (!any)
                return fail(err, errlen, EBADMSG, "The copy's stream is empty");
        if (archive_write_close(w) != ARCHIVE_OK) {
                int e_ = archive_errno(w);
                return fail(err, errlen, e_ > 0 ? e_ : EIO, "Cannot finish the copy: %s",
                            archive_error_string(w) ?: strerror(e_ > 0 ? e_ : EIO));
        }
        return 0;
}

int copy_stream_extract(int in_fd, int dir_fd, const char *name, bool keep_owners, char *err, size_t errlen)
{
        __attribute__((cleanup(archive_read_freep_))) struct archive *r = archive_read_new();
        __attribute__((cleanup(archive_write_freep_))) struct archive *w = archive_write_disk_new();
        char temp[sizeof COPY_TEMP_PREFIX + 16], top[COPY_NAME_MAX + 1] = "";
        __attribute__((cleanup(freep_))) Source *src = calloc(1, sizeof(Source));
        const char *final;
        uint64_t rnd = 0;
        int flags, k;

        if (name && !copy_name_is_valid(name))
                return fail(err, errlen, EINVAL, "Invalid name %s for the copy", name);
        if (!r || !w || !src)
                return fail(err, errlen, ENOMEM, "Out of memory");
        src->fd = in_fd;
        if (fchdir(dir_fd) < 0)
                return fail(err, errlen, errno, "Cannot enter the directory of the copy: %s", strerror(errno));
        if (getrandom(&rnd, sizeof rnd, 0) != sizeof rnd)
                rnd = (uint64_t) getpid() * 2654435761u ^ (uint64_t) time(NULL);
        snprintf(temp, sizeof temp, COPY_TEMP_PREFIX "%016llx", (unsigned long long) rnd);

        flags = ARCHIVE_EXTRACT_PERM | ARCHIVE_EXTRACT_TIME | ARCHIVE_EXTRACT_XATTR | ARCHIVE_EXTRACT_ACL |
                ARCHIVE_EXTRACT_SECURE_SYMLINKS | ARCHIVE_EXTRACT_SECURE_NODOTDOT |
                ARCHIVE_EXTRACT_SECURE_NOABSOLUTEPATHS | ARCHIVE_EXTRACT_NO_OVERWRITE;
        if (keep_owners)
                flags |= ARCHIVE_EXTRACT_OWNER;
        if (archive_write_disk_set_options(w, flags) != ARCHIVE_OK ||
            archive_read_support_format_tar(r) != ARCHIVE_OK || archive_read_support_filter_all(r) != ARCHIVE_OK)
                return fail(err, errlen, EIO, "Cannot set up the copy");
        if (archive_read_open(r, src, NULL, source_read, NULL) != ARCHIVE_OK) {
                if (src->canceled)
                        return fail(err, errlen, ECANCELED, "The copy was canceled");
                return fail(err, errlen, EBADMSG, "The copy's stream is no tar archive: %s",
                            archive_error_string(r) ?: "unknown error");
        }

        k = extract_entries(r, w, temp, top, sizeof top, err, errlen);
        if (k < 0) {
                remove_tree_at(dir_fd, temp, 0);
                if (src->canceled)
                        return fail(err, errlen, ECANCELED, "The copy was canceled");
                return k;
        }
        final = name ?: top;
        if (renameat2(dir_fd, temp, dir_fd, final, RENAME_NOREPLACE) < 0) {
                k = errno;
                remove_tree_at(dir_fd, temp, 0);
                if (k == EEXIST)
                        return fail(err, errlen, EEXIST, "%s exists already", final);
                return fail(err, errlen, k, "Cannot put %s in place: %s", final, strerror(k));
        }
        return 0;
}
