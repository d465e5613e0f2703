/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <ctype.h>
#include <dirent.h>
#include <fcntl.h>
#include <linux/openat2.h>
#include <grp.h>
#include <poll.h>
#include <pthread.h>
#include <sys/file.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <sys/xattr.h>

#include <btrfsutil.h>

#include "btrfs-util.h"
#include "build-cache.h"
#include "cache.h"
#include "config.h"
#include "sha256.h"
#include "store.h"
#include "transfer.h"

/* The CreateTemplate job: a Debian base made by debootstrap into the job's hidden temporary in the
 * store, renamed into place only when it is complete. stampd checked the arguments (daemon/
 * job-template.c); this drives debootstrap, reads its progress, and finishes the tree. */

#define FALLBACK_MIRROR "http://deb.debian.org/debian"
#define MMDEBSTRAP "/usr/bin/mmdebstrap"
#define MMDEBSTRAP_MERGED_USR_HOOKS "/usr/share/mmdebstrap/hooks/maybe-merged-usr"
/* Where the locks of the jails' uid ranges are kept (the downloaded packages are in the store's own
 * cache, see store/cache.h). STAMP_CACHE_DIR in the daemon's environment (which it hands on to this
 * helper) overrides it; the tests point it at a directory of their own. */
#define CACHE_DIR_ENV "STAMP_CACHE_DIR"

/* Bounds what a caller's pipe can make us write before the job gives up. */
#define TARBALL_MAX (UINT64_C(16) << 30)
#define LINE_MAX_LEN 4000
#define MESSAGE_ARGS_MAX 16
/* The package tarball is copied into the tree being built and removed from it when debootstrap is done;
 * should the job fail, it goes with the temporary. */
#define TARBALL_NAME ".stamp-package-tarball"

static const char *const bootable_packages[] = {"systemd-sysv", "dbus", "libpam-systemd", NULL};

/* A mirror of the host's apt sources that may name the template's origin: never one with
 * credentials, which would end up on debootstrap's command line and in the recipe. */
static bool host_mirror_is_usable(const char *uri)
{
        const char *authority = strstr(uri, "://");
        size_t n;

        if (!debian_mirror_is_valid(uri) || !authority)
                return false;
        authority += 3;
        n = strcspn(authority, "/?#");
        return !memchr(authority, '@', n);
}

/* debootstrap's phases, in the order it goes through them, as named on its progress lines. */
typedef enum {
        PHASE_PREPARE, /* copying and unpacking the package tarball */
        PHASE_INDEXES,
        PHASE_SIZES,
        PHASE_DOWNLOAD,
        PHASE_EXTRACT,
        PHASE_CORE,
        PHASE_UNPACK_REQUIRED,
        PHASE_CONFIGURE_REQUIRED,
        PHASE_UNPACK_BASE,
        PHASE_CONFIGURE_BASE,
        PHASE_FINISH, /* ours: clean-up, recipe, read-only, rename */
        _PHASE_MAX,
} Phase;

/* Rough shares of the work each phase is in a bookworm minbase build: online, from a tarball, and a
 * derived build (snapshot; apt's index update, download, install; finish). */
static const double phase_weight[4][_PHASE_MAX] = {
        {0, .04, .01, .30, .10, .05, .15, .15, .08, .10, .02},
        {.15, 0, 0, 0, .10, .05, .20, .20, .12, .15, .03},
        {.05, .25, 0, .25, 0, 0, 0, 0, 0, .40, .05},
        /* mmdebstrap: its essential set counts as "required", the rest as "base" */
        {0, .05, 0, .30, .10, 0, .30, 0, .20, 0, .05},
};

/* mmdebstrap's "I:" lines that begin a phase. */
static const struct {
        const char *prefix;
        Phase phase;
} mmdebstrap_phases[] = {
        {"I: running apt-get update", PHASE_INDEXES},
        {"I: downloading packages", PHASE_DOWNLOAD},
        {"I: extracting archives", PHASE_EXTRACT},
        {"I: installing essential packages", PHASE_UNPACK_REQUIRED},
        {"I: installing remaining packages", PHASE_UNPACK_BASE},
        {"I: cleaning package lists", PHASE_FINISH},
};

static const struct {
        const char *name;
        Phase phase;
} phase_names[] = {
        {"DOWNREL", PHASE_INDEXES},
        {"DOWNRELSIG", PHASE_INDEXES},
        {"DOWNPKGS", PHASE_INDEXES},
        {"DOWNMAINPKGS", PHASE_INDEXES},
        {"SIZEDEBS", PHASE_SIZES},
        {"DOWNDEBS", PHASE_DOWNLOAD},
        {"EXTRACTPKGS", PHASE_EXTRACT},
        {"INSTCORE", PHASE_CORE},
        {"UNPACKREQ", PHASE_UNPACK_REQUIRED},
        {"CONFREQ", PHASE_CONFIGURE_REQUIRED},
        {"UNPACKBASE", PHASE_UNPACK_BASE},
        {"CONFBASE", PHASE_CONFIGURE_BASE},
};

typedef struct LineBuffer {
        char buf[LINE_MAX_LEN + 1];
        size_t n;
} LineBuffer;

typedef struct Build {
        JobChild *c;
        const JobArgs *a;
        bool offline;
        bool derived;    /* apt inside a snapshot of a template, not debootstrap */
        bool mmdebstrap; /* an online build by mmdebstrap */
        int pty_master;  /* mmdebstrap's stderr: it draws its progress only on a terminal */
        int pty_slave;
        const char *tool; /* what runs, for messages */
        Phase apt_phase;  /* the phase apt's download status counts for */
        int tree_fd;
        const char *mounted; /* the tree's path, where it has a bind mount of its own (see below) */

        Phase phase;
        double reported;
        int cache_lock_fd; /* held while debootstrap downloads into the shared cache */

        /* debootstrap's messages (--debian-installer protocol on fd 3) come as a NAME line, argument
         * lines, and a format line. */
        char kind;
        char *args[MESSAGE_ARGS_MAX];
        size_t n_args;
        char *last_error;
        bool out_of_space; /* some tool said ENOSPC: debootstrap's own last word is then misleading */
        char *tail[3];     /* last lines of the tools' own output, for a failure without an E: message */

        LineBuffer info, output, terminal;
        const char *tmpdir;    /* HOME and TMPDIR of what runs, if not /root and /tmp */
        bool made_resolv_conf; /* an empty /etc/resolv.conf of ours is in the tree */

        int jail_lock_fd;   /* holds the uid range of the jail */
        uint32_t jail_base; /* a derived build's range, for each of its runs of apt */
        const char *target; /* the tree's path */
        bool jail_mounted;  /* the idmapped tree is mounted over it */

        /* The mirror's credentials for wget, see write_wgetrc(). */
        char *secret_dir;
        bool secret_mounted;
        char *wgetrc;
} Build;

static void build_clear_args(Build *b)
{
        for (size_t i = 0; i < b->n_args; i++)
                free(b->args[i]);
        b->n_args = 0;
}

static void build_done(Build *b)
{
        build_clear_args(b);
        free(b->last_error);
        for (size_t i = 0; i < ELEMENTSOF(b->tail); i++)
                free(b->tail[i]);
        safe_close(b->cache_lock_fd);
        safe_close(b->pty_master);
        safe_close(b->pty_slave);
        if (b->jail_mounted)
                (void) umount2(b->target, MNT_DETACH);
        safe_close(b->jail_lock_fd);
        if (b->wgetrc)
                (void) unlink(b->wgetrc);
        if (b->secret_mounted)
                (void) umount2(b->secret_dir, MNT_DETACH);
        if (b->secret_dir)
                (void) rmdir(b->secret_dir);
        g_free(b->wgetrc);
        g_free(b->secret_dir);
}

static double phase_start(const Build *b, Phase p)
{
        double s = 0;

        for (Phase i = 0; i < p; i++)
                s += phase_weight[b->mmdebstrap ? 3 : b->derived ? 2 : b->offline][i];
        return s;
}

/* Progress only goes forward, whatever order debootstrap's counters come in. */
static void build_progress(Build *b, Phase p, double fraction)
{
        double v;

        if (p < b->phase)
                return;
        b->phase = p;
        if (!(fraction >= 0))
                fraction = 0;
        if (fraction > 1)
                fraction = 1;
        v = phase_start(b, p) + phase_weight[b->mmdebstrap ? 3 : b->derived ? 2 : b->offline][p] * fraction;
        if (v > 1)
                v = 1;
        /* debootstrap's packages are all in the cache once extraction begins: let a waiting build have it
         * (mmdebstrap and apt may download until they end). */
        if (p > PHASE_DOWNLOAD && !b->derived && !b->mmdebstrap)
                b->cache_lock_fd = safe_close(b->cache_lock_fd);
        if (v < b->reported + 0.0005 && !(v == 1 && b->reported < 1))
                return;
        b->reported = v;
        job_child_progress(b->c, v);
}

static void handle_progress_line(Build *b, const char *rest)
{
        char name[32] = "";
        unsigned long long now, end;
        int n = sscanf(rest, "%llu %llu %31s", &now, &end, name);
        Phase p = b->phase;

        if (n < 2)
                return;
        if (n == 3) {
                for (size_t i = 0; i < ELEMENTSOF(phase_names); i++)
                        if (streq(phase_names[i].name, name))
                                p = phase_names[i].phase;
        }
        build_progress(b, p, end > 0 ? (double) now / (double) end : 0);
}

/* debootstrap's formats take %s only; each conversion is the next argument. */
static void format_message(const char *fmt, char *const *args, size_t n_args, char *out, size_t size)
{
        size_t o = 0, next = 0;

        for (const char *p = fmt; *p && o + 1 < size; p++) {
                const char *piece;
                if (*p != '%') {
                        out[o++] = *p;
                        continue;
                }
                if (p[1] == '%') {
                        out[o++] = '%';
                        p++;
                        continue;
                }
                while (p[1] && strchr("-+ #0123456789.lhz", p[1]))
                        p++;
                if (p[1])
                        p++;
                piece = next < n_args ? args[next] : "";
                next++;
                for (; *piece && o + 1 < size; piece++)
                        out[o++] = *piece;
        }
        out[o] = '\0';
}

/* apt's APT::Status-Fd lines: "dlstatus:N:PERCENT:TEXT", "pmstatus:PKG:PERCENT:TEXT", "pmerror:…". */
static bool handle_apt_status_line(Build *b, const char *line)
{
        bool download = g_str_has_prefix(line, "dlstatus:"), install = g_str_has_prefix(line, "pmstatus:");
        const char *f = strchr(line, ':'), *text;
        double pct;

        if (!download && !install && !g_str_has_prefix(line, "pmerror:"))
                return false;
        f = f ? strchr(f + 1, ':') : NULL; /* after the package or item */
        if (!f)
                return true;
        text = strchr(f + 1, ':');
        if (g_str_has_prefix(line, "pmerror:")) {
                free(b->last_error);
                b->last_error = strdup(f + 1);
                job_child_log(b->c, LOG_LEVEL_ERR, "E: %s", f + 1);
                return true;
        }
        pct = g_ascii_strtod(f + 1, NULL);
        build_progress(b, install ? PHASE_CONFIGURE_BASE : b->apt_phase, pct / 100);
        if (text)
                job_child_log(b->c, install ? LOG_LEVEL_INFO : LOG_LEVEL_DEBUG, "%s", text + 1);
        return true;
}

static void handle_info_line(Build *b, const char *line)
{
        char kind = line[0];

        if (b->derived && handle_apt_status_line(b, line))
                return;

        if (kind == 'P' && line[1] == ':' && line[2] == ' ') {
                handle_progress_line(b, line + 3);
                return;
        }
        if (kind == 'P' && (line[1] == 'A' || line[1] == 'F') && line[2] == ':')
                return; /* the description of a progress phase: the log already says it */
        if (kind != '\0' && strchr("IWE", kind)) {
                if (line[1] == ':') {
                        b->kind = kind;
                        build_clear_args(b);
                        return;
                }
                if (line[1] == 'A' && line[2] == ':' && b->kind == kind) {
                        if (b->n_args < MESSAGE_ARGS_MAX)
                                b->args[b->n_args++] = strdup(line[3] == ' ' ? line + 4 : line + 3);
                        return;
                }
                if (line[1] == 'F' && line[2] == ':' && b->kind == kind) {
                        char text[LINE_MAX_LEN];
                        format_message(line[3] == ' ' ? line + 4 : line + 3, b->args, b->n_args, text, sizeof text);
                        build_clear_args(b);
                        b->kind = 0;
                        job_child_log(b->c,
                                      kind == 'E'   ? LOG_LEVEL_ERR
                                      : kind == 'W' ? LOG_LEVEL_WARNING
                                                    : LOG_LEVEL_INFO,
                                      "%c: %s", kind, text);
                        if (kind == 'E') {
                                free(b->last_error);
                                b->last_error = strdup(text);
                        }
                        return;
                }
        }
        job_child_log(b->c, LOG_LEVEL_INFO, "%s", line);
}

static void handle_output_line(Build *b, const char *line)
{
        if (line[0] == '\0')
                return;
        /* The tools debootstrap runs (dpkg, tar, the maintainer scripts) talk a lot: a level below its own
         * messages, so a client can choose. */
        job_child_log(b->c, LOG_LEVEL_DEBUG, "%s", line);
        if (strstr(line, "No space left on device") || strstr(line, "Disk quota exceeded"))
                b->out_of_space = true;
        free(b->tail[0]);
        memmove(b->tail, b->tail + 1, sizeof b->tail - sizeof b->tail[0]);
        b->tail[ELEMENTSOF(b->tail) - 1] = strdup(line);
}

/* What mmdebstrap writes on its terminal: "I:", "W:", "E:" lines, and progress bars redrawn after a
 * carriage return: ESC[2K, "status:", a percentage, "[===>   ]". */
static void handle_terminal_line(Build *b, const char *raw)
{
        char clean[LINE_MAX_LEN + 1], *end, *line = clean;
        size_t o = 0;
        double pct;

        /* Without the terminal's escapes (colours, line clearing): CSI … final byte. */
        for (const char *p = raw; *p && o < LINE_MAX_LEN; p++) {
                if (p[0] == '\033' && p[1] == '[') {
                        p += 2;
                        while (*p && !(*p >= 0x40 && *p <= 0x7e))
                                p++;
                        if (!*p)
                                break;
                        continue;
                }
                clean[o++] = *p;
        }
        clean[o] = '\0';
        if (line[0] == '\0' || streq(line, "done"))
                return;
        for (size_t i = 0; i < ELEMENTSOF(mmdebstrap_phases); i++)
                if (g_str_has_prefix(line, mmdebstrap_phases[i].prefix))
                        build_progress(b, mmdebstrap_phases[i].phase, 0);
        if (line[0] != '\0' && strchr("IWE", line[0]) && line[1] == ':') {
                job_child_log(b->c,
                              line[0] == 'E'   ? LOG_LEVEL_ERR
                              : line[0] == 'W' ? LOG_LEVEL_WARNING
                                               : LOG_LEVEL_INFO,
                              "%s", line);
                if (line[0] == 'E') {
                        free(b->last_error);
                        b->last_error = strdup(line + 2 + strspn(line + 2, " "));
                }
                return;
        }
        /* A progress bar: the percentage after an optional "status:". */
        line += strcspn(line, ":[0123456789. ");
        if (*line == ':')
                line++;
        line += strspn(line, " ");
        pct = g_ascii_strtod(line, &end);
        if (end != line && (*end == ' ' || *end == '\0'))
                build_progress(b, b->phase, pct / 100);
        else
                handle_output_line(b, line);
}

static void line_buffer_feed(Build *b, LineBuffer *lb, const char *data, size_t n,
                             void (*handle)(Build *b, const char *line))
{
        for (size_t i = 0; i < n; i++) {
                if (data[i] == '\n' || lb->n == LINE_MAX_LEN || (data[i] == '\r' && handle == handle_terminal_line)) {
                        lb->buf[lb->n] = '\0';
                        handle(b, lb->buf);
                        lb->n = 0;
                        if (data[i] == '\n' || data[i] == '\r')
                                continue;
                }
                lb->buf[lb->n++] = data[i];
        }
}

static void line_buffer_flush(Build *b, LineBuffer *lb, void (*handle)(Build *b, const char *line))
{
        if (lb->n > 0) {
                lb->buf[lb->n] = '\0';
                handle(b, lb->buf);
                lb->n = 0;
        }
}

/* Read what is there: > 0 after data, 0 at EOF or on error, -EAGAIN when there is nothing yet. */
static int pump(Build *b, int fd, LineBuffer *lb, void (*handle)(Build *b, const char *line))
{
        char buf[8192];
        ssize_t n = read(fd, buf, sizeof buf);

        if (n < 0 && (errno == EINTR || errno == EAGAIN))
                return -EAGAIN;
        if (n <= 0) {
                line_buffer_flush(b, lb, handle);
                return 0;
        }
        line_buffer_feed(b, lb, buf, (size_t) n, handle);
        return 1;
}

static int run_capture(char *const argv[], char *out, size_t size)
{
        _cleanup_close_ int rfd = -1;
        int pipefd[2], status;
        size_t o = 0;
        pid_t pid;

        if (pipe2(pipefd, O_CLOEXEC) < 0)
                return -errno;
        pid = safe_fork(false);
        if (pid < 0) {
                safe_close(pipefd[0]);
                safe_close(pipefd[1]);
                return (int) pid;
        }
        if (pid == 0) {
                int null = open("/dev/null", O_RDWR | O_CLOEXEC);
                if (null >= 0) {
                        (void) dup2(null, STDIN_FILENO);
                        (void) dup2(null, STDERR_FILENO);
                }
                if (dup2(pipefd[1], STDOUT_FILENO) < 0)
                        _exit(126);
                execvp(argv[0], argv);
                _exit(127);
        }
        safe_close(pipefd[1]);
        rfd = pipefd[0];
        for (;;) {
                ssize_t n = read(rfd, out + o, size - 1 - o);
                if (n < 0 && errno == EINTR)
                        continue;
                if (n <= 0)
                        break;
                o += (size_t) n;
                if (o >= size - 1)
                        break;
        }
        out[o] = '\0';
        while (waitpid(pid, &status, 0) < 0)
                if (errno != EINTR)
                        return -errno;
        if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
                return -EIO;
        return 0;
}

static int host_arch(char **ret)
{
        char *argv[] = {(char *) "dpkg", (char *) "--print-architecture", NULL};
        static const struct {
                const char *machine, *arch;
        } map[] = {
                {"x86_64", "amd64"},    {"aarch64", "arm64"},   {"i686", "i386"},
                {"riscv64", "riscv64"}, {"ppc64le", "ppc64el"}, {"s390x", "s390x"},
        };
        char out[64];
        struct utsname u;

        if (run_capture(argv, out, sizeof out) >= 0) {
                out[strcspn(out, "\n")] = '\0';
                if (debian_arch_is_valid(out))
                        return (*ret = strdup(out)) ? 0 : -ENOMEM;
        }
        /* No dpkg on this host: the kernel's name for it will do for the common ones. */
        if (uname(&u) < 0)
                return -errno;
        for (size_t i = 0; i < ELEMENTSOF(map); i++)
                if (streq(u.machine, map[i].machine))
                        return (*ret = strdup(map[i].arch)) ? 0 : -ENOMEM;
        return -EOPNOTSUPP;
}

/* The first archive of the host's apt sources that serves a release itself (not -security, -updates,
 * …). One-line entries: "deb [options] URI suite components". */
static char *mirror_from_list(FILE *f)
{
        char line[2048];

        while (fgets(line, sizeof line, f)) {
                char *save = NULL, *w, *uri, *suite;

                w = strtok_r(line, " \t\r\n", &save);
                if (!w || !streq(w, "deb"))
                        continue;
                uri = strtok_r(NULL, " \t\r\n", &save);
                if (uri && uri[0] == '[') {
                        while (uri && !strchr(uri, ']'))
                                uri = strtok_r(NULL, " \t\r\n", &save);
                        uri = strtok_r(NULL, " \t\r\n", &save);
                }
                suite = strtok_r(NULL, " \t\r\n", &save);
                if (uri && suite && !strchr(suite, '-') && !strchr(suite, '/') && host_mirror_is_usable(uri))
                        return strdup(uri);
        }
        return NULL;
}

/* deb822 stanzas: "Types: deb", "URIs: …", "Suites: …", maybe "Enabled: no". */
static char *mirror_from_sources(FILE *f)
{
        char line[2048];
        g_autofree char *uris = NULL, *suites = NULL;
        bool deb = false, enabled = true, eof = false;

        while (!eof) {
                char *v;

                eof = !fgets(line, sizeof line, f);
                if (eof)
                        line[0] = '\0';
                g_strstrip(line);
                if (eof || line[0] == '\0') {
                        if (deb && enabled && uris && suites) {
                                g_auto(GStrv) us = g_strsplit_set(uris, " \t", -1);
                                g_auto(GStrv) ss = g_strsplit_set(suites, " \t", -1);
                                bool release = false;
                                for (char **s = ss; *s; s++)
                                        if (**s && !strchr(*s, '-') && !strchr(*s, '/'))
                                                release = true;
                                for (char **u = us; release && *u; u++)
                                        if (host_mirror_is_usable(*u))
                                                return strdup(*u);
                        }
                        g_clear_pointer(&uris, g_free);
                        g_clear_pointer(&suites, g_free);
                        deb = false;
                        enabled = true;
                        continue;
                }
                if (line[0] == '#')
                        continue;
                v = strchr(line, ':');
                if (!v)
                        continue;
                *v++ = '\0';
                v = g_strstrip(v);
                if (g_ascii_strcasecmp(line, "Types") == 0) {
                        g_auto(GStrv) ts = g_strsplit_set(v, " \t", -1);
                        deb = g_strv_contains((const char *const *) ts, "deb");
                } else if (g_ascii_strcasecmp(line, "URIs") == 0) {
                        g_free(uris);
                        uris = g_strdup(v);
                } else if (g_ascii_strcasecmp(line, "Suites") == 0) {
                        g_free(suites);
                        suites = g_strdup(v);
                } else if (g_ascii_strcasecmp(line, "Enabled") == 0)
                        enabled = g_ascii_strcasecmp(v, "no") != 0;
        }
        return NULL;
}

static gint compare_names(gconstpointer a, gconstpointer b)
{
        return strcmp(*(char *const *) a, *(char *const *) b);
}

static char *host_mirror(void)
{
        _cleanup_fclose_ FILE *f = fopen("/etc/apt/sources.list", "re");
        g_autoptr(GPtrArray) names = g_ptr_array_new_with_free_func(g_free);
        char *found = NULL;
        DIR *d;
        struct dirent *de;

        if (f && (found = mirror_from_list(f)))
                return found;
        d = opendir("/etc/apt/sources.list.d");
        if (d) {
                while ((de = readdir(d)))
                        if (g_str_has_suffix(de->d_name, ".list") || g_str_has_suffix(de->d_name, ".sources"))
                                g_ptr_array_add(names, g_strdup(de->d_name));
                closedir(d);
        }
        g_ptr_array_sort(names, compare_names); /* apt's order */
        for (guint i = 0; !found && i < names->len; i++) {
                g_autofree char *path = g_build_filename("/etc/apt/sources.list.d", names->pdata[i], NULL);
                _cleanup_fclose_ FILE *g = fopen(path, "re");
                if (!g)
                        continue;
                found = g_str_has_suffix(path, ".sources") ? mirror_from_sources(g) : mirror_from_list(g);
        }
        return found ?: strdup(FALLBACK_MIRROR);
}

static int mkdir_parents(const char *path, mode_t mode)
{
        g_autofree char *p = g_strdup(path);

        for (char *s = p + 1; *s; s++) {
                if (*s != '/')
                        continue;
                *s = '\0';
                if (mkdir(p, mode) < 0 && errno != EEXIST)
                        return -errno;
                *s = '/';
        }
        if (mkdir(p, mode) < 0 && errno != EEXIST)
                return -errno;
        return 0;
}

static const char *cache_root(void)
{
        const char *e = getenv(CACHE_DIR_ENV);

        if (e && e[0] == '/')
                return e;
        return CACHEDIR[0] == '/' ? CACHEDIR : "/var/cache/stamp";
}

static int open_in_tree(int tree_fd, const char *path, int flags, mode_t mode)
{
        struct open_how how = {
                .flags = (uint64_t) (flags | O_CLOEXEC | O_NOFOLLOW),
                .mode = (flags & O_CREAT) ? mode : 0,
                .resolve = RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS | RESOLVE_NO_XDEV,
        };
        long fd = openat2_retry(tree_fd, path, &how);
        return fd < 0 ? -errno : (int) fd;
}

/* The caller's tarball for debootstrap: a link in the tree to the fd (a regular file), or a copy in the tree
 * (a pipe); returns the name it got there. */
static int copy_tarball(Build *b, int src, int tree_fd, const char **ret_name)
{
        static const struct {
                const uint8_t magic[6];
                size_t len;
                const char *name;
        } kinds[] = {
                {{0x1f, 0x8b}, 2, TARBALL_NAME ".tgz"},
                {{0xfd, '7', 'z', 'X', 'Z', 0}, 6, TARBALL_NAME ".tar.xz"},
        };
        _cleanup_close_ int dst = -1;
        uint8_t buf[128 * 1024];
        uint64_t total = 0, size = 0;
        const char *name = TARBALL_NAME ".tar";
        bool first = true;
        struct stat st;

        if (fstat(src, &st) >= 0 && S_ISREG(st.st_mode) && st.st_size > 0)
                size = (uint64_t) st.st_size;

        /* A regular file is read where it is, through the fd debootstrap and its tar inherit (see
         * inherit_tarball()), instead of being copied into the tree first: 50 MB and more written, then
         * removed, for nothing. A pipe has to be copied (debootstrap wants a file). */
        if (size > 0) {
                ssize_t n = pread(src, buf, 8, 0);
                g_autofree char *link = g_strdup_printf("/proc/self/fd/%d", src);
                if (size > TARBALL_MAX)
                        return job_child_fail(b->c, EFBIG, "The package tarball is larger than %" PRIu64 " GiB",
                                              TARBALL_MAX >> 30);
                for (size_t i = 0; i < ELEMENTSOF(kinds); i++)
                        if (n >= (ssize_t) kinds[i].len && memcmp(buf, kinds[i].magic, kinds[i].len) == 0)
                                name = kinds[i].name;
                if (n > 0 && symlinkat(link, tree_fd, name) >= 0 && fcntl(src, F_SETFD, 0) >= 0) {
                        job_child_log(b->c, LOG_LEVEL_INFO, "Reading a package tarball of %" PRIu64 " bytes.", size);
                        build_progress(b, PHASE_PREPARE, 1.0 / 3);
                        *ret_name = name;
                        return 0;
                }
                (void) unlinkat(tree_fd, name, 0);
                name = TARBALL_NAME ".tar";
        }

        for (;;) {
                ssize_t n = read(src, buf, sizeof buf);
                if (n < 0 && errno == EINTR)
                        continue;
                if (n < 0)
                        return job_child_fail(b->c, errno, "Cannot read the package tarball: %s", strerror(errno));
                if (first) {
                        /* debootstrap goes by the name to pick a decompressor. */
                        for (size_t i = 0; i < ELEMENTSOF(kinds); i++)
                                if ((size_t) n >= kinds[i].len && memcmp(buf, kinds[i].magic, kinds[i].len) == 0)
                                        name = kinds[i].name;
                        dst = openat(tree_fd, name, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
                        if (dst < 0)
                                return job_child_fail(b->c, errno, "Cannot store the package tarball: %s",
                                                      strerror(errno));
                        first = false;
                }
                if (n == 0)
                        break;
                total += (uint64_t) n;
                if (total > TARBALL_MAX)
                        return job_child_fail(b->c, EFBIG, "The package tarball is larger than %" PRIu64 " GiB",
                                              TARBALL_MAX >> 30);
                if (loop_write(dst, buf, (size_t) n) < 0)
                        return job_child_fail(b->c, errno == ENOSPC ? ENOSPC : EIO,
                                              "Cannot store the package tarball: %s", strerror(errno));
                if (size > 0)
                        build_progress(b, PHASE_PREPARE, (double) total / (double) size / 3);
        }
        if (total == 0)
                return job_child_fail(b->c, EINVAL, "The package tarball is empty");
        job_child_log(b->c, LOG_LEVEL_INFO, "Read a package tarball of %" PRIu64 " bytes.", total);
        build_progress(b, PHASE_PREPARE, 1.0 / 3);
        *ret_name = name;
        return 0;
}

/* The store's package cache for @kind ("debootstrap", "apt") of @suite and @arch, locked for this build. */
static int open_cache(Build *b, const char *kind, const char *suite, const char *arch, char **ret_dir)
{
        g_autofree char *dir = g_strdup_printf("%s/" STORE_CACHE_DIR "/%s/%s-%s", b->c->store, kind, suite, arch);
        g_autofree char *sub = g_strdup_printf("%s-%s", suite, arch);
        _cleanup_close_ int cache = -1, kind_fd = -1, fd = -1;

        cache = store_cache_open(b->c->store_fd);
        if (cache < 0)
                return job_child_fail(b->c, -cache, "Cannot open the store's package cache: %s", strerror(-cache));
        if ((mkdirat(cache, kind, 0700) < 0 && errno != EEXIST) ||
            (kind_fd = openat(cache, kind, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)) < 0 ||
            (mkdirat(kind_fd, sub, 0755) < 0 && errno != EEXIST) ||
            (fd = openat(kind_fd, sub, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)) < 0)
                return job_child_fail(b->c, errno, "Cannot open the package cache %s: %s", dir, strerror(errno));
        /* Two builds downloading the same file into the cache at once would spoil it for both. */
        if (flock(fd, LOCK_EX | LOCK_NB) < 0) {
                job_child_log(b->c, LOG_LEVEL_INFO, "Waiting for another template build that is downloading into %s…",
                              dir);
                if (flock(fd, LOCK_EX) < 0)
                        return job_child_fail(b->c, errno, "Cannot lock the package cache %s: %s", dir,
                                              strerror(errno));
        }
        b->cache_lock_fd = TAKE_FD(fd);
        *ret_dir = g_steal_pointer(&dir);
        return 0;
}

/* debootstrap downloads with wget and takes the mirror on its command line, which any local user can
 * read: it gets the mirror without credentials, and wget finds them in a wgetrc of the job's own.
 * That file is in a tmpfs mounted in the job's private mount namespace on a fresh 0700 directory, so
 * nothing outside the job sees it and it is gone with the namespace, however the job ends. wget
 * offers them only to a server that asks (it sends no credentials unchallenged). */
static int write_wgetrc(Build *b, const char *user, const char *password)
{
        g_autofree char *dir = g_strdup("/tmp/stamp-transfer.XXXXXX");
        g_autofree char *text = NULL;
        _cleanup_close_ int fd = -1;
        int k;

        if (!mkdtemp(dir))
                return job_child_fail(b->c, errno, "Cannot make a directory for the mirror's credentials: %s",
                                      strerror(errno));
        b->secret_dir = g_steal_pointer(&dir);
        if (mount("tmpfs", b->secret_dir, "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, "mode=0700,size=64k") >= 0)
                b->secret_mounted = true;
        else
                job_child_log(b->c, LOG_LEVEL_DEBUG, "Cannot mount a tmpfs for the mirror's credentials: %s",
                              strerror(errno));
        b->wgetrc = g_build_filename(b->secret_dir, "wgetrc", NULL);
        fd = open(b->wgetrc, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
        if (fd < 0)
                return job_child_fail(b->c, errno, "Cannot store the mirror's credentials: %s", strerror(errno));
        text = g_strdup_printf("http_user = %s\n%s%s%s", user, password ? "http_password = " : "", password ?: "",
                               password ? "\n" : "");
        k = loop_write(fd, text, strlen(text));
        explicit_bzero(text, strlen(text));
        if (k < 0)
                return job_child_fail(b->c, -k, "Cannot store the mirror's credentials: %s", strerror(-k));
        return 0;
}

static void env_add_from_daemon(GPtrArray *env, const char *name)
{
        const char *v = getenv(name);

        if (v)
                g_ptr_array_add(env, g_strdup_printf("%s=%s", name, v));
}

/* ---- the second stage, without privilege over the host ---- */

/* debootstrap's second stage runs the packages' maintainer scripts, and the packages come from a
 * mirror or from a caller's tarball: it runs in a jail where nothing holds privilege over the host.
 * A user namespace whose root is an unprivileged uid range of the host (never one of systemd-nspawn's
 * machine ranges, which end at 0x6FFF0000, nor a real user's), with mount, PID, network, IPC and UTS
 * namespaces it owns; its root is the tree (pivot_root, not chroot), seen through an idmapped mount
 * that maps the range back to 0…65535 on disk, so that the template's files land 0-based, as in any
 * image; its /dev holds only the harmless nodes, bound from the host, with every other device node
 * of the tree unusable (nodev); its capabilities are those of its user namespace only. The first
 * stage (download, extraction) runs no package code and stays outside. */

#define JAIL_ID_BASE UINT32_C(0x7F000000)
#define JAIL_ID_RANGE UINT32_C(0x10000)
#define JAIL_ID_SLOTS 64
/* In the jail's /run (a tmpfs of its own), an empty directory: the root of its PID 1 (jail_init()). */
#define JAIL_INIT_ROOT "/run/.stamp-init"

static const char *const jail_devices[] = {"null", "zero", "full", "random", "urandom", "tty"};

typedef struct Jail {
        const char *target; /* the tree, by its path */
        uint32_t base;      /* its root's uid and gid on the host */
        int ready[2];       /* the jail's first process says it has its user namespace */
        int go[2];          /* we say its ids are mapped and its tree mounted */
        /* A derived build's apt: */
        bool network;             /* the download, with the host's network (no package code runs then) */
        bool proc;                /* a /proc of the jail's own at /proc */
        const char *const *binds; /* pairs: a directory of the host, and where in the tree it goes (or, if
                                   * absolute, where on the host), idmapped as the tree is; NULL-terminated */
        /* mmdebstrap's: the host's file system as the root, all of it read-only but the tree and
         * @stage (a tmpfs of the jail's own). */
        bool host_root;
        const char *stage;
        const char *stage_root; /* in @stage, where the tree is bound: the way to the store may be closed to
                                 * the jail's ids */
        const char *stage_tmp;  /* in @stage, its /tmp */
} Jail;

/* A uid range of the host for this build alone, held (flock) for as long as the build runs. */
static int jail_pick_range(Build *b, uint32_t *ret_base)
{
        g_autofree char *dir = g_strdup_printf("%s/build-ids", cache_root());
        int k = mkdir_parents(dir, 0700);

        if (k < 0)
                return job_child_fail(b->c, -k, "Cannot make %s: %s", dir, strerror(-k));
        for (uint32_t i = 0; i < JAIL_ID_SLOTS; i++) {
                g_autofree char *path = g_strdup_printf("%s/%" PRIu32, dir, i);
                _cleanup_close_ int fd = open(path, O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600);
                if (fd < 0)
                        return job_child_fail(b->c, errno, "Cannot open %s: %s", path, strerror(errno));
                if (flock(fd, LOCK_EX | LOCK_NB) < 0)
                        continue;
                b->jail_lock_fd = TAKE_FD(fd);
                *ret_base = JAIL_ID_BASE + i * JAIL_ID_RANGE;
                return 0;
        }
        return job_child_fail(b->c, EBUSY, "All %d uid ranges for template builds are in use", JAIL_ID_SLOTS);
}

static int write_file_at_proc(pid_t pid, const char *what, const char *text)
{
        char path[64];
        _cleanup_close_ int fd = -1;

        snprintf(path, sizeof path, "/proc/%d/%s", (int) pid, what);
        fd = open(path, O_WRONLY | O_CLOEXEC);
        if (fd < 0)
                return -errno;
        return loop_write(fd, text, strlen(text));
}

/* In the parent, once the jail's first process has its user namespace: map its ids, and mount the
 * tree idmapped over itself (in this job's mount namespace only). */
static int jail_prepare(Build *b, Jail *jail, pid_t pid)
{
        g_autofree char *map = g_strdup_printf("0 %" PRIu32 " %" PRIu32 "\n", jail->base, JAIL_ID_RANGE);
        _cleanup_close_ int userns = -1, tree = -1;
        struct mount_attr attr = {.attr_set = MOUNT_ATTR_IDMAP | MOUNT_ATTR_NODEV};
        char byte, path[64];
        int k;

        if (read(jail->ready[0], &byte, 1) != 1)
                return job_child_fail(b->c, EIO, "The build's jail did not start");
        if ((k = write_file_at_proc(pid, "uid_map", map)) < 0 || (k = write_file_at_proc(pid, "gid_map", map)) < 0)
                return job_child_fail(b->c, -k, "Cannot map the ids of the build's user namespace: %s", strerror(-k));

        snprintf(path, sizeof path, "/proc/%d/ns/user", (int) pid);
        userns = open(path, O_RDONLY | O_CLOEXEC);
        if (userns < 0)
                return job_child_fail(b->c, errno, "Cannot open the build's user namespace: %s", strerror(errno));
        tree = open_tree(AT_FDCWD, jail->target, OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC);
        if (tree < 0)
                return job_child_fail(b->c, errno, "Cannot clone the mount of the new tree: %s", strerror(errno));
        attr.userns_fd = (uint64_t) userns;
        if (mount_setattr(tree, "", AT_EMPTY_PATH, &attr, sizeof attr) < 0)
                return job_child_fail(b->c, errno, "Cannot make an idmapped mount of the new tree: %s",
                                      strerror(errno));
        if (move_mount(tree, "", AT_FDCWD, jail->target, MOVE_MOUNT_F_EMPTY_PATH) < 0)
                return job_child_fail(b->c, errno, "Cannot mount the new tree idmapped: %s", strerror(errno));
        b->jail_mounted = true;
        for (const char *const *p = jail->binds; p && p[0]; p += 2) {
                g_autofree char *where = p[1][0] == '/' ? g_strdup(p[1]) : g_strdup_printf("%s/%s", jail->target, p[1]);
                _cleanup_close_ int dir = open_tree(AT_FDCWD, p[0], OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC);
                struct mount_attr battr = {.attr_set = MOUNT_ATTR_IDMAP | MOUNT_ATTR_NODEV | MOUNT_ATTR_NOSUID |
                                                       MOUNT_ATTR_NOEXEC,
                                           .userns_fd = (uint64_t) userns};
                if (dir < 0 || mount_setattr(dir, "", AT_EMPTY_PATH, &battr, sizeof battr) < 0 ||
                    move_mount(dir, "", AT_FDCWD, where, MOVE_MOUNT_F_EMPTY_PATH) < 0)
                        return job_child_fail(b->c, errno, "Cannot mount the package cache at /%s of the tree: %s",
                                              p[1], strerror(errno));
        }
        if (jail->network && !jail->host_root) {
                /* The host's resolver for apt's download, over the tree's copy, which stays as it is; a
                 * tree without one (mmdebstrap removes it) gets an empty one for the while. */
                g_autofree char *where = g_strdup_printf("%s/etc/resolv.conf", jail->target);
                struct stat st;
                if (lstat(where, &st) < 0 && errno == ENOENT) {
                        int fd = open_in_tree(b->tree_fd, "etc/resolv.conf", O_WRONLY | O_CREAT | O_EXCL, 0644);
                        if (fd >= 0) {
                                safe_close(fd);
                                b->made_resolv_conf = true;
                        }
                }
                if (lstat(where, &st) >= 0 && S_ISREG(st.st_mode) &&
                    (mount("/etc/resolv.conf", where, NULL, MS_BIND, NULL) < 0 ||
                     mount(NULL, where, NULL, MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC,
                           NULL) < 0))
                        job_child_log(b->c, LOG_LEVEL_DEBUG, "Cannot give the build the host's resolv.conf: %s",
                                      strerror(errno));
        }
        if (write(jail->go[1], "g", 1) != 1)
                return job_child_fail(b->c, EIO, "The build's jail went away");
        return 0;
}

/* The jail's root, from the tree (the current directory): a tmpfs /run with a /proc and a /sys of
 * the jail's own kept there (the kernel lets a user namespace mount proc and sysfs only where such
 * mounts are already visible, and debootstrap unmounts and mounts /proc itself), a /dev of bound
 * host nodes; then pivot_root into it, and the host's tree detached. */
static int jail_enter_root(const char **step, const Jail *jail)
{
        static const char *const spares[] = {"run/.stamp-proc", "run/.stamp-sys"};

#define STEP(what, call)                                                                                               \
        do {                                                                                                           \
                *step = what;                                                                                          \
                if ((call) < 0)                                                                                        \
                        return -errno;                                                                                 \
        } while (0)
        STEP("mount /run", mount("tmpfs", "run", "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755"));
        STEP("make room for a spare /proc", mkdir(spares[0], 0555));
        STEP("make room for a spare /sys", mkdir(spares[1], 0555));
        STEP("mount a spare /proc", mount("proc", spares[0], "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL));
        STEP("make the root of the jail's PID 1", mkdir(JAIL_INIT_ROOT + 1, 0500));
        /* sysfs belongs to a network namespace: one shared with the host's cannot be mounted here. */
        if (!jail->network)
                STEP("mount a spare /sys",
                     mount("sysfs", spares[1], "sysfs", MS_NOSUID | MS_NODEV | MS_NOEXEC | MS_RDONLY, NULL));
        if (jail->proc)
                STEP("mount /proc", mount("proc", "proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL));
        STEP("mount /dev", mount("tmpfs", "dev", "tmpfs", MS_NOSUID | MS_NOEXEC, "mode=0755"));
        for (size_t i = 0; i < ELEMENTSOF(jail_devices); i++) {
                char from[32], to[32];
                int fd;
                snprintf(from, sizeof from, "/dev/%s", jail_devices[i]);
                snprintf(to, sizeof to, "dev/%s", jail_devices[i]);
                STEP("make a device's place",
                     fd = open(to, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0666));
                close(fd);
                STEP("bind a device", mount(from, to, NULL, MS_BIND, NULL));
        }
        STEP("populate /dev", mkdir("dev/pts", 0755));
        STEP("populate /dev", mkdir("dev/shm", 01777));
        STEP("populate /dev", symlink("/proc/self/fd", "dev/fd"));
        STEP("populate /dev", symlink("/proc/self/fd/0", "dev/stdin"));
        STEP("populate /dev", symlink("/proc/self/fd/1", "dev/stdout"));
        STEP("populate /dev", symlink("/proc/self/fd/2", "dev/stderr"));
        STEP("pivot_root", syscall(SYS_pivot_root, ".", "."));
        STEP("detach the host's tree", umount2(".", MNT_DETACH));
        STEP("enter the new root", chdir("/"));
#undef STEP
        return 0;
}

/* mmdebstrap's jail: it needs the host's tools (perl, apt, dpkg, mount) and chroots into the tree
 * itself. The host's file system stays the root, read-only, and owned by ids the jail does not map,
 * so nothing there is the jail's to change; the tree and the stage (its TMPDIR and the cache) are
 * writable; /proc is the jail's own. */
static int jail_enter_host(const char **step, const Jail *jail)
{
        struct mount_attr ro = {.attr_set = MOUNT_ATTR_RDONLY}, rw = {.attr_clr = MOUNT_ATTR_RDONLY};

        *step = "make the host read-only";
        if (mount_setattr(AT_FDCWD, "/", AT_RECURSIVE, &ro, sizeof ro) < 0)
                return -errno;
        *step = "make the tree and the stage writable";
        if (mount_setattr(AT_FDCWD, jail->stage, AT_RECURSIVE, &rw, sizeof rw) < 0)
                return -errno;
        *step = "mount /proc";
        if (mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL) < 0)
                return -errno;
        /* A /tmp of its own, for what ignores TMPDIR (apt's calls of apt-key). */
        *step = "bind /tmp";
        if (mount(jail->stage_tmp, "/tmp", NULL, MS_BIND, NULL) < 0)
                return -errno;
        /* mmdebstrap measures its terminal through /dev/tty. */
        if (isatty(STDERR_FILENO))
                (void) ioctl(STDERR_FILENO, TIOCSCTTY, 0);
        *step = "chdir";
        return chdir("/") < 0 ? -errno : 0;
}

/* The jail's PID 1 over a tree of its own (jail_enter_root()): the build runs as its child, and it
 * reaps, with an empty directory as its root. A build is a chroot's work, not a running system's:
 * with PID 1's root other than their own, the packages' scripts see a chroot (ischroot) and skip
 * what only a booted system needs (libc6's re-execution of init, with a second's sleep each time;
 * service restarts). The empty root shows nothing through /proc/1/root. Returns in the build's
 * process only; PID 1 exits with the build's status, which ends every process of the jail. */
static void jail_init(void)
{
        int status;
        pid_t build, p;

        build = fork();
        if (build < 0) {
                fprintf(stderr, "Cannot start the build in its jail: %s\n", strerror(errno));
                _exit(126);
        }
        if (build == 0)
                return;
        if (chroot(JAIL_INIT_ROOT) < 0 || chdir("/") < 0)
                _exit(126);
        (void) close_range(0, ~0U, 0);
        /* Taking root in the user namespace made it undumpable, which would hide its /proc/1/root
         * from the scripts' look; it holds nothing: no fd, an empty root. */
        (void) prctl(PR_SET_DUMPABLE, 1);
        for (;;) {
                p = waitpid(-1, &status, 0);
                if (p < 0 && errno != EINTR)
                        _exit(126);
                if (p == build)
                        _exit(WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status));
        }
}

/* The jail's first process, with debootstrap's fds in place: its user namespace, then, once the
 * parent mapped it, the other namespaces, root in them, and the second stage as their PID 1's
 * work. Returns only on failure, before the exec. */
static int jail_run(Jail *jail, char **argv, char **env)
{
        const char *step = "";
        char byte;
        pid_t pid;
        int status, k;

        safe_close(jail->ready[0]);
        safe_close(jail->go[1]);
        if (unshare(CLONE_NEWUSER) < 0)
                return -errno;
        if (write(jail->ready[1], "r", 1) != 1 || read(jail->go[0], &byte, 1) != 1)
                return -EIO;
        if (unshare(CLONE_NEWNS | CLONE_NEWPID | (jail->network ? 0 : CLONE_NEWNET) | CLONE_NEWIPC | CLONE_NEWUTS) < 0)
                return -errno;
        /* The idmapped mount came from the parent's namespace, so it is locked here, and a locked
         * mount cannot become the root: a bind mount of it made here can. This is done with the
         * host's uid still: the store may be closed to the jail's. */
        if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0)
                return -errno;
        if (jail->host_root && mount(jail->target, jail->stage_root, NULL, MS_BIND | MS_REC, NULL) < 0)
                return -errno;
        if (!jail->host_root &&
            (mount(jail->target, jail->target, NULL, MS_BIND | MS_REC, NULL) < 0 || chdir(jail->target) < 0))
                return -errno;
        /* Root of the new user namespace, and no trace of the host's groups. */
        if (setgroups(0, NULL) < 0 || setresgid(0, 0, 0) < 0 || setresuid(0, 0, 0) < 0)
                return -errno;
        best_effort(sethostname("stamp-build", strlen("stamp-build")));

        pid = fork();
        if (pid < 0)
                return -errno;
        if (pid == 0) {
                (void) prctl(PR_SET_PDEATHSIG, SIGKILL);
                /* No controlling terminal of the daemon's to reach through /dev/tty. */
                (void) setsid();
                k = jail->host_root ? jail_enter_host(&step, jail) : jail_enter_root(&step, jail);
                if (k < 0) {
                        fprintf(stderr, "Cannot set up the build's jail (%s): %s\n", step, strerror(-k));
                        _exit(126);
                }
                if (!jail->host_root)
                        jail_init();
                execve(argv[0], argv, env);
                fprintf(stderr, "Cannot run %s in the build's jail: %s\n", argv[0], strerror(errno));
                _exit(127);
        }
        while (waitpid(pid, &status, 0) < 0)
                if (errno != EINTR)
                        _exit(126);
        _exit(WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status));
}

static int run_debootstrap(Build *b, char **argv, Jail *jail);

/* dpkg in debootstrap's second stage as in mmdebstrap's builds: without an fsync of every file it unpacks (a
 * tree that is not complete is thrown away anyway, and the whole of it is synced once before it is put in
 * place). The setting is stamp's and is in the tree only while the second stage runs; *ret_dir is the
 * directory it is in, for unsafe_io_end(), or -1 where the tree has no dpkg.cfg.d (dpkg then syncs as
 * usual). */
#define UNSAFE_IO_NAME "stamp-unsafe-io"

static int unsafe_io_begin(Build *b, int tree_fd, int *ret_dir)
{
        _cleanup_close_ int dir = open_in_tree(tree_fd, "etc/dpkg/dpkg.cfg.d", O_RDONLY | O_DIRECTORY, 0);
        _cleanup_close_ int fd = -1;
        static const char text[] = "force-unsafe-io\n";

        *ret_dir = -1;
        if (dir < 0)
                return 0;
        fd = openat(dir, UNSAFE_IO_NAME, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644);
        if (fd < 0 || loop_write(fd, text, sizeof text - 1) < 0)
                return job_child_fail(b->c, errno, "Cannot write dpkg's settings in the new tree: %s", strerror(errno));
        *ret_dir = TAKE_FD(dir);
        return 0;
}

/* While dpkg unpacks without syncing, what it wrote goes to disk every few seconds, beside it (on another
 * CPU where there is one), instead of all at once at the end, where the build only waits for it. */
#define WRITEBACK_INTERVAL_SEC 2

typedef struct Writeback {
        int fd;
        bool started, stop;
        pthread_t thread;
        pthread_mutex_t lock;
        pthread_cond_t wake;
} Writeback;

static void *writeback_run(void *p)
{
        Writeback *w = p;

        pthread_mutex_lock(&w->lock);
        while (!w->stop) {
                struct timespec until;
                clock_gettime(CLOCK_MONOTONIC, &until);
                until.tv_sec += WRITEBACK_INTERVAL_SEC;
                if (pthread_cond_timedwait(&w->wake, &w->lock, &until) != ETIMEDOUT || w->stop)
                        continue;
                pthread_mutex_unlock(&w->lock);
                (void) syncfs(w->fd);
                pthread_mutex_lock(&w->lock);
        }
        pthread_mutex_unlock(&w->lock);
        return NULL;
}

/* Nothing is lost if it cannot start: the final syncfs() writes everything anyway. */
static void writeback_start(Writeback *w, int fd)
{
        pthread_condattr_t attr;

        *w = (Writeback) {.fd = fd};
        pthread_mutex_init(&w->lock, NULL);
        pthread_condattr_init(&attr);
        pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
        pthread_cond_init(&w->wake, &attr);
        pthread_condattr_destroy(&attr);
        w->started = pthread_create(&w->thread, NULL, writeback_run, w) == 0;
}

static void writeback_stop(Writeback *w)
{
        if (w->started) {
                pthread_mutex_lock(&w->lock);
                w->stop = true;
                pthread_cond_signal(&w->wake);
                pthread_mutex_unlock(&w->lock);
                pthread_join(w->thread, NULL);
        }
        pthread_cond_destroy(&w->wake);
        pthread_mutex_destroy(&w->lock);
}

static void unsafe_io_end(int *dir)
{
        if (*dir < 0)
                return;
        (void) unlinkat(*dir, UNSAFE_IO_NAME, 0);
        *dir = safe_close(*dir);
}

/* Run @argv in @jail over the tree at @target (debootstrap's second stage, mmdebstrap, apt), then take the
 * jail's mount of the tree out of the way of the rename into place. */
static int run_jailed(Build *b, char **argv, Jail *jail, const char *target)
{
        int k;

        if (pipe2(jail->ready, O_CLOEXEC) < 0 || pipe2(jail->go, O_CLOEXEC) < 0)
                k = job_child_fail(b->c, errno, "Cannot make a pipe: %s", strerror(errno));
        else
                k = run_debootstrap(b, argv, jail);
        for (size_t i = 0; i < 2; i++) {
                jail->ready[i] = safe_close(jail->ready[i]);
                jail->go[i] = safe_close(jail->go[i]);
        }
        if (b->jail_mounted && umount2(target, MNT_DETACH) >= 0)
                b->jail_mounted = false;
        return k;
}

static int second_stage(Build *b, const char *target)
{
        char *argv[] = {(char *) "/debootstrap/debootstrap", (char *) "--second-stage", (char *) "--debian-installer",
                        NULL};
        Jail jail = {.target = target, .ready = {-1, -1}, .go = {-1, -1}};
        int k;

        k = jail_pick_range(b, &jail.base);
        if (k < 0)
                return k;
        b->target = target;
        k = run_jailed(b, argv, &jail, target);
        b->jail_lock_fd = safe_close(b->jail_lock_fd);
        return k;
}

/* Run debootstrap (@jail NULL: on the host; else in @jail) and follow its progress and messages. */
static int run_debootstrap(Build *b, char **argv, Jail *jail)
{
        g_autoptr(GPtrArray) env = g_ptr_array_new_with_free_func(g_free);
        _cleanup_close_ int info_r = -1, out_r = -1, pidfd = -1;
        const char *what = "";
        int info[2], out[2], status;
        pid_t pid;

        g_ptr_array_add(env, g_strdup("PATH=/usr/sbin:/usr/bin:/sbin:/bin"));
        g_ptr_array_add(env, g_strdup("LC_ALL=C"));
        if (b->tmpdir) {
                g_ptr_array_add(env, g_strdup_printf("HOME=%s", b->tmpdir));
                g_ptr_array_add(env, g_strdup_printf("TMPDIR=%s", b->tmpdir));
        } else
                g_ptr_array_add(env, g_strdup("HOME=/root"));
        g_ptr_array_add(env, g_strdup("DEBIAN_FRONTEND=noninteractive"));
        /* A host behind a proxy needs it for the download. */
        env_add_from_daemon(env, "http_proxy");
        env_add_from_daemon(env, "https_proxy");
        env_add_from_daemon(env, "no_proxy");
        if (b->wgetrc)
                g_ptr_array_add(env, g_strdup_printf("WGETRC=%s", b->wgetrc));
        /* In the jail, device nodes cannot be made: debootstrap skips its mknod test for a
         * container it knows, and the packages' scripts see they run in a container. */
        if (jail)
                g_ptr_array_add(env, g_strdup("container=lxc"));
        g_ptr_array_add(env, NULL);

        if (pipe2(info, O_CLOEXEC) < 0)
                return job_child_fail(b->c, errno, "Cannot make a pipe: %s", strerror(errno));
        info_r = info[0];
        if (pipe2(out, O_CLOEXEC) < 0) {
                safe_close(info[1]);
                return job_child_fail(b->c, errno, "Cannot make a pipe: %s", strerror(errno));
        }
        out_r = out[0];

        pid = safe_fork(false);
        if (pid < 0) {
                safe_close(info[1]);
                safe_close(out[1]);
                return job_child_fail(b->c, (int) -pid, "Cannot start %s: %s", b->tool, strerror((int) -pid));
        }
        if (pid == 0) {
                int null = open("/dev/null", O_RDONLY | O_CLOEXEC);
                if (null < 0 || dup2(null, STDIN_FILENO) < 0 || dup2(out[1], STDOUT_FILENO) < 0 ||
                    dup2(b->pty_slave >= 0 ? b->pty_slave : out[1], STDERR_FILENO) < 0 || dup2(info[1], 3) < 0 ||
                    fcntl(3, F_SETFD, 0) < 0 || chdir("/") < 0)
                        _exit(126);
                umask(022);
                if (jail) {
                        int k = jail_run(jail, argv, (char **) env->pdata);
                        fprintf(stderr, "Cannot start the build's jail: %s\n", strerror(-k));
                        _exit(126);
                }
                execve("/usr/sbin/debootstrap", argv, (char **) env->pdata);
                execvpe("debootstrap", argv, (char **) env->pdata);
                _exit(127);
        }
        safe_close(info[1]);
        safe_close(out[1]);
        b->pty_slave = safe_close(b->pty_slave);
        if (jail) {
                int k;
                jail->ready[1] = safe_close(jail->ready[1]);
                jail->go[0] = safe_close(jail->go[0]);
                k = jail_prepare(b, jail, pid);
                if (k < 0) {
                        (void) kill(pid, SIGKILL);
                        (void) waitpid(pid, NULL, 0);
                        return k;
                }
        }

        /* Something debootstrap started may hold the pipes open after it ended: its exit, not their
         * end, ends the wait. */
        pidfd = (int) syscall(SYS_pidfd_open, pid, 0);

        for (;;) {
                struct pollfd p[] = {
                        {.fd = info_r, .events = POLLIN},
                        {.fd = out_r, .events = POLLIN},
                        {.fd = pidfd, .events = POLLIN},
                        {.fd = b->pty_master, .events = POLLIN},
                };
                if (info_r < 0 && out_r < 0 && b->pty_master < 0)
                        break;
                if (poll(p, ELEMENTSOF(p), -1) < 0) {
                        if (errno == EINTR)
                                continue;
                        break;
                }
                if (p[0].revents && pump(b, info_r, &b->info, handle_info_line) == 0)
                        info_r = safe_close(info_r);
                if (p[1].revents && pump(b, out_r, &b->output, handle_output_line) == 0)
                        out_r = safe_close(out_r);
                if (p[3].revents && pump(b, b->pty_master, &b->terminal, handle_terminal_line) == 0)
                        b->pty_master = safe_close(b->pty_master);
                if (p[2].revents) {
                        /* Take what is left in the pipes without waiting for them to close. */
                        if (info_r >= 0 && fcntl(info_r, F_SETFL, O_NONBLOCK) >= 0)
                                while (pump(b, info_r, &b->info, handle_info_line) > 0)
                                        ;
                        if (out_r >= 0 && fcntl(out_r, F_SETFL, O_NONBLOCK) >= 0)
                                while (pump(b, out_r, &b->output, handle_output_line) > 0)
                                        ;
                        if (b->pty_master >= 0 && fcntl(b->pty_master, F_SETFL, O_NONBLOCK) >= 0)
                                while (pump(b, b->pty_master, &b->terminal, handle_terminal_line) > 0)
                                        ;
                        line_buffer_flush(b, &b->info, handle_info_line);
                        line_buffer_flush(b, &b->output, handle_output_line);
                        line_buffer_flush(b, &b->terminal, handle_terminal_line);
                        break;
                }
        }

        while (waitpid(pid, &status, 0) < 0)
                if (errno != EINTR)
                        return job_child_fail(b->c, errno, "Cannot wait for %s: %s", b->tool, strerror(errno));
        if (WIFEXITED(status) && WEXITSTATUS(status) == 0)
                return 0;

        /* What --make-tarball makes always has debootstrap's package lists in it. */
        if (b->offline && faccessat(b->tree_fd, "debootstrap/required", F_OK, AT_SYMLINK_NOFOLLOW) < 0)
                what = "The package tarball is not one made by debootstrap --make-tarball: ";
        if (b->out_of_space || store_is_full(b->tree_fd))
                return job_child_fail(b->c, ENOSPC, "The image store is full: %s failed: %s", b->tool,
                                      b->last_error ?: b->tail[2] ?: "no space left on device");
        /* BadArchive only where the caller's tarball is at fault; a failed download is not. */
        if (b->last_error)
                return job_child_fail(b->c, b->offline ? EBADMSG : EIO, "%s%s failed: %s", what, b->tool,
                                      b->last_error);
        if (!WIFEXITED(status))
                return job_child_fail(b->c, EIO, "%s was killed by signal %d", b->tool, WTERMSIG(status));
        return job_child_fail(b->c, *what ? EBADMSG : EIO, "%s%s failed with exit status %d: %s%s%s%s%s", what, b->tool,
                              WEXITSTATUS(status), b->tail[0] ?: "", b->tail[0] ? " / " : "", b->tail[1] ?: "",
                              b->tail[1] ? " / " : "", b->tail[2] ?: "(no output)");
}

/* A package tarball decides what is installed, whatever --include says: make sure what was asked for is
 * there. */
static int check_installed(Build *b, int tree_fd, GPtrArray *wanted)
{
        g_autoptr(GHashTable) installed = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
        g_autofree char *package = NULL, *missing = NULL;
        _cleanup_fclose_ FILE *f = NULL;
        bool ok = false, eof = false;
        char line[4096];
        int fd;

        if (wanted->len == 0)
                return 0;
        fd = open_in_tree(tree_fd, "var/lib/dpkg/status", O_RDONLY, 0);
        if (fd < 0)
                return job_child_fail(b->c, -fd, "The new tree has no dpkg status: %s", strerror(-fd));
        f = fdopen(fd, "r");
        if (!f) {
                safe_close(fd);
                return job_child_fail(b->c, ENOMEM, "Out of memory");
        }
        while (!eof) {
                eof = !fgets(line, sizeof line, f);
                if (eof || line[0] == '\n') {
                        if (package && ok)
                                g_hash_table_add(installed, g_steal_pointer(&package));
                        g_clear_pointer(&package, g_free);
                        ok = false;
                } else if (g_str_has_prefix(line, "Package:")) {
                        g_free(package);
                        package = g_strstrip(g_strdup(line + strlen("Package:")));
                } else if (g_str_has_prefix(line, "Status:"))
                        ok = strstr(line, " installed") && g_str_has_prefix(line, "Status: install ");
        }
        for (guint i = 0; i < wanted->len; i++)
                if (!g_hash_table_contains(installed, wanted->pdata[i])) {
                        char *l = g_strjoin(missing ? ", " : "", missing ?: "", (char *) wanted->pdata[i], NULL);
                        g_free(missing);
                        missing = l;
                }
        if (missing)
                return job_child_fail(b->c, ENOENT,
                                      "Not installed although asked for (is it in the package tarball?): %s", missing);
        return 0;
}

static int set_root_password(Build *b, int tree_fd, const char *hash)
{
        _cleanup_close_ int etc = -1, fd = -1, out = -1;
        g_autoptr(GString) text = g_string_new(NULL);
        g_autofree char *old = NULL;
        g_auto(GStrv) lines = NULL;
        bool found = false;
        struct stat st;
        ssize_t n;

        etc = open_in_tree(tree_fd, "etc", O_RDONLY | O_DIRECTORY, 0);
        if (etc < 0)
                return job_child_fail(b->c, -etc, "The new tree has no /etc: %s", strerror(-etc));
        fd = openat(etc, "shadow", O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
        if (fd < 0 || fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) || st.st_size > 1024 * 1024)
                return job_child_fail(b->c, EIO, "The new tree has no usable /etc/shadow");
        old = g_malloc((size_t) st.st_size + 1);
        n = read(fd, old, (size_t) st.st_size);
        if (n != st.st_size)
                return job_child_fail(b->c, EIO, "Cannot read /etc/shadow of the new tree");
        old[n] = '\0';

        lines = g_strsplit(old, "\n", -1);
        for (char **l = lines; *l; l++) {
                char *rest;
                if (!l[1] && **l == '\0')
                        break; /* after the final newline */
                if (g_str_has_prefix(*l, "root:") && (rest = strchr(*l + 5, ':'))) {
                        g_string_append_printf(text, "root:%s%s\n", hash, rest);
                        found = true;
                } else
                        g_string_append_printf(text, "%s\n", *l);
        }
        if (!found)
                return job_child_fail(b->c, ENOENT, "The new tree's /etc/shadow has no entry for root");

        (void) unlinkat(etc, "shadow.stamp-new", 0);
        out = openat(etc, "shadow.stamp-new", O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
        if (out < 0 || fchown(out, st.st_uid, st.st_gid) < 0 || fchmod(out, st.st_mode & 07777) < 0 ||
            loop_write(out, text->str, text->len) < 0 || fsync(out) < 0 ||
            renameat(etc, "shadow.stamp-new", etc, "shadow") < 0)
                return job_child_fail(b->c, errno, "Cannot write /etc/shadow of the new tree: %s", strerror(errno));
        job_child_log(b->c, LOG_LEVEL_INFO, "Set the root password.");
        return 0;
}

/* What debootstrap copied from the host or made for this one tree must not reach every machine cloned
 * from the template: the host's name, and a machine ID (emptied, systemd makes one on first boot). The
 * downloaded packages are in the daemon's cache already. */
static void make_generic(Build *b, int tree_fd)
{
        _cleanup_close_ int etc = open_in_tree(tree_fd, "etc", O_RDONLY | O_DIRECTORY, 0);
        _cleanup_close_ int dbus = open_in_tree(tree_fd, "var/lib/dbus", O_RDONLY | O_DIRECTORY, 0);
        _cleanup_close_ int archives = open_in_tree(tree_fd, "var/cache/apt/archives", O_RDONLY | O_DIRECTORY, 0);
        _cleanup_close_ int id = -1;
        struct stat st;
        DIR *d;
        struct dirent *de;

        if (etc >= 0) {
                (void) unlinkat(etc, "hostname", 0);
                id = openat(etc, "machine-id", O_WRONLY | O_NOFOLLOW | O_CLOEXEC);
                if (id >= 0 && fstat(id, &st) >= 0 && S_ISREG(st.st_mode))
                        best_effort(ftruncate(id, 0));
        }
        if (dbus >= 0 && fstatat(dbus, "machine-id", &st, AT_SYMLINK_NOFOLLOW) >= 0 && S_ISREG(st.st_mode))
                (void) unlinkat(dbus, "machine-id", 0);
        if (archives >= 0 && (d = fdopendir(archives))) {
                archives = -1; /* owned by d */
                while ((de = readdir(d)))
                        if (de->d_type == DT_REG && g_str_has_suffix(de->d_name, ".deb"))
                                (void) unlinkat(dirfd(d), de->d_name, 0);
                closedir(d);
        }
}

static char *recipe_text(const JobArgs *a, const char *variant, const char *arch, const char *mirror, bool bootable,
                         bool offline, const char *uuid, const char *builder, uint64_t cached)
{
        static const char *const none[] = {NULL};
        g_autoptr(GVariant) v = NULL;
        GVariantBuilder bld;

        g_variant_builder_init(&bld, G_VARIANT_TYPE_VARDICT);
        g_variant_builder_add(&bld, "{sv}", "suite", g_variant_new_string(a->template.suite));
        g_variant_builder_add(&bld, "{sv}", "variant", g_variant_new_string(variant));
        g_variant_builder_add(&bld, "{sv}", "arch", g_variant_new_string(arch));
        g_variant_builder_add(
                &bld, "{sv}", "include",
                g_variant_new_strv(a->template.include ? (const char *const *) a->template.include : none, -1));
        g_variant_builder_add(&bld, "{sv}", "mirror", g_variant_new_string(mirror));
        g_variant_builder_add(&bld, "{sv}", "created", g_variant_new_uint64(now_usec(CLOCK_REALTIME)));
        g_variant_builder_add(&bld, "{sv}", "bootable", g_variant_new_boolean(bootable));
        g_variant_builder_add(&bld, "{sv}", "offline", g_variant_new_boolean(offline));
        g_variant_builder_add(&bld, "{sv}", "builder", g_variant_new_string(builder));
        /* The tree is a snapshot of the image cache's, which a build of this recipe made then (µs). */
        if (cached)
                g_variant_builder_add(&bld, "{sv}", "image_cache", g_variant_new_uint64(cached));
        if (uuid)
                g_variant_builder_add(&bld, "{sv}", "uuid", g_variant_new_string(uuid));
        v = g_variant_ref_sink(g_variant_builder_end(&bld));
        return g_variant_print(v, TRUE);
}

/* The last step: recipe, read-only, and into place under its name, never replacing anything. */
static int commit(Build *b, int store_fd, int tree_fd, bool subvolume, const char *temp, const char *name,
                  const char *recipe)
{
        int k;

        if (fsetxattr(tree_fd, RECIPE_XATTR, recipe, strlen(recipe), 0) < 0)
                return job_child_fail(b->c, errno, "Cannot keep the recipe with the template: %s", strerror(errno));
        if (subvolume) {
                k = store_set_read_only_fd(tree_fd, true);
                if (k < 0)
                        return job_child_fail(b->c, -k, "Cannot mark the template read-only: %s", strerror(-k));
        }
        /* A mount point cannot be renamed: the tree's own bind mount goes first. */
        if (b->mounted && umount2(b->mounted, MNT_DETACH) < 0)
                return job_child_fail(b->c, errno, "Cannot unmount the new tree: %s", strerror(errno));
        b->mounted = NULL;
        k = job_child_record_owner(b->c, name, tree_fd);
        if (k < 0)
                return k;
        if (renameat2(store_fd, temp, store_fd, name, RENAME_NOREPLACE) < 0) {
                k = errno;
                job_child_drop_owner(b->c, name);
                if (k == EEXIST)
                        return job_child_fail(b->c, EEXIST, "An image named %s appeared while the template was built",
                                              name);
                return job_child_fail(b->c, k, "Cannot put the template in place as %s: %s", name, strerror(k));
        }
        if (!subvolume) {
                /* An immutable directory cannot be renamed: the flag comes last, and if it cannot be set,
                 * the tree goes back out of sight. */
                k = store_set_read_only_fd(tree_fd, true);
                if (k < 0) {
                        (void) renameat2(store_fd, name, store_fd, temp, RENAME_NOREPLACE);
                        return job_child_fail(b->c, -k, "Cannot mark the template read-only: %s", strerror(-k));
                }
        }
        return 0;
}

/* After a build: the cache within its cap, and its size noted for stampd. Only the directory this build
 * used is trimmed, and only while no other build holds it. */
static void cache_finish(Build *b, const char *kind, const char *suite, const char *arch)
{
        g_autofree char *sub = g_strdup_printf("%s/%s-%s", kind, suite, arch);
        _cleanup_close_ int cache = store_cache_open(b->c->store_fd), dir = -1;
        int k;

        if (cache < 0)
                return;
        if (b->cache_lock_fd < 0) {
                dir = openat(cache, sub, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
                if (dir >= 0 && flock(dir, LOCK_EX | LOCK_NB) < 0)
                        dir = safe_close(dir);
        }
        if (b->cache_lock_fd >= 0 || dir >= 0)
                k = store_cache_trim(cache, b->cache_lock_fd >= 0 ? b->cache_lock_fd : dir, b->a->template.cache_max);
        else
                k = store_cache_write_usage(cache, store_cache_count(cache));
        if (k < 0)
                job_child_log(b->c, LOG_LEVEL_WARNING, "Cannot note the package cache's size: %s", strerror(-k));
}

static int transfer_derive(JobChild *c, const JobArgs *a);
static char *file_sha256(int dir_fd, const char *name);
static int build_with_mmdebstrap(Build *b, const char *target, const char *variant, const char *arch,
                                 const char *mirror, const char *includes);

/* The host's apt and dpkg, which resolve, download and unpack for mmdebstrap: their installed packages and
 * versions as dpkg-query says them ("apt 2.6.1, dpkg 1.21.23, libapt-pkg6.0:amd64 2.6.1"), so that an
 * upgrade of either on the host is another key. */
static char *host_tools_versions(void)
{
        char *argv[] = {(char *) "dpkg-query",
                        (char *) "-W",
                        (char *) "-f",
                        (char *) "${binary:Package} ${Version}\n",
                        (char *) "apt",
                        (char *) "dpkg",
                        (char *) "libapt-pkg[0-9]*",
                        NULL};
        g_autoptr(GString) s = g_string_new(NULL);
        char out[1024];

        if (run_capture(argv, out, sizeof out) < 0)
                return g_strdup("unknown");
        for (char *line = out, *next; line && *line; line = next) {
                next = strchr(line, '\n');
                if (next)
                        *next++ = '\0';
                /* a package dpkg knows of but has not installed has no version */
                if (!strchr(line, ' ') || strchr(line, ' ')[1] == '\0')
                        continue;
                g_string_append_printf(s, "%s%s", s->len ? ", " : "", line);
        }
        return s->len ? g_string_free(g_steal_pointer(&s), FALSE) : g_strdup("unknown");
}

/* Everything that decides what mmdebstrap puts in the tree, for the image cache's key (build-cache.h):
 * the builder (its script's digest, so that another version is another key) and its hooks, the host's
 * apt and dpkg, and the recipe, the packages sorted. The InRelease it was built from is checked apart.
 * Whatever stamp does after mmdebstrap (root password, machine ID, recipe) is not in the cached tree. */
static char *image_cache_key(const Build *b, const char *variant, const char *arch, const char *mirror,
                             GPtrArray *wanted)
{
        const TemplateJobArgs *t = &b->a->template;
        g_autofree char *builder = file_sha256(AT_FDCWD, MMDEBSTRAP), *tools = host_tools_versions();
        g_autoptr(GPtrArray) packages = g_ptr_array_new();
        g_autoptr(GString) s = g_string_new(NULL);

        for (guint i = 0; i < wanted->len; i++)
                g_ptr_array_add(packages, wanted->pdata[i]);
        g_ptr_array_sort(packages, compare_names);
        g_string_append_printf(s, "format 2\nstamp %s\nbuilder mmdebstrap %s\nmerged-usr-hooks %s\nhost-apt-dpkg %s\n",
                               PACKAGE_VERSION, builder ?: "unreadable",
                               access(MMDEBSTRAP_MERGED_USR_HOOKS, F_OK) >= 0 ? "yes" : "no", tools);
        g_string_append_printf(s, "mirror %s\nsuite %s\narch %s\nvariant %s\nbootable %s\nkeyring %s\npackages", mirror,
                               t->suite, arch, streq(variant, "buildd") ? "buildd" : "minbase",
                               t->bootable ? "yes" : "no", t->keyring);
        for (guint i = 0; i < packages->len; i++)
                g_string_append_printf(s, "%s%s", i ? "," : " ", (const char *) packages->pdata[i]);
        g_string_append_c(s, '\n');
        return g_string_free(g_steal_pointer(&s), FALSE);
}

int transfer_template(JobChild *c, const JobArgs *a)
{
        const TemplateJobArgs *t = &a->template;
        int store_fd = c->store_fd;
        const char *temp = c->temp_name;
        _cleanup_(build_done) Build b = {.c = c,
                                         .a = a,
                                         .cache_lock_fd = -1,
                                         .tree_fd = -1,
                                         .jail_lock_fd = -1,
                                         .pty_master = -1,
                                         .pty_slave = -1};
        g_autoptr(GPtrArray) argv = g_ptr_array_new_with_free_func(g_free);
        g_autoptr(GPtrArray) wanted = g_ptr_array_new();
        g_autofree char *arch = NULL, *mirror = NULL, *target = NULL, *includes = NULL, *cache = NULL;
        g_autofree char *recipe = NULL;
        _cleanup_(build_cache_done) BuildCache bc = BUILD_CACHE_INIT;
        const char *variant = t->variant ?: "minbase", *tarball = NULL;
        bool bootable = t->bootable, subvolume = false;
        char uuid[33] = "";
        _cleanup_close_ int tree_fd = -1, unsafe_io_dir = -1;
        int k;

        if (t->from)
                return transfer_derive(c, a);
        b.tool = "debootstrap";
        b.offline = t->package_tarball >= 0;
        /* mmdebstrap for online builds, where it is installed; debootstrap for a package tarball of
         * "debootstrap --make-tarball", which only debootstrap reads, and for a mirror with
         * credentials (handed to wget only, see write_wgetrc()). */
        if (!b.offline && !t->mirror_user && access(MMDEBSTRAP, X_OK) >= 0) {
                b.mmdebstrap = true;
                b.tool = "mmdebstrap";
        }
        job_child_progress(c, 0);

        if (t->arch)
                arch = g_strdup(t->arch);
        else if ((k = host_arch(&arch)) < 0)
                return job_child_fail(c, -k, "Cannot tell this host's architecture; say which with the arch option");
        mirror = t->mirror ? g_strdup(t->mirror) : host_mirror();
        if (!mirror)
                return job_child_fail(c, ENOMEM, "Out of memory");
        /* stampd took the credentials out of the mirror; one that still has some is no caller's. */
        if (!host_mirror_is_usable(mirror))
                return job_child_fail(c, EINVAL, "stamp-transfer: invalid arguments");
        if (!b.offline && !t->keyring)
                return job_child_fail(c, EINVAL, "stamp-transfer: an online build needs a keyring to verify against");
        if (!c->store || !temp)
                return job_child_fail(c, EINVAL, "stamp-transfer: invalid arguments");

        for (char **p = t->include; p && *p; p++)
                if (!g_ptr_array_find_with_equal_func(wanted, *p, g_str_equal, NULL))
                        g_ptr_array_add(wanted, *p);
        for (const char *const *p = bootable_packages; bootable && *p; p++)
                if (!g_ptr_array_find_with_equal_func(wanted, *p, g_str_equal, NULL))
                        g_ptr_array_add(wanted, (char *) *p);
        g_ptr_array_add(wanted, NULL);
        includes = g_strjoinv(",", (char **) wanted->pdata);
        g_ptr_array_remove_index(wanted, wanted->len - 1);

        job_child_log(c, LOG_LEVEL_INFO, "Building template %s: Debian %s, %s, %s, from %s.", a->name, t->suite,
                      variant, arch, b.offline ? "a package tarball" : mirror);

        /* The image cache keeps snapshots: on btrfs only. */
        if (b.mmdebstrap && c->store_is_btrfs && t->image_cache_max > 0) {
                g_autofree char *key = image_cache_key(&b, variant, arch, mirror, wanted);
                build_cache_lookup(c, &bc, store_fd, key, mirror, t->suite, t->keyring, !t->image_cache_skip);
        }
        if (bc.hit) {
                k = build_cache_take(c, &bc, store_fd, temp);
                if (k < 0)
                        return k;
                subvolume = true;
        } else {
                k = store_make_tree(store_fd, c->store_is_btrfs, temp, NULL);
                if (k < 0)
                        return job_child_fail(c, -k, "Cannot make a directory in the image store: %s", strerror(-k));
                subvolume = k > 0;
        }
        tree_fd = openat(store_fd, temp, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (tree_fd < 0 || fchmod(tree_fd, 0755) < 0)
                return job_child_fail(c, errno, "Cannot open the new tree: %s", strerror(errno));
        if (subvolume) {
                BtrfsSubvolInfo info;
                int r = btrfs_subvol_info_fd(tree_fd, &info);
                if (r < 0)
                        return job_child_fail(c, -r, "Cannot read the new subvolume's UUID: %s", strerror(-r));
                uuid_to_hex(info.uuid, uuid);
        }
        b.tree_fd = tree_fd;
        target = g_strdup_printf("%s/%s", c->store, temp);
        /* debootstrap makes device nodes in the tree and refuses a nodev one; this is the job's own
         * mount namespace. */
        k = store_mount_allow_dev_suid(target);
        if (k < 0)
                return job_child_fail(c, -k, "Cannot mount the new tree for debootstrap: %s", strerror(-k));
        if (k > 0)
                b.mounted = target;

        if (b.mmdebstrap && bc.hit)
                build_progress(&b, PHASE_FINISH, 0);
        else if (b.mmdebstrap) {
                g_autofree char *lists =
                        g_strdup_printf("%s/" STORE_CACHE_DIR "/mmdebstrap/%s-%s/lists", c->store, t->suite, arch);
                k = build_with_mmdebstrap(&b, target, variant, arch, mirror, includes);
                if (k < 0)
                        return k;
                /* As mmdebstrap left it, before anything of this template alone goes in. */
                build_cache_save(c, &bc, tree_fd, lists, t->suite, t->image_cache_max);
        } else {
                g_ptr_array_add(argv, g_strdup("debootstrap"));
                /* The installer's protocol: numbered progress and messages on fd 3, the tools' output on
                 * stdout/stderr, instead of a log file in the target. */
                g_ptr_array_add(argv, g_strdup("--debian-installer"));
                /* The first stage only, here on the host: the second runs package code, in the jail. */
                g_ptr_array_add(argv, g_strdup("--foreign"));
                g_ptr_array_add(argv, g_strdup_printf("--variant=%s", variant));
                g_ptr_array_add(argv, g_strdup_printf("--arch=%s", arch));
                if (!isempty(includes))
                        g_ptr_array_add(argv, g_strdup_printf("--include=%s", includes));
                if (b.offline) {
                        k = copy_tarball(&b, t->package_tarball, tree_fd, &tarball);
                        if (k < 0)
                                return k;
                        g_ptr_array_add(argv, g_strdup_printf("--unpack-tarball=%s/%s", target, tarball));
                } else {
                        k = open_cache(&b, "debootstrap", t->suite, arch, &cache);
                        if (k < 0)
                                return k;
                        g_ptr_array_add(argv, g_strdup_printf("--cache-dir=%s", cache));
                        /* Given a mirror, debootstrap would go on unverified (only warning) where the suite's
                         * keyring is missing: this makes a Release file without a valid signature fatal. */
                        g_ptr_array_add(argv, g_strdup_printf("--keyring=%s", t->keyring));
                        g_ptr_array_add(argv, g_strdup("--force-check-gpg"));
                        if (t->mirror_user) {
                                k = write_wgetrc(&b, t->mirror_user, t->mirror_password);
                                if (k < 0)
                                        return k;
                        }
                }
                g_ptr_array_add(argv, g_strdup(t->suite));
                g_ptr_array_add(argv, g_strdup(target));
                g_ptr_array_add(argv, g_strdup(mirror));
                g_ptr_array_add(argv, NULL);

                k = run_debootstrap(&b, (char **) argv->pdata, NULL);
                if (k < 0)
                        return k;
                b.cache_lock_fd = safe_close(b.cache_lock_fd);
                /* The package code of the second stage gets nothing of the caller's. */
                if (b.offline && fcntl(t->package_tarball, F_SETFD, FD_CLOEXEC) < 0)
                        return job_child_fail(c, errno, "Cannot close the package tarball: %s", strerror(errno));

                k = unsafe_io_begin(&b, tree_fd, &unsafe_io_dir);
                if (k < 0)
                        return k;
                Writeback wb;
                writeback_start(&wb, tree_fd);
                k = second_stage(&b, target);
                writeback_stop(&wb);
                unsafe_io_end(&unsafe_io_dir);
                if (k < 0)
                        return k;
        }
        build_progress(&b, PHASE_FINISH, 0);

        if (tarball && unlinkat(tree_fd, tarball, 0) < 0)
                return job_child_fail(c, errno, "Cannot remove the package tarball from the tree: %s", strerror(errno));
        k = check_installed(&b, tree_fd, wanted);
        if (k < 0)
                return k;
        if (t->root_password_hashed) {
                k = set_root_password(&b, tree_fd, t->root_password_hashed);
                if (k < 0)
                        return k;
        }
        make_generic(&b, tree_fd);
        build_progress(&b, PHASE_FINISH, 0.5);

        /* Both builders' dpkg wrote without syncing: */
        if (syncfs(tree_fd) < 0)
                return job_child_fail(c, errno, "Cannot write the new tree to disk: %s", strerror(errno));
        recipe = recipe_text(a, variant, arch, mirror, bootable, b.offline, subvolume ? uuid : NULL, b.tool,
                             bc.hit ? bc.created : 0);
        k = commit(&b, store_fd, tree_fd, subvolume, temp, a->name, recipe);
        if (k < 0)
                return k;
        if (!b.offline)
                cache_finish(&b, b.mmdebstrap ? "mmdebstrap" : "debootstrap", t->suite, arch);
        build_progress(&b, PHASE_FINISH, 1);
        job_child_log(c, LOG_LEVEL_INFO, "Template %s is ready.", a->name);
        return 0;
}

/* ---- derived templates: a snapshot of a template, with apt inside ---- */

/* The name apt gives a package's file in its archives: its name, version and architecture with ':'
 * (an epoch) quoted as %3a. */
static char *apt_archive_name(const char *package, const char *version, const char *arch)
{
        g_autoptr(GString) s = g_string_new(NULL);
        const char *parts[] = {package, version, arch};

        for (size_t i = 0; i < ELEMENTSOF(parts); i++) {
                if (i > 0)
                        g_string_append_c(s, '_');
                for (const char *p = parts[i]; *p; p++)
                        if (*p == ':' || *p == '_' || *p == '%' || (unsigned char) *p <= ' ' ||
                            (unsigned char) *p >= 0x7f)
                                g_string_append_printf(s, "%%%02x", (unsigned char) *p);
                        else
                                g_string_append_c(s, *p);
        }
        g_string_append(s, ".deb");
        return g_string_free(g_steal_pointer(&s), FALSE);
}

/* Read one Packages file of apt's lists into @sums: archive name → SHA256. */
static void read_packages_list(int fd, GHashTable *sums)
{
        g_autofree char *package = NULL, *version = NULL, *arch = NULL, *sha = NULL;
        _cleanup_fclose_ FILE *f = fdopen(fd, "r");
        bool eof = false;
        char line[4096];

        if (!f) {
                safe_close(fd);
                return;
        }
        while (!eof) {
                eof = !fgets(line, sizeof line, f);
                if (eof || line[0] == '\n') {
                        if (package && version && arch && sha)
                                g_hash_table_replace(sums, apt_archive_name(package, version, arch),
                                                     g_steal_pointer(&sha));
                        g_clear_pointer(&package, g_free);
                        g_clear_pointer(&version, g_free);
                        g_clear_pointer(&arch, g_free);
                        g_clear_pointer(&sha, g_free);
                        continue;
                }
                if (line[0] == ' ')
                        continue;
                if (g_str_has_prefix(line, "Package:")) {
                        g_free(package);
                        package = g_strstrip(g_strdup(line + 8));
                } else if (g_str_has_prefix(line, "Version:")) {
                        g_free(version);
                        version = g_strstrip(g_strdup(line + 8));
                } else if (g_str_has_prefix(line, "Architecture:")) {
                        g_free(arch);
                        arch = g_strstrip(g_strdup(line + 13));
                } else if (g_str_has_prefix(line, "SHA256:")) {
                        g_free(sha);
                        sha = g_strstrip(g_strdup(line + 7));
                }
        }
}

static char *file_sha256(int dir_fd, const char *name)
{
        g_autoptr(Sha256) sum = sha256_new();
        _cleanup_close_ int fd = openat(dir_fd, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
        uint8_t buf[128 * 1024];
        ssize_t n;

        if (fd < 0)
                return NULL;
        while ((n = read(fd, buf, sizeof buf)) > 0)
                sha256_update(sum, buf, n);
        if (n < 0)
                return NULL;
        return g_strdup(sha256_get_string(sum));
}

/* apt takes a file already in its archives for the package as long as its size is right, without
 * checking its hash: every cached .deb the lists name (which apt has just verified against the
 * signed Release file) is checked here, and one that is not what they say is removed, so that apt
 * fetches it again. A file the lists do not name is one apt never takes for this build. */
static int cache_verify(Build *b, const char *cache, bool remove_unknown)
{
        g_autoptr(GHashTable) sums = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, g_free);
        g_autofree char *lists_path = g_strdup_printf("%s/lists", cache);
        g_autofree char *archives_path = g_strdup_printf("%s/archives", cache);
        struct dirent *de;
        unsigned bad = 0;
        DIR *d;

        d = opendir(lists_path);
        if (!d && (errno != ENOENT || !remove_unknown))
                return job_child_fail(b->c, errno, "Cannot read apt's lists: %s", strerror(errno));
        while (d && (de = readdir(d)))
                if (de->d_type == DT_REG && g_str_has_suffix(de->d_name, "_Packages")) {
                        int fd = openat(dirfd(d), de->d_name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
                        if (fd >= 0)
                                read_packages_list(fd, sums);
                }
        if (d)
                closedir(d);

        d = opendir(archives_path);
        if (!d)
                return job_child_fail(b->c, errno, "Cannot read the package cache: %s", strerror(errno));
        while ((de = readdir(d))) {
                const char *want;
                g_autofree char *have = NULL;
                if (de->d_type != DT_REG || !g_str_has_suffix(de->d_name, ".deb"))
                        continue;
                want = g_hash_table_lookup(sums, de->d_name);
                if (!want && remove_unknown) {
                        (void) unlinkat(dirfd(d), de->d_name, 0);
                        continue;
                }
                if (!want)
                        continue;
                have = file_sha256(dirfd(d), de->d_name);
                if (have && g_ascii_strcasecmp(have, want) == 0)
                        continue;
                job_child_log(b->c, LOG_LEVEL_WARNING,
                              "The cached %s is not what the archive's signed index says (SHA256 %s, not %s): "
                              "fetching it again.",
                              de->d_name, have ?: "unreadable", want);
                (void) unlinkat(dirfd(d), de->d_name, 0);
                bad++;
        }
        closedir(d);
        if (bad == 0)
                job_child_log(b->c, LOG_LEVEL_DEBUG, "The package cache matches the signed index.");
        return 0;
}

/* Run apt-get in the jail, with the cache at its places in the tree. */
static int run_apt(Build *b, const char *target, const char *cache, bool network, Phase phase, const char *const *args)
{
        g_autofree char *archives = g_strdup_printf("%s/archives", cache);
        g_autofree char *lists = g_strdup_printf("%s/lists", cache);
        const char *binds[] = {archives, "var/cache/apt/archives", lists, "var/lib/apt/lists", NULL};
        g_autoptr(GPtrArray) argv = g_ptr_array_new();
        Jail jail = {.target = target,
                     .base = b->jail_base,
                     .ready = {-1, -1},
                     .go = {-1, -1},
                     .network = network,
                     .proc = true,
                     .binds = binds};
        int k;

        g_ptr_array_add(argv, (char *) "/usr/bin/apt-get");
        g_ptr_array_add(argv, (char *) "-q");
        g_ptr_array_add(argv, (char *) "-y");
        /* Progress as apt counts it, on the protocol's fd. */
        g_ptr_array_add(argv, (char *) "-o");
        g_ptr_array_add(argv, (char *) "APT::Status-Fd=3");
        /* apt's binary caches (tens of MiB) would stay in the template. */
        g_ptr_array_add(argv, (char *) "-o");
        g_ptr_array_add(argv, (char *) "Dir::Cache::pkgcache=");
        g_ptr_array_add(argv, (char *) "-o");
        g_ptr_array_add(argv, (char *) "Dir::Cache::srcpkgcache=");
        g_ptr_array_add(argv, (char *) "-o");
        g_ptr_array_add(argv, (char *) "Acquire::Languages=none");
        g_ptr_array_add(argv, (char *) "-o");
        g_ptr_array_add(argv, (char *) "APT::Install-Recommends=false");
        /* No terminal in the jail for dpkg to log through. */
        g_ptr_array_add(argv, (char *) "-o");
        g_ptr_array_add(argv, (char *) "Dpkg::Use-Pty=0");
        for (const char *const *a = args; *a; a++)
                g_ptr_array_add(argv, (char *) *a);
        g_ptr_array_add(argv, NULL);

        b->apt_phase = phase;
        build_progress(b, phase, 0);
        k = run_jailed(b, (char **) argv->pdata, &jail, target);
        if (k >= 0)
                build_progress(b, phase, 1);
        return k;
}

/* The parent's recipe (inherited by the snapshot), with what this build changed. */
static char *derived_recipe(Build *b, int tree_fd, const char *uuid)
{
        static const char *const replaced[] = {"created", "uuid", "from", "added", "mirror", NULL};
        const TemplateJobArgs *t = &b->a->template;
        g_autoptr(GVariant) parent = NULL, v = NULL;
        g_autoptr(GPtrArray) include = g_ptr_array_new_with_free_func(g_free);
        g_autofree char *text = NULL;
        GVariantBuilder bld;
        GVariantIter it;
        const char *key;
        GVariant *value;
        ssize_t n;

        text = g_malloc(64 * 1024);
        n = fgetxattr(tree_fd, RECIPE_XATTR, text, 64 * 1024 - 1);
        if (n > 0) {
                text[n] = '\0';
                parent = g_variant_parse(G_VARIANT_TYPE_VARDICT, text, NULL, NULL, NULL);
        }
        g_variant_builder_init(&bld, G_VARIANT_TYPE_VARDICT);
        if (parent) {
                g_variant_iter_init(&it, parent);
                while (g_variant_iter_next(&it, "{&sv}", &key, &value)) {
                        if (streq(key, "include") && g_variant_is_of_type(value, G_VARIANT_TYPE_STRING_ARRAY)) {
                                g_autofree const char **l = g_variant_get_strv(value, NULL);
                                for (const char **p = l; *p; p++)
                                        g_ptr_array_add(include, g_strdup(*p));
                        } else if (!g_strv_contains(replaced, key) || (streq(key, "mirror") && !t->mirror))
                                g_variant_builder_add(&bld, "{sv}", key, value);
                        g_variant_unref(value);
                }
        }
        for (char **p = t->include; p && *p; p++)
                if (!g_ptr_array_find_with_equal_func(include, *p, g_str_equal, NULL))
                        g_ptr_array_add(include, g_strdup(*p));
        g_ptr_array_add(include, NULL);
        g_variant_builder_add(&bld, "{sv}", "include", g_variant_new_strv((const char *const *) include->pdata, -1));
        g_variant_builder_add(&bld, "{sv}", "from", g_variant_new_string(t->from));
        g_variant_builder_add(
                &bld, "{sv}", "added",
                g_variant_new_strv(t->include ? (const char *const *) t->include : (const char *const[]) {NULL}, -1));
        if (t->mirror)
                g_variant_builder_add(&bld, "{sv}", "mirror", g_variant_new_string(t->mirror));
        g_variant_builder_add(&bld, "{sv}", "created", g_variant_new_uint64(now_usec(CLOCK_REALTIME)));
        if (uuid)
                g_variant_builder_add(&bld, "{sv}", "uuid", g_variant_new_string(uuid));
        v = g_variant_ref_sink(g_variant_builder_end(&bld));
        return g_variant_print(v, TRUE);
}

/* The mirror the caller chose goes into the template's apt sources, as debootstrap writes them. */
static int write_sources(Build *b, int tree_fd, const char *mirror, const char *suite)
{
        g_autofree char *text = g_strdup_printf("deb %s %s main\n", mirror, suite);
        _cleanup_close_ int fd = open_in_tree(tree_fd, "etc/apt/sources.list", O_WRONLY | O_CREAT | O_TRUNC, 0644);

        if (fd < 0 || loop_write(fd, text, strlen(text)) < 0)
                return job_child_fail(b->c, fd < 0 ? -fd : errno, "Cannot write the template's apt sources");
        return 0;
}

static int transfer_derive(JobChild *c, const JobArgs *a)
{
        const TemplateJobArgs *t = &a->template;
        _cleanup_(build_done) Build b = {.c = c,
                                         .a = a,
                                         .derived = true,
                                         .tool = "apt-get",
                                         .cache_lock_fd = -1,
                                         .tree_fd = -1,
                                         .jail_lock_fd = -1,
                                         .pty_master = -1,
                                         .pty_slave = -1};
        g_autofree char *target = NULL, *cache = NULL, *recipe = NULL, *includes = NULL;
        _cleanup_close_ int tree_fd = -1;
        bool subvolume = false;
        char uuid[33] = "", err[512] = "";
        int k;

        job_child_progress(c, 0);
        if (!c->store || !c->temp_name || !t->arch || !t->from)
                return job_child_fail(c, EINVAL, "stamp-transfer: invalid arguments");
        includes = t->include ? g_strjoinv(", ", t->include) : NULL;
        job_child_log(c, LOG_LEVEL_INFO, "Building template %s from template %s, adding %s.", a->name, t->from,
                      includes ?: "no package");

        k = store_clone_image(c->store_fd, c->store_is_btrfs, t->from, c->temp_name, 0, UID_INVALID, err, sizeof err);
        if (k < 0)
                return job_child_fail(c, -k, "%s", err);
        tree_fd = openat(c->store_fd, c->temp_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (tree_fd < 0)
                return job_child_fail(c, errno, "Cannot open the new tree: %s", strerror(errno));
        subvolume = fd_is_subvolume(tree_fd) > 0;
        if (subvolume) {
                BtrfsSubvolInfo info;
                int r = btrfs_subvol_info_fd(tree_fd, &info);
                if (r < 0)
                        return job_child_fail(c, -r, "Cannot read the new subvolume's UUID: %s", strerror(-r));
                uuid_to_hex(info.uuid, uuid);
        }
        b.tree_fd = tree_fd;
        build_progress(&b, PHASE_PREPARE, 1);
        target = g_strdup_printf("%s/%s", c->store, c->temp_name);
        k = store_mount_allow_dev_suid(target);
        if (k < 0)
                return job_child_fail(c, -k, "Cannot mount the new tree: %s", strerror(-k));
        if (k > 0)
                b.mounted = target;
        if (t->mirror && (k = write_sources(&b, tree_fd, t->mirror, t->suite)) < 0)
                return k;

        if (t->include && t->include[0]) {
                static const char *const update[] = {"update", NULL};
                g_autoptr(GPtrArray) download = g_ptr_array_new(), install = g_ptr_array_new();
                g_autofree char *archives_partial = NULL, *lists_partial = NULL;

                k = open_cache(&b, "apt", t->suite, t->arch, &cache);
                if (k < 0)
                        return k;
                archives_partial = g_strdup_printf("%s/archives/partial", cache);
                lists_partial = g_strdup_printf("%s/lists/partial", cache);
                if ((k = mkdir_parents(archives_partial, 0755)) < 0 || (k = mkdir_parents(lists_partial, 0755)) < 0)
                        return job_child_fail(c, -k, "Cannot make the package cache: %s", strerror(-k));
                k = jail_pick_range(&b, &b.jail_base);
                if (k < 0)
                        return k;

                /* The indices, verified by apt against the keys the template trusts. */
                k = run_apt(&b, target, cache, true, PHASE_INDEXES, update);
                if (k < 0)
                        return k;
                k = cache_verify(&b, cache, false);
                if (k < 0)
                        return k;
                g_ptr_array_add(download, (char *) "install");
                g_ptr_array_add(download, (char *) "--download-only");
                g_ptr_array_add(install, (char *) "install");
                g_ptr_array_add(install, (char *) "--no-download");
                for (char **p = t->include; *p; p++) {
                        g_ptr_array_add(download, *p);
                        g_ptr_array_add(install, *p);
                }
                g_ptr_array_add(download, NULL);
                g_ptr_array_add(install, NULL);
                k = run_apt(&b, target, cache, true, PHASE_DOWNLOAD, (const char *const *) download->pdata);
                if (k < 0)
                        return k;
                if (b.made_resolv_conf) {
                        _cleanup_close_ int etc = open_in_tree(tree_fd, "etc", O_RDONLY | O_DIRECTORY, 0);
                        if (etc < 0 || unlinkat(etc, "resolv.conf", 0) < 0)
                                return job_child_fail(c, errno, "Cannot remove the build's resolv.conf");
                        b.made_resolv_conf = false;
                }
                /* The packages' scripts run without the network, as a full build's second stage. */
                k = run_apt(&b, target, cache, false, PHASE_CONFIGURE_BASE, (const char *const *) install->pdata);
                if (k < 0)
                        return k;
                b.jail_lock_fd = safe_close(b.jail_lock_fd);
        }
        build_progress(&b, PHASE_FINISH, 0);

        if (t->root_password_hashed) {
                k = set_root_password(&b, tree_fd, t->root_password_hashed);
                if (k < 0)
                        return k;
        }
        make_generic(&b, tree_fd);
        build_progress(&b, PHASE_FINISH, 0.5);

        recipe = derived_recipe(&b, tree_fd, subvolume ? uuid : NULL);
        k = commit(&b, c->store_fd, tree_fd, subvolume, c->temp_name, a->name, recipe);
        if (k < 0)
                return k;
        if (cache)
                cache_finish(&b, "apt", t->suite, t->arch);
        build_progress(&b, PHASE_FINISH, 1);
        job_child_log(c, LOG_LEVEL_INFO, "Template %s is ready.", a->name);
        return 0;
}

/* ---- online builds with mmdebstrap ---- */

/* mmdebstrap builds the tree in one run: download with the host's apt (verified against the suite's
 * keyring), extraction, and the packages' scripts in a chroot of the tree. It runs in a jail of its
 * own (jail_enter_host()): root of a user namespace whose ids are an unprivileged range of the host
 * (as the second stage of debootstrap's), with its own mount, PID, IPC and UTS namespaces, the
 * host's network (for the download), the host's file system read-only, and writable only the tree
 * (idmapped) and a tmpfs stage holding its TMPDIR and the package cache (idmapped). Its progress
 * bars are read from a terminal of ours.
 *
 * The cache: <cache>/archives is bound over the tree's /var/cache/apt/archives for the run (mmdebstrap
 * takes the .debs it finds there and downloads the rest into it), and the signed lists of the run
 * are kept in <cache>/lists, so that before the next run every cached .deb can be checked against
 * them: one they do not name, or name with another SHA256, is removed. */
/* The device nodes and links debootstrap puts in a tree's /dev (setup_devices_simple), which mmdebstrap
 * cannot make in its user namespace: made here, as the host's root, through the tree's own /dev (no
 * link followed out of it), where nothing is in their place yet. */
static int make_devices(Build *b, int tree_fd)
{
        static const struct {
                const char *name;
                unsigned major, minor;
                mode_t mode;
        } nodes[] = {
                {"null", 1, 3, 0666},    {"zero", 1, 5, 0666}, {"full", 1, 7, 0666},    {"random", 1, 8, 0666},
                {"urandom", 1, 9, 0666}, {"tty", 5, 0, 0666},  {"console", 5, 1, 0666}, {"ptmx", 5, 2, 0666},
        };
        static const char *const links[][2] = {
                {"fd", "/proc/self/fd"},
                {"stdin", "/proc/self/fd/0"},
                {"stdout", "/proc/self/fd/1"},
                {"stderr", "/proc/self/fd/2"},
        };
        _cleanup_close_ int dev = open_in_tree(tree_fd, "dev", O_RDONLY | O_DIRECTORY, 0);
        mode_t old;

        if (dev < 0)
                return job_child_fail(b->c, -dev, "The new tree has no /dev: %s", strerror(-dev));
        old = umask(0);
        for (size_t i = 0; i < ELEMENTSOF(nodes); i++)
                if (mknodat(dev, nodes[i].name, S_IFCHR | nodes[i].mode, makedev(nodes[i].major, nodes[i].minor)) < 0 &&
                    errno != EEXIST) {
                        int e = errno;
                        umask(old);
                        return job_child_fail(b->c, e, "Cannot make /dev/%s in the new tree: %s", nodes[i].name,
                                              strerror(e));
                }
        umask(old);
        (void) mkdirat(dev, "pts", 0755);
        (void) mkdirat(dev, "shm", 0755);
        for (size_t i = 0; i < ELEMENTSOF(links); i++)
                best_effort(symlinkat(links[i][1], dev, links[i][0]));
        return 0;
}

static int build_with_mmdebstrap(Build *b, const char *target, const char *variant, const char *arch,
                                 const char *mirror, const char *includes)
{
        const TemplateJobArgs *t = &b->a->template;
        g_autofree char *cache = NULL, *stage = g_strdup("/run/stamp-transfer.XXXXXX"), *stage_cache = NULL,
                        *stage_tmp = NULL, *stage_root = NULL, *opts = NULL, *setup = NULL, *customize = NULL,
                        *archives = NULL, *lists = NULL;
        const char *binds[3] = {NULL};
        g_autoptr(GPtrArray) argv = g_ptr_array_new_with_free_func(g_free);
        Jail jail = {.target = target, .ready = {-1, -1}, .go = {-1, -1}, .network = true, .host_root = true};
        struct winsize ws = {.ws_row = 25, .ws_col = 100};
        int k;

        k = open_cache(b, "mmdebstrap", t->suite, arch, &cache);
        if (k < 0)
                return k;
        archives = g_strdup_printf("%s/archives/partial", cache);
        lists = g_strdup_printf("%s/lists", cache);
        if ((k = mkdir_parents(archives, 0755)) < 0 || (k = mkdir_parents(lists, 0755)) < 0)
                return job_child_fail(b->c, -k, "Cannot make the package cache: %s", strerror(-k));
        g_free(archives);
        archives = g_strdup_printf("%s/archives", cache);
        k = cache_verify(b, cache, true);
        if (k < 0)
                return k;

        k = jail_pick_range(b, &jail.base);
        if (k < 0)
                return k;
        if (!mkdtemp(stage))
                return job_child_fail(b->c, errno, "Cannot make a directory for the build: %s", strerror(errno));
        b->secret_dir = g_steal_pointer(&stage); /* removed, and unmounted, with the build */
        opts = g_strdup_printf("mode=0755,size=256m,uid=%" PRIu32 ",gid=%" PRIu32, jail.base, jail.base);
        if (mount("tmpfs", b->secret_dir, "tmpfs", MS_NOSUID | MS_NODEV, opts) < 0)
                return job_child_fail(b->c, errno, "Cannot mount a tmpfs for the build: %s", strerror(errno));
        b->secret_mounted = true;
        stage_cache = g_strdup_printf("%s/cache", b->secret_dir);
        stage_tmp = g_strdup_printf("%s/tmp", b->secret_dir);
        stage_root = g_strdup_printf("%s/root", b->secret_dir);
        if (mkdir(stage_cache, 0755) < 0 || mkdir(stage_tmp, 01777) < 0 || mkdir(stage_root, 0755) < 0 ||
            chown(stage_tmp, jail.base, jail.base) < 0 || chmod(stage_tmp, 01777) < 0)
                return job_child_fail(b->c, errno, "Cannot set up the build's directory: %s", strerror(errno));
        jail.stage = b->secret_dir;
        jail.stage_root = stage_root;
        jail.stage_tmp = stage_tmp;
        b->tmpdir = stage_tmp;
        binds[0] = cache;
        binds[1] = stage_cache;
        jail.binds = binds;

        b->pty_master = posix_openpt(O_RDWR | O_NOCTTY | O_CLOEXEC);
        if (b->pty_master < 0 || grantpt(b->pty_master) < 0 || unlockpt(b->pty_master) < 0 ||
            (b->pty_slave = open(ptsname(b->pty_master), O_RDWR | O_NOCTTY | O_CLOEXEC)) < 0 ||
            ioctl(b->pty_slave, TIOCSWINSZ, &ws) < 0)
                return job_child_fail(b->c, errno, "Cannot make a terminal for mmdebstrap: %s", strerror(errno));

        /* The cache goes in after mmdebstrap set up the tree and out before it cleans up; the lists
         * it verified stay with the cache for the next build's check. */
        setup = g_strdup_printf("--setup-hook=mkdir -p \"$1\"/var/cache/apt/archives \"$1\"/var/lib/apt/lists && "
                                "mount --bind %s/archives \"$1\"/var/cache/apt/archives && "
                                "{ cp -p %s/lists/*_* \"$1\"/var/lib/apt/lists/ 2>/dev/null || true; }",
                                stage_cache, stage_cache);
        customize = g_strdup_printf("--customize-hook=rm -f %s/lists/*_*; "
                                    "cp -p \"$1\"/var/lib/apt/lists/*_* %s/lists/ 2>/dev/null; "
                                    "umount \"$1\"/var/cache/apt/archives",
                                    stage_cache, stage_cache);

        g_ptr_array_add(argv, g_strdup(MMDEBSTRAP));
        /* root of the jail's user namespace, which is no root of the host */
        g_ptr_array_add(argv, g_strdup("--mode=root"));
        /* debootstrap's fakechroot variant only said how debootstrap would be run: its packages are
         * minbase's */
        g_ptr_array_add(argv, g_strdup_printf("--variant=%s", streq(variant, "buildd") ? "buildd" : "minbase"));
        g_ptr_array_add(argv, g_strdup_printf("--architectures=%s", arch));
        if (!isempty(includes))
                g_ptr_array_add(argv, g_strdup_printf("--include=%s", includes));
        g_ptr_array_add(argv, g_strdup_printf("--keyring=%s", t->keyring));
        g_ptr_array_add(argv, g_strdup("--skip=essential/unlink"));
        /* No fsync for every file dpkg unpacks: a tree that is not complete is thrown away anyway, and
         * the whole of it is synced once before it is put in place. */
        g_ptr_array_add(argv, g_strdup("--dpkgopt=force-unsafe-io"));
        /* The lists of the last build go in first, so that apt's update asks only what changed. */
        g_ptr_array_add(argv, g_steal_pointer(&setup));
        /* /usr merged as debootstrap merges it (directory symlinks) where the suite has usr-is-merged:
         * otherwise apt would pull in the usrmerge package and perl, which debootstrap's tree has not. */
        if (access(MMDEBSTRAP_MERGED_USR_HOOKS, F_OK) >= 0)
                g_ptr_array_add(argv, g_strdup("--hook-dir=" MMDEBSTRAP_MERGED_USR_HOOKS));
        g_ptr_array_add(argv, g_steal_pointer(&customize));
        g_ptr_array_add(argv, g_strdup(t->suite));
        g_ptr_array_add(argv, g_strdup(stage_root));
        g_ptr_array_add(argv, g_strdup(mirror));
        g_ptr_array_add(argv, NULL);

        k = run_jailed(b, (char **) argv->pdata, &jail, target);
        (void) umount2(stage_cache, MNT_DETACH);
        b->jail_lock_fd = safe_close(b->jail_lock_fd);
        b->tmpdir = NULL;
        if (k < 0)
                return k;
        return make_devices(b, b->tree_fd);
}
