/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* stampctl set-limit: SetImageLimit and SetPoolLimit; and the sizes --memory-max takes. */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "stampctl.h"

int parse_size_arg(const char *s, uint64_t *ret)
{
        static const char units[] = "KMGTPE";
        const char *u;
        char *end;
        uint64_t v, factor = 1;

        if (strcasecmp(s, "none") == 0 || strcasecmp(s, "infinity") == 0) {
                *ret = UINT64_MAX;
                return 0;
        }
        if (!*s || *s == '-')
                return -EINVAL;
        errno = 0;
        v = strtoull(s, &end, 10);
        if (errno != 0 || end == s)
                return -EINVAL;
        if (*end) {
                u = strchr(units, *end & ~0x20);
                if (!u || (end[1] && strcasecmp(end + 1, "iB") != 0 && strcasecmp(end + 1, "B") != 0))
                        return -EINVAL;
                for (const char *p = units; p <= u; p++)
                        factor *= 1024;
        }
        if (v > UINT64_MAX / factor)
                return -ERANGE;
        *ret = v * factor;
        return 0;
}

int verb_set_limit(sd_bus *bus, int argc, char **argv)
{
        _cleanup_(sd_bus_error_freep) sd_bus_error error = SD_BUS_ERROR_NULL;
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL, *reply = NULL;
        const char *name = argc > 2 ? argv[1] : NULL, *size = argv[argc - 1];
        uint64_t bytes;
        int r;

        if (parse_size_arg(size, &bytes) < 0)
                return log_error(EXIT_USAGE, "Invalid size \"%s\": bytes, with K, M, G or T, or \"none\".", size);
        r = bus_new_manager_call(bus, &m, name ? "SetImageLimit" : "SetPoolLimit");
        if (r >= 0)
                r = name ? sd_bus_message_append(m, "st", name, bytes) : sd_bus_message_append(m, "t", bytes);
        if (r < 0)
                return log_error(EXIT_FAILURE_GENERIC, "Failed to create a bus message: %s", strerror(-r));
        r = bus_call_mutating(bus, m, &error, &reply);
        if (r < 0)
                return log_bus_error(&error, r,
                                     name ? "Failed to set the image's limit" : "Failed to set the pool's limit");
        return EXIT_OK;
}
