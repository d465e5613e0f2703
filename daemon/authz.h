/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

#include "bus-util.h"

/* Caps on parked method calls waiting for an authorization decision. */
#define AUTHZ_PENDING_MAX 256
#define AUTHZ_PENDING_PER_CALLER_MAX 16
/* Callers whose uid is remembered (see Authz.uids); the table is emptied when it is full. */
#define AUTHZ_UID_CACHE_MAX 4096

typedef struct Authz Authz;

int authz_new(sd_event *event, Authz **ret);
Authz *authz_free(Authz *a);

/* Decide whether the sender of @msg may do @action. @details is a NULL-terminated list of key, value
 * pairs shown to polkit rules and agents (verb, image, new_name).
 *
 * Returns 1 when authorized, 0 when the decision is pending: the call is then parked and delivered
 * to its handler again once polkit has answered, at which point this returns the answer. A handler
 * that gets 0 returns 1 without replying. Returns a negative errno with @error set when refused
 * (AccessDenied or InteractiveAuthorizationRequired) or when the cap on pending checks is reached.
 *
 * Root callers are authorized without asking polkit. The event loop never waits: the caller's uid
 * is asked of the bus asynchronously (once per connection), and polkit runs in a thread of its own. */
int authz_verify(Authz *a, sd_bus_message *msg, const char *action, const char *const *details,
                 sd_bus_error *error);

unsigned authz_n_pending(Authz *a);
