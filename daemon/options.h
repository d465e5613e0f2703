/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

#include <stddef.h>

#include <glib.h>

#include "bus-util.h"

/* Reading an a{sv} options argument into a struct, by a table. Unknown keys, repeated keys and values of
 * the wrong type are refused with InvalidArgs naming the key; every size is capped. */

#define OPTIONS_MAX 64          /* entries in one dictionary */
#define OPTIONS_STRING_MAX 4096 /* bytes in one string */
#define OPTIONS_STRV_MAX 1024   /* strings in one array */

typedef enum {
        OPTION_STRING, /* "s" → char* (malloc'd), NULL when absent */
        OPTION_BOOL,   /* "b" → int, -1 when absent */
        OPTION_STRV,   /* "as" → char** (NULL-terminated, malloc'd), NULL when absent */
        OPTION_FD,     /* "h" → int (a dup, O_CLOEXEC), -1 when absent */
        OPTION_U64,    /* "t" → uint64_t, UINT64_MAX when absent */
} OptionType;

typedef struct OptionSpec {
        const char *key;
        OptionType type;
        size_t offset;
} OptionSpec;

/* Fill the fields of @base named in @table (setting absent ones to NULL/-1 first) from the a{sv} at the
 * read position of @msg. On failure the fields are freed again. */
int bus_read_options(sd_bus_message *msg, const OptionSpec *table, void *base, sd_bus_error *error);
/* Free what bus_read_options() stored (strings, arrays, fds) and reset the fields. */
void options_free(const OptionSpec *table, void *base);
