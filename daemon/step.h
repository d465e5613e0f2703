/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

#include "util.h"

/* Work stampd does in a process of its own (a machine's supervisor, removing an ephemeral snapshot,
 * growing the pool) runs in a fresh copy of stampd: fork, and at once exec /proc/self/exe with
 * STEP_ARG, the step's name, the daemon's log level and the step's arguments. The daemon has threads (polkit's,
 * GDBus's, the operation workers), so the child of a plain fork may only make async-signal-safe calls; a fresh exec may
 * do anything. */
#define STEP_ARG "--internal-step"

/* Open stampd's executable for the steps to run; at start, before anything is upgraded under us.
 * Without it, steps run /proc/self/exe. */
int step_setup(void);

/* Fork and exec step @name with @args (NULL-terminated, made before the fork). The child keeps its
 * stdin, stdout and stderr and the fds in @keep (the numbers @args name), and nothing else; it dies
 * with the daemon and, if @new_pgrp, leads its own process group. Returns the pid, or negative errno. */
pid_t step_spawn(const char *name, char *const *args, const int *keep, size_t n_keep, bool new_pgrp);

/* Remove the tree @name of the store at @store_fd (store_remove_tree_retrying()) in a step: for
 * what a machine or a job left, off the loop. */
pid_t step_spawn_remove_tree(int store_fd, const char *name, bool new_pgrp);

/* First thing in main(): if argv asks for a step, run it and return its exit status; else -1. */
int step_dispatch(int argc, char *argv[]);

/* A step's fd argument ("7", or "-1" for none) into *ret; the fd is made close-on-exec again, so that
 * nothing the step runs inherits it. Negative errno if it is not a number or not an open fd. */
int step_parse_fd(const char *value, int *ret);

/* The arguments of a step, as step_spawn() passed them: "key=value" each, up to a "--", after which
 * *ret_rest points (left as it is if there is none). "stdin", "stdout" and "stderr" are fds
 * (step_parse_fd()) for @stdio; every other key goes to @func, which returns -EINVAL for one it does
 * not know. 0, or the first negative errno. */
typedef int (*StepArgFunc)(const char *key, const char *value, void *userdata);
int step_parse_args(int argc, char *argv[], int stdio[3], StepArgFunc func, void *userdata, char ***ret_rest);

/* The steps, each with its arguments as step_spawn() passed them. */
int machine_supervisor_main(int argc, char *argv[]);
int pool_grow_main(int argc, char *argv[]);
int exec_step_main(int argc, char *argv[]);
