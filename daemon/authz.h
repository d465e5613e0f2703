/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

#include "bus-util.h"

/* Caps on parked method calls waiting for an authorization decision.
 *
 * Every check goes to polkitd over the one bus connection polkit-gobject keeps, and dbus-daemon lets
 * a connection wait for at most 128 replies (max_replies_per_connection, the system bus's default):
 * past that, the bus refuses the next check for whoever makes it, whoever that is. So the checks at
 * polkit at once stay well below (AUTHZ_PENDING_MAX), with room for the cancellations polkit sends on
 * that connection when callers leave.
 *
 * A caller is a uid: one user's connections share one count (AUTHZ_PENDING_PER_UID_MAX), so opening
 * more connections buys nothing, and the total leaves room for several users at their cap. A call
 * whose uid the bus has not told yet (a connection's first, for a moment) is counted per connection
 * and in AUTHZ_PARKED_MAX only, never against a uid: root is authorized as soon as its uid is known,
 * so no other user's checks can lock root out. */
#define AUTHZ_PENDING_MAX 96
#define AUTHZ_PENDING_PER_UID_MAX 16
#define AUTHZ_PENDING_PER_CONNECTION_MAX 16
#define AUTHZ_PARKED_MAX 1024
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
 * (AccessDenied or InteractiveAuthorizationRequired) or when a cap on pending checks is reached
 * (LimitsExceeded, naming the cap).
 *
 * Root callers are authorized without asking polkit. The event loop never waits: the caller's uid
 * is asked of the bus asynchronously (once per connection), and polkit runs in a thread of its own. */
int authz_verify(Authz *a, sd_bus_message *msg, const char *action, const char *const *details, sd_bus_error *error);

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

unsigned authz_n_pending(Authz *a);

/* The uid of the sender of @msg, if known: always when @msg comes back with polkit's answer (before
 * and, until the event loop runs again, after authz_verify() took it), else only when an earlier
 * call on the same connection asked. -ENODATA if not known: before authorization, on a connection's
 * first call. A call without a sender (a direct connection) is root's. */
int authz_caller_uid(Authz *a, sd_bus_message *msg, uid_t *ret);
/* Remember @uid as the uid of the bus peer @sender, as the bus told it (for a call that needs the
 * caller's uid without an authorization check). */
void authz_remember_caller_uid(Authz *a, const char *sender, uid_t uid);
