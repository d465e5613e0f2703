/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <fcntl.h>

#include "authz.h"
#include "errors.h"
#include "escape.h"
#include "image.h"
#include "job.h"
#include "machine.h"
#include "image-dbus.h"
#include "job-dbus.h"
#include "job-util.h"

int method_export_tar(sd_bus_message *msg, void *userdata, sd_bus_error *error)
{
        Manager *m = userdata;
        _cleanup_(job_freep) Job *j = NULL;
        _cleanup_(job_args_done) JobArgs a;
        bool snapshot, read_only_in_place;
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
                g_autofree char *f = text_shown(format_name);
                return sd_bus_error_setf(
                        error, STAMP_ERROR_UNSUPPORTED_FORMAT,
                        "Unsupported export format \"%s\" (known: zstd, xz, gzip, bzip2, uncompressed)", f);
        }
        if ((k = bus_check_archive_fd(fd, true, error)) < 0)
                return k;
        if ((k = bus_check_image_exists(m, name, &img, error)) < 0)
                return k;
        /* A read-only image nobody holds is read in place; a writable subvolume on btrfs from a
         * snapshot; anything else in place too, as it is. */
        read_only_in_place = img->read_only && !manager_image_busy_reason(m, name);
        snapshot = !read_only_in_place && m->store_is_btrfs && img->type == IMAGE_SUBVOLUME;
        /* The export walks the image's tree on host paths, and root in a machine running on it can
         * swap a directory for a link to the host's / mid-walk: not while a machine runs on it. */
        Machine *runner = snapshot ? NULL : machine_holding_image(m, name);
        if (runner)
                return sd_bus_error_setf(error, STAMP_ERROR_IMAGE_BUSY,
                                         "Image %s is busy (running as machine %s): it cannot be snapshotted "
                                         "here, and it is not exported in place while a machine runs on it",
                                         name, runner->name);

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
         * (or a machine running on it) meanwhile. What has to be read in place as it is (a writable
         * directory image) is held as well: no machine starts on it until the export has ended. */
        if (snapshot) {
                j->temp_name = store_temp_name(name);
                if (!j->temp_name)
                        return -ENOMEM;
                a.export.snapshot = true;
        } else {
                manager_image_reader_add(m, name);
                j->reader_held = true;
        }
        a.name = strdup(name);
        a.export.format = strdup(export_format_to_string(format));
        if (!a.name || !a.export.format)
                return -ENOMEM;
        a.export.read_only = read_only_in_place;
        a.export.usage = img->usage;

        k = job_start(j, &a);
        if (k < 0)
                return k;
        started = TAKE_PTR(j); /* the manager's now */

        job_emit_new(started);
        return sd_bus_reply_method_return(msg, "uo", started->id, started->object_path);
}
