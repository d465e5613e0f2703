/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

#include <stdbool.h>

#define IMAGE_NAME_MAX 64

/* 1 to 64 of [A-Za-z0-9-_.], not starting with '.' or '-' (so never "." or ".."). */
bool image_name_is_valid(const char *name);

/* Why @name is not valid, as a phrase for an error message; NULL if it is valid. */
const char *image_name_invalid_reason(const char *name);
