/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

/* Progress of one job on stderr: a bar redrawn in place on a terminal; otherwise a line at every
 * tenth of the way and at least every PROGRESS_LINE_USEC while it moves; nothing when quiet. On
 * success, one summary line in either case. */
#define PROGRESS_LINE_STEP 10                           /* percent */
#define PROGRESS_LINE_USEC (UINT64_C(10) * 1000 * 1000) /* between lines, at most */
struct progress {
        FILE *out;
        bool tty;
        bool quiet;
        bool shown; /* a bar is on the screen and must be cleared before other output */
        int last_percent;
        uint64_t start_usec, last_line_usec;
        double fraction;
        char *label;
        uint64_t bytes;         /* for the summary: UINT64_MAX when not known */
        const char *bytes_verb; /* "written", "read" */
};

void progress_init(struct progress *p, FILE *out, bool tty, bool quiet, const char *label);
void progress_update(struct progress *p, double fraction);
/* Prints @line above the bar. */
void progress_log(struct progress *p, const char *line);
/* Removes the bar. */
void progress_clear(struct progress *p);
/* "LABEL: done in 8.2 s", with ", 1.2G written" where bytes are known, after the bar is gone (not when
 * quiet). */
void progress_summary(struct progress *p);
/* Whether a line is due, not on a terminal, for @percent at @now_usec (pure: for the tests). */
bool progress_line_due(int last_percent, uint64_t last_line_usec, int percent, uint64_t now_usec);
void progress_done(struct progress *p);
/* The summary line itself (pure: for the tests). */
void progress_format_summary(char *buf, size_t size, const char *label, double seconds, uint64_t bytes,
                             const char *bytes_verb);

/* Renders "label [#####     ]  42%" into @buf, at most @columns wide (the label is
 * shortened first, then the bar); a fraction < 0 renders as unknown. */
void progress_format(char *buf, size_t size, const char *label, double fraction, unsigned columns);

/* Width of the terminal on @fd, or 80. */
unsigned terminal_columns(int fd);
