/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <libsmartcols.h>

#define FORMAT_BYTES_MAX 16
#define FORMAT_TIMESTAMP_MAX 64

/* "512B", "1.2K", "15M", "3.0G"; "-" for UINT64_MAX (unknown). Base 1024, truncated. */
char *format_bytes(char *buf, size_t size, uint64_t bytes);

/* Local time as "Tue 2024-01-02 03:04:05 CET"; "-" for 0 and UINT64_MAX. */
char *format_timestamp(char *buf, size_t size, uint64_t usec);

/* Local time as "2024-01-02 03:04", for tables short of room; "-" for 0 and UINT64_MAX. */
char *format_timestamp_short(char *buf, size_t size, uint64_t usec);

/* @s cut to @width characters, its last one "…" when it was longer (at least 2 kept). A new string. */
char *ellipsize(const char *s, size_t width);

/* The width tables must fit: $COLUMNS when set, else the terminal's on stdout, else 0 (no limit: a
 * pipe or file gets every character). */
unsigned table_width(void);

/* The user name of @uid, or the number where the user database does not know it. */
char *format_user(char *buf, size_t size, uint32_t uid);

/* How stampctl prints tables; set once from the command line and the terminal. */
struct table_style {
        bool json;
        bool legend;
        bool colors;
        bool quiet; /* -q: no "No images." and no footer; the header stays */
};
extern struct table_style table_style;

static inline void scols_unref_tablep(struct libscols_table **t)
{
        if (*t)
                scols_unref_table(*t);
}

/* A table named @name (the JSON key) in the current style. */
struct libscols_table *table_new(const char *name);

/* A column; @json_type one of SCOLS_JSON_*. */
struct libscols_column *table_add_column(struct libscols_table *t, const char *header, int flags, int json_type);

/* Sets cell @col of @line; formatted printf-style; NULL @fmt leaves it empty. */
int table_set(struct libscols_line *line, size_t col, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* Prints the table; with the legend on, an empty table prints "No @plural." and a
 * non-empty one a footer "N @plural listed." (or @singular for one). */
int table_print(struct libscols_table *t, const char *singular, const char *plural);

/* Prints "Label: value" lines with the labels right-aligned to @width. */
void print_field(unsigned width, const char *label, const char *value);

/* The ANSI colour to use for something notable, or NULL when colours are off. */
const char *color_highlight(void);
