/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <dirent.h>
#include <fcntl.h>
#include <linux/btrfs_tree.h>
#include <linux/fs.h>
#include <linux/openat2.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <sys/xattr.h>

#include <btrfsutil.h>

#include "btrfs-util.h"
#include "image.h"
#include "names.h"

const char *image_type_to_string(ImageType t)
{
        return t == IMAGE_SUBVOLUME ? "subvolume" : "directory";
}

Image *image_free(Image *i)
{
        if (!i)
                return NULL;
        free(i->name);
        free(i);
        return NULL;
}

static void image_free_void(gpointer p)
{
        image_free(p);
}

static int image_open(Manager *m, const char *name)
{
        int fd = openat(m->store_fd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        return fd < 0 ? -errno : fd;
}

/* Remember under which name a subvolume was seen, so Origin need not list the whole store. */
static void uuid_hint_note(Manager *m, const Image *img)
{
        char hex[33];

        if (!img->has_uuid)
                return;
        if (g_hash_table_size(m->uuid_hints) >= UUID_HINTS_MAX)
                g_hash_table_remove_all(m->uuid_hints);
        uuid_to_hex(img->uuid, hex);
        g_hash_table_replace(m->uuid_hints, g_strdup(hex), g_strdup(img->name));
}

static Image *image_new(Manager *m, const char *name)
{
        _cleanup_image_ Image *img = calloc(1, sizeof *img);

        if (!img)
                return NULL;
        img->manager = m;
        img->name = strdup(name);
        if (!img->name)
                return NULL;
        img->usage = img->usage_exclusive = UINT64_MAX;
        return TAKE_PTR(img);
}

static void image_set_times(Image *img, const struct statx *stx)
{
        img->mtime_usec = (uint64_t) stx->stx_mtime.tv_sec * USEC_PER_SEC + stx->stx_mtime.tv_nsec / 1000;
        if (stx->stx_mask & STATX_BTIME)
                img->crtime_usec = (uint64_t) stx->stx_btime.tv_sec * USEC_PER_SEC + stx->stx_btime.tv_nsec / 1000;
}

static void image_set_subvolume(Image *img, const BtrfsSubvolInfo *info)
{
        img->type = IMAGE_SUBVOLUME;
        img->subvol_id = info->id;
        img->read_only = info->read_only;
        img->has_uuid = true;
        memcpy(img->uuid, info->uuid, 16);
        memcpy(img->parent_uuid, info->parent_uuid, 16);
        img->crtime_usec = info->otime_usec;
}

static int image_load_fd(Manager *m, const char *name, int fd, Image **ret)
{
        _cleanup_image_ Image *img = image_new(m, name);
        BtrfsSubvolInfo info;
        struct statx stx;

        if (!img)
                return -ENOMEM;
        if (statx(fd, "", AT_EMPTY_PATH, STATX_BTIME | STATX_MTIME | STATX_INO, &stx) < 0)
                return -errno;
        image_set_times(img, &stx);

        /* A subvolume's root directory is always inode 256; one ioctl then says the rest (a foreign
         * file system mounted in the store answers it with ENOTTY and is a directory image). */
        if (m->store_is_btrfs && stx.stx_ino == BTRFS_FIRST_FREE_OBJECTID &&
            btrfs_subvol_info_fd(fd, &info) >= 0) {
                image_set_subvolume(img, &info);
                if (m->quota_enabled && img->subvol_id != 0)
                        (void) btrfs_qgroup_usage(fd, img->subvol_id, &img->usage, &img->usage_exclusive);
        } else {
                unsigned attr = 0;

                img->type = IMAGE_DIRECTORY;
                /* Like machined: a directory image is read-only while it carries the immutable flag. */
                if (ioctl(fd, FS_IOC_GETFLAGS, &attr) >= 0)
                        img->read_only = (attr & FS_IMMUTABLE_FL) != 0;
        }

        uuid_hint_note(m, img);
        *ret = TAKE_PTR(img);
        return 0;
}

int image_load(Manager *m, const char *name, Image **ret)
{
        _cleanup_close_ int fd = -1;

        if (!image_name_is_valid(name))
                return -EINVAL;
        fd = image_open(m, name);
        if (fd == -ENOTDIR || fd == -ELOOP)
                return -ENOENT; /* a file or link in the store is not an image */
        if (fd < 0)
                return fd;
        return image_load_fd(m, name, fd, ret);
}

static gint image_compare(gconstpointer a, gconstpointer b)
{
        const Image *x = *(Image *const *) a, *y = *(Image *const *) b;
        return strcmp(x->name, y->name);
}

/* One entry of the store for image_list(): from what the whole-store searches found and one statx
 * by name, without opening it; what they cannot tell is loaded the slow way. */
static int image_list_entry(Manager *m, const char *name, GHashTable *subvols, GHashTable *usage, Image **ret)
{
        _cleanup_image_ Image *img = NULL;
        const BtrfsSubvolInfo *info = NULL;
        struct statx stx;

        if (!subvols)
                return image_load(m, name, ret);
        if (statx(m->store_fd, name, AT_SYMLINK_NOFOLLOW | AT_NO_AUTOMOUNT,
                  STATX_TYPE | STATX_BTIME | STATX_MTIME | STATX_INO, &stx) < 0)
                return -errno;
        if (!S_ISDIR(stx.stx_mode))
                return -ENOENT;
        if (stx.stx_ino == BTRFS_FIRST_FREE_OBJECTID) {
                info = g_hash_table_lookup(subvols, name);
                if (!info) /* made after the search, or something mounted here */
                        return image_load(m, name, ret);
        } else if (!(stx.stx_attributes_mask & STATX_ATTR_IMMUTABLE))
                return image_load(m, name, ret);

        img = image_new(m, name);
        if (!img)
                return -ENOMEM;
        image_set_times(img, &stx);
        if (info) {
                image_set_subvolume(img, info);
                if (usage) {
                        const BtrfsQgroupUsage *u = g_hash_table_lookup(usage, &info->id);
                        if (u) {
                                img->usage = u->referenced;
                                img->usage_exclusive = u->exclusive;
                        }
                }
        } else {
                img->type = IMAGE_DIRECTORY;
                img->read_only = (stx.stx_attributes & STATX_ATTR_IMMUTABLE) != 0;
        }
        *ret = TAKE_PTR(img);
        return 0;
}

int image_list(Manager *m, GPtrArray **ret)
{
        g_autoptr(GPtrArray) images = g_ptr_array_new_with_free_func(image_free_void);
        g_autoptr(GHashTable) subvols = NULL, usage = NULL;
        DIR *d = opendir_at(m->store_fd, ".");
        struct dirent *de;

        if (!d)
                return -errno;

        /* Two searches of btrfs's trees say what an ioctl per image would (the root tree: which
         * subvolumes sit in the store, their UUIDs, times and flags; the quota tree: usage). Without
         * them (no privilege for the search, say) each image is opened and asked. */
        if (m->store_is_btrfs && btrfs_subvols_in_dir(m->store_fd, &subvols) >= 0 && m->quota_enabled)
                (void) btrfs_qgroup_usage_all(m->store_fd, &usage);

        while ((de = readdir(d))) {
                Image *img = NULL;

                if (de->d_type != DT_DIR && de->d_type != DT_UNKNOWN)
                        continue;
                if (!image_name_is_valid(de->d_name))
                        continue; /* hidden temporaries and foreign names */
                if (image_list_entry(m, de->d_name, subvols, usage, &img) >= 0)
                        g_ptr_array_add(images, img);
        }
        closedir(d);

        g_ptr_array_sort(images, image_compare);
        *ret = g_steal_pointer(&images);
        return 0;
}

int image_find_origin(Manager *m, const Image *img, GPtrArray *all, char **ret)
{
        g_autoptr(GPtrArray) owned = NULL;
        static const uint8_t zero[16];

        *ret = NULL;
        if (!img->has_uuid || memcmp(img->parent_uuid, zero, 16) == 0)
                return 0;
        if (!all) {
                const char *hint;
                char hex[33];

                /* Usually the origin was seen before (a clone's source is loaded to check it exists):
                 * one image to load instead of all of them, if it still is what it was. */
                uuid_to_hex(img->parent_uuid, hex);
                hint = g_hash_table_lookup(m->uuid_hints, hex);
                if (hint) {
                        _cleanup_image_ Image *o = NULL;
                        if (image_load(m, hint, &o) >= 0 && o->has_uuid &&
                            memcmp(o->uuid, img->parent_uuid, 16) == 0) {
                                *ret = strdup(o->name);
                                return *ret ? 1 : -ENOMEM;
                        }
                }
                int k = image_list(m, &owned);
                if (k < 0)
                        return k;
                all = owned;
                for (guint i = 0; i < all->len; i++)
                        uuid_hint_note(m, all->pdata[i]);
        }
        for (guint i = 0; i < all->len; i++) {
                const Image *o = all->pdata[i];
                if (o->has_uuid && memcmp(o->uuid, img->parent_uuid, 16) == 0) {
                        *ret = strdup(o->name);
                        return *ret ? 1 : -ENOMEM;
                }
        }
        return 0;
}

GVariant *image_read_recipe(Manager *m, const Image *img)
{
        _cleanup_close_ int fd = image_open(m, img->name);
        char buf[8192];
        ssize_t n;
        GVariant *v;

        if (fd < 0)
                return NULL;
        n = fgetxattr(fd, RECIPE_XATTR, buf, sizeof buf - 1);
        if (n <= 0)
                return NULL;
        buf[n] = '\0';
        v = g_variant_parse(G_VARIANT_TYPE_VARDICT, buf, NULL, NULL, NULL);
        return v ? g_variant_ref_sink(v) : NULL;
}

bool image_is_template(Manager *m, const Image *img)
{
        g_autoptr(GVariant) recipe = image_read_recipe(m, img);
        g_autoptr(GVariant) uuid = NULL;
        char hex[33];

        if (!recipe || !img->read_only)
                return false;
        if (!img->has_uuid)
                return true;
        /* A snapshot inherits the xattr of its source: only the subvolume the recipe was written for
         * is the template itself. */
        uuid = g_variant_lookup_value(recipe, "uuid", G_VARIANT_TYPE_STRING);
        if (!uuid)
                return false;
        uuid_to_hex(img->uuid, hex);
        return streq(g_variant_get_string(uuid, NULL), hex);
}

static int open_in_root(int root_fd, const char *path)
{
        struct open_how how = {
                .flags = O_RDONLY | O_CLOEXEC | O_NOCTTY,
                .resolve = RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS | RESOLVE_NO_XDEV,
        };
        long fd = syscall(SYS_openat2, root_fd, path, &how, sizeof how);
        return fd < 0 ? -errno : (int) fd;
}

int image_read_os_release(Manager *m, const char *name, GPtrArray **ret)
{
        g_autoptr(GPtrArray) kv = g_ptr_array_new_with_free_func(g_free);
        _cleanup_close_ int root = image_open(m, name);
        _cleanup_close_ int fd = -1;
        _cleanup_fclose_ FILE *f = NULL;
        char line[4096];
        struct stat st;

        if (root < 0)
                return root;
        /* Links inside the image resolve inside it (usr/lib/os-release usually is one). */
        fd = open_in_root(root, "etc/os-release");
        if (fd < 0)
                fd = open_in_root(root, "usr/lib/os-release");
        if (fd < 0) {
                *ret = g_steal_pointer(&kv);
                return 0;
        }
        if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) || st.st_size > 64 * 1024) {
                *ret = g_steal_pointer(&kv);
                return 0;
        }
        f = fdopen(fd, "r");
        if (!f)
                return -errno;
        fd = -1;
        while (fgets(line, sizeof line, f)) {
                char *eq, *value;

                g_strstrip(line);
                if (line[0] == '\0' || line[0] == '#')
                        continue;
                eq = strchr(line, '=');
                if (!eq || eq == line)
                        continue;
                *eq = '\0';
                value = g_shell_unquote(eq + 1, NULL);
                if (!value || !g_utf8_validate(line, -1, NULL) || !g_utf8_validate(value, -1, NULL)) {
                        g_free(value);
                        continue;
                }
                g_ptr_array_add(kv, g_strdup(line));
                g_ptr_array_add(kv, value);
        }
        *ret = g_steal_pointer(&kv);
        return 0;
}

char *store_temp_name(const char *name)
{
        char hex[17];
        char *s;

        random_hex(hex, 16);
        if (asprintf(&s, STORE_TEMP_PREFIX "%s-%s", name, hex) < 0)
                return NULL;
        return s;
}

/* Run a command inside the store, with paths relative to it. Only from a child process. */
static int run_in_store(int store_fd, char *const argv[])
{
        pid_t pid = safe_fork(false);
        int status;

        if (pid < 0)
                return (int) pid;
        if (pid == 0) {
                int null = open("/dev/null", O_RDWR | O_CLOEXEC);
                if (fchdir(store_fd) < 0)
                        _exit(126);
                if (null >= 0) {
                        (void) dup2(null, STDIN_FILENO);
                        (void) dup2(null, STDOUT_FILENO);
                }
                execvp(argv[0], argv);
                _exit(127);
        }
        while (waitpid(pid, &status, 0) < 0)
                if (errno != EINTR)
                        return -errno;
        return WIFEXITED(status) ? WEXITSTATUS(status) : 128;
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


int image_set_read_only_fd(int fd, bool read_only)
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

int image_clone_now(int store_fd, bool is_btrfs, const char *source, const char *new_name, bool read_only,
                    char *err, size_t errlen)
{
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
                int flags = BTRFS_UTIL_CREATE_SNAPSHOT_RECURSIVE;
                enum btrfs_util_error e;

                if (read_only)
                        flags = BTRFS_UTIL_CREATE_SNAPSHOT_READ_ONLY; /* a read-only one cannot be recursive */
                e = btrfs_util_create_snapshot_fd2(src, store_fd, tmp, flags, NULL, NULL);
                if (e != BTRFS_UTIL_OK) {
                        k = errno ? errno : EIO;
                        (void) store_remove_tree(store_fd, tmp);
                        return errbuf_set(err, errlen, k, "Cannot snapshot image %s: %s", source,
                                    btrfs_util_strerror(e));
                }
        } else {
                k = copy_tree(store_fd, is_btrfs, source, tmp);
                if (k < 0) {
                        struct statvfs sv;
                        /* cp only says it failed; a store with (almost) nothing left says why. */
                        bool full = fstatvfs(store_fd, &sv) >= 0 &&
                                    (uint64_t) sv.f_bavail * sv.f_frsize < (UINT64_C(4) << 20);
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
                        (void) image_set_read_only_fd(dst, false);
        }

        k = rename_noreplace(store_fd, tmp, new_name);
        if (k < 0) {
                (void) store_remove_tree(store_fd, tmp);
                if (k == -EEXIST)
                        return errbuf_set(err, errlen, EEXIST, "An image named %s already exists", new_name);
                return errbuf_set(err, errlen, -k, "Cannot put the clone in place as %s: %s", new_name, strerror(-k));
        }
        if (dst >= 0 && read_only) {
                k = image_set_read_only_fd(dst, true);
                if (k < 0) {
                        (void) store_remove_tree(store_fd, new_name);
                        return errbuf_set(err, errlen, -k, "Cannot mark the copy %s read-only: %s", new_name,
                                    strerror(-k));
                }
        }
        return 0;
}

int image_remove_now(int store_fd, bool is_btrfs, const char *name, char *err, size_t errlen)
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
        k = store_remove_tree(store_fd, tmp);
        if (k < 0)
                log_warning_errno(k, "Removed image %s, but its data at %s remains until the next start", name,
                                  tmp);
        return 0;
}

int image_rename_now(int store_fd, const char *name, const char *new_name, char *err, size_t errlen)
{
        /* A read-only directory image carries the immutable flag, which forbids the rename: lift it
         * around the rename, as machined does, and put it back on whichever name the image has. */
        bool was_immutable = directory_set_immutable_at(store_fd, name, false) > 0;
        int k = rename_noreplace(store_fd, name, new_name);

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

int image_set_read_only_now(int store_fd, const char *name, bool read_only, char *err, size_t errlen)
{
        _cleanup_close_ int fd = openat(store_fd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        int k;

        if (fd < 0)
                return errbuf_set(err, errlen, ENOENT, "No image named %s", name);
        k = image_set_read_only_fd(fd, read_only);
        if (k < 0)
                return errbuf_set(err, errlen, -k, "Cannot mark %s %s: %s", name, read_only ? "read-only" : "writable",
                            strerror(-k));
        return 0;
}
