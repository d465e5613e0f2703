/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <sys/stat.h>

#include <btrfsutil.h>

#include "btrfs-util.h"
#include "names.h"
#include "snapshots.h"
#include "store.h"

#define JOURNAL_MAX 256
#define ORIGIN_FILE ".origin"

void store_snapshot_free(void *p)
{
        StoreSnapshot *s = p;

        if (!s)
                return;
        free(s->name);
        free(s);
}

/* <store>/.stamp/@sub, made with its parent if @create. */
static int open_meta_dir(int store_fd, const char *sub, bool create)
{
        _cleanup_close_ int meta = open_private_dir(store_fd, STORE_META_DIR, create);

        if (meta < 0)
                return meta;
        return open_private_dir(meta, sub, create);
}

static int image_snapshots_dir(int store_fd, int image_fd, bool create)
{
        _cleanup_close_ int top = -1;
        char id[STORE_IDENTITY_MAX];
        int k;

        if (fd_is_subvolume(image_fd) <= 0)
                return -EOPNOTSUPP;
        k = store_image_identity(image_fd, id);
        if (k < 0)
                return k;
        top = open_meta_dir(store_fd, "snapshots", create);
        if (top < 0)
                return top;
        return open_private_dir(top, id, create);
}

int store_snapshots_open(int store_fd, int image_fd)
{
        int fd = image_snapshots_dir(store_fd, image_fd, false);
        return fd == -EOPNOTSUPP ? -ENOENT : fd;
}

static gint snapshot_compare(gconstpointer a, gconstpointer b)
{
        const StoreSnapshot *x = *(StoreSnapshot *const *) a, *y = *(StoreSnapshot *const *) b;

        if (x->crtime_usec != y->crtime_usec)
                return x->crtime_usec < y->crtime_usec ? -1 : 1;
        return strcmp(x->name, y->name);
}

int store_snapshots_list(int store_fd, int image_fd, GPtrArray **ret)
{
        g_autoptr(GPtrArray) list = g_ptr_array_new_with_free_func(store_snapshot_free);
        _cleanup_close_ int dir = store_snapshots_open(store_fd, image_fd);
        struct dirent *de;
        DIR *d;

        if (dir == -ENOENT) {
                *ret = g_steal_pointer(&list);
                return 0;
        }
        if (dir < 0)
                return dir;
        d = opendir_at(dir, ".");
        if (!d)
                return -errno;
        while ((de = readdir(d))) {
                _cleanup_close_ int fd = -1;
                BtrfsSubvolInfo info;
                StoreSnapshot *s;

                if (!image_name_is_valid(de->d_name))
                        continue;
                fd = openat(dirfd(d), de->d_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
                if (fd < 0 || btrfs_subvol_info_fd(fd, &info) < 0)
                        continue;
                s = calloc(1, sizeof *s);
                if (!s || !(s->name = strdup(de->d_name))) {
                        store_snapshot_free(s);
                        closedir(d);
                        return -ENOMEM;
                }
                s->crtime_usec = info.otime_usec;
                s->subvol_id = info.id;
                g_ptr_array_add(list, s);
        }
        closedir(d);
        g_ptr_array_sort(list, snapshot_compare);
        *ret = g_steal_pointer(&list);
        return 0;
}

unsigned store_snapshots_count(int store_fd, int image_fd)
{
        _cleanup_close_ int dir = store_snapshots_open(store_fd, image_fd);
        struct dirent *de;
        unsigned n = 0;
        DIR *d;

        if (dir < 0)
                return 0;
        d = opendir_at(dir, ".");
        if (!d)
                return 0;
        while ((de = readdir(d)))
                if (image_name_is_valid(de->d_name))
                        n++;
        closedir(d);
        return n;
}

int store_snapshot_exists(int store_fd, int image_fd, const char *snapshot)
{
        _cleanup_close_ int dir = store_snapshots_open(store_fd, image_fd);

        if (dir == -ENOENT)
                return 0;
        if (dir < 0)
                return dir;
        if (faccessat(dir, snapshot, F_OK, AT_SYMLINK_NOFOLLOW) == 0)
                return 1;
        return errno == ENOENT ? 0 : -errno;
}

static int open_image(int store_fd, const char *name, char *err, size_t errlen)
{
        int fd = openat(store_fd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);

        if (fd < 0)
                return errbuf_set(err, errlen, errno == ENOTDIR || errno == ELOOP ? ENOENT : errno,
                                  "Cannot open image %s: %s", name, strerror(errno));
        if (fd_is_subvolume(fd) <= 0) {
                safe_close(fd);
                return errbuf_set(err, errlen, EOPNOTSUPP,
                                  "Image %s is a plain directory, not a btrfs subvolume: it can have no snapshots",
                                  name);
        }
        return fd;
}

int store_snapshot_create(int store_fd, const char *name, const char *snapshot, char *err, size_t errlen)
{
        _cleanup_close_ int image = -1, dir = -1;
        enum btrfs_util_error e;

        if (!image_name_is_valid(snapshot))
                return errbuf_set(err, errlen, EINVAL, "Invalid snapshot name");
        image = open_image(store_fd, name, err, errlen);
        if (image < 0)
                return image;
        dir = image_snapshots_dir(store_fd, image, true);
        if (dir < 0)
                return errbuf_set(err, errlen, -dir, "Cannot open the snapshots of image %s: %s", name, strerror(-dir));
        /* One ioctl makes it complete under its name: nothing half-made is ever there. */
        e = btrfs_util_create_snapshot_fd2(image, dir, snapshot, BTRFS_UTIL_CREATE_SNAPSHOT_READ_ONLY, NULL, NULL);
        if (e != BTRFS_UTIL_OK) {
                int error = errno ?: EIO;
                if (error == EEXIST)
                        return errbuf_set(err, errlen, EEXIST, "Image %s already has a snapshot named %s", name,
                                          snapshot);
                return errbuf_set(err, errlen, error, "Cannot snapshot image %s as %s: %s", name, snapshot,
                                  btrfs_util_strerror(e));
        }
        return 0;
}

int store_snapshot_remove(int store_fd, const char *name, const char *snapshot, char *err, size_t errlen)
{
        _cleanup_close_ int image = -1, dir = -1;
        _cleanup_free_ char *tmp = store_temp_name(snapshot);
        int k;

        if (!tmp)
                return errbuf_set(err, errlen, ENOMEM, "Out of memory");
        image = open_image(store_fd, name, err, errlen);
        if (image < 0)
                return image;
        dir = store_snapshots_open(store_fd, image);
        if (dir < 0 || !image_name_is_valid(snapshot))
                return errbuf_set(err, errlen, ENOENT, "Image %s has no snapshot named %s", name, snapshot);
        /* Out of sight first; the deletion may take a while. */
        if (renameat2(dir, snapshot, dir, tmp, RENAME_NOREPLACE) < 0) {
                k = errno;
                if (k == ENOENT)
                        return errbuf_set(err, errlen, ENOENT, "Image %s has no snapshot named %s", name, snapshot);
                return errbuf_set(err, errlen, k, "Cannot remove snapshot %s of image %s: %s", snapshot, name,
                                  strerror(k));
        }
        k = store_remove_tree(dir, tmp);
        if (k < 0)
                log_warning_errno(k, "Removed snapshot %s of image %s, but its data remains until the next start",
                                  snapshot, name);
        return 0;
}

/* Delete the directory @name below @parent_fd with the snapshots in it. */
static int remove_snapshot_dir(int parent_fd, const char *name)
{
        _cleanup_close_ int dir = openat(parent_fd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        g_autoptr(GPtrArray) names = g_ptr_array_new_with_free_func(free);
        struct dirent *de;
        DIR *d;
        int k = 0;

        if (dir < 0)
                return errno == ENOENT ? 0 : -errno;
        d = opendir_at(dir, ".");
        if (!d)
                return -errno;
        while ((de = readdir(d)))
                if (!dot_or_dot_dot(de->d_name))
                        g_ptr_array_add(names, strdup(de->d_name));
        closedir(d);
        for (guint i = 0; i < names->len; i++) {
                int r = store_remove_tree(dir, names->pdata[i]);
                if (r < 0 && k == 0)
                        k = r;
        }
        if (unlinkat(parent_fd, name, AT_REMOVEDIR) < 0 && k == 0)
                k = -errno;
        return k;
}

int store_snapshots_remove_all(int store_fd, const char *name, char *err, size_t errlen)
{
        _cleanup_close_ int image = -1, top = -1;
        _cleanup_free_ char *tmp = store_temp_name("snapshots");
        char id[STORE_IDENTITY_MAX];
        int k;

        if (!tmp)
                return errbuf_set(err, errlen, ENOMEM, "Out of memory");
        image = openat(store_fd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (image < 0)
                return errbuf_set(err, errlen, errno == ENOTDIR || errno == ELOOP ? ENOENT : errno,
                                  "Cannot open image %s: %s", name, strerror(errno));
        if (fd_is_subvolume(image) <= 0)
                return 0;
        k = store_image_identity(image, id);
        if (k < 0)
                return errbuf_set(err, errlen, -k, "Cannot tell the identity of image %s: %s", name, strerror(-k));
        top = open_meta_dir(store_fd, "snapshots", false);
        if (top == -ENOENT)
                return 0;
        if (top < 0)
                return errbuf_set(err, errlen, -top, "Cannot open the snapshots of the store: %s", strerror(-top));
        /* A crash from here on leaves the image without its snapshots, which is what was asked for
         * first; the hidden directory goes at the next start. */
        if (renameat2(top, id, top, tmp, RENAME_NOREPLACE) < 0) {
                if (errno == ENOENT)
                        return 0;
                return errbuf_set(err, errlen, errno, "Cannot remove the snapshots of image %s: %s", name,
                                  strerror(errno));
        }
        k = remove_snapshot_dir(top, tmp);
        if (k < 0)
                log_warning_errno(k, "Removed the snapshots of image %s, but some data remains until the next start",
                                  name);
        return 0;
}

int store_snapshots_origin(int store_fd, int image_fd, uint8_t ret[16])
{
        _cleanup_close_ int dir = store_snapshots_open(store_fd, image_fd);
        _cleanup_close_ int fd = -1;
        char hex[34];
        ssize_t n;

        if (dir < 0)
                return 0;
        fd = openat(dir, ORIGIN_FILE, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
        if (fd < 0)
                return 0;
        n = read(fd, hex, sizeof hex);
        if (n != 33 || hex[32] != '\n')
                return 0;
        for (int i = 0; i < 16; i++) {
                unsigned byte;
                if (!g_ascii_isxdigit(hex[2 * i]) || !g_ascii_isxdigit(hex[2 * i + 1]) ||
                    sscanf(hex + 2 * i, "%2x", &byte) != 1)
                        return 0;
                ret[i] = (uint8_t) byte;
        }
        return 1;
}

/* Before the first restore of the image at @image_fd: keep its btrfs parent as its origin. */
static int keep_origin(int dir_fd, int image_fd)
{
        static const uint8_t zero[16];
        BtrfsSubvolInfo info;
        char text[34];
        int k;

        if (faccessat(dir_fd, ORIGIN_FILE, F_OK, AT_SYMLINK_NOFOLLOW) == 0)
                return 0; /* restored before: the origin it has is the one to keep */
        k = btrfs_subvol_info_fd(image_fd, &info);
        if (k < 0)
                return k;
        if (memcmp(info.parent_uuid, zero, 16) == 0)
                return 0;
        uuid_to_hex(info.parent_uuid, text);
        text[32] = '\n';
        text[33] = '\0';
        return write_file_atomic_at(dir_fd, ORIGIN_FILE, text, 33, 0600, false);
}

static void test_pause(const char *point)
{
        const char *want = getenv(STORE_TEST_PAUSE_ENV);

        if (!want || !streq(want, point))
                return;
        log_notice("Paused at %s, as " STORE_TEST_PAUSE_ENV " asks: waiting to be killed.", point);
        for (;;)
                pause();
}

/* Move the snapshots and the owner record of image @name from identity @old_id to @new_id, the
 * identity of @image_fd, the tree @name holds now. */
static void restore_finish(int store_fd, const char *name, const char *old_id, const char *new_id, uid_t owner,
                           int image_fd)
{
        _cleanup_close_ int top = open_meta_dir(store_fd, "snapshots", false);
        int k;

        if (top >= 0 && renameat2(top, old_id, top, new_id, RENAME_NOREPLACE) < 0 && errno != ENOENT)
                log_warning_errno(-errno, "Cannot carry the snapshots of image %s over to its restored tree", name);
        if (owner != 0) {
                k = store_owner_write(store_fd, name, image_fd, owner);
                if (k < 0)
                        log_warning_errno(k, "Cannot carry the owner of image %s over to its restored tree", name);
        }
}

int store_snapshot_restore(int store_fd, const char *name, const char *snapshot, char *err, size_t errlen)
{
        _cleanup_close_ int image = -1, dir = -1, snap = -1, fresh = -1, journal = -1;
        _cleanup_free_ char *tmp = store_temp_name(name);
        char old_id[STORE_IDENTITY_MAX], new_id[STORE_IDENTITY_MAX], text[JOURNAL_MAX];
        enum btrfs_util_error e;
        uid_t owner;
        int k;

        if (!tmp)
                return errbuf_set(err, errlen, ENOMEM, "Out of memory");
        image = open_image(store_fd, name, err, errlen);
        if (image < 0)
                return image;
        k = store_image_identity(image, old_id);
        if (k < 0)
                return errbuf_set(err, errlen, -k, "Cannot tell the identity of image %s: %s", name, strerror(-k));
        dir = store_snapshots_open(store_fd, image);
        if (dir >= 0 && image_name_is_valid(snapshot))
                snap = openat(dir, snapshot, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (snap < 0)
                return errbuf_set(err, errlen, ENOENT, "Image %s has no snapshot named %s", name, snapshot);
        k = keep_origin(dir, image);
        if (k < 0)
                log_warning_errno(k, "Cannot keep the origin of image %s; once restored it will show none", name);

        e = btrfs_util_create_snapshot_fd2(snap, store_fd, tmp, 0, NULL, NULL);
        if (e != BTRFS_UTIL_OK) {
                k = errno ?: EIO;
                (void) store_remove_tree(store_fd, tmp);
                return errbuf_set(err, errlen, k, "Cannot make a writable copy of snapshot %s of image %s: %s",
                                  snapshot, name, btrfs_util_strerror(e));
        }
        fresh = openat(store_fd, tmp, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        k = fresh < 0 ? -errno : store_image_identity(fresh, new_id);
        if (k >= 0) {
                journal = open_meta_dir(store_fd, "restoring", true);
                k = journal;
        }
        owner = store_owner_read(store_fd, name, image);
        /* No fsync: btrfs commits in order, so no state after a power loss has the exchange below
         * without this journal; a killed stampd loses nothing of the page cache. */
        if (k >= 0) {
                snprintf(text, sizeof text, "%s %s %u\n", old_id, new_id, (unsigned) owner);
                k = write_file_atomic_at(journal, name, text, strlen(text), 0600, false);
        }
        if (k < 0) {
                (void) store_remove_tree(store_fd, tmp);
                return errbuf_set(err, errlen, -k, "Cannot prepare the restore of image %s: %s", name, strerror(-k));
        }

        test_pause("restore-before-exchange");
        /* The one step that changes what the name holds: old tree or new, never neither. */
        if (renameat2(store_fd, tmp, store_fd, name, RENAME_EXCHANGE) < 0) {
                k = errno;
                (void) unlinkat(journal, name, 0);
                (void) store_remove_tree(store_fd, tmp);
                return errbuf_set(err, errlen, k, "Cannot put the restored tree of image %s in place: %s", name,
                                  strerror(k));
        }
        test_pause("restore-after-exchange");

        restore_finish(store_fd, name, old_id, new_id, owner, fresh);
        if (unlinkat(journal, name, 0) < 0)
                log_warning_errno(-errno, "Cannot remove the restore journal of image %s", name);
        /* The old tree, now under the temporary name: the slow part, last. */
        k = store_remove_tree(store_fd, tmp);
        if (k < 0)
                log_warning_errno(k, "Restored image %s, but its old tree at %s remains until the next start", name,
                                  tmp);
        return 0;
}

static bool is_temporary(const char *name)
{
        return strncmp(name, STORE_TEMP_PREFIX, strlen(STORE_TEMP_PREFIX)) == 0;
}

static void remove_temporaries_in(int top_fd, const char *id)
{
        _cleanup_close_ int dir = openat(top_fd, id, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        g_autoptr(GPtrArray) names = g_ptr_array_new_with_free_func(free);
        struct dirent *de;
        DIR *d;

        if (dir < 0 || !(d = opendir_at(dir, ".")))
                return;
        while ((de = readdir(d)))
                if (is_temporary(de->d_name))
                        g_ptr_array_add(names, strdup(de->d_name));
        closedir(d);
        for (guint i = 0; i < names->len; i++)
                if (store_remove_tree(dir, names->pdata[i]) < 0)
                        log_warning("Cannot remove the snapshot left at %s", (char *) names->pdata[i]);
}

static void recover_restore(int store_fd, int journal_fd, const char *name)
{
        _cleanup_close_ int fd = openat(journal_fd, name, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
        _cleanup_close_ int image = -1;
        char text[JOURNAL_MAX + 1], old_id[STORE_IDENTITY_MAX], new_id[STORE_IDENTITY_MAX], id[STORE_IDENTITY_MAX];
        unsigned owner;
        ssize_t n;

        if (fd < 0 || !image_name_is_valid(name))
                return;
        n = read(fd, text, sizeof text - 1);
        if (n <= 0)
                return;
        text[n] = '\0';
        if (sscanf(text, "%63s %63s %u", old_id, new_id, &owner) != 3)
                return;
        image = openat(store_fd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (image < 0 || store_image_identity(image, id) < 0)
                return;
        if (streq(id, new_id)) {
                restore_finish(store_fd, name, old_id, new_id, (uid_t) owner, image);
                log_info("Finished the interrupted restore of image %s.", name);
        } else
                log_info("Image %s keeps its tree from before an interrupted restore.", name);
}

void store_snapshots_recover(int store_fd)
{
        _cleanup_close_ int journal = open_meta_dir(store_fd, "restoring", false);
        _cleanup_close_ int top = open_meta_dir(store_fd, "snapshots", false);
        g_autoptr(GPtrArray) names = g_ptr_array_new_with_free_func(free);
        struct dirent *de;
        DIR *d;

        if (journal >= 0 && (d = opendir_at(journal, "."))) {
                while ((de = readdir(d)))
                        if (!dot_or_dot_dot(de->d_name))
                                g_ptr_array_add(names, strdup(de->d_name));
                closedir(d);
                for (guint i = 0; i < names->len; i++) {
                        recover_restore(store_fd, journal, names->pdata[i]);
                        (void) unlinkat(journal, names->pdata[i], 0);
                }
        }
        g_ptr_array_set_size(names, 0);
        if (top < 0 || !(d = opendir_at(top, ".")))
                return;
        while ((de = readdir(d)))
                if (!dot_or_dot_dot(de->d_name))
                        g_ptr_array_add(names, strdup(de->d_name));
        closedir(d);
        for (guint i = 0; i < names->len; i++) {
                const char *n = names->pdata[i];
                if (is_temporary(n)) { /* the snapshots of an image being removed with it */
                        if (remove_snapshot_dir(top, n) < 0)
                                log_warning("Cannot remove the snapshots left at %s", n);
                } else
                        remove_temporaries_in(top, n); /* snapshots being removed one by one */
        }
}
