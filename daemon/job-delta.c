/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* ExportImage and ImportImage: ExportTar and ImportTar's jobs with options, and btrfs send streams
 * (full, or only the difference from a read-only parent) besides tar. The work is stamp-transfer's
 * (transfer/export-image.c, transfer/import-image.c). */
#include <fcntl.h>

#include "authz.h"
#include "delta.h"
#include "errors.h"
#include "escape.h"
#include "image-dbus.h"
#include "image.h"
#include "job-dbus.h"
#include "job-util.h"
#include "job.h"
#include "machine.h"
#include "options.h"
#include "pool.h"

typedef struct ExportImageOptions {
        char *format;      /* "tar" (default) or "btrfs" */
        char *compression; /* export_format_to_string(); default zstd */
        char *parent;      /* btrfs only: a delta against this read-only image */
} ExportImageOptions;

static const OptionSpec export_image_options[] = {
        {"format", OPTION_STRING, offsetof(ExportImageOptions, format)},
        {"compression", OPTION_STRING, offsetof(ExportImageOptions, compression)},
        {"parent", OPTION_STRING, offsetof(ExportImageOptions, parent)},
        {},
};

static void export_image_options_done(ExportImageOptions *o)
{
        options_free(export_image_options, o);
}

int method_export_image(sd_bus_message *msg, void *userdata, sd_bus_error *error)
{
        Manager *m = userdata;
        _cleanup_(job_freep) Job *j = NULL;
        _cleanup_(job_args_done) JobArgs a;
        _cleanup_(export_image_options_done) ExportImageOptions o = {};
        bool snapshot, read_only_in_place, btrfs;
        const char *name;
        ExportFormat compression;
        Image *img, *parent = NULL;
        Job *started;
        int fd, k;

        job_args_init(&a, JOB_EXPORT);
        k = sd_bus_message_read(msg, "sh", &name, &fd);
        if (k < 0)
                return k;
        k = bus_read_options(msg, export_image_options, &o, error);
        if (k < 0)
                return k;

        if ((k = bus_check_image_name(name, "image name", error)) < 0)
                return k;
        if (isempty(o.format) || streq(o.format, "tar"))
                btrfs = false;
        else if (streq(o.format, "btrfs"))
                btrfs = true;
        else {
                g_autofree char *f = text_shown(o.format);
                return sd_bus_error_setf(error, STAMP_ERROR_UNSUPPORTED_FORMAT,
                                         "Unsupported export format \"%s\" (known: tar, btrfs)", f);
        }
        compression = export_format_from_string(o.compression ?: "");
        if (compression == _EXPORT_FORMAT_INVALID) {
                g_autofree char *f = text_shown(o.compression);
                return sd_bus_error_setf(error, STAMP_ERROR_UNSUPPORTED_FORMAT,
                                         "Unsupported compression \"%s\" (known: zstd, xz, gzip, bzip2, uncompressed)",
                                         f);
        }
        if (o.parent && !btrfs)
                return sd_bus_error_setf(error, SD_BUS_ERROR_INVALID_ARGS,
                                         "A parent makes a delta, which only format btrfs has");
        if (o.parent && (k = bus_check_image_name(o.parent, "parent image name", error)) < 0)
                return k;
        if ((k = bus_check_archive_fd(fd, true, error)) < 0)
                return k;
        if ((k = bus_check_image_exists(m, name, &img, error)) < 0)
                return k;
        if (btrfs && (!m->store_is_btrfs || img->type != IMAGE_SUBVOLUME))
                return sd_bus_error_setf(error, STAMP_ERROR_NOT_SUPPORTED,
                                         "Image %s is not a btrfs subvolume%s: it has no btrfs stream; export it "
                                         "as tar",
                                         name, m->store_is_btrfs ? "" : " (the store is not on btrfs)");
        read_only_in_place = img->read_only && !manager_image_busy_reason(m, name);
        snapshot = !read_only_in_place && m->store_is_btrfs && img->type == IMAGE_SUBVOLUME;
        Machine *runner = snapshot ? NULL : machine_holding_image(m, name);
        if (runner)
                return sd_bus_error_setf(error, STAMP_ERROR_IMAGE_BUSY,
                                         "Image %s is busy (running as machine %s): it cannot be snapshotted "
                                         "here, and it is not exported in place while a machine runs on it",
                                         name, runner->name);
        uint64_t usage = img->usage;
        if (o.parent) {
                if ((k = bus_check_image_exists(m, o.parent, &parent, error)) < 0)
                        return k;
                if (parent->type != IMAGE_SUBVOLUME || !parent->read_only)
                        return sd_bus_error_setf(error, SD_BUS_ERROR_INVALID_ARGS,
                                                 "The parent %s of a delta must be a read-only image (a template): "
                                                 "a writable one may change before the delta is applied",
                                                 o.parent);
        }

        k = job_new(m, JOB_EXPORT, name, false, msg, &j, error);
        if (k < 0)
                return k;

        const char *details[] = {"verb",   "export",       "image", name, "format", btrfs ? "btrfs" : "tar",
                                 "parent", o.parent ?: "", NULL};
        k = authz_verify(m->authz, msg, STAMP_ACTION_EXPORT, details, error);
        if (k <= 0)
                return k < 0 ? k : 1;

        a.export.image_fd = openat(m->store_fd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (a.export.image_fd < 0)
                return sd_bus_error_setf(error, STAMP_ERROR_NO_SUCH_IMAGE, "Cannot open image %s: %s", name,
                                         strerror(errno));
        if (o.parent) {
                a.export.parent_fd = openat(m->store_fd, o.parent, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
                if (a.export.parent_fd < 0)
                        return sd_bus_error_setf(error, STAMP_ERROR_NO_SUCH_IMAGE, "Cannot open image %s: %s", o.parent,
                                                 strerror(errno));
                a.export.parent = strdup(o.parent);
                if (!a.export.parent)
                        return -ENOMEM;
        }
        a.export.out_fd = fcntl(fd, F_DUPFD_CLOEXEC, 3);
        if (a.export.out_fd < 0)
                return -errno;

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
        a.export.format = strdup(export_format_to_string(compression));
        if (!a.name || !a.export.format)
                return -ENOMEM;
        a.export.btrfs = btrfs;
        a.export.read_only = read_only_in_place || img->read_only;
        a.export.usage = usage;

        k = job_start(j, &a);
        if (k < 0)
                return k;
        started = TAKE_PTR(j);
        job_emit_new(started);
        return sd_bus_reply_method_return(msg, "uo", started->id, started->object_path);
}

typedef struct ImportImageOptions {
        int read_only;
} ImportImageOptions;

static const OptionSpec import_image_options[] = {
        {"read_only", OPTION_BOOL, offsetof(ImportImageOptions, read_only)},
        {},
};

int method_import_image(sd_bus_message *msg, void *userdata, sd_bus_error *error)
{
        Manager *m = userdata;
        _cleanup_(job_freep) Job *j = NULL;
        _cleanup_(job_args_done) JobArgs a;
        ImportImageOptions o;
        const char *name;
        Job *started;
        int fd, k;

        job_args_init(&a, JOB_IMPORT);
        k = sd_bus_message_read(msg, "hs", &fd, &name);
        if (k < 0)
                return k;
        k = bus_read_options(msg, import_image_options, &o, error);
        if (k < 0)
                return k;

        if ((k = bus_check_image_name(name, "image name", error)) < 0 ||
            (k = bus_check_archive_fd(fd, false, error)) < 0 || (k = bus_check_import_target(m, name, error)) < 0)
                return k;

        k = job_new(m, JOB_IMPORT, name, true, msg, &j, error);
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
        a.import.read_only = o.read_only > 0;
        a.import.in_fd = fcntl(fd, F_DUPFD_CLOEXEC, 3);
        if (a.import.in_fd < 0)
                return -errno;

        pool_maybe_grow(m);
        k = job_start(j, &a);
        if (k < 0)
                return k;
        started = TAKE_PTR(j);
        job_emit_new(started);
        return sd_bus_reply_method_return(msg, "uo", started->id, started->object_path);
}
