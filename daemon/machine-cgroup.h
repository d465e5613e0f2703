/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

#include <stdint.h>
#include <stddef.h>

/* A machine's memory and CPU limits where systemd is not PID 1 (machine-cgroup.c): its supervisor
 * makes a cgroup of its own below the daemon's, sets the limits there and moves itself in before it
 * runs nspawn, so that nspawn and everything in the container are counted. cgroup v2 files where
 * /sys/fs/cgroup is the unified hierarchy (memory.max, cpu.weight); the v1 memory and cpu
 * hierarchies otherwise (memory.limit_in_bytes, cpu.shares, converted as systemd does). Where
 * systemd runs, the machine's scope unit carries MemoryMax= and CPUWeight= instead. */

#define MACHINE_MEMORY_MAX_MIN (UINT64_C(4) << 20)
#define MACHINE_CPU_WEIGHT_MIN UINT64_C(1)
#define MACHINE_CPU_WEIGHT_MAX UINT64_C(10000)

/* Make the cgroup @name (one path component) below this process's own, with the limits that are not
 * UINT64_MAX, and move this process into it. Returns 0 or a negative errno with a sentence in @err. */
int machine_cgroup_join(const char *name, uint64_t memory_max, uint64_t cpu_weight, char *err, size_t errlen);
/* Remove what machine_cgroup_join() made for @name, once nothing runs in it: 0, or -EBUSY while
 * something is still there (processes killed by the OOM killer take a moment to leave). */
int machine_cgroup_remove(const char *name);
