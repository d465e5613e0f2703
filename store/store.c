/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <fcntl.h>
#include <limits.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/wait.h>
#include <sys/xattr.h>

#include <btrfsutil.h>
#include <glib.h>

#include "btrfs-util.h"
#include "escape.h"
#include "identity.h"
#include "owners.h"
#include "store.h"

char *store_temp_name(const char *name)
{
        char hex[17];
        char *s;

        random_hex(hex, 16);
        if (asprintf(&s, STORE_TEMP_PREFIX "%s-%s", name, hex) < 0)
                return NULL;
        return s;
}

int store_make_tree(int store_fd, bool is_btrfs, const char *name, int *ret_subvolume_error)
{
        if (ret_subvolume_error)
                *ret_subvolume_error = 0;
        if (is_btrfs) {
                errno = 0;
                if (btrfs_util_create_subvolume_fd(store_fd, name, 0, NULL, NULL) == BTRFS_UTIL_OK)
                        return 1;
                if (ret_subvolume_error)
                        *ret_subvolume_error = errno ?: EIO;
        }
        if (mkdirat(store_fd, name, 0755) < 0)
                return -errno;
        return 0;
}

bool store_is_full(int fd)
{
        struct statvfs sv;

        return fstatvfs(fd, &sv) >= 0 && (uint64_t) sv.f_bavail * sv.f_frsize < STORE_FULL_BELOW;
}

int store_remove_tree(int store_fd, const char *name)
{
        _cleanup_close_ int fd = openat(store_fd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        enum btrfs_util_error e;
        unsigned attr = 0;

        if (fd < 0) {
                if (errno == ENOENT)
                        return 0;
                if (errno == ENOTDIR || errno == ELOOP)
                        return unlinkat(store_fd, name, 0) < 0 ? -errno : 0;
                return -errno;
        }
        if (fd_is_subvolume(fd) > 0) {
                /* A read-only subvolume's nested subvolumes cannot be unlinked: make it writable first. */
                (void) btrfs_util_set_subvolume_read_only_fd(fd, false);
                fd = safe_close(fd);
                e = btrfs_util_delete_subvolume_fd(store_fd, name, BTRFS_UTIL_DELETE_SUBVOLUME_RECURSIVE);
                if (e == BTRFS_UTIL_OK)
                        return 0;
                /* Fall through to rm for what the ioctl refused (e.g. without the privileges). */
        } else if (ioctl(fd, FS_IOC_GETFLAGS, &attr) >= 0 && (attr & FS_IMMUTABLE_FL)) {
                attr &= ~FS_IMMUTABLE_FL;
                (void) ioctl(fd, FS_IOC_SETFLAGS, &attr);
        }
        {
                char *argv[] = {(char *) "rm", (char *) "-rf", (char *) "--one-file-system",
                                (char *) "--", (char *) name,  NULL};
                int k = run_command_at(store_fd, argv, true);
                if (k != 0)
                        return k < 0 ? k : -EIO;
        }
        return 0;
}

int store_remove_tree_retrying(int store_fd, const char *name)
{
        int k = 0;

        for (int attempt = 0; attempt < 50; attempt++) {
                k = store_remove_tree(store_fd, name);
                if (k != -EBUSY)
                        break;
                usleep(100 * USEC_PER_MSEC);
        }
        return k;
}

void store_remove_temporaries(int store_fd, bool is_btrfs)
{
        g_autoptr(GPtrArray) names = g_ptr_array_new_with_free_func(free);
        DIR *d = opendir_at(store_fd, ".");
        struct dirent *de;

        if (!d)
                return;
        while ((de = readdir(d)))
                if (strncmp(de->d_name, STORE_TEMP_PREFIX, strlen(STORE_TEMP_PREFIX)) == 0)
                        g_ptr_array_add(names, strdup(de->d_name));
        closedir(d);

        for (guint i = 0; i < names->len; i++) {
                const char *n = names->pdata[i];
                int k = store_remove_tree(store_fd, n);
                if (k < 0)
                        log_warning_errno(k, "Cannot remove stale temporary %s", n);
                else
                        log_info("Removed stale temporary %s left by an interrupted operation.", n);
        }
}

static int rename_noreplace(int store_fd, const char *from, const char *to)
{
        if (renameat2(store_fd, from, store_fd, to, RENAME_NOREPLACE) < 0)
                return -errno;
        return 0;
}

/* ---- the copy fallback ----
 *
 * A copy of an image walks its tree while whatever runs on it (a machine, root inside it) may change
 * it: swap a directory for a symlink to the host's /, say, between two steps. So nothing here goes by
 * path. Each entry is pinned first (O_PATH, O_NOFOLLOW) and what is done with it follows from that
 * very inode's type: a directory is entered through its pin, a regular file is opened only through
 * its pin, a link is copied as a link, a device node is made, never opened. What changes mid-walk
 * makes the copy inconsistent, never lets it reach outside the image. */

/* Deeper trees are refused (ELOOP): each level holds three fds, and a tree that deep is no system's. */
#define COPY_DEPTH_MAX 256

typedef struct CopyTree {
        int dst_root_fd;
        /* "dev:ino" of a source file with more than one link → its path in the copy */
        GHashTable *links;
        char *failed_path; /* what the copy failed on, relative to the image */
        bool no_reflink;   /* the store cannot share extents: copy the data */
} CopyTree;

static int copy_fail(CopyTree *c, const char *rel, int error)
{
        if (!c->failed_path)
                c->failed_path = g_strdup(rel);
        return -abs(error);
}

/* Open the inode pinned by @path_fd for reading; @path_fd is an O_PATH fd of a regular file or a
 * directory. */
static int reopen_pinned(int path_fd, int flags)
{
        char proc[64];
        int fd;

        /* The magic link leads to the pinned inode, whatever its name leads to by now. */
        snprintf(proc, sizeof proc, "/proc/self/fd/%d", path_fd);
        fd = open(proc, flags | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
        return fd < 0 ? -errno : fd;
}

/* Copy the xattrs of @src_fd to @dst_fd. With @pinned, both are O_PATH fds (of device nodes, FIFOs,
 * sockets: never opened) and are reached through /proc/self/fd, which leads to the inode itself. */
static int copy_xattrs(int src_fd, int dst_fd, bool pinned)
{
        _cleanup_free_ char *names = NULL, *value = NULL;
        char src_proc[64], dst_proc[64];
        size_t value_size = 0;
        ssize_t n;

        snprintf(src_proc, sizeof src_proc, "/proc/self/fd/%d", src_fd);
        snprintf(dst_proc, sizeof dst_proc, "/proc/self/fd/%d", dst_fd);
        n = pinned ? listxattr(src_proc, NULL, 0) : flistxattr(src_fd, NULL, 0);
        if (n < 0)
                return errno == ENOTSUP || errno == EOPNOTSUPP ? 0 : -errno;
        if (n == 0)
                return 0;
        names = malloc((size_t) n);
        if (!names)
                return -ENOMEM;
        n = pinned ? listxattr(src_proc, names, (size_t) n) : flistxattr(src_fd, names, (size_t) n);
        if (n < 0)
                return -errno;
        for (const char *name = names; name < names + n; name += strlen(name) + 1) {
                ssize_t v = pinned ? getxattr(src_proc, name, NULL, 0) : fgetxattr(src_fd, name, NULL, 0);
                if (v < 0) {
                        if (errno == ENODATA)
                                continue;
                        return -errno;
                }
                if ((size_t) v > value_size || !value) {
                        free(value);
                        value = malloc((size_t) v + 1);
                        if (!value)
                                return -ENOMEM;
                        value_size = (size_t) v;
                }
                v = pinned ? getxattr(src_proc, name, value, value_size) : fgetxattr(src_fd, name, value, value_size);
                if (v < 0) {
                        if (errno == ENODATA)
                                continue;
                        return -errno;
                }
                if ((pinned ? setxattr(dst_proc, name, value, (size_t) v, 0)
                            : fsetxattr(dst_fd, name, value, (size_t) v, 0)) < 0)
                        return -errno;
        }
        return 0;
}

/* Owner, xattrs (ACLs among them), mode and times of an open file or directory. In that order:
 * a chown drops setuid bits and file capabilities, a mode set before the ACL would be overwritten. */
static int copy_attributes(int src_fd, int dst_fd, const struct stat *st)
{
        struct timespec times[2] = {st->st_atim, st->st_mtim};
        int k;

        if (fchown(dst_fd, st->st_uid, st->st_gid) < 0)
                return -errno;
        k = copy_xattrs(src_fd, dst_fd, false);
        if (k < 0)
                return k;
        if (fchmod(dst_fd, st->st_mode & 07777) < 0)
                return -errno;
        if (futimens(dst_fd, times) < 0)
                return -errno;
        return 0;
}

static int copy_data(CopyTree *c, int src_fd, int dst_fd, const struct stat *st)
{
        off_t pos = 0, size = st->st_size;

        if (size == 0)
                return 0;
        if (!c->no_reflink) {
                if (ioctl(dst_fd, FICLONE, src_fd) >= 0)
                        return 0;
                if (errno == EOPNOTSUPP || errno == ENOTTY || errno == EXDEV || errno == EINVAL)
                        c->no_reflink = true; /* the same for every file of this copy */
        }
        /* Extent by extent, so holes stay holes (the last one is made by the truncate); a file with
         * as many blocks as bytes has none to look for. */
        bool sparse = (uint64_t) st->st_blocks * 512 < (uint64_t) size;
        while (pos < size) {
                off_t data = pos, hole = size;
                if (sparse) {
                        data = lseek(src_fd, pos, SEEK_DATA);
                        if (data < 0) {
                                if (errno == ENXIO)
                                        break; /* only a hole is left */
                                return -errno;
                        }
                        hole = lseek(src_fd, data, SEEK_HOLE);
                        if (hole < 0)
                                return -errno;
                }
                while (data < hole) {
                        off_t in = data, out = data;
                        ssize_t n = copy_file_range(src_fd, &in, dst_fd, &out, (size_t) (hole - data), 0);
                        if (n < 0 && (errno == EXDEV || errno == EINVAL || errno == ENOSYS || errno == EOPNOTSUPP)) {
                                uint8_t buf[64 * 1024];
                                n = pread(src_fd, buf, (size_t) MIN((off_t) sizeof buf, hole - data), data);
                                if (n > 0 && pwrite(dst_fd, buf, (size_t) n, data) != n)
                                        return errno ? -errno : -EIO;
                        }
                        if (n < 0) {
                                if (errno == EINTR)
                                        continue;
                                return -errno;
                        }
                        if (n == 0)
                                break; /* the file shrank meanwhile */
                        data += n;
                }
                pos = hole;
        }
        if (sparse && ftruncate(dst_fd, size) < 0)
                return -errno;
        return 0;
}

static int copy_dir_contents(CopyTree *c, int src_dir_fd, int dst_dir_fd, const char *rel, unsigned depth);

/* Copy the entry @name of the directory @src_dir_fd into @dst_dir_fd. @rel is its path in the image. */
static int copy_entry(CopyTree *c, int src_dir_fd, int dst_dir_fd, const char *name, const char *rel, unsigned depth)
{
        _cleanup_close_ int pin = openat(src_dir_fd, name, O_PATH | O_NOFOLLOW | O_CLOEXEC);
        _cleanup_close_ int src = -1, dst = -1;
        struct stat st;
        int k;

        if (pin < 0)
                return errno == ENOENT ? 0 : copy_fail(c, rel, errno); /* gone meanwhile */
        if (fstat(pin, &st) < 0)
                return copy_fail(c, rel, errno);

        if (S_ISDIR(st.st_mode)) {
                if (depth >= COPY_DEPTH_MAX)
                        return copy_fail(c, rel, ELOOP);
                src = reopen_pinned(pin, O_RDONLY | O_DIRECTORY);
                if (src < 0)
                        return copy_fail(c, rel, -src);
                if (mkdirat(dst_dir_fd, name, 0700) < 0)
                        return copy_fail(c, rel, errno);
                dst = openat(dst_dir_fd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
                if (dst < 0)
                        return copy_fail(c, rel, errno);
                pin = safe_close(pin);
                k = copy_dir_contents(c, src, dst, rel, depth + 1);
                if (k < 0)
                        return k;
                k = copy_attributes(src, dst, &st);
                return k < 0 ? copy_fail(c, rel, -k) : 0;
        }

        /* A second name of a file already copied is a second name in the copy too. */
        if (st.st_nlink > 1) {
                g_autofree char *key = g_strdup_printf("%ju:%ju", (uintmax_t) st.st_dev, (uintmax_t) st.st_ino);
                const char *first = g_hash_table_lookup(c->links, key);
                if (first) {
                        if (linkat(c->dst_root_fd, first, dst_dir_fd, name, 0) < 0)
                                return copy_fail(c, rel, errno);
                        return 0;
                }
                g_hash_table_insert(c->links, g_steal_pointer(&key), g_strdup(rel));
        }

        if (S_ISREG(st.st_mode)) {
                src = reopen_pinned(pin, O_RDONLY);
                if (src < 0)
                        return copy_fail(c, rel, -src);
                dst = openat(dst_dir_fd, name, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
                if (dst < 0)
                        return copy_fail(c, rel, errno);
                k = copy_data(c, src, dst, &st);
                if (k >= 0)
                        k = copy_attributes(src, dst, &st);
                return k < 0 ? copy_fail(c, rel, -k) : 0;
        }

        if (S_ISLNK(st.st_mode)) {
                char target[PATH_MAX + 1];
                ssize_t n = readlinkat(pin, "", target, sizeof target - 1);
                if (n < 0)
                        return copy_fail(c, rel, errno);
                target[n] = '\0';
                if (symlinkat(target, dst_dir_fd, name) < 0)
                        return copy_fail(c, rel, errno);
        } else if (S_ISCHR(st.st_mode) || S_ISBLK(st.st_mode) || S_ISFIFO(st.st_mode) || S_ISSOCK(st.st_mode)) {
                if (mknodat(dst_dir_fd, name, (st.st_mode & S_IFMT) | 0600, st.st_rdev) < 0)
                        return copy_fail(c, rel, errno);
                /* A chown drops nothing a node's xattrs hold; they go on before it, by the pins. */
                dst = openat(dst_dir_fd, name, O_PATH | O_NOFOLLOW | O_CLOEXEC);
                if (dst < 0)
                        return copy_fail(c, rel, errno);
                k = copy_xattrs(pin, dst, true);
                if (k < 0)
                        return copy_fail(c, rel, -k);
        } else
                return copy_fail(c, rel, EBADFD);

        /* Links and nodes are never opened: owner, mode and times by name, in the copy's own
         * directory, which nothing but us can reach. */
        struct timespec times[2] = {st.st_atim, st.st_mtim};
        if (fchownat(dst_dir_fd, name, st.st_uid, st.st_gid, AT_SYMLINK_NOFOLLOW) < 0)
                return copy_fail(c, rel, errno);
        if (!S_ISLNK(st.st_mode) && fchmodat(dst_dir_fd, name, st.st_mode & 07777, 0) < 0)
                return copy_fail(c, rel, errno);
        if (utimensat(dst_dir_fd, name, times, AT_SYMLINK_NOFOLLOW) < 0)
                return copy_fail(c, rel, errno);
        return 0;
}

static int copy_dir_contents(CopyTree *c, int src_dir_fd, int dst_dir_fd, const char *rel, unsigned depth)
{
        DIR *d = opendir_at(src_dir_fd, ".");
        struct dirent *de;
        int k = 0;

        if (!d)
                return copy_fail(c, rel, errno);
        while ((errno = 0, de = readdir(d))) {
                g_autofree char *child = NULL;

                if (dot_or_dot_dot(de->d_name))
                        continue;
                child = streq(rel, ".") ? g_strdup(de->d_name) : g_strconcat(rel, "/", de->d_name, NULL);
                k = copy_entry(c, dirfd(d), dst_dir_fd, de->d_name, child, depth);
                if (k < 0)
                        break;
        }
        if (k >= 0 && errno != 0)
                k = copy_fail(c, rel, errno);
        closedir(d);
        return k;
}

/* Copy the image @source to the new @tmp of the store (a subvolume where it can be: it can be
 * snapshotted cheaply later). On failure, @failed names what it failed on. */
static int copy_tree(int store_fd, bool is_btrfs, const char *source, const char *tmp, char **failed)
{
        _cleanup_close_ int src = -1, dst = -1;
        g_autoptr(GHashTable) links = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, g_free);
        CopyTree c = {.links = links};
        struct stat st;
        int k;

        src = openat(store_fd, source, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (src < 0)
                return -errno;
        if (fstat(src, &st) < 0)
                return -errno;
        if (!(is_btrfs && btrfs_util_create_subvolume_fd(store_fd, tmp, 0, NULL, NULL) == BTRFS_UTIL_OK) &&
            mkdirat(store_fd, tmp, 0700) < 0)
                return -errno;
        dst = openat(store_fd, tmp, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (dst < 0)
                return -errno;
        c.dst_root_fd = dst;

        k = copy_dir_contents(&c, src, dst, ".", 0);
        if (k >= 0) {
                k = copy_attributes(src, dst, &st);
                if (k < 0)
                        (void) copy_fail(&c, ".", -k);
        }
        if (k < 0 && failed)
                *failed = TAKE_PTR(c.failed_path);
        g_free(c.failed_path);
        return k;
}

int store_set_read_only_fd(int fd, bool read_only)
{
        unsigned attr = 0;

        if (fd_is_subvolume(fd) > 0) {
                enum btrfs_util_error e = btrfs_util_set_subvolume_read_only_fd(fd, read_only);
                return e == BTRFS_UTIL_OK ? 0 : -(errno ? errno : EIO);
        }
        if (ioctl(fd, FS_IOC_GETFLAGS, &attr) < 0)
                return -errno;
        if (read_only)
                attr |= FS_IMMUTABLE_FL;
        else
                attr &= ~FS_IMMUTABLE_FL;
        if (ioctl(fd, FS_IOC_SETFLAGS, &attr) < 0)
                return -errno;
        return 0;
}

/* Set or clear the immutable flag of a directory image (not a subvolume). Returns 1 if the flag was set
 * before, 0 if not, negative errno on failure. */
static int directory_set_immutable_at(int store_fd, const char *name, bool immutable)
{
        _cleanup_close_ int fd = openat(store_fd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        unsigned attr = 0, new_attr;

        if (fd < 0)
                return -errno;
        if (fd_is_subvolume(fd) > 0)
                return 0;
        if (ioctl(fd, FS_IOC_GETFLAGS, &attr) < 0)
                return -errno;
        new_attr = immutable ? (attr | FS_IMMUTABLE_FL) : (attr & ~FS_IMMUTABLE_FL);
        if (new_attr != attr && ioctl(fd, FS_IOC_SETFLAGS, &new_attr) < 0)
                return -errno;
        return (attr & FS_IMMUTABLE_FL) ? 1 : 0;
}

int store_clone_image(int store_fd, bool is_btrfs, const char *source, const char *new_name, StoreCloneFlags flags,
                      uid_t owner, char *err, size_t errlen)
{
        bool read_only = flags & STORE_CLONE_READ_ONLY, fresh = flags & STORE_CLONE_FRESH_IDENTITY;
        _cleanup_close_ int src = -1, dst = -1;
        _cleanup_free_ char *tmp = store_temp_name(new_name);
        int k;

        if (!tmp)
                return errbuf_set(err, errlen, ENOMEM, "Out of memory");
        src = openat(store_fd, source, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (src < 0)
                return errbuf_set(err, errlen, errno == ENOTDIR || errno == ELOOP ? ENOENT : errno,
                                  "Cannot open image %s: %s", source, strerror(errno));

        if (is_btrfs && fd_is_subvolume(src) > 0) {
                int snapshot_flags = BTRFS_UTIL_CREATE_SNAPSHOT_RECURSIVE;
                enum btrfs_util_error e;

                /* A read-only one cannot be recursive. One that gets a fresh identity is written to first
                 * and made read-only after. */
                if (read_only && !fresh)
                        snapshot_flags = BTRFS_UTIL_CREATE_SNAPSHOT_READ_ONLY;
                e = btrfs_util_create_snapshot_fd2(src, store_fd, tmp, snapshot_flags, NULL, NULL);
                if (e != BTRFS_UTIL_OK) {
                        k = errno ? errno : EIO;
                        (void) store_remove_tree(store_fd, tmp);
                        return errbuf_set(err, errlen, k, "Cannot snapshot image %s: %s", source,
                                          btrfs_util_strerror(e));
                }
        } else {
                g_autofree char *failed = NULL;

                k = copy_tree(store_fd, is_btrfs, source, tmp, &failed);
                if (k < 0) {
                        g_autofree char *shown = text_escape(failed ?: ".", 0, ESCAPE_MESSAGE);
                        (void) store_remove_tree(store_fd, tmp);
                        if (k == -ENOSPC || k == -EDQUOT)
                                return errbuf_set(err, errlen, ENOSPC, "No space left in the store to copy image %s",
                                                  source);
                        if (k == -ELOOP)
                                return errbuf_set(err, errlen, ELOOP,
                                                  "Copying image %s failed at %s: more than %d directories deep",
                                                  source, shown, COPY_DEPTH_MAX);
                        return errbuf_set(err, errlen, -k, "Copying image %s failed at %s: %s", source, shown,
                                          strerror(-k));
                }
                dst = openat(store_fd, tmp, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
                if (dst < 0) {
                        k = -errno;
                        (void) store_remove_tree(store_fd, tmp);
                        return errbuf_set(err, errlen, -k, "Cannot open the copy of %s: %s", source, strerror(-k));
                }
                /* cp -a carried the source's immutable flag over, and an immutable directory cannot be
                 * renamed: lift it now and set what was asked for once the copy is in place. */
                if (fd_is_subvolume(dst) <= 0)
                        (void) store_set_read_only_fd(dst, false);
        }

        if (fresh) {
                if (dst < 0)
                        dst = openat(store_fd, tmp, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
                k = dst < 0 ? errbuf_set(err, errlen, errno, "Cannot open the clone of %s: %s", source, strerror(errno))
                            : store_reset_identity(dst, new_name, err, errlen);
                if (k >= 0 && read_only && fd_is_subvolume(dst) > 0) {
                        k = store_set_read_only_fd(dst, true);
                        if (k < 0)
                                errbuf_set(err, errlen, -k, "Cannot mark the clone %s read-only: %s", new_name,
                                           strerror(-k));
                }
                if (k < 0) {
                        (void) store_remove_tree(store_fd, tmp);
                        return k;
                }
        }

        if (owner != UID_INVALID) {
                if (dst < 0)
                        dst = openat(store_fd, tmp, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
                k = dst < 0 ? -errno : store_owner_write(store_fd, new_name, dst, owner);
                if (k < 0) {
                        (void) store_remove_tree(store_fd, tmp);
                        return errbuf_set(err, errlen, -k, "Cannot record the owner of %s: %s", new_name, strerror(-k));
                }
        }

        k = rename_noreplace(store_fd, tmp, new_name);
        if (k < 0) {
                (void) store_remove_tree(store_fd, tmp);
                /* Our record names the temporary's identity, which no image has now: it can only be
                 * stale, whoever holds the name. */
                if (owner != UID_INVALID)
                        (void) store_owner_remove_if_stale(store_fd, new_name);
                if (k == -EEXIST)
                        return errbuf_set(err, errlen, EEXIST, "An image named %s already exists", new_name);
                return errbuf_set(err, errlen, -k, "Cannot put the clone in place as %s: %s", new_name, strerror(-k));
        }
        if (dst >= 0 && read_only) {
                k = store_set_read_only_fd(dst, true);
                if (k < 0) {
                        (void) store_remove_tree(store_fd, new_name);
                        return errbuf_set(err, errlen, -k, "Cannot mark the copy %s read-only: %s", new_name,
                                          strerror(-k));
                }
        }
        return 0;
}

int store_remove_image(int store_fd, bool is_btrfs, const char *name, char *err, size_t errlen)
{
        _cleanup_free_ char *tmp = store_temp_name(name);
        int k;

        if (!tmp)
                return errbuf_set(err, errlen, ENOMEM, "Out of memory");
        (void) directory_set_immutable_at(store_fd, name, false);
        /* First out of sight, atomically; then the slow part. A crash in between leaves a temporary
         * that the next start removes. */
        k = rename_noreplace(store_fd, name, tmp);
        if (k < 0)
                return errbuf_set(err, errlen, -k, "Cannot remove image %s: %s", name, strerror(-k));
        (void) store_owner_remove(store_fd, name);
        k = store_remove_tree(store_fd, tmp);
        if (k < 0)
                log_warning_errno(k, "Removed image %s, but its data at %s remains until the next start", name, tmp);
        return 0;
}

int store_rename_image(int store_fd, const char *name, const char *new_name, char *err, size_t errlen)
{
        /* A read-only directory image carries the immutable flag, which forbids the rename: lift it
         * around the rename, as machined does, and put it back on whichever name the image has. */
        bool was_immutable;
        int k;

        /* The record first goes to the new name too, so that neither name is ever an image without
         * its record; the old one goes once the image has moved. */
        k = store_owner_copy(store_fd, name, new_name);
        if (k < 0)
                return errbuf_set(err, errlen, -k, "Cannot carry the owner of %s over to %s: %s", name, new_name,
                                  strerror(-k));
        was_immutable = directory_set_immutable_at(store_fd, name, false) > 0;
        k = rename_noreplace(store_fd, name, new_name);
        (void) store_owner_remove_if_stale(store_fd, k < 0 ? new_name : name);

        if (was_immutable)
                (void) directory_set_immutable_at(store_fd, k < 0 ? name : new_name, true);

        if (k == -EEXIST)
                return errbuf_set(err, errlen, EEXIST, "An image named %s already exists", new_name);
        if (k == -ENOENT)
                return errbuf_set(err, errlen, ENOENT, "No image named %s", name);
        if (k < 0)
                return errbuf_set(err, errlen, -k, "Cannot rename %s to %s: %s", name, new_name, strerror(-k));
        return 0;
}

int store_set_image_read_only(int store_fd, const char *name, bool read_only, char *err, size_t errlen)
{
        _cleanup_close_ int fd = openat(store_fd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        int k;

        if (fd < 0)
                return errbuf_set(err, errlen, ENOENT, "No image named %s", name);
        k = store_set_read_only_fd(fd, read_only);
        if (k < 0)
                return errbuf_set(err, errlen, -k, "Cannot mark %s %s: %s", name, read_only ? "read-only" : "writable",
                                  strerror(-k));
        return 0;
}

int store_mount_allow_dev_suid(const char *path)
{
        static const struct {
                unsigned long st, ms;
        } keep[] = {
                {ST_RDONLY, MS_RDONLY},         {ST_NOEXEC, MS_NOEXEC},     {ST_NOATIME, MS_NOATIME},
                {ST_NODIRATIME, MS_NODIRATIME}, {ST_RELATIME, MS_RELATIME},
        };
        unsigned long flags = MS_BIND | MS_REMOUNT;
        struct statvfs sv;

        if (statvfs(path, &sv) < 0)
                return -errno;
        if (!(sv.f_flag & (ST_NOSUID | ST_NODEV)))
                return 0;
        for (size_t i = 0; i < ELEMENTSOF(keep); i++)
                if (sv.f_flag & keep[i].st)
                        flags |= keep[i].ms;
        if (mount(path, path, NULL, MS_BIND, NULL) < 0 || mount(NULL, path, NULL, flags, NULL) < 0)
                return -errno;
        return 1;
}
