/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

#include <systemd/sd-bus.h>

#include "stamp-bus.h"

/* Names of stamp's errors and the errno each stands for; registered with sd-bus at start, so a
 * handler may return -EEXIST and callers still see a named error. */
extern const sd_bus_error_map stamp_error_map[];

/* The error name to use for a failure with @error (a positive errno), or NULL for the generic one. */
const char *stamp_error_name_from_errno(int error);

/* Fill @ret with the named error for @error and the message @fmt; returns -error. */
int stamp_error_set_errnof(sd_bus_error *ret, int error, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
