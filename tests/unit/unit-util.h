/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* What the unit tests share: a bus good enough to build messages on, and fd counting. */
#pragma once

#include <dirent.h>
#include <sys/socket.h>

#include <glib.h>
#include <systemd/sd-bus.h>

/* sd-bus makes messages only for an open bus. One end of a socketpair, started as a client that
 * never finishes authenticating, is open enough: messages can be built on it (fds included, since
 * the bus does not yet know the peer cannot take them), sealed and read back, and nothing is ever
 * sent. */
static inline sd_bus *unit_bus_new(void)
{
        sd_bus *bus = NULL;
        int sv[2];

        g_assert_cmpint(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), ==, 0);
        g_assert_cmpint(sd_bus_new(&bus), >=, 0);
        g_assert_cmpint(sd_bus_set_fd(bus, sv[0], sv[0]), >=, 0);
        g_assert_cmpint(sd_bus_start(bus), >=, 0);
        close(sv[1]); /* the peer: never read */
        return bus;
}

static inline sd_bus_message *unit_call_new(sd_bus *bus)
{
        sd_bus_message *m = NULL;

        g_assert_cmpint(sd_bus_message_new_method_call(bus, &m, "io.stamp.Stamp1", "/io/stamp/Stamp1",
                                                       "io.stamp.Stamp1.Manager", "Test"),
                        >=, 0);
        return m;
}

/* Seal a built message and put its read position at the first argument, as a handler sees it. */
static inline void unit_call_seal(sd_bus_message *m)
{
        static uint64_t cookie = 1;

        g_assert_cmpint(sd_bus_message_seal(m, cookie++, 0), >=, 0);
        g_assert_cmpint(sd_bus_message_rewind(m, 1), >=, 0);
}

static inline unsigned unit_count_fds(void)
{
        DIR *d = opendir("/proc/self/fd");
        struct dirent *de;
        unsigned n = 0;

        g_assert_nonnull(d);
        while ((de = readdir(d)))
                if (de->d_name[0] != '.')
                        n++;
        closedir(d);
        return n - 1; /* the directory's own fd */
}
