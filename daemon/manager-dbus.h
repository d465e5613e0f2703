/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

#include "manager.h"

/* The Manager's bus face (manager-dbus.c). Its methods that act on one kind of object are in that
 * object's *-dbus.c (image-dbus.h, machine-dbus.h) or, for those that start jobs, in one job-*.c file
 * each (job-dbus.h). */
extern const sd_bus_vtable manager_vtable[];
