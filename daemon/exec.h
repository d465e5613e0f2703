/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

#include "manager.h"

/* Commands run inside running machines (ExecMachine, Machine.Exec): each is a step of stampd of its own
 * (exec-step.c) that joins the machine's leader and runs the command there; the call returns an id at
 * once, and ExecExited, sent to the caller alone, carries how the command ended. */

/* Commands running at once, in all and per caller (as manager_caller_key() counts). */
#define EXEC_MAX 256
#define EXEC_PER_CALLER_MAX 32
/* Strings in argv and in the environment, and their bytes together. */
#define EXEC_ARGS_MAX 1024
#define EXEC_ARG_BYTES_MAX (256u * 1024)

typedef struct Exec {
        Manager *manager;
        uint32_t id;
        char *machine;
        char *caller;      /* manager_caller_key(): what the caps count */
        char *destination; /* the caller's unique bus name: ExecExited goes there only */
        uid_t uid;         /* the caller's */
        pid_t pid;
        int status_fd; /* the step's report (read end) */
        sd_event_source *child_source;
} Exec;

/* The longest result word of ExecExited, with its NUL. */
#define EXEC_RESULT_MAX 16

/* The step's line ("exited 3", "failed 2 No user x in machine y", …) into ExecExited's result, status
 * and message (pointing into @line, empty but for the failures). -EBADMSG if it is none of these. */
int exec_parse_report(char *line, char result[EXEC_RESULT_MAX], int *ret_status, const char **ret_message);
/* NAME=VALUE with a NAME of letters, digits and '_', not starting with a digit. */
bool exec_environment_entry_valid(const char *entry);
/* A user name (letters, digits, '.', '_', '-', '$'; not starting with '-' or '.') or a uid. */
bool exec_user_valid(const char *user);

Exec *exec_free(Exec *e);
void execs_free_all(Manager *m);

/* The Manager's ExecMachine(s name, as argv, a{sv} options) → u id, and Machine.Exec(as argv, a{sv}
 * options) → u id on the machine in @userdata. */
int method_exec_machine(sd_bus_message *msg, void *userdata, sd_bus_error *error);
int method_machine_exec(sd_bus_message *msg, void *userdata, sd_bus_error *error);
/* KillExec(u id, i signal): the signal for the command, passed on by its step. */
int method_kill_exec(sd_bus_message *msg, void *userdata, sd_bus_error *error);

/* The real-time signal by which the daemon asks an exec step to send the command the signal in its
 * value. */
#define EXEC_FORWARD_SIGNAL (SIGRTMIN + 1)
