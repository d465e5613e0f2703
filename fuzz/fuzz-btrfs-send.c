/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* Bytes as a btrfs send stream, read by the reader ImportImage and btrfs_diff() use. Invariants: the
 * reader ends in 0 (after END) or an error with a reason; every command it hands on has the attributes
 * its command needs, and every path in it is one the receiver may resolve beneath its subvolume. */
#include "btrfs-send.h"
#include "fuzz-util.h"

typedef struct Mem {
        const uint8_t *data;
        size_t size, pos;
} Mem;

static ssize_t mem_read(void *userdata, void *buf, size_t n)
{
        Mem *m = userdata;
        size_t left = m->size - m->pos;

        if (n > left)
                n = left;
        /* Short reads too, as from a pipe. */
        if (n > 1 && m->pos % 7 == 3)
                n /= 2;
        memcpy(buf, m->data + m->pos, n);
        m->pos += n;
        return (ssize_t) n;
}

static bool path_ok(const char *p)
{
        return p && btrfs_send_path_is_valid(p) && p[0] != '/' && !strstr(p, "//");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
        BtrfsSendReader *r = NULL;
        Mem m = {data, size, 0};
        BtrfsSendCmd c;
        int k;

        k = btrfs_send_reader_new(mem_read, &m, &r);
        while (k >= 0) {
                k = btrfs_send_reader_next(r, &c);
                if (k <= 0)
                        break;
                FUZZ_CHECK(c.cmd >= 1 && c.cmd <= BTRFS_SEND_C_MAX, "command %u", c.cmd);
                FUZZ_CHECK(c.cmd == BTRFS_SEND_C_END || path_ok(c.path), "command %u without a good path", c.cmd);
                FUZZ_CHECK(!c.path_to || (path_ok(c.path_to) && c.path_to[0]), "bad rename target");
                FUZZ_CHECK(!c.clone_path || path_ok(c.clone_path), "bad clone path");
                FUZZ_CHECK(c.cmd != BTRFS_SEND_C_LINK || (path_ok(c.path_link) && c.path_link[0]), "bad link");
                FUZZ_CHECK(c.cmd != BTRFS_SEND_C_RENAME || c.path_to, "rename without a target");
                FUZZ_CHECK(c.data_len <= BTRFS_SEND_CMD_MAX, "data of %zu bytes", c.data_len);
        }
        FUZZ_CHECK(k == 0 || strcmp(btrfs_send_reader_error(r), "no error") != 0, "a refusal without a reason");
        FUZZ_CHECK(m.pos <= size, "read past the input");
        btrfs_send_reader_free(r);
        return 0;
}
