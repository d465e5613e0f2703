/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

#include <dirent.h>
#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

#define _cleanup_(f) __attribute__((cleanup(f)))
#define _printf_(a, b) __attribute__((format(printf, a, b)))
#define _noreturn_ __attribute__((noreturn))

#define UID_INVALID ((uid_t) -1)
#define ELEMENTSOF(x) (sizeof(x) / sizeof((x)[0]))

/* For a call whose failure is of no consequence (best effort: the error path has nothing better to
 * do), where glibc marks the result warn_unused_result and _FORTIFY_SOURCE (Debian's build flags)
 * would warn: a (void) cast does not silence that, passing the result on does. */
static inline void best_effort(long r)
{
        (void) r;
}
#define USEC_PER_SEC UINT64_C(1000000)
#define USEC_PER_MSEC UINT64_C(1000)
#define NSEC_PER_USEC UINT64_C(1000)

/* The PATH systemd gives services; stampd's when it was started without one. */
#define DEFAULT_PATH "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

/* Hand a pointer or fd over to a new owner: the cleanup of the old one sees NULL/-1. */
#define TAKE_PTR(p)                                                                                                    \
        ({                                                                                                             \
                __typeof__(p) _p = (p);                                                                                \
                (p) = NULL;                                                                                            \
                _p;                                                                                                    \
        })
#define TAKE_FD(fd)                                                                                                    \
        ({                                                                                                             \
                int _fd = (fd);                                                                                        \
                (fd) = -1;                                                                                             \
                _fd;                                                                                                   \
        })

static inline void freep(void *p)
{
        free(*(void **) p);
}
#define _cleanup_free_ _cleanup_(freep)

static inline int safe_close(int fd)
{
        if (fd >= 0) {
                int saved = errno;
                close(fd);
                errno = saved;
        }
        return -1;
}
static inline void closep(int *fd)
{
        safe_close(*fd);
}
#define _cleanup_close_ _cleanup_(closep)

static inline void fclosep(FILE **f)
{
        if (*f)
                fclose(*f);
}
#define _cleanup_fclose_ _cleanup_(fclosep)

static inline void strv_freep(char ***p)
{
        if (*p) {
                for (char **i = *p; *i; i++)
                        free(*i);
                free(*p);
        }
}
#define _cleanup_strv_free_ _cleanup_(strv_freep)

static inline bool streq_ptr(const char *a, const char *b)
{
        if (!a || !b)
                return a == b;
        return strcmp(a, b) == 0;
}
#define streq(a, b) (strcmp((a), (b)) == 0)

static inline const char *yes_no(bool b)
{
        return b ? "yes" : "no";
}

static inline bool isempty(const char *s)
{
        return !s || s[0] == '\0';
}

/* Logging: to stderr (the journal picks it up under systemd), with a level prefix; or, when stderr
 * leads nowhere (/dev/null, closed), to the journal's socket or syslog, as log_open() finds. */
enum { LOG_LEVEL_ERR = 3, LOG_LEVEL_WARNING = 4, LOG_LEVEL_NOTICE = 5, LOG_LEVEL_INFO = 6, LOG_LEVEL_DEBUG = 7 };
extern int log_max_level;
int log_level_from_string(const char *s);
/* Choose where the log goes (see above); @ident names the program in syslog. */
void log_open(const char *ident);
void log_full(int level, const char *fmt, ...) _printf_(2, 3);
int log_full_errno(int level, int error, const char *fmt, ...) _printf_(3, 4);
#define log_debug(...) log_full(LOG_LEVEL_DEBUG, __VA_ARGS__)
#define log_info(...) log_full(LOG_LEVEL_INFO, __VA_ARGS__)
#define log_notice(...) log_full(LOG_LEVEL_NOTICE, __VA_ARGS__)
#define log_warning(...) log_full(LOG_LEVEL_WARNING, __VA_ARGS__)
#define log_error(...) log_full(LOG_LEVEL_ERR, __VA_ARGS__)
#define log_error_errno(e, ...) log_full_errno(LOG_LEVEL_ERR, e, __VA_ARGS__)
#define log_warning_errno(e, ...) log_full_errno(LOG_LEVEL_WARNING, e, __VA_ARGS__)
#define log_debug_errno(e, ...) log_full_errno(LOG_LEVEL_DEBUG, e, __VA_ARGS__)

uint64_t now_usec(clockid_t clock);
uint64_t timespec_to_usec(const struct timespec *ts);

/* Write all of @buf; retries on EINTR and short writes. */
int loop_write(int fd, const void *buf, size_t n);

/* openat2(2) (@how a struct open_how), asked again while it says EAGAIN: under RESOLVE_IN_ROOT or
 * RESOLVE_BENEATH a ".." on the way fails so when any rename or mount anywhere on the system raced
 * with the walk, which says nothing of the path. An fd, or -1 with errno set, as openat2(). */
struct open_how;
int openat2_retry(int dir_fd, const char *path, const struct open_how *how);

/* A directory stream of @path below @dir_fd ("." for @dir_fd itself) on a descriptor of its own, so
 * reading it moves no other's offset. NULL with errno set on failure. */
DIR *opendir_at(int dir_fd, const char *path);

/* A walk of the tree below @dir_fd (not @dir_fd itself): @visit sees every entry, in the directory
 * @parent_fd, at @depth (0 for @dir_fd's own), as lstat() describes it; links are not followed and
 * directories deeper than @max_depth not entered. A directory is seen before what it holds (@after false;
 * TREE_SKIP keeps the walk out of it) and again after (@after true), where it may go. Entries that go
 * away meanwhile, or cannot be read, are passed over. Blocking. */
typedef enum TreeAction {
        TREE_DESCEND,
        TREE_SKIP,
} TreeAction;
typedef TreeAction (*TreeVisit)(int parent_fd, const char *name, const struct stat *st, unsigned depth, bool after,
                                void *userdata);
void tree_walk(int dir_fd, unsigned max_depth, TreeVisit visit, void *userdata);

/* A TreeVisit that adds the bytes each regular file allocates to the uint64_t at @userdata. */
TreeAction tree_add_allocated(int parent_fd, const char *name, const struct stat *st, unsigned depth, bool after,
                              void *userdata);
static inline bool dot_or_dot_dot(const char *name)
{
        return name[0] == '.' && (name[1] == '\0' || (name[1] == '.' && name[2] == '\0'));
}

/* Read the regular file @path below @root_fd into a NUL-terminated buffer (*ret_size without the NUL).
 * @path resolves inside @root_fd as if it were "/" (its links too), crossing no mount and following no
 * /proc magic link. Made for what an image's tree holds, which whoever runs in the image controls: the
 * file is looked at (O_PATH) before it is opened, so a FIFO, socket or device node is refused
 * (-EBADFD) without ever being opened; the open itself never waits (O_NONBLOCK: no FIFO, no lease);
 * more than @max bytes is refused (-EFBIG). */
int read_small_file_in_root(int root_fd, const char *path, size_t max, char **ret, size_t *ret_size);

/* Put a sentence for the caller into @err (as the store's acts report, in a worker thread or the
 * helper) and return -@error. */
int errbuf_set(char *err, size_t errlen, int error, const char *fmt, ...) _printf_(4, 5);

/* A random hex token for temporary names. */
void random_hex(char *buf, size_t n_hex);

/* Fork a child that has default signal handling and an empty signal mask, dies with its parent
 * (PR_SET_PDEATHSIG=SIGKILL) and, if @new_pgrp, leads its own process group. Returns 0 in the child,
 * the pid in the parent, negative errno on failure. Callers in stampd, which has threads, exec at once
 * in the child, with nothing but async-signal-safe calls before the exec. */
pid_t safe_fork(bool new_pgrp);
/* An fd every child of safe_fork() closes at once: the daemon's bus connection, which a child that
 * outlives a killed daemon would otherwise keep alive, name and all. */
void safe_fork_close_in_child(int fd);

/* The path of program @name as execvp() would find it on $PATH (a name with a '/' is taken as it is),
 * found before a fork so that the child can use plain execv(). -ENOENT if there is none. */
int find_executable(const char *name, char **ret);

/* Run argv (argv[0] a path or a name on PATH), wait for it; stdout/stderr go to the daemon's stderr.
 * Blocks: for start-up work, a worker thread or a helper process. Returns exit status or negative errno. */
int run_command(char *const argv[]);
/* The same, in the directory @dir_fd (-1: where we are); with @quiet, stdout goes to /dev/null. */
int run_command_at(int dir_fd, char *const argv[], bool quiet);

/* A directory of stampd's own below @dir_fd, made (mode 0700) first if @create: an O_DIRECTORY fd, or
 * -EPERM if it is not root's or others may write to it (nothing there is then ours to believe). One that
 * others may only read (made so by hand) is closed again: 0700, as it was made. */
int open_private_dir(int dir_fd, const char *name, bool create);
/* Write @data as the file @name of the directory @dir_fd (an O_PATH fd will do): into a hidden
 * temporary beside it (".#NAME.…"), then renamed over whatever @name is (a file or a link, never
 * followed); with @sync, on disk before the rename. */
int write_file_atomic_at(int dir_fd, const char *name, const void *data, size_t size, mode_t mode, bool sync);
