/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

#include <systemd/sd-bus.h>

#include "stamp-bus.h"

/* Names of stamp's errors and the errno each stands for (one table, in errors.c); registered with sd-bus
 * at start, so that sd_bus_error_get_errno() knows them. sd-bus names a bare -errno from a handler by
 * its own table, not this one: handlers set the named error themselves (stamp_error_set_errnof()). */
extern const sd_bus_error_map stamp_error_map[];

/* The error name to use for a failure with @error (a positive errno), or NULL for the generic one. */
const char *stamp_error_name_from_errno(int error);

/* InvalidName for @name, the argument called @what, which is not valid because @why (a phrase, as
 * image_name_invalid_reason() gives); 0 if @why is NULL. */
int stamp_error_check_name(sd_bus_error *ret, const char *what, const char *name, const char *why);

/* Fill @ret with the named error for @error and the message @fmt; returns -error. */
int stamp_error_set_errnof(sd_bus_error *ret, int error, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
