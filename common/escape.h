/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

#include <stddef.h>

/* Showing text that came from someone else (a caller's argument, an image's files, an archive, a
 * job's log) in messages and on terminals: one way to escape it, for stampd, stamp-transfer and
 * stampctl alike. */

typedef enum {
        /* Only what could act on a terminal or forge a line: C0 controls, DEL, the C1 controls and
         * bytes that are not UTF-8, as \n, \t, ... or \ooo; and '\' as "\\" so that an escape can be
         * told from text that looks like one. Printable UTF-8 stays as it is. For stampctl's output. */
        ESCAPE_TERMINAL = 0,
        /* As g_strescape() does, for messages sent over the bus: '"' too, and every byte outside
         * printable ASCII, so that a message is valid UTF-8 whatever it quotes. */
        ESCAPE_MESSAGE = 1 << 0,
} EscapeFlags;

/* @s escaped; with @max > 0, only its first @max bytes (a long archive path shows its start). A new
 * string, or NULL when out of memory. NULL is shown as "(null)". */
char *text_escape(const char *s, size_t max, EscapeFlags flags);

/* Values longer than this are not quoted back in error messages at all. */
#define SHOWN_MAX 80

/* How an error message quotes a value it did not choose: escaped for a message; a value of SHOWN_MAX
 * bytes or more is "(too long to show)". A new string, or NULL when out of memory. */
char *text_shown(const char *s);
