/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <fcntl.h>

#include "authz.h"
#include "errors.h"
#include "image.h"
#include "job.h"
#include "image-dbus.h"
#include "job-dbus.h"
#include "job-util.h"

int bus_check_import_target(Manager *m, const char *name, sd_bus_error *error)
{
        int k = bus_check_image_not_busy(m, name, error);
        return k < 0 ? k : bus_check_image_absent(m, name, error);
}

int job_import_start(Manager *m, sd_bus_message *msg, JobType type, const char *name, int fd, bool read_only,
                     sd_bus_error *error)
{
        _cleanup_(job_freep) Job *j = NULL;
        _cleanup_(job_args_done) JobArgs a;
        int k;

        job_args_init(&a, type);
        if ((k = bus_check_image_name(name, "image name", error)) < 0 ||
            (k = bus_check_archive_fd(fd, false, error)) < 0 || (k = bus_check_import_target(m, name, error)) < 0)
                return k;

        /* The name is held until the image is in place, so no second import or clone races to it. */
        const char *details[] = {"verb", "import", "image", name, NULL};
        k = job_new_authorized(m, type, name, true, msg, STAMP_ACTION_IMPORT, NULL, details, &j, error);
        if (k <= 0)
                return k < 0 ? k : 1;

        if ((k = job_make_image(j, msg, &a, name, error)) < 0)
                return k;
        a.import.read_only = read_only;
        a.import.in_fd = fcntl(fd, F_DUPFD_CLOEXEC, 3);
        if (a.import.in_fd < 0)
                return -errno;

        return job_start_reply(&j, &a, msg);
}

int method_import_tar(sd_bus_message *msg, void *userdata, sd_bus_error *error)
{
        const char *name;
        int fd, read_only, k;

        k = sd_bus_message_read(msg, "hsb", &fd, &name, &read_only);
        if (k < 0)
                return k;
        return job_import_start(userdata, msg, JOB_IMPORT_TAR, name, fd, read_only, error);
}
