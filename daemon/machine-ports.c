/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <errno.h>
#include <fcntl.h>
#include <net/if.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "machine-ports.h"
#include "step.h"
#include "util.h"

static bool parse_port(const char *s, size_t n, uint16_t *ret)
{
        unsigned long v = 0;

        if (n == 0 || n > 5)
                return false;
        for (size_t i = 0; i < n; i++) {
                if (s[i] < '0' || s[i] > '9')
                        return false;
                v = v * 10 + (unsigned long) (s[i] - '0');
        }
        if (v < 1 || v > 65535)
                return false;
        *ret = (uint16_t) v;
        return true;
}

const char *machine_port_parse(const char *s, MachinePort *ret)
{
        MachinePort p = {.protocol = "tcp"};
        const char *rest = s, *colon;

        if (strncmp(s, "tcp:", 4) == 0 || strncmp(s, "udp:", 4) == 0) {
                memcpy(p.protocol, s, 3);
                rest = s + 4;
        } else if (strchr(s, ':') && strspn(s, "0123456789") != (size_t) (strchr(s, ':') - s))
                return "names a protocol other than tcp and udp";
        colon = strchr(rest, ':');
        if (!colon) {
                if (!parse_port(rest, strlen(rest), &p.host))
                        return "is no port number between 1 and 65535";
                p.container = p.host;
        } else if (!parse_port(rest, (size_t) (colon - rest), &p.host) ||
                   !parse_port(colon + 1, strlen(colon + 1), &p.container))
                return "is not [tcp:|udp:]HOST[:CONTAINER] with ports between 1 and 65535";
        *ret = p;
        return NULL;
}

void machine_net_addresses(unsigned index, char ret_host[16], char ret_container[16])
{
        /* 169.254.1.0 up: 169.254.0.0/24 and 169.254.255.0/24 are reserved. */
        unsigned n = 256 + (index % MACHINE_NET_INDEX_MAX) * 4;

        snprintf(ret_host, 16, "169.254.%u.%u", n / 256, n % 256 + 1);
        snprintf(ret_container, 16, "169.254.%u.%u", n / 256, n % 256 + 2);
}

/* Run @argv (ip(8)) in the current network namespace; with @out, its output in there. */
static int run_ip(char *const argv[], char *out, size_t size)
{
        int fds[2] = {-1, -1}, status;
        pid_t pid;

        if (out && pipe2(fds, O_CLOEXEC) < 0)
                return -errno;
        pid = fork();
        if (pid < 0)
                return -errno;
        if (pid == 0) {
                if (out && dup2(fds[1], STDOUT_FILENO) < 0)
                        _exit(127);
                execvp(argv[0], argv);
                log_error("Cannot run %s: %s", argv[0], strerror(errno));
                _exit(127);
        }
        if (out) {
                size_t n = 0;
                ssize_t r;
                close(fds[1]);
                while (n + 1 < size && (r = read(fds[0], out + n, size - 1 - n)) > 0)
                        n += (size_t) r;
                out[n] = '\0';
                close(fds[0]);
        }
        while (waitpid(pid, &status, 0) < 0)
                if (errno != EINTR)
                        return -errno;
        return WIFEXITED(status) && WEXITSTATUS(status) == 0 ? 0 : -EIO;
}

int machine_net_main(int argc, char *argv[])
{
        _cleanup_close_ int host_ns = -1;
        const char *name = NULL, *host = NULL, *container = NULL;
        char out[4096], ifname[IF_NAMESIZE + 1], host_cidr[32], container_cidr[32], *at;
        int netns = -1, k;
        unsigned long peer;

        for (int i = 0; i < argc; i++) {
                if (strncmp(argv[i], "netns=", 6) == 0) {
                        if (step_parse_fd(argv[i] + 6, &netns) < 0)
                                return EXIT_FAILURE;
                } else if (strncmp(argv[i], "name=", 5) == 0)
                        name = argv[i] + 5;
                else if (strncmp(argv[i], "host=", 5) == 0)
                        host = argv[i] + 5;
                else if (strncmp(argv[i], "container=", 10) == 0)
                        container = argv[i] + 10;
        }
        if (netns < 0 || !name || !host || !container)
                return EXIT_FAILURE;
        snprintf(host_cidr, sizeof host_cidr, "%s/30", host);
        snprintf(container_cidr, sizeof container_cidr, "%s/30", container);
        host_ns = open("/proc/self/ns/net", O_RDONLY | O_CLOEXEC);
        if (host_ns < 0)
                return EXIT_FAILURE;

        /* Inside: host0, and its peer's index, which names the host's end. */
        if (setns(netns, CLONE_NEWNET) < 0) {
                log_error("Machine %s: cannot enter its network namespace: %s", name, strerror(errno));
                return EXIT_FAILURE;
        }
        k = run_ip((char *[]) {(char *) "ip", (char *) "-o", (char *) "link", (char *) "show", (char *) "dev",
                               (char *) "host0", NULL},
                   out, sizeof out);
        at = strstr(out, "host0@if");
        if (k < 0 || !at) {
                log_error("Machine %s: no host0 interface inside", name);
                return EXIT_FAILURE;
        }
        peer = strtoul(at + strlen("host0@if"), NULL, 10);
        if ((k = run_ip((char *[]) {(char *) "ip", (char *) "link", (char *) "set", (char *) "lo", (char *) "up", NULL},
                        NULL, 0)) < 0 ||
            (k = run_ip((char *[]) {(char *) "ip", (char *) "addr", (char *) "add", container_cidr, (char *) "dev",
                                    (char *) "host0", NULL},
                        NULL, 0)) < 0 ||
            (k = run_ip(
                     (char *[]) {(char *) "ip", (char *) "link", (char *) "set", (char *) "host0", (char *) "up", NULL},
                     NULL, 0)) < 0 ||
            (k = run_ip((char *[]) {(char *) "ip", (char *) "route", (char *) "add", (char *) "default", (char *) "via",
                                    (char *) host, NULL},
                        NULL, 0)) < 0) {
                log_error("Machine %s: cannot give host0 its address %s", name, container_cidr);
                return EXIT_FAILURE;
        }

        /* Outside: the host's end. */
        if (setns(host_ns, CLONE_NEWNET) < 0 || peer == 0 || !if_indextoname((unsigned) peer, ifname)) {
                log_error("Machine %s: cannot find the host's end of its veth pair", name);
                return EXIT_FAILURE;
        }
        if ((k = run_ip((char *[]) {(char *) "ip", (char *) "addr", (char *) "add", host_cidr, (char *) "dev", ifname,
                                    NULL},
                        NULL, 0)) < 0 ||
            (k = run_ip((char *[]) {(char *) "ip", (char *) "link", (char *) "set", ifname, (char *) "up", NULL}, NULL,
                        0)) < 0) {
                log_error("Machine %s: cannot give %s its address %s", name, ifname, host_cidr);
                return EXIT_FAILURE;
        }
        log_info("Machine %s: %s is %s, its host0 %s.", name, ifname, host, container);
        return EXIT_SUCCESS;
}
