/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

#include "image.h"

/* The Image object's bus face (image-dbus.c): per-image object paths below STAMP_IMAGE_PREFIX. */
extern const sd_bus_vtable image_vtable[];
int image_object_find(sd_bus *bus, const char *path, const char *interface, void *userdata, void **found,
                      sd_bus_error *error);
int image_node_enumerator(sd_bus *bus, const char *path, void *userdata, char ***nodes, sd_bus_error *error);
int image_bus_path(const char *name, char **ret);

/* The image verbs, shared by the Manager's methods (CloneImage, ...) and the Image object's (Clone,
 * ...): <object>_method_<verb>, as machine_method_stop() and job_method_cancel(). */
int image_method_clone(Manager *m, sd_bus_message *msg, const char *source, const char *new_name, const CloneOptions *o,
                       sd_bus_error *error);
int image_method_remove(Manager *m, sd_bus_message *msg, const char *name, sd_bus_error *error);
int image_method_rename(Manager *m, sd_bus_message *msg, const char *name, const char *new_name, sd_bus_error *error);
int image_method_mark_read_only(Manager *m, sd_bus_message *msg, const char *name, int read_only, sd_bus_error *error);

/* Checks every handler makes before authorizing; each fills @error with the named error and returns
 * negative when the check fails. InvalidName with the reason, for an argument called @what: */
int bus_check_image_name(const char *name, const char *what, sd_bus_error *error);
/* NoSuchImage unless @name is an image (then *ret, if given, is it, valid for this dispatch): */
int bus_check_image_exists(Manager *m, const char *name, Image **ret, sd_bus_error *error);
/* QuotaExceeded if @uid (not root) is at ImagesPerUser= or BytesPerUser=, naming the limit and by how
 * much: */
int bus_check_user_limits(Manager *m, uid_t uid, sd_bus_error *error);
/* How many images @uid owns (and has being made), and their exclusive bytes (UINT64_MAX: unknown). */
int image_user_usage(Manager *m, uid_t uid, unsigned *ret_images, uint64_t *ret_bytes);
/* ImageExists if anything is named @name in the store: */
int bus_check_image_absent(Manager *m, const char *name, sd_bus_error *error);
/* ImageBusy while an operation, a job or a machine holds @name: */
int bus_check_image_not_busy(Manager *m, const char *name, sd_bus_error *error);
