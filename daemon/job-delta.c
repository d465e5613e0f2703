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
#include "options.h"

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
        if ((k = bus_check_image_readable(m, name, img, ", and it is not exported in place while a machine runs on it",
                                          &read_only_in_place, &snapshot, error)) < 0)
                return k;
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

        const char *details[] = {"verb",   "export",       "image", name, "format", btrfs ? "btrfs" : "tar",
                                 "parent", o.parent ?: "", NULL};
        k = job_new_authorized(m, JOB_EXPORT, name, false, msg, STAMP_ACTION_EXPORT, NULL, details, &j, error);
        if (k <= 0)
                return k < 0 ? k : 1;

        if ((k = job_export_args(j, &a, name, fd, snapshot, compression, error)) < 0)
                return k;
        if (o.parent) {
                a.export.parent_fd = bus_open_image(m, o.parent, error);
                if (a.export.parent_fd < 0)
                        return a.export.parent_fd;
                a.export.parent = strdup(o.parent);
                if (!a.export.parent)
                        return -ENOMEM;
        }
        a.export.btrfs = btrfs;
        a.export.read_only = read_only_in_place || img->read_only;
        a.export.usage = usage;

        return job_start_reply(&j, &a, msg);
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
        ImportImageOptions o;
        const char *name;
        int fd, k;

        k = sd_bus_message_read(msg, "hs", &fd, &name);
        if (k < 0)
                return k;
        k = bus_read_options(msg, import_image_options, &o, error);
        if (k < 0)
                return k;
        return job_import_start(userdata, msg, JOB_IMPORT, name, fd, o.read_only > 0, error);
}
