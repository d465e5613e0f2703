/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <sys/eventfd.h>

#define POLKIT_AGENT_I_KNOW_API_IS_SUBJECT_TO_CHANGE 1
#include <polkit/polkit.h>

#include "authz.h"
#include "errors.h"

typedef enum { REQ_QUERY_UID, REQ_POLKIT, REQ_DONE } RequestState;

#define UID_UNKNOWN ((uid_t) -1)

typedef enum { LIMIT_NONE, LIMIT_PER_UID, LIMIT_POLKIT } Limit;

typedef struct Request {
        Authz *authz;
        sd_bus_message *msg; /* the parked call; also the key in Authz.requests */
        char *sender;
        char *action;   /* what the handler asked for; the action asked of polkit is chosen_action */
        char **details; /* key, value, …, NULL */
        bool interactive;

        /* For calls whose action depends on who owns what they touch (see AuthzOwner). */
        bool has_owner;
        char *own_action;
        uid_t owner;
        bool shared;
        bool chose_own;
        bool asking_own;           /* the own action is being asked (without a prompt), the call's next */
        const char *chosen_action; /* action or own_action */

        RequestState state;
        uid_t uid;        /* UID_UNKNOWN until the bus said */
        bool uid_charged; /* counted in Authz.per_uid */
        Limit limit;      /* the cap that refused it once the uid was known */
        bool in_thread;   /* the polkit thread holds a pointer to us */
        bool abandoned;   /* the caller went away: free when the thread lets go */
        uint64_t done_usec;

        bool authorized;
        bool challenge;
        char *error_message;

        sd_bus_slot *uid_slot;
        sd_bus_slot *vanish_slot;
        GCancellable *cancellable;
} Request;

struct Authz {
        sd_event *event;
        GHashTable *requests;   /* sd_bus_message* → Request* */
        GHashTable *per_sender; /* sender → count */
        GHashTable *per_uid;    /* uid → count (GUINT_TO_POINTER both), of requests with a known uid */
        unsigned n_charged;     /* sum of per_uid */
        /* Requests whose caller left while polkit still had them: their calls to polkitd are pending
         * until the cancellation is answered, so they still count against AUTHZ_PENDING_MAX. */
        unsigned n_abandoned;
        /* Unique bus name → uid + 1 (GUINT_TO_POINTER). A unique name is never reused on a bus and a
         * connection keeps its credentials, so an answer stays true; the table is bounded. */
        GHashTable *uids;
        sd_event_source *purge_timer;

        /* The polkit thread and its mailbox back to the event loop. */
        GThread *thread;
        GMainContext *context;
        GMainLoop *loop;
        PolkitAuthority *authority;
        GMutex lock;
        GQueue done; /* Request*, guarded by lock */
        int eventfd;
        sd_event_source *eventfd_source;
};

static void request_free(Request *r)
{
        if (!r)
                return;
        sd_bus_slot_unref(r->uid_slot);
        sd_bus_slot_unref(r->vanish_slot);
        sd_bus_message_unref(r->msg);
        if (r->cancellable)
                g_object_unref(r->cancellable);
        free(r->sender);
        free(r->action);
        free(r->own_action);
        g_strfreev(r->details);
        free(r->error_message);
        free(r);
}

static void sender_count_adjust(Authz *a, const char *sender, int delta)
{
        unsigned n = GPOINTER_TO_UINT(g_hash_table_lookup(a->per_sender, sender));

        n = (unsigned) ((int) n + delta);
        if (n == 0)
                g_hash_table_remove(a->per_sender, sender);
        else
                g_hash_table_replace(a->per_sender, g_strdup(sender), GUINT_TO_POINTER(n));
}

static unsigned uid_count(Authz *a, uid_t uid)
{
        return GPOINTER_TO_UINT(g_hash_table_lookup(a->per_uid, GUINT_TO_POINTER(uid)));
}

static void uid_count_adjust(Authz *a, uid_t uid, int delta)
{
        unsigned n = (unsigned) ((int) uid_count(a, uid) + delta);

        if (n == 0)
                g_hash_table_remove(a->per_uid, GUINT_TO_POINTER(uid));
        else
                g_hash_table_replace(a->per_uid, GUINT_TO_POINTER(uid), GUINT_TO_POINTER(n));
}

/* Whether one more check for (non-root) @uid may go to polkit. The uid's own cap first: a user at it
 * is told so, whatever the others do. */
static Limit uid_limit(Authz *a, uid_t uid)
{
        if (uid_count(a, uid) >= AUTHZ_PENDING_PER_UID_MAX)
                return LIMIT_PER_UID;
        if (a->n_charged + a->n_abandoned >= AUTHZ_PENDING_MAX)
                return LIMIT_POLKIT;
        return LIMIT_NONE;
}

/* Count @r for its (non-root) uid, unless a cap says no: then that cap. */
static Limit request_charge_uid(Request *r, uid_t uid)
{
        Limit l;

        r->uid = uid;
        l = uid_limit(r->authz, uid);
        if (l != LIMIT_NONE)
                return l;
        uid_count_adjust(r->authz, uid, +1);
        r->authz->n_charged++;
        r->uid_charged = true;
        return LIMIT_NONE;
}

static int set_limit_error(sd_bus_error *error, Limit l, uid_t uid)
{
        if (l == LIMIT_PER_UID)
                return sd_bus_error_setf(error, SD_BUS_ERROR_LIMITS_EXCEEDED,
                                         "User %u has too many authorization checks pending (at most %d per user); "
                                         "answer or cancel one first",
                                         (unsigned) uid, AUTHZ_PENDING_PER_UID_MAX);
        return sd_bus_error_setf(error, SD_BUS_ERROR_LIMITS_EXCEEDED,
                                 "Too many authorization checks pending (at most %d in all); try again later",
                                 AUTHZ_PENDING_MAX);
}

/* Take @r out of the registry; free it now unless the polkit thread still points at it. */
static void request_release(Request *r)
{
        Authz *a = r->authz;

        if (g_hash_table_steal(a->requests, r->msg))
                sender_count_adjust(a, r->sender, -1);
        if (r->uid_charged) {
                uid_count_adjust(a, r->uid, -1);
                a->n_charged--;
                r->uid_charged = false;
        }
        r->uid_slot = sd_bus_slot_unref(r->uid_slot);
        r->vanish_slot = sd_bus_slot_unref(r->vanish_slot);
        if (r->in_thread) {
                r->abandoned = true;
                a->n_abandoned++;
                g_cancellable_cancel(r->cancellable);
                return;
        }
        request_free(r);
}

static void request_finish(Request *r, bool authorized, bool challenge, const char *error_message)
{
        sd_bus *bus = sd_bus_message_get_bus(r->msg);
        int k;

        r->state = REQ_DONE;
        r->authorized = authorized;
        r->challenge = challenge;
        r->done_usec = now_usec(CLOCK_MONOTONIC);
        if (error_message)
                r->error_message = strdup(error_message);
        r->uid_slot = sd_bus_slot_unref(r->uid_slot);
        r->vanish_slot = sd_bus_slot_unref(r->vanish_slot);

        /* Hand the call back to sd-bus: its handler runs again and finds our answer. */
        k = sd_bus_enqueue_for_read(bus, r->msg);
        if (k < 0) {
                log_error_errno(k, "Failed to requeue method call after authorization");
                request_release(r);
        }
}

/* ---- the polkit thread ---- */

static void on_polkit_result(GObject *source, GAsyncResult *res, gpointer userdata)
{
        Request *r = userdata;
        Authz *a = r->authz;
        g_autoptr(GError) err = NULL;
        PolkitAuthorizationResult *result;

        result = polkit_authority_check_authorization_finish(POLKIT_AUTHORITY(source), res, &err);
        if (result) {
                r->authorized = polkit_authorization_result_get_is_authorized(result);
                r->challenge = polkit_authorization_result_get_is_challenge(result);
                g_object_unref(result);
        } else
                r->error_message = strdup(err ? err->message : "polkit failed");

        g_mutex_lock(&a->lock);
        g_queue_push_tail(&a->done, r);
        g_mutex_unlock(&a->lock);
        (void) eventfd_write(a->eventfd, 1);
}

static gboolean polkit_start_check(gpointer userdata)
{
        Request *r = userdata;
        Authz *a = r->authz;
        g_autoptr(PolkitSubject) subject = NULL;
        g_autoptr(PolkitDetails) details = NULL;
        PolkitCheckAuthorizationFlags flags = POLKIT_CHECK_AUTHORIZATION_FLAGS_NONE;

        if (!a->authority) {
                r->error_message = strdup("polkit is not available");
                g_mutex_lock(&a->lock);
                g_queue_push_tail(&a->done, r);
                g_mutex_unlock(&a->lock);
                (void) eventfd_write(a->eventfd, 1);
                return G_SOURCE_REMOVE;
        }

        subject = polkit_system_bus_name_new(r->sender);
        details = polkit_details_new();
        for (char **d = r->details; d && d[0] && d[1]; d += 2)
                polkit_details_insert(details, d[0], d[1]);
        /* The own action is asked first and without a prompt: when it is not simply granted, the
         * call's own (administrator's) action is asked, with a prompt if the caller allows one. */
        if (r->interactive && !r->asking_own)
                flags |= POLKIT_CHECK_AUTHORIZATION_FLAGS_ALLOW_USER_INTERACTION;

        polkit_authority_check_authorization(a->authority, subject, r->chosen_action, details, flags, r->cancellable,
                                             on_polkit_result, r);
        return G_SOURCE_REMOVE;
}

static gpointer polkit_thread(gpointer userdata)
{
        Authz *a = userdata;
        g_autoptr(GError) err = NULL;

        g_main_context_push_thread_default(a->context);
        a->authority = polkit_authority_get_sync(NULL, &err);
        if (!a->authority)
                log_error("Cannot reach polkit: %s", err ? err->message : "unknown error");

        g_main_loop_run(a->loop);

        if (a->authority)
                g_object_unref(a->authority);
        /* GDBus frees parts of the proxy from idle callbacks on this context: let them run. */
        while (g_main_context_iteration(a->context, FALSE))
                ;
        g_main_context_pop_thread_default(a->context);
        return NULL;
}

static int authz_start_thread(Authz *a)
{
        if (a->thread)
                return 0;

        a->context = g_main_context_new();
        a->loop = g_main_loop_new(a->context, FALSE);
        a->thread = g_thread_try_new("polkit", polkit_thread, a, NULL);
        if (!a->thread)
                return -ENOMEM;
        /* No waiting for the thread to reach polkit: checks handed to its context queue up until
         * its loop runs, which is after it has the authority. */
        return 0;
}

/* ---- back on the event loop ---- */

static int on_eventfd(sd_event_source *s, int fd, uint32_t revents, void *userdata)
{
        Authz *a = userdata;
        eventfd_t v;
        Request *r;

        (void) eventfd_read(fd, &v);
        for (;;) {
                g_mutex_lock(&a->lock);
                r = g_queue_pop_head(&a->done);
                g_mutex_unlock(&a->lock);
                if (!r)
                        break;

                r->in_thread = false;
                if (r->abandoned) {
                        a->n_abandoned--;
                        request_free(r);
                        continue;
                }
                if (r->asking_own && !r->authorized && !r->error_message) {
                        /* Not one's own to do without asking: is the caller allowed the stronger action?
                         * A rule granting manage-images also covers one's own images. */
                        r->asking_own = false;
                        r->chose_own = false;
                        r->chosen_action = r->action;
                        r->challenge = false;
                        r->in_thread = true;
                        g_main_context_invoke(a->context, polkit_start_check, r);
                        continue;
                }
                request_finish(r, r->authorized, r->challenge, NULL);
        }
        return 0;
}

/* Now that the caller's uid is known: the action to ask for, and what rules see of ownership. */
static void request_choose_action(Request *r, uid_t uid)
{
        char **details;
        size_t n;

        r->chosen_action = r->action;
        if (!r->has_owner)
                return;
        r->chose_own = uid == r->owner || r->shared;
        r->asking_own = r->chose_own;
        if (r->chose_own)
                r->chosen_action = r->own_action;
        n = g_strv_length(r->details);
        details = g_new0(char *, n + 5);
        for (size_t i = 0; i < n; i++)
                details[i] = r->details[i];
        details[n] = g_strdup("owner");
        details[n + 1] = g_strdup_printf("%u", (unsigned) r->owner);
        details[n + 2] = g_strdup("caller_owns");
        details[n + 3] = g_strdup(uid == r->owner ? "yes" : "no");
        g_free(r->details); /* the strings moved */
        r->details = details;
}

/* The caller is not root: ask polkit, in its thread. */
static void request_ask_polkit(Request *r, uid_t uid)
{
        request_choose_action(r, uid);
        if (authz_start_thread(r->authz) < 0) {
                request_finish(r, false, false, "cannot start the polkit thread");
                return;
        }
        r->state = REQ_POLKIT;
        r->in_thread = true;
        r->cancellable = g_cancellable_new();
        g_main_context_invoke(r->authz->context, polkit_start_check, r);
}

static void uid_remember(Authz *a, const char *sender, uint32_t uid)
{
        if (uid == UINT32_MAX)
                return;
        if (g_hash_table_size(a->uids) >= AUTHZ_UID_CACHE_MAX)
                g_hash_table_remove_all(a->uids);
        g_hash_table_replace(a->uids, g_strdup(sender), GUINT_TO_POINTER(uid + 1));
}

static int on_caller_uid(sd_bus_message *reply, void *userdata, sd_bus_error *ret_error)
{
        Request *r = userdata;
        const sd_bus_error *e = sd_bus_message_get_error(reply);
        uint32_t uid;
        int k;

        r->uid_slot = sd_bus_slot_unref(r->uid_slot);
        if (e) {
                request_finish(r, false, false, e->message);
                return 0;
        }
        k = sd_bus_message_read(reply, "u", &uid);
        if (k < 0) {
                request_finish(r, false, false, "cannot read the caller's uid");
                return 0;
        }
        uid_remember(r->authz, r->sender, uid);
        if (uid == 0) {
                r->uid = 0;
                request_finish(r, true, false, NULL);
                return 0;
        }
        /* The connection's first call: only now is it known whose it is. */
        r->limit = request_charge_uid(r, uid);
        if (r->limit != LIMIT_NONE) {
                request_finish(r, false, false, NULL);
                return 0;
        }
        request_ask_polkit(r, uid);
        return 0;
}

static int on_caller_vanished(sd_bus_message *m, void *userdata, sd_bus_error *ret_error)
{
        Request *r = userdata;
        const char *name, *old_owner, *new_owner;

        if (sd_bus_message_read(m, "sss", &name, &old_owner, &new_owner) < 0 || !isempty(new_owner))
                return 0;
        log_debug("Caller %s left while its %s check was pending; dropping the call.", r->sender, r->action);
        request_release(r);
        return 0;
}

static int on_purge_timer(sd_event_source *s, uint64_t usec, void *userdata)
{
        Authz *a = userdata;
        GHashTableIter it;
        gpointer value;
        GSList *stale = NULL;

        /* A redelivered call whose handler failed before asking again leaves its answer behind. */
        g_hash_table_iter_init(&it, a->requests);
        while (g_hash_table_iter_next(&it, NULL, &value)) {
                Request *r = value;
                if (r->state == REQ_DONE && usec > r->done_usec + 10 * USEC_PER_SEC)
                        stale = g_slist_prepend(stale, r);
        }
        for (GSList *l = stale; l; l = l->next)
                request_release(l->data);
        g_slist_free(stale);

        return sd_event_source_set_time(s, usec + 10 * USEC_PER_SEC);
}

static const char *detail(const char *const *details, const char *key)
{
        for (const char *const *d = details; d && d[0] && d[1]; d += 2)
                if (streq(d[0], key))
                        return d[1];
        return NULL;
}

/* "clone image base as web", for messages: what was asked, in words, naming the image or machine. */
static void describe(const char *const *details, char *buf, size_t size)
{
        static const struct {
                const char *verb, *format; /* %1$s the image (or machine), %2$s the new name or job */
        } phrases[] = {
                {"clone", "clone image %1$s as %2$s"},
                {"remove", "remove image %1$s"},
                {"rename", "rename image %1$s to %2$s"},
                {"mark-read-only", "mark image %1$s read-only"},
                {"mark-writable", "make image %1$s writable"},
                {"cancel", "cancel job %2$s (on image %1$s)"},
                {"export", "export image %1$s"},
                {"import", "import an archive as image %1$s"},
                {"pull", "pull an archive as image %1$s"},
                {"create-template", "create template %1$s"},
                {"start", "start a machine on image %1$s"},
                {"stop", "stop machine %1$s"},
                {"kill", "send a signal to machine %1$s"},
                {"snapshot", "take snapshot %2$s of image %1$s"},
                {"restore", "restore image %1$s from snapshot %2$s"},
                {"remove-snapshot", "remove snapshot %2$s of image %1$s"},
                {"diff", "compare image %1$s with another"},
        };
        const char *verb = detail(details, "verb"), *image = detail(details, "image"),
                   *machine = detail(details, "machine"), *new_name = detail(details, "new_name"),
                   *job = detail(details, "job"), *snapshot = detail(details, "snapshot");
        const char *first = machine && verb && (streq(verb, "stop") || streq(verb, "kill")) ? machine : image;

        /* What runs inside a machine is about the machine, whatever its image. */
        if (machine && verb && (streq(verb, "exec") || streq(verb, "shell") || streq(verb, "kill-exec"))) {
                snprintf(buf, size, "%s in machine %s", streq(verb, "kill-exec") ? "signal a command" : verb, machine);
                return;
        }
        for (size_t i = 0; verb && i < ELEMENTSOF(phrases); i++)
                if (streq(verb, phrases[i].verb)) {
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wformat-nonliteral"
                        snprintf(buf, size, phrases[i].format, first ?: "?", new_name ?: job ?: snapshot ?: "?");
#pragma GCC diagnostic pop
                        return;
                }
        snprintf(buf, size, "%s%s%s", verb ?: "do this", image ? " image " : "", image ?: "");
}

static int verify(Authz *a, sd_bus_message *msg, const char *action, const AuthzOwner *owner,
                  const char *const *details, bool *ret_own, sd_bus_error *error)
{
        sd_bus *bus = sd_bus_message_get_bus(msg);
        const char *sender = sd_bus_message_get_sender(msg);
        _cleanup_free_ char *match = NULL;
        unsigned cached_uid;
        Request *r;
        size_t n = 0;
        int k;

        r = g_hash_table_lookup(a->requests, msg);
        if (r) {
                bool authorized = r->authorized, challenge = r->challenge;
                Limit limit = r->limit;
                _cleanup_free_ char *why = r->error_message ? strdup(r->error_message) : NULL;
                bool interactive = r->interactive;
                uid_t uid = r->uid;
                char what[512];

                const char *chosen = r->chosen_action ?: r->action;
                bool own = r->chose_own;
                char chosen_copy[256];

                if (r->state != REQ_DONE)
                        return 0;
                if (!streq(r->action, action)) { /* cannot happen with one handler per member */
                        request_release(r);
                        return sd_bus_error_set(error, SD_BUS_ERROR_ACCESS_DENIED,
                                                "Authorization answer does not match the action");
                }
                snprintf(chosen_copy, sizeof chosen_copy, "%s", chosen);
                action = chosen_copy;
                request_release(r);
                if (limit != LIMIT_NONE)
                        return set_limit_error(error, limit, uid);
                if (authorized) {
                        /* The handler's per-caller caps ask authz_caller_uid() next, in this dispatch:
                         * the answer must be there even if the table was emptied meanwhile. */
                        uid_remember(a, sender, uid);
                        if (ret_own)
                                *ret_own = own;
                        return 1;
                }
                describe(details, what, sizeof what);
                if (why)
                        return sd_bus_error_setf(error, SD_BUS_ERROR_ACCESS_DENIED,
                                                 "Cannot check authorization to %s (%s): %s", what, action, why);
                if (challenge && !interactive)
                        return sd_bus_error_setf(error, SD_BUS_ERROR_INTERACTIVE_AUTHORIZATION_REQUIRED,
                                                 "A password is needed to %s (polkit action %s), and this call did "
                                                 "not allow asking for one",
                                                 what, action);
                return sd_bus_error_setf(error, SD_BUS_ERROR_ACCESS_DENIED, "Not authorized to %s (polkit action %s)",
                                         what, action);
        }

        if (!sender) /* direct connection without a bus: only root can reach us that way */
                return 1;
        cached_uid = GPOINTER_TO_UINT(g_hash_table_lookup(a->uids, sender));
        if (cached_uid == 1) /* root */
                return 1;

        if (cached_uid != 0) { /* known, and not root */
                Limit l = uid_limit(a, cached_uid - 1);
                if (l != LIMIT_NONE)
                        return set_limit_error(error, l, cached_uid - 1);
        }
        if (GPOINTER_TO_UINT(g_hash_table_lookup(a->per_sender, sender)) >= AUTHZ_PENDING_PER_CONNECTION_MAX)
                return sd_bus_error_setf(error, SD_BUS_ERROR_LIMITS_EXCEEDED,
                                         "Caller %s has too many calls waiting for authorization (at most %d per "
                                         "connection)",
                                         sender, AUTHZ_PENDING_PER_CONNECTION_MAX);
        if (g_hash_table_size(a->requests) >= AUTHZ_PARKED_MAX)
                return sd_bus_error_setf(error, SD_BUS_ERROR_LIMITS_EXCEEDED,
                                         "Too many calls waiting for authorization (at most %d in all); try again "
                                         "later",
                                         AUTHZ_PARKED_MAX);

        r = calloc(1, sizeof *r);
        if (!r)
                return -ENOMEM;
        r->authz = a;
        r->uid = UID_UNKNOWN;
        r->msg = sd_bus_message_ref(msg);
        r->sender = strdup(sender);
        r->action = strdup(action);
        if (owner) {
                r->has_owner = true;
                r->own_action = strdup(owner->own_action);
                r->owner = owner->owner;
                r->shared = owner->shared;
                if (!r->own_action) {
                        request_free(r);
                        return -ENOMEM;
                }
        }
        for (const char *const *d = details; d && *d; d++)
                n++;
        r->details = g_new0(char *, n + 1);
        for (size_t i = 0; i < n; i++)
                r->details[i] = g_strdup(details[i]);
        r->interactive = sd_bus_message_get_allow_interactive_authorization(msg) > 0;
        if (!r->sender || !r->action) {
                request_free(r);
                return -ENOMEM;
        }
        g_hash_table_insert(a->requests, msg, r);
        sender_count_adjust(a, sender, +1);

        /* Watch the caller: if it leaves while a person sits at a prompt, the call is dropped. Only a
         * call that allows a prompt can wait that long; the others are answered in moments. */
        if (r->interactive) {
                if (asprintf(&match,
                             "type='signal',sender='org.freedesktop.DBus',path='/org/freedesktop/DBus',"
                             "interface='org.freedesktop.DBus',member='NameOwnerChanged',arg0='%s'",
                             sender) < 0)
                        match = NULL;
                if (match)
                        (void) sd_bus_add_match_async(bus, &r->vanish_slot, match, on_caller_vanished, NULL, r);
        }

        if (cached_uid != 0) { /* known, and not root */
                Limit l = request_charge_uid(r, cached_uid - 1);
                if (l != LIMIT_NONE) { /* cannot happen: checked above */
                        request_release(r);
                        return set_limit_error(error, l, cached_uid - 1);
                }
                request_ask_polkit(r, (uid_t) (cached_uid - 1));
                return 0;
        }
        k = sd_bus_call_method_async(bus, &r->uid_slot, "org.freedesktop.DBus", "/org/freedesktop/DBus",
                                     "org.freedesktop.DBus", "GetConnectionUnixUser", on_caller_uid, r, "s", sender);
        if (k < 0) {
                request_release(r);
                return sd_bus_error_set_errnof(error, k, "Cannot ask the bus who the caller is: %m");
        }
        return 0;
}

int authz_verify(Authz *a, sd_bus_message *msg, const char *action, const char *const *details, sd_bus_error *error)
{
        return verify(a, msg, action, NULL, details, NULL, error);
}

int authz_verify_owned(Authz *a, sd_bus_message *msg, const char *action, const AuthzOwner *owner,
                       const char *const *details, bool *ret_own, sd_bus_error *error)
{
        if (ret_own)
                *ret_own = false;
        return verify(a, msg, action, owner, details, ret_own, error);
}

unsigned authz_n_pending(Authz *a)
{
        return a ? g_hash_table_size(a->requests) : 0;
}

void authz_remember_caller_uid(Authz *a, const char *sender, uid_t uid)
{
        if (sender)
                uid_remember(a, sender, (uint32_t) uid);
}

int authz_caller_uid(Authz *a, sd_bus_message *msg, uid_t *ret)
{
        const char *sender = sd_bus_message_get_sender(msg);
        unsigned cached_uid;

        Request *r;

        if (!sender) { /* see authz_verify() */
                *ret = 0;
                return 0;
        }
        /* A call back from polkit whose handler asks before authz_verify() took the answer. */
        r = g_hash_table_lookup(a->requests, msg);
        if (r && r->uid != UID_UNKNOWN) {
                *ret = r->uid;
                return 0;
        }
        cached_uid = GPOINTER_TO_UINT(g_hash_table_lookup(a->uids, sender));
        if (cached_uid == 0)
                return -ENODATA;
        *ret = cached_uid - 1;
        return 0;
}

int authz_new(sd_event *event, Authz **ret)
{
        Authz *a;
        int k;

        a = calloc(1, sizeof *a);
        if (!a)
                return -ENOMEM;
        a->event = sd_event_ref(event);
        a->requests = g_hash_table_new(g_direct_hash, g_direct_equal);
        a->per_sender = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
        a->per_uid = g_hash_table_new(g_direct_hash, g_direct_equal);
        a->uids = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
        g_mutex_init(&a->lock);
        g_queue_init(&a->done);

        a->eventfd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
        if (a->eventfd < 0) {
                k = -errno;
                authz_free(a);
                return k;
        }
        k = sd_event_add_io(event, &a->eventfd_source, a->eventfd, EPOLLIN, on_eventfd, a);
        if (k >= 0)
                k = sd_event_add_time_relative(event, &a->purge_timer, CLOCK_MONOTONIC, 10 * USEC_PER_SEC, USEC_PER_SEC,
                                               on_purge_timer, a);
        if (k >= 0)
                k = sd_event_source_set_enabled(a->purge_timer, SD_EVENT_ON);
        if (k < 0) {
                authz_free(a);
                return k;
        }
        *ret = a;
        return 0;
}

static gboolean quit_loop(gpointer userdata)
{
        g_main_loop_quit(userdata);
        return G_SOURCE_REMOVE;
}

Authz *authz_free(Authz *a)
{
        GHashTableIter it;
        gpointer value;

        if (!a)
                return NULL;

        if (a->thread) {
                g_main_context_invoke(a->context, quit_loop, a->loop);
                g_thread_join(a->thread);
                g_main_loop_unref(a->loop);
                g_main_context_unref(a->context);
        }
        /* The thread is gone: nothing points at the requests any more. */
        g_hash_table_iter_init(&it, a->requests);
        while (g_hash_table_iter_next(&it, NULL, &value))
                request_free(value);
        g_hash_table_destroy(a->requests);
        g_hash_table_destroy(a->per_sender);
        g_hash_table_destroy(a->per_uid);
        g_hash_table_destroy(a->uids);
        g_queue_clear(&a->done);

        sd_event_source_disable_unref(a->eventfd_source);
        sd_event_source_disable_unref(a->purge_timer);
        safe_close(a->eventfd);
        sd_event_unref(a->event);
        g_mutex_clear(&a->lock);
        free(a);
        return NULL;
}
