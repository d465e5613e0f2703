/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* Image-name validation (common/names.c): agrees with the rule of SPEC.md written out again here,
 * gives a reason exactly when it refuses, and every name it accepts makes an object path that leads
 * back to it. */
#include <glib.h>

#include "fuzz-util.h"
#include "image-dbus.h"
#include "names.h"
#include "stamp-bus.h"

static bool reference_is_valid(const char *s)
{
        size_t n = strlen(s);

        if (n < 1 || n > 64 || s[0] == '.' || s[0] == '-')
                return false;
        for (size_t i = 0; i < n; i++)
                if (!g_ascii_isalnum(s[i]) && s[i] != '-' && s[i] != '_' && s[i] != '.')
                        return false;
        return true;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
        char *name = malloc(size + 1);
        const char *why;
        bool valid;

        if (!name)
                abort();
        memcpy(name, data, size);
        name[size] = '\0'; /* a NUL inside ends the name early, as on the bus it cannot occur at all */

        valid = image_name_is_valid(name);
        why = image_name_invalid_reason(name);
        FUZZ_CHECK(valid == (why == NULL), "\"%s\": valid=%d, reason=%s", name, valid, why ?: "(none)");
        FUZZ_CHECK(valid == reference_is_valid(name), "\"%s\": names.c says %d, SPEC.md says %d", name, valid,
                   reference_is_valid(name));
        FUZZ_CHECK(!why || why[0], "empty reason for a refusal");

        if (valid) {
                char *path = NULL, *back = NULL;

                FUZZ_CHECK(strcmp(name, ".") && strcmp(name, "..") && !strchr(name, '/'), "\"%s\" accepted", name);
                FUZZ_CHECK(image_bus_path(name, &path) >= 0, "no object path for \"%s\"", name);
                FUZZ_CHECK(sd_bus_object_path_is_valid(path), "invalid object path %s", path);
                FUZZ_CHECK(strncmp(path, STAMP_IMAGE_PREFIX "/", strlen(STAMP_IMAGE_PREFIX) + 1) == 0 &&
                                   !strchr(path + strlen(STAMP_IMAGE_PREFIX) + 1, '/'),
                           "path %s is not one label below the image prefix", path);
                FUZZ_CHECK(sd_bus_path_decode(path, STAMP_IMAGE_PREFIX, &back) > 0 && strcmp(back, name) == 0,
                           "%s decodes to \"%s\", not \"%s\"", path, back ?: "(null)", name);
                free(path);
                free(back);
        }
        free(name);
        return 0;
}
