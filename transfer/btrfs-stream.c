/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>

#include "btrfs-stream.h"
#include "btrfs-util.h"
#include "names.h"
#include "util.h"

int stamp_stream_header_format(const StampStreamHeader *h, char *buf, size_t size)
{
        char hex[33];
        int n;

        if (h->delta && h->parent_transid != 0) {
                uuid_to_hex(h->parent_uuid, hex);
                n = snprintf(buf, size,
                             STAMP_STREAM_MAGIC
                             "%d\nname=%s\nread-only=%s\nparent=%s\nparent-uuid=%s\nparent-transid=%" PRIu64 "\n\n",
                             STAMP_STREAM_VERSION, h->name, yes_no(h->read_only), h->parent, hex, h->parent_transid);
        } else if (h->delta) {
                uuid_to_hex(h->parent_uuid, hex);
                n = snprintf(buf, size, STAMP_STREAM_MAGIC "%d\nname=%s\nread-only=%s\nparent=%s\nparent-uuid=%s\n\n",
                             STAMP_STREAM_VERSION, h->name, yes_no(h->read_only), h->parent, hex);
        } else
                n = snprintf(buf, size, STAMP_STREAM_MAGIC "%d\nname=%s\nread-only=%s\n\n", STAMP_STREAM_VERSION,
                             h->name, yes_no(h->read_only));
        return n < 0 || (size_t) n >= size ? -ENOBUFS : n;
}

bool stamp_stream_is_btrfs(const void *buf, size_t n)
{
        size_t m = strlen(STAMP_STREAM_MAGIC);
        return memcmp(buf, STAMP_STREAM_MAGIC, n < m ? n : m) == 0 && n >= m;
}

static int hex_to_uuid(const char *s, uint8_t ret[16])
{
        if (strlen(s) != 32)
                return -EINVAL;
        for (int i = 0; i < 16; i++) {
                int v = 0;
                for (int k = 0; k < 2; k++) {
                        char ch = s[2 * i + k];
                        int d = ch >= '0' && ch <= '9' ? ch - '0' : ch >= 'a' && ch <= 'f' ? ch - 'a' + 10 : -1;
                        if (d < 0)
                                return -EINVAL;
                        v = v * 16 + d;
                }
                ret[i] = (uint8_t) v;
        }
        return 0;
}

int stamp_stream_header_parse(const char *buf, size_t n, StampStreamHeader *ret, char *err, size_t errlen)
{
        StampStreamHeader h = {};
        const char *end = NULL, *p, *line;
        bool have_name = false, have_ro = false, have_parent = false, have_uuid = false;
        char first[32];
        size_t m = strlen(STAMP_STREAM_MAGIC);

        if (memcmp(buf, STAMP_STREAM_MAGIC, n < m ? n : m) != 0)
                return errbuf_set(err, errlen, EBADMSG, "not a stamp btrfs stream");
        for (size_t i = 0; i + 1 < n && i + 1 < STAMP_STREAM_HEADER_MAX; i++)
                if (buf[i] == '\n' && buf[i + 1] == '\n') {
                        end = buf + i + 1;
                        break;
                }
        if (!end) {
                if (n < STAMP_STREAM_HEADER_MAX)
                        return 0;
                return errbuf_set(err, errlen, EBADMSG, "the stream's header has no end within %d bytes",
                                  STAMP_STREAM_HEADER_MAX);
        }
        if (memchr(buf, '\0', (size_t) (end - buf)))
                return errbuf_set(err, errlen, EBADMSG, "the stream's header holds a NUL byte");

        snprintf(first, sizeof first, STAMP_STREAM_MAGIC "%d\n", STAMP_STREAM_VERSION);
        if (strncmp(buf, STAMP_STREAM_MAGIC, strlen(STAMP_STREAM_MAGIC)) != 0)
                return errbuf_set(err, errlen, EBADMSG, "not a stamp btrfs stream");
        if (strncmp(buf, first, strlen(first)) != 0)
                return errbuf_set(err, errlen, EBADMSG,
                                  "a stamp btrfs stream of another format version (this stamp reads version %d)",
                                  STAMP_STREAM_VERSION);

        for (line = buf + strlen(first); line < end; line = p + 1) {
                char key[32], value[80];
                const char *eq;
                size_t klen, vlen;

                p = memchr(line, '\n', (size_t) (end - line));
                if (!p)
                        break;
                eq = memchr(line, '=', (size_t) (p - line));
                if (!eq)
                        return errbuf_set(err, errlen, EBADMSG, "the stream's header has a line without '='");
                klen = (size_t) (eq - line);
                vlen = (size_t) (p - eq - 1);
                if (klen == 0 || klen >= sizeof key || vlen >= sizeof value)
                        return errbuf_set(err, errlen, EBADMSG, "the stream's header has an overlong line");
                memcpy(key, line, klen);
                key[klen] = '\0';
                memcpy(value, eq + 1, vlen);
                value[vlen] = '\0';

                if (streq(key, "name")) {
                        if (!image_name_is_valid(value))
                                return errbuf_set(err, errlen, EBADMSG, "the stream's header names no valid image");
                        memcpy(h.name, value, vlen + 1);
                        have_name = true;
                } else if (streq(key, "read-only")) {
                        if (!streq(value, "yes") && !streq(value, "no"))
                                return errbuf_set(err, errlen, EBADMSG, "the stream's header has a bad read-only");
                        h.read_only = streq(value, "yes");
                        have_ro = true;
                } else if (streq(key, "parent")) {
                        if (!image_name_is_valid(value))
                                return errbuf_set(err, errlen, EBADMSG,
                                                  "the stream's header names no valid parent image");
                        memcpy(h.parent, value, vlen + 1);
                        have_parent = true;
                } else if (streq(key, "parent-uuid")) {
                        if (hex_to_uuid(value, h.parent_uuid) < 0)
                                return errbuf_set(err, errlen, EBADMSG, "the stream's header has a bad parent-uuid");
                        have_uuid = true;
                } else if (streq(key, "parent-transid")) {
                        char *e = NULL;
                        errno = 0;
                        h.parent_transid = strtoull(value, &e, 10);
                        if (errno != 0 || !e || *e || value[0] < '0' || value[0] > '9' || h.parent_transid == 0)
                                return errbuf_set(err, errlen, EBADMSG, "the stream's header has a bad parent-transid");
                }
                /* Other keys: for later versions, skipped. */
        }
        if (!have_name || !have_ro)
                return errbuf_set(err, errlen, EBADMSG, "the stream's header lacks the image's name or read-only");
        if (have_parent != have_uuid)
                return errbuf_set(err, errlen, EBADMSG,
                                  "the stream's header has a parent without its uuid, or the "
                                  "reverse");
        h.delta = have_parent;
        *ret = h;
        return (int) (end - buf + 1);
}
