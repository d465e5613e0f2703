/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

#include "manager.h"

/* The package cache of template builds (store/cache.h) on the bus: the Manager's CacheUsage property
 * and its CleanCache method. */
int property_get_cache_usage(sd_bus *bus, const char *path, const char *interface, const char *property,
                             sd_bus_message *reply, void *userdata, sd_bus_error *error);
int method_clean_cache(sd_bus_message *msg, void *userdata, sd_bus_error *error);
