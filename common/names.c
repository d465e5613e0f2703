/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <string.h>

#include "names.h"

static bool char_is_name_char(char c)
{
        return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' || c == '_' ||
               c == '.';
}

const char *image_name_invalid_reason(const char *name)
{
        size_t n;

        if (!name || name[0] == '\0')
                return "is empty";

        n = strnlen(name, IMAGE_NAME_MAX + 1);
        if (n > IMAGE_NAME_MAX)
                return "is longer than 64 characters";
        if (name[0] == '.')
                return "starts with '.'";
        if (name[0] == '-')
                return "starts with '-'";
        for (size_t i = 0; i < n; i++)
                if (!char_is_name_char(name[i])) {
                        if (name[i] == '/')
                                return "contains '/'";
                        if ((unsigned char) name[i] >= 0x80)
                                return "contains a non-ASCII character";
                        return "contains a character other than A-Z a-z 0-9 - _ .";
                }
        return NULL;
}

bool image_name_is_valid(const char *name)
{
        return image_name_invalid_reason(name) == NULL;
}
