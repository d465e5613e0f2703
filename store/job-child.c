/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <sys/socket.h>

#include "job-child.h"

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
