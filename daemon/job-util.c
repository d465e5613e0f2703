/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <fcntl.h>
#include <sys/stat.h>

#include "job-util.h"

static const char *file_type_name(mode_t mode)
{
        switch (mode & S_IFMT) {
        case S_IFDIR:
                return "a directory";
        case S_IFCHR:
                return "a character device";
        case S_IFBLK:
                return "a block device";
        case S_IFLNK:
                return "a symlink";
        default:
                return "an unknown kind of file";
        }
}

int bus_check_archive_fd(int fd, bool for_writing, sd_bus_error *error)
{
        struct stat st;
        int flags = fcntl(fd, F_GETFL);

        if (flags < 0 || fstat(fd, &st) < 0)
                return sd_bus_error_set_errnof(error, errno, "Cannot use the file descriptor %d: %m", fd);
        if (flags & O_PATH)
                return sd_bus_error_setf(
                        error, SD_BUS_ERROR_INVALID_ARGS,
                        "The file descriptor is an O_PATH descriptor, which can be neither read nor written");
        if (!S_ISREG(st.st_mode) && !S_ISFIFO(st.st_mode) && !S_ISSOCK(st.st_mode))
                return sd_bus_error_setf(error, SD_BUS_ERROR_INVALID_ARGS,
                                         "The file descriptor refers to %s, not to a file or a pipe",
                                         file_type_name(st.st_mode));
        if (for_writing && (flags & O_ACCMODE) == O_RDONLY)
                return sd_bus_error_setf(error, SD_BUS_ERROR_INVALID_ARGS,
                                         "The file descriptor is open read-only; the archive must be written to it");
        if (!for_writing && (flags & O_ACCMODE) == O_WRONLY)
                return sd_bus_error_setf(error, SD_BUS_ERROR_INVALID_ARGS,
                                         "The file descriptor is open write-only; the archive must be read from it");
        return 0;
}
