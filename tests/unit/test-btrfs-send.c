/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* The btrfs send stream reader (store/btrfs-send.c) on streams built here and on hostile, corrupt and
 * truncated ones; then, as root, on real streams the kernel makes on a btrfs made for the test, and
 * btrfs_diff() (store/btrfs-diff.c) on known changes there. */
#include <fcntl.h>
#include <linux/btrfs.h>
#include <sched.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <sys/xattr.h>

#include <btrfsutil.h>
#include <glib.h>

#include "btrfs-diff.h"
#include "btrfs-send.h"
#include "btrfs-stream.h"
#include "util.h"

/* A stream built in memory, command by command. */
typedef struct Builder {
        GByteArray *out;
        GByteArray *cmd;
} Builder;

static void put_le16(GByteArray *b, uint16_t v)
{
        uint8_t x[2] = {v & 0xff, v >> 8};
        g_byte_array_append(b, x, 2);
}

static void put_le32(GByteArray *b, uint32_t v)
{
        put_le16(b, v & 0xffff);
        put_le16(b, v >> 16);
}

static void put_le64(GByteArray *b, uint64_t v)
{
        put_le32(b, (uint32_t) v);
        put_le32(b, (uint32_t) (v >> 32));
}

static Builder *builder_new(uint32_t version)
{
        Builder *b = g_new0(Builder, 1);
        b->out = g_byte_array_new();
        g_byte_array_append(b->out, (const uint8_t *) BTRFS_SEND_STREAM_MAGIC, sizeof BTRFS_SEND_STREAM_MAGIC);
        put_le32(b->out, version);
        return b;
}

static void builder_free(Builder *b)
{
        g_byte_array_unref(b->out);
        if (b->cmd)
                g_byte_array_unref(b->cmd);
        g_free(b);
}

static void cmd_begin(Builder *b, uint16_t cmd)
{
        b->cmd = g_byte_array_new();
        put_le32(b->cmd, 0);
        put_le16(b->cmd, cmd);
        put_le32(b->cmd, 0);
}

static void attr_raw(Builder *b, uint16_t type, const void *v, size_t n)
{
        put_le16(b->cmd, type);
        put_le16(b->cmd, (uint16_t) n);
        g_byte_array_append(b->cmd, v, (guint) n);
}

static void attr_str(Builder *b, uint16_t type, const char *s)
{
        attr_raw(b, type, s, strlen(s));
}

static void attr_u64(Builder *b, uint16_t type, uint64_t v)
{
        GByteArray *t = g_byte_array_new();
        put_le64(t, v);
        attr_raw(b, type, t->data, t->len);
        g_byte_array_unref(t);
}

/* End the command: its length and crc, as the kernel writes them (@bad_crc spoils the crc). */
static void cmd_end_crc(Builder *b, bool bad_crc)
{
        uint8_t *p = b->cmd->data;
        uint32_t len = b->cmd->len - BTRFS_SEND_CMD_HEADER_SIZE, crc;

        p[0] = len & 0xff, p[1] = (len >> 8) & 0xff, p[2] = (len >> 16) & 0xff, p[3] = len >> 24;
        crc = btrfs_send_crc32c(0, p, b->cmd->len) ^ (bad_crc ? 1 : 0);
        p[6] = crc & 0xff, p[7] = (crc >> 8) & 0xff, p[8] = (crc >> 16) & 0xff, p[9] = crc >> 24;
        g_byte_array_append(b->out, p, b->cmd->len);
        g_byte_array_unref(b->cmd);
        b->cmd = NULL;
}

static void cmd_end(Builder *b)
{
        cmd_end_crc(b, false);
}

static void add_subvol(Builder *b)
{
        uint8_t uuid[16] = {1, 2, 3};
        cmd_begin(b, BTRFS_SEND_C_SUBVOL);
        attr_str(b, BTRFS_SEND_A_PATH, "img");
        attr_raw(b, BTRFS_SEND_A_UUID, uuid, 16);
        attr_u64(b, BTRFS_SEND_A_CTRANSID, 7);
        cmd_end(b);
}

static void add_end(Builder *b)
{
        cmd_begin(b, BTRFS_SEND_C_END);
        cmd_end(b);
}

/* A memory source, @chunk bytes per read at most, to exercise short reads. */
typedef struct Mem {
        const uint8_t *data;
        size_t size, pos, chunk;
} Mem;

static ssize_t mem_read(void *userdata, void *buf, size_t n)
{
        Mem *m = userdata;
        size_t left = m->size - m->pos;

        if (n > left)
                n = left;
        if (m->chunk && n > m->chunk)
                n = m->chunk;
        memcpy(buf, m->data + m->pos, n);
        m->pos += n;
        return (ssize_t) n;
}

/* Read the whole stream: the count of commands before END, or the error. */
static int read_all(const uint8_t *data, size_t size, size_t chunk, char **ret_error)
{
        _cleanup_(btrfs_send_reader_freep) BtrfsSendReader *r = NULL;
        Mem m = {data, size, 0, chunk};
        BtrfsSendCmd c;
        int k, n = 0;

        k = btrfs_send_reader_new(mem_read, &m, &r);
        while (k >= 0) {
                k = btrfs_send_reader_next(r, &c);
                if (k <= 0)
                        break;
                n++;
        }
        if (ret_error)
                *ret_error = k < 0 ? g_strdup(btrfs_send_reader_error(r)) : NULL;
        return k < 0 ? k : n;
}

static void test_good_stream(void)
{
        Builder *b = builder_new(1);
        _cleanup_(btrfs_send_reader_freep) BtrfsSendReader *r = NULL;
        BtrfsSendCmd c;
        Mem m;
        uint8_t t[12] = {0x10, 0, 0, 0, 0, 0, 0, 0, 5, 0, 0, 0};

        add_subvol(b);
        cmd_begin(b, BTRFS_SEND_C_MKFILE);
        attr_str(b, BTRFS_SEND_A_PATH, "o257-5-0");
        attr_u64(b, BTRFS_SEND_A_INO, 257);
        cmd_end(b);
        cmd_begin(b, BTRFS_SEND_C_RENAME);
        attr_str(b, BTRFS_SEND_A_PATH, "o257-5-0");
        attr_str(b, BTRFS_SEND_A_PATH_TO, "etc/hostname");
        cmd_end(b);
        cmd_begin(b, BTRFS_SEND_C_WRITE);
        attr_str(b, BTRFS_SEND_A_PATH, "etc/hostname");
        attr_u64(b, BTRFS_SEND_A_FILE_OFFSET, 4096);
        attr_raw(b, BTRFS_SEND_A_DATA, "web\n", 4);
        cmd_end(b);
        cmd_begin(b, BTRFS_SEND_C_SYMLINK);
        attr_str(b, BTRFS_SEND_A_PATH, "lnk");
        attr_str(b, BTRFS_SEND_A_PATH_LINK, "../../../etc/shadow"); /* a target is text */
        cmd_end(b);
        cmd_begin(b, BTRFS_SEND_C_UTIMES);
        attr_str(b, BTRFS_SEND_A_PATH, ""); /* the root */
        attr_raw(b, BTRFS_SEND_A_ATIME, t, 12);
        attr_raw(b, BTRFS_SEND_A_MTIME, t, 12);
        attr_raw(b, BTRFS_SEND_A_CTIME, t, 12);
        cmd_end(b);
        add_end(b);

        m = (Mem) {b->out->data, b->out->len, 0, 0};
        g_assert_cmpint(btrfs_send_reader_new(mem_read, &m, &r), ==, 0);
        g_assert_cmpint(btrfs_send_reader_next(r, &c), ==, 1);
        g_assert_cmpuint(c.cmd, ==, BTRFS_SEND_C_SUBVOL);
        g_assert_cmpstr(c.path, ==, "img");
        g_assert_cmpuint(c.ctransid, ==, 7);
        g_assert_cmpuint(c.uuid[2], ==, 3);
        g_assert_cmpint(btrfs_send_reader_next(r, &c), ==, 1);
        g_assert_cmpuint(c.cmd, ==, BTRFS_SEND_C_MKFILE);
        g_assert_cmpuint(c.ino, ==, 257);
        g_assert_cmpint(btrfs_send_reader_next(r, &c), ==, 1);
        g_assert_cmpstr(c.path, ==, "o257-5-0");
        g_assert_cmpstr(c.path_to, ==, "etc/hostname");
        g_assert_cmpint(btrfs_send_reader_next(r, &c), ==, 1);
        g_assert_cmpuint(c.file_offset, ==, 4096);
        g_assert_cmpuint(c.data_len, ==, 4);
        g_assert_cmpmem(c.data, 4, "web\n", 4);
        g_assert_cmpint(btrfs_send_reader_next(r, &c), ==, 1);
        g_assert_cmpstr(c.path_link, ==, "../../../etc/shadow");
        g_assert_cmpint(btrfs_send_reader_next(r, &c), ==, 1);
        g_assert_cmpstr(c.path, ==, "");
        g_assert_cmpint(c.mtime.tv_sec, ==, 16);
        g_assert_cmpint(c.mtime.tv_nsec, ==, 5);
        g_assert_cmpint(btrfs_send_reader_next(r, &c), ==, 0);
        g_assert_cmpint(btrfs_send_reader_next(r, &c), ==, 0);
        g_assert_cmpuint(btrfs_send_reader_offset(r), ==, b->out->len);

        /* The same in reads of one byte. */
        g_assert_cmpint(read_all(b->out->data, b->out->len, 1, NULL), ==, 6);

        /* Every cut short of the end is refused, never taken for a whole stream. */
        for (size_t n = 0; n < b->out->len; n++) {
                g_autofree char *why = NULL;
                g_assert_cmpint(read_all(b->out->data, n, 0, &why), ==, -EBADMSG);
                g_assert_nonnull(why);
        }
        builder_free(b);
}

/* One command between a good SUBVOL and END: the stream's verdict. */
typedef void (*build_fn)(Builder *b);

static int verdict(build_fn f, char **ret_error)
{
        Builder *b = builder_new(1);
        int k;

        add_subvol(b);
        f(b);
        add_end(b);
        k = read_all(b->out->data, b->out->len, 0, ret_error);
        builder_free(b);
        return k;
}

static void bad_path(Builder *b, const char *p)
{
        cmd_begin(b, BTRFS_SEND_C_UNLINK);
        attr_str(b, BTRFS_SEND_A_PATH, p);
        cmd_end(b);
}
static void b_abs(Builder *b)
{
        bad_path(b, "/etc/passwd");
}
static void b_dotdot(Builder *b)
{
        bad_path(b, "a/../../x");
}
static void b_dot(Builder *b)
{
        bad_path(b, "a/./x");
}
static void b_double_slash(Builder *b)
{
        bad_path(b, "a//x");
}
static void b_trailing_slash(Builder *b)
{
        bad_path(b, "a/");
}
static void b_root(Builder *b)
{
        bad_path(b, "");
}
static void b_nul(Builder *b)
{
        cmd_begin(b, BTRFS_SEND_C_UNLINK);
        attr_raw(b, BTRFS_SEND_A_PATH, "a\0b", 3);
        cmd_end(b);
}
static void b_rename_out(Builder *b)
{
        cmd_begin(b, BTRFS_SEND_C_RENAME);
        attr_str(b, BTRFS_SEND_A_PATH, "a");
        attr_str(b, BTRFS_SEND_A_PATH_TO, "../a");
        cmd_end(b);
}
static void b_link_out(Builder *b)
{
        cmd_begin(b, BTRFS_SEND_C_LINK);
        attr_str(b, BTRFS_SEND_A_PATH, "a");
        attr_str(b, BTRFS_SEND_A_PATH_LINK, "/etc/shadow");
        cmd_end(b);
}
static void b_clone_out(Builder *b)
{
        uint8_t uuid[16] = {};
        cmd_begin(b, BTRFS_SEND_C_CLONE);
        attr_str(b, BTRFS_SEND_A_PATH, "a");
        attr_u64(b, BTRFS_SEND_A_FILE_OFFSET, 0);
        attr_u64(b, BTRFS_SEND_A_CLONE_LEN, 4096);
        attr_raw(b, BTRFS_SEND_A_CLONE_UUID, uuid, 16);
        attr_u64(b, BTRFS_SEND_A_CLONE_CTRANSID, 1);
        attr_str(b, BTRFS_SEND_A_CLONE_PATH, "../../etc/shadow");
        attr_u64(b, BTRFS_SEND_A_CLONE_OFFSET, 0);
        cmd_end(b);
}
static void b_bad_crc(Builder *b)
{
        cmd_begin(b, BTRFS_SEND_C_UNLINK);
        attr_str(b, BTRFS_SEND_A_PATH, "a");
        cmd_end_crc(b, true);
}
static void b_unknown_cmd(Builder *b)
{
        cmd_begin(b, 99);
        cmd_end(b);
}
static void b_unknown_attr(Builder *b)
{
        cmd_begin(b, BTRFS_SEND_C_UNLINK);
        attr_str(b, BTRFS_SEND_A_PATH, "a");
        attr_u64(b, 77, 1);
        cmd_end(b);
}
static void b_twice(Builder *b)
{
        cmd_begin(b, BTRFS_SEND_C_UNLINK);
        attr_str(b, BTRFS_SEND_A_PATH, "a");
        attr_str(b, BTRFS_SEND_A_PATH, "b");
        cmd_end(b);
}
static void b_missing(Builder *b)
{
        cmd_begin(b, BTRFS_SEND_C_RENAME);
        attr_str(b, BTRFS_SEND_A_PATH, "a");
        cmd_end(b);
}
static void b_short_number(Builder *b)
{
        cmd_begin(b, BTRFS_SEND_C_TRUNCATE);
        attr_str(b, BTRFS_SEND_A_PATH, "a");
        attr_raw(b, BTRFS_SEND_A_SIZE, "\1\2\3", 3);
        cmd_end(b);
}
static void b_attr_past_end(Builder *b)
{
        cmd_begin(b, BTRFS_SEND_C_UNLINK);
        put_le16(b->cmd, BTRFS_SEND_A_PATH);
        put_le16(b->cmd, 200);
        g_byte_array_append(b->cmd, (const uint8_t *) "abc", 3);
        cmd_end(b);
}
static void b_bad_time(Builder *b)
{
        uint8_t t[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff};
        cmd_begin(b, BTRFS_SEND_C_UTIMES);
        attr_str(b, BTRFS_SEND_A_PATH, "a");
        attr_raw(b, BTRFS_SEND_A_ATIME, t, 12);
        attr_raw(b, BTRFS_SEND_A_MTIME, t, 12);
        attr_raw(b, BTRFS_SEND_A_CTIME, t, 12);
        cmd_end(b);
}
static void b_nested_subvol(Builder *b)
{
        uint8_t uuid[16] = {};
        cmd_begin(b, BTRFS_SEND_C_SUBVOL);
        attr_str(b, BTRFS_SEND_A_PATH, "a/b");
        attr_raw(b, BTRFS_SEND_A_UUID, uuid, 16);
        attr_u64(b, BTRFS_SEND_A_CTRANSID, 7);
        cmd_end(b);
}
static void b_huge_length(Builder *b)
{
        /* A header that claims 16 MiB: refused before anything is allocated for it. */
        uint8_t h[10] = {0, 0, 0, 1, BTRFS_SEND_C_WRITE, 0, 0, 0, 0, 0};
        g_byte_array_append(b->out, h, sizeof h);
}

static void test_hostile_commands(void)
{
        static const struct {
                const char *what;
                build_fn f;
        } cases[] = {
                {"absolute path", b_abs},
                {"dot-dot", b_dotdot},
                {"dot", b_dot},
                {"double slash", b_double_slash},
                {"trailing slash", b_trailing_slash},
                {"unlink of the root", b_root},
                {"NUL in a path", b_nul},
                {"rename out", b_rename_out},
                {"hard link to an absolute path", b_link_out},
                {"clone from outside", b_clone_out},
                {"bad crc", b_bad_crc},
                {"unknown command", b_unknown_cmd},
                {"unknown attribute", b_unknown_attr},
                {"attribute twice", b_twice},
                {"missing attribute", b_missing},
                {"short number", b_short_number},
                {"attribute past the end", b_attr_past_end},
                {"nanoseconds out of range", b_bad_time},
                {"nested subvolume", b_nested_subvol},
                {"huge length", b_huge_length},
        };

        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                g_autofree char *why = NULL;
                g_test_message("case: %s", cases[i].what);
                g_assert_cmpint(verdict(cases[i].f, &why), ==, -EBADMSG);
                g_assert_nonnull(why);
                g_test_message("  refused: %s", why);
        }
}

static void test_bad_headers(void)
{
        Builder *b = builder_new(2);
        g_autofree char *why = NULL;
        static const char tar[] = "etc/\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0";

        add_end(b);
        g_assert_cmpint(read_all(b->out->data, b->out->len, 0, &why), ==, -EBADMSG);
        g_assert_nonnull(strstr(why, "version 2"));
        builder_free(b);
        g_clear_pointer(&why, g_free);

        g_assert_cmpint(read_all((const uint8_t *) tar, sizeof tar, 0, &why), ==, -EBADMSG);
        g_assert_cmpstr(why, ==, "not a btrfs send stream");
        g_clear_pointer(&why, g_free);
        g_assert_cmpint(read_all((const uint8_t *) "", 0, 0, &why), ==, -EBADMSG);
}

static void test_paths(void)
{
        g_autofree char *long_name = g_strnfill(256, 'a');
        g_autofree char *long_path = g_strnfill(PATH_MAX, 'a');

        g_assert_true(btrfs_send_path_is_valid(""));
        g_assert_true(btrfs_send_path_is_valid("a"));
        g_assert_true(btrfs_send_path_is_valid("a/b/..c/.d"));
        g_assert_false(btrfs_send_path_is_valid("/"));
        g_assert_false(btrfs_send_path_is_valid(".."));
        g_assert_false(btrfs_send_path_is_valid("a/.."));
        g_assert_false(btrfs_send_path_is_valid("./a"));
        g_assert_false(btrfs_send_path_is_valid(long_name));
        g_assert_false(btrfs_send_path_is_valid(long_path));
}

/* The stream's CRC-32C: the standard check value, and a bit at a time for every length and
 * alignment up to a few words (whichever way btrfs_send_crc32c() computes it here). */
static uint32_t crc32c_bitwise(uint32_t crc, const uint8_t *p, size_t n)
{
        while (n-- > 0) {
                crc ^= *p++;
                for (int k = 0; k < 8; k++)
                        crc = crc & 1 ? (crc >> 1) ^ 0x82F63B78u : crc >> 1;
        }
        return crc;
}

static void test_crc32c(void)
{
        uint8_t buf[80];

        g_assert_cmphex(~btrfs_send_crc32c(~0u, "123456789", 9), ==, 0xE3069283u);
        for (size_t i = 0; i < sizeof buf; i++)
                buf[i] = (uint8_t) (i * 37 + 11);
        for (size_t off = 0; off < 8; off++)
                for (size_t n = 0; off + n <= sizeof buf; n++) {
                        g_assert_cmphex(btrfs_send_crc32c(0x1234u, buf + off, n), ==,
                                        crc32c_bitwise(0x1234u, buf + off, n));
                        g_assert_cmphex(btrfs_send_crc32c_portable(0x1234u, buf + off, n), ==,
                                        crc32c_bitwise(0x1234u, buf + off, n));
                }
}

/* stamp's own header before the btrfs stream (transfer/btrfs-stream.h). */
static void test_stamp_header(void)
{
        StampStreamHeader h = {.read_only = true, .delta = true}, got;
        char buf[STAMP_STREAM_HEADER_MAX], err[256];
        int n;

        strcpy(h.name, "web");
        strcpy(h.parent, "base");
        for (int i = 0; i < 16; i++)
                h.parent_uuid[i] = (uint8_t) (i * 17);
        n = stamp_stream_header_format(&h, buf, sizeof buf);
        g_assert_cmpint(n, >, 0);
        g_assert_true(stamp_stream_is_btrfs(buf, (size_t) n));
        g_assert_cmpstr(buf, ==,
                        "stamp-btrfs-stream 1\nname=web\nread-only=yes\nparent=base\n"
                        "parent-uuid=00112233445566778899aabbccddeeff\n\n");
        /* Whole, with the btrfs stream after it: its length; cut anywhere: not yet. */
        memcpy(buf + n, "btrfs-stream", 12);
        g_assert_cmpint(stamp_stream_header_parse(buf, (size_t) n + 12, &got, err, sizeof err), ==, n);
        g_assert_cmpstr(got.name, ==, "web");
        g_assert_cmpstr(got.parent, ==, "base");
        g_assert_true(got.delta && got.read_only);
        g_assert_cmpmem(got.parent_uuid, 16, h.parent_uuid, 16);
        g_assert_cmpuint(got.parent_transid, ==, 0);
        for (int cut = 0; cut < n; cut++)
                g_assert_cmpint(stamp_stream_header_parse(buf, (size_t) cut, &got, err, sizeof err), <=, 0);
        /* The state of the parent, when known, goes along. */
        h.parent_transid = 4242;
        n = stamp_stream_header_format(&h, buf, sizeof buf);
        g_assert_cmpstr(buf, ==,
                        "stamp-btrfs-stream 1\nname=web\nread-only=yes\nparent=base\n"
                        "parent-uuid=00112233445566778899aabbccddeeff\nparent-transid=4242\n\n");
        g_assert_cmpint(stamp_stream_header_parse(buf, (size_t) n, &got, err, sizeof err), ==, n);
        g_assert_cmpuint(got.parent_transid, ==, 4242);

        static const char *const bad[] = {
                "stamp-btrfs-stream 2\nname=a\nread-only=no\n\n",
                "stamp-btrfs-stream 1\nname=../etc\nread-only=no\n\n",
                "stamp-btrfs-stream 1\nname=a\nread-only=maybe\n\n",
                "stamp-btrfs-stream 1\nread-only=no\n\n",
                "stamp-btrfs-stream 1\nname=a\nread-only=no\nparent=b\n\n",
                "stamp-btrfs-stream 1\nname=a\nread-only=no\nparent=/b\nparent-uuid="
                "00112233445566778899aabbccddeeff\n\n",
                "stamp-btrfs-stream 1\nname=a\nread-only=no\nparent=b\nparent-uuid=xyz\n\n",
                "stamp-btrfs-stream 1\nname=a\nno equals sign\n\n",
                "stamp-btrfs-stream 1\nname=a\nread-only=no\nparent=b\nparent-uuid="
                "00112233445566778899aabbccddeeff\nparent-transid=12x\n\n",
                "stamp-btrfs-stream 1\nname=a\nread-only=no\nparent=b\nparent-uuid="
                "00112233445566778899aabbccddeeff\nparent-transid=-1\n\n",
                "btrfs-stream",
        };
        for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
                g_test_message("bad header %zu", i);
                g_assert_cmpint(stamp_stream_header_parse(bad[i], strlen(bad[i]) + 1, &got, err, sizeof err), ==,
                                -EBADMSG);
        }
        /* Unknown keys are for later versions: skipped. */
        static const char later[] = "stamp-btrfs-stream 1\nname=a\ncolour=blue\nread-only=no\n\n";
        g_assert_cmpint(stamp_stream_header_parse(later, sizeof later - 1, &got, err, sizeof err), ==,
                        (int) sizeof later - 1);
        /* No end within the limit. */
        memset(buf, 'x', sizeof buf);
        memcpy(buf, "stamp-btrfs-stream 1\n", 21);
        g_assert_cmpint(stamp_stream_header_parse(buf, sizeof buf, &got, err, sizeof err), ==, -EBADMSG);
}

/* --- real streams, as root, on a btrfs made here in a mount namespace of the test's own --- */

static char *scratch;

static bool real_btrfs_setup(void)
{
        g_autofree char *img = NULL, *mnt = NULL, *cmd = NULL;

        if (geteuid() != 0)
                return false;
        if (unshare(CLONE_NEWNS) < 0 || mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0)
                return false;
        scratch = g_dir_make_tmp("stamp-btrfs-send-XXXXXX", NULL);
        g_assert_nonnull(scratch);
        img = g_build_filename(scratch, "fs.img", NULL);
        mnt = g_build_filename(scratch, "mnt", NULL);
        g_assert_cmpint(g_mkdir_with_parents(mnt, 0755), ==, 0);
        /* The file goes at once (the loop device holds it), so that a test that aborts leaves only an
         * empty directory; the mount goes with this process's namespace. */
        cmd = g_strdup_printf("truncate -s 256M '%s' && mkfs.btrfs -q '%s' >/dev/null 2>&1 && "
                              "mount -o loop '%s' '%s' && rm '%s'",
                              img, img, img, mnt, img);
        if (system(cmd) != 0) {
                g_autofree char *rm = g_strdup_printf("rm -rf '%s'", scratch);
                best_effort(system(rm));
                g_clear_pointer(&scratch, g_free);
                return false;
        }
        return true;
}

static void real_btrfs_teardown(void)
{
        g_autofree char *cmd = NULL;

        if (!scratch)
                return;
        cmd = g_strdup_printf("umount '%s/mnt'; rm -rf '%s'", scratch, scratch);
        best_effort(system(cmd));
}

static int sh(const char *fmt, ...) G_GNUC_PRINTF(1, 2);
static int sh(const char *fmt, ...)
{
        g_autofree char *body = NULL, *cmd = NULL;
        va_list ap;

        va_start(ap, fmt);
        body = g_strdup_vprintf(fmt, ap);
        va_end(ap);
        cmd = g_strdup_printf("set -e; cd '%s/mnt'; %s", scratch, body);
        return system(cmd);
}

static int open_sub(const char *name)
{
        g_autofree char *p = g_strdup_printf("%s/mnt/%s", scratch, name);
        int fd = open(p, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        g_assert_cmpint(fd, >=, 0);
        return fd;
}

static void collect(GString *out, char change, const char *path)
{
        g_string_append_printf(out, "%c %s\n", change, path);
}

static int collect_cb(char change, const char *path, void *userdata)
{
        collect(userdata, change, path);
        return 0;
}

static void test_real_diff(void)
{
        _cleanup_close_ int base = -1, image = -1, rw = -1;
        g_autoptr(GString) out = g_string_new(NULL);

        if (!scratch) {
                g_test_skip("needs root and a btrfs made on a loop device");
                return;
        }
        g_assert_cmpint(sh("btrfs -q subvolume create base && cd base && "
                           "mkdir -p etc usr/bin var/lib/old d1/sub && echo a > etc/hostname && echo x > keep && "
                           "echo y > gone && echo z > moved && seq 1 100000 > usr/bin/big && echo l > d1/sub/f && "
                           "ln -s keep link && echo t > typechange && mkfifo fifo && echo q > var/lib/old/q && "
                           "echo m > modeonly && echo o > owneronly && echo h > hard1 && ln hard1 hard2"),
                        ==, 0);
        g_assert_cmpint(sh("btrfs -q subvolume snapshot -r base base-ro && btrfs -q subvolume snapshot base-ro clone"),
                        ==, 0);
        g_assert_cmpint(sh("cd clone && echo b > etc/hostname && rm gone && mv moved moved2 && "
                           "echo new > etc/new && mkdir newdir && echo n > newdir/inner && "
                           "printf 'x' | dd of=usr/bin/big bs=1 seek=5000 conv=notrunc status=none && "
                           "mv d1 d2 && rm typechange && ln -s keep typechange && rm fifo && "
                           "rm -r var/lib/old && chmod 600 modeonly && chown 1:1 owneronly && "
                           "setfattr -n user.test -v 1 keep && touch -d 2001-01-01 link && rm hard2"),
                        ==, 0);
        g_assert_cmpint(sh("btrfs -q subvolume snapshot -r clone clone-ro"), ==, 0);

        base = open_sub("base-ro");
        image = open_sub("clone-ro");
        rw = open_sub("clone");
        g_assert_cmpint(btrfs_diff(base, image, collect_cb, out), ==, 0);
        g_test_message("diff:\n%s", out->str);
        /* keep: an xattr change (its times alone would not count). */
        g_assert_cmpstr(out->str, ==,
                        "D d1\n"
                        "D d1/sub\n"
                        "D d1/sub/f\n"
                        "A d2\n"
                        "A d2/sub\n"
                        "A d2/sub/f\n"
                        "M etc/hostname\n"
                        "A etc/new\n"
                        "D fifo\n"
                        "D gone\n"
                        "D hard2\n"
                        "M keep\n"
                        "M modeonly\n"
                        "D moved\n"
                        "A moved2\n"
                        "A newdir\n"
                        "A newdir/inner\n"
                        "M owneronly\n"
                        "T typechange\n"
                        "M usr/bin/big\n"
                        "D var/lib/old\n"
                        "D var/lib/old/q\n");
        g_string_truncate(out, 0);

        /* Nothing changed: nothing said. */
        g_assert_cmpint(btrfs_diff(base, base, collect_cb, out), ==, 0);
        g_assert_cmpstr(out->str, ==, "");
        /* A writable image is refused: its contents could change under the send. */
        g_assert_cmpint(btrfs_diff(base, rw, collect_cb, out), ==, -EINVAL);
}

/* A full send with data: every command of a real stream passes the reader, and every cut is caught. */
static void test_real_stream(void)
{
        _cleanup_close_ int image = -1, memfd = -1;
        g_autofree uint8_t *data = NULL;
        struct btrfs_ioctl_send_args args = {};
        struct stat st;
        uint64_t written = 0;
        int n = 0;

        if (!scratch) {
                g_test_skip("needs root and a btrfs made on a loop device");
                return;
        }
        g_assert_cmpint(sh("btrfs -q subvolume create full && cd full && seq 1 200000 > data && mkdir d && "
                           "ln -s data d/link && mknod d/null c 1 3 && echo x > d/x && ln d/x d/x2 && "
                           "cd .. && btrfs -q subvolume snapshot -r full full-ro"),
                        ==, 0);
        image = open_sub("full-ro");
        memfd = memfd_create("stream", MFD_CLOEXEC);
        g_assert_cmpint(memfd, >=, 0);
        args.send_fd = memfd;
        g_assert_cmpint(ioctl(image, BTRFS_IOC_SEND, &args), ==, 0);
        g_assert_cmpint(fstat(memfd, &st), ==, 0);
        data = g_malloc(st.st_size);
        g_assert_cmpint(pread(memfd, data, st.st_size, 0), ==, st.st_size);

        {
                _cleanup_(btrfs_send_reader_freep) BtrfsSendReader *r = NULL;
                Mem m = {data, st.st_size, 0, 4093};
                BtrfsSendCmd c;
                int k;

                g_assert_cmpint(btrfs_send_reader_new(mem_read, &m, &r), ==, 0);
                while ((k = btrfs_send_reader_next(r, &c)) > 0) {
                        n++;
                        if (c.cmd == BTRFS_SEND_C_WRITE)
                                written += c.data_len;
                        if (c.cmd == BTRFS_SEND_C_MKNOD)
                                g_assert_cmpuint(c.rdev, ==, makedev(1, 3));
                }
                g_assert_cmpint(k, ==, 0);
                g_assert_cmpuint(btrfs_send_reader_offset(r), ==, st.st_size);
        }
        g_assert_cmpint(n, >, 10);
        g_assert_cmpuint(written, ==, 1288895 + 2); /* seq 1 200000, and "x\n" */

        /* Cut anywhere before its end, it is refused; one flipped bit anywhere after the header, too. */
        for (off_t cut = 0; cut < st.st_size; cut += st.st_size / 97 + 1)
                g_assert_cmpint(read_all(data, cut, 0, NULL), ==, -EBADMSG);
        for (off_t at = BTRFS_SEND_STREAM_HEADER_SIZE; at < st.st_size; at += st.st_size / 89 + 1) {
                data[at] ^= 0x10;
                g_assert_cmpint(read_all(data, st.st_size, 0, NULL), <, 0);
                data[at] ^= 0x10;
        }
        g_assert_cmpint(read_all(data, st.st_size, 0, NULL), ==, n);
}

int main(int argc, char *argv[])
{
        int r;

        g_test_init(&argc, &argv, NULL);
        g_test_add_func("/btrfs-send/good-stream", test_good_stream);
        g_test_add_func("/btrfs-send/hostile-commands", test_hostile_commands);
        g_test_add_func("/btrfs-send/bad-headers", test_bad_headers);
        g_test_add_func("/btrfs-send/paths", test_paths);
        g_test_add_func("/btrfs-send/stamp-header", test_stamp_header);
        g_test_add_func("/btrfs-send/crc32c", test_crc32c);
        g_test_add_func("/btrfs-send/real-stream", test_real_stream);
        g_test_add_func("/btrfs-diff/real", test_real_diff);
        (void) real_btrfs_setup();
        r = g_test_run();
        real_btrfs_teardown();
        return r;
}
