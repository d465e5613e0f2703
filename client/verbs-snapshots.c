/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* stampctl snapshot, snapshots, restore, remove-snapshot. */

#include <inttypes.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "stampctl.h"
#include "table.h"

static int call_snapshot_method(sd_bus *bus, const char *member, const char *what, const char *name,
                                const char *snapshot)
{
        _cleanup_(sd_bus_error_freep) sd_bus_error error = SD_BUS_ERROR_NULL;
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL;
        int r;

        r = bus_new_manager_call(bus, &m, member);
        if (r >= 0)
                r = sd_bus_message_append(m, "ss", name, snapshot);
        if (r < 0)
                return log_error(EXIT_FAILURE_GENERIC, "Failed to create a bus message: %s", strerror(-r));
        r = bus_call_mutating(bus, m, &error, NULL);
        if (r < 0)
                return log_bus_error(&error, r, what);
        return EXIT_OK;
}

int verb_snapshot(sd_bus *bus, int argc, char **argv)
{
        return call_snapshot_method(bus, "SnapshotImage", "Failed to take the snapshot", argv[1], argv[2]);
}

int verb_restore(sd_bus *bus, int argc, char **argv)
{
        return call_snapshot_method(bus, "RestoreImage", "Failed to restore the image", argv[1], argv[2]);
}

int verb_remove_snapshot(sd_bus *bus, int argc, char **argv)
{
        int ret = EXIT_OK;

        for (int i = 2; i < argc; i++) {
                int r = call_snapshot_method(bus, "RemoveSnapshot", "Failed to remove the snapshot", argv[1], argv[i]);
                if (r != EXIT_OK && ret == EXIT_OK)
                        ret = r;
        }
        return ret;
}

int verb_snapshots(sd_bus *bus, int argc, char **argv)
{
        _cleanup_(sd_bus_error_freep) sd_bus_error error = SD_BUS_ERROR_NULL;
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        _cleanup_(scols_unref_tablep) struct libscols_table *t = NULL;
        const char *name;
        uint64_t crtime, exclusive;
        int r;

        r = sd_bus_call_method(bus, STAMP_BUS_NAME, STAMP_MANAGER_PATH, STAMP_MANAGER_IFACE, "ListSnapshots", &error,
                               &reply, "s", argv[1]);
        if (r < 0)
                return log_bus_error(&error, r, "Failed to list the snapshots");

        t = table_new("snapshots");
        if (!t)
                return log_error(EXIT_FAILURE_GENERIC, "Out of memory.");
        table_add_column(t, "NAME", 0, SCOLS_JSON_STRING);
        table_add_column(t, "CREATED", 0, table_style.json ? SCOLS_JSON_NUMBER : SCOLS_JSON_STRING);
        table_add_column(t, "EXCLUSIVE", SCOLS_FL_RIGHT, SCOLS_JSON_NUMBER);

        r = sd_bus_message_enter_container(reply, 'a', "(stt)");
        while (r >= 0 && (r = sd_bus_message_read(reply, "(stt)", &name, &crtime, &exclusive)) > 0) {
                struct libscols_line *line = scols_table_new_line(t, NULL);
                char buf[FORMAT_TIMESTAMP_MAX];

                if (!line)
                        return log_error(EXIT_FAILURE_GENERIC, "Out of memory.");
                table_set(line, 0, "%s", name);
                if (table_style.json) {
                        table_set(line, 1, "%" PRIu64, crtime);
                        if (exclusive != UINT64_MAX)
                                table_set(line, 2, "%" PRIu64, exclusive);
                } else {
                        table_set(line, 1, "%s", format_timestamp(buf, sizeof buf, crtime));
                        table_set(line, 2, "%s", format_bytes(buf, sizeof buf, exclusive));
                }
        }
        if (r < 0)
                return log_error(EXIT_FAILURE_GENERIC, "Failed to parse the reply of ListSnapshots: %s", strerror(-r));
        return table_print(t, "snapshot", "snapshots");
}
