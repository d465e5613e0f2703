/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* machine-status: one machine's properties, as machinectl status shows a machine's. */

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "escape.h"
#include "stampctl.h"
#include "table.h"

int verb_machine_status(sd_bus *bus, int argc, char **argv)
{
        _cleanup_(sd_bus_error_freep) sd_bus_error error = SD_BUS_ERROR_NULL;
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        _cleanup_(freep) char *path = NULL, *shown = NULL;
        char buf[FORMAT_TIMESTAMP_MAX];
        const char *name, *image = NULL, *state = NULL, *p;
        uint32_t leader, payload = 0, owner = 0;
        int boot = 0, ephemeral = 0, userns = 0, found = 0, r;
        int32_t exit_status = -1;
        uint64_t since = 0;

        r = sd_bus_call_method(bus, STAMP_BUS_NAME, STAMP_MANAGER_PATH, STAMP_MANAGER_IFACE, "ListMachines", &error,
                               &reply, NULL);
        if (r < 0)
                return log_bus_error(&error, r, "Failed to list machines");
        r = sd_bus_message_enter_container(reply, 'a', "(sssuo)");
        while (r >= 0 && !found && (r = sd_bus_message_read(reply, "(sssuo)", &name, &image, &state, &leader, &p)) > 0)
                if (strcmp(name, argv[1]) == 0) {
                        found = 1;
                        path = strdup(p);
                        if (!path)
                                return log_error(EXIT_FAILURE_GENERIC, "Out of memory.");
                }
        if (r < 0)
                return log_error(EXIT_FAILURE_GENERIC, "Failed to parse the list of machines: %s", strerror(-r));
        if (!found) {
                shown = text_escape(argv[1], 0, ESCAPE_TERMINAL);
                return log_error(EXIT_NOT_FOUND, "No machine named %s is running; 'stampctl machines' lists them.",
                                 shown ? shown : "?");
        }

        if (arg_json)
                return print_properties_json(bus, path, STAMP_MACHINE_IFACE);

        /* One property each: a machine that ended meanwhile shows what was read before. */
        (void) sd_bus_get_property_trivial(bus, STAMP_BUS_NAME, path, STAMP_MACHINE_IFACE, "Payload", NULL, 'u',
                                           &payload);
        (void) sd_bus_get_property_trivial(bus, STAMP_BUS_NAME, path, STAMP_MACHINE_IFACE, "Owner", NULL, 'u', &owner);
        (void) sd_bus_get_property_trivial(bus, STAMP_BUS_NAME, path, STAMP_MACHINE_IFACE, "Boot", NULL, 'b', &boot);
        (void) sd_bus_get_property_trivial(bus, STAMP_BUS_NAME, path, STAMP_MACHINE_IFACE, "Ephemeral", NULL, 'b',
                                           &ephemeral);
        (void) sd_bus_get_property_trivial(bus, STAMP_BUS_NAME, path, STAMP_MACHINE_IFACE, "UserNamespace", NULL, 'b',
                                           &userns);
        (void) sd_bus_get_property_trivial(bus, STAMP_BUS_NAME, path, STAMP_MACHINE_IFACE, "Timestamp", NULL, 't',
                                           &since);
        (void) sd_bus_get_property_trivial(bus, STAMP_BUS_NAME, path, STAMP_MACHINE_IFACE, "ExitStatus", NULL, 'i',
                                           &exit_status);

        print_field(9, "Name", argv[1]);
        {
                _cleanup_(freep) char *img = text_escape(image, 0, ESCAPE_TERMINAL);
                print_field(9, "Image", img ? img : "?");
        }
        print_field(9, "State", state);
        print_field(9, "Since", format_timestamp(buf, sizeof buf, since));
        print_field(9, "Runs", boot ? "its image's init (booted)" : "a command");
        if (leader > 0) {
                snprintf(buf, sizeof buf, "%" PRIu32, leader);
                print_field(9, "Leader", buf);
        } else
                print_field(9, "Leader", NULL);
        if (!boot) {
                if (payload > 0)
                        snprintf(buf, sizeof buf, "%" PRIu32, payload);
                print_field(9, "Command", payload > 0 ? buf : NULL);
        }
        print_field(9, "Ephemeral", ephemeral ? "yes" : "no");
        print_field(9, "User NS", userns ? "yes" : "no");
        print_field(9, "Owner", format_user(buf, sizeof buf, owner));
        return EXIT_OK;
}
