/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <pwd.h>
#include <time.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include "table.h"
#include "util.h"

struct table_style table_style = {.legend = true};

char *format_user(char *buf, size_t size, uint32_t uid)
{
        struct passwd pw, *found = NULL;
        char scratch[4096];

        if (getpwuid_r((uid_t) uid, &pw, scratch, sizeof scratch, &found) == 0 && found)
                snprintf(buf, size, "%s", found->pw_name);
        else
                snprintf(buf, size, "%" PRIu32, uid);
        return buf;
}

char *format_bytes(char *buf, size_t size, uint64_t bytes)
{
        static const char units[] = "KMGTPE";
        uint64_t factor = 1024;
        size_t u = 0;

        if (bytes == UINT64_MAX) {
                snprintf(buf, size, "-");
                return buf;
        }
        if (bytes < 1024) {
                snprintf(buf, size, "%" PRIu64 "B", bytes);
                return buf;
        }
        while (u + 1 < strlen(units) && bytes / factor >= 1024) {
                factor *= 1024;
                u++;
        }

        uint64_t whole = bytes / factor;
        /* (bytes % factor) < 2^60, so times 10 still fits in 64 bits. */
        uint64_t tenth = (bytes % factor) * 10 / factor;

        if (whole < 10)
                snprintf(buf, size, "%" PRIu64 ".%" PRIu64 "%c", whole, tenth, units[u]);
        else
                snprintf(buf, size, "%" PRIu64 "%c", whole, units[u]);
        return buf;
}

char *format_timestamp(char *buf, size_t size, uint64_t usec)
{
        struct tm tm;
        time_t sec;

        if (usec == 0 || usec == UINT64_MAX) {
                snprintf(buf, size, "-");
                return buf;
        }
        sec = (time_t) (usec / 1000000);
        if (!localtime_r(&sec, &tm) || strftime(buf, size, "%a %Y-%m-%d %H:%M:%S %Z", &tm) == 0)
                snprintf(buf, size, "-");
        return buf;
}

char *format_timestamp_short(char *buf, size_t size, uint64_t usec)
{
        struct tm tm;
        time_t sec;

        if (usec == 0 || usec == UINT64_MAX) {
                snprintf(buf, size, "-");
                return buf;
        }
        sec = (time_t) (usec / 1000000);
        if (!localtime_r(&sec, &tm) || strftime(buf, size, "%Y-%m-%d %H:%M", &tm) == 0)
                snprintf(buf, size, "-");
        return buf;
}

/* Characters, not bytes: a UTF-8 continuation byte starts none. */
static size_t text_width(const char *s)
{
        size_t n = 0;

        for (; *s; s++)
                if (((unsigned char) *s & 0xC0) != 0x80)
                        n++;
        return n;
}

char *ellipsize(const char *s, size_t width)
{
        size_t n = 0;
        const char *p;
        char *r;

        if (width < 2)
                width = 2;
        if (text_width(s) <= width)
                return strdup(s);
        /* width - 1 characters, then "…" */
        for (p = s; *p; p++)
                if (((unsigned char) *p & 0xC0) != 0x80 && n++ == width - 1)
                        break;
        r = malloc((size_t) (p - s) + strlen("…") + 1);
        if (!r)
                return NULL;
        memcpy(r, s, (size_t) (p - s));
        strcpy(r + (p - s), "…");
        return r;
}

unsigned table_width(void)
{
        struct winsize ws = {0};
        const char *e = getenv("COLUMNS");

        if (e && atoi(e) > 0)
                return (unsigned) atoi(e);
        if (isatty(STDOUT_FILENO) && ioctl(STDOUT_FILENO, TIOCGWINSZ, &ws) >= 0 && ws.ws_col > 0)
                return ws.ws_col;
        return 0;
}

struct libscols_table *table_new(const char *name)
{
        struct libscols_table *t = scols_new_table();

        if (!t)
                return NULL;
        scols_table_set_name(t, name);
        scols_table_enable_json(t, table_style.json);
        scols_table_enable_noheadings(t, !table_style.legend && !table_style.json);
        scols_table_enable_colors(t, table_style.colors && !table_style.json);
        return t;
}

struct libscols_column *table_add_column(struct libscols_table *t, const char *header, int flags, int json_type)
{
        struct libscols_column *c = scols_table_new_column(t, header, 0, flags);

        if (c)
                scols_column_set_json_type(c, json_type);
        return c;
}

int table_set(struct libscols_line *line, size_t col, const char *fmt, ...)
{
        char *s = NULL;
        va_list ap;
        int r;

        if (!fmt)
                return scols_line_set_data(line, col, "");

        va_start(ap, fmt);
        r = vasprintf(&s, fmt, ap);
        va_end(ap);
        if (r < 0)
                return -ENOMEM;
        return scols_line_refer_data(line, col, s);
}

int table_print(struct libscols_table *t, const char *singular, const char *plural)
{
        size_t n = scols_table_get_nlines(t);
        int r;

        if (n == 0 && table_style.legend && !table_style.json) {
                if (!table_style.quiet)
                        printf("No %s.\n", plural);
                return 0;
        }

        r = scols_print_table(t);
        if (r < 0)
                return r;

        if (table_style.legend && !table_style.json && !table_style.quiet)
                printf("\n%zu %s listed.\n", n, n == 1 ? singular : plural);
        return 0;
}

void print_field(unsigned width, const char *label, const char *value)
{
        printf("%*s: %s\n", (int) width, label, value ? value : "-");
}

const char *color_highlight(void)
{
        return table_style.colors ? "\033[1;31m" : NULL;
}
