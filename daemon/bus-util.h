/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

#include <systemd/sd-bus.h>
#include <systemd/sd-event.h>

#include "util.h"

/* Cleanup helpers for sd-bus and sd-event objects: stampd's alone. */

static inline void sd_bus_message_unrefp_(sd_bus_message **m)
{
        sd_bus_message_unref(*m);
}
#define _cleanup_bus_message_ _cleanup_(sd_bus_message_unrefp_)
static inline void sd_bus_error_freep_(sd_bus_error *e)
{
        sd_bus_error_free(e);
}
#define _cleanup_bus_error_ _cleanup_(sd_bus_error_freep_)
