/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "file-util.h"
#include "stampctl.h"

void unlink_tempp(char **path)
{
        if (*path) {
                (void) unlink(*path);
                free(*path);
        }
}

int export_file_open(const char *file, bool atomic, const char *what, int *ret_fd, char **ret_temp)
{
        _cleanup_(freep) char *temp = NULL;
        int fd;

        *ret_fd = -1;
        *ret_temp = NULL;
        if (strcmp(file, "-") == 0) {
                if (isatty(STDOUT_FILENO))
                        return log_error(EXIT_USAGE, "Refusing to write %s to a terminal.", what);
                return EXIT_OK;
        }
        if (atomic) {
                /* The file appears under its name only when complete. */
                _cleanup_(freep) char *dircopy = strdup(file), *basecopy = strdup(file);
                mode_t mask;

                if (!dircopy || !basecopy || asprintf(&temp, "%s/.%s.XXXXXX", dirname(dircopy), basename(basecopy)) < 0)
                        return log_error(EXIT_FAILURE_GENERIC, "Out of memory.");
                fd = mkostemp(temp, O_CLOEXEC);
                if (fd < 0)
                        return log_error(EXIT_FAILURE_GENERIC, "Cannot create %s: %s", file, strerror(errno));
                mask = umask(0);
                umask(mask);
                (void) fchmod(fd, 0666 & ~mask);
        } else {
                fd = open(file, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOCTTY, 0666);
                if (fd < 0)
                        return log_error(EXIT_FAILURE_GENERIC, "Cannot create %s: %s", file, strerror(errno));
        }
        *ret_fd = fd;
        *ret_temp = steal_pointer(&temp);
        return EXIT_OK;
}

int export_file_commit(int fd, char **temp, const char *file)
{
        if (fsync(fd) < 0 || rename(*temp, file) < 0)
                return log_error(EXIT_FAILURE_GENERIC, "Cannot write %s: %s", file, strerror(errno));
        free(steal_pointer(temp));
        return EXIT_OK;
}

int import_file_open(const char *file, const char *name, char *(*name_from_file)(const char *file), const char *what,
                     int *ret_fd, char **ret_name)
{
        bool from_stdin = strcmp(file, "-") == 0;
        _cleanup_(freep) char *n = NULL;

        *ret_fd = -1;
        *ret_name = NULL;
        if (name)
                n = strdup(name);
        else if (from_stdin)
                return log_error(EXIT_USAGE, "Reading from standard input needs a NAME.");
        else {
                n = name_from_file(file);
                if (!n)
                        return log_error(EXIT_USAGE, "Cannot make an image name from '%s'; give one as NAME.", file);
        }
        if (!n)
                return log_error(EXIT_FAILURE_GENERIC, "Out of memory.");
        if (from_stdin) {
                if (isatty(STDIN_FILENO))
                        return log_error(EXIT_USAGE, "Refusing to read %s from a terminal.", what);
        } else {
                *ret_fd = open(file, O_RDONLY | O_CLOEXEC | O_NOCTTY);
                if (*ret_fd < 0)
                        return log_error(EXIT_FAILURE_GENERIC, "Cannot open %s: %s", file, strerror(errno));
        }
        *ret_name = steal_pointer(&n);
        return EXIT_OK;
}
