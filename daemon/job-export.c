/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <fcntl.h>

#include "authz.h"
#include "errors.h"
#include "escape.h"
#include "image.h"
#include "job.h"
#include "image-dbus.h"
#include "job-dbus.h"
#include "job-util.h"

int job_export_args(Job *j, JobArgs *a, const char *name, int fd, bool snapshot, ExportFormat format,
                    sd_bus_error *error)
{
        int k;

        a->export.image_fd = bus_open_image(j->manager, name, error);
        if (a->export.image_fd < 0)
                return a->export.image_fd;
        a->export.out_fd = fcntl(fd, F_DUPFD_CLOEXEC, 3);
        if (a->export.out_fd < 0)
                return -errno;

        /* A read-only image is read in place, held read-only until the export ends (its pages are
         * likely cached; a snapshot's are not). A writable subvolume is exported from a read-only
         * snapshot: it is instant, and the export then does not depend on what happens to the image
         * (or a machine running on it) meanwhile. What has to be read in place as it is (a writable
         * directory image) is held as well: no machine starts on it until the export has ended. */
        if ((k = job_read_image(j, name, snapshot)) < 0)
                return k;
        a->export.snapshot = snapshot;
        a->name = strdup(name);
        a->export.format = strdup(export_format_to_string(format));
        if (!a->name || !a->export.format)
                return -ENOMEM;
        return 0;
}

int method_export_tar(sd_bus_message *msg, void *userdata, sd_bus_error *error)
{
        Manager *m = userdata;
        _cleanup_(job_freep) Job *j = NULL;
        _cleanup_(job_args_done) JobArgs a;
        bool snapshot, read_only_in_place;
        const char *name, *format_name;
        ExportFormat format;
        Image *img;
        int fd, k;

        job_args_init(&a, JOB_EXPORT_TAR);
        k = sd_bus_message_read(msg, "shs", &name, &fd, &format_name);
        if (k < 0)
                return k;

        if ((k = bus_check_image_name(name, "image name", error)) < 0)
                return k;
        format = export_format_from_string(format_name);
        if (format == _EXPORT_FORMAT_INVALID) {
                g_autofree char *f = text_shown(format_name);
                return sd_bus_error_setf(
                        error, STAMP_ERROR_UNSUPPORTED_FORMAT,
                        "Unsupported export format \"%s\" (known: zstd, xz, gzip, bzip2, uncompressed)", f);
        }
        if ((k = bus_check_archive_fd(fd, true, error)) < 0)
                return k;
        if ((k = bus_check_image_exists(m, name, &img, error)) < 0)
                return k;
        /* The export walks the image's tree on host paths, and root in a machine running on it can
         * swap a directory for a link to the host's / mid-walk: not while a machine runs on it. */
        if ((k = bus_check_image_readable(m, name, img, ", and it is not exported in place while a machine runs on it",
                                          &read_only_in_place, &snapshot, error)) < 0)
                return k;

        /* No lock: exports read a snapshot or a read-only image, so they run beside machines, other
         * exports and changes. */
        const char *details[] = {"verb", "export", "image", name, "format", export_format_to_string(format), NULL};
        k = job_new_authorized(m, JOB_EXPORT_TAR, name, false, msg, STAMP_ACTION_EXPORT, NULL, details, &j, error);
        if (k <= 0)
                return k < 0 ? k : 1;

        if ((k = job_export_args(j, &a, name, fd, snapshot, format, error)) < 0)
                return k;
        a.export.read_only = read_only_in_place;
        a.export.usage = img->usage;

        return job_start_reply(&j, &a, msg);
}
