/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <string.h>
#include <strings.h>

#include "formats.h"

#define streq(a, b) (strcmp((a), (b)) == 0)
#define ELEMENTSOF(x) (sizeof(x) / sizeof((x)[0]))

static const char *const export_format_table[_EXPORT_FORMAT_MAX] = {
        [EXPORT_ZSTD] = "zstd",
        [EXPORT_XZ] = "xz",
        [EXPORT_GZIP] = "gzip",
        [EXPORT_BZIP2] = "bzip2",
        [EXPORT_UNCOMPRESSED] = "uncompressed",
};

/* The suffixes of archive file names. A short form (".tgz") stands for the compression suffix and
 * ".tar" together. */
static const struct {
        const char *suffix;
        ExportFormat format;
        bool has_tar;
} suffix_table[] = {
        {".zst", EXPORT_ZSTD, false}, {".zstd", EXPORT_ZSTD, false},       {".tzst", EXPORT_ZSTD, true},
        {".xz", EXPORT_XZ, false},    {".txz", EXPORT_XZ, true},           {".gz", EXPORT_GZIP, false},
        {".tgz", EXPORT_GZIP, true},  {".bz2", EXPORT_BZIP2, false},       {".tbz2", EXPORT_BZIP2, true},
        {".tbz", EXPORT_BZIP2, true}, {".tar", EXPORT_UNCOMPRESSED, true},
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

bool export_format_is_valid(const char *s)
{
        return export_format_from_string(s) != _EXPORT_FORMAT_INVALID;
}

static bool has_suffix(const char *s, size_t len, const char *suffix)
{
        size_t n = strlen(suffix);

        return len > n && strncasecmp(s + len - n, suffix, n) == 0;
}

ExportFormat export_format_from_filename(const char *filename)
{
        size_t len;

        if (!filename)
                return _EXPORT_FORMAT_INVALID;
        len = strlen(filename);
        for (size_t i = 0; i < ELEMENTSOF(suffix_table); i++)
                if (has_suffix(filename, len, suffix_table[i].suffix))
                        return suffix_table[i].format;
        return _EXPORT_FORMAT_INVALID;
}

size_t archive_name_strip_suffix(const char *name, size_t len)
{
        bool tar_stripped = false;

        for (size_t i = 0; i < ELEMENTSOF(suffix_table); i++)
                if (has_suffix(name, len, suffix_table[i].suffix)) {
                        len -= strlen(suffix_table[i].suffix);
                        tar_stripped = suffix_table[i].has_tar;
                        break;
                }
        if (!tar_stripped && has_suffix(name, len, ".tar"))
                len -= strlen(".tar");
        return len;
}
