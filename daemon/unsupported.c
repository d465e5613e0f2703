/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include "errors.h"
#include "manager-methods.h"

/* Methods of the contract whose capability has not landed yet: a clear refusal, never a silent
 * success. Each moves to its own file when it is built. */

static int not_supported(sd_bus_error *error, const char *what)
{
        return sd_bus_error_setf(error, STAMP_ERROR_NOT_SUPPORTED, "%s is not supported by this version of stampd",
                                 what);
}

int method_create_template(sd_bus_message *msg, void *userdata, sd_bus_error *error)
{
        return not_supported(error, "Creating templates");
}

int method_start_machine(sd_bus_message *msg, void *userdata, sd_bus_error *error)
{
        return not_supported(error, "Starting machines");
}

int method_list_machines(sd_bus_message *msg, void *userdata, sd_bus_error *error)
{
        /* No machine can run in this version: the honest answer is an empty list. */
        _cleanup_bus_message_ sd_bus_message *reply = NULL;
        int k = sd_bus_message_new_method_return(msg, &reply);
        if (k >= 0)
                k = sd_bus_message_append(reply, "a(sssuo)", 0);
        if (k < 0)
                return k;
        return sd_bus_send(NULL, reply, NULL);
}

int method_stop_machine(sd_bus_message *msg, void *userdata, sd_bus_error *error)
{
        return not_supported(error, "Stopping machines");
}

int method_kill_machine(sd_bus_message *msg, void *userdata, sd_bus_error *error)
{
        return not_supported(error, "Killing machines");
}

int method_export_tar(sd_bus_message *msg, void *userdata, sd_bus_error *error)
{
        return not_supported(error, "Exporting images");
}

int method_import_tar(sd_bus_message *msg, void *userdata, sd_bus_error *error)
{
        return not_supported(error, "Importing images");
}

int method_pull_tar(sd_bus_message *msg, void *userdata, sd_bus_error *error)
{
        return not_supported(error, "Pulling images");
}
