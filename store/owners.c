/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <fcntl.h>
#include <inttypes.h>
#include <sys/stat.h>

#include <glib.h>

#include "btrfs-util.h"
#include "names.h"
#include "owners.h"

#define RECORD_MAX 128

int store_image_identity(int image_fd, char ret[static STORE_IDENTITY_MAX])
{
        struct statx stx;

        if (statx(image_fd, "", AT_EMPTY_PATH, STATX_INO | STATX_BTIME, &stx) < 0)
                return -errno;
        if (stx.stx_ino == 256 && fd_is_subvolume(image_fd) > 0) {
                BtrfsSubvolInfo info;
                int k = btrfs_subvol_info_fd(image_fd, &info);
                if (k < 0)
                        return k;
                memcpy(ret, "uuid:", 5);
                for (int i = 0; i < 16; i++)
                        snprintf(ret + 5 + 2 * i, 3, "%02x", info.uuid[i]);
                return 0;
        }
        /* A directory: its inode number alone could be reused by a later one; with its birth time
         * (where the filesystem keeps one) it is not. */
        snprintf(ret, STORE_IDENTITY_MAX, "ino:%" PRIu64 ":%" PRId64 ".%09" PRIu32, (uint64_t) stx.stx_ino,
                 (stx.stx_mask & STATX_BTIME) ? (int64_t) stx.stx_btime.tv_sec : 0,
                 (stx.stx_mask & STATX_BTIME) ? stx.stx_btime.tv_nsec : 0);
        return 0;
}

int store_open_owners(int store_fd, bool create)
{
        _cleanup_close_ int meta = open_private_dir(store_fd, STORE_META_DIR, create);

        if (meta < 0)
                return meta;
        return open_private_dir(meta, "owners", create);
}

/* A record is a symbolic link whose target is "UID IDENTITY": a short target is metadata (inline in btrfs's
 * tree, in the inode on ext4), written with the rename that puts it in place, in the same transaction, so it
 * is there whole after a crash with no fsync (a regular file's data need not be: the records were such
 * files, written with an fsync each, which cost a restore or a clone of a user's image a third of a
 * millisecond; they are still read). */
static int write_record(int dir_fd, const char *name, const char *text)
{
        char tmp[NAME_MAX + 1], target[RECORD_MAX];
        size_t n = strlen(text);

        if (n > 0 && text[n - 1] == '\n')
                n--;
        if (n == 0 || n >= sizeof target)
                return -EINVAL;
        memcpy(target, text, n);
        target[n] = '\0';
        snprintf(tmp, sizeof tmp, ".#%.200s.", name);
        random_hex(tmp + strlen(tmp), 16);
        if (symlinkat(target, dir_fd, tmp) < 0)
                return -errno;
        if (renameat(dir_fd, tmp, dir_fd, name) < 0) {
                int k = -errno;
                (void) unlinkat(dir_fd, tmp, 0);
                return k;
        }
        return 0;
}

int store_owner_write(int store_fd, const char *name, int image_fd, uid_t uid)
{
        _cleanup_close_ int dir = store_open_owners(store_fd, true);
        char identity[STORE_IDENTITY_MAX], text[RECORD_MAX];
        int k;

        if (dir < 0)
                return dir;
        if (!image_name_is_valid(name))
                return -EINVAL;
        k = store_image_identity(image_fd, identity);
        if (k < 0)
                return k;
        snprintf(text, sizeof text, "%u %s\n", (unsigned) uid, identity);
        return write_record(dir, name, text);
}

/* The record of @name: its uid and identity. -ENOENT if there is none, -EBADMSG if it is not one. */
static int read_record(int dir_fd, const char *name, uid_t *ret_uid, char ret_identity[static STORE_IDENTITY_MAX])
{
        _cleanup_close_ int fd = -1;
        char buf[RECORD_MAX + 1], *end;
        unsigned long uid;
        struct stat st;
        ssize_t n;

        if (fstatat(dir_fd, name, &st, AT_SYMLINK_NOFOLLOW) < 0)
                return -errno;
        if (st.st_uid != 0)
                return -EBADMSG;
        if (S_ISLNK(st.st_mode)) {
                n = readlinkat(dir_fd, name, buf, sizeof buf - 1);
                if (n < 0)
                        return -errno;
                if (n == 0 || n >= RECORD_MAX)
                        return -EBADMSG;
                buf[n] = '\0';
        } else if (S_ISREG(st.st_mode)) {
                /* as records were written before they were links */
                fd = openat(dir_fd, name, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
                if (fd < 0)
                        return -errno;
                if (fstat(fd, &st) < 0)
                        return -errno;
                if (!S_ISREG(st.st_mode) || st.st_uid != 0)
                        return -EBADMSG;
                n = read(fd, buf, sizeof buf - 1);
                if (n < 0)
                        return -errno;
                if (n == 0 || n >= RECORD_MAX || buf[n - 1] != '\n')
                        return -EBADMSG;
                buf[n - 1] = '\0';
        } else
                return -EBADMSG;
        errno = 0;
        uid = strtoul(buf, &end, 10);
        if (errno != 0 || end == buf || *end != ' ' || uid >= UINT32_MAX || strlen(end + 1) >= STORE_IDENTITY_MAX)
                return -EBADMSG;
        *ret_uid = (uid_t) uid;
        strcpy(ret_identity, end + 1);
        return 0;
}

uid_t store_owner_read(int store_fd, const char *name, int image_fd)
{
        _cleanup_close_ int meta = openat(store_fd, STORE_OWNERS_DIR, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        char recorded[STORE_IDENTITY_MAX], identity[STORE_IDENTITY_MAX];
        uid_t uid;

        if (meta < 0 || !image_name_is_valid(name))
                return 0;
        if (read_record(meta, name, &uid, recorded) < 0)
                return 0;
        if (store_image_identity(image_fd, identity) < 0 || !streq(identity, recorded))
                return 0;
        return uid;
}

static bool record_is_stale(int store_fd, int dir_fd, const char *name)
{
        char recorded[STORE_IDENTITY_MAX], identity[STORE_IDENTITY_MAX];
        _cleanup_close_ int image = -1;
        uid_t uid;
        int k = read_record(dir_fd, name, &uid, recorded);

        if (k == -ENOENT)
                return false; /* nothing to drop */
        if (k < 0)
                return true;
        image = openat(store_fd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        return image < 0 || store_image_identity(image, identity) < 0 || !streq(identity, recorded);
}

int store_owner_copy(int store_fd, const char *name, const char *new_name)
{
        _cleanup_close_ int dir = -1;
        char identity[STORE_IDENTITY_MAX], text[RECORD_MAX];
        uid_t uid;
        int k;

        if (!image_name_is_valid(name) || !image_name_is_valid(new_name))
                return -EINVAL;
        dir = openat(store_fd, STORE_OWNERS_DIR, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (dir < 0)
                return errno == ENOENT ? 0 : -errno;
        /* An image already named @new_name keeps its record; the rename will fail anyway. */
        if (!record_is_stale(store_fd, dir, new_name) && faccessat(dir, new_name, F_OK, AT_SYMLINK_NOFOLLOW) == 0)
                return -EEXIST;
        k = read_record(dir, name, &uid, identity);
        if (k == -ENOENT || k == -EBADMSG)
                return 0; /* nothing (valid) to carry over: root's before and after */
        if (k < 0)
                return k;
        snprintf(text, sizeof text, "%u %s\n", (unsigned) uid, identity);
        return write_record(dir, new_name, text);
}

int store_owner_remove(int store_fd, const char *name)
{
        _cleanup_close_ int dir = openat(store_fd, STORE_OWNERS_DIR, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);

        if (dir < 0)
                return errno == ENOENT ? 0 : -errno;
        if (!image_name_is_valid(name))
                return -EINVAL;
        if (unlinkat(dir, name, 0) < 0 && errno != ENOENT)
                return -errno;
        return 0;
}

int store_owner_remove_if_stale(int store_fd, const char *name)
{
        _cleanup_close_ int dir = openat(store_fd, STORE_OWNERS_DIR, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);

        if (dir < 0)
                return errno == ENOENT ? 0 : -errno;
        if (!image_name_is_valid(name))
                return -EINVAL;
        if (record_is_stale(store_fd, dir, name) && unlinkat(dir, name, 0) < 0 && errno != ENOENT)
                return -errno;
        return 0;
}

void store_owners_clean(int store_fd)
{
        _cleanup_close_ int dir = store_open_owners(store_fd, false);
        g_autoptr(GPtrArray) stale = g_ptr_array_new_with_free_func(free);
        struct dirent *de;
        DIR *d;

        if (dir < 0) {
                if (dir != -ENOENT)
                        log_warning_errno(dir, "Cannot open the owner records of the store");
                return;
        }
        d = opendir_at(dir, ".");
        if (!d)
                return;
        while ((de = readdir(d))) {
                if (dot_or_dot_dot(de->d_name))
                        continue;
                /* A temporary of write_record(), something that is no record, or a record of an image
                 * that is gone or another one now. */
                if (!image_name_is_valid(de->d_name) || record_is_stale(store_fd, dir, de->d_name))
                        g_ptr_array_add(stale, strdup(de->d_name));
        }
        closedir(d);
        for (guint i = 0; i < stale->len; i++)
                if (unlinkat(dir, stale->pdata[i], 0) < 0 && errno != ENOENT)
                        log_warning_errno(-errno, "Cannot remove the stale owner record %s", (char *) stale->pdata[i]);
}
