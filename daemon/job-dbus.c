/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include "authz.h"
#include "errors.h"
#include "job-dbus.h"
#include "redact.h"

static int job_from_path(Manager *m, const char *path, Job **ret)
{
        _cleanup_free_ char *label = NULL;
        char *end;
        unsigned long id;

        if (sd_bus_path_decode(path, STAMP_JOB_PREFIX, &label) <= 0 || isempty(label))
                return 0;
        errno = 0;
        id = strtoul(label, &end, 10);
        if (errno || *end || id == 0 || id > UINT32_MAX)
                return 0;
        *ret = job_find(m, (uint32_t) id);
        return *ret ? 1 : 0;
}

static int job_object_find(sd_bus *bus, const char *path, const char *interface, void *userdata, void **found,
                           sd_bus_error *error)
{
        Job *j = NULL;

        if (job_from_path(userdata, path, &j) <= 0)
                return 0;
        *found = j;
        return 1;
}

static int job_node_enumerator(sd_bus *bus, const char *path, void *userdata, char ***nodes, sd_bus_error *error)
{
        Manager *m = userdata;
        GHashTableIter it;
        gpointer v;
        char **l;
        size_t i = 0;

        l = calloc(g_hash_table_size(m->jobs) + 1, sizeof(char *));
        if (!l)
                return -ENOMEM;
        g_hash_table_iter_init(&it, m->jobs);
        while (g_hash_table_iter_next(&it, NULL, &v))
                if (!(l[i++] = strdup(((Job *) v)->object_path))) {
                        strv_freep(&l);
                        return -ENOMEM;
                }
        *nodes = l;
        return 0;
}

/* What a job says, made fit to leave the daemon: valid UTF-8 (tools print what they like) and
 * without the credentials or query of any URL in it. The job's own code already names URLs
 * redacted; this catches what a tool it runs prints (a mirror URL in debootstrap's output, a URL in
 * libcurl's words), since LogMessage goes to anyone on the bus. NULL only when out of memory. */
static char *job_text_shown(const char *text)
{
        g_autofree char *valid = g_utf8_make_valid(text, -1);

        return text_redact_urls(valid);
}

int job_send_log(Job *j, int priority, const char *text)
{
        _cleanup_free_ char *shown = job_text_shown(text);

        if (!shown)
                return -ENOMEM;
        return sd_bus_emit_signal(j->manager->bus, j->object_path, STAMP_JOB_IFACE, "LogMessage", "us",
                                  (uint32_t) priority, shown);
}

void job_emit_new(Job *j)
{
        (void) sd_bus_emit_signal(j->manager->bus, STAMP_MANAGER_PATH, STAMP_MANAGER_IFACE, "JobNew", "uo", j->id,
                                  j->object_path);
}

static int on_progress_timer(sd_event_source *s, uint64_t usec, void *userdata)
{
        Job *j = userdata;

        j->progress_timer = sd_event_source_disable_unref(j->progress_timer);
        if (j->progress_dirty)
                job_emit_progress(j);
        return 0;
}

void job_emit_progress(Job *j)
{
        uint64_t now = now_usec(CLOCK_MONOTONIC);

        /* At most one change signal per interval, as the work reports; the last value is always sent. */
        if (now < j->progress_emitted_usec + JOB_PROGRESS_INTERVAL_USEC) {
                j->progress_dirty = true;
                if (!j->progress_timer)
                        (void) sd_event_add_time(j->manager->event, &j->progress_timer, CLOCK_MONOTONIC,
                                                 j->progress_emitted_usec + JOB_PROGRESS_INTERVAL_USEC, 0,
                                                 on_progress_timer, j);
                return;
        }
        j->progress_dirty = false;
        j->progress_emitted_usec = now;
        (void) sd_bus_emit_properties_changed(j->manager->bus, j->object_path, STAMP_JOB_IFACE, "Progress", NULL);
}

int job_method_cancel(Manager *m, Job *j, sd_bus_message *msg, sd_bus_error *error)
{
        char id[16];
        const char *details[] = {"verb", "cancel", "image", j->image, "job", id, NULL};
        int k;

        snprintf(id, sizeof id, "%" PRIu32, j->id);
        k = authz_verify(m->authz, msg, j->action, details, error);
        if (k <= 0)
                return k < 0 ? k : 1;
        /* The job may have ended while the caller was being asked. */
        if (!job_find(m, j->id))
                return sd_bus_error_setf(error, STAMP_ERROR_NO_SUCH_JOB, "Job %s has already ended", id);
        job_cancel(j);
        return sd_bus_reply_method_return(msg, NULL);
}

static int method_cancel(sd_bus_message *msg, void *userdata, sd_bus_error *error)
{
        Job *j = userdata;
        return job_method_cancel(j->manager, j, msg, error);
}

static int property_get_type(sd_bus *bus, const char *path, const char *interface, const char *property,
                             sd_bus_message *reply, void *userdata, sd_bus_error *error)
{
        Job *j = userdata;
        return sd_bus_message_append(reply, "s", job_type_to_string(j->type));
}

static int property_get_state(sd_bus *bus, const char *path, const char *interface, const char *property,
                              sd_bus_message *reply, void *userdata, sd_bus_error *error)
{
        Job *j = userdata;
        return sd_bus_message_append(reply, "s", job_state_to_string(j->state));
}

static int property_get_result(sd_bus *bus, const char *path, const char *interface, const char *property,
                               sd_bus_message *reply, void *userdata, sd_bus_error *error)
{
        Job *j = userdata;
        return sd_bus_message_append(reply, "s", job_result_to_string(j->state));
}

static int property_get_error_name(sd_bus *bus, const char *path, const char *interface, const char *property,
                                   sd_bus_message *reply, void *userdata, sd_bus_error *error)
{
        Job *j = userdata;
        const char *name = "";

        if (j->state == JOB_FAILED)
                name = stamp_error_name_from_errno(j->error) ?: SD_BUS_ERROR_FAILED;
        return sd_bus_message_append(reply, "s", name);
}

static int property_get_description(sd_bus *bus, const char *path, const char *interface, const char *property,
                                    sd_bus_message *reply, void *userdata, sd_bus_error *error)
{
        Job *j = userdata;
        return sd_bus_message_append(reply, "s", j->description ?: "");
}

static int property_get_error_message(sd_bus *bus, const char *path, const char *interface, const char *property,
                                      sd_bus_message *reply, void *userdata, sd_bus_error *error)
{
        Job *j = userdata;
        const char *message = j->state == JOB_FAILED && j->error_message ? j->error_message : "";
        _cleanup_free_ char *shown = job_text_shown(message);

        if (!shown)
                return -ENOMEM;
        return sd_bus_message_append(reply, "s", shown);
}

const sd_bus_vtable job_vtable[] = {
        SD_BUS_VTABLE_START(0),
        SD_BUS_PROPERTY("Id", "u", NULL, offsetof(Job, id), SD_BUS_VTABLE_PROPERTY_CONST),
        SD_BUS_PROPERTY("Type", "s", property_get_type, 0, SD_BUS_VTABLE_PROPERTY_CONST),
        SD_BUS_PROPERTY("Image", "s", NULL, offsetof(Job, image), SD_BUS_VTABLE_PROPERTY_CONST),
        SD_BUS_PROPERTY("Progress", "d", NULL, offsetof(Job, progress), SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("State", "s", property_get_state, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("Result", "s", property_get_result, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("ErrorName", "s", property_get_error_name, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("ErrorMessage", "s", property_get_error_message, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("Description", "s", property_get_description, 0, SD_BUS_VTABLE_PROPERTY_CONST),
        SD_BUS_METHOD("Cancel", "", "", method_cancel, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_SIGNAL_WITH_ARGS("LogMessage", SD_BUS_ARGS("u", priority, "s", text), 0),
        SD_BUS_VTABLE_END,
};

int manager_add_job_objects(Manager *m)
{
        int k = sd_bus_add_fallback_vtable(m->bus, NULL, STAMP_JOB_PREFIX, STAMP_JOB_IFACE, job_vtable, job_object_find,
                                           m);
        if (k < 0)
                return k;
        return sd_bus_add_node_enumerator(m->bus, NULL, STAMP_JOB_PREFIX, job_node_enumerator, m);
}
