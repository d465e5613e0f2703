/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "escape.h"

/* The length of the UTF-8 sequence at @p (at most @n bytes), if it is a valid, shortest-form encoding
 * of a character that is no C1 control (U+0080..U+009F); else 0. */
static size_t utf8_printable_length(const unsigned char *p, size_t n)
{
        uint32_t c;
        size_t len;

        if (p[0] >= 0xc2 && p[0] <= 0xdf) {
                len = 2;
                c = p[0] & 0x1f;
        } else if (p[0] >= 0xe0 && p[0] <= 0xef) {
                len = 3;
                c = p[0] & 0x0f;
        } else if (p[0] >= 0xf0 && p[0] <= 0xf4) {
                len = 4;
                c = p[0] & 0x07;
        } else
                return 0;
        if (n < len)
                return 0;
        for (size_t i = 1; i < len; i++) {
                if ((p[i] & 0xc0) != 0x80)
                        return 0;
                c = (c << 6) | (p[i] & 0x3f);
        }
        if ((len == 3 && c < 0x800) || (len == 4 && (c < 0x10000 || c > 0x10ffff)) || (c >= 0xd800 && c <= 0xdfff) ||
            (c >= 0x80 && c <= 0x9f))
                return 0;
        return len;
}

char *text_escape(const char *s, size_t max, EscapeFlags flags)
{
        const unsigned char *p;
        size_t n;
        char *buf, *o;

        if (!s)
                s = "(null)";
        n = max > 0 ? strnlen(s, max) : strlen(s);
        /* At worst every byte becomes \ooo. */
        buf = malloc(n * 4 + 1);
        if (!buf)
                return NULL;
        o = buf;
        p = (const unsigned char *) s;
        for (size_t i = 0; i < n;) {
                unsigned char c = p[i];
                const char *named = NULL;

                switch (c) {
                case '\b':
                        named = "\\b";
                        break;
                case '\f':
                        named = "\\f";
                        break;
                case '\n':
                        named = "\\n";
                        break;
                case '\r':
                        named = "\\r";
                        break;
                case '\t':
                        named = "\\t";
                        break;
                case '\v':
                        named = "\\v";
                        break;
                case '\\':
                        named = "\\\\";
                        break;
                case '"':
                        if (flags & ESCAPE_MESSAGE)
                                named = "\\\"";
                        break;
                default:
                        break;
                }
                if (named) {
                        memcpy(o, named, 2);
                        o += 2;
                        i++;
                        continue;
                }
                if (c >= 0x80 && !(flags & ESCAPE_MESSAGE)) {
                        size_t len = utf8_printable_length(p + i, n - i);
                        if (len > 0) {
                                memcpy(o, p + i, len);
                                o += len;
                                i += len;
                                continue;
                        }
                }
                if (c < 0x20 || c >= 0x7f) {
                        *o++ = '\\';
                        *o++ = (char) ('0' + ((c >> 6) & 07));
                        *o++ = (char) ('0' + ((c >> 3) & 07));
                        *o++ = (char) ('0' + (c & 07));
                } else
                        *o++ = (char) c;
                i++;
        }
        *o = '\0';
        return buf;
}

char *text_shown(const char *s)
{
        if (s && strnlen(s, SHOWN_MAX) >= SHOWN_MAX)
                return strdup("(too long to show)");
        return text_escape(s, 0, ESCAPE_MESSAGE);
}
