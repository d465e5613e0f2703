/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

#include <glib.h>

#include "bus-util.h"
#include "settings.h"

typedef struct Authz Authz;
typedef struct Job Job;
typedef struct Machine Machine;

/* The limits on what callers can make the daemon hold, in all and per caller (see
 * manager_caller_key()), are Manager.settings' (stampd.conf [Limits]). */

typedef struct Manager {
        sd_event *event;
        sd_bus *bus;

        char *store;  /* absolute path of the image store */
        int store_fd; /* O_DIRECTORY fd of the store; every image operation is relative to it */
        bool store_is_btrfs;
        bool quota_enabled;
        bool no_pool;
        char *pool_raw; /* "<store>.raw" when the pool is one we made/mounted, else NULL */

        Authz *authz;

        /* Image names held by an operation, a job or a machine (name → reason string, static). */
        GHashTable *busy_images;
        /* Read-only images read in place by a job (name → count, GUINT_TO_POINTER): nothing may remove,
         * rename or unlock them meanwhile; machines may still run on them read-only. */
        GHashTable *image_readers;

        GHashTable *jobs; /* uint32 id → Job* */
        uint32_t next_job_id;
        GHashTable *machines; /* name → Machine* */
        GHashTable *execs;    /* uint32 id → Exec* (exec.h) */
        uint32_t next_exec_id;
        unsigned n_operations;
        GHashTable *operations_per_caller; /* caller key → count (GUINT_TO_POINTER) */

        uint64_t idle_timeout_usec; /* 0: never exit */
        sd_event_source *idle_timer;
        sd_event_source *pool_timer;
        sd_event_source *trim_timer; /* gives freed heap memory back after a quiet while */
        sd_bus_slot *filter_slot;

        /* Images loaded for the bus call being dispatched (name → Image*), dropped right after it. */
        GHashTable *image_cache;
        sd_event_source *image_cache_flush;
        /* Hints for Origin: subvolume UUID (hex) → the name it was last seen under. Always checked
         * against the image before use; cleared when it grows past UUID_HINTS_MAX. */
        GHashTable *uuid_hints;
        uint64_t last_activity_usec;

        Settings settings; /* stampd.conf */
        /* Images being made for a user that are not in the store yet (uid → count, GUINT_TO_POINTER),
         * so that calls racing each other cannot pass ImagesPerUser= together. */
        GHashTable *images_pending;
        bool stopping; /* SIGTERM came: the loop ends once no operation is left */
} Manager;

/* How long the daemon must have been quiet before freed heap memory is given back. */
#define TRIM_AFTER_QUIET_USEC (USEC_PER_SEC / 2)

int manager_new(Manager **ret);
Manager *manager_free(Manager *m);
static inline void manager_freep(Manager **m)
{
        manager_free(*m);
}

/* Open the store (after the pool is set up), remove stale temporaries. */
int manager_open_store(Manager *m);
int manager_connect_bus(Manager *m);
int manager_run(Manager *m);

/* Whether nothing keeps the daemon alive: no job, machine, operation or pending authorization. */
bool manager_is_idle(Manager *m);
void manager_note_activity(Manager *m);
/* End the loop if stampd is stopping and no operation is left. */
void manager_check_stopped(Manager *m);

/* Busy images: lock a name for the duration of an operation. -EBUSY if already held. */
int manager_image_lock(Manager *m, const char *name, const char *reason);
void manager_image_unlock(Manager *m, const char *name);
const char *manager_image_busy_reason(Manager *m, const char *name);
void manager_image_reader_add(Manager *m, const char *name);
void manager_image_reader_remove(Manager *m, const char *name);
bool manager_image_has_readers(Manager *m, const char *name);

/* Who a per-caller cap counts @msg against, as words for messages: "user 1000" for an unprivileged
 * caller, all its connections together (a user who opens more connections gets no more); "root's
 * connection :1.42" for root, each connection on its own (no one but root can make more of them, and
 * one root script at its cap must not hold up the administrator). -ENODATA while the caller's uid is
 * unknown, which it never is once authz_verify() has returned 1 for @msg. */
int manager_caller_key(Manager *m, sd_bus_message *msg, char **ret);
/* "per user" or "per connection of root", for @key: how a message names the per-caller cap. */
const char *manager_caller_cap_scope(const char *key);

/* Per-caller accounting of operations (@caller from manager_caller_key()); LimitsExceeded naming the
 * cap that was hit, in @error. */
int manager_operation_acquire(Manager *m, const char *caller, sd_bus_error *error);
void manager_operation_release(Manager *m, const char *caller);

/* Signals. */
int manager_send_image_added(Manager *m, const char *name);
int manager_send_image_removed(Manager *m, const char *name);

/* An image, loaded at most once per dispatched call. -ENOENT if there is none. Valid until the loop
 * runs again; do not keep the pointer. */
struct Image;
int manager_get_image(Manager *m, const char *name, struct Image **ret);

/* Count an image being made for @uid until it is in the store (or failed). */
void manager_image_pending(Manager *m, uid_t uid, int delta);
