/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

#include <systemd/sd-bus.h>

/* The methods of issue 12's deltas and diff: DiffImage (image-diff.c), ExportImage and ImportImage
 * (job-delta.c). */
int method_diff_image(sd_bus_message *msg, void *userdata, sd_bus_error *error);
int method_export_image(sd_bus_message *msg, void *userdata, sd_bus_error *error);
int method_import_image(sd_bus_message *msg, void *userdata, sd_bus_error *error);
