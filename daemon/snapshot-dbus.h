/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

#include "image.h"

/* Snapshots of images (store/snapshots.h has where they live and how a restore stays crash-safe):
 * the Manager's SnapshotImage, RestoreImage, RemoveSnapshot, ListSnapshots and RemoveImageEx. */
int method_snapshot_image(sd_bus_message *msg, void *userdata, sd_bus_error *error);
int method_restore_image(sd_bus_message *msg, void *userdata, sd_bus_error *error);
int method_remove_snapshot(sd_bus_message *msg, void *userdata, sd_bus_error *error);
int method_list_snapshots(sd_bus_message *msg, void *userdata, sd_bus_error *error);
int method_remove_image_ex(sd_bus_message *msg, void *userdata, sd_bus_error *error);

/* ImageBusy if @img has snapshots (naming how many, and how to remove them too) or its snapshots are
 * being changed: what removing it alone must check. */
int bus_check_no_snapshots(Manager *m, const Image *img, sd_bus_error *error);

/* The checks StartMachine's option "snapshot" makes before authorization: a valid name, an image
 * that can have snapshots, none of that name yet, room under SnapshotsPerImage=. */
int bus_check_snapshot_can_be_made(Manager *m, const Image *img, const char *snapshot, sd_bus_error *error);

/* The Image object's property Snapshots (u): how many the image has. */
int image_property_get_snapshots(sd_bus *bus, const char *path, const char *interface, const char *property,
                                 sd_bus_message *reply, void *userdata, sd_bus_error *error);

/* Exclusive bytes of @img's snapshots (0 where quota groups do not tell), for BytesPerUser=. */
uint64_t image_snapshots_exclusive(Manager *m, const Image *img);
