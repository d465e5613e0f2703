/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

#include <sys/types.h>

#include "manager.h"

/* The host uid ranges of user-namespaced machines: container uid 0..65535 is host uid
 * base..base+65535, the image's files shown through an idmapped mount so that they stay 0-based on
 * disk. stampd hands out the ranges from a band of its own, high in the range systemd leaves to
 * containers and below systemd's "foreign" range (0x7FFE0000), one 65536-uid slot per machine:
 * never one a running machine of stampd's holds, and never one with a user or group of the host's
 * user database in it. */
#define UID_RANGE_SIZE 0x10000U
#define UID_RANGE_FIRST 0x60000000U
#define UID_RANGE_LAST 0x6FFF0000U /* the base of the last slot */

/* A free base for a new machine; -EBUSY when every slot is taken. */
int uid_range_pick(Manager *m, uid_t *ret);
