/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>

#include <systemd/sd-daemon.h>
#include <systemd/sd-login.h>

#include "errors.h"
#include "image.h"
#include "machine.h"
#include "machine-cgroup.h"
#include "step.h"

#define NOTIFY_MSG_MAX 4096
#define NSPID_MAX 32

static const char *const machine_state_table[_MACHINE_STATE_MAX] = {
        [MACHINE_STARTING] = "starting",
        [MACHINE_RUNNING] = "running",
        [MACHINE_STOPPING] = "stopping",
        [MACHINE_EXITED] = "exited",
};

const char *machine_state_to_string(MachineState s)
{
        return s < _MACHINE_STATE_MAX ? machine_state_table[s] : "unknown";
}

int machine_bus_path(const char *name, char **ret)
{
        return sd_bus_path_encode(STAMP_MACHINE_PREFIX, name, ret);
}

static int pidfd_open_(pid_t pid)
{
        int fd = (int) syscall(SYS_pidfd_open, pid, 0);
        return fd < 0 ? -errno : fd;
}

static int pidfd_send_signal_(int pidfd, int signo)
{
        return syscall(SYS_pidfd_send_signal, pidfd, signo, NULL, 0) < 0 ? -errno : 0;
}

Machine *machine_find(Manager *m, const char *name)
{
        return g_hash_table_lookup(m->machines, name);
}

unsigned machines_of_owner(Manager *m, const char *owner)
{
        GHashTableIter it;
        gpointer v;
        unsigned n = 0;

        g_hash_table_iter_init(&it, m->machines);
        while (g_hash_table_iter_next(&it, NULL, &v))
                if (streq_ptr(((Machine *) v)->owner, owner))
                        n++;
        return n;
}

Machine *machine_holding_image(Manager *m, const char *image)
{
        GHashTableIter it;
        gpointer v;

        g_hash_table_iter_init(&it, m->machines);
        while (g_hash_table_iter_next(&it, NULL, &v)) {
                Machine *mc = v;
                if (mc->lock_held && streq(mc->image, image))
                        return mc;
        }
        return NULL;
}

int machine_new(Manager *m, const char *name, const char *image, const char *owner, Machine **ret)
{
        _cleanup_(machine_freep) Machine *mc = NULL;

        mc = calloc(1, sizeof *mc);
        if (!mc)
                return -ENOMEM;
        mc->manager = m;
        mc->stdio_fd[0] = mc->stdio_fd[1] = mc->stdio_fd[2] = -1;
        mc->notify_fd = -1;
        mc->leader_pidfd = -1;
        mc->nspawn_pidfd = -1;
        mc->payload_pidfd = -1;
        mc->exit_status = -1;
        mc->memory_max = mc->cpu_weight = UINT64_MAX;
        mc->state = MACHINE_STARTING;
        mc->name = strdup(name);
        mc->image = strdup(image);
        mc->owner = strdup(owner ?: "");
        if (!mc->name || !mc->image || !mc->owner)
                return -ENOMEM;
        if (machine_bus_path(name, &mc->object_path) < 0)
                return -ENOMEM;
        *ret = TAKE_PTR(mc);
        return 0;
}

/* ---- the image lock ---- */

/* A writable run holds its image alone; read-only runs share it, one of them holding the lock on
 * behalf of all; an ephemeral run works on its own snapshot and holds nothing. */
static int machine_lock_image(Machine *mc)
{
        Manager *m = mc->manager;
        Machine *holder;
        int k;

        if (mc->ephemeral)
                return 0;
        if (asprintf(&mc->lock_reason, "%s as machine %s", mc->read_only ? "running read-only" : "running", mc->name) <
            0)
                return -ENOMEM;
        holder = machine_holding_image(m, mc->image);
        if (holder && holder->read_only && mc->read_only)
                return 0;
        k = manager_image_lock(m, mc->image, mc->lock_reason);
        if (k < 0)
                return k;
        mc->lock_held = true;
        return 0;
}

static void machine_unlock_image(Machine *mc)
{
        Manager *m = mc->manager;
        GHashTableIter it;
        gpointer v;

        if (!mc->lock_held)
                return;
        manager_image_unlock(m, mc->image);
        mc->lock_held = false;

        /* Hand the lock over to another read-only run of the same image, if there is one. */
        g_hash_table_iter_init(&it, m->machines);
        while (g_hash_table_iter_next(&it, NULL, &v)) {
                Machine *other = v;
                if (other == mc || other->ephemeral || other->state == MACHINE_EXITED ||
                    !streq(other->image, mc->image))
                        continue;
                if (manager_image_lock(m, other->image, other->lock_reason) >= 0)
                        other->lock_held = true;
                break;
        }
}

/* ---- nspawn's notifications ---- */

static int notify_socket_open(int *ret_fd, char **ret_address)
{
        _cleanup_close_ int fd = -1;
        int one = 1;

        fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        if (fd < 0)
                return -errno;
        if (setsockopt(fd, SOL_SOCKET, SO_PASSCRED, &one, sizeof one) < 0)
                return -errno;
        for (int attempt = 0; attempt < 16; attempt++) {
                struct sockaddr_un sa = {.sun_family = AF_UNIX};
                char hex[17];
                socklen_t len;
                int n;

                random_hex(hex, 16);
                n = snprintf(sa.sun_path + 1, sizeof sa.sun_path - 1, "stamp/machine/%s", hex);
                len = (socklen_t) (offsetof(struct sockaddr_un, sun_path) + 1 + (size_t) n);
                if (bind(fd, (struct sockaddr *) &sa, len) < 0) {
                        if (errno == EADDRINUSE)
                                continue;
                        return -errno;
                }
                if (asprintf(ret_address, "@%s", sa.sun_path + 1) < 0)
                        return -ENOMEM;
                *ret_fd = TAKE_FD(fd);
                return 0;
        }
        return -EADDRINUSE;
}

/* The start of a small file of /proc in @buf, NUL-terminated; false if there is nothing to read. */
static bool read_proc_file(const char *path, char *buf, size_t size)
{
        _cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC);
        ssize_t n;

        if (fd < 0)
                return false;
        n = read(fd, buf, size - 1);
        if (n <= 0)
                return false;
        buf[n] = '\0';
        return true;
}

static pid_t parent_pid_of(pid_t pid)
{
        char path[64], buf[1024];
        const char *p;

        snprintf(path, sizeof path, "/proc/%d/stat", (int) pid);
        if (!read_proc_file(path, buf, sizeof buf))
                return 0;
        p = strrchr(buf, ')'); /* the command name may hold anything */
        if (!p || strlen(p) < 5)
                return 0;
        return (pid_t) strtol(p + 4, NULL, 10); /* ") S 123" */
}

/* The pids of @pid in its PID namespace and each one above it, outermost first. */
static int read_nspids(pid_t pid, pid_t ret[NSPID_MAX])
{
        char path[64], line[1024];
        _cleanup_fclose_ FILE *f = NULL;

        snprintf(path, sizeof path, "/proc/%d/status", (int) pid);
        f = fopen(path, "re");
        if (!f)
                return 0;
        while (fgets(line, sizeof line, f)) {
                char *p = line + strlen("NSpid:"), *end;
                int n = 0;

                if (strncmp(line, "NSpid:", strlen("NSpid:")) != 0)
                        continue;
                while (n < NSPID_MAX) {
                        long v = strtol(p, &end, 10);
                        if (end == p)
                                break;
                        ret[n++] = (pid_t) v;
                        p = end;
                }
                return n;
        }
        return 0;
}

/* nspawn names the container's PID 1 as seen from its own PID namespace; find it among nspawn's
 * children, by its pid at that level. */
static pid_t find_leader(pid_t nspawn, pid_t inner)
{
        pid_t ids[NSPID_MAX];
        char path[96], buf[4096], *p, *end;
        int level;

        level = read_nspids(nspawn, ids);
        if (level <= 0)
                return 0;
        snprintf(path, sizeof path, "/proc/%d/task/%d/children", (int) nspawn, (int) nspawn);
        if (!read_proc_file(path, buf, sizeof buf))
                return 0;
        for (p = buf;; p = end) {
                pid_t child = (pid_t) strtol(p, &end, 10);
                if (end == p)
                        break;
                if (read_nspids(child, ids) > level && ids[level - 1] == inner)
                        return child;
        }
        return 0;
}

static void machine_emit_changed(Machine *mc, const char *property)
{
        (void) sd_bus_emit_properties_changed(mc->manager->bus, mc->object_path, STAMP_MACHINE_IFACE, property, NULL);
}

static void machine_set_state(Machine *mc, MachineState state)
{
        if (mc->state == state)
                return;
        mc->state = state;
        machine_emit_changed(mc, "State");
}

static int on_net_done(sd_event_source *s, const siginfo_t *si, void *userdata)
{
        Machine *mc = userdata;

        mc->net_source = sd_event_source_disable_unref(mc->net_source);
        mc->net_pid = 0;
        if (si->si_code != CLD_EXITED || si->si_status != 0)
                log_warning("Machine %s: its network could not be set up; its ports are not published.", mc->name);
        return 0;
}

/* Addresses for both ends of the veth pair, in a step: nspawn publishes the ports once the container
 * has one. */
static void machine_start_net(Machine *mc)
{
        _cleanup_close_ int netns = -1;
        char path[64], fd_arg[32], host[16], container[16], host_arg[32], container_arg[48], name_arg[96];
        pid_t pid;

        snprintf(path, sizeof path, "/proc/%" PRIu32 "/ns/net", mc->leader);
        netns = open(path, O_RDONLY | O_CLOEXEC);
        if (netns < 0 || pidfd_send_signal_(mc->leader_pidfd, 0) < 0) {
                log_warning("Machine %s: cannot open its network namespace: %s", mc->name, strerror(errno));
                return;
        }
        machine_net_addresses(mc->net_index, host, container);
        snprintf(fd_arg, sizeof fd_arg, "netns=%d", netns);
        snprintf(host_arg, sizeof host_arg, "host=%s", host);
        snprintf(container_arg, sizeof container_arg, "container=%s", container);
        snprintf(name_arg, sizeof name_arg, "name=%s", mc->name);
        pid = step_spawn("machine-net", (char *[]) {fd_arg, host_arg, container_arg, name_arg, NULL}, &netns, 1, false);
        if (pid < 0)
                return;
        if (sd_event_add_child(mc->manager->event, &mc->net_source, pid, WEXITED, on_net_done, mc) < 0) {
                (void) kill(pid, SIGKILL);
                (void) waitpid(pid, NULL, 0);
                return;
        }
        mc->net_pid = pid;
}

static void machine_learn_leader(Machine *mc, pid_t inner)
{
        pid_t leader;
        int fd;

        if (inner > 0)
                mc->leader_inner = inner;
        if (mc->leader > 0 || mc->nspawn_pid <= 0 || mc->leader_inner <= 0)
                return;
        leader = find_leader(mc->nspawn_pid, mc->leader_inner);
        if (leader <= 0) {
                log_debug("Machine %s: cannot find its leader (pid %d inside) yet.", mc->name, (int) mc->leader_inner);
                return;
        }
        /* A pidfd, so that a signal meant for the leader never reaches a process that got its pid. */
        fd = pidfd_open_(leader);
        if (fd < 0)
                return;
        mc->leader_pidfd = fd;
        mc->leader = (uint32_t) leader;
        log_debug("Machine %s: leader is pid %d.", mc->name, (int) leader);
        machine_emit_changed(mc, "Leader");
        machine_watch_payload(mc);
        if (mc->n_ports > 0)
                machine_start_net(mc);
}

/* Whether a notification from @pid comes from this machine's nspawn. */
static bool machine_is_nspawn(Machine *mc, pid_t pid)
{
        if (pid <= 0)
                return false;
        if (pid == mc->nspawn_pid)
                return true;
        if (mc->nspawn_pid > 0)
                return false;
        /* Where systemd is PID 1 the supervising child became nspawn; otherwise nspawn is its child. */
        if (pid == mc->pid || (mc->pid > 0 && parent_pid_of(pid) == mc->pid)) {
                mc->nspawn_pid = pid;
                if (pid != mc->pid)
                        mc->nspawn_pidfd = pidfd_open_(pid);
                return true;
        }
        return false;
}

static int on_notify(sd_event_source *s, int fd, uint32_t revents, void *userdata)
{
        Machine *mc = userdata;
        char buf[NOTIFY_MSG_MAX + 1];
        union {
                struct cmsghdr h;
                uint8_t buf[CMSG_SPACE(sizeof(struct ucred)) + CMSG_SPACE(sizeof(int) * 16)];
        } control;
        struct iovec iov = {.iov_base = buf, .iov_len = NOTIFY_MSG_MAX};
        struct msghdr mh = {
                .msg_iov = &iov, .msg_iovlen = 1, .msg_control = &control, .msg_controllen = sizeof control};
        const struct ucred *ucred = NULL;
        pid_t inner = 0;
        bool ready = false;
        ssize_t n;

        n = recvmsg(fd, &mh, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
        if (n < 0)
                return 0;
        for (struct cmsghdr *c = CMSG_FIRSTHDR(&mh); c; c = CMSG_NXTHDR(&mh, c)) {
                if (c->cmsg_level != SOL_SOCKET)
                        continue;
                if (c->cmsg_type == SCM_CREDENTIALS && c->cmsg_len == CMSG_LEN(sizeof(struct ucred)))
                        ucred = (const struct ucred *) CMSG_DATA(c);
                else if (c->cmsg_type == SCM_RIGHTS) {
                        size_t nfd = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
                        for (size_t i = 0; i < nfd; i++) {
                                int passed;
                                memcpy(&passed, CMSG_DATA(c) + i * sizeof(int), sizeof passed);
                                safe_close(passed);
                        }
                }
        }
        if (!ucred || (mh.msg_flags & MSG_TRUNC) || !machine_is_nspawn(mc, ucred->pid))
                return 0;
        buf[n] = '\0';

        for (char *line = buf, *next; line && *line; line = next) {
                next = strchr(line, '\n');
                if (next)
                        *next++ = '\0';
                if (streq(line, "READY=1"))
                        ready = true;
                else if (strncmp(line, "X_NSPAWN_LEADER_PID=", strlen("X_NSPAWN_LEADER_PID=")) == 0)
                        inner = (pid_t) strtol(line + strlen("X_NSPAWN_LEADER_PID="), NULL, 10);
        }
        if (inner > 0 || ready)
                machine_learn_leader(mc, inner);
        if (ready && mc->state == MACHINE_STARTING) {
                log_info("Machine %s is running (leader pid %" PRIu32 ").", mc->name, mc->leader);
                machine_set_state(mc, MACHINE_RUNNING);
        }
        return 0;
}

/* ---- the end ---- */

static void machine_finalize(Machine *mc)
{
        Manager *m = mc->manager;

        (void) sd_bus_emit_signal(m->bus, STAMP_MANAGER_PATH, STAMP_MANAGER_IFACE, "MachineRemoved", "soi", mc->name,
                                  mc->object_path, (int32_t) mc->exit_status);
        (void) sd_bus_emit_object_removed(m->bus, mc->object_path);
        manager_note_activity(m);
        machine_free(mc);
}

static int on_cleanup_exit(sd_event_source *s, const siginfo_t *si, void *userdata)
{
        Machine *mc = userdata;

        mc->cleanup_source = sd_event_source_disable_unref(mc->cleanup_source);
        mc->cleanup_pid = 0;
        if (si->si_code == CLD_EXITED && si->si_status == 0)
                log_debug("Machine %s: removed its ephemeral snapshot %s.", mc->name, mc->temp_name);
        else
                log_warning("Machine %s: its ephemeral snapshot %s stays until the next start of the daemon.", mc->name,
                            mc->temp_name);
        machine_finalize(mc);
        return 0;
}

static int machine_start_cleanup(Machine *mc)
{
        Manager *m = mc->manager;
        pid_t pid;
        int k;

        pid = step_spawn_remove_tree(m->store_fd, mc->temp_name, false);
        if (pid < 0)
                return (int) pid;
        k = sd_event_add_child(m->event, &mc->cleanup_source, pid, WEXITED, on_cleanup_exit, mc);
        if (k < 0) {
                (void) kill(pid, SIGKILL);
                (void) waitpid(pid, NULL, 0);
                return k;
        }
        mc->cleanup_pid = pid;
        return 0;
}

#define CGROUP_REMOVE_TRIES 100
#define CGROUP_REMOVE_INTERVAL_USEC (100 * USEC_PER_MSEC)

typedef struct CgroupRemoval {
        char *name;
        unsigned tries;
} CgroupRemoval;

static void cgroup_removal_free(void *p)
{
        CgroupRemoval *r = p;

        (void) machine_cgroup_remove(r->name); /* a last try, when the daemon goes away meanwhile */
        free(r->name);
        free(r);
}

static int on_cgroup_retry(sd_event_source *s, uint64_t usec, void *userdata)
{
        CgroupRemoval *r = userdata;

        if (machine_cgroup_remove(r->name) < 0 && ++r->tries < CGROUP_REMOVE_TRIES) {
                (void) sd_event_source_set_time_relative(s, CGROUP_REMOVE_INTERVAL_USEC);
                return sd_event_source_set_enabled(s, SD_EVENT_ONESHOT);
        }
        if (r->tries >= CGROUP_REMOVE_TRIES)
                log_warning("Cgroup %s of an ended machine cannot be removed; it stays.", r->name);
        /* Done: the loop drops its reference, which frees it (and @r) once this call returns. */
        return sd_event_source_set_floating(s, false);
}

/* A killed machine's last processes take a moment to leave its cgroup: remove it now or a little
 * later, in a timer of the loop's own that outlives the machine. */
static void machine_cgroup_remove_later(Manager *m, const char *name)
{
        CgroupRemoval *r;
        sd_event_source *s = NULL;

        if (machine_cgroup_remove(name) >= 0)
                return;
        r = calloc(1, sizeof *r);
        if (!r || !(r->name = strdup(name))) {
                free(r);
                return;
        }
        if (sd_event_add_time_relative(m->event, &s, CLOCK_MONOTONIC, CGROUP_REMOVE_INTERVAL_USEC, 0, on_cgroup_retry,
                                       r) < 0) {
                cgroup_removal_free(r);
                return;
        }
        (void) sd_event_source_set_destroy_callback(s, cgroup_removal_free);
        (void) sd_event_source_set_floating(s, true);
        sd_event_source_unref(s);
}

static int on_child_exit(sd_event_source *s, const siginfo_t *si, void *userdata)
{
        Machine *mc = userdata;

        mc->child_source = sd_event_source_disable_unref(mc->child_source);
        mc->kill_timer = sd_event_source_disable_unref(mc->kill_timer);
        mc->stop_retry = sd_event_source_disable_unref(mc->stop_retry);
        mc->notify_source = sd_event_source_disable_unref(mc->notify_source);
        mc->notify_fd = safe_close(mc->notify_fd);
        mc->leader_pidfd = safe_close(mc->leader_pidfd);
        mc->nspawn_pidfd = safe_close(mc->nspawn_pidfd);
        mc->pid = 0;

        mc->payload_retry = sd_event_source_disable_unref(mc->payload_retry);
        mc->exit_status = machine_exit_status(mc, si->si_code == CLD_EXITED ? si->si_status : 128 + si->si_status);
        mc->payload_pidfd = safe_close(mc->payload_pidfd);
        log_info("Machine %s (image %s) ended with status %d.", mc->name, mc->image, mc->exit_status);
        machine_unlock_image(mc);
        if (mc->cgroup) /* nothing runs in it: its PID namespace went with nspawn */
                machine_cgroup_remove_later(mc->manager, mc->cgroup);
        mc->state = MACHINE_EXITED;
        (void) sd_bus_emit_properties_changed(mc->manager->bus, mc->object_path, STAMP_MACHINE_IFACE, "State",
                                              "ExitStatus", NULL);

        if (mc->temp_name && machine_start_cleanup(mc) >= 0)
                return 0;
        machine_finalize(mc);
        return 0;
}

int machine_start(Machine *mc)
{
        Manager *m = mc->manager;
        _cleanup_free_ char *address = NULL;
        g_auto(GStrv) args = NULL;
        int keep[4];
        pid_t pid;
        int k;

        if (mc->ephemeral) {
                mc->temp_name = store_temp_name(mc->image);
                if (!mc->temp_name)
                        return -ENOMEM;
        }
        k = notify_socket_open(&mc->notify_fd, &address);
        if (k < 0)
                return k;
        k = sd_event_add_io(m->event, &mc->notify_source, mc->notify_fd, EPOLLIN, on_notify, mc);
        if (k < 0)
                return k;
        k = machine_lock_image(mc);
        if (k < 0)
                return k;
        if ((mc->memory_max != UINT64_MAX || mc->cpu_weight != UINT64_MAX) && sd_booted() <= 0) {
                char hex[9];
                random_hex(hex, 8);
                if (asprintf(&mc->cgroup, "stamp-machine-%s-%s", mc->name, hex) < 0) {
                        mc->cgroup = NULL;
                        machine_unlock_image(mc);
                        return -ENOMEM;
                }
        }

        /* The supervisor is a step of its own (see machine-supervisor.c): its arguments and the fds it
         * keeps are all made here, before the fork. */
        args = machine_supervisor_args(mc, address);
        keep[0] = m->store_fd;
        for (int i = 0; i < 3; i++)
                keep[1 + i] = mc->stdio_fd[i];
        pid = step_spawn("machine", args, keep, ELEMENTSOF(keep), false);
        if (pid < 0) {
                machine_unlock_image(mc);
                return (int) pid;
        }

        mc->pid = pid;
        for (int i = 0; i < 3; i++)
                mc->stdio_fd[i] = safe_close(mc->stdio_fd[i]);
        k = sd_event_add_child(m->event, &mc->child_source, pid, WEXITED, on_child_exit, mc);
        if (k < 0) {
                machine_unlock_image(mc);
                return k; /* machine_free() kills the child */
        }
        mc->timestamp_usec = now_usec(CLOCK_REALTIME);
        g_hash_table_insert(m->machines, mc->name, mc);
        log_info("Machine %s: started %s on image %s%s%s for %s (pid %d).", mc->name, mc->boot ? "a boot" : "a command",
                 mc->image, mc->ephemeral ? ", ephemeral" : "", mc->read_only ? ", read-only" : "", mc->owner,
                 (int) pid);
        (void) sd_bus_emit_object_added(m->bus, mc->object_path);
        (void) sd_bus_emit_signal(m->bus, STAMP_MANAGER_PATH, STAMP_MANAGER_IFACE, "MachineNew", "so", mc->name,
                                  mc->object_path);
        return 0;
}

/* ---- stop and kill ---- */

/* SIGKILL for the container and nspawn. Where nspawn is PID 1 of our namespace its end waits for
 * everything inside, and the supervising child ends only after it: when the child's exit is seen, the
 * machine is gone. Killing the supervisor is the last resort. */
static void machine_kill_hard(Machine *mc)
{
        if (mc->leader_pidfd >= 0)
                (void) pidfd_send_signal_(mc->leader_pidfd, SIGKILL);
        if (mc->nspawn_pidfd >= 0)
                (void) pidfd_send_signal_(mc->nspawn_pidfd, SIGKILL);
        else if (mc->pid > 0)
                (void) kill(mc->pid, SIGKILL);
}

static int on_kill_timer(sd_event_source *s, uint64_t usec, void *userdata)
{
        Machine *mc = userdata;

        if (!mc->killed) {
                log_notice("Machine %s did not stop within %" PRIu64 " s; killing it.", mc->name,
                           MACHINE_STOP_TIMEOUT_USEC / USEC_PER_SEC);
                machine_kill_hard(mc);
                mc->killed = true;
                (void) sd_event_source_set_time_relative(s, MACHINE_STOP_TIMEOUT_USEC / 2);
                return sd_event_source_set_enabled(s, SD_EVENT_ONESHOT);
        }
        log_warning("Machine %s is still there after SIGKILL; killing its supervisor.", mc->name);
        if (mc->pid > 0)
                (void) kill(mc->pid, SIGKILL);
        return 0;
}

/* Whether the container's init @pid will see @signo. A PID namespace's init that neither blocks nor
 * catches a signal from outside never sees it: it is dropped, not queued. nspawn's stub init blocks
 * everything before it takes its name, but shows the signals it waits for as unblocked. */
static bool signal_would_reach(pid_t pid, int signo)
{
        char path[64], line[256];
        _cleanup_fclose_ FILE *f = NULL;
        uint64_t mask = 0;

        snprintf(path, sizeof path, "/proc/%d/status", (int) pid);
        f = fopen(path, "re");
        if (!f)
                return false;
        while (fgets(line, sizeof line, f)) {
                if (strncmp(line, "Name:", 5) == 0 && strstr(line, "(sd-stubinit)"))
                        return true;
                if (strncmp(line, "SigBlk:", 7) == 0 || strncmp(line, "SigCgt:", 7) == 0)
                        mask |= strtoull(line + 7, NULL, 16);
        }
        return mask & (UINT64_C(1) << (signo - 1));
}

/* Poweroff: a booted init shuts down; nspawn's stub init (which ignores a plain SIGTERM) sends its
 * payload SIGTERM and SIGHUP and ends when it is gone. Until the init is up and listening, ask again
 * a moment later. */
static int on_stop_retry(sd_event_source *s, uint64_t usec, void *userdata)
{
        Machine *mc = userdata;
        int k;

        if (mc->leader_pidfd >= 0 && signal_would_reach((pid_t) mc->leader, SIGRTMIN + 4)) {
                k = pidfd_send_signal_(mc->leader_pidfd, SIGRTMIN + 4);
                if (k < 0 && k != -ESRCH)
                        log_warning_errno(k, "Cannot ask machine %s to power off", mc->name);
                mc->stop_retry = sd_event_source_disable_unref(mc->stop_retry);
                return 0;
        }
        (void) sd_event_source_set_time_relative(s, 50 * USEC_PER_MSEC);
        return sd_event_source_set_enabled(s, SD_EVENT_ONESHOT);
}

int machine_stop(Machine *mc)
{
        int k;

        if (mc->state == MACHINE_EXITED)
                return 0;
        machine_learn_payload(mc);
        mc->stop_requested = true;
        machine_set_state(mc, MACHINE_STOPPING);
        if (!mc->stop_retry) {
                k = sd_event_add_time_relative(mc->manager->event, &mc->stop_retry, CLOCK_MONOTONIC, 0, 0,
                                               on_stop_retry, mc);
                if (k < 0)
                        return k;
        }
        if (!mc->kill_timer) {
                k = sd_event_add_time_relative(mc->manager->event, &mc->kill_timer, CLOCK_MONOTONIC,
                                               MACHINE_STOP_TIMEOUT_USEC, 0, on_kill_timer, mc);
                if (k < 0)
                        return k;
        }
        return 0;
}

int machine_kill(Machine *mc, int signo)
{
        if (mc->state == MACHINE_EXITED)
                return -ESRCH;
        if (mc->leader_pidfd >= 0)
                return pidfd_send_signal_(mc->leader_pidfd, signo);
        if (mc->pid > 0 && kill(mc->pid, signo) < 0)
                return -errno;
        return 0;
}

/* ---- freeing ---- */

Machine *machine_free(Machine *mc)
{
        bool interrupted;

        if (!mc)
                return NULL;
        if (mc->name && machine_find(mc->manager, mc->name) == mc)
                g_hash_table_remove(mc->manager->machines, mc->name);
        machine_unlock_image(mc);
        interrupted = mc->pid > 0 || mc->cleanup_pid > 0;
        if (mc->pid > 0) {
                /* The daemon is going away with the machine running. */
                log_notice("Killing machine %s.", mc->name);
                machine_kill_hard(mc);
                (void) waitpid(mc->pid, NULL, 0);
        }
        if (mc->cleanup_pid > 0) {
                (void) kill(mc->cleanup_pid, SIGKILL);
                (void) waitpid(mc->cleanup_pid, NULL, 0);
        }
        if (mc->net_pid > 0) {
                (void) kill(mc->net_pid, SIGKILL);
                (void) waitpid(mc->net_pid, NULL, 0);
        }
        sd_event_source_disable_unref(mc->net_source);
        free(mc->ports);
        /* Only when the daemon goes away: the snapshot would otherwise wait for the next start. */
        if (interrupted && mc->temp_name && mc->manager->store_fd >= 0)
                (void) store_remove_tree_retrying(mc->manager->store_fd, mc->temp_name);
        if (interrupted && mc->cgroup)
                (void) machine_cgroup_remove(mc->cgroup);

        sd_event_source_disable_unref(mc->notify_source);
        sd_event_source_disable_unref(mc->child_source);
        sd_event_source_disable_unref(mc->kill_timer);
        sd_event_source_disable_unref(mc->stop_retry);
        sd_event_source_disable_unref(mc->cleanup_source);
        sd_event_source_disable_unref(mc->payload_retry);
        safe_close(mc->payload_pidfd);
        safe_close(mc->notify_fd);
        safe_close(mc->leader_pidfd);
        safe_close(mc->nspawn_pidfd);
        for (int i = 0; i < 3; i++)
                safe_close(mc->stdio_fd[i]);
        strv_freep(&mc->command);
        free(mc->term);
        free(mc->starter);
        free(mc->name);
        free(mc->image);
        free(mc->object_path);
        free(mc->owner);
        free(mc->lock_reason);
        free(mc->temp_name);
        free(mc->snapshot);
        free(mc->cgroup);
        free(mc);
        return NULL;
}

void machines_free_all(Manager *m)
{
        GList *all = g_hash_table_get_values(m->machines);

        for (GList *l = all; l; l = l->next)
                machine_free(l->data);
        g_list_free(all);
}
