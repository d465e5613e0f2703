/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>

#include "progress.h"
#include "table.h"

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

static uint64_t now_monotonic_usec(void)
{
        struct timespec ts;

        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t) ts.tv_sec * 1000000 + (uint64_t) ts.tv_nsec / 1000;
}

bool progress_line_due(int last_percent, uint64_t last_line_usec, int percent, uint64_t now_usec)
{
        if (percent == last_percent)
                return false;
        if (last_percent < 0 || percent / PROGRESS_LINE_STEP != last_percent / PROGRESS_LINE_STEP)
                return true;
        return now_usec >= last_line_usec + PROGRESS_LINE_USEC;
}

void progress_init(struct progress *p, FILE *out, bool tty, bool quiet, const char *label)
{
        *p = (struct progress) {
                .out = out,
                .tty = tty,
                .quiet = quiet,
                .last_percent = -1,
                .start_usec = now_monotonic_usec(),
                .fraction = -1,
                .label = label ? strdup(label) : NULL,
                .bytes = UINT64_MAX,
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
        uint64_t now;
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
        now = now_monotonic_usec();
        if (!progress_line_due(p->last_percent, p->last_line_usec, percent, now))
                return;
        p->last_percent = percent;
        p->last_line_usec = now;
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

void progress_summary(struct progress *p)
{
        double seconds = (double) (now_monotonic_usec() - p->start_usec) / 1e6;

        if (p->quiet)
                return;
        char line[512];

        progress_clear(p);
        progress_format_summary(line, sizeof line, p->label, seconds, p->bytes, p->bytes_verb);
        fprintf(p->out, "%s\n", line);
        fflush(p->out);
}

void progress_done(struct progress *p)
{
        progress_clear(p);
        free(p->label);
        p->label = NULL;
}

void progress_format_summary(char *buf, size_t size, const char *label, double seconds, uint64_t bytes,
                             const char *bytes_verb)
{
        char b[FORMAT_BYTES_MAX];

        if (bytes == UINT64_MAX)
                snprintf(buf, size, "%s: done in %.1f s", label ? label : "job", seconds);
        else
                snprintf(buf, size, "%s: done in %.1f s, %s %s", label ? label : "job", seconds,
                         format_bytes(b, sizeof b, bytes), bytes_verb ? bytes_verb : "");
}
