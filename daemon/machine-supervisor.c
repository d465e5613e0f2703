/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* A machine's supervisor: the step (see step.h) that stampd forks and re-executes for each machine. It
 * makes the ephemeral snapshot, moves itself into a scope where systemd is PID 1, and runs
 * systemd-nspawn: as itself there, as its child in a PID namespace of its own elsewhere. It is a fresh,
 * single-threaded process, so it may block, allocate and talk to the bus. */
#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include <glib.h>
#include <systemd/sd-bus.h>
#include <systemd/sd-daemon.h>
#include <systemd/sd-login.h>

#include "bus-util.h"
#include "machine.h"
#include "snapshots.h"
#include "machine-cgroup.h"
#include "step.h"
#include "store.h"
#include "uid-range.h"

#define NSPAWN "systemd-nspawn"
#define NSPAWN_RUNTIME_DIR "/run/systemd/nspawn"

/* What the daemon hands its supervisor, as machine_supervisor_args() writes it. */
typedef struct MachineSetup {
        const char *name;
        const char *image;
        const char *temp_name; /* the ephemeral snapshot to make, or NULL */
        const char *snapshot;  /* a snapshot of the image to take first, or NULL */
        const char *store;
        int store_fd;
        bool store_is_btrfs;
        bool boot, read_only, private_users, private_network;
        unsigned uid_base; /* > 0: a user namespace of stampd's choosing, this host uid as its root */
        const char *notify_address;
        const char *term; /* TERM for nspawn's interactive console, or NULL */
        int stdio[3];     /* the caller's fds, -1 for /dev/null */
        char **command;   /* NULL: nspawn's default shell */

        uint64_t memory_max, cpu_weight; /* UINT64_MAX: none */
        const char *cgroup;              /* without systemd: the cgroup to make for them */

        const char *ports[MACHINE_PORTS_MAX]; /* nspawn's --port values; then on a veth pair */
        size_t n_ports;
} MachineSetup;

static int open_null(int flags)
{
        int fd = open("/dev/null", flags | O_CLOEXEC | O_NOCTTY);
        return fd < 0 ? -errno : fd;
}

static void supervisor_fail(int err_fd, const char *fmt, ...) _printf_(2, 3);
static void supervisor_fail(int err_fd, const char *fmt, ...)
{
        char text[1024];
        va_list ap;

        va_start(ap, fmt);
        vsnprintf(text, sizeof text, fmt, ap);
        va_end(ap);
        log_error("%s", text);
        if (err_fd >= 0)
                dprintf(err_fd, "%s\n", text);
}

typedef struct JobRemovedWait {
        const char *job;
        bool done;
        char *result;
} JobRemovedWait;

static int on_job_removed(sd_bus_message *msg, void *userdata, sd_bus_error *error)
{
        JobRemovedWait *w = userdata;
        const char *path, *unit, *result;
        uint32_t id;

        if (sd_bus_message_read(msg, "uoss", &id, &path, &unit, &result) < 0 || !w->job || !streq(path, w->job))
                return 0;
        w->done = true;
        w->result = strdup(result);
        return 0;
}

/* Where systemd is PID 1: move this process into a transient scope of its own, stopped together with
 * the daemon's unit, so the container gets its own cgroup and cannot outlive the daemon. Returns
 * whether machined can be used. Blocking. */
static int enter_scope(const MachineSetup *mc)
{
        _cleanup_(sd_bus_flush_close_unrefp) sd_bus *bus = NULL;
        _cleanup_bus_message_ sd_bus_message *call = NULL, *reply = NULL;
        _cleanup_bus_error_ sd_bus_error error = SD_BUS_ERROR_NULL;
        _cleanup_free_ char *unit = NULL, *own_unit = NULL, *description = NULL;
        JobRemovedWait w = {};
        const char *job;
        uint64_t deadline;
        char hex[9];
        int k;

        k = sd_bus_open_system(&bus);
        if (k < 0)
                return log_error_errno(k, "Machine %s: cannot connect to the system bus", mc->name);

        random_hex(hex, 8);
        if (asprintf(&unit, "stamp-machine-%s-%s.scope", mc->name, hex) < 0 ||
            asprintf(&description, "stamp machine %s (image %s)", mc->name, mc->image) < 0)
                return -ENOMEM;
        (void) sd_pid_get_unit(getppid(), &own_unit);

        k = sd_bus_match_signal(bus, NULL, "org.freedesktop.systemd1", "/org/freedesktop/systemd1",
                                "org.freedesktop.systemd1.Manager", "JobRemoved", on_job_removed, &w);
        if (k >= 0)
                k = sd_bus_message_new_method_call(bus, &call, "org.freedesktop.systemd1", "/org/freedesktop/systemd1",
                                                   "org.freedesktop.systemd1.Manager", "StartTransientUnit");
        if (k >= 0)
                k = sd_bus_message_append(call, "ss", unit, "fail");
        if (k >= 0)
                k = sd_bus_message_open_container(call, 'a', "(sv)");
        if (k >= 0)
                k = sd_bus_message_append(call, "(sv)(sv)(sv)", "Description", "s", description, "PIDs", "au", 1,
                                          (uint32_t) getpid(), "CollectMode", "s", "inactive-or-failed");
        if (k >= 0 && own_unit)
                k = sd_bus_message_append(call, "(sv)(sv)", "BindsTo", "as", 1, own_unit, "After", "as", 1, own_unit);
        if (k >= 0 && mc->memory_max != UINT64_MAX)
                k = sd_bus_message_append(call, "(sv)", "MemoryMax", "t", mc->memory_max);
        if (k >= 0 && mc->cpu_weight != UINT64_MAX)
                k = sd_bus_message_append(call, "(sv)", "CPUWeight", "t", mc->cpu_weight);
        if (k >= 0)
                k = sd_bus_message_close_container(call);
        if (k >= 0)
                k = sd_bus_message_append(call, "a(sa(sv))", 0);
        if (k < 0)
                return log_error_errno(k, "Machine %s: cannot build the scope request", mc->name);

        k = sd_bus_call(bus, call, 0, &error, &reply);
        if (k < 0) {
                log_error("Machine %s: cannot start scope %s: %s", mc->name, unit, error.message ?: strerror(-k));
                return k;
        }
        k = sd_bus_message_read(reply, "o", &job);
        if (k < 0)
                return k;
        w.job = job;
        deadline = now_usec(CLOCK_MONOTONIC) + 30 * USEC_PER_SEC;
        while (!w.done && now_usec(CLOCK_MONOTONIC) < deadline) {
                k = sd_bus_process(bus, NULL);
                if (k < 0)
                        return k;
                if (k == 0)
                        (void) sd_bus_wait(bus, USEC_PER_SEC);
        }
        if (!w.done || !streq_ptr(w.result, "done")) {
                log_error("Machine %s: scope %s did not start (%s)", mc->name, unit, w.result ?: "timeout");
                free(w.result);
                return -EIO;
        }
        free(w.result);

        /* machined is bus-activated where it is installed: starting it tells whether it is there. */
        sd_bus_message_unref(TAKE_PTR(reply));
        sd_bus_error_free(&error);
        k = sd_bus_call_method(bus, "org.freedesktop.DBus", "/org/freedesktop/DBus", "org.freedesktop.DBus",
                               "StartServiceByName", &error, &reply, "su", "org.freedesktop.machine1", 0);
        return k >= 0;
}

static char **nspawn_argv(const MachineSetup *mc, const char *directory, const char *console, bool do_register)
{
        GPtrArray *a = g_ptr_array_new();

        g_ptr_array_add(a, g_strdup(NSPAWN));
        g_ptr_array_add(a, g_strdup("--quiet"));
        g_ptr_array_add(a, g_strdup("--keep-unit"));
        g_ptr_array_add(a, g_strdup(do_register ? "--register=yes" : "--register=no"));
        g_ptr_array_add(a, g_strdup_printf("--machine=%s", mc->name));
        g_ptr_array_add(a, g_strdup_printf("--directory=%s", directory));
        g_ptr_array_add(a, g_strdup_printf("--console=%s", console));
        /* Without --boot the payload runs under nspawn's stub init, so it is not PID 1: signals reach it,
         * zombies are reaped, and the stub turns a poweroff request into SIGTERM for the payload. */
        g_ptr_array_add(a, g_strdup(mc->boot ? "--boot" : "--as-pid2"));
        if (mc->read_only)
                g_ptr_array_add(a, g_strdup("--read-only"));
        if (mc->uid_base > 0) {
                /* The image stays 0-based on disk: an idmapped mount shows it to the namespace. */
                g_ptr_array_add(a, g_strdup_printf("--private-users=%u:%u", mc->uid_base, UID_RANGE_SIZE));
                g_ptr_array_add(a, g_strdup("--private-users-ownership=map"));
        } else if (mc->private_users)
                g_ptr_array_add(a, g_strdup("--private-users=pick"));
        if (mc->n_ports > 0) {
                g_ptr_array_add(a, g_strdup("--network-veth"));
                for (size_t i = 0; i < mc->n_ports; i++)
                        g_ptr_array_add(a, g_strdup_printf("--port=%s", mc->ports[i]));
        } else if (mc->private_network)
                g_ptr_array_add(a, g_strdup("--private-network"));
        if (mc->command) {
                g_ptr_array_add(a, g_strdup("--"));
                for (char **c = mc->command; *c; c++)
                        g_ptr_array_add(a, g_strdup(*c));
        }
        g_ptr_array_add(a, NULL);
        return (char **) g_ptr_array_free(a, FALSE);
}

static const char *console_mode(const MachineSetup *mc, int in, int out)
{
        /* Nobody attached (start --no-block): the console is nobody's, nspawn's own output goes to
         * stampd's log, and so does a command's. */
        if (mc->stdio[0] < 0 && mc->stdio[1] < 0 && mc->stdio[2] < 0)
                return mc->boot ? "passive" : "pipe";
        /* nspawn's interactive console relays its own stdin/stdout, which must then be the terminal. */
        if (isatty(in) && isatty(out))
                return "interactive";
        /* A booted system writes to its console, never to stdout: relay the console's output. */
        if (mc->boot)
                return "read-only";
        return "pipe";
}

_noreturn_ static void exec_nspawn(const MachineSetup *mc, char **argv, const char *notify_address, const int stdio[3])
{
        const char *path = getenv("PATH") ?: DEFAULT_PATH;
        g_autofree char *env_path = g_strdup_printf("PATH=%s", path);
        g_autofree char *env_notify = g_strdup_printf("NOTIFY_SOCKET=%s", notify_address);
        /* nspawn gives its interactive console the TERM it has itself (vt220 without one). */
        g_autofree char *env_term = mc->term ? g_strdup_printf("TERM=%s", mc->term) : NULL;
        /* nspawn locks an image with a file beside it in the store, for machinectl and other nspawns to
         * see; an ephemeral snapshot is ours alone, and its lock file would only be litter. */
        char *envp[] = {env_path, env_notify, mc->temp_name ? (char *) "SYSTEMD_NSPAWN_LOCK=0" : NULL, NULL, NULL};

        if (env_term)
                envp[mc->temp_name ? 3 : 2] = env_term;

        for (int i = 0; i < 3; i++)
                if (stdio[i] == i ? fcntl(i, F_SETFD, 0) < 0 : dup2(stdio[i], i) < 0) {
                        supervisor_fail(stdio[2], "Machine %s: cannot set up stdio: %s", mc->name, strerror(errno));
                        _exit(EXIT_FAILURE);
                }
        execvpe(argv[0], argv, envp);
        supervisor_fail(STDERR_FILENO, "Machine %s: cannot run %s: %s", mc->name, argv[0], strerror(errno));
        _exit(127);
}

/* nspawn's mount namespace machinery keeps state below /run/systemd/nspawn; where /run is no tmpfs it
 * refuses to clean up there and says so on the caller's terminal. A private tmpfs keeps it quiet and
 * leaves nothing behind. */
static void private_nspawn_dir(void)
{
        if (mount(NULL, "/", NULL, MS_REC | MS_SLAVE, NULL) < 0)
                return;
        (void) mkdir("/run/systemd", 0755);
        (void) mkdir(NSPAWN_RUNTIME_DIR, 0755);
        (void) mount("stampd", NSPAWN_RUNTIME_DIR, "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, "mode=0755");
}

static int machine_arg(const char *key, const char *v, void *userdata)
{
        MachineSetup *s = userdata;

        if (streq(key, "name"))
                s->name = v;
        else if (streq(key, "image"))
                s->image = v;
        else if (streq(key, "temp"))
                s->temp_name = v;
        else if (streq(key, "snapshot"))
                s->snapshot = v;
        else if (streq(key, "store"))
                s->store = v;
        else if (streq(key, "store-fd"))
                return step_parse_fd(v, &s->store_fd);
        else if (streq(key, "btrfs"))
                s->store_is_btrfs = streq(v, "1");
        else if (streq(key, "boot"))
                s->boot = streq(v, "1");
        else if (streq(key, "read-only"))
                s->read_only = streq(v, "1");
        else if (streq(key, "private-users"))
                s->private_users = streq(v, "1");
        else if (streq(key, "uid-base")) {
                char *end;
                unsigned long b;
                errno = 0;
                b = strtoul(v, &end, 10);
                if (errno != 0 || end == v || *end || b < UID_RANGE_FIRST || b > UID_RANGE_LAST)
                        return -EINVAL;
                s->uid_base = (unsigned) b;
        } else if (streq(key, "memory-max") || streq(key, "cpu-weight")) {
                char *end;
                uint64_t u;
                errno = 0;
                u = strtoull(v, &end, 10);
                if (errno != 0 || end == v || *end)
                        return -EINVAL;
                *(streq(key, "memory-max") ? &s->memory_max : &s->cpu_weight) = u;
        } else if (streq(key, "cgroup"))
                s->cgroup = v;
        else if (streq(key, "port")) {
                if (s->n_ports >= MACHINE_PORTS_MAX)
                        return -E2BIG;
                s->ports[s->n_ports++] = v;
        } else if (streq(key, "private-network"))
                s->private_network = streq(v, "1");
        else if (streq(key, "notify"))
                s->notify_address = v;
        else if (streq(key, "term"))
                s->term = v;
        else
                return -EINVAL;
        return 0;
}

static int parse_setup(int argc, char *argv[], MachineSetup *s)
{
        int k;

        *s = (MachineSetup) {.store_fd = -1, .stdio = {-1, -1, -1}, .memory_max = UINT64_MAX, .cpu_weight = UINT64_MAX};
        k = step_parse_args(argc, argv, s->stdio, machine_arg, s, &s->command);
        if (k < 0)
                return k;
        if (!s->name || !s->image || !s->store || s->store_fd < 0 || !s->notify_address)
                return -EINVAL;
        return 0;
}

char **machine_supervisor_args(Machine *mc, const char *notify_address)
{
        Manager *m = mc->manager;
        GPtrArray *a = g_ptr_array_new();

        g_ptr_array_add(a, g_strdup_printf("name=%s", mc->name));
        g_ptr_array_add(a, g_strdup_printf("image=%s", mc->image));
        if (mc->temp_name)
                g_ptr_array_add(a, g_strdup_printf("temp=%s", mc->temp_name));
        if (mc->snapshot)
                g_ptr_array_add(a, g_strdup_printf("snapshot=%s", mc->snapshot));
        g_ptr_array_add(a, g_strdup_printf("store=%s", m->store));
        g_ptr_array_add(a, g_strdup_printf("store-fd=%d", m->store_fd));
        g_ptr_array_add(a, g_strdup_printf("btrfs=%d", m->store_is_btrfs));
        g_ptr_array_add(a, g_strdup_printf("boot=%d", mc->boot));
        g_ptr_array_add(a, g_strdup_printf("read-only=%d", mc->read_only));
        g_ptr_array_add(a, g_strdup_printf("private-users=%d", mc->private_users));
        g_ptr_array_add(a, g_strdup_printf("private-network=%d", mc->private_network));
        if (mc->userns)
                g_ptr_array_add(a, g_strdup_printf("uid-base=%u", (unsigned) mc->uid_base));
        if (mc->memory_max != UINT64_MAX)
                g_ptr_array_add(a, g_strdup_printf("memory-max=%" PRIu64, mc->memory_max));
        if (mc->cpu_weight != UINT64_MAX)
                g_ptr_array_add(a, g_strdup_printf("cpu-weight=%" PRIu64, mc->cpu_weight));
        if (mc->cgroup)
                g_ptr_array_add(a, g_strdup_printf("cgroup=%s", mc->cgroup));
        for (size_t i = 0; i < mc->n_ports; i++)
                g_ptr_array_add(a, g_strdup_printf("port=%s:%u:%u", mc->ports[i].protocol, mc->ports[i].host,
                                                   mc->ports[i].container));
        g_ptr_array_add(a, g_strdup_printf("notify=%s", notify_address));
        if (mc->term)
                g_ptr_array_add(a, g_strdup_printf("term=%s", mc->term));
        g_ptr_array_add(a, g_strdup_printf("stdin=%d", mc->stdio_fd[0]));
        g_ptr_array_add(a, g_strdup_printf("stdout=%d", mc->stdio_fd[1]));
        g_ptr_array_add(a, g_strdup_printf("stderr=%d", mc->stdio_fd[2]));
        if (mc->command) {
                g_ptr_array_add(a, g_strdup("--"));
                for (char **c = mc->command; *c; c++)
                        g_ptr_array_add(a, g_strdup(*c));
        }
        g_ptr_array_add(a, NULL);
        return (char **) g_ptr_array_free(a, FALSE);
}

int machine_supervisor_main(int argc, char *argv[])
{
        _cleanup_free_ char *directory = NULL;
        g_auto(GStrv) nspawn = NULL;
        MachineSetup setup, *mc = &setup;
        int stdio[3], alive[2];
        bool booted = sd_booted() > 0, do_register = false;
        pid_t pid;
        int status, k;

        k = parse_setup(argc, argv, &setup);
        if (k < 0) {
                log_error_errno(k, "Invalid arguments for a machine's supervisor");
                _exit(EXIT_FAILURE);
        }
        for (int i = 0; i < 3; i++) {
                bool detached = mc->stdio[0] < 0 && mc->stdio[1] < 0 && mc->stdio[2] < 0;
                if (mc->stdio[i] >= 0)
                        stdio[i] = mc->stdio[i];
                else if (detached && i > 0)
                        stdio[i] = fcntl(STDERR_FILENO, F_DUPFD_CLOEXEC, 3); /* stampd's log */
                else
                        stdio[i] = open_null(i == 0 ? O_RDONLY : O_WRONLY);
                if (stdio[i] < 0)
                        stdio[i] = open_null(i == 0 ? O_RDONLY : O_WRONLY);
                if (stdio[i] < 0)
                        _exit(EXIT_FAILURE);
        }
        /* Only what the machine needs: no copy of the daemon's bus, of other machines' fds, of pipes
         * whose end-of-file someone waits for. step_spawn() closed all else but the daemon's stdin and
         * stdout, which are none of the machine's business either; its stderr stays for the log. Only
         * now: while they were open, none of the fds above could take their numbers, which
         * exec_nspawn() is to fill in order. */
        (void) close(STDIN_FILENO);
        (void) close(STDOUT_FILENO);

        if (mc->snapshot) {
                char err[1024] = "";
                k = store_snapshot_create(mc->store_fd, mc->image, mc->snapshot, err, sizeof err);
                if (k < 0) {
                        supervisor_fail(stdio[2], "Machine %s: cannot take snapshot %s of %s: %s", mc->name,
                                        mc->snapshot, mc->image, err[0] ? err : strerror(-k));
                        _exit(EXIT_FAILURE);
                }
        }
        if (mc->temp_name) {
                char err[1024] = "";
                k = store_clone_image(mc->store_fd, mc->store_is_btrfs, mc->image, mc->temp_name, 0, UID_INVALID, err,
                                      sizeof err);
                if (k < 0) {
                        supervisor_fail(stdio[2], "Machine %s: cannot make the ephemeral snapshot of %s: %s", mc->name,
                                        mc->image, err[0] ? err : strerror(-k));
                        _exit(EXIT_FAILURE);
                }
        }
        if (asprintf(&directory, "%s/%s", mc->store, mc->temp_name ?: mc->image) < 0)
                _exit(EXIT_FAILURE);

        if (booted) {
                k = enter_scope(mc);
                if (k < 0) {
                        supervisor_fail(stdio[2], "Machine %s: cannot set up its scope unit", mc->name);
                        _exit(EXIT_FAILURE);
                }
                do_register = k > 0;
        }
        nspawn = nspawn_argv(mc, directory, console_mode(mc, stdio[0], stdio[1]), do_register);
        if (booted) {
                /* A mount namespace only: the pids machined registers stay the host's. */
                if (unshare(CLONE_NEWNS) >= 0 && mount(NULL, "/", NULL, MS_REC | MS_SLAVE, NULL) >= 0)
                        if (store_mount_allow_dev_suid(directory) < 0)
                                log_warning("Machine %s: set-uid programs will not work inside: cannot remount its "
                                            "image: %s",
                                            mc->name, strerror(errno));
                exec_nspawn(mc, nspawn, mc->notify_address, stdio);
        }

        /* The limits: a cgroup of the machine's own, entered before nspawn starts, so that everything
         * it runs is counted there. */
        if (mc->cgroup) {
                char err[1024] = "";
                k = machine_cgroup_join(mc->cgroup, mc->memory_max, mc->cpu_weight, err, sizeof err);
                if (k < 0) {
                        supervisor_fail(stdio[2], "Machine %s: cannot apply its limits: %s", mc->name, err);
                        _exit(EXIT_FAILURE);
                }
        }

        /* nspawn as PID 1 of a PID namespace of ours: when it dies, for whatever reason, the kernel takes
         * the container with it. Registration stays off: machined would read our namespace's pids as its
         * own. */
        if (unshare(CLONE_NEWNS | CLONE_NEWPID) < 0) {
                log_warning("Machine %s runs without a PID namespace of its own: %s", mc->name, strerror(errno));
                exec_nspawn(mc, nspawn, mc->notify_address, stdio);
        }
        private_nspawn_dir();
        if (store_mount_allow_dev_suid(directory) < 0)
                log_warning("Machine %s: set-uid programs will not work inside: cannot remount its "
                            "image: %s",
                            mc->name, strerror(errno));

        /* Its read end tells nspawn whether we died before it asked to die with us. */
        if (pipe2(alive, O_CLOEXEC) < 0) {
                supervisor_fail(stdio[2], "Machine %s: cannot make a pipe: %s", mc->name, strerror(errno));
                _exit(EXIT_FAILURE);
        }
        /* This process has a single thread (a fresh exec), so its child may go on without exec for a
         * moment: it must mount /proc from inside the new PID namespace, which only children enter. */
        pid = fork();
        if (pid < 0) {
                supervisor_fail(stdio[2], "Machine %s: cannot fork: %s", mc->name, strerror(errno));
                _exit(EXIT_FAILURE);
        }
        if (pid == 0) {
                struct pollfd p = {.fd = alive[0], .events = POLLIN};

                (void) prctl(PR_SET_PDEATHSIG, SIGKILL);
                safe_close(alive[1]);
                if (poll(&p, 1, 0) != 0)
                        _exit(EXIT_FAILURE);
                /* nspawn names processes by the pids it sees (writing the user namespace's maps of its
                 * child, for one): /proc must show our namespace. */
                if (mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL) < 0)
                        log_warning("Machine %s: cannot mount /proc for its PID namespace: %s", mc->name,
                                    strerror(errno));
                exec_nspawn(mc, nspawn, mc->notify_address, stdio);
        }
        safe_close(alive[0]);
        for (int i = 0; i < 3; i++)
                safe_close(stdio[i]);
        while (waitpid(pid, &status, 0) < 0)
                if (errno != EINTR)
                        _exit(EXIT_FAILURE);
        _exit(WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status));
}
