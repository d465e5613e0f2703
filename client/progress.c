/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include "progress.h"

unsigned terminal_columns(int fd)
{
        struct winsize ws = {0};
        const char *e;

        if (ioctl(fd, TIOCGWINSZ, &ws) >= 0 && ws.ws_col > 0)
                return ws.ws_col;
        e = getenv("COLUMNS");
        if (e && atoi(e) > 0)
                return (unsigned) atoi(e);
        return 80;
}

void progress_format(char *buf, size_t size, const char *label, double fraction, unsigned columns)
{
        char pct[8];
        size_t label_len = label ? strlen(label) : 0;
        size_t bar, filled, pos = 0;

        if (size == 0)
                return;
        if (fraction < 0 || isnan(fraction))
                snprintf(pct, sizeof(pct), "  ?%%");
        else {
                if (fraction > 1)
                        fraction = 1;
                snprintf(pct, sizeof(pct), "%3d%%", (int) floor(fraction * 100));
        }

        if (columns < 12)
                columns = 12;
        if (columns > size - 1)
                columns = (unsigned) size - 1;
        /* Room: label, " [", bar, "] ", pct. Keep at least 10 cells of bar. */
        size_t fixed = 2 + 2 + strlen(pct);
        if (label_len + fixed + 10 > columns)
                label_len = columns > fixed + 10 ? columns - fixed - 10 : 0;
        bar = columns - fixed - label_len;
        if (bar > 50)
                bar = 50;

        memcpy(buf, label ? label : "", label_len);
        pos = label_len;
        buf[pos++] = ' ';
        buf[pos++] = '[';
        if (fraction < 0 || isnan(fraction))
                filled = 0;
        else
                filled = (size_t) floor(fraction * (double) bar);
        for (size_t i = 0; i < bar; i++)
                buf[pos++] = i < filled ? '#' : (fraction < 0 ? '-' : ' ');
        buf[pos++] = ']';
        buf[pos++] = ' ';
        memcpy(buf + pos, pct, strlen(pct));
        pos += strlen(pct);
        buf[pos] = '\0';
}

void progress_init(struct progress *p, FILE *out, bool tty, bool quiet, const char *label)
{
        *p = (struct progress) {
                .out = out,
                .tty = tty,
                .quiet = quiet,
                .last_percent = -1,
                .fraction = -1,
                .label = label ? strdup(label) : NULL,
        };
}

static void progress_draw(struct progress *p)
{
        char buf[512];

        progress_format(buf, sizeof(buf), p->label, p->fraction, terminal_columns(fileno(p->out)) - 1);
        fprintf(p->out, "\r%s\033[K", buf);
        fflush(p->out);
        p->shown = true;
}

void progress_update(struct progress *p, double fraction)
{
        int percent;

        p->fraction = fraction;
        if (p->quiet)
                return;
        if (p->tty) {
                progress_draw(p);
                return;
        }
        if (fraction < 0 || isnan(fraction))
                return;
        percent = (int) floor((fraction > 1 ? 1 : fraction) * 100);
        if (percent == p->last_percent)
                return;
        p->last_percent = percent;
        fprintf(p->out, "%s: %d%%\n", p->label ? p->label : "progress", percent);
        fflush(p->out);
}

void progress_clear(struct progress *p)
{
        if (!p->shown)
                return;
        fputs("\r\033[K", p->out);
        fflush(p->out);
        p->shown = false;
}

void progress_log(struct progress *p, const char *line)
{
        bool was_shown = p->shown;

        progress_clear(p);
        fprintf(p->out, "%s\n", line);
        if (was_shown)
                progress_draw(p);
        else
                fflush(p->out);
}

void progress_done(struct progress *p)
{
        progress_clear(p);
        free(p->label);
        p->label = NULL;
}
