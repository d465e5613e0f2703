/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

#include "util.h"

/* The child side of a job: what its work may use, and how it reports back to the daemon.
 * stamp-transfer, where every job runs, builds it from the job's arguments (job-args.h). Messages go
 * over a SOCK_SEQPACKET socket, one per packet: 'P' progress, 'L' a log line with its priority, 'I' another
 * image made (see job_child_image_added()), 'E'
 * the error the job fails with ("E<errno> <text>"; the daemon's job_spawn() sends one itself when
 * the helper cannot be executed). */

#define JOB_MSG_MAX 4096
/* A job reports progress at most this often: enough for a smooth bar, few enough messages. */
#define JOB_PROGRESS_INTERVAL_USEC (USEC_PER_SEC / 10)

typedef struct JobChild {
        int fd;       /* the socket to the daemon */
        int store_fd; /* O_DIRECTORY fd of the image store */
        bool store_is_btrfs;
        const char *store;     /* path of the store, for tools that take a path; may be NULL */
        const char *temp_name; /* the job's hidden temporary in the store, or NULL */
        uint64_t owner;        /* whom the image the job makes belongs to (owners.h); UINT64_MAX: nobody's */
} JobChild;

void job_child_progress(JobChild *c, double progress);
void job_child_log(JobChild *c, int priority, const char *fmt, ...) _printf_(3, 4);
/* An image the job made and put in place besides the one it is for ('I': ImageAdded). */
void job_child_image_added(JobChild *c, const char *name);
/* Before the image the job made at @image_fd is renamed to @name: record its owner, if the job has
 * one. Returns 0, or a negative errno after job_child_fail(). After a failed rename,
 * job_child_drop_owner() takes the record back. */
int job_child_record_owner(JobChild *c, const char *name, int image_fd);
void job_child_drop_owner(JobChild *c, const char *name);
/* Record why the job fails (the message callers see); returns -@error. */
int job_child_fail(JobChild *c, int error, const char *fmt, ...) _printf_(3, 4);
