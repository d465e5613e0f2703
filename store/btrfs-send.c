/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "btrfs-send.h"
#include "util.h"

struct BtrfsSendReader {
        btrfs_send_read_fn read_fn;
        void *userdata;
        uint64_t offset;
        bool ended;
        uint8_t buf[BTRFS_SEND_CMD_MAX];
        char strbuf[BTRFS_SEND_CMD_MAX + 32];
        char error[256];
};

/* CRC-32C as the send stream uses it: reflected, seed as given, no final inversion. Every byte of a
 * received stream goes through it, so it is the receiver's main cost after the writes: eight bytes
 * a step, with the CPU's crc32 instruction where there is one, else with eight tables. */
static uint32_t crc32c_table[8][256];

static void crc32c_init(void)
{
        for (uint32_t i = 0; i < 256; i++) {
                uint32_t c = i;
                for (int k = 0; k < 8; k++)
                        c = c & 1 ? (c >> 1) ^ 0x82F63B78u : c >> 1;
                crc32c_table[0][i] = c;
        }
        for (uint32_t i = 0; i < 256; i++)
                for (int t = 1; t < 8; t++)
                        crc32c_table[t][i] =
                                crc32c_table[0][crc32c_table[t - 1][i] & 0xff] ^ (crc32c_table[t - 1][i] >> 8);
}

static uint32_t crc32c_tables(uint32_t crc, const uint8_t *p, size_t n)
{
        static pthread_once_t once = PTHREAD_ONCE_INIT;

        (void) pthread_once(&once, crc32c_init);
        for (; n >= 8; n -= 8, p += 8) {
                uint32_t lo =
                        crc ^ ((uint32_t) p[0] | (uint32_t) p[1] << 8 | (uint32_t) p[2] << 16 | (uint32_t) p[3] << 24);
                uint32_t hi = (uint32_t) p[4] | (uint32_t) p[5] << 8 | (uint32_t) p[6] << 16 | (uint32_t) p[7] << 24;
                crc = crc32c_table[7][lo & 0xff] ^ crc32c_table[6][(lo >> 8) & 0xff] ^
                      crc32c_table[5][(lo >> 16) & 0xff] ^ crc32c_table[4][lo >> 24] ^ crc32c_table[3][hi & 0xff] ^
                      crc32c_table[2][(hi >> 8) & 0xff] ^ crc32c_table[1][(hi >> 16) & 0xff] ^
                      crc32c_table[0][hi >> 24];
        }
        while (n-- > 0)
                crc = crc32c_table[0][(crc ^ *p++) & 0xff] ^ (crc >> 8);
        return crc;
}

uint32_t btrfs_send_crc32c_portable(uint32_t crc, const void *data, size_t n)
{
        return crc32c_tables(crc, data, n);
}

#if defined(__x86_64__)
__attribute__((target("sse4.2"))) static uint32_t crc32c_sse42(uint32_t crc, const uint8_t *p, size_t n)
{
        uint64_t c = crc;

        for (; n >= 8; n -= 8, p += 8) {
                uint64_t v;
                memcpy(&v, p, 8);
                c = __builtin_ia32_crc32di(c, v);
        }
        crc = (uint32_t) c;
        while (n-- > 0)
                crc = __builtin_ia32_crc32qi(crc, *p++);
        return crc;
}
#endif

static bool crc32c_hw;

static void crc32c_setup(void)
{
#if defined(__x86_64__)
        crc32c_hw = __builtin_cpu_supports("sse4.2");
#endif
}

uint32_t btrfs_send_crc32c(uint32_t crc, const void *data, size_t n)
{
        static pthread_once_t once = PTHREAD_ONCE_INIT;

        (void) pthread_once(&once, crc32c_setup);
#if defined(__x86_64__)
        if (crc32c_hw)
                return crc32c_sse42(crc, data, n);
#endif
        return crc32c_tables(crc, data, n);
}

static uint16_t get_le16(const uint8_t *p)
{
        return (uint16_t) (p[0] | p[1] << 8);
}

static uint32_t get_le32(const uint8_t *p)
{
        return (uint32_t) p[0] | (uint32_t) p[1] << 8 | (uint32_t) p[2] << 16 | (uint32_t) p[3] << 24;
}

static uint64_t get_le64(const uint8_t *p)
{
        return (uint64_t) get_le32(p) | (uint64_t) get_le32(p + 4) << 32;
}

static const char *const cmd_names[] = {
        [BTRFS_SEND_C_SUBVOL] = "subvol",
        [BTRFS_SEND_C_SNAPSHOT] = "snapshot",
        [BTRFS_SEND_C_MKFILE] = "mkfile",
        [BTRFS_SEND_C_MKDIR] = "mkdir",
        [BTRFS_SEND_C_MKNOD] = "mknod",
        [BTRFS_SEND_C_MKFIFO] = "mkfifo",
        [BTRFS_SEND_C_MKSOCK] = "mksock",
        [BTRFS_SEND_C_SYMLINK] = "symlink",
        [BTRFS_SEND_C_RENAME] = "rename",
        [BTRFS_SEND_C_LINK] = "link",
        [BTRFS_SEND_C_UNLINK] = "unlink",
        [BTRFS_SEND_C_RMDIR] = "rmdir",
        [BTRFS_SEND_C_SET_XATTR] = "set_xattr",
        [BTRFS_SEND_C_REMOVE_XATTR] = "remove_xattr",
        [BTRFS_SEND_C_WRITE] = "write",
        [BTRFS_SEND_C_CLONE] = "clone",
        [BTRFS_SEND_C_TRUNCATE] = "truncate",
        [BTRFS_SEND_C_CHMOD] = "chmod",
        [BTRFS_SEND_C_CHOWN] = "chown",
        [BTRFS_SEND_C_UTIMES] = "utimes",
        [BTRFS_SEND_C_END] = "end",
        [BTRFS_SEND_C_UPDATE_EXTENT] = "update_extent",
};

const char *btrfs_send_cmd_name(uint16_t cmd)
{
        if (cmd < ELEMENTSOF(cmd_names) && cmd_names[cmd])
                return cmd_names[cmd];
        return "unknown";
}

#define A(x) (UINT32_C(1) << BTRFS_SEND_A_##x)

/* The attributes each command needs; what the kernel adds beyond them (an inode number, say) is
 * allowed, anything else of the known attributes too, but never twice. */
static const uint32_t cmd_required[] = {
        [BTRFS_SEND_C_SUBVOL] = A(PATH) | A(UUID) | A(CTRANSID),
        [BTRFS_SEND_C_SNAPSHOT] = A(PATH) | A(UUID) | A(CTRANSID) | A(CLONE_UUID) | A(CLONE_CTRANSID),
        [BTRFS_SEND_C_MKFILE] = A(PATH),
        [BTRFS_SEND_C_MKDIR] = A(PATH),
        [BTRFS_SEND_C_MKNOD] = A(PATH) | A(MODE) | A(RDEV),
        [BTRFS_SEND_C_MKFIFO] = A(PATH),
        [BTRFS_SEND_C_MKSOCK] = A(PATH),
        [BTRFS_SEND_C_SYMLINK] = A(PATH) | A(PATH_LINK),
        [BTRFS_SEND_C_RENAME] = A(PATH) | A(PATH_TO),
        [BTRFS_SEND_C_LINK] = A(PATH) | A(PATH_LINK),
        [BTRFS_SEND_C_UNLINK] = A(PATH),
        [BTRFS_SEND_C_RMDIR] = A(PATH),
        [BTRFS_SEND_C_SET_XATTR] = A(PATH) | A(XATTR_NAME) | A(XATTR_DATA),
        [BTRFS_SEND_C_REMOVE_XATTR] = A(PATH) | A(XATTR_NAME),
        [BTRFS_SEND_C_WRITE] = A(PATH) | A(FILE_OFFSET) | A(DATA),
        [BTRFS_SEND_C_CLONE] = A(PATH) | A(FILE_OFFSET) | A(CLONE_LEN) | A(CLONE_UUID) | A(CLONE_CTRANSID) |
                               A(CLONE_PATH) | A(CLONE_OFFSET),
        [BTRFS_SEND_C_TRUNCATE] = A(PATH) | A(SIZE),
        [BTRFS_SEND_C_CHMOD] = A(PATH) | A(MODE),
        [BTRFS_SEND_C_CHOWN] = A(PATH) | A(UID) | A(GID),
        [BTRFS_SEND_C_UTIMES] = A(PATH) | A(ATIME) | A(MTIME) | A(CTIME),
        [BTRFS_SEND_C_END] = 0,
        [BTRFS_SEND_C_UPDATE_EXTENT] = A(PATH) | A(FILE_OFFSET) | A(SIZE),
};

/* Commands whose path names a new or existing entry and so may not be the subvolume's root (""). */
static const uint32_t cmd_path_not_root = (UINT32_C(1) << BTRFS_SEND_C_MKFILE) | (UINT32_C(1) << BTRFS_SEND_C_MKDIR) |
                                          (UINT32_C(1) << BTRFS_SEND_C_MKNOD) | (UINT32_C(1) << BTRFS_SEND_C_MKFIFO) |
                                          (UINT32_C(1) << BTRFS_SEND_C_MKSOCK) | (UINT32_C(1) << BTRFS_SEND_C_SYMLINK) |
                                          (UINT32_C(1) << BTRFS_SEND_C_RENAME) | (UINT32_C(1) << BTRFS_SEND_C_LINK) |
                                          (UINT32_C(1) << BTRFS_SEND_C_UNLINK) | (UINT32_C(1) << BTRFS_SEND_C_RMDIR) |
                                          (UINT32_C(1) << BTRFS_SEND_C_WRITE) | (UINT32_C(1) << BTRFS_SEND_C_CLONE) |
                                          (UINT32_C(1) << BTRFS_SEND_C_TRUNCATE) |
                                          (UINT32_C(1) << BTRFS_SEND_C_UPDATE_EXTENT) |
                                          (UINT32_C(1) << BTRFS_SEND_C_SUBVOL) | (UINT32_C(1) << BTRFS_SEND_C_SNAPSHOT);

bool btrfs_send_path_is_valid(const char *path)
{
        size_t n = strlen(path);
        const char *p = path;

        if (n == 0)
                return true;
        if (n >= PATH_MAX)
                return false;
        for (;;) {
                const char *slash = strchr(p, '/');
                size_t len = slash ? (size_t) (slash - p) : strlen(p);

                if (len == 0 || (len == 1 && p[0] == '.') || (len == 2 && p[0] == '.' && p[1] == '.'))
                        return false;
                if (len > NAME_MAX)
                        return false;
                if (!slash)
                        return true;
                p = slash + 1;
        }
}

static bool send_timespec_get(const uint8_t *v, uint16_t len, struct timespec *ret)
{
        uint64_t sec;
        uint32_t nsec;

        if (len != 12)
                return false;
        sec = get_le64(v);
        nsec = get_le32(v + 8);
        if (nsec >= 1000000000u || sec > (uint64_t) INT64_MAX)
                return false;
        ret->tv_sec = (time_t) sec;
        ret->tv_nsec = (long) nsec;
        return true;
}

int btrfs_send_parse_cmd(const uint8_t *buf, size_t size, char *strbuf, BtrfsSendCmd *ret, char *err, size_t errlen)
{
        uint8_t copy[BTRFS_SEND_CMD_HEADER_SIZE];
        size_t pos = BTRFS_SEND_CMD_HEADER_SIZE, spos = 0;
        uint32_t len, crc, required;
        uint16_t cmd;
        BtrfsSendCmd c = {};

        if (size < BTRFS_SEND_CMD_HEADER_SIZE || size > BTRFS_SEND_CMD_MAX)
                return errbuf_set(err, errlen, EBADMSG, "a command of %zu bytes", size);
        len = get_le32(buf);
        cmd = get_le16(buf + 4);
        crc = get_le32(buf + 6);
        if ((size_t) len != size - BTRFS_SEND_CMD_HEADER_SIZE)
                return errbuf_set(err, errlen, EBADMSG, "a command whose length field (%" PRIu32 ") is not its size",
                                  len);
        if (cmd == 0 || cmd > BTRFS_SEND_C_MAX)
                return errbuf_set(err, errlen, EBADMSG, "an unknown command %u", (unsigned) cmd);

        memcpy(copy, buf, sizeof copy);
        memset(copy + 6, 0, 4);
        if (btrfs_send_crc32c(btrfs_send_crc32c(0, copy, sizeof copy), buf + sizeof copy, len) != crc)
                return errbuf_set(err, errlen, EBADMSG, "a %s command whose checksum does not match",
                                  btrfs_send_cmd_name(cmd));

        c.cmd = cmd;
        while (pos < size) {
                uint16_t type, alen;
                const uint8_t *v;
                char *s = NULL;

                if (size - pos < 4)
                        return errbuf_set(err, errlen, EBADMSG, "a %s command with a cut attribute",
                                          btrfs_send_cmd_name(cmd));
                type = get_le16(buf + pos);
                alen = get_le16(buf + pos + 2);
                pos += 4;
                if (alen > size - pos)
                        return errbuf_set(err, errlen, EBADMSG, "a %s command whose attribute %u runs past its end",
                                          btrfs_send_cmd_name(cmd), (unsigned) type);
                v = buf + pos;
                pos += alen;
                if (type == 0 || type > BTRFS_SEND_A_MAX)
                        return errbuf_set(err, errlen, EBADMSG, "a %s command with an unknown attribute %u",
                                          btrfs_send_cmd_name(cmd), (unsigned) type);
                if (c.attrs & (UINT32_C(1) << type))
                        return errbuf_set(err, errlen, EBADMSG, "a %s command with attribute %u twice",
                                          btrfs_send_cmd_name(cmd), (unsigned) type);
                c.attrs |= UINT32_C(1) << type;

                switch (type) {
                case BTRFS_SEND_A_PATH:
                case BTRFS_SEND_A_PATH_TO:
                case BTRFS_SEND_A_PATH_LINK:
                case BTRFS_SEND_A_CLONE_PATH:
                case BTRFS_SEND_A_XATTR_NAME:
                        if (memchr(v, '\0', alen))
                                return errbuf_set(err, errlen, EBADMSG, "a %s command with a NUL inside a name",
                                                  btrfs_send_cmd_name(cmd));
                        s = strbuf + spos;
                        memcpy(s, v, alen);
                        s[alen] = '\0';
                        spos += (size_t) alen + 1;
                        break;
                default:
                        break;
                }

                switch (type) {
                case BTRFS_SEND_A_UUID:
                case BTRFS_SEND_A_CLONE_UUID:
                        if (alen != 16)
                                return errbuf_set(err, errlen, EBADMSG, "a %s command with a uuid of %u bytes",
                                                  btrfs_send_cmd_name(cmd), (unsigned) alen);
                        memcpy(type == BTRFS_SEND_A_UUID ? c.uuid : c.clone_uuid, v, 16);
                        break;
                case BTRFS_SEND_A_CTRANSID:
                case BTRFS_SEND_A_INO:
                case BTRFS_SEND_A_SIZE:
                case BTRFS_SEND_A_MODE:
                case BTRFS_SEND_A_UID:
                case BTRFS_SEND_A_GID:
                case BTRFS_SEND_A_RDEV:
                case BTRFS_SEND_A_FILE_OFFSET:
                case BTRFS_SEND_A_CLONE_CTRANSID:
                case BTRFS_SEND_A_CLONE_OFFSET:
                case BTRFS_SEND_A_CLONE_LEN: {
                        uint64_t x;
                        if (alen != 8)
                                return errbuf_set(err, errlen, EBADMSG, "a %s command with a number of %u bytes",
                                                  btrfs_send_cmd_name(cmd), (unsigned) alen);
                        x = get_le64(v);
                        switch (type) {
                        case BTRFS_SEND_A_CTRANSID:
                                c.ctransid = x;
                                break;
                        case BTRFS_SEND_A_INO:
                                c.ino = x;
                                break;
                        case BTRFS_SEND_A_SIZE:
                                c.size = x;
                                break;
                        case BTRFS_SEND_A_MODE:
                                c.mode = x;
                                break;
                        case BTRFS_SEND_A_UID:
                                c.uid = x;
                                break;
                        case BTRFS_SEND_A_GID:
                                c.gid = x;
                                break;
                        case BTRFS_SEND_A_RDEV:
                                c.rdev = x;
                                break;
                        case BTRFS_SEND_A_FILE_OFFSET:
                                c.file_offset = x;
                                break;
                        case BTRFS_SEND_A_CLONE_CTRANSID:
                                c.clone_ctransid = x;
                                break;
                        case BTRFS_SEND_A_CLONE_OFFSET:
                                c.clone_offset = x;
                                break;
                        default:
                                c.clone_len = x;
                                break;
                        }
                        break;
                }
                case BTRFS_SEND_A_CTIME:
                case BTRFS_SEND_A_MTIME:
                case BTRFS_SEND_A_ATIME:
                case BTRFS_SEND_A_OTIME:
                        if (!send_timespec_get(v, alen,
                                               type == BTRFS_SEND_A_CTIME   ? &c.ctime
                                               : type == BTRFS_SEND_A_MTIME ? &c.mtime
                                               : type == BTRFS_SEND_A_ATIME ? &c.atime
                                                                            : &c.otime))
                                return errbuf_set(err, errlen, EBADMSG, "a %s command with a bad time",
                                                  btrfs_send_cmd_name(cmd));
                        break;
                case BTRFS_SEND_A_XATTR_NAME:
                        if (alen == 0 || alen > 255)
                                return errbuf_set(err, errlen, EBADMSG,
                                                  "a %s command with an attribute name of %u bytes",
                                                  btrfs_send_cmd_name(cmd), (unsigned) alen);
                        c.xattr_name = s;
                        break;
                case BTRFS_SEND_A_XATTR_DATA:
                        c.xattr_data = v;
                        c.xattr_data_len = alen;
                        break;
                case BTRFS_SEND_A_DATA:
                        c.data = v;
                        c.data_len = alen;
                        break;
                case BTRFS_SEND_A_PATH_LINK:
                        /* A symlink's target is any text; a hard link's is a path in the stream. */
                        if (alen == 0 || (cmd != BTRFS_SEND_C_SYMLINK && (!btrfs_send_path_is_valid(s) || !s[0])))
                                return errbuf_set(err, errlen, EBADMSG, "a %s command with a bad link target",
                                                  btrfs_send_cmd_name(cmd));
                        c.path_link = s;
                        break;
                default: /* PATH, PATH_TO, CLONE_PATH */
                        if (!btrfs_send_path_is_valid(s))
                                return errbuf_set(err, errlen, EBADMSG, "a %s command with a bad path",
                                                  btrfs_send_cmd_name(cmd));
                        if (type == BTRFS_SEND_A_PATH)
                                c.path = s;
                        else if (type == BTRFS_SEND_A_PATH_TO)
                                c.path_to = s;
                        else
                                c.clone_path = s;
                        break;
                }
        }

        required = cmd_required[cmd];
        if ((c.attrs & required) != required)
                return errbuf_set(err, errlen, EBADMSG, "a %s command without attribute %d", btrfs_send_cmd_name(cmd),
                                  __builtin_ctz(required & ~c.attrs));
        if (((cmd_path_not_root >> cmd) & 1) && c.path && !c.path[0])
                return errbuf_set(err, errlen, EBADMSG, "a %s command on the subvolume's root",
                                  btrfs_send_cmd_name(cmd));
        if (c.path_to && !c.path_to[0])
                return errbuf_set(err, errlen, EBADMSG, "a %s command onto the subvolume's root",
                                  btrfs_send_cmd_name(cmd));
        if ((cmd == BTRFS_SEND_C_SUBVOL || cmd == BTRFS_SEND_C_SNAPSHOT) && strchr(c.path, '/'))
                return errbuf_set(err, errlen, EBADMSG, "a %s command naming a nested subvolume",
                                  btrfs_send_cmd_name(cmd));

        *ret = c;
        return 0;
}

ssize_t btrfs_send_read_fd(void *userdata, void *buf, size_t n)
{
        int fd = *(int *) userdata;
        ssize_t l;

        do
                l = read(fd, buf, n);
        while (l < 0 && errno == EINTR);
        return l < 0 ? -errno : l;
}

/* Read exactly @n bytes: 1, 0 if the input ended before the first byte, -EBADMSG if it ended within. */
static int read_full(BtrfsSendReader *r, void *buf, size_t n)
{
        size_t got = 0;

        while (got < n) {
                ssize_t l = r->read_fn(r->userdata, (uint8_t *) buf + got, n - got);
                if (l < 0)
                        return (int) l;
                if (l == 0)
                        return got == 0 ? 0 : -EBADMSG;
                got += (size_t) l;
                r->offset += (uint64_t) l;
        }
        return 1;
}

int btrfs_send_reader_new(btrfs_send_read_fn read_fn, void *userdata, BtrfsSendReader **ret)
{
        BtrfsSendReader *r;
        uint8_t h[BTRFS_SEND_STREAM_HEADER_SIZE];
        uint32_t version;
        int k;

        r = calloc(1, sizeof *r);
        if (!r)
                return -ENOMEM;
        r->read_fn = read_fn;
        r->userdata = userdata;
        *ret = r;

        k = read_full(r, h, sizeof h);
        if (k <= 0) {
                if (k == 0 || k == -EBADMSG) {
                        snprintf(r->error, sizeof r->error, "the btrfs stream ends before its header");
                        return -EBADMSG;
                }
                snprintf(r->error, sizeof r->error, "cannot read the btrfs stream: %s", strerror(-k));
                return k;
        }
        if (memcmp(h, BTRFS_SEND_STREAM_MAGIC, sizeof BTRFS_SEND_STREAM_MAGIC) != 0) {
                snprintf(r->error, sizeof r->error, "not a btrfs send stream");
                return -EBADMSG;
        }
        version = get_le32(h + sizeof BTRFS_SEND_STREAM_MAGIC);
        if (version != 1) {
                snprintf(r->error, sizeof r->error, "btrfs send stream version %" PRIu32 " (only 1 is read)", version);
                return -EBADMSG;
        }
        return 0;
}

BtrfsSendReader *btrfs_send_reader_free(BtrfsSendReader *r)
{
        free(r);
        return NULL;
}

int btrfs_send_reader_next(BtrfsSendReader *r, BtrfsSendCmd *ret)
{
        uint64_t at = r->offset;
        char why[200];
        uint32_t len;
        int k;

        if (r->ended)
                return 0;
        k = read_full(r, r->buf, BTRFS_SEND_CMD_HEADER_SIZE);
        if (k == 0 || k == -EBADMSG) {
                snprintf(r->error, sizeof r->error,
                         "the btrfs stream is cut short at byte %" PRIu64 " (no end command)", r->offset);
                return -EBADMSG;
        }
        if (k < 0) {
                snprintf(r->error, sizeof r->error, "cannot read the btrfs stream: %s", strerror(-k));
                return k;
        }
        len = get_le32(r->buf);
        if (len > BTRFS_SEND_CMD_MAX - BTRFS_SEND_CMD_HEADER_SIZE) {
                snprintf(r->error, sizeof r->error,
                         "the btrfs stream has a command of %" PRIu32 " bytes at byte %" PRIu64, len, at);
                return -EBADMSG;
        }
        k = read_full(r, r->buf + BTRFS_SEND_CMD_HEADER_SIZE, len);
        if (k == 0 && len > 0)
                k = -EBADMSG;
        if (k == -EBADMSG) {
                snprintf(r->error, sizeof r->error, "the btrfs stream is cut short within a command at byte %" PRIu64,
                         at);
                return -EBADMSG;
        }
        if (k < 0) {
                snprintf(r->error, sizeof r->error, "cannot read the btrfs stream: %s", strerror(-k));
                return k;
        }
        k = btrfs_send_parse_cmd(r->buf, BTRFS_SEND_CMD_HEADER_SIZE + (size_t) len, r->strbuf, ret, why, sizeof why);
        if (k < 0) {
                snprintf(r->error, sizeof r->error, "the btrfs stream has %s at byte %" PRIu64, why, at);
                return k;
        }
        if (ret->cmd == BTRFS_SEND_C_END) {
                r->ended = true;
                return 0;
        }
        return 1;
}

const char *btrfs_send_reader_error(const BtrfsSendReader *r)
{
        return r->error[0] ? r->error : "no error";
}

uint64_t btrfs_send_reader_offset(const BtrfsSendReader *r)
{
        return r->offset;
}
