/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <dirent.h>
#include <fcntl.h>
#include <linux/loop.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/wait.h>

#include "btrfs-util.h"
#include "pool.h"
#include "disk-limits.h"
#include "step.h"

static int mkdir_parents(const char *path, mode_t mode)
{
        _cleanup_free_ char *p = strdup(path);

        if (!p)
                return -ENOMEM;
        for (char *s = p + 1; *s; s++) {
                if (*s != '/')
                        continue;
                *s = '\0';
                if (mkdir(p, 0755) < 0 && errno != EEXIST)
                        return -errno;
                *s = '/';
        }
        if (mkdir(p, mode) < 0 && errno != EEXIST)
                return -errno;
        return 0;
}

static int dir_is_empty(const char *path)
{
        DIR *d = opendir(path);
        struct dirent *de;
        int empty = 1;

        if (!d)
                return -errno;
        while ((de = readdir(d)))
                if (!dot_or_dot_dot(de->d_name)) {
                        empty = 0;
                        break;
                }
        closedir(d);
        return empty;
}

static int path_is_btrfs(const char *path)
{
        _cleanup_close_ int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        return fd < 0 ? -errno : fd_is_btrfs(fd);
}

/* nosuid, nodev: root in a user's machine writes files owned by uid 0 on disk, setuid bits included
 * (see manager_open_store()); nothing on the pool may ever work as such on the host. */
static int pool_mount(const char *raw, const char *store)
{
        char *argv[] = {(char *) "mount",
                        (char *) "-t",
                        (char *) "btrfs",
                        (char *) "-o",
                        (char *) "loop,noatime,nosuid,nodev",
                        (char *) raw,
                        (char *) store,
                        NULL};
        int k = run_command(argv);

        if (k != 0)
                return log_error_errno(k < 0 ? k : EIO, "Cannot mount the pool %s on %s (mount exited %d)", raw, store,
                                       k);
        return 0;
}

static int pool_create(const char *raw)
{
        _cleanup_close_ int fd = -1;
        int k;

        fd = open(raw, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
        if (fd < 0)
                return log_error_errno(errno, "Cannot create %s", raw);
        if (ftruncate(fd, (off_t) POOL_INITIAL_SIZE) < 0) {
                k = -errno;
                (void) unlink(raw);
                return log_error_errno(k, "Cannot size %s", raw);
        }
        fd = safe_close(fd);

        char *argv[] = {(char *) "mkfs.btrfs", (char *) "-q", (char *) "-L", (char *) "stamp-pool", (char *) raw, NULL};
        k = run_command(argv);
        if (k != 0) {
                (void) unlink(raw);
                return log_error_errno(k < 0 ? k : EIO, "mkfs.btrfs on %s failed (exit %d)", raw, k);
        }
        return 0;
}

int pool_setup(Manager *m)
{
        _cleanup_free_ char *raw = NULL;
        bool made = false;
        int k;

        k = mkdir_parents(m->store, 0700);
        if (k < 0)
                return log_error_errno(k, "Cannot create the image store %s", m->store);
        if (m->no_pool)
                return 0;

        if (asprintf(&raw, "%s.raw", m->store) < 0)
                return -ENOMEM;

        k = path_is_btrfs(m->store);
        if (k < 0)
                return log_error_errno(k, "Cannot check %s", m->store);
        if (k > 0) {
                /* Already btrfs. Ours if it is the mount of our raw file (grown as needed). */
                if (access(raw, F_OK) == 0)
                        m->pool_raw = TAKE_PTR(raw);
                return 0;
        }

        k = dir_is_empty(m->store);
        if (k < 0)
                return log_error_errno(k, "Cannot read %s", m->store);
        if (k == 0) {
                log_warning("%s is not on btrfs and not empty: no pool is made; clones will be copies.", m->store);
                return 0;
        }

        if (access(raw, F_OK) < 0) {
                k = pool_create(raw);
                if (k < 0) {
                        log_warning("Continuing without a btrfs pool; clones will be copies.");
                        return 0;
                }
                made = true;
                log_info("Created the btrfs pool %s.", raw);
        }
        k = pool_mount(raw, m->store);
        if (k < 0) {
                if (made)
                        (void) unlink(raw);
                log_warning("Continuing without a btrfs pool; clones will be copies.");
                return 0;
        }
        if (made) {
                _cleanup_close_ int fd = open(m->store, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
                bool simple = false;
                k = fd < 0 ? -errno : btrfs_quota_enable(fd, &simple);
                if (k < 0)
                        log_warning_errno(k, "Cannot enable quota groups on %s; usage will be unknown", m->store);
                else
                        log_info("Enabled %s on %s.", simple ? "simple quotas" : "quota groups", m->store);
                if (fd >= 0)
                        (void) fchmod(fd, 0700);
        }
        log_info("Mounted the btrfs pool %s on %s.", raw, m->store);
        m->pool_raw = TAKE_PTR(raw);
        return 0;
}

int pool_get_usage(Manager *m, uint64_t *ret_usage, uint64_t *ret_limit)
{
        struct statvfs sv;

        if (fstatvfs(m->store_fd, &sv) < 0)
                return -errno;
        *ret_limit = (uint64_t) sv.f_blocks * sv.f_frsize;
        if (pool_limit_get(m) != UINT64_MAX)
                *ret_limit = pool_limit_get(m); /* SetPoolLimit's: it grows up to that */
        *ret_usage = (uint64_t) (sv.f_blocks - sv.f_bfree) * sv.f_frsize;
        return 0;
}

/* The loop device the store is mounted from, from mountinfo. */
static int store_loop_device(const char *store, char **ret)
{
        _cleanup_fclose_ FILE *f = fopen("/proc/self/mountinfo", "re");
        char line[4096];
        char *found = NULL;

        if (!f)
                return -errno;
        while (fgets(line, sizeof line, f)) {
                char mnt[PATH_MAX], source[PATH_MAX];
                char *sep = strstr(line, " - ");
                if (!sep || sscanf(line, "%*s %*s %*s %*s %4095s", mnt) != 1)
                        continue;
                if (!streq(mnt, store) || sscanf(sep + 3, "%*s %4095s", source) != 1)
                        continue;
                free(found);
                found = strdup(source); /* the last mount on the path wins */
        }
        if (!found)
                return -ENOENT;
        *ret = found;
        return 0;
}

static int pool_grow_now(const char *raw, const char *store, int store_fd, uint64_t new_size)
{
        _cleanup_close_ int raw_fd = -1, loop_fd = -1;
        _cleanup_free_ char *loopdev = NULL;
        int k;

        raw_fd = open(raw, O_RDWR | O_CLOEXEC | O_NOFOLLOW);
        if (raw_fd < 0)
                return -errno;
        if (ftruncate(raw_fd, (off_t) new_size) < 0)
                return -errno;
        k = store_loop_device(store, &loopdev);
        if (k < 0)
                return k;
        loop_fd = open(loopdev, O_RDWR | O_CLOEXEC);
        if (loop_fd < 0)
                return -errno;
        if (ioctl(loop_fd, LOOP_SET_CAPACITY, 0) < 0)
                return -errno;
        return btrfs_resize_max(store_fd);
}

/* The step that grows the pool: RAW STORE STORE-FD NEW-SIZE. */
int pool_grow_main(int argc, char *argv[])
{
        int store_fd = -1, k;
        uint64_t size;
        char *end;

        errno = 0;
        if (argc != 4 || step_parse_fd(argv[2], &store_fd) < 0 || store_fd < 0 ||
            (size = strtoull(argv[3], &end, 10), errno || *end)) {
                log_error("Invalid arguments for growing the pool.");
                return EXIT_FAILURE;
        }
        k = pool_grow_now(argv[0], argv[1], store_fd, size);
        if (k < 0)
                log_warning_errno(k, "Cannot grow the pool %s", argv[0]);
        return k < 0 ? EXIT_FAILURE : EXIT_SUCCESS;
}

static pid_t grow_pid;
static sd_event_source *grow_source;

static int on_grow_done(sd_event_source *s, const siginfo_t *si, void *userdata)
{
        grow_pid = 0;
        if (si->si_code != CLD_EXITED || si->si_status != 0)
                log_warning("Growing the pool failed (status %d).", si->si_status);
        grow_source = sd_event_source_disable_unref(grow_source);
        return 0;
}

void pool_maybe_grow(Manager *m)
{
        struct statvfs pool, host;
        struct stat st;
        uint64_t avail, size, grow, host_avail;
        _cleanup_free_ char *dir = NULL;
        char fd_arg[16], size_arg[32];
        char *slash;
        pid_t pid;

        if (!m->pool_raw || grow_pid > 0)
                return;
        if (fstatvfs(m->store_fd, &pool) < 0 || stat(m->pool_raw, &st) < 0)
                return;
        avail = (uint64_t) pool.f_bavail * pool.f_frsize;
        size = (uint64_t) st.st_size;
        if (avail >= POOL_FREE_MIN && avail >= size / 5)
                return;

        dir = strdup(m->pool_raw);
        if (!dir || !(slash = strrchr(dir, '/')))
                return;
        *(slash == dir ? slash + 1 : slash) = '\0';
        if (statvfs(dir, &host) < 0)
                return;
        host_avail = (uint64_t) host.f_bavail * host.f_frsize;
        grow = MAX(POOL_FREE_MIN, size / 2);
        if (pool_limit_get(m) != UINT64_MAX) { /* never past SetPoolLimit's limit */
                if (size >= pool_limit_get(m))
                        return;
                grow = MIN(grow, pool_limit_get(m) - size);
        }
        if (host_avail < POOL_HOST_RESERVE + grow) {
                if (host_avail <= POOL_HOST_RESERVE)
                        return;
                grow = host_avail - POOL_HOST_RESERVE;
        }

        log_info("Pool %s has %" PRIu64 " MiB free; growing it by %" PRIu64 " MiB.", m->pool_raw, avail >> 20,
                 grow >> 20);
        snprintf(fd_arg, sizeof fd_arg, "%d", m->store_fd);
        snprintf(size_arg, sizeof size_arg, "%" PRIu64, size + grow);
        pid = step_spawn("pool-grow", (char *[]) {m->pool_raw, m->store, fd_arg, size_arg, NULL}, &m->store_fd, 1,
                         true);
        if (pid < 0)
                return;
        grow_pid = pid;
        if (sd_event_add_child(m->event, &grow_source, pid, WEXITED, on_grow_done, NULL) < 0) {
                (void) waitpid(pid, NULL, 0);
                grow_pid = 0;
        }
}
