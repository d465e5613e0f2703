/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <inttypes.h>

#include "stamp-bus.h"
#include "stampctl.h"

/* clean --cache: empty the template builds' package cache and the registries' blob cache, and say how much
 * of the package cache that freed. */
int verb_clean(sd_bus *bus, int argc, char **argv)
{
        _cleanup_(sd_bus_error_freep) sd_bus_error error = SD_BUS_ERROR_NULL;
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL;
        uint64_t before = 0, after = 0;
        int r;

        if (!arg_cache)
                return log_error(EXIT_USAGE, "clean needs --cache (the only thing it cleans so far).");
        (void) sd_bus_get_property_trivial(bus, STAMP_BUS_NAME, STAMP_MANAGER_PATH, STAMP_MANAGER_IFACE, "CacheUsage",
                                           NULL, 't', &before);
        r = bus_new_manager_call(bus, &m, "CleanCache");
        if (r >= 0)
                r = sd_bus_message_append(m, "a{sv}", 0);
        if (r < 0)
                return log_error(EXIT_FAILURE_GENERIC, "Failed to create a bus message: %s", strerror(-r));
        r = bus_call_mutating(bus, m, &error, NULL);
        if (r < 0)
                return log_bus_error(&error, r, "Failed to empty the caches");
        (void) sd_bus_get_property_trivial(bus, STAMP_BUS_NAME, STAMP_MANAGER_PATH, STAMP_MANAGER_IFACE, "CacheUsage",
                                           NULL, 't', &after);
        if (!arg_quiet)
                printf("Freed %.1f MiB of the package cache.\n",
                       (double) (before > after ? before - after : 0) / (1024 * 1024));
        if (!arg_quiet && after > 0)
                printf("%.1f MiB are kept for the template builds running now.\n", (double) after / (1024 * 1024));
        return EXIT_OK;
}
