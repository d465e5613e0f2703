/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <time.h>

/* A reader of btrfs send streams (version 1, what BTRFS_IOC_SEND writes without
 * BTRFS_SEND_FLAG_VERSION): the stream header, then commands of a little-endian header (length, command,
 * crc32c) and type-length-value attributes. Every command is checked whole before it is handed on: its
 * crc, the lengths and sizes of its attributes, no attribute twice, the attributes its command needs,
 * and every path in it (relative, no empty, "." or ".." component, no NUL). Used by btrfs_diff() on
 * streams the kernel makes and by the import of streams that come from anyone. */

#define BTRFS_SEND_STREAM_MAGIC "btrfs-stream"
#define BTRFS_SEND_STREAM_HEADER_SIZE 17 /* the magic with its NUL, a le32 version */
#define BTRFS_SEND_CMD_HEADER_SIZE 10    /* le32 length, le16 command, le32 crc */
/* What the kernel puts in one command of a version 1 stream, header included. */
#define BTRFS_SEND_CMD_MAX 65536

enum {
        BTRFS_SEND_C_SUBVOL = 1,
        BTRFS_SEND_C_SNAPSHOT = 2,
        BTRFS_SEND_C_MKFILE = 3,
        BTRFS_SEND_C_MKDIR = 4,
        BTRFS_SEND_C_MKNOD = 5,
        BTRFS_SEND_C_MKFIFO = 6,
        BTRFS_SEND_C_MKSOCK = 7,
        BTRFS_SEND_C_SYMLINK = 8,
        BTRFS_SEND_C_RENAME = 9,
        BTRFS_SEND_C_LINK = 10,
        BTRFS_SEND_C_UNLINK = 11,
        BTRFS_SEND_C_RMDIR = 12,
        BTRFS_SEND_C_SET_XATTR = 13,
        BTRFS_SEND_C_REMOVE_XATTR = 14,
        BTRFS_SEND_C_WRITE = 15,
        BTRFS_SEND_C_CLONE = 16,
        BTRFS_SEND_C_TRUNCATE = 17,
        BTRFS_SEND_C_CHMOD = 18,
        BTRFS_SEND_C_CHOWN = 19,
        BTRFS_SEND_C_UTIMES = 20,
        BTRFS_SEND_C_END = 21,
        BTRFS_SEND_C_UPDATE_EXTENT = 22,
        BTRFS_SEND_C_MAX = 22,
};

enum {
        BTRFS_SEND_A_UUID = 1,
        BTRFS_SEND_A_CTRANSID = 2,
        BTRFS_SEND_A_INO = 3,
        BTRFS_SEND_A_SIZE = 4,
        BTRFS_SEND_A_MODE = 5,
        BTRFS_SEND_A_UID = 6,
        BTRFS_SEND_A_GID = 7,
        BTRFS_SEND_A_RDEV = 8,
        BTRFS_SEND_A_CTIME = 9,
        BTRFS_SEND_A_MTIME = 10,
        BTRFS_SEND_A_ATIME = 11,
        BTRFS_SEND_A_OTIME = 12,
        BTRFS_SEND_A_XATTR_NAME = 13,
        BTRFS_SEND_A_XATTR_DATA = 14,
        BTRFS_SEND_A_PATH = 15,
        BTRFS_SEND_A_PATH_TO = 16,
        BTRFS_SEND_A_PATH_LINK = 17,
        BTRFS_SEND_A_FILE_OFFSET = 18,
        BTRFS_SEND_A_DATA = 19,
        BTRFS_SEND_A_CLONE_UUID = 20,
        BTRFS_SEND_A_CLONE_CTRANSID = 21,
        BTRFS_SEND_A_CLONE_PATH = 22,
        BTRFS_SEND_A_CLONE_OFFSET = 23,
        BTRFS_SEND_A_CLONE_LEN = 24,
        BTRFS_SEND_A_MAX = 24,
};

#define BTRFS_SEND_HAS(cmd, attr) (((cmd)->attrs >> (attr)) & 1)

/* One command. The strings and data point into the reader's buffers and stay valid until the next
 * command is read; strings are NUL-terminated. */
typedef struct BtrfsSendCmd {
        uint16_t cmd;
        uint32_t attrs; /* bit 1 << BTRFS_SEND_A_* for each attribute present */
        const char *path, *path_to, *path_link, *clone_path, *xattr_name;
        const void *data, *xattr_data;
        size_t data_len, xattr_data_len;
        uint8_t uuid[16], clone_uuid[16];
        uint64_t ctransid, clone_ctransid, ino, size, mode, uid, gid, rdev, file_offset, clone_offset, clone_len;
        struct timespec atime, mtime, ctime, otime;
} BtrfsSendCmd;

/* Where the reader gets its bytes: like read(2), up to @n bytes into @buf, 0 at the end, or -errno. */
typedef ssize_t (*btrfs_send_read_fn)(void *userdata, void *buf, size_t n);

typedef struct BtrfsSendReader BtrfsSendReader;

/* Read and check the stream header. -EBADMSG (with a reason in btrfs_send_reader_error()) for what is
 * not a version 1 send stream. */
int btrfs_send_reader_new(btrfs_send_read_fn read_fn, void *userdata, BtrfsSendReader **ret);
BtrfsSendReader *btrfs_send_reader_free(BtrfsSendReader *r);
static inline void btrfs_send_reader_freep(BtrfsSendReader **r)
{
        if (*r)
                btrfs_send_reader_free(*r);
}
/* The next command: 1 and *@ret filled, 0 once the END command has been read (nothing after it is
 * read), -EBADMSG for a corrupt or truncated stream (a stream that ends before its END command is
 * truncated), or the read function's error. */
int btrfs_send_reader_next(BtrfsSendReader *r, BtrfsSendCmd *ret);
/* A sentence saying what was wrong with the stream, and where. */
const char *btrfs_send_reader_error(const BtrfsSendReader *r);
/* Bytes consumed so far. */
uint64_t btrfs_send_reader_offset(const BtrfsSendReader *r);

/* A read function over a file descriptor (@userdata is a pointer to the int). */
ssize_t btrfs_send_read_fd(void *userdata, void *buf, size_t n);

/* Check one whole command (header included) of @size bytes in @buf and fill *@ret; @strbuf, of at
 * least @size + 32 bytes, receives its strings. Returns 0 or -EBADMSG with a reason in @err. */
int btrfs_send_parse_cmd(const uint8_t *buf, size_t size, char *strbuf, BtrfsSendCmd *ret, char *err, size_t errlen);

/* Whether @path is a path a stream may name inside its subvolume: "" (the subvolume's root) or
 * components that are not empty, "." or "..", joined by single slashes, at most PATH_MAX - 1 bytes. */
bool btrfs_send_path_is_valid(const char *path);

/* crc32c as btrfs send computes it: seed @crc, no inversion before or after. */
uint32_t btrfs_send_crc32c(uint32_t crc, const void *data, size_t n);
/* The same without the CPU's crc32 instruction (what other CPUs use): for tests. */
uint32_t btrfs_send_crc32c_portable(uint32_t crc, const void *data, size_t n);

const char *btrfs_send_cmd_name(uint16_t cmd);
