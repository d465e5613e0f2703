/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <unistd.h>

#include <systemd/sd-bus.h>
#include <systemd/sd-event.h>

#include "stamp-bus.h"
#include "util.h"

/* Exit codes; stable, documented in stampctl(1). */
enum {
        EXIT_OK = 0,
        EXIT_FAILURE_GENERIC = 1, /* anything else; a job that failed or was canceled */
        EXIT_USAGE = 2,           /* bad command line; a name or value the daemon refused as invalid */
        EXIT_NOT_SUPPORTED = 3,   /* the daemon does not (yet) do this */
        EXIT_NOT_FOUND = 4,       /* no such image, machine or job */
        EXIT_CONFLICT = 5,        /* already exists, busy, or read-only */
        EXIT_UNAVAILABLE = 69,    /* the bus or stampd cannot be reached */
        EXIT_PERMISSION = 77,     /* polkit said no, or nobody could be asked */
};

/* Global options */
extern bool arg_json;
extern bool arg_legend;
extern bool arg_ask_password;
extern bool arg_quiet;
extern bool arg_block;
extern bool arg_verbose;
extern const char *arg_host;

/* Options of single verbs */
extern bool arg_read_only;
extern bool arg_keep_identity;
extern bool arg_mine;
extern const char *arg_from;
extern bool arg_cache;
extern bool arg_no_cache;
extern bool arg_tree;
extern const char *arg_suite;
extern const char *arg_variant;
extern const char *arg_arch;
extern char **arg_include;
extern const char *arg_mirror;
extern const char *arg_package_tarball;
extern bool arg_root_password;
extern const char *arg_format;
extern bool arg_checksum;
extern const char *arg_verify;
extern bool arg_boot;
extern bool arg_ephemeral;
extern const char *arg_machine_name;
extern bool arg_private_network;
extern bool arg_private_users;
extern int arg_signal;
extern bool arg_with_snapshots;
extern const char *arg_snapshot;
extern const char *arg_user; /* verbs-exec.c */
extern char **arg_env;
int arg_env_add(const char *entry);
extern const char *arg_chdir;
extern const char *arg_compression;
extern bool arg_delta;
extern const char *arg_parent;
extern const char *arg_kill_whom;
extern uint64_t arg_memory_max;
extern uint64_t arg_cpu_weight;
extern char **arg_ports;
extern bool arg_insecure;

#define _printf_(a, b) __attribute__((format(printf, a, b)))

/* "stampctl: MESSAGE" on stderr. Returns @ret, for "return log_error(EXIT_USAGE, …)". */
int log_error(int ret, const char *fmt, ...) _printf_(2, 3);
/* Informational output on stderr, suppressed by --quiet. */
void log_info(const char *fmt, ...) _printf_(1, 2);
/* Debug output on stderr, only with --verbose. */
void log_debug(const char *fmt, ...) _printf_(1, 2);

/* Prints the error of a failed call (the daemon's message) and returns the exit code for it. */
int log_bus_error(const sd_bus_error *error, int r, const char *what);
/* The exit code for a D-Bus error name. */
int exit_code_from_bus_error(const char *name);

static inline void sd_bus_error_freep(sd_bus_error *e)
{
        sd_bus_error_free(e);
}

static inline void closep(int *fd)
{
        if (*fd >= 0) {
                int saved = errno;
                close(*fd);
                errno = saved;
        }
}

/* Calls a method of the daemon that changes something: asks for interactive
 * authorization unless --no-ask-password and starts the polkit agent first. No
 * timeout: a person may be typing a password, a copy may be slow. */
int bus_call_mutating(sd_bus *bus, sd_bus_message *m, sd_bus_error *error, sd_bus_message **reply);
/* A new method call on the Manager. */
int bus_new_manager_call(sd_bus *bus, sd_bus_message **ret, const char *member);

/* Whether fds can be passed on this connection (not over ssh). */
int bus_check_fd_passing(sd_bus *bus);

/* Prints the next value of @m (of any type) as JSON. */
int json_print_value(sd_bus_message *m, FILE *f);
/* A GetAll reply (a{sv}) as one JSON object in stampctl's vocabulary (json_key_from_property()); an
 * empty string and an unknown size as null. */
int json_print_properties(sd_bus_message *m, FILE *f);
/* Properties.GetAll of @iface on @path, as a JSON object on stdout. */
int print_properties_json(sd_bus *bus, const char *path, const char *iface);

/* Fills *ret with the remaining value as one line of text (arrays comma separated). */
int text_from_value(sd_bus_message *m, char **ret);

/* The daemon went away while we were waiting on it. */
int match_daemon_vanished(sd_bus *bus, sd_bus_slot **slot, sd_bus_message_handler_t cb, void *userdata);

/* sd-event with SIGINT, SIGTERM, SIGHUP blocked and delivered as events to @cb. */
int event_new_with_signals(sd_event **ret, sd_event_signal_handler_t cb, void *userdata);

/* Verbs */
int verb_list(sd_bus *bus, int argc, char **argv);
int verb_show(sd_bus *bus, int argc, char **argv);
int verb_clone(sd_bus *bus, int argc, char **argv);
int verb_remove(sd_bus *bus, int argc, char **argv);
int verb_rename(sd_bus *bus, int argc, char **argv);
int verb_read_only(sd_bus *bus, int argc, char **argv);
int verb_diff(sd_bus *bus, int argc, char **argv);
int verb_export(sd_bus *bus, int argc, char **argv);
int verb_import(sd_bus *bus, int argc, char **argv);
/* Sends @call (a method returning (u job_id, o job)), then waits for the job unless --no-block. */
int job_run(sd_bus *bus, sd_bus_message *call, const char *label);
int job_run_sized(sd_bus *bus, sd_bus_message *call, const char *label, int size_fd, const char *bytes_verb);

int verb_create_template(sd_bus *bus, int argc, char **argv);
int verb_clean(sd_bus *bus, int argc, char **argv);
int verb_export_tar(sd_bus *bus, int argc, char **argv);
int verb_import_tar(sd_bus *bus, int argc, char **argv);
int verb_pull_tar(sd_bus *bus, int argc, char **argv);
int verb_jobs(sd_bus *bus, int argc, char **argv);
/* verbs-oci.c */
int verb_push(sd_bus *bus, int argc, char **argv);
int verb_pull(sd_bus *bus, int argc, char **argv);
/* verbs-jobs.c: send @call (a method returning (u job_id, o job)), then wait for the job unless
 * --no-block; an exit code. */
int job_run(sd_bus *bus, sd_bus_message *call, const char *label);
int verb_cancel(sd_bus *bus, int argc, char **argv);
/* Sends @call (a method returning (u job_id, o job)) and waits for the job unless --no-block; an exit
 * code. */
int job_run(sd_bus *bus, sd_bus_message *call, const char *label);
int verb_cp(sd_bus *bus, int argc, char **argv);
int verb_set_limit(sd_bus *bus, int argc, char **argv);
/* A size in bytes, with K, M, G, T, P or E (powers of 1024), or "none"/"infinity" (UINT64_MAX). */
int parse_size_arg(const char *s, uint64_t *ret);

int verb_start(sd_bus *bus, int argc, char **argv);
int verb_shell(sd_bus *bus, int argc, char **argv);
int verb_stop(sd_bus *bus, int argc, char **argv);
int verb_kill(sd_bus *bus, int argc, char **argv);
int verb_machines(sd_bus *bus, int argc, char **argv);
int verb_exec(sd_bus *bus, int argc, char **argv);
/* shell: join the running machine, or start one on the image (verb_shell) */
int verb_shell_or_join(sd_bus *bus, int argc, char **argv);

int verb_snapshot(sd_bus *bus, int argc, char **argv);
int verb_snapshots(sd_bus *bus, int argc, char **argv);
int verb_restore(sd_bus *bus, int argc, char **argv);
int verb_remove_snapshot(sd_bus *bus, int argc, char **argv);
int verb_terminate(sd_bus *bus, int argc, char **argv);
int verb_machine_status(sd_bus *bus, int argc, char **argv);

/* agent.c: the polkit text agent */
/* Starts pkttyagent for this process if a password could be asked on this terminal
 * and it is not running already; returns once it has registered. */
int polkit_agent_open(void);
void polkit_agent_close(void);
