/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <stddef.h>
#include <string.h>

#include "formats.h"

#define streq(a, b) (strcmp((a), (b)) == 0)

static const char *const export_format_table[_EXPORT_FORMAT_MAX] = {
        [EXPORT_ZSTD] = "zstd",   [EXPORT_XZ] = "xz",
        [EXPORT_GZIP] = "gzip",   [EXPORT_BZIP2] = "bzip2",
        [EXPORT_UNCOMPRESSED] = "uncompressed",
};

ExportFormat export_format_from_string(const char *s)
{
        if (!s)
                return _EXPORT_FORMAT_INVALID;
        if (s[0] == '\0')
                return EXPORT_ZSTD;
        for (int i = 0; i < _EXPORT_FORMAT_MAX; i++)
                if (streq(export_format_table[i], s))
                        return (ExportFormat) i;
        return _EXPORT_FORMAT_INVALID;
}

const char *export_format_to_string(ExportFormat f)
{
        return f >= 0 && f < _EXPORT_FORMAT_MAX ? export_format_table[f] : NULL;
}
