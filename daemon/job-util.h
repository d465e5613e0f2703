/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

#include "authz.h"
#include "formats.h"
#include "image.h"
#include "job.h"
#include "manager.h"

/* Checks the job methods share, on the event loop. */

/* InvalidArgs unless @fd is a file, pipe or socket open for reading (or for writing, if @for_writing):
 * never a directory, an O_PATH descriptor or one open the wrong way. */
int bus_check_archive_fd(int fd, bool for_writing, sd_bus_error *error);
/* ImageExists or ImageBusy unless @name is free to be made by an import. */
int bus_check_import_target(Manager *m, const char *name, sd_bus_error *error);
/* ImportTar and ImportImage after reading their arguments: checks, authorization, the job of @type
 * that makes image @name from @fd, the reply (job-import.c). */
int job_import_start(Manager *m, sd_bus_message *msg, JobType type, const char *name, int fd, bool read_only,
                     sd_bus_error *error);
/* After authorization, what every export passes (job-export.c): image @name's fd, read from a snapshot
 * or in place (job_read_image()), a copy of @fd to write to, the name and the compression @format. */
int job_export_args(Job *j, JobArgs *a, const char *name, int fd, bool snapshot, ExportFormat format,
                    sd_bus_error *error);

/* How a job that reads image @name (@img) reads it: a read-only image nobody holds in place
 * (*ret_in_place), a writable subvolume on btrfs from a snapshot (*ret_snapshot), anything else in
 * place too, as it is (@ret_in_place may be NULL). ImageBusy if that would read it in place under a running machine,
 * whose root could swap a directory for a link mid-walk; @busy_more ends that message. */
int bus_check_image_readable(Manager *m, const char *name, const Image *img, const char *busy_more, bool *ret_in_place,
                             bool *ret_snapshot, sd_bus_error *error);
/* An O_DIRECTORY fd of image @name in the store, or NoSuchImage. */
int bus_open_image(Manager *m, const char *name, sd_bus_error *error);

/* The part every job method shares: after its own checks, the caps and the lock (job_new()), then
 * polkit for @action with @details (as authz_verify_owned() says if @owner is given), and the job
 * remembers @action for CancelJob. 1 when the call is authorized, the job in *ret; 0 while polkit has
 * not answered (the method returns 1: the call comes back with the answer, and the job, dropped
 * meanwhile, is made again); else a negative errno. */
int job_new_authorized(Manager *m, JobType type, const char *image, bool lock, sd_bus_message *msg, const char *action,
                       const AuthzOwner *owner, const char *const *details, Job **ret, sd_bus_error *error);
/* After authorization, for a job that makes image @name: the caller is its owner (job_claim_owner()),
 * it is built as the job's temporary, and a->name is @name. */
int job_make_image(Job *j, sd_bus_message *msg, JobArgs *a, const char *name, sd_bus_error *error);
/* After authorization, for a job that reads image @name: from a read-only snapshot made as the job's
 * temporary (@snapshot), else in place, held as read until the job ends (manager_image_reader_add()). */
int job_read_image(Job *j, const char *name, bool snapshot);
/* The end of a job method: start *jp with @a (job_start(), the pool grown first for a job that makes
 * an image), which makes it the manager's, emit JobNew and reply the job's id and path. */
int job_start_reply(Job **jp, JobArgs *a, sd_bus_message *msg);
