/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

#include "options.h"

/* The options of CreateTemplate, as bus_read_options() fills them (fuzz/fuzz-options.c reads the
 * same table). */
typedef struct TemplateOptions {
        char *variant;
        char *arch;
        char **include;
        char *mirror;
        int package_tarball;
        char *root_password_hashed;
        int bootable;
        char *from;
        int image_cache;
} TemplateOptions;

extern const OptionSpec template_options[];
