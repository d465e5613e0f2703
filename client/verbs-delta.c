/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* diff, export, import: what an image changed against its origin, and images as btrfs send streams
 * (full or only the difference from a template) or tar archives. */

#include <fcntl.h>
#include <libgen.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "formats.h"
#include "names.h"
#include "stampctl.h"
#include "table.h"

/* A path as git prints it: in double quotes with C escapes when it holds a control character, a
 * quote or a backslash, so that one line is one change whatever the name. */
static void print_path(const char *p, FILE *f)
{
        bool plain = true;

        for (const unsigned char *c = (const unsigned char *) p; *c; c++)
                if (*c < 0x20 || *c == 0x7f || *c == '"' || *c == '\\')
                        plain = false;
        if (plain) {
                fputs(p, f);
                return;
        }
        fputc('"', f);
        for (const unsigned char *c = (const unsigned char *) p; *c; c++)
                switch (*c) {
                case '\t':
                        fputs("\\t", f);
                        break;
                case '\n':
                        fputs("\\n", f);
                        break;
                case '"':
                case '\\':
                        fputc('\\', f);
                        fputc(*c, f);
                        break;
                default:
                        if (*c < 0x20 || *c == 0x7f)
                                fprintf(f, "\\%03o", *c);
                        else
                                fputc(*c, f);
                }
        fputc('"', f);
}

int verb_diff(sd_bus *bus, int argc, char **argv)
{
        _cleanup_(sd_bus_error_freep) sd_bus_error error = SD_BUS_ERROR_NULL;
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL, *reply = NULL;
        const char *name = argv[1], *base = argc > 2 ? argv[2] : "", *change, *path;
        bool first = true;
        int r;

        r = bus_new_manager_call(bus, &m, "DiffImage");
        if (r >= 0)
                r = sd_bus_message_append(m, "ss", name, base);
        if (r < 0)
                return log_error(EXIT_FAILURE_GENERIC, "Failed to create a bus message: %s", strerror(-r));
        /* Someone else's image needs manage-images: it may be asked for. */
        r = bus_call_mutating(bus, m, &error, &reply);
        if (r < 0)
                return log_bus_error(&error, r, "Failed to compare the image");

        r = sd_bus_message_enter_container(reply, 'a', "(ss)");
        if (r < 0)
                return log_error(EXIT_FAILURE_GENERIC, "Failed to parse the reply: %s", strerror(-r));
        if (arg_json)
                fputc('[', stdout);
        while ((r = sd_bus_message_read(reply, "(ss)", &change, &path)) > 0) {
                if (arg_json) {
                        fputs(first ? "\n  {\"change\": " : ",\n  {\"change\": ", stdout);
                        json_fputs(change, stdout);
                        fputs(", \"path\": ", stdout);
                        json_fputs(path, stdout);
                        fputc('}', stdout);
                } else {
                        printf("%s\t", change);
                        print_path(path, stdout);
                        fputc('\n', stdout);
                }
                first = false;
        }
        if (r < 0)
                return log_error(EXIT_FAILURE_GENERIC, "Failed to parse the reply: %s", strerror(-r));
        if (arg_json)
                fputs(first ? "]\n" : "\n]\n", stdout);
        return EXIT_OK;
}
