/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

#include "machine-ports.h"
#include "manager.h"

/* A machine: systemd-nspawn running an image, supervised by the daemon.
 *
 * The daemon forks and re-executes itself as the machine's supervisor (machine-supervisor.c, a step
 * as step.h says). Without systemd as PID 1, nspawn runs as PID 1 of a PID namespace of its own, under
 * that supervisor: when the daemon dies, the supervisor dies (PDEATHSIG), nspawn with it, and the
 * kernel takes the container along. Where systemd is PID 1 the supervisor first moves itself into a
 * transient scope bound to the daemon's unit and becomes nspawn, which then registers with machined. Either way an
 * ephemeral snapshot is the only thing that can outlive a crash, and the next start removes it as a stale temporary. */

typedef enum {
        MACHINE_STARTING,
        MACHINE_RUNNING,
        MACHINE_STOPPING,
        MACHINE_EXITED,
        _MACHINE_STATE_MAX,
} MachineState;

/* How long Stop() waits for a poweroff before it kills. */
#define MACHINE_STOP_TIMEOUT_USEC (10 * USEC_PER_SEC)

struct Machine {
        Manager *manager;
        char *name;
        char *image;
        char *object_path;
        char *owner; /* who started it, as manager_caller_key() says: what the per-caller cap counts */

        char **command; /* NULL: nspawn's default shell */
        char *term;     /* the caller's TERM, for an interactive console; NULL: nspawn's default */
        char *starter;  /* the bus connection that started it: its terminal is the console */
        bool boot;
        bool ephemeral;
        bool read_only;
        bool private_users;
        bool private_network;
        uid_t uid;       /* who started it (the caller's uid) */
        bool userns;     /* in a user namespace of stampd's choosing (see uid-range.h) */
        uid_t uid_base;  /* with userns: host uid of the container's root */
        int stdio_fd[3]; /* the caller's fds, until the supervisor has them */

        uint64_t memory_max; /* UINT64_MAX: none (machine-cgroup.h) */
        uint64_t cpu_weight; /* UINT64_MAX: none */
        char *cgroup;        /* the cgroup of its own the supervisor makes for the limits, or NULL */

        MachinePort *ports; /* published (machine-ports.h); then on a veth pair */
        size_t n_ports;
        unsigned net_index; /* which link-local /30 its veth pair has */
        pid_t net_pid;      /* the step that gives the veth pair its addresses */
        sd_event_source *net_source;

        char *lock_reason; /* what ImageBusy says while this machine holds its image */
        bool lock_held;

        MachineState state;
        uint64_t timestamp_usec; /* CLOCK_REALTIME of the start */
        /* nspawn's exit status: the payload's, 0 after a poweroff; 128+N if killed by signal N; -1 until
         * the machine ended. */
        int exit_status;
        pid_t pid; /* the supervisor */
        pid_t nspawn_pid;
        int nspawn_pidfd; /* where nspawn is not the supervising child itself */
        uint32_t leader;  /* the container's PID 1, 0 until known */
        int leader_pidfd;
        pid_t leader_inner;  /* the leader as nspawn names it, in nspawn's PID namespace */
        bool killed;         /* SIGKILL sent after the stop timeout */
        bool stop_requested; /* Stop() was asked: the stub init ends a command with SIGTERM */
        int kill_signal;     /* the last signal Kill() sent, 0 for none */
        uint32_t payload;    /* the command under nspawn's stub init, 0 until known (see machine-kill.c) */
        int payload_pidfd;
        unsigned payload_tries;
        sd_event_source *payload_retry;
        char *temp_name; /* the ephemeral snapshot in the store */
        char *snapshot;  /* a snapshot of the image to take just before the start (option "snapshot") */

        int notify_fd; /* nspawn's NOTIFY_SOCKET */
        sd_event_source *notify_source;
        sd_event_source *child_source;
        sd_event_source *stop_retry;
        sd_event_source *kill_timer;
        pid_t cleanup_pid;
        sd_event_source *cleanup_source;
};

const char *machine_state_to_string(MachineState s);

/* A machine object not started yet; takes over nothing. */
int machine_new(Manager *m, const char *name, const char *image, const char *owner, Machine **ret);
/* Start the supervisor. On success the machine is listed in the manager and owned by it; it
 * frees itself after MachineRemoved. */
int machine_start(Machine *mc);
/* Drop a machine; if it still runs, kill it (the daemon is going away). */
Machine *machine_free(Machine *mc);
static inline void machine_freep(Machine **mc)
{
        machine_free(*mc);
}
void machines_free_all(Manager *m);

Machine *machine_find(Manager *m, const char *name);
unsigned machines_of_owner(Manager *m, const char *owner);
/* The machine that holds @image busy, if a machine does. */
Machine *machine_holding_image(Manager *m, const char *image);

/* Poweroff (SIGRTMIN+4 to the container's init: a booted system shuts down, nspawn's stub init sends
 * the payload SIGTERM); SIGKILL after a timeout. */
int machine_stop(Machine *mc);
int machine_kill(Machine *mc, int signo);

/* machine-kill.c: whom a signal is for, as machinectl's --kill-whom= says. */
typedef enum {
        MACHINE_KILL_ALL,    /* every process in the container */
        MACHINE_KILL_LEADER, /* its PID 1 (nspawn's stub init under a command) */
} MachineKillWhom;
int machine_kill_whom_from_string(const char *s);
int machine_kill_whom(Machine *mc, MachineKillWhom whom, int signo);
/* Finds the command under the stub init (now, and a few times more while it may not be forked yet). */
void machine_learn_payload(Machine *mc);
void machine_watch_payload(Machine *mc);
/* SIGWINCH for nspawn: it reads the window size of its (the caller's) terminal anew. */
int machine_console_resized(Machine *mc);
/* The status MachineRemoved carries, from nspawn's @status: 128+N for a command ended by signal N. */
int machine_exit_status(Machine *mc, int status);

int machine_bus_path(const char *name, char **ret);

/* The supervisor's arguments (a strv to free) for step_spawn("machine"); machine-supervisor.c reads
 * them back. */
char **machine_supervisor_args(Machine *mc, const char *notify_address);
