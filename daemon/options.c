/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <fcntl.h>

#include "escape.h"
#include "options.h"

static void *field(void *base, const OptionSpec *o)
{
        return (uint8_t *) base + o->offset;
}

static const char *type_signature(OptionType t)
{
        switch (t) {
        case OPTION_STRING:
                return "s";
        case OPTION_BOOL:
                return "b";
        case OPTION_STRV:
                return "as";
        case OPTION_FD:
                return "h";
        case OPTION_U64:
                return "t";
        }
        return "?";
}

void options_free(const OptionSpec *table, void *base)
{
        for (const OptionSpec *o = table; o->key; o++)
                switch (o->type) {
                case OPTION_STRING:
                        free(*(char **) field(base, o));
                        *(char **) field(base, o) = NULL;
                        break;
                case OPTION_BOOL:
                        *(int *) field(base, o) = -1;
                        break;
                case OPTION_STRV:
                        strv_freep((char ***) field(base, o));
                        *(char ***) field(base, o) = NULL;
                        break;
                case OPTION_FD:
                        *(int *) field(base, o) = safe_close(*(int *) field(base, o));
                        break;
                case OPTION_U64:
                        *(uint64_t *) field(base, o) = UINT64_MAX;
                        break;
                }
}

static void options_reset(const OptionSpec *table, void *base)
{
        for (const OptionSpec *o = table; o->key; o++)
                switch (o->type) {
                case OPTION_STRING:
                        *(char **) field(base, o) = NULL;
                        break;
                case OPTION_STRV:
                        *(char ***) field(base, o) = NULL;
                        break;
                case OPTION_U64:
                        *(uint64_t *) field(base, o) = UINT64_MAX;
                        break;
                case OPTION_BOOL:
                case OPTION_FD:
                        *(int *) field(base, o) = -1;
                        break;
                }
}

static int read_strv(sd_bus_message *msg, const char *key, char ***ret, sd_bus_error *error)
{
        _cleanup_strv_free_ char **l = NULL;
        size_t n = 0;
        const char *s;
        int k;

        k = sd_bus_message_enter_container(msg, 'a', "s");
        if (k < 0)
                return k;
        l = calloc(1, sizeof(char *));
        if (!l)
                return -ENOMEM;
        while ((k = sd_bus_message_read(msg, "s", &s)) > 0) {
                char **nl;
                if (n >= OPTIONS_STRV_MAX)
                        return sd_bus_error_setf(error, SD_BUS_ERROR_INVALID_ARGS,
                                                 "Option \"%s\" has more than %d entries", key, OPTIONS_STRV_MAX);
                if (strlen(s) > OPTIONS_STRING_MAX)
                        return sd_bus_error_setf(error, SD_BUS_ERROR_INVALID_ARGS,
                                                 "An entry of option \"%s\" is longer than %d bytes", key,
                                                 OPTIONS_STRING_MAX);
                nl = realloc(l, (n + 2) * sizeof(char *));
                if (!nl)
                        return -ENOMEM;
                l = nl;
                l[n] = strdup(s);
                if (!l[n])
                        return -ENOMEM;
                l[++n] = NULL;
        }
        if (k < 0)
                return k;
        k = sd_bus_message_exit_container(msg);
        if (k < 0)
                return k;
        *ret = TAKE_PTR(l);
        return 0;
}

static int read_one(sd_bus_message *msg, const OptionSpec *o, void *base, sd_bus_error *error)
{
        const char *s;
        int b, fd, k;

        switch (o->type) {
        case OPTION_STRING:
                k = sd_bus_message_read(msg, "s", &s);
                if (k < 0)
                        return k;
                if (strlen(s) > OPTIONS_STRING_MAX)
                        return sd_bus_error_setf(error, SD_BUS_ERROR_INVALID_ARGS,
                                                 "Option \"%s\" is longer than %d bytes", o->key, OPTIONS_STRING_MAX);
                if (!(*(char **) field(base, o) = strdup(s)))
                        return -ENOMEM;
                return 0;
        case OPTION_BOOL:
                k = sd_bus_message_read(msg, "b", &b);
                if (k < 0)
                        return k;
                *(int *) field(base, o) = !!b;
                return 0;
        case OPTION_STRV:
                return read_strv(msg, o->key, (char ***) field(base, o), error);
        case OPTION_FD:
                k = sd_bus_message_read(msg, "h", &fd);
                if (k < 0)
                        return k;
                fd = fcntl(fd, F_DUPFD_CLOEXEC, 3);
                if (fd < 0)
                        return -errno;
                *(int *) field(base, o) = fd;
                return 0;
        case OPTION_U64:
                return sd_bus_message_read(msg, "t", (uint64_t *) field(base, o));
        }
        return -EINVAL;
}

int bus_read_options(sd_bus_message *msg, const OptionSpec *table, void *base, sd_bus_error *error)
{
        unsigned n = 0;
        int k;

        options_reset(table, base);

        k = sd_bus_message_enter_container(msg, 'a', "{sv}");
        if (k < 0)
                return k;
        for (;;) {
                const OptionSpec *o;
                const char *key, *contents;
                bool seen = false;

                k = sd_bus_message_enter_container(msg, 'e', "sv");
                if (k < 0)
                        goto fail;
                if (k == 0)
                        break;
                if (++n > OPTIONS_MAX) {
                        k = sd_bus_error_setf(error, SD_BUS_ERROR_INVALID_ARGS, "More than %d options given",
                                              OPTIONS_MAX);
                        goto fail;
                }
                k = sd_bus_message_read(msg, "s", &key);
                if (k < 0)
                        goto fail;
                for (o = table; o->key; o++)
                        if (streq(o->key, key))
                                break;
                if (!o->key) {
                        g_autofree char *shown = text_escape(key, 0, ESCAPE_MESSAGE);
                        k = sd_bus_error_setf(error, SD_BUS_ERROR_INVALID_ARGS, "Unknown option \"%s\"", shown);
                        goto fail;
                }
                switch (o->type) {
                case OPTION_STRING:
                        seen = *(char **) field(base, o) != NULL;
                        break;
                case OPTION_STRV:
                        seen = *(char ***) field(base, o) != NULL;
                        break;
                case OPTION_BOOL:
                case OPTION_FD:
                        seen = *(int *) field(base, o) != -1;
                        break;
                case OPTION_U64:
                        seen = *(uint64_t *) field(base, o) != UINT64_MAX;
                        break;
                }
                if (seen) {
                        k = sd_bus_error_setf(error, SD_BUS_ERROR_INVALID_ARGS, "Option \"%s\" given twice", key);
                        goto fail;
                }
                k = sd_bus_message_peek_type(msg, NULL, &contents);
                if (k < 0)
                        goto fail;
                if (!streq(contents, type_signature(o->type))) {
                        k = sd_bus_error_setf(error, SD_BUS_ERROR_INVALID_ARGS,
                                              "Option \"%s\" must be of type %s, not %s", key, type_signature(o->type),
                                              contents);
                        goto fail;
                }
                k = sd_bus_message_enter_container(msg, 'v', contents);
                if (k >= 0)
                        k = read_one(msg, o, base, error);
                if (k >= 0)
                        k = sd_bus_message_exit_container(msg);
                if (k >= 0)
                        k = sd_bus_message_exit_container(msg);
                if (k < 0)
                        goto fail;
        }
        k = sd_bus_message_exit_container(msg);
        if (k >= 0)
                return 0;
fail:
        options_free(table, base);
        return k;
}
