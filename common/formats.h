/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

#include <stdbool.h>
#include <stddef.h>

/* Export formats and the file names of tar archives: what stampctl, stampd and stamp-transfer all mean
 * by them, in this one place. */

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
/* NULL for anything but a format. */
const char *export_format_to_string(ExportFormat f);
/* Whether @s names a format ("" included: the default); false for NULL. */
bool export_format_is_valid(const char *s);

/* The format a file name's suffix stands for (".tar.xz", ".txz", ".xz" → xz; ".tar" → uncompressed;
 * case-insensitive); _EXPORT_FORMAT_INVALID if it has none. A suffix alone ("xz", ".xz") is a name,
 * not a suffix. */
ExportFormat export_format_from_filename(const char *filename);

/* The length of the first @len bytes of @name without its archive suffix: one compression suffix
 * (".zst", ".tgz", ...) and then ".tar", or ".tar" alone ("debian-12.tar.xz" → "debian-12"). */
size_t archive_name_strip_suffix(const char *name, size_t len);
