/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

#include "errors.h"

const sd_bus_error_map stamp_error_map[] = {
        SD_BUS_ERROR_MAP(STAMP_ERROR_NO_SUCH_IMAGE, ENOENT),
        SD_BUS_ERROR_MAP(STAMP_ERROR_IMAGE_EXISTS, EEXIST),
        SD_BUS_ERROR_MAP(STAMP_ERROR_INVALID_NAME, EINVAL),
        SD_BUS_ERROR_MAP(STAMP_ERROR_IMAGE_BUSY, EBUSY),
        SD_BUS_ERROR_MAP(STAMP_ERROR_IMAGE_READ_ONLY, EROFS),
        SD_BUS_ERROR_MAP(STAMP_ERROR_NO_SUCH_MACHINE, ENXIO),
        SD_BUS_ERROR_MAP(STAMP_ERROR_MACHINE_EXISTS, EEXIST),
        SD_BUS_ERROR_MAP(STAMP_ERROR_NO_SUCH_JOB, ENOENT),
        SD_BUS_ERROR_MAP(STAMP_ERROR_UNSUPPORTED_FORMAT, EPROTONOSUPPORT),
        SD_BUS_ERROR_MAP(STAMP_ERROR_BAD_ARCHIVE, EBADMSG),
        SD_BUS_ERROR_MAP(STAMP_ERROR_NOT_SUPPORTED, EOPNOTSUPP),
        SD_BUS_ERROR_MAP(STAMP_ERROR_NO_SPACE, ENOSPC),
        SD_BUS_ERROR_MAP(STAMP_ERROR_QUOTA_EXCEEDED, EDQUOT),
        SD_BUS_ERROR_MAP_END,
};

const char *stamp_error_name_from_errno(int error)
{
        switch (abs(error)) {
        case ENOENT:
                return STAMP_ERROR_NO_SUCH_IMAGE;
        case EEXIST:
        case ENOTEMPTY:
                return STAMP_ERROR_IMAGE_EXISTS;
        case EBUSY:
                return STAMP_ERROR_IMAGE_BUSY;
        case EROFS:
                return STAMP_ERROR_IMAGE_READ_ONLY;
        case EBADMSG:
                return STAMP_ERROR_BAD_ARCHIVE;
        case EOPNOTSUPP:
                return STAMP_ERROR_NOT_SUPPORTED;
        case ENOSPC:
        case EDQUOT:
                return STAMP_ERROR_NO_SPACE;
        case ENOMEM:
                return SD_BUS_ERROR_NO_MEMORY;
        case EINVAL:
                return SD_BUS_ERROR_INVALID_ARGS;
        default:
                return NULL;
        }
}

int stamp_error_set_errnof(sd_bus_error *ret, int error, const char *fmt, ...)
{
        const char *name = stamp_error_name_from_errno(error);
        char buf[1024];
        va_list ap;

        va_start(ap, fmt);
        vsnprintf(buf, sizeof buf, fmt, ap);
        va_end(ap);
        if (!name)
                name = SD_BUS_ERROR_FAILED;
        sd_bus_error_set(ret, name, buf);
        return -abs(error);
}
