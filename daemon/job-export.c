/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <fcntl.h>

#include "authz.h"
#include "errors.h"
#include "image.h"
#include "job.h"
#include "manager-methods.h"
#include "job-util.h"

int method_export_tar(sd_bus_message *msg, void *userdata, sd_bus_error *error)
{
        Manager *m = userdata;
        _cleanup_(job_freep) Job *j = NULL;
        _cleanup_(job_args_done) JobArgs a;
        const char *name, *format_name;
        ExportFormat format;
        Image *img;
        Job *started;
        int fd, k;

        job_args_init(&a, JOB_EXPORT_TAR);
        k = sd_bus_message_read(msg, "shs", &name, &fd, &format_name);
        if (k < 0)
                return k;

        if ((k = bus_check_image_name(name, "image name", error)) < 0)
                return k;
        format = export_format_from_string(format_name);
        if (format == _EXPORT_FORMAT_INVALID) {
                g_autofree char *f = g_strescape(strnlen(format_name, 80) >= 80 ? "(too long to show)" : format_name,
                                                 NULL);
                return sd_bus_error_setf(error, STAMP_ERROR_UNSUPPORTED_FORMAT,
                                         "Unsupported export format \"%s\" (known: zstd, xz, gzip, bzip2, uncompressed)",
                                         f);
        }
        if ((k = bus_check_archive_fd(fd, true, error)) < 0)
                return k;
        if ((k = bus_check_image_exists(m, name, &img, error)) < 0)
                return k;

        /* No lock: exports read a snapshot or a read-only image, so they run beside machines, other
         * exports and changes. */
        k = job_new(m, JOB_EXPORT_TAR, name, false, msg, &j, error);
        if (k < 0)
                return k;

        const char *details[] = {"verb", "export", "image", name, "format", export_format_to_string(format), NULL};
        k = authz_verify(m->authz, msg, STAMP_ACTION_EXPORT, details, error);
        if (k <= 0)
                return k < 0 ? k : 1;

        a.export.image_fd = openat(m->store_fd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (a.export.image_fd < 0)
                return sd_bus_error_setf(error, STAMP_ERROR_NO_SUCH_IMAGE, "Cannot open image %s: %s", name,
                                         strerror(errno));
        a.export.out_fd = fcntl(fd, F_DUPFD_CLOEXEC, 3);
        if (a.export.out_fd < 0)
                return -errno;

        /* A read-only image is read in place, held read-only until the export ends (its pages are
         * likely cached; a snapshot's are not). A writable subvolume is exported from a read-only
         * snapshot: it is instant, and the export then does not depend on what happens to the image
         * (or a machine running on it) meanwhile. */
        if (img->read_only && !manager_image_busy_reason(m, name)) {
                manager_image_reader_add(m, name);
                j->reader_held = true;
        } else if (m->store_is_btrfs && img->type == IMAGE_SUBVOLUME) {
                j->temp_name = store_temp_name(name);
                if (!j->temp_name)
                        return -ENOMEM;
                a.export.snapshot = true;
        }
        a.name = strdup(name);
        a.export.format = strdup(export_format_to_string(format));
        if (!a.name || !a.export.format)
                return -ENOMEM;
        a.export.read_only = j->reader_held;
        a.export.usage = img->usage;

        k = job_start(j, &a);
        if (k < 0)
                return k;
        started = TAKE_PTR(j); /* the manager's now */

        job_emit_new(started);
        return sd_bus_reply_method_return(msg, "uo", started->id, started->object_path);
}
