/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <fcntl.h>

#include "errors.h"
#include "operation.h"

typedef struct OperationResult {
        int result;
        char message[1024];
} OperationResult;

struct Operation {
        Manager *manager;
        sd_bus_message *msg;
        char *caller; /* manager_caller_key(), while counted against the caps */
        char **locks;
        int result_fd;
        sd_event_source *result_source;
        OperationWorkFn work;
        OperationDoneFn done;
        OperationReplyFn reply;
        void *userdata;
        void (*free_userdata)(void *);
};

/* Operations beyond OPERATION_WORKERS wait their turn in the pool's queue (they still count against
 * the caps on operations in flight). */
static GThreadPool *workers;
/* Every Operation not yet answered, so that the last resort at exit can answer each one. */
static GHashTable *operations;
/* Set when stampd stops: a worker that takes a queued act from now on skips it. Read by the
 * workers, hence atomic. */
static gint stopping;

static void operation_free(Operation *o)
{
        if (!o)
                return;
        if (operations)
                g_hash_table_remove(operations, o);
        for (char **l = o->locks; l && *l; l++)
                manager_image_unlock(o->manager, *l);
        g_strfreev(o->locks);
        if (o->caller)
                manager_operation_release(o->manager, o->caller);
        free(o->caller);
        sd_event_source_disable_unref(o->result_source);
        safe_close(o->result_fd);
        sd_bus_message_unref(o->msg);
        if (o->free_userdata)
                o->free_userdata(o->userdata);
        free(o);
}

typedef struct WorkerArgs {
        Operation *operation;
        int write_fd;
} WorkerArgs;

/* In a worker thread: do the act, say how it went through the pipe. Until the event loop has read
 * that, the Operation (and its userdata) stay alive and untouched by anyone else. */
static void operation_work(gpointer p, gpointer unused)
{
        WorkerArgs *w = p;
        Operation *o = w->operation;
        OperationResult r = {};

        if (g_atomic_int_get(&stopping)) {
                r.result = -ECANCELED;
                snprintf(r.message, sizeof r.message, "stampd is stopping; the operation was not started");
        } else
                r.result = o->work(o->manager, o->userdata, r.message, sizeof r.message);
        (void) loop_write(w->write_fd, &r, sizeof r);
        safe_close(w->write_fd);
        free(w);
}

/* Answer the call with what the worker wrote, then forget the operation. */
static void operation_finish(Operation *o)
{
        OperationResult r = {.result = -EIO};
        ssize_t n;

        n = read(o->result_fd, &r, sizeof r);
        if (n != (ssize_t) sizeof r) {
                r.result = -EIO;
                snprintf(r.message, sizeof r.message, "The operation ended without a result");
        }
        r.message[sizeof r.message - 1] = '\0';

        if (r.result < 0) {
                _cleanup_bus_error_ sd_bus_error e = SD_BUS_ERROR_NULL;
                stamp_error_set_errnof(&e, -r.result, "%s", r.message[0] ? r.message : strerror(-r.result));
                (void) sd_bus_reply_method_error(o->msg, &e);
        } else if (o->reply) {
                _cleanup_bus_message_ sd_bus_message *reply = NULL;
                _cleanup_bus_error_ sd_bus_error e = SD_BUS_ERROR_NULL;
                int k = sd_bus_message_new_method_return(o->msg, &reply);
                if (k >= 0)
                        k = o->reply(o->manager, reply, o->userdata, &e);
                if (k >= 0)
                        (void) sd_bus_send(NULL, reply, NULL);
                else if (sd_bus_error_is_set(&e))
                        (void) sd_bus_reply_method_error(o->msg, &e);
                else
                        (void) sd_bus_reply_method_errno(o->msg, k, NULL);
        } else
                (void) sd_bus_reply_method_return(o->msg, NULL);

        Manager *m = o->manager;

        if (o->done)
                o->done(m, r.result, o->userdata);
        manager_note_activity(m);
        operation_free(o);
        manager_check_stopped(m);
}

static int on_result(sd_event_source *s, int fd, uint32_t revents, void *userdata)
{
        operation_finish(userdata);
        return 0;
}

void operations_stop(void)
{
        g_atomic_int_set(&stopping, 1);
}

void operations_shutdown(Manager *m)
{
        g_autoptr(GList) left = NULL;

        /* The workers use the Manager, the store fd and their operation's userdata: nothing of these
         * may go before the last worker has returned. Normally all were answered before the loop
         * ended (see manager_check_stopped()); this is for an exit on any other path. Acts already
         * running finish, each putting its result in place or removing its temporary; queued ones
         * are skipped. */
        operations_stop();
        if (workers) {
                g_thread_pool_free(workers, false, true);
                workers = NULL;
        }
        if (!operations)
                return;
        left = g_hash_table_get_keys(operations);
        for (GList *l = left; l; l = l->next) {
                Operation *o = l->data;
                if (o->manager == m)
                        operation_finish(o);
        }
        if (g_hash_table_size(operations) == 0)
                g_clear_pointer(&operations, g_hash_table_destroy);
}

int operation_start(Manager *m, sd_bus_message *msg, const char *const *locks, OperationWorkFn work,
                    OperationDoneFn done, void *userdata, void (*free_userdata)(void *), sd_bus_error *error)
{
        return operation_start_with_reply(m, msg, locks, work, NULL, done, userdata, free_userdata, error);
}

int operation_start_with_reply(Manager *m, sd_bus_message *msg, const char *const *locks, OperationWorkFn work,
                               OperationReplyFn reply, OperationDoneFn done, void *userdata,
                               void (*free_userdata)(void *), sd_bus_error *error)
{
        _cleanup_free_ char *caller = NULL;
        Operation *o;
        int pipefd[2];
        size_t n_locks = 0;
        int k;

        if (g_atomic_int_get(&stopping)) {
                if (free_userdata)
                        free_userdata(userdata);
                return sd_bus_error_set(error, SD_BUS_ERROR_FAILED,
                                        "stampd is stopping; try again when it has (it is started anew on demand)");
        }
        o = calloc(1, sizeof *o);
        if (!o) {
                if (free_userdata)
                        free_userdata(userdata);
                return -ENOMEM;
        }
        o->manager = m;
        o->result_fd = -1;
        o->userdata = userdata;
        o->free_userdata = free_userdata;
        o->done = done;
        o->reply = reply;
        o->msg = sd_bus_message_ref(msg);

        k = manager_caller_key(m, msg, &caller);
        if (k == -ENODATA) { /* cannot happen after authorization: refuse rather than count no one */
                operation_free(o);
                return sd_bus_error_set(error, SD_BUS_ERROR_ACCESS_DENIED, "Cannot tell who the caller is");
        }
        if (k < 0) {
                operation_free(o);
                return k;
        }
        k = manager_operation_acquire(m, caller, error);
        if (k < 0) {
                operation_free(o);
                return k;
        }
        o->caller = TAKE_PTR(caller);

        for (const char *const *l = locks; l && *l; l++)
                n_locks++;
        o->locks = g_new0(char *, n_locks + 1);
        for (size_t i = 0; i < n_locks; i++) {
                k = manager_image_lock(m, locks[i], "an operation");
                if (k < 0) {
                        const char *why = manager_image_busy_reason(m, locks[i]);
                        operation_free(o);
                        return sd_bus_error_setf(error, STAMP_ERROR_IMAGE_BUSY, "Image %s is busy (%s)", locks[i],
                                                 why ?: "in use");
                }
                o->locks[i] = g_strdup(locks[i]);
        }

        if (pipe2(pipefd, O_CLOEXEC) < 0) {
                k = -errno;
                operation_free(o);
                return k;
        }
        o->result_fd = pipefd[0];
        o->work = work;

        k = sd_event_add_io(m->event, &o->result_source, o->result_fd, EPOLLIN, on_result, o);
        if (k < 0) {
                safe_close(pipefd[1]);
                operation_free(o);
                return k;
        }

        if (!workers) {
                workers = g_thread_pool_new(operation_work, NULL, OPERATION_WORKERS, false, NULL);
                /* Idle workers end after a while, so the idle daemon holds no threads. */
                g_thread_pool_set_max_idle_time(OPERATION_WORKER_IDLE_MSEC);
        }
        if (!operations)
                operations = g_hash_table_new(g_direct_hash, g_direct_equal);
        WorkerArgs *w = malloc(sizeof *w);
        if (!w || !workers) {
                free(w);
                safe_close(pipefd[1]);
                operation_free(o);
                return -ENOMEM;
        }
        *w = (WorkerArgs) {.operation = o, .write_fd = pipefd[1]};
        g_hash_table_add(operations, o);
        /* Queued even when no new thread could be started (it says FALSE then): a worker that runs
         * takes it. It must not be freed here. */
        (void) g_thread_pool_push(workers, w, NULL);
        return 1;
}
