/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* Unit test of the image-name and export-format rules of common/names.c (TAP). */
#include <stdio.h>
#include <string.h>

#include "names.h"

static unsigned n_tests, n_failed;

static void check(int ok, const char *what, const char *value)
{
        n_tests++;
        if (!ok)
                n_failed++;
        printf("%s %u - %s \"", ok ? "ok" : "not ok", n_tests, what);
        /* one TAP line per test: control characters escaped */
        for (const unsigned char *c = (const unsigned char *) value; *c; c++)
                printf(*c < 0x20 || *c == 0x7f ? "\\x%02x" : "%c", *c);
        printf("\"\n");
}

static void expect_valid(const char *name)
{
        check(image_name_is_valid(name) && image_name_invalid_reason(name) == NULL, "valid", name);
}

static void expect_invalid(const char *name, const char *reason_part)
{
        const char *reason = image_name_invalid_reason(name);

        check(!image_name_is_valid(name) && reason && strstr(reason, reason_part), "invalid", name);
}

int main(void)
{
        char max[IMAGE_NAME_MAX + 2];

        expect_valid("a");
        expect_valid("base");
        expect_valid("A-Z_a-z.0-9");
        expect_valid("0start");
        expect_valid("x..y");
        expect_valid("trailing.");
        memset(max, 'a', IMAGE_NAME_MAX);
        max[IMAGE_NAME_MAX] = '\0';
        expect_valid(max);

        max[IMAGE_NAME_MAX] = 'a';
        max[IMAGE_NAME_MAX + 1] = '\0';
        expect_invalid(max, "longer");
        expect_invalid("", "empty");
        expect_invalid(".", "'.'");
        expect_invalid("..", "'.'");
        expect_invalid(".x", "'.'");
        expect_invalid(".#temp", "'.'");
        expect_invalid("-x", "'-'");
        expect_invalid("../x", "'.'");
        expect_invalid("a/b", "'/'");
        expect_invalid("\xc3\xbc", "non-ASCII");
        expect_invalid("a b", "character");
        expect_invalid("a\nb", "character");
        expect_invalid("a:b", "character");
        check(!image_name_is_valid(NULL), "invalid", "(null)");

        check(export_format_is_valid(""), "format", "");
        for (size_t i = 0; export_formats[i]; i++)
                check(export_format_is_valid(export_formats[i]), "format", export_formats[i]);
        check(!export_format_is_valid("zip"), "not a format", "zip");
        check(!export_format_is_valid(NULL), "not a format", "(null)");

        printf("1..%u\n", n_tests);
        return n_failed ? 1 : 0;
}
