/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <sys/socket.h>

#include "job-child.h"
#include "owners.h"

static void child_send(JobChild *c, char kind, int num, const char *text)
{
        char buf[JOB_MSG_MAX];
        int n = snprintf(buf, sizeof buf, "%c%d %s", kind, num, text);

        if (n < 0)
                return;
        if (n >= (int) sizeof buf)
                n = sizeof buf - 1;
        (void) send(c->fd, buf, (size_t) n, MSG_NOSIGNAL);
}

void job_child_progress(JobChild *c, double progress)
{
        char text[32];

        snprintf(text, sizeof text, "%.6f", progress);
        child_send(c, 'P', 0, text);
}

void job_child_image_added(JobChild *c, const char *name)
{
        child_send(c, 'I', 0, name);
}

void job_child_log(JobChild *c, int priority, const char *fmt, ...)
{
        char text[JOB_MSG_MAX];
        va_list ap;

        va_start(ap, fmt);
        vsnprintf(text, sizeof text, fmt, ap);
        va_end(ap);
        child_send(c, 'L', priority, text);
}

int job_child_fail(JobChild *c, int error, const char *fmt, ...)
{
        char text[JOB_MSG_MAX];
        va_list ap;

        va_start(ap, fmt);
        vsnprintf(text, sizeof text, fmt, ap);
        va_end(ap);
        child_send(c, 'E', abs(error), text);
        return -abs(error);
}

int job_child_record_owner(JobChild *c, const char *name, int image_fd)
{
        int k;

        if (c->owner == UINT64_MAX)
                return 0;
        k = store_owner_write(c->store_fd, name, image_fd, (uid_t) c->owner);
        if (k < 0)
                return job_child_fail(c, -k, "Cannot record the owner of %s: %s", name, strerror(-k));
        return 0;
}

void job_child_drop_owner(JobChild *c, const char *name)
{
        /* The record names our temporary's identity: whoever holds @name now, it is stale there. */
        if (c->owner != UINT64_MAX)
                (void) store_owner_remove_if_stale(c->store_fd, name);
}
