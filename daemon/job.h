/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

#include "job-child.h"
#include "manager.h"

/* A long operation (template, export, import, pull): a bus object with progress, log and cancel,
 * whose work runs in a child process. The method that starts it answers at once with the job.
 *
 * The work runs as PID 1 of a new PID namespace with a private mount namespace: when the job ends,
 * is cancelled, or the daemon dies, the kernel takes every process the work started and every mount
 * it made along with it; only a hidden temporary in the store can remain, which the next start
 * removes. */

typedef enum { JOB_CREATE_TEMPLATE, JOB_EXPORT_TAR, JOB_IMPORT_TAR, JOB_PULL_TAR, _JOB_TYPE_MAX } JobType;
typedef enum { JOB_RUNNING, JOB_CANCELING, JOB_DONE, JOB_FAILED, JOB_CANCELED } JobState;

/* Runs in the child. Returns 0 on success, or a negative errno after job_child_fail() said why. */
typedef int (*JobRunFn)(JobChild *c, void *userdata);

struct Job {
        Manager *manager;
        uint32_t id;
        JobType type;
        char *image;        /* the image the job reads or makes */
        char *object_path;
        char *owner;        /* who started it, as manager_caller_key() says: what the per-caller cap counts */
        const char *action; /* polkit action of the method that started it; CancelJob checks it too */
        bool makes_image;   /* ImageAdded on success */
        bool lock_held;
        bool reader_held;   /* reads its (read-only) image in place: see manager_image_reader_add() */

        double progress; /* 0..1, -1 unknown */
        uint64_t progress_emitted_usec;
        bool progress_dirty;
        sd_event_source *progress_timer;

        JobState state;
        pid_t pid;
        int comm_fd;
        sd_event_source *comm_source;
        sd_event_source *child_source;
        sd_event_source *kill_timer;

        char *temp_name;    /* removed from the store if the job does not succeed */
        int error;          /* errno of the failure */
        char *error_message;

        JobRunFn run;
        void *userdata;
        void (*free_userdata)(void *);
};
typedef struct Job Job;

const char *job_type_to_string(JobType t);
const char *job_state_to_string(JobState s);
/* "done", "failed", "canceled"; "" while the job runs. */
const char *job_result_to_string(JobState s);

/* Check the caps, lock @image (if @lock), and make the job object (not started yet). */
int job_new(Manager *m, JobType type, const char *image, bool lock, sd_bus_message *msg, Job **ret,
            sd_bus_error *error);
/* Start the work: @run(child, @userdata) runs in the child; @userdata is freed in the parent once the
 * child has it (close fds only the child needs there). Sends JobNew and replies (u, o) to @msg. */
int job_start(Job *j, sd_bus_message *msg, JobRunFn run, void *userdata, void (*free_userdata)(void *));
/* Start the work as the helper stamp-transfer (a separate executable, so that the daemon links
 * neither libarchive nor libcurl), as PID 1 of the job's namespace like any job's work. It runs with
 * @argv (argv[0] included) and "--store-btrfs yes|no" and, if the job has one, "--temp NAME" added;
 * its socket to the daemon on fd 3, the store on fd 4, and @fds (duplicated here; the caller keeps
 * its own) on 5, 6, ... */
int job_start_exec(Job *j, sd_bus_message *msg, const char *const *argv, const int *fds, size_t n_fds);
/* Drop a job that never started. */
Job *job_free(Job *j);
static inline void job_freep(Job **j)
{
        job_free(*j);
}
int job_cancel(Job *j);
Job *job_find(Manager *m, uint32_t id);
void jobs_free_all(Manager *m);

/* Bus face (job-dbus.c). */
int method_cancel_job_object(Manager *m, Job *j, sd_bus_message *msg, sd_bus_error *error);
extern const sd_bus_vtable job_vtable[];
int job_send_log(Job *j, int priority, const char *text);
void job_emit_progress(Job *j);
