/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* start, shell, stop, kill, machines */

#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "escape.h"
#include "stampctl.h"
#include "table.h"

struct machine_wait {
        sd_bus *bus;
        sd_event *event;
        char *path;
        bool removed;
        int exit_status;
        bool stop_sent;
        bool vanished;
        bool detached;
        bool interrupted; /* the stop was our Ctrl-C's */
        sd_bus_slot *stop_slot;
};

static void machine_wait_done(struct machine_wait *w)
{
        sd_bus_slot_unref(w->stop_slot);
        free(w->path);
}

static int on_machine_removed(sd_bus_message *m, void *userdata, sd_bus_error *ret_error)
{
        struct machine_wait *w = userdata;
        const char *name, *path;
        int32_t status;

        if (sd_bus_message_read(m, "soi", &name, &path, &status) < 0)
                return 0;
        if (!w->path || strcmp(path, w->path) != 0)
                return 0;
        w->removed = true;
        w->exit_status = status;
        sd_event_exit(w->event, 0);
        return 0;
}

static int on_name_owner_changed(sd_bus_message *m, void *userdata, sd_bus_error *ret_error)
{
        struct machine_wait *w = userdata;
        const char *name, *old_owner, *new_owner;

        if (sd_bus_message_read(m, "sss", &name, &old_owner, &new_owner) < 0)
                return 0;
        if (w->path && *old_owner && !*new_owner) {
                w->vanished = true;
                sd_event_exit(w->event, 0);
        }
        return 0;
}

static int on_stop_reply(sd_bus_message *m, void *userdata, sd_bus_error *ret_error)
{
        struct machine_wait *w = userdata;
        const sd_bus_error *e = sd_bus_message_get_error(m);

        w->stop_slot = sd_bus_slot_unref(w->stop_slot);
        if (e && !sd_bus_error_has_name(e, STAMP_ERROR_NO_SUCH_MACHINE)) {
                _cleanup_(freep) char *message = text_escape(e->message ? e->message : e->name, 0, ESCAPE_TERMINAL);
                fprintf(stderr, "stampctl: could not stop the machine: %s\n", message ? message : e->name);
                w->stop_sent = false;
        }
        return 0;
}

static int send_stop(struct machine_wait *w)
{
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL;
        int r;

        r = sd_bus_message_new_method_call(w->bus, &m, STAMP_BUS_NAME, w->path, STAMP_MACHINE_IFACE, "Stop");
        if (r < 0)
                return r;
        if (arg_ask_password) {
                (void) sd_bus_message_set_allow_interactive_authorization(m, true);
                (void) polkit_agent_open();
        }
        return sd_bus_call_async(w->bus, &w->stop_slot, m, on_stop_reply, w, UINT64_MAX);
}

static int on_signal(sd_event_source *s, const struct signalfd_siginfo *si, void *userdata)
{
        struct machine_wait *w = userdata;

        if (si->ssi_signo != SIGINT || w->stop_sent) {
                /* Terminated, hung up, or a second Ctrl-C: stop waiting. */
                if (!w->stop_sent && si->ssi_signo != SIGINT)
                        (void) send_stop(w);
                (void) sd_bus_flush(w->bus);
                w->detached = true;
                sd_event_exit(w->event, 0);
                return 0;
        }
        log_info("Stopping the machine... (Ctrl-C again to stop waiting)");
        w->stop_sent = true;
        w->interrupted = true;
        if (send_stop(w) < 0)
                w->stop_sent = false;
        return 0;
}

/* Our terminal, the console, changed its size: nspawn (not in our session, so the kernel does not tell
 * it) is to pass the new size on. */
static int on_winch(sd_event_source *s, const struct signalfd_siginfo *si, void *userdata)
{
        struct machine_wait *w = userdata;

        (void) sd_bus_call_method_async(w->bus, NULL, STAMP_BUS_NAME, w->path, STAMP_MACHINE_IFACE, "ConsoleResized",
                                        NULL, NULL, "");
        return 0;
}

/* StartMachine with our stdio (or the terminal for shell), then wait for its end. */
static int start_machine(sd_bus *bus, const char *image, char **command, bool shell)
{
        _cleanup_(sd_bus_error_freep) sd_bus_error error = SD_BUS_ERROR_NULL;
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL, *reply = NULL;
        _cleanup_(sd_bus_slot_unrefp) sd_bus_slot *s1 = NULL, *s2 = NULL;
        _cleanup_(sd_event_unrefp) sd_event *event = NULL;
        _cleanup_(closep) int tty = -1;
        _cleanup_(machine_wait_done) struct machine_wait w = {.bus = bus};
        int in = STDIN_FILENO, out = STDOUT_FILENO, err = STDERR_FILENO;
        const char *path;
        bool attached, interactive;
        int r;

        r = bus_check_fd_passing(bus);
        if (r != EXIT_OK)
                return r;

        if (shell) {
                if (!arg_block)
                        return log_error(EXIT_USAGE, "shell stays attached to this terminal: --no-block does not "
                                                     "apply; use 'start --no-block NAME' for a machine in the "
                                                     "background.");
                tty = open("/dev/tty", O_RDWR | O_NOCTTY | O_CLOEXEC);
                if (tty < 0)
                        return log_error(EXIT_USAGE, "shell needs a terminal; use 'start NAME -- CMD' without one.");
                in = out = err = tty;
        }
        /* Not staying attached, the machine gets none of our fds: it must not write over the shell's
         * prompt, read the user's keys, or fill a file after we exited. stampd logs its output. */
        attached = arg_block;
        interactive = attached && isatty(in) && isatty(out);

        r = sd_bus_message_new_method_call(bus, &m, STAMP_BUS_NAME, STAMP_MANAGER_PATH, STAMP_MANAGER_IFACE,
                                           "StartMachine");
        if (r >= 0)
                r = sd_bus_message_append(m, "s", image);
        if (r >= 0)
                r = sd_bus_message_open_container(m, 'a', "{sv}");
        if (r >= 0 && arg_machine_name)
                r = sd_bus_message_append(m, "{sv}", "name", "s", arg_machine_name);
        if (r >= 0 && arg_boot)
                r = sd_bus_message_append(m, "{sv}", "boot", "b", 1);
        if (r >= 0 && command && command[0]) {
                r = sd_bus_message_open_container(m, 'e', "sv");
                if (r >= 0)
                        r = sd_bus_message_append(m, "s", "command");
                if (r >= 0)
                        r = sd_bus_message_open_container(m, 'v', "as");
                if (r >= 0)
                        r = sd_bus_message_append_strv(m, command);
                if (r >= 0)
                        r = sd_bus_message_close_container(m);
                if (r >= 0)
                        r = sd_bus_message_close_container(m);
        }
        if (r >= 0 && arg_ephemeral)
                r = sd_bus_message_append(m, "{sv}", "ephemeral", "b", 1);
        if (r >= 0 && arg_read_only)
                r = sd_bus_message_append(m, "{sv}", "read_only", "b", 1);
        if (r >= 0 && arg_private_users)
                r = sd_bus_message_append(m, "{sv}", "private_users", "b", 1);
        if (r >= 0 && arg_private_network)
                r = sd_bus_message_append(m, "{sv}", "private_network", "b", 1);
        if (r >= 0 && arg_snapshot)
                r = sd_bus_message_append(m, "{sv}", "snapshot", "s", arg_snapshot);
        if (r >= 0 && interactive && term_is_valid(getenv("TERM")))
                r = sd_bus_message_append(m, "{sv}", "term", "s", getenv("TERM"));
        if (r >= 0 && arg_memory_max != UINT64_MAX)
                r = sd_bus_message_append(m, "{sv}", "memory_max", "t", arg_memory_max);
        if (r >= 0 && arg_cpu_weight != UINT64_MAX)
                r = sd_bus_message_append(m, "{sv}", "cpu_weight", "t", arg_cpu_weight);
        if (r >= 0 && arg_ports) {
                r = sd_bus_message_open_container(m, 'e', "sv");
                r = sd_bus_message_append(m, "s", "ports");
                r = sd_bus_message_open_container(m, 'v', "as");
                r = sd_bus_message_append_strv(m, arg_ports);
                r = sd_bus_message_close_container(m);
                r = sd_bus_message_close_container(m);
        }
        if (r >= 0 && attached)
                r = sd_bus_message_append(m, "{sv}{sv}{sv}", "stdin", "h", in, "stdout", "h", out, "stderr", "h", err);
        if (r >= 0)
                r = sd_bus_message_close_container(m);
        if (r < 0)
                return log_error(EXIT_FAILURE_GENERIC, "Failed to create a bus message: %s", strerror(-r));

        /* Subscribe before the call: a short command may end before the reply is read. */
        if (arg_block) {
                r = sd_bus_match_signal(bus, &s1, STAMP_BUS_NAME, STAMP_MANAGER_PATH, STAMP_MANAGER_IFACE,
                                        "MachineRemoved", on_machine_removed, &w);
                if (r >= 0)
                        r = match_daemon_vanished(bus, &s2, on_name_owner_changed, &w);
                if (r < 0)
                        return log_error(EXIT_FAILURE_GENERIC, "Failed to subscribe to machine signals: %s",
                                         strerror(-r));
        }

        r = bus_call_mutating(bus, m, &error, &reply);
        /* The machine may want the terminal now; the agent must not compete for it. */
        polkit_agent_close();
        if (r < 0)
                return log_bus_error(&error, r, "Failed to start the machine");
        r = sd_bus_message_read(reply, "o", &path);
        if (r < 0)
                return log_error(EXIT_FAILURE_GENERIC, "Failed to parse the reply: %s", strerror(-r));
        log_debug("Machine started: %s", path);

        if (!arg_block) {
                if (arg_json) {
                        printf("{\"name\": ");
                        json_fputs(arg_machine_name ? arg_machine_name : image, stdout);
                        printf(", \"object\": ");
                        json_fputs(path, stdout);
                        printf("}\n");
                } else
                        log_info("Machine %s started; its output goes to stampd's log. 'stampctl stop %s' ends it.",
                                 arg_machine_name ? arg_machine_name : image,
                                 arg_machine_name ? arg_machine_name : image);
                return EXIT_OK;
        }
        if (interactive)
                log_info("Connected to machine %s. Press ^] three times within 1s to leave it.",
                         arg_machine_name ? arg_machine_name : image);

        w.path = strdup(path);
        if (!w.path)
                return log_error(EXIT_FAILURE_GENERIC, "Out of memory.");

        r = event_new_with_signals(&event, on_signal, &w);
        if (r >= 0 && interactive) {
                sigset_t winch;
                sigemptyset(&winch);
                sigaddset(&winch, SIGWINCH);
                r = sigprocmask(SIG_BLOCK, &winch, NULL) < 0 ? -errno : 0;
                if (r >= 0)
                        r = sd_event_add_signal(event, NULL, SIGWINCH, on_winch, &w);
        }
        if (r >= 0)
                r = sd_bus_attach_event(bus, event, SD_EVENT_PRIORITY_NORMAL);
        if (r < 0)
                return log_error(EXIT_FAILURE_GENERIC, "Failed to set up the event loop: %s", strerror(-r));
        w.event = event;

        r = sd_event_loop(event);
        (void) sd_bus_detach_event(bus);

        if (r < 0)
                return log_error(EXIT_FAILURE_GENERIC, "Failed to wait for the machine: %s", strerror(-r));
        if (w.detached)
                return log_error(EXIT_FAILURE_GENERIC, "Stopped waiting for the machine%s.",
                                 w.stop_sent ? "; it is being stopped" : "");
        if (w.vanished)
                return log_error(EXIT_UNAVAILABLE, "stampd exited while the machine ran.");
        log_debug("Machine exited with status %d.", w.exit_status);
        return exit_code_from_machine_status(w.exit_status, w.interrupted);
}

int verb_start(sd_bus *bus, int argc, char **argv)
{
        return start_machine(bus, argv[1], argc > 2 ? argv + 2 : NULL, false);
}

int verb_shell(sd_bus *bus, int argc, char **argv)
{
        return start_machine(bus, argv[1], NULL, true);
}

static int call_machines(sd_bus *bus, int argc, char **argv, const char *member, bool with_signal)
{
        int ret = EXIT_OK;

        for (int i = 1; i < argc; i++) {
                _cleanup_(sd_bus_error_freep) sd_bus_error error = SD_BUS_ERROR_NULL;
                _cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL;
                int r;

                r = sd_bus_message_new_method_call(bus, &m, STAMP_BUS_NAME, STAMP_MANAGER_PATH, STAMP_MANAGER_IFACE,
                                                   member);
                if (r >= 0)
                        r = sd_bus_message_append(m, "s", argv[i]);
                if (r >= 0 && with_signal)
                        r = sd_bus_message_append(m, "si", arg_kill_whom ? arg_kill_whom : "all", (int32_t) arg_signal);
                if (r < 0)
                        return log_error(EXIT_FAILURE_GENERIC, "Failed to create a bus message: %s", strerror(-r));
                r = bus_call_mutating(bus, m, &error, NULL);
                if (r < 0) {
                        r = log_bus_error(&error, r,
                                          with_signal ? "Failed to kill the machine" : "Failed to stop the machine");
                        if (ret == EXIT_OK)
                                ret = r;
                }
        }
        return ret;
}

int verb_stop(sd_bus *bus, int argc, char **argv)
{
        return call_machines(bus, argc, argv, "StopMachine", false);
}

int verb_kill(sd_bus *bus, int argc, char **argv)
{
        return call_machines(bus, argc, argv, "KillMachineEx", true);
}

int verb_terminate(sd_bus *bus, int argc, char **argv)
{
        /* machinectl's terminate: every process, at once, without a shutdown. */
        arg_signal = SIGKILL;
        arg_kill_whom = "all";
        return call_machines(bus, argc, argv, "KillMachineEx", true);
}

int verb_machines(sd_bus *bus, int argc, char **argv)
{
        _cleanup_(sd_bus_error_freep) sd_bus_error error = SD_BUS_ERROR_NULL;
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        _cleanup_(scols_unref_tablep) struct libscols_table *t = NULL;
        const char *name, *image, *state, *path;
        uint32_t leader;
        int r;

        r = sd_bus_call_method(bus, STAMP_BUS_NAME, STAMP_MANAGER_PATH, STAMP_MANAGER_IFACE, "ListMachines", &error,
                               &reply, NULL);
        if (r < 0)
                return log_bus_error(&error, r, "Failed to list machines");

        t = table_new("machines");
        if (!t)
                return log_error(EXIT_FAILURE_GENERIC, "Out of memory.");
        table_add_column(t, "NAME", 0, SCOLS_JSON_STRING);
        table_add_column(t, "IMAGE", 0, SCOLS_JSON_STRING);
        table_add_column(t, "STATE", 0, SCOLS_JSON_STRING);
        table_add_column(t, "LEADER", SCOLS_FL_RIGHT, SCOLS_JSON_NUMBER);
        table_add_column(t, "USERNS", 0, SCOLS_JSON_BOOLEAN);
        table_add_column(t, "OWNER", 0, SCOLS_JSON_NUMBER);

        r = sd_bus_message_enter_container(reply, 'a', "(sssuo)");
        while (r >= 0 && (r = sd_bus_message_read(reply, "(sssuo)", &name, &image, &state, &leader, &path)) > 0) {
                struct libscols_line *line = scols_table_new_line(t, NULL);
                if (!line)
                        return log_error(EXIT_FAILURE_GENERIC, "Out of memory.");
                table_set(line, 0, "%s", name);
                table_set(line, 1, "%s", image);
                table_set(line, 2, "%s", state);
                int userns = 0;
                uint32_t owner = 0;
                char user[256];

                if (leader > 0)
                        table_set(line, 3, "%" PRIu32, leader);
                else
                        table_set(line, 3, table_style.json ? NULL : "-");
                /* Facts ListMachines does not carry; a machine that ended meanwhile shows the defaults. */
                (void) sd_bus_get_property_trivial(bus, STAMP_BUS_NAME, path, STAMP_MACHINE_IFACE, "UserNamespace",
                                                   NULL, 'b', &userns);
                (void) sd_bus_get_property_trivial(bus, STAMP_BUS_NAME, path, STAMP_MACHINE_IFACE, "Owner", NULL, 'u',
                                                   &owner);
                if (table_style.json) {
                        table_set(line, 4, "%s", userns ? "1" : "0");
                        table_set(line, 5, "%" PRIu32, owner);
                } else {
                        table_set(line, 4, "%s", userns ? "yes" : "no");
                        table_set(line, 5, "%s", format_user(user, sizeof user, owner));
                }
        }
        if (r < 0)
                return log_error(EXIT_FAILURE_GENERIC, "Failed to parse the list of machines: %s", strerror(-r));

        r = table_print(t, "machine", "machines");
        if (r < 0)
                return log_error(EXIT_FAILURE_GENERIC, "Failed to print the table: %s", strerror(-r));
        return EXIT_OK;
}
