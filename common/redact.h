/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* Hiding the secrets a URL may carry before it is shown to anyone: log lines (LogMessage is a
 * broadcast any local user may receive), error messages, properties, polkit details, command lines.
 * Credentials go in the userinfo ("user:password@") and, as tokens, in the query; the fragment is
 * hidden with the query. Scheme, host, port and path stay, so the message still says what failed. */

/* The userinfo (all up to the last '@' before any '?' or '#') becomes "***", and what follows a '?'
 * or '#' becomes "…": after "scheme://", "user:pw@host:8080/p/f.tar?token=x#y" becomes
 * "***@host:8080/p/f.tar?…". A string without a scheme and "://" is treated as if its authority
 * started at its beginning ("user:pw@host/p" → "***@host/p"). Redacting twice changes nothing more.
 * Newly allocated; NULL only when out of memory (or @url is NULL). */
char *url_redact(const char *url);

/* @text with every "scheme://…" in it redacted as url_redact() does; a URL ends at white space, a
 * control character, or closing punctuation (: , ; . quotes > ) ]) that white space or the end
 * follows: "see 'https://h/f?t=1': HTTP 404" keeps its quote and colon. Newly allocated; NULL
 * only when out of memory (or @text is NULL). */
char *text_redact_urls(const char *text);
