/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

/* Published ports of a machine (machine-ports.c): StartMachine's option "ports", as systemd-nspawn's
 * --port. nspawn publishes them once the container has an address: it runs with --network-veth, and
 * since no network manager may run on either side here, stampd gives both ends of the veth pair
 * addresses of a /30 of their own from 169.254.0.0/16 (a step, machine-net, once the container's
 * leader is known). nspawn then adds DNAT rules for the host's local addresses but loopback. */

#define MACHINE_PORTS_MAX 32

typedef struct MachinePort {
        char protocol[4]; /* "tcp" or "udp" */
        uint16_t host;
        uint16_t container;
} MachinePort;

/* Parse "tcp:8080:80", "udp:53:53", "8080:80" (tcp) or "80" (the same on both sides) into @ret;
 * NULL if valid, else a phrase saying why not. */
const char *machine_port_parse(const char *s, MachinePort *ret);

/* The link-local /30 with index @index: host side *.1 (ret_host), container side *.2. */
void machine_net_addresses(unsigned index, char ret_host[16], char ret_container[16]);
#define MACHINE_NET_INDEX_MAX 16000

/* The step: give the veth pair of the container whose network namespace is the fd @argv names its
 * addresses. */
int machine_net_main(int argc, char *argv[]);
