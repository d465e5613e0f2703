/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <errno.h>
#include <stdbool.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

#include "errors.h"
#include "escape.h"
#include "util.h"

/* The one table of stamp's errors: each name with the errno it stands for, and whether a failure with
 * that errno is reported under that name (an errno reported under none gets the generic Failed).
 * EINVAL stands for a bad name when a caller names a thing, but a failure with EINVAL is only an
 * invalid argument; ENXIO and EPROTONOSUPPORT can come from elsewhere than a machine or a format.
 * For either direction the first row that matches wins. */
#define STAMP_ERRORS(X)                                                                                                \
        X(SD_BUS_ERROR_INVALID_ARGS, EINVAL, true)                                                                     \
        X(SD_BUS_ERROR_NO_MEMORY, ENOMEM, true)                                                                        \
        X(STAMP_ERROR_NO_SUCH_IMAGE, ENOENT, true)                                                                     \
        X(STAMP_ERROR_IMAGE_EXISTS, EEXIST, true)                                                                      \
        X(STAMP_ERROR_IMAGE_EXISTS, ENOTEMPTY, true)                                                                   \
        X(STAMP_ERROR_INVALID_NAME, EINVAL, false)                                                                     \
        X(STAMP_ERROR_IMAGE_BUSY, EBUSY, true)                                                                         \
        X(STAMP_ERROR_IMAGE_READ_ONLY, EROFS, true)                                                                    \
        X(STAMP_ERROR_NO_SUCH_MACHINE, ENXIO, false)                                                                   \
        X(STAMP_ERROR_MACHINE_EXISTS, EEXIST, false)                                                                   \
        X(STAMP_ERROR_NO_SUCH_JOB, ENOENT, false)                                                                      \
        X(STAMP_ERROR_UNSUPPORTED_FORMAT, EPROTONOSUPPORT, false)                                                      \
        X(STAMP_ERROR_BAD_ARCHIVE, EBADMSG, true)                                                                      \
        X(STAMP_ERROR_NOT_SUPPORTED, EOPNOTSUPP, true)                                                                 \
        X(STAMP_ERROR_NO_SPACE, ENOSPC, true)                                                                          \
        X(STAMP_ERROR_NO_SPACE, EDQUOT, true)                                                                          \
        X(STAMP_ERROR_QUOTA_EXCEEDED, EDQUOT, false)                                                                   \
        X(STAMP_ERROR_NO_SUCH_SNAPSHOT, ENOENT, false)                                                                 \
        X(STAMP_ERROR_NO_SUCH_EXEC, ESRCH, false)                                                                      \
        X(STAMP_ERROR_UNSUPPORTED_FORMAT, EMEDIUMTYPE, true)                                                           \
        X(SD_BUS_ERROR_AUTH_FAILED, EKEYREJECTED, true)

#define AS_MAP(name, error, from_errno) SD_BUS_ERROR_MAP(name, error),
const sd_bus_error_map stamp_error_map[] = {
        STAMP_ERRORS(AS_MAP) SD_BUS_ERROR_MAP_END,
};
#undef AS_MAP

const char *stamp_error_name_from_errno(int error)
{
        static const struct {
                const char *name;
                int error;
                bool from_errno;
        } table[] = {
#define AS_ROW(n, e, f) {n, e, f},
                STAMP_ERRORS(AS_ROW)
#undef AS_ROW
        };

        for (size_t i = 0; i < sizeof table / sizeof table[0]; i++)
                if (table[i].from_errno && table[i].error == abs(error))
                        return table[i].name;
        return NULL;
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

int stamp_error_check_name(sd_bus_error *ret, const char *what, const char *name, const char *why)
{
        _cleanup_free_ char *shown = NULL;

        if (!why)
                return 0;
        /* Escaped, so control bytes and non-UTF-8 never reach the bus. */
        shown = text_shown(name);
        return sd_bus_error_setf(ret, STAMP_ERROR_INVALID_NAME, "Invalid %s \"%s\": %s", what, shown ?: "?", why);
}
