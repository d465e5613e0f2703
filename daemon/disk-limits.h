/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

#include "image.h"

/* Limits on disk (disk-limits.c): SetImageLimit, a quota group limit on an image's subvolume, and
 * SetPoolLimit, the size stampd's own loopback pool is kept at or below (it is shrunk to it and never
 * grown past it). Both need btrfs of stampd's own making, where quota groups are on:
 * NotSupported elsewhere. */

/* The pool's limit (persisted in the store's meta directory), UINT64_MAX if none. */
uint64_t pool_limit_get(Manager *m);

/* The Image object's Limit: the bytes it may refer to, UINT64_MAX if unlimited or unknown. */
uint64_t image_limit(Manager *m, const Image *img);

int method_set_image_limit(sd_bus_message *msg, void *userdata, sd_bus_error *error);
int method_set_pool_limit(sd_bus_message *msg, void *userdata, sd_bus_error *error);
