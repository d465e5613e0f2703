/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <fcntl.h>
#include <linux/btrfs.h>
#include <linux/fs.h>
#include <linux/openat2.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/xattr.h>

#include <glib.h>

#include "archive-util.h"
#include "btrfs-receive.h"

#define RESOLVE_FLAGS (RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS | RESOLVE_NO_XDEV)
/* How deep a moved directory is searched for symlinks. */
#define RECEIVE_WALK_MAX_DEPTH 256
/* Directories and symlinks followed through one stream: far more than any OS tree has. */
#define RECEIVE_TRACKED_MAX 1000000

/* What the stream made or moved, followed through renames, for the check of symlinks at the end. */
typedef struct Tracked {
        char *cur; /* NULL once removed */
        mode_t type;
        bool created;
        unsigned first_depth;
} Tracked;

typedef struct Receiver {
        const BtrfsReceiveArgs *a;
        bool begun;
        uint8_t uuid[16];
        uint64_t ctransid;
        uint8_t clone_parent_uuid[16];
        /* The directory of the last path, resolved. */
        char *dir;
        int dir_fd;
        /* The regular file last written. */
        char *file;
        int file_fd;
        /* security.capability set on @caps_path: a chown after it clears it, so it is set again. */
        char *caps_path;
        void *caps;
        size_t caps_len;
        GPtrArray *tracked;
        GHashTable *by_path;
        char *err;
        size_t errlen;
} Receiver;

static int loop_write_at(int fd, const void *buf, size_t n, off_t offset)
{
        const uint8_t *p = buf;

        while (n > 0) {
                ssize_t w = pwrite(fd, p, n, offset);
                if (w < 0) {
                        if (errno == EINTR)
                                continue;
                        return -errno;
                }
                if (w == 0) {
                        errno = EIO;
                        return -EIO;
                }
                p += w;
                n -= (size_t) w;
                offset += w;
        }
        return 0;
}

static void tracked_free(void *p)
{
        Tracked *t = p;
        g_free(t->cur);
        g_free(t);
}

static unsigned depth_of(const char *path)
{
        unsigned n = 1;
        for (; *path; path++)
                n += *path == '/';
        return n;
}

static int fail(Receiver *r, int error, const char *fmt, ...) _printf_(3, 4);
static int fail(Receiver *r, int error, const char *fmt, ...)
{
        va_list ap;

        va_start(ap, fmt);
        vsnprintf(r->err, r->errlen, fmt, ap);
        va_end(ap);
        return -abs(error);
}

static int fail_errno(Receiver *r, const BtrfsSendCmd *c, int error)
{
        /* What the stream asks for and the tree refuses is the stream's fault; a full disk is not. */
        int e = error == ENOSPC || error == EDQUOT || error == ENOMEM || error == EIO ? error : EBADMSG;
        if (error == EBADFD)
                return fail(r, EBADMSG, "the stream's %s: %s is not a regular file", btrfs_send_cmd_name(c->cmd),
                            c->path ?: "?");
        return fail(r, e, "the stream's %s of %s failed: %s", btrfs_send_cmd_name(c->cmd), c->path ?: "?",
                    strerror(error));
}

static void forget_dir(Receiver *r)
{
        g_clear_pointer(&r->dir, g_free);
        r->dir_fd = safe_close(r->dir_fd);
}

static void forget_file(Receiver *r)
{
        g_clear_pointer(&r->file, g_free);
        r->file_fd = safe_close(r->file_fd);
}

static int open_beneath(int root_fd, const char *path, int flags)
{
        struct open_how how = {
                .flags = (uint64_t) (flags | O_NOFOLLOW | O_CLOEXEC),
                .resolve = RESOLVE_FLAGS,
        };
        int fd = openat2_retry(root_fd, path[0] ? path : ".", &how);
        return fd < 0 ? -errno : fd;
}

/* The directory holding @path (borrowed, cached) and @path's last component. */
static int resolve_parent(Receiver *r, const char *path, int *ret_dir_fd, const char **ret_base)
{
        const char *slash = strrchr(path, '/');
        g_autofree char *dir = slash ? g_strndup(path, (gsize) (slash - path)) : g_strdup("");
        int fd;

        *ret_base = slash ? slash + 1 : path;
        if (!dir[0]) {
                *ret_dir_fd = r->a->root_fd;
                return 0;
        }
        if (r->dir && streq(r->dir, dir)) {
                *ret_dir_fd = r->dir_fd;
                return 0;
        }
        fd = open_beneath(r->a->root_fd, dir, O_PATH | O_DIRECTORY);
        if (fd < 0)
                return fd;
        forget_dir(r);
        r->dir = TAKE_PTR(dir);
        r->dir_fd = fd;
        *ret_dir_fd = fd;
        return 0;
}

/* The type of @path, without following it; 0 if it is not there. */
static mode_t type_of(int root_fd, const char *path)
{
        _cleanup_close_ int fd = open_beneath(root_fd, path, O_PATH);
        struct stat st;

        if (fd < 0 || fstat(fd, &st) < 0)
                return 0;
        return st.st_mode & S_IFMT;
}

/* @path opened for data: a regular file only, never a device, FIFO or socket (an O_PATH look first). */
static int open_regular(int root_fd, const char *path, int flags)
{
        _cleanup_close_ int fd = -1;
        struct stat st;

        fd = open_beneath(root_fd, path, O_PATH);
        if (fd < 0)
                return fd;
        if (fstat(fd, &st) < 0)
                return -errno;
        if (!S_ISREG(st.st_mode))
                return -EBADFD;
        safe_close(fd);
        fd = open_beneath(root_fd, path, flags | O_NONBLOCK);
        if (fd < 0)
                return fd;
        if (fstat(fd, &st) < 0)
                return -errno;
        if (!S_ISREG(st.st_mode))
                return -EBADFD;
        return TAKE_FD(fd);
}

static int file_for_write(Receiver *r, const char *path)
{
        int fd;

        if (r->file && streq(r->file, path))
                return r->file_fd;
        forget_file(r);
        fd = open_regular(r->a->root_fd, path, O_WRONLY);
        if (fd < 0)
                return fd;
        r->file = g_strdup(path);
        r->file_fd = fd;
        return fd;
}

/* ---- what the stream made and moved ---- */

/* Only directories and symlinks: what the check at the end looks at. */
static int track(Receiver *r, const char *path, mode_t type, bool created)
{
        Tracked *t, *old = g_hash_table_lookup(r->by_path, path);

        if (r->tracked->len >= RECEIVE_TRACKED_MAX)
                return fail(r, EBADMSG, "the stream makes or moves more than %d directories and symlinks",
                            RECEIVE_TRACKED_MAX);
        t = g_new0(Tracked, 1);
        if (old) {
                g_hash_table_remove(r->by_path, path);
                g_clear_pointer(&old->cur, g_free);
        }
        t->cur = g_strdup(path);
        t->type = type;
        t->created = created;
        t->first_depth = depth_of(path);
        g_ptr_array_add(r->tracked, t);
        g_hash_table_replace(r->by_path, t->cur, t);
        return 0;
}

static void untrack(Receiver *r, const char *path)
{
        Tracked *t = g_hash_table_lookup(r->by_path, path);

        if (!t)
                return;
        g_hash_table_remove(r->by_path, path);
        g_clear_pointer(&t->cur, g_free);
}

static int track_move(Receiver *r, const char *from, const char *to, mode_t type)
{
        Tracked *t = g_hash_table_lookup(r->by_path, from);
        size_t n = strlen(from);
        int k;

        untrack(r, to);
        if (!t) {
                if (type != S_IFDIR && type != S_IFLNK)
                        return 0;
                k = track(r, from, type, false);
                if (k < 0)
                        return k;
                t = g_hash_table_lookup(r->by_path, from);
        }
        g_hash_table_remove(r->by_path, from);
        g_free(t->cur);
        t->cur = g_strdup(to);
        g_hash_table_replace(r->by_path, t->cur, t);
        if (type != S_IFDIR)
                return 0;
        for (guint i = 0; i < r->tracked->len; i++) {
                Tracked *c = r->tracked->pdata[i];
                if (!c->cur || c == t || strncmp(c->cur, from, n) != 0 || c->cur[n] != '/')
                        continue;
                g_hash_table_remove(r->by_path, c->cur);
                char *moved = g_strconcat(to, c->cur + n, NULL);
                g_free(c->cur);
                c->cur = moved;
                g_hash_table_replace(r->by_path, c->cur, c);
        }
        return 0;
}

static int check_symlink(Receiver *r, const char *path)
{
        char target[PATH_MAX];
        const char *why;
        int dir_fd;
        const char *base;
        ssize_t n;
        int k;

        k = resolve_parent(r, path, &dir_fd, &base);
        if (k < 0)
                return 0; /* gone: nothing to check */
        n = readlinkat(dir_fd, base, target, sizeof target - 1);
        if (n < 0)
                return 0;
        target[n] = '\0';
        why = archive_symlink_unsafe_reason(path, target);
        if (why)
                return fail(r, EBADMSG, "the stream leaves a symlink %s → %s: %s", path, target, why);
        return 0;
}

static int check_symlinks_beneath(Receiver *r, const char *path, unsigned depth)
{
        _cleanup_close_ int fd = -1;
        DIR *d;
        struct dirent *de;
        int k = 0;

        if (depth > RECEIVE_WALK_MAX_DEPTH)
                return fail(r, EBADMSG, "the stream leaves a tree deeper than %d directories", RECEIVE_WALK_MAX_DEPTH);
        fd = open_beneath(r->a->root_fd, path, O_RDONLY | O_DIRECTORY);
        if (fd < 0)
                return 0;
        d = fdopendir(TAKE_FD(fd));
        if (!d)
                return -errno;
        while (k >= 0 && (de = readdir(d))) {
                if (dot_or_dot_dot(de->d_name))
                        continue;
                g_autofree char *child = g_strconcat(path, "/", de->d_name, NULL);
                if (de->d_type == DT_LNK)
                        k = check_symlink(r, child);
                else if (de->d_type == DT_DIR)
                        k = check_symlinks_beneath(r, child, depth + 1);
        }
        closedir(d);
        return k;
}

/* At the end: every symlink the stream made or moved, and what lies beneath a directory it moved
 * closer to the root (a relative link there climbs further than it did). */
static int check_tracked(Receiver *r)
{
        for (guint i = 0; i < r->tracked->len; i++) {
                Tracked *t = r->tracked->pdata[i];
                int k = 0;

                if (!t->cur)
                        continue;
                if (t->type == S_IFLNK)
                        k = check_symlink(r, t->cur);
                else if (t->type == S_IFDIR && !t->created && depth_of(t->cur) < t->first_depth)
                        k = check_symlinks_beneath(r, t->cur, 0);
                if (k < 0)
                        return k;
        }
        return 0;
}

/* ---- the commands ---- */

static int do_clone(Receiver *r, const BtrfsSendCmd *c)
{
        _cleanup_close_ int src = -1;
        int src_root, dst;

        if (memcmp(c->clone_uuid, r->uuid, 16) == 0)
                src_root = r->a->root_fd;
        else if (r->a->delta && r->a->parent_fd >= 0 && memcmp(c->clone_uuid, r->clone_parent_uuid, 16) == 0)
                src_root = r->a->parent_fd;
        else
                return fail(r, EBADMSG, "the stream clones %s from a subvolume other than itself and its parent",
                            c->path);
        dst = file_for_write(r, c->path);
        if (dst < 0)
                return fail_errno(r, c, -dst);
        src = open_regular(src_root, c->clone_path, O_RDONLY);
        if (src < 0)
                return fail_errno(r, c, -src);

        struct file_clone_range range = {
                .src_fd = src,
                .src_offset = c->clone_offset,
                .src_length = c->clone_len,
                .dest_offset = c->file_offset,
        };
        if (ioctl(dst, FICLONERANGE, &range) == 0)
                return 0;
        /* Where the extents cannot be shared (an unaligned tail, say), copy. */
        for (uint64_t done = 0; done < c->clone_len;) {
                char buf[65536];
                size_t want = c->clone_len - done < sizeof buf ? (size_t) (c->clone_len - done) : sizeof buf;
                ssize_t n = pread(src, buf, want, (off_t) (c->clone_offset + done));
                if (n < 0)
                        return fail_errno(r, c, errno);
                if (n == 0)
                        break;
                if (loop_write_at(dst, buf, (size_t) n, (off_t) (c->file_offset + done)) < 0)
                        return fail_errno(r, c, errno);
                done += (uint64_t) n;
        }
        return 0;
}

static int do_xattr(Receiver *r, const BtrfsSendCmd *c, int dir_fd, const char *base)
{
        bool set = c->cmd == BTRFS_SEND_C_SET_XATTR;
        _cleanup_close_ int fd = -1;
        mode_t type;
        int k;

        if (!c->path[0])
                k = set ? fsetxattr(r->a->root_fd, c->xattr_name, c->xattr_data, c->xattr_data_len, 0)
                        : fremovexattr(r->a->root_fd, c->xattr_name);
        else if ((type = type_of(r->a->root_fd, c->path)) == S_IFREG || type == S_IFDIR) {
                fd = open_beneath(r->a->root_fd, c->path,
                                  type == S_IFDIR ? O_RDONLY | O_DIRECTORY : O_RDONLY | O_NONBLOCK);
                if (fd < 0)
                        return fail_errno(r, c, -fd);
                k = set ? fsetxattr(fd, c->xattr_name, c->xattr_data, c->xattr_data_len, 0)
                        : fremovexattr(fd, c->xattr_name);
        } else if (type == 0)
                return fail_errno(r, c, ENOENT);
        else {
                /* A symlink, device, FIFO or socket: never opened; named from its own directory. */
                if (fchdir(dir_fd) < 0)
                        return fail_errno(r, c, errno);
                k = set ? lsetxattr(base, c->xattr_name, c->xattr_data, c->xattr_data_len, 0)
                        : lremovexattr(base, c->xattr_name);
                int e = errno;
                best_effort(fchdir(r->a->root_fd));
                errno = e;
        }
        if (k < 0)
                return fail_errno(r, c, errno);

        if (set && streq(c->xattr_name, "security.capability")) {
                g_free(r->caps_path);
                g_free(r->caps);
                r->caps_path = g_strdup(c->path);
                r->caps = g_memdup2(c->xattr_data, c->xattr_data_len);
                r->caps_len = c->xattr_data_len;
        }
        return 0;
}

static int apply(Receiver *r, const BtrfsSendCmd *c)
{
        const char *base = NULL, *base2 = NULL;
        int dir_fd = -1, dir2_fd = -1, k, fd;
        mode_t type;

        if (c->cmd == BTRFS_SEND_C_SUBVOL || c->cmd == BTRFS_SEND_C_SNAPSHOT) {
                if (r->begun)
                        return fail(r, EBADMSG, "the stream holds more than one subvolume");
                if ((c->cmd == BTRFS_SEND_C_SNAPSHOT) != r->a->delta)
                        return fail(r, EBADMSG,
                                    r->a->delta ? "the stream's header says delta, its btrfs stream "
                                                  "is a full one"
                                                : "the stream's header says full, its btrfs stream is "
                                                  "a delta");
                if (r->a->delta && memcmp(c->clone_uuid, r->a->parent_uuid, 16) != 0)
                        return fail(r, EBADMSG, "the stream's btrfs delta names another parent than its header");
                memcpy(r->uuid, c->uuid, 16);
                memcpy(r->clone_parent_uuid, c->clone_uuid, 16);
                r->ctransid = c->ctransid;
                r->begun = true;
                return 0;
        }
        if (!r->begun)
                return fail(r, EBADMSG, "the stream's btrfs stream does not begin with its subvolume");

        if (c->path && c->path[0]) {
                k = resolve_parent(r, c->path, &dir_fd, &base);
                if (k < 0)
                        return fail_errno(r, c, -k);
        }

        switch (c->cmd) {
        case BTRFS_SEND_C_MKFILE:
                fd = openat(dir_fd, base, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
                if (fd < 0)
                        return fail_errno(r, c, errno);
                close(fd);
                untrack(r, c->path);
                return 0;
        case BTRFS_SEND_C_MKDIR:
                if (mkdirat(dir_fd, base, 0700) < 0)
                        return fail_errno(r, c, errno);
                return track(r, c->path, S_IFDIR, true);
        case BTRFS_SEND_C_MKNOD:
        case BTRFS_SEND_C_MKFIFO:
        case BTRFS_SEND_C_MKSOCK:
                type = c->cmd == BTRFS_SEND_C_MKFIFO   ? S_IFIFO
                       : c->cmd == BTRFS_SEND_C_MKSOCK ? S_IFSOCK
                                                       : (mode_t) c->mode & S_IFMT;
                if (type != S_IFCHR && type != S_IFBLK && type != S_IFIFO && type != S_IFSOCK)
                        return fail(r, EBADMSG, "the stream makes %s a node of no known type", c->path);
                if (mknodat(dir_fd, base, type | 0600, (dev_t) (type == S_IFCHR || type == S_IFBLK ? c->rdev : 0)) < 0)
                        return fail_errno(r, c, errno);
                untrack(r, c->path);
                return 0;
        case BTRFS_SEND_C_SYMLINK:
                if (symlinkat(c->path_link, dir_fd, base) < 0)
                        return fail_errno(r, c, errno);
                return track(r, c->path, S_IFLNK, true);
        case BTRFS_SEND_C_RENAME: {
                g_autofree char *from_dir = NULL;
                type = type_of(r->a->root_fd, c->path);
                /* Two directories at once: the first one's fd must not be the cache's, which the second
                 * resolution may replace. */
                if (dir_fd != r->a->root_fd) {
                        dir_fd = fcntl(dir_fd, F_DUPFD_CLOEXEC, 3);
                        if (dir_fd < 0)
                                return fail_errno(r, c, errno);
                }
                _cleanup_close_ int from_fd = dir_fd != r->a->root_fd ? dir_fd : -1;
                k = resolve_parent(r, c->path_to, &dir2_fd, &base2);
                if (k < 0)
                        return fail_errno(r, c, -k);
                if (renameat(dir_fd, base, dir2_fd, base2) < 0)
                        return fail_errno(r, c, errno);
                forget_dir(r);
                forget_file(r);
                return track_move(r, c->path, c->path_to, type);
        }
        case BTRFS_SEND_C_LINK: {
                int link_dir;
                const char *link_base;
                if (dir_fd != r->a->root_fd) {
                        dir_fd = fcntl(dir_fd, F_DUPFD_CLOEXEC, 3);
                        if (dir_fd < 0)
                                return fail_errno(r, c, errno);
                }
                _cleanup_close_ int new_fd = dir_fd != r->a->root_fd ? dir_fd : -1;
                k = resolve_parent(r, c->path_link, &link_dir, &link_base);
                if (k < 0)
                        return fail_errno(r, c, -k);
                if (linkat(link_dir, link_base, dir_fd, base, 0) < 0)
                        return fail_errno(r, c, errno);
                type = type_of(r->a->root_fd, c->path);
                if (type != S_IFLNK) {
                        untrack(r, c->path);
                        return 0;
                }
                return track(r, c->path, type, true);
        }
        case BTRFS_SEND_C_UNLINK:
        case BTRFS_SEND_C_RMDIR:
                if (unlinkat(dir_fd, base, c->cmd == BTRFS_SEND_C_RMDIR ? AT_REMOVEDIR : 0) < 0)
                        return fail_errno(r, c, errno);
                forget_dir(r);
                forget_file(r);
                untrack(r, c->path);
                return 0;
        case BTRFS_SEND_C_SET_XATTR:
        case BTRFS_SEND_C_REMOVE_XATTR:
                return do_xattr(r, c, dir_fd, base);
        case BTRFS_SEND_C_WRITE:
                fd = file_for_write(r, c->path);
                if (fd < 0)
                        return fail_errno(r, c, -fd);
                if (loop_write_at(fd, c->data, c->data_len, (off_t) c->file_offset) < 0)
                        return fail_errno(r, c, errno);
                return 0;
        case BTRFS_SEND_C_CLONE:
                return do_clone(r, c);
        case BTRFS_SEND_C_TRUNCATE:
                fd = file_for_write(r, c->path);
                if (fd < 0)
                        return fail_errno(r, c, -fd);
                if (c->size > (uint64_t) INT64_MAX || ftruncate(fd, (off_t) c->size) < 0)
                        return fail_errno(r, c, errno ?: EFBIG);
                return 0;
        case BTRFS_SEND_C_CHMOD:
                if (!c->path[0])
                        k = fchmod(r->a->root_fd, (mode_t) c->mode & 07777);
                else {
                        type = type_of(r->a->root_fd, c->path);
                        if (type == S_IFLNK)
                                return 0; /* a symlink has no mode of its own */
                        k = fchmodat(dir_fd, base, (mode_t) c->mode & 07777, 0);
                }
                if (k < 0)
                        return fail_errno(r, c, errno);
                return 0;
        case BTRFS_SEND_C_CHOWN:
                if (c->uid >= UINT32_MAX || c->gid >= UINT32_MAX)
                        return fail(r, EBADMSG, "the stream gives %s an invalid owner", c->path);
                k = !c->path[0] ? fchown(r->a->root_fd, (uid_t) c->uid, (gid_t) c->gid)
                                : fchownat(dir_fd, base, (uid_t) c->uid, (gid_t) c->gid, AT_SYMLINK_NOFOLLOW);
                if (k < 0)
                        return fail_errno(r, c, errno);
                if (r->caps_path && streq(r->caps_path, c->path)) {
                        BtrfsSendCmd again = *c;
                        again.cmd = BTRFS_SEND_C_SET_XATTR;
                        again.xattr_name = "security.capability";
                        again.xattr_data = r->caps;
                        again.xattr_data_len = r->caps_len;
                        g_clear_pointer(&r->caps_path, g_free);
                        k = do_xattr(r, &again, dir_fd, base);
                        g_clear_pointer(&r->caps, g_free);
                        return k;
                }
                return 0;
        case BTRFS_SEND_C_UTIMES: {
                struct timespec ts[2] = {c->atime, c->mtime};
                struct stat st;
                /* Access times are not part of an image's content (a tar export leaves them out too): an
                 * update that would change nothing but the access time is skipped. A clone whose files
                 * were read has one for every file read, each an inode to rewrite and commit here. */
                if ((!c->path[0] ? fstat(r->a->root_fd, &st) : fstatat(dir_fd, base, &st, AT_SYMLINK_NOFOLLOW)) == 0 &&
                    st.st_mtim.tv_sec == c->mtime.tv_sec && st.st_mtim.tv_nsec == c->mtime.tv_nsec)
                        return 0;
                k = !c->path[0] ? futimens(r->a->root_fd, ts) : utimensat(dir_fd, base, ts, AT_SYMLINK_NOFOLLOW);
                if (k < 0)
                        return fail_errno(r, c, errno);
                return 0;
        }
        case BTRFS_SEND_C_UPDATE_EXTENT:
                return fail(r, EBADMSG, "the stream has no file data (it was sent without it)");
        default:
                return fail(r, EBADMSG, "the stream has a %s command here", btrfs_send_cmd_name(c->cmd));
        }
}

int btrfs_receive(const BtrfsReceiveArgs *a, BtrfsSendReader *reader, uint8_t ret_uuid[16], uint64_t *ret_ctransid,
                  char *err, size_t errlen)
{
        Receiver r = {
                .a = a,
                .dir_fd = -1,
                .file_fd = -1,
                .err = err,
                .errlen = errlen,
        };
        BtrfsSendCmd c;
        unsigned n = 0;
        int k;

        r.tracked = g_ptr_array_new_with_free_func(tracked_free);
        r.by_path = g_hash_table_new(g_str_hash, g_str_equal);
        for (;;) {
                k = btrfs_send_reader_next(reader, &c);
                if (k < 0) {
                        k = fail(&r, k, "%s", btrfs_send_reader_error(reader));
                        break;
                }
                if (k == 0) {
                        k = r.begun ? check_tracked(&r) : fail(&r, EBADMSG, "the btrfs stream is empty");
                        break;
                }
                k = apply(&r, &c);
                if (k < 0)
                        break;
                if (a->progress && ++n % 256 == 0)
                        a->progress(a->userdata);
        }
        forget_dir(&r);
        forget_file(&r);
        best_effort(fchdir(a->root_fd));
        g_free(r.caps_path);
        g_free(r.caps);
        g_hash_table_unref(r.by_path);
        g_ptr_array_unref(r.tracked);
        if (k < 0)
                return k;
        memcpy(ret_uuid, r.uuid, 16);
        *ret_ctransid = r.ctransid;
        return 0;
}

int btrfs_set_received(int fd, const uint8_t uuid[16], uint64_t ctransid)
{
        struct btrfs_ioctl_received_subvol_args args = {.stransid = ctransid};

        memcpy(args.uuid, uuid, 16);
        return ioctl(fd, BTRFS_IOC_SET_RECEIVED_SUBVOL, &args) < 0 ? -errno : 0;
}

static int subvol_info(int fd, struct btrfs_ioctl_get_subvol_info_args *ret)
{
        *ret = (struct btrfs_ioctl_get_subvol_info_args) {};
        return ioctl(fd, BTRFS_IOC_GET_SUBVOL_INFO, ret) < 0 ? -errno : 0;
}

int btrfs_subvol_stream_uuid(int fd, uint8_t ret[16])
{
        static const uint8_t zero[16];
        struct btrfs_ioctl_get_subvol_info_args info;
        int k = subvol_info(fd, &info);

        if (k < 0)
                return k;
        memcpy(ret, memcmp(info.received_uuid, zero, 16) != 0 ? info.received_uuid : info.uuid, 16);
        return 0;
}

int btrfs_subvol_state(int fd, uint64_t *ret_transid)
{
        static const uint8_t zero[16];
        struct btrfs_ioctl_get_subvol_info_args info;
        int k = subvol_info(fd, &info);

        if (k < 0)
                return k;
        if (memcmp(info.received_uuid, zero, 16) == 0) {
                *ret_transid = info.ctransid;
                return 0;
        }
        /* Received: the sender's state, as long as nothing changed here since. */
        if (info.ctransid > info.rtransid)
                return -ESTALE;
        *ret_transid = info.stransid;
        return 0;
}

int btrfs_subvol_matches_uuid(int fd, const uint8_t uuid[16])
{
        struct btrfs_ioctl_get_subvol_info_args info;
        int k = subvol_info(fd, &info);

        if (k < 0)
                return k;
        return memcmp(info.uuid, uuid, 16) == 0 || memcmp(info.received_uuid, uuid, 16) == 0;
}
