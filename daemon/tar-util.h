/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

#include "manager.h"

/* What the tar methods (on the event loop) and stamp-transfer share, without libarchive. */

typedef enum {
        EXPORT_ZSTD,
        EXPORT_XZ,
        EXPORT_GZIP,
        EXPORT_BZIP2,
        EXPORT_UNCOMPRESSED,
        _EXPORT_FORMAT_MAX,
        _EXPORT_FORMAT_INVALID = -1,
} ExportFormat;

/* "" is the default, zstd. */
ExportFormat export_format_from_string(const char *s);
const char *export_format_to_string(ExportFormat f);

/* InvalidArgs unless @fd is a file, pipe or socket open for reading (or for writing, if @for_writing):
 * never a directory, an O_PATH descriptor or one open the wrong way. */
int bus_check_archive_fd(int fd, bool for_writing, sd_bus_error *error);
/* ImageExists or ImageBusy unless @name is free to be made by an import. */
int bus_check_import_target(Manager *m, const char *name, sd_bus_error *error);
