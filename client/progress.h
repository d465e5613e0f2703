/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

/* Progress of one job on stderr: a bar redrawn in place on a terminal, a line
 * per whole percent otherwise, nothing when quiet. */
struct progress {
        FILE *out;
        bool tty;
        bool quiet;
        bool shown; /* a bar is on the screen and must be cleared before other output */
        int last_percent;
        double fraction;
        char *label;
};

void progress_init(struct progress *p, FILE *out, bool tty, bool quiet, const char *label);
void progress_update(struct progress *p, double fraction);
/* Prints @line above the bar. */
void progress_log(struct progress *p, const char *line);
/* Removes the bar. */
void progress_clear(struct progress *p);
void progress_done(struct progress *p);

/* Renders "label [#####     ]  42%" into @buf, at most @columns wide (the label is
 * shortened first, then the bar); a fraction < 0 renders as unknown. */
void progress_format(char *buf, size_t size, const char *label, double fraction, unsigned columns);

/* Width of the terminal on @fd, or 80. */
unsigned terminal_columns(int fd);
