/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <linux/magic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <unistd.h>

#include "machine-cgroup.h"
#include "util.h"

#define CGROUP_ROOT "/sys/fs/cgroup"

static bool cgroup_unified(void)
{
        struct statfs sf;

        return statfs(CGROUP_ROOT, &sf) == 0 && (uint64_t) sf.f_type == (uint64_t) CGROUP2_SUPER_MAGIC;
}

/* This process's cgroup in the hierarchy of @controller (NULL: the unified one), from
 * /proc/self/cgroup; "/" if it has none there. */
static char *own_cgroup(const char *controller)
{
        _cleanup_fclose_ FILE *f = fopen("/proc/self/cgroup", "re");
        char line[4096];

        if (!f)
                return NULL;
        while (fgets(line, sizeof line, f)) {
                char *controllers = strchr(line, ':'), *path;
                if (!controllers)
                        continue;
                controllers++;
                path = strchr(controllers, ':');
                if (!path)
                        continue;
                *path++ = '\0';
                path[strcspn(path, "\n")] = '\0';
                if (!controller) {
                        if (*controllers == '\0')
                                return strdup(path);
                        continue;
                }
                for (char *c = controllers, *next; c; c = next) {
                        next = strchr(c, ',');
                        if (next)
                                *next++ = '\0';
                        if (streq(c, controller))
                                return strdup(path);
                }
        }
        return strdup("/");
}

/* The directory of cgroup @name in the hierarchy of @controller (NULL: unified), below ours. */
static char *cgroup_dir(const char *controller, const char *name)
{
        _cleanup_free_ char *own = own_cgroup(controller);
        char *dir;

        if (!own)
                return NULL;
        if (asprintf(&dir, CGROUP_ROOT "%s%s%s/%s", controller ? "/" : "", controller ?: "", streq(own, "/") ? "" : own,
                     name) < 0)
                return NULL;
        return dir;
}

static int write_attr(const char *dir, const char *attr, const char *value)
{
        _cleanup_free_ char *path = NULL;
        _cleanup_close_ int fd = -1;

        if (asprintf(&path, "%s/%s", dir, attr) < 0)
                return -ENOMEM;
        fd = open(path, O_WRONLY | O_CLOEXEC | O_NOFOLLOW);
        if (fd < 0)
                return -errno;
        return loop_write(fd, value, strlen(value));
}

/* Make @dir and join it, after @attr is set to @value. */
static int join_dir(const char *dir, const char *attr, const char *value, char *err, size_t errlen)
{
        char pid[32];
        int k;

        if (mkdir(dir, 0755) < 0 && errno != EEXIST)
                return errbuf_set(err, errlen, errno, "Cannot make cgroup %s: %s", dir, strerror(errno));
        k = write_attr(dir, attr, value);
        if (k < 0)
                return errbuf_set(err, errlen, -k, "Cannot set %s of cgroup %s to %s: %s", attr, dir, value,
                                  strerror(-k));
        snprintf(pid, sizeof pid, "%d", (int) getpid());
        k = write_attr(dir, "cgroup.procs", pid);
        if (k < 0)
                return errbuf_set(err, errlen, -k, "Cannot move into cgroup %s: %s", dir, strerror(-k));
        return 0;
}

static int join_unified(const char *name, uint64_t memory_max, uint64_t cpu_weight, char *err, size_t errlen)
{
        _cleanup_free_ char *dir = cgroup_dir(NULL, name), *parent = NULL;
        char value[32], pid[32];
        int k;

        if (!dir || !(parent = strdup(dir)))
                return errbuf_set(err, errlen, ENOMEM, "Out of memory");
        *strrchr(parent, '/') = '\0';
        /* The controllers must reach the new cgroup: enabled in its parent's subtree. */
        if (memory_max != UINT64_MAX && (k = write_attr(parent, "cgroup.subtree_control", "+memory")) < 0)
                return errbuf_set(err, errlen, EOPNOTSUPP, "Cannot enable the memory controller below %s: %s", parent,
                                  strerror(-k));
        if (cpu_weight != UINT64_MAX && (k = write_attr(parent, "cgroup.subtree_control", "+cpu")) < 0)
                return errbuf_set(err, errlen, EOPNOTSUPP, "Cannot enable the cpu controller below %s: %s", parent,
                                  strerror(-k));
        if (mkdir(dir, 0755) < 0 && errno != EEXIST)
                return errbuf_set(err, errlen, errno, "Cannot make cgroup %s: %s", dir, strerror(errno));
        if (memory_max != UINT64_MAX) {
                snprintf(value, sizeof value, "%" PRIu64, memory_max);
                if ((k = write_attr(dir, "memory.max", value)) < 0)
                        return errbuf_set(err, errlen, -k, "Cannot set memory.max of %s: %s", dir, strerror(-k));
        }
        if (cpu_weight != UINT64_MAX) {
                snprintf(value, sizeof value, "%" PRIu64, cpu_weight);
                if ((k = write_attr(dir, "cpu.weight", value)) < 0)
                        return errbuf_set(err, errlen, -k, "Cannot set cpu.weight of %s: %s", dir, strerror(-k));
        }
        snprintf(pid, sizeof pid, "%d", (int) getpid());
        k = write_attr(dir, "cgroup.procs", pid);
        if (k < 0)
                return errbuf_set(err, errlen, -k, "Cannot move into cgroup %s: %s", dir, strerror(-k));
        return 0;
}

int machine_cgroup_join(const char *name, uint64_t memory_max, uint64_t cpu_weight, char *err, size_t errlen)
{
        char value[32];
        int k;

        if (memory_max == UINT64_MAX && cpu_weight == UINT64_MAX)
                return 0;
        if (cgroup_unified())
                return join_unified(name, memory_max, cpu_weight, err, errlen);

        if (memory_max != UINT64_MAX) {
                _cleanup_free_ char *dir = cgroup_dir("memory", name);
                if (!dir)
                        return errbuf_set(err, errlen, ENOMEM, "Out of memory");
                snprintf(value, sizeof value, "%" PRIu64, memory_max);
                k = join_dir(dir, "memory.limit_in_bytes", value, err, errlen);
                if (k < 0)
                        return k;
        }
        if (cpu_weight != UINT64_MAX) {
                _cleanup_free_ char *dir = cgroup_dir("cpu", name);
                /* cgroup v1 shares: 1024 for the default weight of 100, as systemd converts. */
                uint64_t shares = cpu_weight * 1024 / 100;
                if (!dir)
                        return errbuf_set(err, errlen, ENOMEM, "Out of memory");
                snprintf(value, sizeof value, "%" PRIu64, shares < 2 ? 2 : shares);
                k = join_dir(dir, "cpu.shares", value, err, errlen);
                if (k < 0)
                        return k;
        }
        return 0;
}

int machine_cgroup_remove(const char *name)
{
        const char *controllers[] = {"memory", "cpu"};
        int k = 0;

        if (cgroup_unified()) {
                _cleanup_free_ char *dir = cgroup_dir(NULL, name);
                if (dir && rmdir(dir) < 0 && errno != ENOENT)
                        k = -errno;
                return k;
        }
        for (size_t i = 0; i < sizeof controllers / sizeof controllers[0]; i++) {
                _cleanup_free_ char *dir = cgroup_dir(controllers[i], name);
                if (dir && rmdir(dir) < 0 && errno != ENOENT) {
                        log_debug("Cannot remove cgroup %s yet: %s", dir, strerror(errno));
                        k = -errno;
                }
        }
        return k;
}
