/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include "authz.h"
#include "cache.h"
#include "errors.h"
#include "operation.h"
#include "job-dbus.h"
#include "package-cache.h"

int property_get_cache_usage(sd_bus *bus, const char *path, const char *interface, const char *property,
                             sd_bus_message *reply, void *userdata, sd_bus_error *error)
{
        Manager *m = userdata;

        /* As the last build or clean counted it: a small file, not a walk of the cache on the loop. */
        return sd_bus_message_append(reply, "t", store_cache_read_usage(m->store_fd));
}

static int clean_work(Manager *m, void *userdata, char *err, size_t errlen)
{
        uint64_t freed = 0, blobs = 0;
        unsigned busy = 0;
        int k = store_cache_clean(m->store_fd, &freed, &busy);

        if (k < 0) {
                snprintf(err, errlen, "Cannot empty the package cache: %s", strerror(-k));
                return k;
        }
        log_info("Emptied the package cache: %" PRIu64 " bytes freed%s.", freed,
                 busy ? ", what builds running now use kept" : "");
        k = oci_blob_cache_clean(m->store_fd, &blobs, err, errlen);
        if (k < 0)
                return k;
        log_info("Emptied the blob cache of registries: %" PRIu64 " bytes freed.", blobs);
        return 0;
}

int method_clean_cache(sd_bus_message *msg, void *userdata, sd_bus_error *error)
{
        Manager *m = userdata;
        const char *details[] = {"verb", "clean-cache", NULL};
        int k;

        /* No options are defined yet; one that is given is refused rather than ignored. */
        k = sd_bus_message_enter_container(msg, 'a', "{sv}");
        if (k < 0)
                return k;
        if (sd_bus_message_at_end(msg, false) == 0)
                return sd_bus_error_setf(error, SD_BUS_ERROR_INVALID_ARGS, "CleanCache takes no options yet");
        k = sd_bus_message_exit_container(msg);
        if (k < 0)
                return k;

        k = authz_verify(m->authz, msg, STAMP_ACTION_MANAGE_IMAGES, details, error);
        if (k <= 0)
                return k < 0 ? k : 1;
        return operation_start(m, msg, NULL, clean_work, NULL, NULL, NULL, error);
}
