/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

#include "job-args.h"
#include "job-child.h"
#include "manager.h"

/* A long operation (template, export, import, pull): a bus object with progress, log and cancel.
 *
 * One model for all of them: the work is an exec of stamp-transfer (transfer/), with the job's
 * arguments and fds encoded as store/job-args.h says, reporting progress, log lines and its error
 * over the socket of store/job-child.h. stampd itself never runs job code in a forked child: it
 * forks only to execute the helper at once (job_spawn()). The helper makes the job's namespaces
 * itself: the work runs as PID 1 of a new PID namespace with a private mount namespace, so when the
 * job ends, is canceled, or the daemon dies, the kernel takes every process the work started and
 * every mount it made along with it; only a hidden temporary in the store can remain, which the
 * daemon removes (stamp-transfer again) or its next start does.
 *
 * A job method goes: read, validate, cap and lock (job_new()), authorize, act (job_start()), reply
 * (job_emit_new() and the (u, o) reply, both sent by the method itself). */

typedef enum { JOB_RUNNING, JOB_CANCELING, JOB_DONE, JOB_FAILED, JOB_CANCELED } JobState;

struct Job {
        Manager *manager;
        uint32_t id;
        JobType type;
        char *image; /* the image the job reads or makes */
        char *object_path;
        char *owner;        /* who started it, as manager_caller_key() says: what the per-caller cap counts */
        const char *action; /* polkit action of the method that started it; CancelJob checks it too */
        bool makes_image;   /* ImageAdded on success */
        bool lock_held;
        bool reader_held;   /* reads its (read-only) image in place: see manager_image_reader_add() */
        uid_t image_owner;  /* whom the image it makes will belong to; UID_INVALID if it makes none */
        bool image_pending; /* counted in Manager.images_pending until it ends */

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

        char *description; /* what it reads or writes, in words (job-describe.c) */
        char *temp_name;   /* removed from the store if the job does not succeed */
        int error;         /* errno of the failure */
        char *error_message;
};
typedef struct Job Job;

const char *job_type_to_string(JobType t);
const char *job_state_to_string(JobState s);
/* "done", "failed", "canceled"; "" while the job runs. */
const char *job_result_to_string(JobState s);

/* After authorization, for a job that makes an image: the caller's uid is its owner (recorded by the
 * job before the image is renamed into sight), and QuotaExceeded if the caller is at a per-user limit
 * of stampd.conf. */
int job_claim_owner(Job *j, sd_bus_message *msg, JobArgs *args, sd_bus_error *error);

/* Check the caps, lock @image (if @lock), and make the job object (not started yet). */
int job_new(Manager *m, JobType type, const char *image, bool lock, sd_bus_message *msg, Job **ret,
            sd_bus_error *error);
/* Start the work: execute stamp-transfer with @args (of the job's type; the store, its kind and the
 * job's temporary are filled in here). @args stays the caller's, fds included: the helper gets
 * copies. On success the job is the manager's, listed and on the bus, and the caller emits JobNew
 * (job_emit_new()) and replies; on failure it is still the caller's to free (job_free() kills a
 * helper that was started). */
int job_start(Job *j, JobArgs *args);
/* What a job of @a reads or writes, in words: "from /srv/web.tar.zst", "from https://…" (redacted),
 * "debootstrap bookworm from …". A new string, or NULL. */
char *job_describe(const JobArgs *a);

/* Drop a job that never started. */
Job *job_free(Job *j);
static inline void job_freep(Job **j)
{
        job_free(*j);
}
int job_cancel(Job *j);
Job *job_find(Manager *m, uint32_t id);
void jobs_free_all(Manager *m);
