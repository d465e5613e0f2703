/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

#include "manager.h"

/* A short act on disk (clone, remove, rename, read-only) done for one method call in a worker
 * thread, so the event loop never waits on the disk; the reply is sent when the worker is done.
 * A thread of a small pool, not a process: a fork and its reaping cost more than a snapshot's own
 * overhead, and what the workers do (ioctls, *at() calls under the store, commands run to
 * completion) needs no process of its own. A worker left mid-act by a crash leaves only a hidden
 * temporary, removed at start. */

/* At most this many short acts run at once; more wait in a queue. Dozens of snapshot and delete
 * ioctls at once only make btrfs stall them all in its transaction commits (seconds, under the load
 * test), and the operations in flight then reach their cap. */
#define OPERATION_WORKERS 4
/* An idle worker thread ends after this long. */
#define OPERATION_WORKER_IDLE_MSEC 5000

typedef struct Operation Operation;

/* Runs in the worker thread: touches only its userdata and the store fd. Returns 0 or a negative
 * errno, with a sentence for the caller in @err. */
typedef int (*OperationWorkFn)(Manager *m, void *userdata, char *err, size_t errlen);
/* Runs on the event loop after the worker is done and the reply was sent; result as it said. */
typedef void (*OperationDoneFn)(Manager *m, int result, void *userdata);

/* Start an operation answering @msg. The image names in @locks (NULL-terminated, may be NULL) are
 * held busy until it ends; -EBUSY if one is already held (nothing started then). @userdata is freed
 * with @free_userdata when the operation ends. */
int operation_start(Manager *m, sd_bus_message *msg, const char *const *locks, OperationWorkFn work,
                    OperationDoneFn done, void *userdata, void (*free_userdata)(void *), sd_bus_error *error);

/* Fills the reply to a successful operation's call (on the event loop, before @done); a negative
 * errno (with @error set, or not) answers with an error instead. */
typedef int (*OperationReplyFn)(Manager *m, sd_bus_message *reply, void *userdata, sd_bus_error *error);
/* operation_start() for a method that returns something: @reply fills it. */
int operation_start_with_reply(Manager *m, sd_bus_message *msg, const char *const *locks, OperationWorkFn work,
                               OperationReplyFn reply, OperationDoneFn done, void *userdata,
                               void (*free_userdata)(void *), sd_bus_error *error);

/* stampd is stopping: refuse new operations; queued ones are answered without being started,
 * running ones finish. */
void operations_stop(void);
/* At exit, before the Manager goes: wait for every worker and answer what is left. */
void operations_shutdown(Manager *m);
