/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

#include "manager.h"

#define POOL_CHECK_INTERVAL_USEC (15 * USEC_PER_SEC)
/* The size a self-made pool starts at (sparse: costs nothing until used). */
#define POOL_INITIAL_SIZE (UINT64_C(2) << 30)
/* Grow when less than this is free in the pool... */
#define POOL_FREE_MIN (UINT64_C(1) << 30)
/* ...and leave at least this free on the file system that holds <store>.raw. */
#define POOL_HOST_RESERVE (UINT64_C(1) << 30)

/* Make the store ready: create it if missing; if it is not on btrfs and is empty, create (or re-mount)
 * <store>.raw as a loop-mounted btrfs with quota groups on. Runs at start, before the bus. */
int pool_setup(Manager *m);

/* Grow <store>.raw and its file system when free space runs low; the work runs in a step of its own
 * (step.h). */
void pool_maybe_grow(Manager *m);

int pool_get_usage(Manager *m, uint64_t *ret_usage, uint64_t *ret_limit);
