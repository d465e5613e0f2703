/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* Pure helpers of stampctl: no bus, no terminal. The unit tests link them. */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#define _cleanup_(f) __attribute__((cleanup(f)))

static inline void freep(void *p)
{
        free(*(void **) p);
}

static inline void strv_freep(char ***p)
{
        if (*p)
                for (char **i = *p; *i; i++)
                        free(*i);
        free(*p);
}

/* Hand a pointer over to a new owner: returns it and leaves NULL behind. */
#define steal_pointer(pp)                                                                                              \
        ({                                                                                                             \
                __typeof__(*(pp)) _tmp = *(pp);                                                                        \
                *(pp) = NULL;                                                                                          \
                _tmp;                                                                                                  \
        })

#define ELEMENTSOF(a) (sizeof(a) / sizeof((a)[0]))

/* "yes"/"no", "true"/"false", "on"/"off", "1"/"0". Returns 1, 0, or -EINVAL. */
int parse_boolean(const char *s);

/* "TERM", "SIGTERM", "sigkill", "15", "RTMIN+4", "SIGRTMAX-1". Returns the number or -EINVAL. */
int signal_from_string(const char *s);
/* "TERM" for 15; NULL when the number has no name. */
const char *signal_to_string(int signo);

/* The image name a file or URL suggests: its last path component without query,
 * fragment, a compression suffix and ".tar" ("/x/nginx.tar.xz" → "nginx").
 * Returns a new string, or NULL (errno set) when nothing sensible is left. */
char *image_name_from_filename(const char *filename);

/* Split "a,b,,c" into a NULL-terminated vector, appending to *list; empty items are dropped. */
int strv_extend_comma_list(char ***list, const char *s);
size_t strv_length(char *const *l);

/* Writes @s as a JSON string literal, quotes included; NULL as null. */
void json_fputs(const char *s, FILE *f);

/* Orders images as a forest: each one beneath the image it was cloned from.
 * For item i: name[i], origin[i] (NULL or "" when none). On return order[] lists
 * every index once, parents before their children, siblings by name; parent[i]
 * is the index of i's parent or -1 (origin missing from the list, itself, or part
 * of a loop); depth[i] is 0 for roots. */
void tree_order(const char *const *name, const char *const *origin, size_t n, size_t *order, long *parent,
                unsigned *depth);

/* Levenshtein distance of @a and @b (UINT_MAX when either is 64 bytes or longer): for "did you mean". */
unsigned edit_distance(const char *a, const char *b);

/* Whether @term is a terminal type worth passing into a machine: 1 to 64 of A-Z a-z 0-9 . _ + -. */
bool term_is_valid(const char *term);

/* The JSON key stampctl uses for a bus property: the one vocabulary of every --json output, where
 * table columns and properties meet ("ReadOnly" → "ro", "CreationTimestamp" → "created",
 * "UserNamespace" → "userns", else CamelCase → snake_case: "UsageExclusive" → "usage_exclusive").
 * Returns a new string, or NULL. */
char *json_key_from_property(const char *property);

/* The exit code for a machine's ExitStatus (128+N for a command ended by signal N); @interrupted: our
 * Ctrl-C stopped it, which a shell reports as 128+SIGINT. */
int exit_code_from_machine_status(int status, bool interrupted);

/* @json with the whitespace between tokens removed, each top-level value on a line of its own (for
 * --json=short). Returns a new string, or NULL. */
char *json_compact(const char *json);
