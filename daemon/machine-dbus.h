/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

#include "machine.h"

/* The Machine object's bus face (machine-dbus.c): per-machine object paths below STAMP_MACHINE_PREFIX,
 * and the Manager's methods on machines. */
int manager_add_machine_objects(Manager *m);

int method_start_machine(sd_bus_message *msg, void *userdata, sd_bus_error *error);
int method_list_machines(sd_bus_message *msg, void *userdata, sd_bus_error *error);
int method_stop_machine(sd_bus_message *msg, void *userdata, sd_bus_error *error);
int method_kill_machine(sd_bus_message *msg, void *userdata, sd_bus_error *error);

/* The running machine @name, or NULL with @error set (InvalidName, NoSuchMachine). */
Machine *bus_find_machine(Manager *m, const char *name, sd_bus_error *error);
/* A caller's stdio fd of option @key: one that can be read (@input) or written; InvalidArgs if not. */
int check_stdio_fd(int fd, const char *key, bool input, sd_bus_error *error);
int method_kill_machine_ex(sd_bus_message *msg, void *userdata, sd_bus_error *error);
