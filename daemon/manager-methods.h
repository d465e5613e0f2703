/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

#include "manager.h"

/* Manager methods implemented by each capability in its own file (template.c, tar-*.c, pull.c,
 * machine-dbus.c). */
int method_create_template(sd_bus_message *msg, void *userdata, sd_bus_error *error);
int method_start_machine(sd_bus_message *msg, void *userdata, sd_bus_error *error);
int method_list_machines(sd_bus_message *msg, void *userdata, sd_bus_error *error);
int method_stop_machine(sd_bus_message *msg, void *userdata, sd_bus_error *error);
int method_kill_machine(sd_bus_message *msg, void *userdata, sd_bus_error *error);
int method_export_tar(sd_bus_message *msg, void *userdata, sd_bus_error *error);
int method_import_tar(sd_bus_message *msg, void *userdata, sd_bus_error *error);
int method_pull_tar(sd_bus_message *msg, void *userdata, sd_bus_error *error);
