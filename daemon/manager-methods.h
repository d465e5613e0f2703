/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* Kept only for daemon/job-*.c until they include the bus-face headers they use; nothing new
 * includes this. */
#include "image-dbus.h"
#include "job-dbus.h"
#include "machine-dbus.h"
#include "manager-dbus.h"
