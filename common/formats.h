/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* Export formats: what stampctl, stampd and stamp-transfer all mean by their names. */

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

