/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* exec, and shell into a running machine */

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#include "escape.h"
#include "stampctl.h"

const char *arg_user = NULL;
char **arg_env = NULL;
const char *arg_chdir = NULL;

int arg_env_add(const char *entry)
{
        size_t n = strv_length(arg_env);
        char **l = realloc(arg_env, sizeof(char *) * (n + 2));

        if (!l)
                return -ENOMEM;
        arg_env = l;
        l[n] = strdup(entry);
        l[n + 1] = NULL;
        return l[n] ? 0 : -ENOMEM;
}

struct exec_wait {
        sd_bus *bus;
        sd_event *event;
        uint32_t id; /* 0 until the reply said */
        bool exited;
        char *result;
        int status;
        char *message;
        bool vanished;
        bool detached;
        bool signalled; /* a signal was passed on to the command */
        sd_bus_slot *kill_slot;
};

static void exec_wait_done(struct exec_wait *w)
{
        sd_bus_slot_unref(w->kill_slot);
        free(w->result);
        free(w->message);
}

/* ExecExited for our id; it may come before we know the id only in theory (the reply is sent first), but
 * one seen early is kept all the same: the signal is sent to us alone, for one of our calls. */
static int on_exec_exited(sd_bus_message *m, void *userdata, sd_bus_error *ret_error)
{
        struct exec_wait *w = userdata;
        const char *machine, *result, *message;
        uint32_t id;
        int32_t status;

        if (sd_bus_message_read(m, "ussis", &id, &machine, &result, &status, &message) < 0)
                return 0;
        if (w->id == 0 || id != w->id)
                return 0;
        w->exited = true;
        w->result = strdup(result);
        w->status = status;
        w->message = strdup(message);
        sd_event_exit(w->event, 0);
        return 0;
}

static int on_name_owner_changed(sd_bus_message *m, void *userdata, sd_bus_error *ret_error)
{
        struct exec_wait *w = userdata;
        const char *name, *old_owner, *new_owner;

        if (sd_bus_message_read(m, "sss", &name, &old_owner, &new_owner) < 0)
                return 0;
        if (*old_owner && !*new_owner) {
                w->vanished = true;
                sd_event_exit(w->event, 0);
        }
        return 0;
}

static int on_kill_reply(sd_bus_message *m, void *userdata, sd_bus_error *ret_error)
{
        struct exec_wait *w = userdata;

        w->kill_slot = sd_bus_slot_unref(w->kill_slot);
        if (sd_bus_message_is_method_error(m, NULL)) {
                /* It ended meanwhile, or cannot be reached: stop waiting. */
                w->detached = true;
                sd_event_exit(w->event, 0);
        }
        return 0;
}

/* A signal to stampctl (Ctrl-C where there is no terminal relay) goes on to the command; a second one,
 * or one that cannot be passed on, ends the wait. */
static int on_signal(sd_event_source *s, const struct signalfd_siginfo *si, void *userdata)
{
        struct exec_wait *w = userdata;
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL;
        int r;

        if (w->signalled || w->id == 0) {
                w->detached = true;
                sd_event_exit(w->event, 0);
                return 0;
        }
        w->signalled = true;
        r = bus_new_manager_call(w->bus, &m, "KillExec");
        if (r >= 0)
                r = sd_bus_message_append(m, "ui", w->id, (int32_t) si->ssi_signo);
        if (r >= 0)
                r = sd_bus_call_async(w->bus, &w->kill_slot, m, on_kill_reply, w, UINT64_MAX);
        if (r < 0) {
                w->detached = true;
                sd_event_exit(w->event, 0);
        }
        return 0;
}

static bool env_has(char **env, const char *name)
{
        size_t n = strlen(name);

        for (char **e = env; e && *e; e++)
                if (strncmp(*e, name, n) == 0 && (*e)[n] == '=')
                        return true;
        return false;
}

/* The exit code for how the command ended: its own, 128+N for signal N, and for a command that could
 * not be run what env(1) and shells use: 127 not found, 126 found but not runnable, 125 nothing ran. */
static int exit_code_from_result(const struct exec_wait *w)
{
        _cleanup_(freep) char *message = NULL;

        if (strcmp(w->result, "exited") == 0)
                return w->status & 0xff;
        if (strcmp(w->result, "killed") == 0 || strcmp(w->result, "dumped") == 0)
                return 128 + (w->status & 0x7f);
        message = text_escape(w->message ? w->message : "", 0, ESCAPE_TERMINAL);
        log_error(0, "%s", message && *message ? message : w->result);
        if (strcmp(w->result, "exec-failed") == 0)
                return w->status == ENOENT ? 127 : 126;
        return 125;
}

/* The State of machine @name, or NULL if there is none. */
static char *machine_state(sd_bus *bus, const char *name)
{
        _cleanup_(sd_bus_error_freep) sd_bus_error error = SD_BUS_ERROR_NULL;
        _cleanup_(freep) char *path = NULL;
        char *state = NULL;

        if (sd_bus_path_encode(STAMP_MACHINE_PREFIX, name, &path) < 0)
                return NULL;
        if (sd_bus_get_property_string(bus, STAMP_BUS_NAME, path, STAMP_MACHINE_IFACE, "State", &error, &state) < 0)
                return NULL;
        return state;
}

/* A machine just started (start --no-block) is "starting" until its init is up: wait for that, a
 * while, rather than refuse. */
#define MACHINE_STARTING_WAIT_USEC (60 * UINT64_C(1000000))
static void wait_while_starting(sd_bus *bus, const char *name)
{
        struct timespec ts;
        uint64_t deadline;

        clock_gettime(CLOCK_MONOTONIC, &ts);
        deadline = (uint64_t) ts.tv_sec * 1000000 + (uint64_t) ts.tv_nsec / 1000 + MACHINE_STARTING_WAIT_USEC;
        for (bool said = false;;) {
                _cleanup_(freep) char *state = machine_state(bus, name);

                if (!state || strcmp(state, "starting") != 0)
                        return;
                clock_gettime(CLOCK_MONOTONIC, &ts);
                if ((uint64_t) ts.tv_sec * 1000000 + (uint64_t) ts.tv_nsec / 1000 > deadline)
                        return;
                if (!said) {
                        log_info("Waiting for machine %s to finish starting...", name);
                        said = true;
                }
                (void) usleep(100 * 1000);
        }
}

/* ExecMachine with @argv (NULL: a login shell) and fds @in, @out, @err; wait for ExecExited. */
static int exec_in_machine(sd_bus *bus, const char *name, char **argv, int in, int out, int err)
{
        _cleanup_(sd_bus_error_freep) sd_bus_error error = SD_BUS_ERROR_NULL;
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL, *reply = NULL;
        _cleanup_(sd_bus_slot_unrefp) sd_bus_slot *s1 = NULL, *s2 = NULL;
        _cleanup_(sd_event_unrefp) sd_event *event = NULL;
        _cleanup_(exec_wait_done) struct exec_wait w = {.bus = bus};
        struct termios saved;
        bool restore;
        const char *term = getenv("TERM");
        int r;

        r = bus_check_fd_passing(bus);
        if (r != EXIT_OK)
                return r;

        r = bus_new_manager_call(bus, &m, "ExecMachine");
        if (r >= 0)
                r = sd_bus_message_append(m, "s", name);
        if (r >= 0)
                r = sd_bus_message_append_strv(m, argv);
        if (r >= 0)
                r = sd_bus_message_open_container(m, 'a', "{sv}");
        if (r >= 0 && arg_user)
                r = sd_bus_message_append(m, "{sv}", "user", "s", arg_user);
        if (r >= 0 && arg_chdir)
                r = sd_bus_message_append(m, "{sv}", "working_directory", "s", arg_chdir);
        if (r >= 0 && (arg_env || (isatty(in) && term && *term))) {
                r = sd_bus_message_open_container(m, 'e', "sv");
                if (r >= 0)
                        r = sd_bus_message_append(m, "s", "environment");
                if (r >= 0)
                        r = sd_bus_message_open_container(m, 'v', "as");
                if (r >= 0)
                        r = sd_bus_message_open_container(m, 'a', "s");
                /* On a terminal, the terminal's type goes along, as ssh and machinectl pass it. */
                if (r >= 0 && isatty(in) && term && *term && !env_has(arg_env, "TERM")) {
                        _cleanup_(freep) char *entry = NULL;
                        r = asprintf(&entry, "TERM=%s", term) < 0 ? -ENOMEM : 0;
                        if (r >= 0)
                                r = sd_bus_message_append(m, "s", entry);
                }
                for (char **e = arg_env; r >= 0 && e && *e; e++)
                        r = sd_bus_message_append(m, "s", *e);
                if (r >= 0)
                        r = sd_bus_message_close_container(m);
                if (r >= 0)
                        r = sd_bus_message_close_container(m);
                if (r >= 0)
                        r = sd_bus_message_close_container(m);
        }
        if (r >= 0)
                r = sd_bus_message_append(m, "{sv}{sv}{sv}", "stdin", "h", in, "stdout", "h", out, "stderr", "h", err);
        if (r >= 0)
                r = sd_bus_message_close_container(m);
        if (r < 0)
                return log_error(EXIT_FAILURE_GENERIC, "Failed to create a bus message: %s", strerror(-r));

        /* Subscribe before the call: a short command ends right after the reply. */
        r = sd_bus_match_signal(bus, &s1, STAMP_BUS_NAME, STAMP_MANAGER_PATH, STAMP_MANAGER_IFACE, "ExecExited",
                                on_exec_exited, &w);
        if (r >= 0)
                r = match_daemon_vanished(bus, &s2, on_name_owner_changed, &w);
        if (r < 0)
                return log_error(EXIT_FAILURE_GENERIC, "Failed to subscribe to the daemon's signals: %s", strerror(-r));

        wait_while_starting(bus, name);
        restore = isatty(in) && tcgetattr(in, &saved) >= 0;
        r = bus_call_mutating(bus, m, &error, &reply);
        /* The command has the terminal now; the agent must not compete for it. */
        polkit_agent_close();
        if (r < 0)
                return log_bus_error(&error, r, "Failed to run the command");
        r = sd_bus_message_read(reply, "u", &w.id);
        if (r < 0)
                return log_error(EXIT_FAILURE_GENERIC, "Failed to parse the reply: %s", strerror(-r));
        log_debug("Command started in machine %s: exec %" PRIu32, name, w.id);
        if (!arg_block) {
                /* Its id, for KillExec; how it ends is for this connection only, which ends here. */
                printf("%" PRIu32 "\n", w.id);
                return EXIT_OK;
        }

        r = event_new_with_signals(&event, on_signal, &w);
        if (r >= 0)
                r = sd_bus_attach_event(bus, event, SD_EVENT_PRIORITY_NORMAL);
        if (r < 0)
                return log_error(EXIT_FAILURE_GENERIC, "Failed to set up the event loop: %s", strerror(-r));
        w.event = event;
        r = sd_event_loop(event);
        (void) sd_bus_detach_event(bus);
        /* stampd's relay puts the terminal back; should it have died first, so do we. */
        if (restore)
                (void) tcsetattr(in, TCSADRAIN, &saved);

        if (r < 0)
                return log_error(EXIT_FAILURE_GENERIC, "Failed to wait for the command: %s", strerror(-r));
        if (w.exited)
                return exit_code_from_result(&w);
        if (w.vanished)
                return log_error(EXIT_UNAVAILABLE, "stampd exited while the command ran.");
        return log_error(EXIT_FAILURE_GENERIC, "Stopped waiting for the command; it may still run in machine %s.",
                         name);
}

int verb_exec(sd_bus *bus, int argc, char **argv)
{
        if (argc < 3)
                return log_error(EXIT_USAGE, "No command given: stampctl exec NAME [OPTIONS] -- CMD...");
        return exec_in_machine(bus, argv[1], argv + 2, STDIN_FILENO, STDOUT_FILENO, STDERR_FILENO);
}

/* Whether a machine named @name is there to be joined. */
static bool machine_exists(sd_bus *bus, const char *name)
{
        _cleanup_(freep) char *state = machine_state(bus, name);

        return state && strcmp(state, "exited") != 0;
}

int verb_shell_or_join(sd_bus *bus, int argc, char **argv)
{
        _cleanup_(closep) int tty = -1;

        /* Options for starting a machine say what is meant; so does a machine of that name not running. */
        if (arg_ephemeral || arg_read_only || arg_machine_name || arg_private_network || arg_private_users ||
            !machine_exists(bus, argv[1])) {
                if (arg_user || arg_env || arg_chdir)
                        return log_error(EXIT_USAGE,
                                         "No machine %s is running to join; --user, --env and --chdir "
                                         "apply to a running one.",
                                         argv[1]);
                return verb_shell(bus, argc, argv);
        }
        tty = open("/dev/tty", O_RDWR | O_NOCTTY | O_CLOEXEC);
        if (tty < 0)
                return log_error(EXIT_USAGE, "shell needs a terminal; use 'exec NAME -- CMD' without one.");
        return exec_in_machine(bus, argv[1], (char *[]) {NULL}, tty, tty, tty);
}
