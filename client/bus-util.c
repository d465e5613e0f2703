/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* Bus helpers of stampctl: calls, errors, generic printing of values. */

#include <inttypes.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "escape.h"
#include "stampctl.h"

static const struct {
        const char *name;
        int code;
} error_codes[] = {
        {STAMP_ERROR_NO_SUCH_IMAGE, EXIT_NOT_FOUND},
        {STAMP_ERROR_NO_SUCH_MACHINE, EXIT_NOT_FOUND},
        {STAMP_ERROR_NO_SUCH_JOB, EXIT_NOT_FOUND},
        {STAMP_ERROR_NO_SUCH_SNAPSHOT, EXIT_NOT_FOUND},
        {"org.freedesktop.DBus.Error.UnknownObject", EXIT_NOT_FOUND},
        {STAMP_ERROR_INVALID_NAME, EXIT_USAGE},
        {STAMP_ERROR_UNSUPPORTED_FORMAT, EXIT_USAGE},
        {"org.freedesktop.DBus.Error.InvalidArgs", EXIT_USAGE},
        {STAMP_ERROR_NOT_SUPPORTED, EXIT_NOT_SUPPORTED},
        {"org.freedesktop.DBus.Error.NotSupported", EXIT_NOT_SUPPORTED},
        {"org.freedesktop.DBus.Error.UnknownMethod", EXIT_NOT_SUPPORTED},
        {STAMP_ERROR_IMAGE_EXISTS, EXIT_CONFLICT},
        {STAMP_ERROR_MACHINE_EXISTS, EXIT_CONFLICT},
        {STAMP_ERROR_IMAGE_BUSY, EXIT_CONFLICT},
        {STAMP_ERROR_IMAGE_READ_ONLY, EXIT_CONFLICT},
        {"org.freedesktop.DBus.Error.AccessDenied", EXIT_PERMISSION},
        {"org.freedesktop.DBus.Error.InteractiveAuthorizationRequired", EXIT_PERMISSION},
        {"org.freedesktop.DBus.Error.AuthFailed", EXIT_PERMISSION},
        {"org.freedesktop.DBus.Error.ServiceUnknown", EXIT_UNAVAILABLE},
        {"org.freedesktop.DBus.Error.NameHasNoOwner", EXIT_UNAVAILABLE},
        {"org.freedesktop.DBus.Error.NoServer", EXIT_UNAVAILABLE},
        {"org.freedesktop.DBus.Error.NoReply", EXIT_UNAVAILABLE},
        {"org.freedesktop.DBus.Error.Disconnected", EXIT_UNAVAILABLE},
        {"org.freedesktop.DBus.Error.TimedOut", EXIT_UNAVAILABLE},
};

int exit_code_from_bus_error(const char *name)
{
        if (!name)
                return EXIT_FAILURE_GENERIC;
        for (size_t i = 0; i < ELEMENTSOF(error_codes); i++)
                if (strcmp(error_codes[i].name, name) == 0)
                        return error_codes[i].code;
        /* A failed activation: org.freedesktop.DBus.Error.Spawn.* */
        if (strncmp(name, "org.freedesktop.DBus.Error.Spawn.", 33) == 0)
                return EXIT_UNAVAILABLE;
        return EXIT_FAILURE_GENERIC;
}

/* For a refusal, how to get what was refused: words a user can act on. */
static const char *authorization_hint(const char *name)
{
        if (strcmp(name, "org.freedesktop.DBus.Error.InteractiveAuthorizationRequired") == 0) {
                if (!arg_ask_password)
                        return "; without --no-ask-password stampctl asks for it";
                if (!isatty(STDIN_FILENO))
                        return "; run stampctl on a terminal to be asked for it, or see AUTHORIZATION in "
                               "stampctl(1) for a rule that grants it";
                return "; see AUTHORIZATION in stampctl(1)";
        }
        if (strcmp(name, "org.freedesktop.DBus.Error.AccessDenied") == 0) {
                if (arg_ask_password && !isatty(STDIN_FILENO))
                        return "; without a terminal no password could be asked: run stampctl on one, or see "
                               "AUTHORIZATION in stampctl(1) for a rule that grants it";
                return "; see AUTHORIZATION in stampctl(1) for who may, and the rule that grants it";
        }
        return "";
}

int log_bus_error(const sd_bus_error *error, int r, const char *what)
{
        /* sd-bus reports local failures (no connection, say) as System.Error.<errno>: those
         * are ours to word, not the daemon's. */
        if (error && sd_bus_error_is_set(error) && strncmp(error->name, "System.Error.", 13) == 0) {
                int e = sd_bus_error_get_errno(error);
                if (e > 0)
                        r = -e;
                error = NULL;
        }
        if (error && sd_bus_error_is_set(error)) {
                if (error->message && *error->message) {
                        /* A message may quote what an image or an archive holds. */
                        _cleanup_(freep) char *message = text_escape(error->message, 0, ESCAPE_TERMINAL);
                        return log_error(exit_code_from_bus_error(error->name), "%s%s", message ? message : error->name,
                                         authorization_hint(error->name));
                }
                return log_error(exit_code_from_bus_error(error->name), "%s: %s", what, error->name);
        }
        if (r == -ECONNRESET || r == -ENOTCONN || r == -ECONNREFUSED || r == -ENOENT)
                return log_error(EXIT_UNAVAILABLE, "%s: cannot reach the system bus: %s", what, strerror(-r));
        if (r == -EACCES || r == -EPERM)
                return log_error(EXIT_PERMISSION, "%s: %s", what, strerror(-r));
        return log_error(EXIT_FAILURE_GENERIC, "%s: %s", what, strerror(r < 0 ? -r : EIO));
}

int bus_new_manager_call(sd_bus *bus, sd_bus_message **ret, const char *member)
{
        return sd_bus_message_new_method_call(bus, ret, STAMP_BUS_NAME, STAMP_MANAGER_PATH, STAMP_MANAGER_IFACE,
                                              member);
}

int bus_call_mutating(sd_bus *bus, sd_bus_message *m, sd_bus_error *error, sd_bus_message **reply)
{
        int r;

        if (arg_ask_password) {
                r = sd_bus_message_set_allow_interactive_authorization(m, true);
                if (r < 0)
                        return r;
                /* Failing to start an agent is no reason to fail the call: polkit may
                 * not need to ask, or another agent may answer. */
                (void) polkit_agent_open();
        }
        return sd_bus_call(bus, m, UINT64_MAX, error, reply);
}

int bus_check_fd_passing(sd_bus *bus)
{
        int r = sd_bus_can_send(bus, SD_BUS_TYPE_UNIX_FD);
        if (r < 0)
                return log_error(EXIT_UNAVAILABLE, "Cannot tell whether the bus passes file descriptors: %s",
                                 strerror(-r));
        if (r == 0)
                return log_error(EXIT_NOT_SUPPORTED,
                                 "This connection cannot pass file descriptors%s; run stampctl on that host.",
                                 arg_host ? " (it goes over ssh)" : "");
        return EXIT_OK;
}

static bool is_basic(char type)
{
        return strchr("ybnqiuxtdsogh", type) != NULL;
}

union basic {
        uint8_t y;
        int16_t n;
        uint16_t q;
        int32_t i;
        uint32_t u;
        int64_t x;
        uint64_t t;
        double d;
        const char *s;
        int b;
        int h;
};

static void basic_to_json(char type, const union basic *v, FILE *f)
{
        switch (type) {
        case 'y':
                fprintf(f, "%u", v->y);
                break;
        case 'n':
                fprintf(f, "%d", v->n);
                break;
        case 'q':
                fprintf(f, "%u", v->q);
                break;
        case 'i':
        case 'h':
                fprintf(f, "%" PRIi32, v->i);
                break;
        case 'u':
                fprintf(f, "%" PRIu32, v->u);
                break;
        case 'x':
                fprintf(f, "%" PRIi64, v->x);
                break;
        case 't':
                /* UINT64_MAX is how the API says "unknown". */
                if (v->t == UINT64_MAX)
                        fputs("null", f);
                else
                        fprintf(f, "%" PRIu64, v->t);
                break;
        case 'd':
                if (isfinite(v->d))
                        fprintf(f, "%.17g", v->d);
                else
                        fputs("null", f);
                break;
        case 'b':
                fputs(v->b ? "true" : "false", f);
                break;
        default:
                json_fputs(v->s, f);
        }
}

static void indent(FILE *f, unsigned level)
{
        fputc('\n', f);
        for (unsigned i = 0; i < level; i++)
                fputs("  ", f);
}

static int json_value(sd_bus_message *m, FILE *f, unsigned level)
{
        const char *contents;
        char type;
        int r;

        r = sd_bus_message_peek_type(m, &type, &contents);
        if (r <= 0)
                return r < 0 ? r : -ENXIO;

        if (is_basic(type)) {
                union basic v = {0};
                r = sd_bus_message_read_basic(m, type, &v);
                if (r < 0)
                        return r;
                basic_to_json(type, &v, f);
                return 1;
        }

        if (type == SD_BUS_TYPE_VARIANT) {
                r = sd_bus_message_enter_container(m, type, contents);
                if (r < 0)
                        return r;
                r = json_value(m, f, level);
                if (r < 0)
                        return r;
                r = sd_bus_message_exit_container(m);
                return r < 0 ? r : 1;
        }

        if (type == SD_BUS_TYPE_ARRAY && contents[0] == '{') {
                /* A dictionary: an object, its keys as strings. */
                bool first = true;
                char entry[256];

                snprintf(entry, sizeof(entry), "%.*s", (int) strlen(contents) - 2, contents + 1);
                r = sd_bus_message_enter_container(m, type, contents);
                if (r < 0)
                        return r;
                fputc('{', f);
                while ((r = sd_bus_message_enter_container(m, SD_BUS_TYPE_DICT_ENTRY, entry)) > 0) {
                        union basic k = {0};
                        fputs(first ? "" : ",", f);
                        first = false;
                        indent(f, level + 1);
                        r = sd_bus_message_read_basic(m, entry[0], &k);
                        if (r < 0)
                                return r;
                        if (strchr("sog", entry[0]))
                                json_fputs(k.s, f);
                        else {
                                fputc('"', f);
                                basic_to_json(entry[0], &k, f);
                                fputc('"', f);
                        }
                        fputs(": ", f);
                        r = json_value(m, f, level + 1);
                        if (r < 0)
                                return r;
                        r = sd_bus_message_exit_container(m);
                        if (r < 0)
                                return r;
                }
                if (r < 0)
                        return r;
                if (!first)
                        indent(f, level);
                fputc('}', f);
                r = sd_bus_message_exit_container(m);
                return r < 0 ? r : 1;
        }

        if (type == SD_BUS_TYPE_ARRAY || type == SD_BUS_TYPE_STRUCT) {
                bool first = true;

                r = sd_bus_message_enter_container(m, type, contents);
                if (r < 0)
                        return r;
                fputc('[', f);
                while ((r = sd_bus_message_at_end(m, false)) == 0) {
                        fputs(first ? "" : ",", f);
                        first = false;
                        indent(f, level + 1);
                        r = json_value(m, f, level + 1);
                        if (r < 0)
                                return r;
                }
                if (r < 0)
                        return r;
                if (!first)
                        indent(f, level);
                fputc(']', f);
                r = sd_bus_message_exit_container(m);
                return r < 0 ? r : 1;
        }

        return -EBADMSG;
}

int json_print_value(sd_bus_message *m, FILE *f)
{
        return json_value(m, f, 0);
}

int print_properties_json(sd_bus *bus, const char *path, const char *iface)
{
        _cleanup_(sd_bus_error_freep) sd_bus_error error = SD_BUS_ERROR_NULL;
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        int r;

        r = sd_bus_call_method(bus, STAMP_BUS_NAME, path, "org.freedesktop.DBus.Properties", "GetAll", &error, &reply,
                               "s", iface);
        if (r < 0)
                return log_bus_error(&error, r, "Failed to get properties");

        r = json_print_properties(reply, stdout);
        if (r < 0)
                return log_error(EXIT_FAILURE_GENERIC, "Failed to parse the properties: %s", strerror(-r));
        fputc('\n', stdout);
        return EXIT_OK;
}

int json_print_properties(sd_bus_message *m, FILE *f)
{
        const char *name, *contents;
        bool first = true;
        int r;

        r = sd_bus_message_enter_container(m, 'a', "{sv}");
        if (r < 0)
                return r;
        fputc('{', f);
        while ((r = sd_bus_message_enter_container(m, 'e', "sv")) > 0) {
                _cleanup_(freep) char *key = NULL;

                r = sd_bus_message_read(m, "s", &name);
                if (r < 0)
                        return r;
                key = json_key_from_property(name);
                if (!key)
                        return -ENOMEM;
                fputs(first ? "\n  " : ",\n  ", f);
                first = false;
                json_fputs(key, f);
                fputs(": ", f);
                r = sd_bus_message_peek_type(m, NULL, &contents);
                if (r < 0)
                        return r;
                if (strcmp(contents, "u") == 0 && (strcmp(name, "Leader") == 0 || strcmp(name, "Payload") == 0)) {
                        /* A pid of 0: not known (yet), as the tables say with null. */
                        uint32_t pid;
                        r = sd_bus_message_read(m, "v", "u", &pid);
                        if (r < 0)
                                return r;
                        if (pid > 0)
                                fprintf(f, "%" PRIu32, pid);
                        else
                                fputs("null", f);
                } else if (strcmp(contents, "s") == 0) {
                        /* An empty string is how the API says "none" (an image without origin). */
                        const char *v;
                        r = sd_bus_message_read(m, "v", "s", &v);
                        if (r < 0)
                                return r;
                        json_fputs(*v ? v : NULL, f);
                } else {
                        r = json_value(m, f, 1);
                        if (r < 0)
                                return r;
                }
                r = sd_bus_message_exit_container(m);
                if (r < 0)
                        return r;
        }
        if (r < 0)
                return r;
        fputs(first ? "}" : "\n}", f);
        return sd_bus_message_exit_container(m);
}

static int basic_to_text(char type, const union basic *v, char **ret)
{
        int r;

        switch (type) {
        case 'y':
                r = asprintf(ret, "%u", v->y);
                break;
        case 'n':
                r = asprintf(ret, "%d", v->n);
                break;
        case 'q':
                r = asprintf(ret, "%u", v->q);
                break;
        case 'i':
        case 'h':
                r = asprintf(ret, "%" PRIi32, v->i);
                break;
        case 'u':
                r = asprintf(ret, "%" PRIu32, v->u);
                break;
        case 'x':
                r = asprintf(ret, "%" PRIi64, v->x);
                break;
        case 't':
                r = v->t == UINT64_MAX ? asprintf(ret, "-") : asprintf(ret, "%" PRIu64, v->t);
                break;
        case 'd':
                r = asprintf(ret, "%g", v->d);
                break;
        case 'b':
                r = asprintf(ret, "%s", v->b ? "yes" : "no");
                break;
        default:
                /* Strings come from images and jobs as much as from the daemon: never raw to a terminal. */
                if (!v->s || !*v->s)
                        r = asprintf(ret, "-");
                else {
                        *ret = text_escape(v->s, 0, ESCAPE_TERMINAL);
                        r = *ret ? 0 : -1;
                }
        }
        return r < 0 ? -ENOMEM : 0;
}

int text_from_value(sd_bus_message *m, char **ret)
{
        const char *contents;
        char type;
        int r;

        r = sd_bus_message_peek_type(m, &type, &contents);
        if (r <= 0)
                return r < 0 ? r : -ENXIO;

        if (is_basic(type)) {
                union basic v = {0};
                r = sd_bus_message_read_basic(m, type, &v);
                if (r < 0)
                        return r;
                return basic_to_text(type, &v, ret);
        }

        if (type == SD_BUS_TYPE_VARIANT) {
                r = sd_bus_message_enter_container(m, type, contents);
                if (r < 0)
                        return r;
                r = text_from_value(m, ret);
                if (r < 0)
                        return r;
                return sd_bus_message_exit_container(m);
        }

        if (type == SD_BUS_TYPE_ARRAY || type == SD_BUS_TYPE_STRUCT || type == SD_BUS_TYPE_DICT_ENTRY) {
                /* Items joined by ", ", dictionary entries as "key=value". */
                const char *sep = type == SD_BUS_TYPE_DICT_ENTRY ? "=" : ", ";
                _cleanup_(freep) char *buf = NULL;
                size_t len = 0;
                FILE *f;

                r = sd_bus_message_enter_container(m, type, contents);
                if (r < 0)
                        return r;
                f = open_memstream(&buf, &len);
                if (!f)
                        return -ENOMEM;
                for (bool first = true; (r = sd_bus_message_at_end(m, false)) == 0; first = false) {
                        _cleanup_(freep) char *item = NULL;
                        r = text_from_value(m, &item);
                        if (r < 0)
                                break;
                        fprintf(f, "%s%s", first ? "" : sep, item);
                }
                if (fclose(f) != 0 && r >= 0)
                        r = -ENOMEM;
                if (r < 0)
                        return r;
                r = sd_bus_message_exit_container(m);
                if (r < 0)
                        return r;
                *ret = steal_pointer(&buf);
                return 0;
        }
        return -EBADMSG;
}

int match_daemon_vanished(sd_bus *bus, sd_bus_slot **slot, sd_bus_message_handler_t cb, void *userdata)
{
        return sd_bus_add_match(bus, slot,
                                "type='signal',"
                                "sender='org.freedesktop.DBus',"
                                "path='/org/freedesktop/DBus',"
                                "interface='org.freedesktop.DBus',"
                                "member='NameOwnerChanged',"
                                "arg0='" STAMP_BUS_NAME "'",
                                cb, userdata);
}

int event_new_with_signals(sd_event **ret, sd_event_signal_handler_t cb, void *userdata)
{
        static const int sigs[] = {SIGINT, SIGTERM, SIGHUP};
        sd_event *e = NULL;
        sigset_t mask;
        int r;

        r = sd_event_default(&e);
        if (r < 0)
                return r;

        sigemptyset(&mask);
        for (size_t i = 0; i < ELEMENTSOF(sigs); i++)
                sigaddset(&mask, sigs[i]);
        if (sigprocmask(SIG_BLOCK, &mask, NULL) < 0) {
                r = -errno;
                sd_event_unref(e);
                return r;
        }
        for (size_t i = 0; i < ELEMENTSOF(sigs); i++) {
                r = sd_event_add_signal(e, NULL, sigs[i], cb, userdata);
                if (r < 0) {
                        sd_event_unref(e);
                        return r;
                }
        }
        *ret = e;
        return 0;
}
