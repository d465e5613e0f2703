/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <limits.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "formats.h"
#include "names.h"
#include "util.h"

int parse_boolean(const char *s)
{
        static const char *const yes[] = {"yes", "y", "true", "t", "on", "1"};
        static const char *const no[] = {"no", "n", "false", "f", "off", "0"};

        if (!s)
                return -EINVAL;
        for (size_t i = 0; i < ELEMENTSOF(yes); i++)
                if (strcasecmp(s, yes[i]) == 0)
                        return 1;
        for (size_t i = 0; i < ELEMENTSOF(no); i++)
                if (strcasecmp(s, no[i]) == 0)
                        return 0;
        return -EINVAL;
}

static const struct {
        const char *name;
        int signo;
} signal_names[] = {
        {"HUP", SIGHUP},
        {"INT", SIGINT},
        {"QUIT", SIGQUIT},
        {"ILL", SIGILL},
        {"TRAP", SIGTRAP},
        {"ABRT", SIGABRT},
        {"BUS", SIGBUS},
        {"FPE", SIGFPE},
        {"KILL", SIGKILL},
        {"USR1", SIGUSR1},
        {"SEGV", SIGSEGV},
        {"USR2", SIGUSR2},
        {"PIPE", SIGPIPE},
        {"ALRM", SIGALRM},
        {"TERM", SIGTERM},
#ifdef SIGSTKFLT
        {"STKFLT", SIGSTKFLT},
#endif
        {"CHLD", SIGCHLD},
        {"CONT", SIGCONT},
        {"STOP", SIGSTOP},
        {"TSTP", SIGTSTP},
        {"TTIN", SIGTTIN},
        {"TTOU", SIGTTOU},
        {"URG", SIGURG},
        {"XCPU", SIGXCPU},
        {"XFSZ", SIGXFSZ},
        {"VTALRM", SIGVTALRM},
        {"PROF", SIGPROF},
        {"WINCH", SIGWINCH},
        {"IO", SIGIO},
#ifdef SIGPWR
        {"PWR", SIGPWR},
#endif
        {"SYS", SIGSYS},
        /* aliases, after the canonical names so that signal_to_string() finds those */
        {"IOT", SIGABRT},
        {"POLL", SIGIO},
        {"CLD", SIGCHLD},
};

static int parse_small_int(const char *s, int max)
{
        char *end;
        long v;

        if (!s || *s < '0' || *s > '9')
                return -EINVAL;
        errno = 0;
        v = strtol(s, &end, 10);
        if (errno != 0 || *end != '\0' || v > max)
                return -EINVAL;
        return (int) v;
}

int signal_from_string(const char *s)
{
        int n;

        if (!s || !*s)
                return -EINVAL;

        n = parse_small_int(s, SIGRTMAX);
        if (n >= 0)
                return n >= 1 ? n : -EINVAL;

        if (strncasecmp(s, "SIG", 3) == 0)
                s += 3;

        for (size_t i = 0; i < ELEMENTSOF(signal_names); i++)
                if (strcasecmp(s, signal_names[i].name) == 0)
                        return signal_names[i].signo;

        if (strncasecmp(s, "RTMIN", 5) == 0) {
                if (s[5] == '\0')
                        return SIGRTMIN;
                if (s[5] != '+')
                        return -EINVAL;
                n = parse_small_int(s + 6, SIGRTMAX - SIGRTMIN);
                return n < 0 ? -EINVAL : SIGRTMIN + n;
        }
        if (strncasecmp(s, "RTMAX", 5) == 0) {
                if (s[5] == '\0')
                        return SIGRTMAX;
                if (s[5] != '-')
                        return -EINVAL;
                n = parse_small_int(s + 6, SIGRTMAX - SIGRTMIN);
                return n < 0 ? -EINVAL : SIGRTMAX - n;
        }
        return -EINVAL;
}

const char *signal_to_string(int signo)
{
        for (size_t i = 0; i < ELEMENTSOF(signal_names); i++)
                if (signal_names[i].signo == signo)
                        return signal_names[i].name;
        return NULL;
}

char *image_name_from_filename(const char *filename)
{
        const char *start, *end;
        _cleanup_(freep) char *name = NULL;
        size_t len;

        if (!filename) {
                errno = EINVAL;
                return NULL;
        }

        const char *path = filename, *scheme = strstr(filename, "://");

        end = filename + strlen(filename);
        if (scheme) {
                /* A URL: the name comes from its path, which ends at the query or fragment. */
                const char *q = strpbrk(filename, "?#");
                if (q)
                        end = q;
                path = scheme + 3;
                path += strcspn(path, "/?#");
        }
        while (end > path && end[-1] == '/')
                end--;
        start = end;
        while (start > path && start[-1] != '/')
                start--;

        name = strndup(start, end - start);
        if (!name)
                return NULL;
        len = archive_name_strip_suffix(name, strlen(name));
        name[len] = '\0';

        if (!image_name_is_valid(name)) {
                errno = EINVAL;
                return NULL;
        }
        return steal_pointer(&name);
}

size_t strv_length(char *const *l)
{
        size_t n = 0;

        if (l)
                while (l[n])
                        n++;
        return n;
}

int strv_extend_comma_list(char ***list, const char *s)
{
        size_t n = strv_length(*list);
        const char *p = s;

        while (p && *p) {
                size_t k = strcspn(p, ",");
                if (k > 0) {
                        char **l = realloc(*list, sizeof(char *) * (n + 2));
                        if (!l)
                                return -ENOMEM;
                        *list = l;
                        l[n] = strndup(p, k);
                        if (!l[n])
                                return -ENOMEM;
                        l[++n] = NULL;
                }
                p += k;
                if (*p == ',')
                        p++;
        }
        if (!*list) {
                *list = calloc(1, sizeof(char *));
                if (!*list)
                        return -ENOMEM;
        }
        return 0;
}

void json_fputs(const char *s, FILE *f)
{
        if (!s) {
                fputs("null", f);
                return;
        }
        fputc('"', f);
        for (const unsigned char *p = (const unsigned char *) s; *p; p++)
                switch (*p) {
                case '"':
                        fputs("\\\"", f);
                        break;
                case '\\':
                        fputs("\\\\", f);
                        break;
                case '\n':
                        fputs("\\n", f);
                        break;
                case '\t':
                        fputs("\\t", f);
                        break;
                case '\r':
                        fputs("\\r", f);
                        break;
                case '\b':
                        fputs("\\b", f);
                        break;
                case '\f':
                        fputs("\\f", f);
                        break;
                default:
                        if (*p < 0x20 || *p == 0x7f)
                                fprintf(f, "\\u%04x", *p);
                        else
                                fputc(*p, f);
                }
        fputc('"', f);
}

/* Appends i's children (by name) after i, depth first. */
static void tree_visit(const char *const *name, size_t n, const long *parent, size_t i, unsigned d, bool *seen,
                       size_t *order, size_t *k, unsigned *depth)
{
        const char *last = NULL;

        seen[i] = true;
        depth[i] = d;
        order[(*k)++] = i;

        /* Children in name order: pick the smallest unseen child greater than the last one. */
        for (;;) {
                long best = -1;
                for (size_t j = 0; j < n; j++) {
                        if (seen[j] || parent[j] != (long) i)
                                continue;
                        if (last && strcmp(name[j], last) < 0)
                                continue;
                        if (best < 0 || strcmp(name[j], name[best]) < 0)
                                best = (long) j;
                }
                if (best < 0)
                        break;
                last = name[best];
                tree_visit(name, n, parent, (size_t) best, d + 1, seen, order, k, depth);
        }
}

void tree_order(const char *const *name, const char *const *origin, size_t n, size_t *order, long *parent,
                unsigned *depth)
{
        _cleanup_(freep) bool *seen = calloc(n ? n : 1, sizeof(bool));
        size_t k = 0;

        if (!seen) {
                /* Out of memory: a flat list is still a correct answer. */
                for (size_t i = 0; i < n; i++) {
                        order[i] = i;
                        parent[i] = -1;
                        depth[i] = 0;
                }
                return;
        }

        for (size_t i = 0; i < n; i++) {
                parent[i] = -1;
                if (!origin[i] || !origin[i][0])
                        continue;
                for (size_t j = 0; j < n; j++)
                        if (j != i && strcmp(name[j], origin[i]) == 0) {
                                parent[i] = (long) j;
                                break;
                        }
        }

        /* Items on a loop of origins never reach a root: break each loop at its
         * smallest name, which becomes a root. */
        for (size_t i = 0; i < n; i++) {
                size_t steps = 0;
                long p = (long) i;
                while (p >= 0 && steps <= n) {
                        p = parent[p];
                        steps++;
                }
                if (p < 0)
                        continue;
                /* i leads into a loop; find the loop's smallest member. */
                long start = (long) i;
                for (size_t s = 0; s < n; s++)
                        start = parent[start];
                long min = start;
                for (long q = parent[start]; q != start; q = parent[q])
                        if (strcmp(name[q], name[min]) < 0)
                                min = q;
                parent[min] = -1;
        }

        /* Roots in name order, each followed by its subtree. */
        for (;;) {
                long best = -1;
                for (size_t j = 0; j < n; j++) {
                        if (seen[j] || parent[j] >= 0)
                                continue;
                        if (best < 0 || strcmp(name[j], name[best]) < 0)
                                best = (long) j;
                }
                if (best < 0)
                        break;
                tree_visit(name, n, parent, (size_t) best, 0, seen, order, &k, depth);
        }
}

unsigned edit_distance(const char *a, const char *b)
{
        size_t n = strlen(a), m = strlen(b);
        unsigned row[64], prev;

        /* Verbs are short; anything longer is far from all of them. */
        if (n >= ELEMENTSOF(row) || m >= ELEMENTSOF(row))
                return UINT_MAX;
        for (size_t j = 0; j <= m; j++)
                row[j] = (unsigned) j;
        for (size_t i = 1; i <= n; i++) {
                prev = row[0];
                row[0] = (unsigned) i;
                for (size_t j = 1; j <= m; j++) {
                        unsigned here = row[j];
                        unsigned best = prev + (a[i - 1] != b[j - 1]);
                        if (row[j] + 1 < best)
                                best = row[j] + 1;
                        if (row[j - 1] + 1 < best)
                                best = row[j - 1] + 1;
                        row[j] = best;
                        prev = here;
                }
        }
        return row[m];
}

bool term_is_valid(const char *term)
{
        size_t n;

        if (!term)
                return false;
        n = strlen(term);
        if (n == 0 || n > 64)
                return false;
        return strspn(term, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._+-") == n;
}

char *json_key_from_property(const char *property)
{
        static const struct {
                const char *property, *key;
        } same_as_columns[] = {
                {"ReadOnly", "ro"},          {"CreationTimestamp", "created"}, {"ModificationTimestamp", "modified"},
                {"UserNamespace", "userns"}, {"OSRelease", "os_release"},      {"UIDShift", "uid_shift"},
        };
        char *key, *q;

        if (!property)
                return NULL;
        for (size_t i = 0; i < ELEMENTSOF(same_as_columns); i++)
                if (strcmp(property, same_as_columns[i].property) == 0)
                        return strdup(same_as_columns[i].key);
        key = malloc(strlen(property) * 2 + 1);
        if (!key)
                return NULL;
        q = key;
        for (const char *p = property; *p; p++) {
                if (*p >= 'A' && *p <= 'Z') {
                        if (p != property)
                                *q++ = '_';
                        *q++ = (char) (*p - 'A' + 'a');
                } else
                        *q++ = *p;
        }
        *q = '\0';
        return key;
}

/* Shell-like exit code for the machine's status (stampd says 128+N for a command ended by signal N). A
 * command that our Ctrl-C ended ends as a shell's foreground command would: 128+SIGINT. */
int exit_code_from_machine_status(int status, bool interrupted)
{
        if (interrupted && status == 128 + SIGTERM)
                return 128 + SIGINT;
        if (status >= 0 && status <= 255)
                return status;
        if (status < 0 && status > -128)
                return 128 - status; /* killed by signal -status */
        return 255;
}

char *json_compact(const char *json)
{
        char *out = malloc(strlen(json) + 1), *q = out;
        bool in_string = false, escaped = false;
        int depth = 0;

        if (!out)
                return NULL;
        for (const char *p = json; *p; p++) {
                char c = *p;
                if (in_string) {
                        *q++ = c;
                        if (escaped)
                                escaped = false;
                        else if (c == '\\')
                                escaped = true;
                        else if (c == '"')
                                in_string = false;
                        continue;
                }
                if (c == ' ' || c == '\t' || c == '\r' || c == '\n') {
                        /* Between two top-level values: a line each. */
                        if (c == '\n' && depth == 0 && q > out && q[-1] != '\n')
                                *q++ = '\n';
                        continue;
                }
                if (c == '"')
                        in_string = true;
                else if (c == '{' || c == '[')
                        depth++;
                else if ((c == '}' || c == ']') && depth > 0)
                        depth--;
                *q++ = c;
        }
        while (q > out && q[-1] == '\n')
                q--;
        *q = '\0';
        return out;
}
