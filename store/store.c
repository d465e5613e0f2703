/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <fcntl.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/wait.h>

#include <btrfsutil.h>
#include <glib.h>

#include "btrfs-util.h"
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

/* Run a command inside the store, with paths relative to it, and wait for it. Blocking: from a worker
 * thread of stampd or a helper process, never the event loop. */
static int run_in_store(int store_fd, char *const argv[])
{
        _cleanup_free_ char *exe = NULL;
        pid_t pid;
        int status, k;

        /* Found before the fork: execvp() is not async-signal-safe. */
        k = find_executable(argv[0], &exe);
        if (k < 0)
                return k == -ENOENT ? 127 : k;
        pid = safe_fork(false);
        if (pid < 0)
                return (int) pid;
        if (pid == 0) {
                /* Async-signal-safe calls only until the exec (see safe_fork()). */
                int null = open("/dev/null", O_RDWR | O_CLOEXEC);
                if (fchdir(store_fd) < 0)
                        _exit(126);
                if (null >= 0) {
                        (void) dup2(null, STDIN_FILENO);
                        (void) dup2(null, STDOUT_FILENO);
                }
                execv(exe, argv);
                _exit(127);
        }
        while (waitpid(pid, &status, 0) < 0)
                if (errno != EINTR)
                        return -errno;
        return WIFEXITED(status) ? WEXITSTATUS(status) : 128;
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
                char *argv[] = {(char *) "rm", (char *) "-rf", (char *) "--one-file-system", (char *) "--",
                                (char *) name, NULL};
                int k = run_in_store(store_fd, argv);
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

static int copy_tree(int store_fd, bool is_btrfs, const char *source, const char *tmp)
{
        _cleanup_free_ char *src_dot = NULL, *tmp_dot = NULL;
        int k;

        /* Into a subvolume where we can, so the copy can be snapshotted cheaply later. */
        if (is_btrfs && btrfs_util_create_subvolume_fd(store_fd, tmp, 0, NULL, NULL) == BTRFS_UTIL_OK) {
                if (asprintf(&src_dot, "%s/.", source) < 0 || asprintf(&tmp_dot, "%s/", tmp) < 0)
                        return -ENOMEM;
                char *argv[] = {(char *) "cp", (char *) "-a", (char *) "--reflink=auto", (char *) "--",
                                src_dot, tmp_dot, NULL};
                k = run_in_store(store_fd, argv);
        } else {
                char *argv[] = {(char *) "cp", (char *) "-a", (char *) "--reflink=auto", (char *) "-T",
                                (char *) "--", (char *) source, (char *) tmp, NULL};
                k = run_in_store(store_fd, argv);
        }
        if (k != 0)
                return k < 0 ? k : -EIO;
        return 0;
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
                k = copy_tree(store_fd, is_btrfs, source, tmp);
                if (k < 0) {
                        /* cp only says it failed; a store with (almost) nothing left says why. */
                        bool full = store_is_full(store_fd);
                        (void) store_remove_tree(store_fd, tmp);
                        if (full)
                                return errbuf_set(err, errlen, ENOSPC, "No space left in the store to copy image %s",
                                            source);
                        return errbuf_set(err, errlen, k == -EIO ? EIO : -k, "Copying image %s failed", source);
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
                        return errbuf_set(err, errlen, -k, "Cannot record the owner of %s: %s", new_name,
                                          strerror(-k));
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
                log_warning_errno(k, "Removed image %s, but its data at %s remains until the next start", name,
                                  tmp);
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
