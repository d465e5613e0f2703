/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* The step (see step.h) that runs one command inside a running machine for ExecMachine.
 *
 * It stays on the host, a fresh single-threaded copy of stampd: it looks the user up in the machine's
 * own /etc/passwd (read below the leader's root, following no link out of it), opens the leader's
 * cgroups, enters the leader's PID namespace for its children, and forks the command. The command
 * moves itself into those cgroups, enters the leader's user, mount, UTS, IPC, network and cgroup
 * namespaces at once through the leader's pidfd, takes the leader's root, drops the capabilities the
 * machine's init does not have, becomes the user and executes. In a user namespace (a self-service
 * machine) it is root there only, an unprivileged uid on the host. Without a terminal the command gets
 * the caller's fds as they are; with one, a pseudo-terminal of the machine's own devpts, which this
 * step relays to the caller's terminal. When the command has ended, one line goes to the daemon on the
 * status fd: "exited N", "killed N", "dumped N", or "failed ERRNO TEXT". */
#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <pwd.h>
#include <sched.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <termios.h>

#include <glib.h>

#include "exec.h"
#include "step.h"
#include "util.h"

#define EXEC_PASSWD_MAX (4u * 1024 * 1024)
#define EXEC_GROUPS_MAX 1024
#define EXEC_CGROUPS_MAX 32
#define RELAY_BUFFER 16384

typedef struct ExecSetup {
        const char *machine;
        int leader_pidfd;
        int stdio[3];
        int status_fd;
        const char *user;
        const char *cwd;
        bool pty;
        GPtrArray *env; /* K=V from the caller */
        char **argv;    /* empty: the user's login shell */
} ExecSetup;

/* What the command becomes, found before the fork. */
typedef struct Target {
        uid_t uid;
        gid_t gid;
        gid_t groups[EXEC_GROUPS_MAX];
        int n_groups;
        char *name, *home, *shell;
} Target;

static int pidfd_send_signal_(int pidfd, int signo)
{
        return syscall(SYS_pidfd_send_signal, pidfd, signo, NULL, 0) < 0 ? -errno : 0;
}

static int pidfd_open_(pid_t pid)
{
        int fd = (int) syscall(SYS_pidfd_open, pid, 0);
        return fd < 0 ? -errno : fd;
}

static void report(int status_fd, const char *fmt, ...) _printf_(2, 3);
static void report(int status_fd, const char *fmt, ...)
{
        char text[2048];
        va_list ap;
        int n;

        va_start(ap, fmt);
        n = vsnprintf(text, sizeof text - 1, fmt, ap);
        va_end(ap);
        if (n < 0)
                return;
        if ((size_t) n > sizeof text - 2)
                n = (int) sizeof text - 2;
        text[n++] = '\n';
        (void) loop_write(status_fd, text, (size_t) n);
}

/* Report that the command did not run: @result is "failed" (nothing of the command ran), or
 * "exec-failed" (all was set up, but the program could not be executed). */
_noreturn_ static void fail_as(const ExecSetup *s, const char *result, int error, const char *fmt, ...) _printf_(4, 5);
_noreturn_ static void fail_as(const ExecSetup *s, const char *result, int error, const char *fmt, ...)
{
        char text[1024];
        va_list ap;

        va_start(ap, fmt);
        vsnprintf(text, sizeof text, fmt, ap);
        va_end(ap);
        for (char *p = text; *p; p++)
                if (*p == '\n')
                        *p = ' ';
        log_debug("Exec in machine %s: %s", s->machine ?: "?", text);
        report(s->status_fd, "%s %d %s", result, error, text);
        _exit(EXIT_SUCCESS);
}
#define fail(s, error, ...) fail_as(s, "failed", error, __VA_ARGS__)

static int exec_arg(const char *key, const char *v, void *userdata)
{
        ExecSetup *s = userdata;

        if (streq(key, "machine"))
                s->machine = v;
        else if (streq(key, "leader"))
                return step_parse_fd(v, &s->leader_pidfd);
        else if (streq(key, "status"))
                return step_parse_fd(v, &s->status_fd);
        else if (streq(key, "user"))
                s->user = v;
        else if (streq(key, "cwd"))
                s->cwd = v;
        else if (streq(key, "pty"))
                s->pty = streq(v, "1");
        else if (streq(key, "env"))
                g_ptr_array_add(s->env, (char *) v);
        else
                return -EINVAL;
        return 0;
}

static int parse_setup(int argc, char *argv[], ExecSetup *s)
{
        int k;

        *s = (ExecSetup) {.leader_pidfd = -1, .stdio = {-1, -1, -1}, .status_fd = -1, .env = g_ptr_array_new()};
        k = step_parse_args(argc, argv, s->stdio, exec_arg, s, &s->argv);
        if (k < 0)
                return k;
        if (!s->machine || s->leader_pidfd < 0 || s->status_fd < 0 || !s->argv)
                return -EINVAL;
        return 0;
}

/* The pid a pidfd stands for, as this process's /proc names it. */
static pid_t pidfd_get_pid(int pidfd)
{
        char path[64], line[256];
        _cleanup_fclose_ FILE *f = NULL;

        snprintf(path, sizeof path, "/proc/self/fdinfo/%d", pidfd);
        f = fopen(path, "re");
        if (!f)
                return -errno;
        while (fgets(line, sizeof line, f))
                if (strncmp(line, "Pid:", 4) == 0) {
                        long pid = strtol(line + 4, NULL, 10);
                        return pid > 0 ? (pid_t) pid : -ESRCH;
                }
        return -ENOTTY;
}

/* ---- the user, from the machine's own files ---- */

static int target_from_passwd(int root_fd, const char *user, Target *t)
{
        _cleanup_free_ char *text = NULL;
        _cleanup_fclose_ FILE *f = NULL;
        struct passwd *pw;
        size_t size = 0;
        char *end;
        bool numeric;
        unsigned long number;
        int k;

        errno = 0;
        number = strtoul(user, &end, 10);
        numeric = *user && !*end && errno == 0 && number < UINT32_MAX;

        k = read_small_file_in_root(root_fd, "/etc/passwd", EXEC_PASSWD_MAX, &text, &size);
        if (k < 0 && k != -ENOENT)
                return k;
        if (k >= 0) {
                f = fmemopen(text, size, "r");
                if (!f)
                        return -errno;
                /* fgetpwent() parses the file it is given: no NSS module of the machine's is loaded. */
                while ((pw = fgetpwent(f)))
                        if (numeric ? pw->pw_uid == (uid_t) number : streq(pw->pw_name, user)) {
                                t->uid = pw->pw_uid;
                                t->gid = pw->pw_gid;
                                t->name = g_strdup(pw->pw_name);
                                t->home = g_strdup(isempty(pw->pw_dir) ? "/" : pw->pw_dir);
                                t->shell = g_strdup(isempty(pw->pw_shell) ? "/bin/sh" : pw->pw_shell);
                                return 0;
                        }
        }
        /* A number names a uid even without an entry, as nspawn's --user does not, but chown does. */
        if (numeric) {
                t->uid = (uid_t) number;
                t->gid = (gid_t) number;
                t->name = g_strdup(user);
                t->home = g_strdup("/");
                t->shell = g_strdup("/bin/sh");
                return 0;
        }
        if (streq(user, "root")) {
                t->uid = t->gid = 0;
                t->name = g_strdup("root");
                t->home = g_strdup("/root");
                t->shell = g_strdup("/bin/sh");
                return 0;
        }
        return -ESRCH;
}

static void target_groups(int root_fd, Target *t)
{
        _cleanup_free_ char *text = NULL;
        _cleanup_fclose_ FILE *f = NULL;
        struct group *gr;
        size_t size = 0;

        t->groups[t->n_groups++] = t->gid;
        if (read_small_file_in_root(root_fd, "/etc/group", EXEC_PASSWD_MAX, &text, &size) < 0)
                return;
        f = fmemopen(text, size, "r");
        if (!f)
                return;
        while ((gr = fgetgrent(f)) && t->n_groups < EXEC_GROUPS_MAX) {
                if (gr->gr_gid == t->gid)
                        continue;
                for (char **mem = gr->gr_mem; mem && *mem; mem++)
                        if (streq(*mem, t->name)) {
                                t->groups[t->n_groups++] = gr->gr_gid;
                                break;
                        }
        }
}

/* ---- the leader's cgroups, its capabilities ---- */

/* Whether every controller of a v1 hierarchy line ("cpu,cpuacct", "name=systemd") is among a cgroup
 * mount's options. */
static bool options_have_controllers(const char *options, const char *controllers)
{
        g_auto(GStrv) opts = g_strsplit(options, ",", -1);
        g_auto(GStrv) want = g_strsplit(controllers, ",", -1);

        for (char **w = want; *w; w++)
                if (!g_strv_contains((const char *const *) opts, *w))
                        return false;
        return true;
}

/* cgroup.procs of each cgroup the leader is in, opened for writing; a v1 hierarchy mounted nowhere here
 * is left out. */
static int open_leader_cgroups(pid_t leader, int fds[EXEC_CGROUPS_MAX], int *n_fds)
{
        _cleanup_free_ char *mountinfo = NULL;
        _cleanup_fclose_ FILE *f = NULL;
        g_auto(GStrv) mounts = NULL;
        char path[64], line[4096];
        gsize size;

        *n_fds = 0;
        if (!g_file_get_contents("/proc/self/mountinfo", &mountinfo, &size, NULL))
                return -EIO;
        mounts = g_strsplit(mountinfo, "\n", -1);

        snprintf(path, sizeof path, "/proc/%d/cgroup", (int) leader);
        f = fopen(path, "re");
        if (!f)
                return -errno;
        while (fgets(line, sizeof line, f) && *n_fds < EXEC_CGROUPS_MAX) {
                char *controllers, *cgroup;
                bool v2;
                int fd = -1;

                line[strcspn(line, "\n")] = '\0';
                controllers = strchr(line, ':');
                if (!controllers)
                        continue;
                *controllers++ = '\0';
                cgroup = strchr(controllers, ':');
                if (!cgroup)
                        continue;
                *cgroup++ = '\0';
                v2 = streq(line, "0") && *controllers == '\0';
                if (!v2 && *controllers == '\0')
                        continue;

                for (char **m = mounts; *m && fd < 0; m++) {
                        /* ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTIONS [OPTIONAL...] - FSTYPE SOURCE SUPER */
                        g_auto(GStrv) fields = g_strsplit(*m, " ", -1);
                        const char *root, *mountpoint, *fstype = NULL, *super = NULL, *rest;
                        _cleanup_free_ char *procs = NULL;
                        guint n = g_strv_length(fields);

                        if (n < 10)
                                continue;
                        root = fields[3];
                        mountpoint = fields[4];
                        for (guint i = 6; i + 3 < n + 1; i++)
                                if (streq(fields[i], "-") && i + 3 < n) {
                                        fstype = fields[i + 1];
                                        super = fields[i + 3];
                                        break;
                                }
                        if (!fstype || !streq(fstype, v2 ? "cgroup2" : "cgroup"))
                                continue;
                        if (!v2 && !options_have_controllers(super, controllers))
                                continue;
                        /* The mount shows the hierarchy from @root down. */
                        if (streq(root, "/"))
                                rest = cgroup;
                        else if (g_str_has_prefix(cgroup, root) &&
                                 (cgroup[strlen(root)] == '/' || cgroup[strlen(root)] == '\0'))
                                rest = cgroup + strlen(root);
                        else
                                continue;
                        if (asprintf(&procs, "%s%s/cgroup.procs", mountpoint, rest) < 0)
                                return -ENOMEM;
                        fd = open(procs, O_WRONLY | O_CLOEXEC | O_NOFOLLOW);
                        if (fd < 0)
                                log_debug("Cannot open %s: %s", procs, strerror(errno));
                }
                if (fd < 0) {
                        if (v2)
                                return -ENOENT;
                        continue;
                }
                fds[(*n_fds)++] = fd;
        }
        return 0;
}

/* The leader's capability bounding set: the command gets no capability the machine's init lacks. */
static int leader_bounding_set(pid_t leader, uint64_t *ret)
{
        char path[64], line[256];
        _cleanup_fclose_ FILE *f = NULL;

        snprintf(path, sizeof path, "/proc/%d/status", (int) leader);
        f = fopen(path, "re");
        if (!f)
                return -errno;
        while (fgets(line, sizeof line, f))
                if (strncmp(line, "CapBnd:", 7) == 0) {
                        *ret = strtoull(line + 7, NULL, 16);
                        return 0;
                }
        return -ENODATA;
}

static int cap_last_cap(void)
{
        _cleanup_fclose_ FILE *f = fopen("/proc/sys/kernel/cap_last_cap", "re");
        int last = 40;

        if (f && fscanf(f, "%d", &last) != 1)
                last = 40;
        return last;
}

/* ---- the environment ---- */

static void env_set(GPtrArray *env, const char *entry)
{
        size_t klen = strcspn(entry, "=");

        for (guint i = 0; i < env->len; i++) {
                const char *e = env->pdata[i];
                if (strncmp(e, entry, klen) == 0 && e[klen] == '=') {
                        g_free(env->pdata[i]);
                        env->pdata[i] = g_strdup(entry);
                        return;
                }
        }
        g_ptr_array_add(env, g_strdup(entry));
}

static char **build_env(const ExecSetup *s, const Target *t)
{
        GPtrArray *env = g_ptr_array_new();
        bool has_term = false;

        g_ptr_array_add(env, g_strdup_printf("PATH=%s", DEFAULT_PATH));
        g_ptr_array_add(env, g_strdup_printf("HOME=%s", t->home));
        g_ptr_array_add(env, g_strdup_printf("USER=%s", t->name));
        g_ptr_array_add(env, g_strdup_printf("LOGNAME=%s", t->name));
        g_ptr_array_add(env, g_strdup_printf("SHELL=%s", t->shell));
        g_ptr_array_add(env, g_strdup("container=stamp"));
        for (guint i = 0; i < s->env->len; i++) {
                const char *e = s->env->pdata[i];
                if (g_str_has_prefix(e, "TERM="))
                        has_term = true;
                env_set(env, e);
        }
        if (s->pty && !has_term)
                g_ptr_array_add(env, g_strdup("TERM=vt220"));
        g_ptr_array_add(env, NULL);
        return (char **) g_ptr_array_free(env, FALSE);
}

/* ---- the command ---- */

static int send_fd(int sock, int fd)
{
        union {
                struct cmsghdr h;
                uint8_t buf[CMSG_SPACE(sizeof(int))];
        } control = {};
        char byte = 'm';
        struct iovec iov = {.iov_base = &byte, .iov_len = 1};
        struct msghdr mh = {
                .msg_iov = &iov, .msg_iovlen = 1, .msg_control = &control, .msg_controllen = sizeof control};
        struct cmsghdr *c = CMSG_FIRSTHDR(&mh);

        c->cmsg_level = SOL_SOCKET;
        c->cmsg_type = SCM_RIGHTS;
        c->cmsg_len = CMSG_LEN(sizeof(int));
        memcpy(CMSG_DATA(c), &fd, sizeof fd);
        return sendmsg(sock, &mh, MSG_NOSIGNAL) < 0 ? -errno : 0;
}

static int receive_fd(int sock)
{
        union {
                struct cmsghdr h;
                uint8_t buf[CMSG_SPACE(sizeof(int))];
        } control;
        char byte;
        struct iovec iov = {.iov_base = &byte, .iov_len = 1};
        struct msghdr mh = {
                .msg_iov = &iov, .msg_iovlen = 1, .msg_control = &control, .msg_controllen = sizeof control};
        ssize_t n;

        do
                n = recvmsg(sock, &mh, MSG_CMSG_CLOEXEC);
        while (n < 0 && errno == EINTR);
        if (n <= 0)
                return n < 0 ? -errno : -EPIPE;
        for (struct cmsghdr *c = CMSG_FIRSTHDR(&mh); c; c = CMSG_NXTHDR(&mh, c))
                if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS && c->cmsg_len == CMSG_LEN(sizeof(int))) {
                        int fd;
                        memcpy(&fd, CMSG_DATA(c), sizeof fd);
                        return fd;
                }
        return -EBADMSG;
}

/* In the command's process, before the exec: a failure goes to the step on @err_fd as "ERRNO TEXT", the
 * errno negative when the exec itself failed. */
_noreturn_ static void child_fail(int err_fd, int error, const char *fmt, ...) _printf_(3, 4);
_noreturn_ static void child_fail(int err_fd, int error, const char *fmt, ...)
{
        char text[1024];
        va_list ap;
        int n;

        n = snprintf(text, sizeof text, "%d ", error);
        va_start(ap, fmt);
        vsnprintf(text + n, sizeof text - (size_t) n, fmt, ap);
        va_end(ap);
        (void) loop_write(err_fd, text, strlen(text));
        _exit(127);
}

typedef struct Child {
        const ExecSetup *s;
        const Target *t;
        int root_fd;
        int err_fd;
        int pty_sock;
        int stdio[3];
        int cgroup_fd[EXEC_CGROUPS_MAX];
        int n_cgroups;
        int ns_flags;
        uint64_t bounding;
        int last_cap;
        char **env;
        const char *cwd;
        bool cwd_given;
        char *const *argv;
        const char *program;
} Child;

_noreturn_ static void run_child(const Child *c)
{
        const Target *t = c->t;
        int in[3];

        for (int i = 0; i < c->n_cgroups; i++)
                if (write(c->cgroup_fd[i], "0", 1) < 0)
                        child_fail(c->err_fd, errno, "Cannot join the machine's cgroup: %s", strerror(errno));

        if (setns(c->s->leader_pidfd, c->ns_flags) < 0)
                child_fail(c->err_fd, errno, "Cannot enter the machine's namespaces: %s", strerror(errno));
        /* After the user namespace: entering one gives a full bounding set again. */
        for (int cap = 0; cap <= c->last_cap && cap < 64; cap++)
                if (!(c->bounding & (UINT64_C(1) << cap)) && prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) < 0 &&
                    errno != EINVAL)
                        child_fail(c->err_fd, errno, "Cannot drop capability %d: %s", cap, strerror(errno));
        if (fchdir(c->root_fd) < 0 || chroot(".") < 0 || chdir("/") < 0)
                child_fail(c->err_fd, errno, "Cannot enter the machine's root: %s", strerror(errno));

        if (c->s->pty) {
                _cleanup_close_ int master = -1;
                int slave;
                struct stat st;

                /* The machine's own devpts: the terminal is one of the machine's, as its login would be. */
                master = open("/dev/ptmx", O_RDWR | O_NOCTTY | O_CLOEXEC);
                if (master < 0 || fstat(master, &st) < 0 || !S_ISCHR(st.st_mode))
                        child_fail(c->err_fd, master < 0 ? errno : ENOTTY,
                                   "Cannot open a terminal in the machine (/dev/ptmx): %s",
                                   master < 0 ? strerror(errno) : "not a character device");
                if (unlockpt(master) < 0)
                        child_fail(c->err_fd, errno, "Cannot unlock the machine's terminal: %s", strerror(errno));
                slave = ioctl(master, TIOCGPTPEER, O_RDWR | O_NOCTTY | O_CLOEXEC);
                if (slave < 0)
                        child_fail(c->err_fd, errno, "Cannot open the machine's terminal: %s", strerror(errno));
                best_effort(fchown(slave, t->uid, (gid_t) -1));
                (void) fchmod(slave, 0620);
                if (send_fd(c->pty_sock, master) < 0)
                        child_fail(c->err_fd, errno, "Cannot hand the terminal over: %s", strerror(errno));
                if (setsid() < 0 || ioctl(slave, TIOCSCTTY, 0) < 0)
                        child_fail(c->err_fd, errno, "Cannot make the terminal the controlling one: %s",
                                   strerror(errno));
                in[0] = in[1] = in[2] = slave;
        } else {
                if (setsid() < 0)
                        child_fail(c->err_fd, errno, "Cannot start a session: %s", strerror(errno));
                for (int i = 0; i < 3; i++)
                        in[i] = c->stdio[i];
        }
        /* Above 2 first, so that no dup2() below overwrites one still to be placed. */
        for (int i = 0; i < 3; i++) {
                in[i] = fcntl(in[i], F_DUPFD_CLOEXEC, 3);
                if (in[i] < 0)
                        child_fail(c->err_fd, errno, "Cannot set up stdio: %s", strerror(errno));
        }
        for (int i = 0; i < 3; i++)
                if (dup2(in[i], i) < 0)
                        child_fail(c->err_fd, errno, "Cannot set up stdio: %s", strerror(errno));

        if (setgroups((size_t) t->n_groups, t->groups) < 0 || setresgid(t->gid, t->gid, t->gid) < 0 ||
            setresuid(t->uid, t->uid, t->uid) < 0)
                child_fail(c->err_fd, errno, "Cannot become user %s (uid %u) in machine %s: %s", t->name,
                           (unsigned) t->uid, c->s->machine, strerror(errno));
        if (chdir(c->cwd) < 0) {
                if (c->cwd_given)
                        child_fail(c->err_fd, errno, "Cannot change to directory %s in machine %s: %s", c->cwd,
                                   c->s->machine, strerror(errno));
                best_effort(chdir("/"));
        }

        environ = c->env;
        if (strchr(c->program, '/'))
                execve(c->program, c->argv, c->env);
        else
                execvp(c->program, c->argv);
        child_fail(c->err_fd, -errno, "Cannot run %s in machine %s: %s", c->program, c->s->machine, strerror(errno));
}

/* ---- the terminal ---- */

typedef struct Relay {
        int in, out, master, child_pidfd;
        char to_master[RELAY_BUFFER], to_caller[RELAY_BUFFER];
        size_t n_to_master, n_to_caller;
        bool in_done, master_done;
        struct winsize ws;
} Relay;

static void relay_sync_size(Relay *r)
{
        struct winsize ws;

        if (ioctl(r->out, TIOCGWINSZ, &ws) < 0)
                return;
        if (ws.ws_row == r->ws.ws_row && ws.ws_col == r->ws.ws_col)
                return;
        r->ws = ws;
        (void) ioctl(r->master, TIOCSWINSZ, &ws);
}

/* Relay the caller's terminal and the machine's until the command has ended and its output is out. The
 * caller's fds stay blocking (their open file is the caller's shell's too): they are read and written
 * only when poll() says so. The master is ours, non-blocking. Size changes of the caller's terminal
 * cannot be signalled to us, so they are looked for whenever poll() wakes, at least twice a second.
 * Once the command has ended, its last output may still be on its way through the terminal's line
 * discipline: the master is read until every holder of the machine's side has closed it (EIO), or,
 * where something the command left behind still holds it, until it has been quiet a moment. */
#define RELAY_LINGER_MSEC 100
static void relay(Relay *r)
{
        bool child_done = false;

        (void) fcntl(r->master, F_SETFL, fcntl(r->master, F_GETFL) | O_NONBLOCK);
        relay_sync_size(r);
        for (;;) {
                struct pollfd p[4];
                int n = 0, i_in = -1, i_master = -1, i_out = -1, i_child = -1;
                bool lingering = child_done;
                ssize_t k;

                if (child_done && r->master_done && r->n_to_caller == 0)
                        break;
                /* What the caller types after the command's end is not the machine's any more. */
                if (!r->in_done && r->n_to_master == 0 && !r->master_done && !child_done)
                        p[i_in = n++] = (struct pollfd) {.fd = r->in, .events = POLLIN};
                if (!r->master_done) {
                        short ev = 0;
                        if (r->n_to_caller == 0)
                                ev |= POLLIN;
                        if (r->n_to_master > 0)
                                ev |= POLLOUT;
                        if (ev)
                                p[i_master = n++] = (struct pollfd) {.fd = r->master, .events = ev};
                }
                if (r->n_to_caller > 0)
                        p[i_out = n++] = (struct pollfd) {.fd = r->out, .events = POLLOUT};
                if (!child_done)
                        p[i_child = n++] = (struct pollfd) {.fd = r->child_pidfd, .events = POLLIN};

                k = poll(p, (nfds_t) n, child_done ? RELAY_LINGER_MSEC : 500);
                if (k < 0) {
                        if (errno == EINTR)
                                continue;
                        break;
                }
                relay_sync_size(r);
                if (i_child >= 0 && p[i_child].revents)
                        child_done = true;

                if (i_in >= 0 && p[i_in].revents) {
                        k = read(r->in, r->to_master, sizeof r->to_master);
                        if (k > 0)
                                r->n_to_master = (size_t) k;
                        else if (k == 0 || (errno != EINTR && errno != EAGAIN)) {
                                /* The caller's terminal is gone: hang the machine's up. */
                                r->in_done = true;
                                r->master_done = true;
                                r->master = safe_close(r->master);
                        }
                }
                if (i_master >= 0 && !r->master_done && (p[i_master].revents & POLLOUT) && r->n_to_master > 0) {
                        k = write(r->master, r->to_master, r->n_to_master);
                        if (k > 0) {
                                memmove(r->to_master, r->to_master + k, r->n_to_master - (size_t) k);
                                r->n_to_master -= (size_t) k;
                        } else if (k < 0 && errno != EAGAIN && errno != EINTR)
                                r->n_to_master = 0;
                }
                if (!r->master_done && r->n_to_caller == 0 &&
                    (lingering || (i_master >= 0 && (p[i_master].revents & (POLLIN | POLLHUP | POLLERR))))) {
                        k = read(r->master, r->to_caller, sizeof r->to_caller);
                        if (k > 0)
                                r->n_to_caller = (size_t) k;
                        else if (k == 0 || (errno != EAGAIN && errno != EINTR))
                                r->master_done = true; /* EIO: no one holds the machine's side any more */
                        else if (lingering)
                                r->master_done = true; /* quiet since the command ended */
                }
                if (r->n_to_caller > 0 && (child_done || (i_out >= 0 && p[i_out].revents))) {
                        if (loop_write(r->out, r->to_caller, r->n_to_caller) < 0)
                                r->in_done = true;
                        r->n_to_caller = 0;
                }
        }
}

/* ---- signals from the daemon ---- */

static volatile pid_t command_pid = 0;

/* KillExec: the daemon queues EXEC_FORWARD_SIGNAL with the signal for the command as its value. */
static void on_forward_signal(int sig, siginfo_t *si, void *context)
{
        pid_t pid = command_pid;
        int signo = si->si_value.sival_int;

        if (si->si_code != SI_QUEUE || si->si_pid != getppid() || pid <= 0 || signo < 1 || signo >= _NSIG)
                return;
        (void) kill(pid, signo);
}

/* ---- main ---- */

int exec_step_main(int argc, char *argv[])
{
        ExecSetup setup, *s = &setup;
        Target t = {};
        Child c = {};
        _cleanup_close_ int root_fd = -1, child_pidfd = -1;
        int err_pipe[2] = {-1, -1}, sock[2] = {-1, -1}; /* this process ends with them */
        g_auto(GStrv) env = NULL;
        _cleanup_free_ char **login_argv = NULL;
        g_autofree char *login_name = NULL;
        struct stat own_user, leader_user;
        char path[64], errbuf[1100];
        pid_t leader, pid;
        ssize_t n;
        size_t got = 0;
        int status, k;

        k = parse_setup(argc, argv, s);
        if (k < 0) {
                log_error_errno(k, "Invalid arguments for an exec");
                if (s->status_fd >= 0)
                        report(s->status_fd, "failed %d invalid arguments", EINVAL);
                _exit(EXIT_FAILURE);
        }
        /* The daemon's stdin and stdout are none of the command's business; stderr stays for the log. */
        (void) close(STDIN_FILENO);
        (void) close(STDOUT_FILENO);
        for (int i = 0; i < 3; i++)
                if (s->stdio[i] < 0) {
                        s->stdio[i] = open("/dev/null", (i == 0 ? O_RDONLY : O_WRONLY) | O_CLOEXEC | O_NOCTTY);
                        if (s->stdio[i] < 0)
                                fail(s, errno, "Cannot open /dev/null: %s", strerror(errno));
                }

        leader = pidfd_get_pid(s->leader_pidfd);
        if (leader <= 0)
                fail(s, ESRCH, "Machine %s has no leader process any more", s->machine);
        snprintf(path, sizeof path, "/proc/%d/root", (int) leader);
        root_fd = open(path, O_PATH | O_DIRECTORY | O_CLOEXEC);
        if (root_fd < 0)
                fail(s, errno, "Cannot open the root of machine %s: %s", s->machine, strerror(errno));
        snprintf(path, sizeof path, "/proc/%d/ns/user", (int) leader);
        if (stat(path, &leader_user) < 0 || stat("/proc/self/ns/user", &own_user) < 0)
                fail(s, errno, "Cannot look at the user namespace of machine %s: %s", s->machine, strerror(errno));
        k = open_leader_cgroups(leader, c.cgroup_fd, &c.n_cgroups);
        if (k < 0)
                fail(s, -k, "Cannot find the cgroup of machine %s: %s", s->machine, strerror(-k));
        k = leader_bounding_set(leader, &c.bounding);
        if (k < 0)
                fail(s, -k, "Cannot read the capabilities of machine %s: %s", s->machine, strerror(-k));
        /* All of the above is the leader's only if it is still the one the pidfd stands for. */
        if (pidfd_send_signal_(s->leader_pidfd, 0) < 0)
                fail(s, ESRCH, "Machine %s has ended", s->machine);

        k = target_from_passwd(root_fd, s->user ?: "root", &t);
        if (k == -ESRCH)
                fail(s, ESRCH, "No user %s in machine %s", s->user, s->machine);
        if (k < 0)
                fail(s, -k, "Cannot read the users of machine %s: %s", s->machine, strerror(-k));
        target_groups(root_fd, &t);
        env = build_env(s, &t);

        c.s = s;
        c.t = &t;
        c.root_fd = root_fd;
        c.env = env;
        c.last_cap = cap_last_cap();
        c.ns_flags = CLONE_NEWNS | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWNET | CLONE_NEWCGROUP;
        if (own_user.st_ino != leader_user.st_ino || own_user.st_dev != leader_user.st_dev)
                c.ns_flags |= CLONE_NEWUSER;
        c.cwd_given = !!s->cwd;
        c.cwd = s->cwd ?: t.home;
        for (int i = 0; i < 3; i++)
                c.stdio[i] = s->stdio[i];
        if (s->argv[0]) {
                c.argv = s->argv;
                c.program = s->argv[0];
        } else {
                /* A login shell: its name with a dash in front, as login(1) runs it. */
                const char *base = strrchr(t.shell, '/');
                login_name = g_strdup_printf("-%s", base ? base + 1 : t.shell);
                login_argv = calloc(2, sizeof(char *));
                if (!login_argv)
                        fail(s, ENOMEM, "Out of memory");
                login_argv[0] = login_name;
                c.argv = login_argv;
                c.program = t.shell;
        }

        if (pipe2(err_pipe, O_CLOEXEC) < 0)
                fail(s, errno, "Cannot make a pipe: %s", strerror(errno));
        c.err_fd = err_pipe[1];
        if (s->pty && socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sock) < 0)
                fail(s, errno, "Cannot make a socket pair: %s", strerror(errno));
        c.pty_sock = sock[1];

        {
                struct sigaction sa = {.sa_sigaction = on_forward_signal, .sa_flags = SA_SIGINFO | SA_RESTART};
                (void) sigaction(EXEC_FORWARD_SIGNAL, &sa, NULL);
        }
        /* Our children are born in the machine's PID namespace; this process stays where it is. */
        if (setns(s->leader_pidfd, CLONE_NEWPID) < 0)
                fail(s, errno, "Cannot enter the PID namespace of machine %s: %s", s->machine, strerror(errno));
        pid = fork();
        if (pid < 0)
                fail(s, errno, "Cannot fork: %s", strerror(errno));
        if (pid == 0) {
                (void) signal(EXEC_FORWARD_SIGNAL, SIG_DFL);
                (void) prctl(PR_SET_PDEATHSIG, SIGKILL); /* until it becomes the user, which clears it */
                safe_close(err_pipe[0]);
                safe_close(sock[0]);
                run_child(&c);
        }
        command_pid = pid;
        /* A caller that closed its end gets no more output; that must not end the relay. */
        (void) signal(SIGPIPE, SIG_IGN);
        err_pipe[1] = safe_close(err_pipe[1]);
        sock[1] = safe_close(sock[1]);
        for (int i = 0; i < c.n_cgroups; i++)
                safe_close(c.cgroup_fd[i]);
        child_pidfd = pidfd_open_(pid);

        /* The terminal comes first (the command sends it before its exec); then the pipe says whether
         * the exec happened: it closes with nothing in it. */
        if (s->pty) {
                int master = receive_fd(sock[0]);
                if (master >= 0) {
                        struct termios saved, raw;
                        bool restore = tcgetattr(s->stdio[0], &saved) >= 0;
                        Relay r = {.in = s->stdio[0], .out = s->stdio[1], .master = master, .child_pidfd = child_pidfd};

                        while ((n = read(err_pipe[0], errbuf + got, sizeof errbuf - 1 - got)) != 0)
                                if (n > 0)
                                        got += (size_t) n;
                                else if (errno != EINTR)
                                        break;
                        if (got == 0 && child_pidfd >= 0) {
                                if (restore) {
                                        raw = saved;
                                        cfmakeraw(&raw);
                                        (void) tcsetattr(s->stdio[0], TCSANOW, &raw);
                                }
                                relay(&r);
                                if (restore)
                                        (void) tcsetattr(s->stdio[0], TCSADRAIN, &saved);
                        }
                        safe_close(r.master);
                }
        }
        while ((n = read(err_pipe[0], errbuf + got, sizeof errbuf - 1 - got)) != 0)
                if (n > 0)
                        got += (size_t) n;
                else if (errno != EINTR)
                        break;
        errbuf[got] = '\0';

        while (waitpid(pid, &status, 0) < 0)
                if (errno != EINTR)
                        fail(s, errno, "Cannot wait for the command: %s", strerror(errno));
        if (got > 0) {
                char *text;
                long error = strtol(errbuf, &text, 10);
                if (*text == ' ')
                        text++;
                if (error < 0)
                        fail_as(s, "exec-failed", (int) -error, "%s", text);
                fail(s, error > 0 ? (int) error : EIO, "%s", text);
        }
        if (WIFEXITED(status))
                report(s->status_fd, "exited %d", WEXITSTATUS(status));
        else if (WIFSIGNALED(status))
                report(s->status_fd, "%s %d", WCOREDUMP(status) ? "dumped" : "killed", WTERMSIG(status));
        else
                report(s->status_fd, "failed %d the command neither exited nor was killed", EIO);
        _exit(EXIT_SUCCESS);
}
