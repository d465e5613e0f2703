/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <fcntl.h>
#include <linux/btrfs.h>
#include <linux/openat2.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include <glib.h>

#include "btrfs-diff.h"
#include "btrfs-send.h"
#include "btrfs-util.h"
#include "util.h"

/* Objects one diff follows: a stream that touches more (two unrelated trees, say) is answered -E2BIG
 * rather than held in memory; no caller could take that many changes in one answer anyway. */
#define DIFF_ENTRIES_MAX 1000000
/* How deep the listing of a renamed directory goes. */
#define DIFF_WALK_MAX_DEPTH 256

/* One object the stream touched: where it is now (NULL once removed) and where it was in the base
 * (NULL if the stream made it). */
typedef struct Entry {
        char *cur;
        char *base;
        mode_t type; /* S_IFMT bits; 0 while unknown */
        bool modified;
} Entry;

typedef struct Diff {
        int base_fd, image_fd;
        GPtrArray *entries;  /* Entry*, owned */
        GHashTable *by_path; /* cur → Entry*, the live ones */
} Diff;

static void entry_free(void *p)
{
        Entry *e = p;
        g_free(e->cur);
        g_free(e->base);
        g_free(e);
}

/* The type of @path below @root_fd, resolved without leaving it or following a link; 0 if none. */
static mode_t lstat_beneath(int root_fd, const char *path)
{
        struct open_how how = {
                .flags = O_PATH | O_NOFOLLOW | O_CLOEXEC,
                .resolve = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS | RESOLVE_NO_XDEV,
        };
        _cleanup_close_ int fd = -1;
        struct stat st;

        fd = openat2_retry(root_fd, path, &how);
        if (fd < 0 || fstat(fd, &st) < 0)
                return 0;
        return st.st_mode & S_IFMT;
}

static Entry *entry_add(Diff *d, const char *cur, const char *base, mode_t type)
{
        Entry *e;

        if (d->entries->len >= DIFF_ENTRIES_MAX)
                return NULL;
        e = g_new0(Entry, 1);

        e->cur = g_strdup(cur);
        e->base = g_strdup(base);
        e->type = type;
        g_ptr_array_add(d->entries, e);
        if (cur)
                g_hash_table_replace(d->by_path, e->cur, e);
        return e;
}

static void entry_detach(Diff *d, Entry *e)
{
        if (!e->cur)
                return;
        g_hash_table_remove(d->by_path, e->cur);
        g_free(e->cur);
        e->cur = NULL;
}

/* The entry for what the stream now calls @path, made on first sight: its base path is @path with
 * the nearest touched ancestor's move undone. */
static Entry *entry_resolve(Diff *d, const char *path)
{
        g_autofree char *base = NULL;
        Entry *e = g_hash_table_lookup(d->by_path, path), *a = NULL;
        size_t n;

        if (e)
                return e;
        for (n = strlen(path); n > 0; n--) {
                if (path[n] != '/')
                        continue;
                g_autofree char *prefix = g_strndup(path, n);
                a = g_hash_table_lookup(d->by_path, prefix);
                if (a)
                        break;
        }
        if (!a)
                base = g_strdup(path);
        else if (a->base) /* beneath a new directory, it is new too */
                base = g_strconcat(a->base, path + n, NULL);
        /* The type is looked up when it matters (a rename), not for every change. */
        return entry_add(d, path, base, 0);
}

static void entry_move(Diff *d, Entry *e, const char *to)
{
        g_autofree char *from = e->cur;
        size_t from_len = strlen(from);
        Entry *there = g_hash_table_lookup(d->by_path, to);

        if (there && there != e)
                entry_detach(d, there);
        g_hash_table_remove(d->by_path, from);
        e->cur = g_strdup(to);
        g_hash_table_replace(d->by_path, e->cur, e);

        if (e->type == 0 && e->base)
                e->type = lstat_beneath(d->base_fd, e->base);
        if (e->type != S_IFDIR)
                return;
        /* What was touched beneath a moved directory moves with it. */
        for (guint i = 0; i < d->entries->len; i++) {
                Entry *c = d->entries->pdata[i];
                if (!c->cur || c == e || strncmp(c->cur, from, from_len) != 0 || c->cur[from_len] != '/')
                        continue;
                g_hash_table_remove(d->by_path, c->cur);
                char *moved = g_strconcat(to, c->cur + from_len, NULL);
                g_free(c->cur);
                c->cur = moved;
                g_hash_table_replace(d->by_path, c->cur, c);
        }
}

static mode_t cmd_type(uint16_t cmd, uint64_t mode)
{
        switch (cmd) {
        case BTRFS_SEND_C_MKFILE:
                return S_IFREG;
        case BTRFS_SEND_C_MKDIR:
                return S_IFDIR;
        case BTRFS_SEND_C_MKFIFO:
                return S_IFIFO;
        case BTRFS_SEND_C_MKSOCK:
                return S_IFSOCK;
        case BTRFS_SEND_C_SYMLINK:
                return S_IFLNK;
        case BTRFS_SEND_C_MKNOD:
                return (mode_t) mode & S_IFMT;
        default:
                return 0;
        }
}

static int diff_apply(Diff *d, const BtrfsSendCmd *c)
{
        Entry *e;

        switch (c->cmd) {
        case BTRFS_SEND_C_MKFILE:
        case BTRFS_SEND_C_MKDIR:
        case BTRFS_SEND_C_MKNOD:
        case BTRFS_SEND_C_MKFIFO:
        case BTRFS_SEND_C_MKSOCK:
        case BTRFS_SEND_C_SYMLINK:
                e = g_hash_table_lookup(d->by_path, c->path);
                if (e)
                        entry_detach(d, e);
                return entry_add(d, c->path, NULL, cmd_type(c->cmd, c->mode)) ? 0 : -E2BIG;
        case BTRFS_SEND_C_LINK:
                e = g_hash_table_lookup(d->by_path, c->path);
                if (e)
                        entry_detach(d, e);
                return entry_add(d, c->path, NULL, 0) ? 0 : -E2BIG;
        case BTRFS_SEND_C_RENAME:
                e = entry_resolve(d, c->path);
                if (!e)
                        return -E2BIG;
                entry_move(d, e, c->path_to);
                return 0;
        case BTRFS_SEND_C_UNLINK:
        case BTRFS_SEND_C_RMDIR:
                e = entry_resolve(d, c->path);
                if (!e)
                        return -E2BIG;
                entry_detach(d, e);
                return 0;
        case BTRFS_SEND_C_WRITE:
        case BTRFS_SEND_C_CLONE:
        case BTRFS_SEND_C_TRUNCATE:
        case BTRFS_SEND_C_UPDATE_EXTENT:
        case BTRFS_SEND_C_CHMOD:
        case BTRFS_SEND_C_CHOWN:
        case BTRFS_SEND_C_SET_XATTR:
        case BTRFS_SEND_C_REMOVE_XATTR:
                if (!c->path[0])
                        return 0; /* the root itself */
                e = entry_resolve(d, c->path);
                if (!e)
                        return -E2BIG;
                e->modified = true;
                return 0;
        default: /* subvol, snapshot, utimes */
                return 0;
        }
}

/* Everything beneath the directory @path of @root_fd, added to @set as paths. */
int btrfs_diff_walk_into(int root_fd, const char *path, GHashTable *set, int depth)
{
        struct open_how how = {
                .flags = O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC,
                .resolve = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS | RESOLVE_NO_XDEV,
        };
        int fd;
        DIR *dir;
        struct dirent *de;

        if (depth > DIFF_WALK_MAX_DEPTH)
                return -ELOOP;
        fd = openat2_retry(root_fd, path, &how);
        if (fd < 0)
                return errno == EXDEV ? 0 : -errno; /* a nested subvolume: not part of this one */
        dir = fdopendir(fd);
        if (!dir) {
                int k = -errno;
                close(fd);
                return k;
        }
        while ((errno = 0, de = readdir(dir))) {
                if (dot_or_dot_dot(de->d_name))
                        continue;
                char *child = g_strconcat(path, "/", de->d_name, NULL);
                g_hash_table_add(set, child);
                if (de->d_type == DT_DIR) {
                        int k = btrfs_diff_walk_into(root_fd, child, set, depth + 1);
                        if (k < 0) {
                                closedir(dir);
                                return k;
                        }
                }
        }
        closedir(dir);
        return 0;
}

/* The kernel writes the stream a command at a time: read it in big chunks, not a read per field. */
typedef struct BufferedFd {
        int fd;
        size_t pos, len;
        uint8_t buf[256 * 1024];
} BufferedFd;

static ssize_t buffered_read(void *userdata, void *buf, size_t n)
{
        BufferedFd *b = userdata;

        if (b->pos == b->len) {
                ssize_t l;
                do
                        l = read(b->fd, b->buf, sizeof b->buf);
                while (l < 0 && errno == EINTR);
                if (l <= 0)
                        return l < 0 ? -errno : 0;
                b->pos = 0;
                b->len = (size_t) l;
        }
        if (n > b->len - b->pos)
                n = b->len - b->pos;
        memcpy(buf, b->buf + b->pos, n);
        b->pos += n;
        return (ssize_t) n;
}

static int path_cmp(const void *a, const void *b)
{
        return strcmp(*(const char *const *) a, *(const char *const *) b);
}

static int diff_report(Diff *d, btrfs_diff_cb cb, void *userdata)
{
        g_autoptr(GHashTable) had = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
        g_autoptr(GHashTable) now = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
        g_autoptr(GHashTable) modified = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
        int k;

        for (guint i = 0; i < d->entries->len; i++) {
                Entry *e = d->entries->pdata[i];
                bool moved = !streq_ptr(e->cur, e->base);

                if (e->base && moved) {
                        g_hash_table_add(had, g_strdup(e->base));
                        if (e->type == S_IFDIR && e->cur) {
                                k = btrfs_diff_walk_into(d->base_fd, e->base, had, 0);
                                if (k < 0)
                                        return k;
                        }
                }
                if (e->cur && moved) {
                        g_hash_table_add(now, g_strdup(e->cur));
                        if (e->base && e->type == S_IFDIR) {
                                k = btrfs_diff_walk_into(d->image_fd, e->cur, now, 0);
                                if (k < 0)
                                        return k;
                        }
                }
                if (e->cur && !moved && e->modified)
                        g_hash_table_add(modified, g_strdup(e->cur));
        }

        return btrfs_diff_report_sets(d->base_fd, d->image_fd, had, now, modified, cb, userdata);
}

int btrfs_diff_report_sets(int base_fd, int image_fd, GHashTable *had, GHashTable *now, GHashTable *modified,
                           btrfs_diff_cb cb, void *userdata)
{
        g_autoptr(GHashTable) all = g_hash_table_new(g_str_hash, g_str_equal);
        g_autofree const char **paths = NULL;
        guint n = 0;
        int k;

        GHashTable *sets[] = {had, now, modified};
        for (size_t s = 0; s < ELEMENTSOF(sets); s++) {
                GHashTableIter it;
                void *key;
                g_hash_table_iter_init(&it, sets[s]);
                while (g_hash_table_iter_next(&it, &key, NULL))
                        g_hash_table_add(all, key);
        }
        paths = (const char **) g_hash_table_get_keys_as_array(all, &n);
        qsort(paths, n, sizeof *paths, path_cmp);

        for (guint i = 0; i < n; i++) {
                const char *p = paths[i];
                bool h = g_hash_table_contains(had, p), w = g_hash_table_contains(now, p);
                char change;

                if (h && w) {
                        mode_t a = lstat_beneath(base_fd, p), b = lstat_beneath(image_fd, p);
                        change = a != b ? 'T' : 'M';
                } else if (h)
                        change = 'D';
                else if (w)
                        change = 'A';
                else
                        change = 'M';
                k = cb(change, p, userdata);
                if (k < 0)
                        return k;
        }
        return 0;
}

static int check_read_only_subvolume(int fd, BtrfsSubvolInfo *ret)
{
        int k = fd_is_subvolume(fd);

        if (k < 0)
                return k;
        if (k == 0)
                return -EINVAL;
        k = btrfs_subvol_info_fd(fd, ret);
        if (k < 0)
                return k;
        return ret->read_only ? 0 : -EINVAL;
}

int btrfs_diff(int base_fd, int image_fd, btrfs_diff_cb cb, void *userdata)
{
        _cleanup_(btrfs_send_reader_freep) BtrfsSendReader *r = NULL;
        _cleanup_close_ int rfd = -1, wfd = -1;
        _cleanup_free_ BufferedFd *in = NULL;
        BtrfsSubvolInfo base_info, image_info;
        int pipefd[2], k, status;
        BtrfsSendCmd cmd;
        Diff d = {
                .base_fd = base_fd,
                .image_fd = image_fd,
        };
        pid_t pid;

        k = check_read_only_subvolume(base_fd, &base_info);
        if (k < 0)
                return k;
        k = check_read_only_subvolume(image_fd, &image_info);
        if (k < 0)
                return k;

        in = calloc(1, sizeof *in);
        if (!in)
                return -ENOMEM;
        if (pipe2(pipefd, O_CLOEXEC) < 0)
                return -errno;
        rfd = pipefd[0];
        wfd = pipefd[1];
        /* Room for the sender to run ahead (best effort: the pipe's default is 64 KiB). */
        (void) fcntl(wfd, F_SETPIPE_SZ, 1024 * 1024);

        pid = safe_fork(false);
        if (pid < 0)
                return (int) pid;
        if (pid == 0) {
                /* Async-signal-safe calls only (see safe_fork()). */
                __u64 clone_sources[1] = {base_info.id};
                struct btrfs_ioctl_send_args args = {
                        .send_fd = wfd,
                        .clone_sources_count = 1,
                        .clone_sources = clone_sources,
                        .parent_root = base_info.id,
                        .flags = BTRFS_SEND_FLAG_NO_FILE_DATA,
                };
                (void) close(rfd);
                if (ioctl(image_fd, BTRFS_IOC_SEND, &args) < 0)
                        _exit(errno > 0 && errno < 256 ? errno : EIO);
                _exit(0);
        }
        wfd = safe_close(wfd);

        d.entries = g_ptr_array_new_with_free_func(entry_free);
        d.by_path = g_hash_table_new(g_str_hash, g_str_equal);

        in->fd = rfd;
        k = btrfs_send_reader_new(buffered_read, in, &r);
        while (k >= 0) {
                k = btrfs_send_reader_next(r, &cmd);
                if (k <= 0)
                        break;
                k = diff_apply(&d, &cmd);
        }
        if (k < 0 && r)
                log_debug("Reading the send stream for a diff: %s", btrfs_send_reader_error(r));

        /* The sender ends on its own once it has written everything, or on a closed pipe. */
        rfd = safe_close(rfd);
        if (k < 0)
                (void) kill(pid, SIGKILL);
        while (waitpid(pid, &status, 0) < 0)
                if (errno != EINTR) {
                        status = 0;
                        if (k >= 0)
                                k = -errno;
                        break;
                }
        if (k >= 0 && WIFEXITED(status) && WEXITSTATUS(status) != 0)
                k = -WEXITSTATUS(status);
        else if (k >= 0 && !WIFEXITED(status))
                k = -EIO;

        if (k >= 0)
                k = diff_report(&d, cb, userdata);

        g_hash_table_unref(d.by_path);
        g_ptr_array_unref(d.entries);
        return k < 0 ? k : 0;
}
