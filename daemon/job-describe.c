/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* What a job reads or writes, in words, for its Description property (stampctl jobs shows it). */
#include <stdio.h>
#include <unistd.h>

#include "job.h"
#include "redact.h"

/* The name the kernel keeps for one of our fds: a file's path, or what kind of thing it is. Nothing
 * is opened: the fd is the caller's, passed to us. */
static char *fd_description(int fd)
{
        char link[64], target[1024];
        ssize_t n;

        if (fd < 0)
                return strdup("standard input");
        snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
        n = readlink(link, target, sizeof target - 1);
        if (n <= 0)
                return strdup("a file descriptor");
        target[n] = '\0';
        if (strncmp(target, "pipe:", 5) == 0)
                return strdup("a pipe");
        if (strncmp(target, "socket:", 7) == 0)
                return strdup("a socket");
        if (target[0] != '/')
                return strdup("a file descriptor");
        return strdup(target);
}

char *job_describe(const JobArgs *a)
{
        _cleanup_free_ char *what = NULL;
        char *text = NULL;

        switch (a->type) {
        case JOB_CREATE_TEMPLATE:
                if (a->template.package_tarball >= 0) {
                        what = fd_description(a->template.package_tarball);
                        if (!what || asprintf(&text, "debootstrap %s from %s", a->template.suite ?: "?", what) < 0)
                                return NULL;
                        return text;
                }
                what = a->template.mirror ? url_redact(a->template.mirror) : strdup("the host's mirror");
                if (!what || asprintf(&text, "debootstrap %s from %s", a->template.suite ?: "?", what) < 0)
                        return NULL;
                return text;
        case JOB_EXPORT_TAR:
                what = fd_description(a->export.out_fd);
                if (!what || asprintf(&text, "to %s (%s)", what, a->export.format ?: "zstd") < 0)
                        return NULL;
                return text;
        case JOB_IMPORT_TAR:
                what = fd_description(a->import.in_fd);
                if (!what || asprintf(&text, "from %s", what) < 0)
                        return NULL;
                return text;
        case JOB_PULL_TAR:
                what = a->pull.url ? url_redact(a->pull.url) : NULL;
                if (!what || asprintf(&text, "from %s", what) < 0)
                        return NULL;
                return text;
        default:
                return strdup("");
        }
}
