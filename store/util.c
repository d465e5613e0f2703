/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <fcntl.h>
#include <limits.h>
#include <linux/openat2.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <syslog.h>
#include <time.h>

#include <systemd/sd-journal.h>

#include "util.h"

int log_max_level = LOG_LEVEL_INFO;

static enum { LOG_TARGET_STDERR, LOG_TARGET_JOURNAL, LOG_TARGET_SYSLOG } log_target = LOG_TARGET_STDERR;
static const char *log_ident = "stampd";

#define JOURNAL_SOCKET "/run/systemd/journal/socket"

void log_open(const char *ident)
{
        struct stat st;

        /* A standard error that leads somewhere (a terminal, a file, a pipe, the journal's stream
         * under systemd) is where the log goes. Started by dbus-daemon without systemd, it is
         * /dev/null or closed: then to the journal if one runs, else to syslog. */
        log_ident = ident;
        if (fstat(STDERR_FILENO, &st) >= 0 && !(S_ISCHR(st.st_mode) && st.st_rdev == makedev(1, 3)))
                return;
        if (access(JOURNAL_SOCKET, W_OK) >= 0) {
                log_target = LOG_TARGET_JOURNAL;
                return;
        }
        openlog(ident, LOG_PID | LOG_NDELAY, LOG_DAEMON);
        log_target = LOG_TARGET_SYSLOG;
}

int log_level_from_string(const char *s)
{
        static const char *const names[] = {
                [LOG_LEVEL_ERR] = "err",   [LOG_LEVEL_WARNING] = "warning", [LOG_LEVEL_NOTICE] = "notice",
                [LOG_LEVEL_INFO] = "info", [LOG_LEVEL_DEBUG] = "debug",
        };
        for (size_t i = 0; i < ELEMENTSOF(names); i++)
                if (names[i] && streq(names[i], s))
                        return (int) i;
        return -EINVAL;
}

static void log_internal(int level, int error, const char *fmt, va_list ap)
{
        char buf[2048];

        vsnprintf(buf, sizeof buf, fmt, ap);
        if (log_target == LOG_TARGET_JOURNAL) {
                if (error != 0)
                        (void) sd_journal_send("MESSAGE=%s: %s", buf, strerror(abs(error)), "PRIORITY=%d", level,
                                               "ERRNO=%d", abs(error), "SYSLOG_IDENTIFIER=%s", log_ident, NULL);
                else
                        (void) sd_journal_send("MESSAGE=%s", buf, "PRIORITY=%d", level, "SYSLOG_IDENTIFIER=%s",
                                               log_ident, NULL);
                return;
        }
        if (log_target == LOG_TARGET_SYSLOG) {
                if (error != 0)
                        syslog(level, "%s: %s", buf, strerror(abs(error)));
                else
                        syslog(level, "%s", buf);
                return;
        }
        /* "<N>" prefixes are understood by the journal when stderr is connected to it. */
        if (error != 0)
                fprintf(stderr, "<%d>%s: %s\n", level, buf, strerror(abs(error)));
        else
                fprintf(stderr, "<%d>%s\n", level, buf);
}

void log_full(int level, const char *fmt, ...)
{
        va_list ap;

        if (level > log_max_level)
                return;
        va_start(ap, fmt);
        log_internal(level, 0, fmt, ap);
        va_end(ap);
}

int log_full_errno(int level, int error, const char *fmt, ...)
{
        va_list ap;

        if (level <= log_max_level) {
                va_start(ap, fmt);
                log_internal(level, error, fmt, ap);
                va_end(ap);
        }
        return -abs(error);
}

uint64_t timespec_to_usec(const struct timespec *ts)
{
        return (uint64_t) ts->tv_sec * USEC_PER_SEC + (uint64_t) ts->tv_nsec / NSEC_PER_USEC;
}

uint64_t now_usec(clockid_t clock)
{
        struct timespec ts;

        clock_gettime(clock, &ts);
        return timespec_to_usec(&ts);
}

DIR *opendir_at(int dir_fd, const char *path)
{
        int fd = openat(dir_fd, path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        DIR *d;

        if (fd < 0)
                return NULL;
        d = fdopendir(fd);
        if (!d) {
                int e = errno;
                close(fd);
                errno = e;
        }
        return d;
}

static void tree_walk_at(int dir_fd, unsigned depth, unsigned max_depth, TreeVisit visit, void *userdata)
{
        struct dirent *de;
        DIR *d;

        if (depth > max_depth || !(d = opendir_at(dir_fd, ".")))
                return;
        while ((de = readdir(d))) {
                struct stat st;
                if (dot_or_dot_dot(de->d_name) || fstatat(dirfd(d), de->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0)
                        continue;
                if (visit(dirfd(d), de->d_name, &st, depth, false, userdata) == TREE_SKIP || !S_ISDIR(st.st_mode))
                        continue;
                int sub = openat(dirfd(d), de->d_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
                if (sub >= 0) {
                        tree_walk_at(sub, depth + 1, max_depth, visit, userdata);
                        safe_close(sub);
                }
                (void) visit(dirfd(d), de->d_name, &st, depth, true, userdata);
        }
        closedir(d);
}

void tree_walk(int dir_fd, unsigned max_depth, TreeVisit visit, void *userdata)
{
        tree_walk_at(dir_fd, 0, max_depth, visit, userdata);
}

TreeAction tree_add_allocated(int parent_fd, const char *name, const struct stat *st, unsigned depth, bool after,
                              void *userdata)
{
        if (S_ISREG(st->st_mode))
                *(uint64_t *) userdata += (uint64_t) st->st_blocks * 512;
        return TREE_DESCEND;
}

int loop_write(int fd, const void *buf, size_t n)
{
        const uint8_t *p = buf;

        while (n > 0) {
                ssize_t k = write(fd, p, n);
                if (k < 0) {
                        if (errno == EINTR)
                                continue;
                        return -errno;
                }
                p += k;
                n -= (size_t) k;
        }
        return 0;
}

/* Each try is a walk of a few components; a system renaming without pause could keep one failing
 * for as long as it goes on, so the tries are counted. */
#define OPENAT2_TRIES 64

int openat2_retry(int dir_fd, const char *path, const struct open_how *how)
{
        for (unsigned i = 0;; i++) {
                int fd = (int) syscall(SYS_openat2, dir_fd, path, how, sizeof *how);
                if (fd >= 0 || errno != EAGAIN || i + 1 >= OPENAT2_TRIES)
                        return fd;
        }
}

int read_small_file_in_root(int root_fd, const char *path, size_t max, char **ret, size_t *ret_size)
{
        struct open_how how = {
                .flags = O_PATH | O_CLOEXEC,
                .resolve = RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS | RESOLVE_NO_XDEV,
        };
        _cleanup_close_ int path_fd = -1, fd = -1;
        _cleanup_free_ char *buf = NULL;
        char proc[64];
        struct stat st, st2;
        size_t n = 0;

        path_fd = openat2_retry(root_fd, path, &how);
        if (path_fd < 0)
                return -errno;
        if (fstat(path_fd, &st) < 0)
                return -errno;
        if (S_ISDIR(st.st_mode))
                return -EISDIR;
        if (!S_ISREG(st.st_mode))
                return -EBADFD;
        if ((uint64_t) st.st_size > max)
                return -EFBIG;

        /* Reopened through the O_PATH fd: the very inode just looked at, whatever its name points to
         * by now. */
        snprintf(proc, sizeof proc, "/proc/self/fd/%d", path_fd);
        fd = open(proc, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
        if (fd < 0)
                return -errno;
        if (fstat(fd, &st2) < 0)
                return -errno;
        if (st2.st_dev != st.st_dev || st2.st_ino != st.st_ino || !S_ISREG(st2.st_mode))
                return -EBADFD;

        buf = malloc(max + 1);
        if (!buf)
                return -ENOMEM;
        /* The size may have changed since: read at most one byte more than allowed to tell. */
        while (n <= max) {
                ssize_t k = read(fd, buf + n, max + 1 - n);
                if (k < 0) {
                        if (errno == EINTR)
                                continue;
                        return -errno;
                }
                if (k == 0)
                        break;
                n += (size_t) k;
        }
        if (n > max)
                return -EFBIG;
        buf[n] = '\0';
        if (ret_size)
                *ret_size = n;
        *ret = TAKE_PTR(buf);
        return 0;
}

int errbuf_set(char *err, size_t errlen, int error, const char *fmt, ...)
{
        va_list ap;

        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
        return -abs(error);
}

void random_hex(char *buf, size_t n_hex)
{
        static const char hex[] = "0123456789abcdef";
        uint8_t raw[32];
        size_t n = (n_hex + 1) / 2;

        if (n > sizeof raw)
                n = sizeof raw;
        if (getrandom(raw, n, 0) != (ssize_t) n)
                for (size_t i = 0; i < n; i++) /* never expected; uniqueness is all we need */
                        raw[i] = (uint8_t) (rand() ^ (int) getpid());
        for (size_t i = 0; i < n_hex && i / 2 < n; i++)
                buf[i] = hex[(raw[i / 2] >> ((i % 2) ? 0 : 4)) & 0xf];
        buf[n_hex] = '\0';
}

static int close_in_child = -1;

void safe_fork_close_in_child(int fd)
{
        close_in_child = fd;
}

pid_t safe_fork(bool new_pgrp)
{
        pid_t parent = getpid();
        pid_t pid = fork();
        sigset_t all;

        if (pid < 0)
                return -errno;
        if (pid > 0)
                return pid;

        /* The child of a threaded process (stampd runs polkit's, GDBus's and worker threads): from here
         * to the caller's exec, async-signal-safe calls only. */
        if (close_in_child >= 0)
                (void) close(close_in_child);

        /* Default dispositions and an empty mask, so exec'd tools behave normally. */
        for (int sig = 1; sig < _NSIG; sig++)
                if (sig != SIGKILL && sig != SIGSTOP)
                        (void) signal(sig, SIG_DFL);
        sigemptyset(&all);
        (void) sigprocmask(SIG_SETMASK, &all, NULL);

        if (prctl(PR_SET_PDEATHSIG, SIGKILL) < 0 || getppid() != parent)
                _exit(EXIT_FAILURE);
        if (new_pgrp)
                (void) setpgid(0, 0);
        return 0;
}

int find_executable(const char *name, char **ret)
{
        const char *path = getenv("PATH");

        if (strchr(name, '/')) {
                *ret = strdup(name);
                return *ret ? 0 : -ENOMEM;
        }
        if (isempty(path))
                path = DEFAULT_PATH;
        for (const char *p = path;;) {
                size_t n = strcspn(p, ":");
                _cleanup_free_ char *candidate = NULL;

                if (asprintf(&candidate, "%.*s%s%s", (int) n, p, n > 0 ? "/" : "", name) < 0)
                        return -ENOMEM;
                if (access(candidate, X_OK) == 0) {
                        *ret = TAKE_PTR(candidate);
                        return 0;
                }
                if (p[n] == '\0')
                        return -ENOENT;
                p += n + 1;
        }
}

int run_command_at(int dir_fd, char *const argv[], bool quiet)
{
        _cleanup_free_ char *exe = NULL;
        int status, k;
        pid_t pid;

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
                if (dir_fd >= 0 && fchdir(dir_fd) < 0)
                        _exit(126);
                if (null >= 0)
                        (void) dup2(null, STDIN_FILENO);
                (void) dup2(quiet && null >= 0 ? null : STDERR_FILENO, STDOUT_FILENO);
                execv(exe, argv);
                _exit(127);
        }
        while (waitpid(pid, &status, 0) < 0)
                if (errno != EINTR)
                        return -errno;
        if (WIFEXITED(status))
                return WEXITSTATUS(status);
        return 128 + (WIFSIGNALED(status) ? WTERMSIG(status) : 0);
}

int run_command(char *const argv[])
{
        return run_command_at(-1, argv, false);
}

int open_private_dir(int dir_fd, const char *name, bool create)
{
        struct stat st;
        int fd;

        if (create && mkdirat(dir_fd, name, 0700) < 0 && errno != EEXIST)
                return -errno;
        fd = openat(dir_fd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (fd < 0)
                return -errno;
        if (fstat(fd, &st) < 0 || st.st_uid != 0 || (st.st_mode & 0022)) {
                safe_close(fd);
                return -EPERM;
        }
        if ((st.st_mode & 0077) && fchmod(fd, 0700) < 0) {
                int k = -errno;
                safe_close(fd);
                return k;
        }
        return fd;
}

int write_file_atomic_at(int dir_fd, const char *name, const void *data, size_t size, mode_t mode, bool sync)
{
        char tmp[NAME_MAX + 1];
        _cleanup_close_ int fd = -1;
        int k;

        /* A hidden name beside it, so that a crash leaves the old file or the new one, never half. */
        snprintf(tmp, sizeof tmp, ".#%.200s.", name);
        random_hex(tmp + strlen(tmp), 16);
        fd = openat(dir_fd, tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, mode);
        if (fd < 0)
                return -errno;
        k = loop_write(fd, data, size);
        if (k >= 0 && fchmod(fd, mode) < 0) /* the umask took bits away */
                k = -errno;
        if (k >= 0 && sync && fsync(fd) < 0)
                k = -errno;
        if (k >= 0 && renameat(dir_fd, tmp, dir_fd, name) < 0)
                k = -errno;
        if (k < 0)
                (void) unlinkat(dir_fd, tmp, 0);
        return k;
}
