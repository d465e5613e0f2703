/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* diff, export, import: what an image changed against its origin, and images as btrfs send streams
 * (full or only the difference from a template) or tar archives. */

#include <fcntl.h>
#include <libgen.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "file-util.h"
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

/* The Origin of image @name (what --delta makes the difference from). */
static int image_origin(sd_bus *bus, const char *name, char **ret)
{
        _cleanup_(sd_bus_error_freep) sd_bus_error error = SD_BUS_ERROR_NULL;
        _cleanup_(freep) char *path = NULL;
        int r;

        r = sd_bus_path_encode(STAMP_IMAGE_PREFIX, name, &path);
        if (r < 0)
                return log_error(EXIT_FAILURE_GENERIC, "Out of memory.");
        r = sd_bus_get_property_string(bus, STAMP_BUS_NAME, path, STAMP_IMAGE_IFACE, "Origin", &error, ret);
        if (r < 0)
                return log_bus_error(&error, r, "Failed to read the image's origin");
        return EXIT_OK;
}

static bool is_stream_format(const char *f)
{
        return f && (strcmp(f, "tar") == 0 || strcmp(f, "btrfs") == 0);
}

int verb_export(sd_bus *bus, int argc, char **argv)
{
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL;
        _cleanup_(unlink_tempp) char *temp = NULL;
        _cleanup_(freep) char *label = NULL, *origin = NULL;
        _cleanup_(closep) int fd = -1;
        const char *name = argv[1], *file = argv[2], *format = arg_format, *compression = arg_compression;
        const char *parent = arg_parent;
        bool to_stdout = strcmp(file, "-") == 0;
        int r;

        r = bus_check_fd_passing(bus);
        if (r != EXIT_OK)
                return r;

        if (format && !is_stream_format(format))
                return log_error(EXIT_USAGE,
                                 "--format is tar or btrfs here; choose the compression with --compression.");
        if (arg_delta && arg_parent)
                return log_error(EXIT_USAGE, "--delta makes the difference from the image's origin; --parent names "
                                             "another: give one of them.");
        if ((arg_delta || arg_parent) && format && strcmp(format, "btrfs") != 0)
                return log_error(EXIT_USAGE, "A delta is a btrfs stream: drop --format tar.");
        if (arg_delta || arg_parent)
                format = "btrfs";
        if (!format)
                format = "tar";
        if (!compression && !to_stdout) {
                ExportFormat f = export_format_from_filename(file);
                compression = f == _EXPORT_FORMAT_INVALID ? NULL : export_format_to_string(f);
        }
        if (arg_delta) {
                r = image_origin(bus, name, &origin);
                if (r != EXIT_OK)
                        return r;
                if (!origin || !*origin)
                        return log_error(EXIT_FAILURE_GENERIC,
                                         "Image %s has no origin to make a delta against; name one with --parent.",
                                         name);
                parent = origin;
        }

        r = export_file_open(file, arg_block, "an export", &fd, &temp);
        if (r != EXIT_OK)
                return r;

        r = bus_new_manager_call(bus, &m, "ExportImage");
        if (r >= 0)
                r = sd_bus_message_append(m, "sh", name, to_stdout ? STDOUT_FILENO : fd);
        if (r >= 0)
                r = sd_bus_message_open_container(m, 'a', "{sv}");
        if (r >= 0)
                r = sd_bus_message_append(m, "{sv}", "format", "s", format);
        if (r >= 0 && compression)
                r = sd_bus_message_append(m, "{sv}", "compression", "s", compression);
        if (r >= 0 && parent)
                r = sd_bus_message_append(m, "{sv}", "parent", "s", parent);
        if (r >= 0)
                r = sd_bus_message_close_container(m);
        if (r < 0)
                return log_error(EXIT_FAILURE_GENERIC, "Failed to create a bus message: %s", strerror(-r));

        if (asprintf(&label, "export %s%s%s", name, parent ? " against " : "", parent ?: "") < 0)
                return log_error(EXIT_FAILURE_GENERIC, "Out of memory.");
        r = job_run(bus, m, label);
        if (r != EXIT_OK || !temp)
                return r;
        return export_file_commit(fd, &temp, file);
}

/* The image name a file name stands for: without its compression suffix and then ".btrfs", ".delta",
 * ".tar" or ".stream". */
static char *name_from_file(const char *file)
{
        static const char *const compressions[] = {".zst", ".zstd", ".xz", ".gz", ".bz2"};
        static const char *const kinds[] = {".btrfs", ".delta", ".tar", ".stream"};
        const char *slash = strrchr(file, '/');
        _cleanup_(freep) char *name = strdup(slash ? slash + 1 : file);
        size_t n;

        if (!name)
                return NULL;
        n = strlen(name);
        for (size_t i = 0; i < ELEMENTSOF(compressions); i++) {
                size_t l = strlen(compressions[i]);
                if (n > l && strcasecmp(name + n - l, compressions[i]) == 0) {
                        n -= l;
                        break;
                }
        }
        for (size_t i = 0; i < ELEMENTSOF(kinds); i++) {
                size_t l = strlen(kinds[i]);
                if (n > l && strncasecmp(name + n - l, kinds[i], l) == 0) {
                        n -= l;
                        break;
                }
        }
        name[n] = '\0';
        if (!image_name_is_valid(name))
                return NULL;
        return steal_pointer(&name);
}

int verb_import(sd_bus *bus, int argc, char **argv)
{
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL;
        _cleanup_(freep) char *name = NULL, *label = NULL;
        _cleanup_(closep) int fd = -1;
        const char *file = argv[1];
        bool from_stdin = strcmp(file, "-") == 0;
        int r;

        r = bus_check_fd_passing(bus);
        if (r != EXIT_OK)
                return r;
        r = import_file_open(file, argc > 2 ? argv[2] : NULL, name_from_file, "an image", &fd, &name);
        if (r != EXIT_OK)
                return r;

        r = bus_new_manager_call(bus, &m, "ImportImage");
        if (r >= 0)
                r = sd_bus_message_append(m, "hsa{sv}", from_stdin ? STDIN_FILENO : fd, name, 1, "read_only", "b",
                                          (int) arg_read_only);
        if (r < 0)
                return log_error(EXIT_FAILURE_GENERIC, "Failed to create a bus message: %s", strerror(-r));
        if (asprintf(&label, "import %s", name) < 0)
                return log_error(EXIT_FAILURE_GENERIC, "Out of memory.");
        return job_run(bus, m, label);
}
