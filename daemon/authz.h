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

/* What decides between an action for one's own things and the administrator's: the call touches
 * something owned by @owner. For a caller whose uid is @owner, or anyone if @shared (a template others
 * may clone), @own_action is asked first, without a prompt; where it is not granted outright, the
 * call's own action is asked as for any other caller (with a prompt if allowed), since that one is
 * the stronger. Rules see the details "owner" (the uid, decimal) and "caller_owns" ("yes"/"no")
 * besides the call's own. Root passes either way and is reported as not using @own_action. */
typedef struct AuthzOwner {
        const char *own_action;
        uid_t owner;
        bool shared;
} AuthzOwner;

/* authz_verify() with the action chosen by @owner once the caller's uid is known; on success
 * *@ret_own says whether @owner->own_action was the one granted. */
int authz_verify_owned(Authz *a, sd_bus_message *msg, const char *action, const AuthzOwner *owner,
                       const char *const *details, bool *ret_own, sd_bus_error *error);

/* The uid of the sender of @msg, if known: always after authz_verify() returned 1 for @msg (until the
 * event loop runs again). -ENODATA if not known. A call without a sender (a direct connection) is
 * root's. */
int authz_caller_uid(Authz *a, sd_bus_message *msg, uid_t *ret);

unsigned authz_n_pending(Authz *a);
