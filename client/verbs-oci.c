/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* push and pull: images through OCI registries (PushImage, PullImage). */
#include <stdlib.h>
#include <string.h>

#include "stampctl.h"

static int append_options(sd_bus_message *m, bool push)
{
        int r = sd_bus_message_open_container(m, 'a', "{sv}");

        if (r >= 0 && arg_insecure)
                r = sd_bus_message_append(m, "{sv}", "insecure", "b", 1);
        if (r >= 0 && push && arg_compression)
                r = sd_bus_message_append(m, "{sv}", "compression", "s", arg_compression);
        if (r >= 0 && !push && arg_read_only)
                r = sd_bus_message_append(m, "{sv}", "read_only", "b", 1);
        if (r >= 0)
                r = sd_bus_message_close_container(m);
        return r;
}

int verb_push(sd_bus *bus, int argc, char **argv)
{
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL;
        _cleanup_(freep) char *label = NULL;
        int r;

        r = bus_new_manager_call(bus, &m, "PushImage");
        if (r >= 0)
                r = sd_bus_message_append(m, "ss", argv[1], argv[2]);
        if (r >= 0)
                r = append_options(m, true);
        if (r < 0)
                return log_error(EXIT_FAILURE_GENERIC, "Failed to create a bus message: %s", strerror(-r));
        if (asprintf(&label, "push %s", argv[1]) < 0)
                return log_error(EXIT_FAILURE_GENERIC, "Out of memory.");
        return job_run(bus, m, label);
}

int verb_pull(sd_bus *bus, int argc, char **argv)
{
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL;
        _cleanup_(freep) char *label = NULL;
        const char *name = argc > 2 ? argv[2] : "";
        int r;

        r = bus_new_manager_call(bus, &m, "PullImage");
        if (r >= 0)
                r = sd_bus_message_append(m, "ss", argv[1], name);
        if (r >= 0)
                r = append_options(m, false);
        if (r < 0)
                return log_error(EXIT_FAILURE_GENERIC, "Failed to create a bus message: %s", strerror(-r));
        if (asprintf(&label, "pull %s", *name ? name : argv[1]) < 0)
                return log_error(EXIT_FAILURE_GENERIC, "Out of memory.");
        return job_run(bus, m, label);
}
