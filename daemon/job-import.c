/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <fcntl.h>

#include "authz.h"
#include "errors.h"
#include "image.h"
#include "job.h"
#include "image-dbus.h"
#include "job-dbus.h"
#include "pool.h"
#include "job-util.h"

int bus_check_import_target(Manager *m, const char *name, sd_bus_error *error)
{
        int k = bus_check_image_not_busy(m, name, error);
        return k < 0 ? k : bus_check_image_absent(m, name, error);
}

int method_import_tar(sd_bus_message *msg, void *userdata, sd_bus_error *error)
{
        Manager *m = userdata;
        _cleanup_(job_freep) Job *j = NULL;
        _cleanup_(job_args_done) JobArgs a;
        const char *name;
        Job *started;
        int fd, read_only, k;

        job_args_init(&a, JOB_IMPORT_TAR);
        k = sd_bus_message_read(msg, "hsb", &fd, &name, &read_only);
        if (k < 0)
                return k;

        if ((k = bus_check_image_name(name, "image name", error)) < 0 ||
            (k = bus_check_archive_fd(fd, false, error)) < 0 || (k = bus_check_import_target(m, name, error)) < 0)
                return k;

        /* The name is held until the image is in place, so no second import or clone races to it. */
        k = job_new(m, JOB_IMPORT_TAR, name, true, msg, &j, error);
        if (k < 0)
                return k;

        const char *details[] = {"verb", "import", "image", name, NULL};
        k = authz_verify(m->authz, msg, STAMP_ACTION_IMPORT, details, error);
        if (k <= 0)
                return k < 0 ? k : 1;

        if ((k = job_claim_owner(j, msg, &a, error)) < 0)
                return k;
        j->makes_image = true;
        j->temp_name = store_temp_name(name);
        a.name = strdup(name);
        if (!j->temp_name || !a.name)
                return -ENOMEM;
        a.import.read_only = read_only;
        a.import.in_fd = fcntl(fd, F_DUPFD_CLOEXEC, 3);
        if (a.import.in_fd < 0)
                return -errno;

        pool_maybe_grow(m);
        k = job_start(j, &a);
        if (k < 0)
                return k;
        started = TAKE_PTR(j); /* the manager's now */

        job_emit_new(started);
        return sd_bus_reply_method_return(msg, "uo", started->id, started->object_path);
}
