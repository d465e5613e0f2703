/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

#include "job.h"

/* The Job object's bus face (job-dbus.c): per-job object paths below STAMP_JOB_PREFIX. */
extern const sd_bus_vtable job_vtable[];
int manager_add_job_objects(Manager *m);

/* Cancel, shared by the Manager's CancelJob and the Job object's Cancel. */
int job_method_cancel(Manager *m, Job *j, sd_bus_message *msg, sd_bus_error *error);

/* LogMessage for a line of the job's log; PropertiesChanged for its progress, at most every
 * JOB_PROGRESS_INTERVAL_USEC. */
int job_send_log(Job *j, int priority, const char *text);
void job_emit_progress(Job *j);
/* The JobNew signal of a job just started, before its method replies with (u, o). */
void job_emit_new(Job *j);

/* The Manager methods that start a job, one file each (job-template.c, job-export.c, job-import.c,
 * job-pull.c): read, validate, cap, authorize, start, reply. */
int method_create_template(sd_bus_message *msg, void *userdata, sd_bus_error *error);
int method_export_tar(sd_bus_message *msg, void *userdata, sd_bus_error *error);
int method_import_tar(sd_bus_message *msg, void *userdata, sd_bus_error *error);
int method_pull_tar(sd_bus_message *msg, void *userdata, sd_bus_error *error);
/* job-copy.c */
int method_copy_to_machine(sd_bus_message *msg, void *userdata, sd_bus_error *error);
int method_copy_from_machine(sd_bus_message *msg, void *userdata, sd_bus_error *error);
int method_copy_to_image(sd_bus_message *msg, void *userdata, sd_bus_error *error);
int method_copy_from_image(sd_bus_message *msg, void *userdata, sd_bus_error *error);
/* job-oci.c */
int method_pull_image(sd_bus_message *msg, void *userdata, sd_bus_error *error);
int method_push_image(sd_bus_message *msg, void *userdata, sd_bus_error *error);
/* Empties <store>/.stamp/oci-blobs (CleanCache, package-cache.c); blocks: for an operation's worker. */
int oci_blob_cache_clean(int store_fd, uint64_t *freed, char *err, size_t errlen);
