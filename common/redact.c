/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "redact.h"

#define HIDDEN_USERINFO "***"
#define HIDDEN_REST "\xe2\x80\xa6" /* "…", U+2026 */

static bool is_scheme_char(char c)
{
        return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '+' || c == '-' ||
               c == '.';
}

static bool is_alpha(char c)
{
        return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

static bool is_space_or_end(char c)
{
        return (unsigned char) c <= ' ' || c == 0x7f;
}

static bool is_closing(char c)
{
        return c == ':' || c == ',' || c == ';' || c == '.' || c == '"' || c == '\'' || c == '`' || c == '>' ||
               c == ')' || c == ']';
}

/* Where a URL inside free text ends: at white space or a control character, which no URL that
 * stampd accepts holds, or at punctuation that closes the sentence or quote around it (a short run
 * of it before white space). Punctuation alone does not end it: a quote inside a password must not
 * cut the URL before its '@'. */
static bool ends_url_in_text(const char *p)
{
        if (is_space_or_end(*p))
                return true;
        for (size_t i = 0; i < 8 && is_closing(p[i]); i++)
                if (is_space_or_end(p[i + 1]))
                        return true;
        return false;
}

/* Append the redacted form of @url[0..n) to @out (which has room for n + the markers). @authority is
 * where the authority starts (after "scheme://", or 0). */
static char *redact_span(char *out, const char *url, size_t n, size_t authority)
{
        size_t end_path = authority, at = SIZE_MAX, rest;

        while (end_path < n && url[end_path] != '?' && url[end_path] != '#')
                end_path++;
        /* The last '@' before the query, not just in the authority: a password with an unencoded '/'
         * ("u:123/x@host") makes clients take "u" for the host and ":123" for a port, and the message
         * about that failure must not show the password's first part. A path that holds an '@' loses
         * its host from view; that is the lesser harm. */
        for (size_t i = authority; i < end_path; i++)
                if (url[i] == '@')
                        at = i;

        memcpy(out, url, authority);
        out += authority;
        if (at != SIZE_MAX) {
                memcpy(out, HIDDEN_USERINFO, strlen(HIDDEN_USERINFO));
                out += strlen(HIDDEN_USERINFO);
                authority = at; /* from the '@' on */
        }
        rest = end_path;
        memcpy(out, url + authority, rest - authority);
        out += rest - authority;
        if (rest < n) {
                *out++ = url[rest];
                memcpy(out, HIDDEN_REST, strlen(HIDDEN_REST));
                out += strlen(HIDDEN_REST);
        }
        return out;
}

/* The length of "scheme://" if @s starts with one, else 0. */
static size_t scheme_prefix(const char *s)
{
        size_t i = 0;

        if (!is_alpha(s[0]))
                return 0;
        while (is_scheme_char(s[i]))
                i++;
        return strncmp(s + i, "://", 3) == 0 ? i + 3 : 0;
}

/* Room for the result: never longer than the input plus one set of markers per URL, and each URL
 * takes at least its "://". */
static size_t room_for(size_t n)
{
        return n + (n / 3 + 1) * (strlen(HIDDEN_USERINFO) + 1 + strlen(HIDDEN_REST)) + 1;
}

char *url_redact(const char *url)
{
        size_t n;
        char *out, *end;

        if (!url)
                return NULL;
        n = strlen(url);
        out = malloc(room_for(n));
        if (!out)
                return NULL;
        end = redact_span(out, url, n, scheme_prefix(url));
        *end = '\0';
        return out;
}

char *text_redact_urls(const char *text)
{
        const char *copied = text, *sep;
        char *out, *o;

        if (!text)
                return NULL;
        out = malloc(room_for(strlen(text)));
        if (!out)
                return NULL;
        o = out;
        /* Found by their "://", then back to the scheme: linear however long the text, and a scheme
         * glued to what precedes it ("1https://…", "x=https://…") is no way around the redaction. */
        while ((sep = strstr(copied, "://"))) {
                const char *start = sep, *end = sep + 3;

                while (start > copied && is_scheme_char(start[-1]))
                        start--;
                while (start < sep && !is_alpha(*start))
                        start++;
                while (*end && !ends_url_in_text(end))
                        end++;
                memcpy(o, copied, (size_t) (start - copied));
                o += start - copied;
                o = redact_span(o, start, (size_t) (end - start), (size_t) (sep + 3 - start));
                copied = end;
        }
        strcpy(o, copied);
        return out;
}
