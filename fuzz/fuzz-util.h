/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* What the fuzz targets share: a checked-invariant macro, a reader of the fuzz input, and a bus to
 * build messages on. */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <systemd/sd-bus.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

/* An invariant: when it does not hold, that is a finding, and the fuzzer must stop on it. */
#define FUZZ_CHECK(cond, ...)                                                                                          \
        do {                                                                                                           \
                if (!(cond)) {                                                                                         \
                        fprintf(stderr, "%s:%d: invariant failed: %s: ", __FILE__, __LINE__, #cond);                   \
                        fprintf(stderr, __VA_ARGS__);                                                                  \
                        fputc('\n', stderr);                                                                           \
                        abort();                                                                                       \
                }                                                                                                      \
        } while (0)

/* The input, consumed from the front; past its end every read yields zeros. */
typedef struct FuzzInput {
        const uint8_t *data;
        size_t size, pos;
} FuzzInput;

static inline uint8_t fuzz_u8(FuzzInput *in)
{
        return in->pos < in->size ? in->data[in->pos++] : 0;
}

static inline uint16_t fuzz_u16(FuzzInput *in)
{
        uint16_t hi = fuzz_u8(in);
        return (uint16_t) (hi << 8 | fuzz_u8(in));
}

static inline bool fuzz_done(const FuzzInput *in)
{
        return in->pos >= in->size;
}

/* Up to @max bytes of the input as a NUL-terminated string (stops early at a NUL); malloc'd. */
static inline char *fuzz_string(FuzzInput *in, size_t max)
{
        size_t n = fuzz_u8(in);
        char *s;

        if (n > max)
                n = max;
        if (n > in->size - in->pos)
                n = in->size - in->pos;
        s = malloc(n + 1);
        if (!s)
                abort();
        memcpy(s, in->data + in->pos, n);
        s[n] = '\0';
        in->pos += n;
        return s;
}

/* One end of a socketpair, started as a client that never finishes authenticating: open enough for
 * sd-bus to build messages on (fds included), and nothing is ever sent. */
static inline sd_bus *fuzz_bus_new(void)
{
        sd_bus *bus = NULL;
        int sv[2];

        if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0 || sd_bus_new(&bus) < 0 ||
            sd_bus_set_fd(bus, sv[0], sv[0]) < 0 || sd_bus_start(bus) < 0)
                abort();
        close(sv[1]);
        return bus;
}
