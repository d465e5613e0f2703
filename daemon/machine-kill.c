/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* Signals for a machine's processes (its leader, or everything in it, as machinectl's --kill-whom=), and
 * how its command ended. nspawn's stub init passes on an exit code but turns a death by signal into 255,
 * and a poweroff into 0: a script must never take a killed command for a success, so the command's own
 * wait status is read from a pidfd of it where the kernel keeps it (PIDFD_GET_INFO), and otherwise the
 * daemon remembers what it asked for. */
#include <dirent.h>
#include <inttypes.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>

#include "machine.h"

static void closedirp(DIR **d)
{
        if (*d)
                closedir(*d);
}

/* Linux 6.15's PIDFD_GET_INFO, which older headers lack. */
struct stamp_pidfd_info {
        uint64_t mask;
        uint64_t cgroupid;
        uint32_t pid, tgid, ppid, ruid, rgid, euid, egid, suid, sgid, fsuid, fsgid;
        int32_t exit_code;
};
#define STAMP_PIDFD_GET_INFO _IOWR(0xFF, 11, struct stamp_pidfd_info)
#define STAMP_PIDFD_INFO_EXIT (UINT64_C(1) << 3)

static int pidfd_open_(pid_t pid)
{
        int fd = (int) syscall(SYS_pidfd_open, pid, 0);
        return fd < 0 ? -errno : fd;
}

static int pidfd_send_signal_(int pidfd, int signo)
{
        return syscall(SYS_pidfd_send_signal, pidfd, signo, NULL, 0) < 0 ? -errno : 0;
}

void machine_learn_payload(Machine *mc)
{
        char path[96], buf[256];
        _cleanup_close_ int fd = -1;
        ssize_t n;
        long child;

        if (mc->boot || mc->payload > 0 || mc->leader == 0 || mc->state == MACHINE_EXITED)
                return;
        /* Under --as-pid2 the stub init has one child of its own: the command. */
        snprintf(path, sizeof path, "/proc/%" PRIu32 "/task/%" PRIu32 "/children", mc->leader, mc->leader);
        fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0)
                return;
        n = read(fd, buf, sizeof buf - 1);
        if (n <= 0)
                return;
        buf[n] = '\0';
        child = strtol(buf, NULL, 10);
        if (child <= 0)
                return;
        mc->payload_pidfd = pidfd_open_((pid_t) child);
        if (mc->payload_pidfd < 0) {
                mc->payload_pidfd = -1;
                return;
        }
        mc->payload = (uint32_t) child;
        log_debug("Machine %s: its command is pid %ld.", mc->name, child);
}

static int on_payload_retry(sd_event_source *s, uint64_t usec, void *userdata)
{
        Machine *mc = userdata;

        machine_learn_payload(mc);
        if (mc->payload > 0 || mc->state == MACHINE_EXITED || ++mc->payload_tries > 200) {
                mc->payload_retry = sd_event_source_disable_unref(mc->payload_retry);
                return 0;
        }
        (void) sd_event_source_set_time_relative(s, 5 * USEC_PER_MSEC);
        return sd_event_source_set_enabled(s, SD_EVENT_ONESHOT);
}

void machine_watch_payload(Machine *mc)
{
        machine_learn_payload(mc);
        if (mc->boot || mc->payload > 0 || mc->payload_retry)
                return;
        /* The stub init forks the command right after it starts: look again a moment later. */
        (void) sd_event_add_time_relative(mc->manager->event, &mc->payload_retry, CLOCK_MONOTONIC, 0, 0,
                                          on_payload_retry, mc);
}

static bool same_pid_namespace(pid_t pid, const struct stat *ns)
{
        char path[64];
        struct stat st;

        snprintf(path, sizeof path, "/proc/%d/ns/pid", (int) pid);
        return stat(path, &st) >= 0 && st.st_dev == ns->st_dev && st.st_ino == ns->st_ino;
}

/* Every process in the container's PID namespace, the leader last. A pidfd is opened before the
 * namespace is checked: a pid taken over meanwhile is checked as what the pidfd holds. */
static int kill_all(Machine *mc, int signo)
{
        _cleanup_(closedirp) DIR *d = NULL;
        struct dirent *de;
        char path[64];
        struct stat ns;
        unsigned n = 0;
        int k;

        snprintf(path, sizeof path, "/proc/%" PRIu32 "/ns/pid", mc->leader);
        if (stat(path, &ns) < 0)
                return -ESRCH;
        d = opendir("/proc");
        if (!d)
                return -errno;
        while ((de = readdir(d))) {
                char *end;
                long pid = strtol(de->d_name, &end, 10);
                _cleanup_close_ int fd = -1;

                if (*end || pid <= 0 || (uint32_t) pid == mc->leader)
                        continue;
                fd = pidfd_open_((pid_t) pid);
                if (fd < 0 || !same_pid_namespace((pid_t) pid, &ns))
                        continue;
                if (pidfd_send_signal_(fd, signo) >= 0)
                        n++;
        }
        k = pidfd_send_signal_(mc->leader_pidfd, signo);
        if (k < 0 && n == 0)
                return k;
        log_debug("Machine %s: signal %d sent to %u processes and its leader.", mc->name, signo, n);
        return 0;
}

int machine_kill_whom(Machine *mc, MachineKillWhom whom, int signo)
{
        int k;

        if (mc->state == MACHINE_EXITED)
                return -ESRCH;
        machine_learn_payload(mc);
        if (mc->leader_pidfd >= 0 && whom == MACHINE_KILL_ALL)
                k = kill_all(mc, signo);
        else
                k = machine_kill(mc, signo);
        if (k >= 0)
                mc->kill_signal = signo;
        return k;
}

int machine_kill_whom_from_string(const char *s)
{
        if (streq(s, "all") || isempty(s))
                return MACHINE_KILL_ALL;
        if (streq(s, "leader"))
                return MACHINE_KILL_LEADER;
        return -EINVAL;
}

/* The wait status of the command, where the kernel kept it; -1 if not known. */
static int payload_wait_status(Machine *mc)
{
        struct stamp_pidfd_info info = {.mask = STAMP_PIDFD_INFO_EXIT};

        if (mc->payload_pidfd < 0)
                return -1;
        if (ioctl(mc->payload_pidfd, STAMP_PIDFD_GET_INFO, &info) < 0 || !(info.mask & STAMP_PIDFD_INFO_EXIT))
                return -1;
        return info.exit_code;
}

int machine_exit_status(Machine *mc, int status)
{
        int ws;

        if (mc->boot) {
                /* A system that was killed, not shut down: nspawn says 1. */
                if (mc->kill_signal > 0 && status == EXIT_FAILURE)
                        return 128 + mc->kill_signal;
                return status;
        }
        ws = payload_wait_status(mc);
        if (ws >= 0) {
                if (WIFSIGNALED(ws))
                        return 128 + WTERMSIG(ws);
                if (WIFEXITED(ws))
                        return WEXITSTATUS(ws);
        }
        /* The command's own status is not known: what nspawn says, read with what was asked. */
        if (status > 128 && status != 255)
                return status; /* nspawn itself was killed */
        if (mc->kill_signal > 0 && (status == 255 || status == EXIT_FAILURE))
                return 128 + mc->kill_signal;
        if (mc->stop_requested && status == 0)
                return 128 + SIGTERM; /* the stub init ended the command with SIGTERM */
        return status;
}

int machine_console_resized(Machine *mc)
{
        if (mc->state == MACHINE_EXITED)
                return -ESRCH;
        /* Where nspawn is the supervisor itself (systemd as PID 1) there is no pidfd of it. */
        if (mc->nspawn_pidfd >= 0)
                return pidfd_send_signal_(mc->nspawn_pidfd, SIGWINCH);
        if (mc->nspawn_pid > 0 && kill(mc->nspawn_pid, SIGWINCH) < 0)
                return -errno;
        return 0;
}
