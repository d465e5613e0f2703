/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

#include <glib.h>

#include "bus-util.h"

typedef struct Authz Authz;
typedef struct Job Job;
typedef struct Machine Machine;

/* Limits on what callers can make the daemon hold: in all, and per caller (see manager_caller_key()). */
#define JOBS_MAX 16
#define JOBS_PER_CALLER_MAX 4
#define MACHINES_MAX 64
#define MACHINES_PER_CALLER_MAX 16
#define OPERATIONS_MAX 64
#define OPERATIONS_PER_CALLER_MAX 16

typedef struct Manager {
        sd_event *event;
        sd_bus *bus;

        char *store;     /* absolute path of the image store */
        int store_fd;    /* O_DIRECTORY fd of the store; every image operation is relative to it */
        bool store_is_btrfs;
        bool quota_enabled;
        bool no_pool;
        char *pool_raw;  /* "<store>.raw" when the pool is one we made/mounted, else NULL */

        Authz *authz;

        /* Image names held by an operation, a job or a machine (name → reason string, static). */
        GHashTable *busy_images;
        /* Read-only images read in place by a job (name → count, GUINT_TO_POINTER): nothing may remove,
         * rename or unlock them meanwhile; machines may still run on them read-only. */
        GHashTable *image_readers;

        GHashTable *jobs;     /* uint32 id → Job* */
        uint32_t next_job_id;
        GHashTable *machines; /* name → Machine* */
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

/* Vtables and object plumbing, defined in the *-dbus.c files. */
extern const sd_bus_vtable manager_vtable[];
extern const sd_bus_vtable image_vtable[];
int image_object_find(sd_bus *bus, const char *path, const char *interface, void *userdata, void **found,
                      sd_bus_error *error);
int image_node_enumerator(sd_bus *bus, const char *path, void *userdata, char ***nodes, sd_bus_error *error);
int image_bus_path(const char *name, char **ret);

int manager_add_job_objects(Manager *m);
int manager_add_machine_objects(Manager *m);

/* The image verbs, shared by the Manager's methods and the Image object's. */
int image_method_clone(Manager *m, sd_bus_message *msg, const char *source, const char *new_name, int read_only,
                       sd_bus_error *error);
int image_method_remove(Manager *m, sd_bus_message *msg, const char *name, sd_bus_error *error);
int image_method_rename(Manager *m, sd_bus_message *msg, const char *name, const char *new_name,
                        sd_bus_error *error);
int image_method_mark_read_only(Manager *m, sd_bus_message *msg, const char *name, int read_only,
                                sd_bus_error *error);
/* Checks every handler makes before authorizing; each fills @error with the named error and returns
 * negative when the check fails. InvalidName with the reason, for an argument called @what: */
int bus_check_image_name(const char *name, const char *what, sd_bus_error *error);
/* NoSuchImage unless @name is an image (then *ret, if given, is it, valid for this dispatch): */
int bus_check_image_exists(Manager *m, const char *name, struct Image **ret, sd_bus_error *error);
/* ImageExists if anything is named @name in the store: */
int bus_check_image_absent(Manager *m, const char *name, sd_bus_error *error);
/* ImageBusy while an operation, a job or a machine holds @name: */
int bus_check_image_not_busy(Manager *m, const char *name, sd_bus_error *error);
