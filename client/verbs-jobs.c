/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* create-template, export-tar, import-tar, pull-tar, jobs, cancel; and waiting for a job. */

#include <crypt.h>
#include <fcntl.h>
#include <inttypes.h>
#include <libgen.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <syslog.h>
#include <termios.h>
#include <unistd.h>

#include <glib.h>

#include "escape.h"
#include "file-util.h"
#include "formats.h"
#include "names.h"
#include "progress.h"
#include "redact.h"
#include "stampctl.h"
#include "table.h"

struct job_wait {
        sd_bus *bus;
        sd_event *event;
        uint32_t id;
        char *path; /* NULL until the method returned it */
        struct progress progress;
        char *result;
        char *last_error;
        bool cancel_sent;
        bool vanished;
        bool detached;
        sd_bus_slot *cancel_slot;
        sd_bus_slot *progress_slot;
};

static void job_wait_done(struct job_wait *w)
{
        progress_done(&w->progress);
        sd_bus_slot_unref(w->cancel_slot);
        sd_bus_slot_unref(w->progress_slot);
        free(w->path);
        free(w->result);
        free(w->last_error);
}

static bool job_wait_is_ours(struct job_wait *w, const char *path)
{
        return w->path && path && strcmp(w->path, path) == 0;
}

static int on_job_removed(sd_bus_message *m, void *userdata, sd_bus_error *ret_error)
{
        struct job_wait *w = userdata;
        const char *path, *result;
        uint32_t id;

        if (sd_bus_message_read(m, "uos", &id, &path, &result) < 0)
                return 0;
        if (!job_wait_is_ours(w, path))
                return 0;
        free(w->result);
        w->result = strdup(result);
        sd_event_exit(w->event, 0);
        return 0;
}

static int on_log_message(sd_bus_message *m, void *userdata, sd_bus_error *ret_error)
{
        struct job_wait *w = userdata;
        _cleanup_(freep) char *shown = NULL;
        const char *text;
        uint32_t priority;

        if (!job_wait_is_ours(w, sd_bus_message_get_path(m)))
                return 0;
        if (sd_bus_message_read(m, "us", &priority, &text) < 0)
                return 0;

        /* What a job logs may quote its image's files or an archive: escaped before it is shown. */
        shown = text_escape(text, 0, ESCAPE_TERMINAL);
        if (!shown)
                return 0;
        /* The last error is what a failed job prints as its reason. */
        if (priority <= LOG_ERR) {
                free(w->last_error);
                w->last_error = strdup(shown);
        }
        if (arg_verbose)
                progress_log(&w->progress, shown);
        return 0;
}

static int on_progress_reply(sd_bus_message *m, void *userdata, sd_bus_error *ret_error)
{
        struct job_wait *w = userdata;
        double d;

        w->progress_slot = sd_bus_slot_unref(w->progress_slot);
        if (!sd_bus_message_is_method_error(m, NULL) && sd_bus_message_read(m, "v", "d", &d) >= 0)
                progress_update(&w->progress, d);
        return 0;
}

static int on_properties_changed(sd_bus_message *m, void *userdata, sd_bus_error *ret_error)
{
        struct job_wait *w = userdata;
        const char *iface, *prop;
        int r;

        if (!job_wait_is_ours(w, sd_bus_message_get_path(m)))
                return 0;
        if (sd_bus_message_read(m, "s", &iface) < 0 || strcmp(iface, STAMP_JOB_IFACE) != 0)
                return 0;
        if (sd_bus_message_enter_container(m, 'a', "{sv}") < 0)
                return 0;
        while ((r = sd_bus_message_enter_container(m, 'e', "sv")) > 0) {
                if (sd_bus_message_read(m, "s", &prop) < 0)
                        return 0;
                if (strcmp(prop, "Progress") == 0) {
                        double d;
                        if (sd_bus_message_read(m, "v", "d", &d) < 0)
                                return 0;
                        progress_update(&w->progress, d);
                } else if (sd_bus_message_skip(m, "v") < 0)
                        return 0;
                if (sd_bus_message_exit_container(m) < 0)
                        return 0;
        }
        if (r < 0 || sd_bus_message_exit_container(m) < 0)
                return 0;

        /* A property announced as invalidated only: ask for its value. */
        if (sd_bus_message_enter_container(m, 'a', "s") < 0)
                return 0;
        while (sd_bus_message_read(m, "s", &prop) > 0)
                if (strcmp(prop, "Progress") == 0 && !w->progress_slot)
                        (void) sd_bus_call_method_async(w->bus, &w->progress_slot, STAMP_BUS_NAME, w->path,
                                                        "org.freedesktop.DBus.Properties", "Get", on_progress_reply, w,
                                                        "ss", STAMP_JOB_IFACE, "Progress");
        return 0;
}

static int on_name_owner_changed(sd_bus_message *m, void *userdata, sd_bus_error *ret_error)
{
        struct job_wait *w = userdata;
        const char *name, *old_owner, *new_owner;

        if (sd_bus_message_read(m, "sss", &name, &old_owner, &new_owner) < 0)
                return 0;
        /* Activation by our own call shows up as a new owner: only an empty new owner is an end. */
        if (w->path && *old_owner && !*new_owner) {
                w->vanished = true;
                sd_event_exit(w->event, 0);
        }
        return 0;
}

static int on_cancel_reply(sd_bus_message *m, void *userdata, sd_bus_error *ret_error)
{
        struct job_wait *w = userdata;
        const sd_bus_error *e = sd_bus_message_get_error(m);

        w->cancel_slot = sd_bus_slot_unref(w->cancel_slot);
        if (e) {
                _cleanup_(freep) char *line = NULL;
                /* NoSuchJob: it ended meanwhile; JobRemoved tells how. */
                if (sd_bus_error_has_name(e, STAMP_ERROR_NO_SUCH_JOB))
                        return 0;
                _cleanup_(freep) char *message = text_escape(e->message ? e->message : e->name, 0, ESCAPE_TERMINAL);
                if (message && asprintf(&line, "stampctl: could not cancel job %" PRIu32 ": %s", w->id, message) >= 0)
                        progress_log(&w->progress, line);
                w->cancel_sent = false;
        }
        return 0;
}

static int send_cancel(struct job_wait *w)
{
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL;
        int r;

        r = bus_new_manager_call(w->bus, &m, "CancelJob");
        if (r < 0)
                return r;
        r = sd_bus_message_append(m, "u", w->id);
        if (r < 0)
                return r;
        if (arg_ask_password) {
                (void) sd_bus_message_set_allow_interactive_authorization(m, true);
                (void) polkit_agent_open();
        }
        return sd_bus_call_async(w->bus, &w->cancel_slot, m, on_cancel_reply, w, UINT64_MAX);
}

static int on_signal(sd_event_source *s, const struct signalfd_siginfo *si, void *userdata)
{
        struct job_wait *w = userdata;
        char line[128];

        if (si->ssi_signo != SIGINT) {
                /* Terminated or hung up: ask for the cancel, do not stay for it. */
                if (!w->cancel_sent)
                        (void) send_cancel(w);
                (void) sd_bus_flush(w->bus);
                w->detached = true;
                sd_event_exit(w->event, 0);
                return 0;
        }

        if (w->cancel_sent) {
                /* A second Ctrl-C: stop waiting. */
                w->detached = true;
                sd_event_exit(w->event, 0);
                return 0;
        }

        snprintf(line, sizeof(line), "Canceling job %" PRIu32 "... (Ctrl-C again to stop waiting)", w->id);
        if (!arg_quiet)
                progress_log(&w->progress, line);
        w->cancel_sent = true;
        if (send_cancel(w) < 0)
                w->cancel_sent = false;
        return 0;
}

/* Sends @call (a method returning (u job_id, o job)), then waits for the job
 * unless --no-block. The size of @size_fd after the job (a regular file: what an export wrote, what
 * an import read) goes into the summary, said with @bytes_verb. Returns an exit code. */
int job_run_sized(sd_bus *bus, sd_bus_message *call, const char *label, int size_fd, const char *bytes_verb)
{
        _cleanup_(sd_bus_error_freep) sd_bus_error error = SD_BUS_ERROR_NULL;
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        _cleanup_(sd_bus_slot_unrefp) sd_bus_slot *s1 = NULL, *s2 = NULL, *s3 = NULL, *s4 = NULL;
        _cleanup_(sd_event_unrefp) sd_event *event = NULL;
        _cleanup_(job_wait_done) struct job_wait w = {.bus = bus};
        const char *path;
        int r;

        progress_init(&w.progress, stderr, isatty(STDERR_FILENO), arg_quiet, label);

        /* Subscribe before the call: a short job may end before its reply is read. */
        if (arg_block) {
                r = sd_bus_match_signal(bus, &s1, STAMP_BUS_NAME, STAMP_MANAGER_PATH, STAMP_MANAGER_IFACE, "JobRemoved",
                                        on_job_removed, &w);
                if (r >= 0)
                        r = sd_bus_match_signal(bus, &s2, STAMP_BUS_NAME, NULL, STAMP_JOB_IFACE, "LogMessage",
                                                on_log_message, &w);
                if (r >= 0)
                        r = sd_bus_add_match(bus, &s3,
                                             "type='signal',"
                                             "sender='" STAMP_BUS_NAME "',"
                                             "interface='org.freedesktop.DBus.Properties',"
                                             "member='PropertiesChanged',"
                                             "path_namespace='" STAMP_JOB_PREFIX "',"
                                             "arg0='" STAMP_JOB_IFACE "'",
                                             on_properties_changed, &w);
                if (r >= 0)
                        r = match_daemon_vanished(bus, &s4, on_name_owner_changed, &w);
                if (r < 0)
                        return log_error(EXIT_FAILURE_GENERIC, "Failed to subscribe to job signals: %s", strerror(-r));
        }

        r = bus_call_mutating(bus, call, &error, &reply);
        if (r < 0)
                return log_bus_error(&error, r, "Failed to start the job");
        r = sd_bus_message_read(reply, "uo", &w.id, &path);
        if (r < 0)
                return log_error(EXIT_FAILURE_GENERIC, "Failed to parse the reply: %s", strerror(-r));

        if (!arg_block) {
                if (arg_json) {
                        printf("{\"id\": %" PRIu32 ", \"object\": ", w.id);
                        json_fputs(path, stdout);
                        printf("}\n");
                } else
                        printf("%" PRIu32 "\n", w.id);
                return EXIT_OK;
        }

        w.path = strdup(path);
        if (!w.path)
                return log_error(EXIT_FAILURE_GENERIC, "Out of memory.");
        log_debug("Job %" PRIu32 " started: %s", w.id, w.path);

        r = event_new_with_signals(&event, on_signal, &w);
        if (r >= 0)
                r = sd_bus_attach_event(bus, event, SD_EVENT_PRIORITY_NORMAL);
        if (r < 0)
                return log_error(EXIT_FAILURE_GENERIC, "Failed to set up the event loop: %s", strerror(-r));
        w.event = event;

        progress_update(&w.progress, -1);
        r = sd_event_loop(event);
        progress_clear(&w.progress);
        (void) sd_bus_detach_event(bus);

        if (r < 0)
                return log_error(EXIT_FAILURE_GENERIC, "Failed to wait for job %" PRIu32 ": %s", w.id, strerror(-r));
        if (w.detached)
                return log_error(EXIT_FAILURE_GENERIC, "Stopped waiting for job %" PRIu32 "%s.", w.id,
                                 w.cancel_sent ? "; it is being canceled" : "");
        if (w.vanished)
                return log_error(EXIT_UNAVAILABLE, "stampd exited before job %" PRIu32 " ended.", w.id);
        if (w.result && strcmp(w.result, "done") == 0) {
                struct stat st;
                if (size_fd >= 0 && fstat(size_fd, &st) >= 0 && S_ISREG(st.st_mode)) {
                        w.progress.bytes = (uint64_t) st.st_size;
                        w.progress.bytes_verb = bytes_verb;
                }
                progress_summary(&w.progress);
                return EXIT_OK;
        }
        if (w.result && strcmp(w.result, "canceled") == 0)
                return log_error(EXIT_FAILURE_GENERIC, "Job %" PRIu32 " (%s) was canceled.", w.id, label);
        /* The reason may say "failed" itself: then once is enough. */
        if (w.last_error && strcasestr(w.last_error, "fail"))
                return log_error(EXIT_FAILURE_GENERIC, "Job %" PRIu32 " (%s): %s", w.id, label, w.last_error);
        return log_error(EXIT_FAILURE_GENERIC, "Job %" PRIu32 " (%s) failed: %s", w.id, label,
                         w.last_error ? w.last_error : "see its log with --verbose");
}

int job_run(sd_bus *bus, sd_bus_message *call, const char *label)
{
        return job_run_sized(bus, call, label, -1, NULL);
}

/* Options dictionaries: only the options the user gave, the daemon has the defaults. */
static int append_string_option(sd_bus_message *m, const char *key, const char *value)
{
        if (!value)
                return 0;
        return sd_bus_message_append(m, "{sv}", key, "s", value);
}

static int append_bool_option(sd_bus_message *m, const char *key, bool value, bool given)
{
        if (!given)
                return 0;
        return sd_bus_message_append(m, "{sv}", key, "b", (int) value);
}

/* Reads a line from @fd, echo off when it is a terminal. */
static struct termios saved_termios;
static int saved_termios_fd = -1;

static void restore_termios_and_die(int sig)
{
        if (saved_termios_fd >= 0)
                tcsetattr(saved_termios_fd, TCSAFLUSH, &saved_termios);
        signal(sig, SIG_DFL);
        raise(sig);
}

static int read_line_noecho(int fd, const char *prompt, char *buf, size_t size)
{
        struct termios t;
        struct sigaction sa = {.sa_handler = restore_termios_and_die}, old_int, old_term, old_hup;
        size_t n = 0;
        int r = 0;

        if (write(fd, prompt, strlen(prompt)) < 0)
                return -errno;
        if (tcgetattr(fd, &saved_termios) < 0)
                return -errno;
        saved_termios_fd = fd;
        sigaction(SIGINT, &sa, &old_int);
        sigaction(SIGTERM, &sa, &old_term);
        sigaction(SIGHUP, &sa, &old_hup);
        t = saved_termios;
        t.c_lflag &= ~(tcflag_t) ECHO;
        t.c_lflag |= ICANON;
        if (tcsetattr(fd, TCSAFLUSH, &t) < 0)
                r = -errno;

        while (r == 0) {
                char c;
                ssize_t k = read(fd, &c, 1);
                if (k < 0 && errno == EINTR)
                        continue;
                if (k < 0) {
                        r = -errno;
                        break;
                }
                if (k == 0 || c == '\n')
                        break;
                if (n + 1 >= size) {
                        r = -E2BIG;
                        break;
                }
                buf[n++] = c;
        }
        buf[n] = '\0';

        tcsetattr(fd, TCSAFLUSH, &saved_termios);
        saved_termios_fd = -1;
        sigaction(SIGINT, &old_int, NULL);
        sigaction(SIGTERM, &old_term, NULL);
        sigaction(SIGHUP, &old_hup, NULL);
        (void) !write(fd, "\n", 1);
        return r;
}

/* The root password of a new template, as a crypt(3) hash: the plain text stays here. */
static int ask_root_password_hash(const char *image, char **ret)
{
        char pw1[512], pw2[512];
        _cleanup_(closep) int fd = -1;
        void *data = NULL;
        int size = 0;
        char *salt, *hash;
        int r = EXIT_OK;

        if (isatty(STDIN_FILENO)) {
                char prompt[128];

                fd = open("/dev/tty", O_RDWR | O_NOCTTY | O_CLOEXEC);
                if (fd < 0)
                        return log_error(EXIT_FAILURE_GENERIC, "Cannot open the terminal: %s", strerror(errno));
                snprintf(prompt, sizeof(prompt), "Root password for template %s: ", image);
                if (read_line_noecho(fd, prompt, pw1, sizeof(pw1)) < 0 ||
                    read_line_noecho(fd, "Repeat the password: ", pw2, sizeof(pw2)) < 0) {
                        explicit_bzero(pw1, sizeof(pw1));
                        explicit_bzero(pw2, sizeof(pw2));
                        return log_error(EXIT_FAILURE_GENERIC, "Failed to read the password.");
                }
                if (strcmp(pw1, pw2) != 0)
                        r = log_error(EXIT_USAGE, "The passwords do not match.");
                explicit_bzero(pw2, sizeof(pw2));
        } else {
                /* Scripts pipe the password in. */
                size_t n = 0;
                ssize_t k;
                while (n + 1 < sizeof(pw1) && (k = read(STDIN_FILENO, pw1 + n, 1)) != 0) {
                        if (k < 0 && errno == EINTR)
                                continue;
                        if (k < 0 || pw1[n] == '\n')
                                break;
                        n++;
                }
                pw1[n] = '\0';
        }
        if (r == EXIT_OK && pw1[0] == '\0')
                r = log_error(EXIT_USAGE, "An empty root password is refused.");
        if (r != EXIT_OK) {
                explicit_bzero(pw1, sizeof(pw1));
                return r;
        }

        salt = crypt_gensalt_ra("$y$", 0, NULL, 0);
        if (!salt)
                salt = crypt_gensalt_ra("$6$", 0, NULL, 0);
        if (!salt) {
                explicit_bzero(pw1, sizeof(pw1));
                return log_error(EXIT_FAILURE_GENERIC, "Failed to make a salt: %s", strerror(errno));
        }
        hash = crypt_ra(pw1, salt, &data, &size);
        explicit_bzero(pw1, sizeof(pw1));
        free(salt);
        if (!hash || hash[0] == '*') {
                free(data);
                return log_error(EXIT_FAILURE_GENERIC, "Failed to hash the password.");
        }
        *ret = strdup(hash);
        if (data)
                explicit_bzero(data, (size_t) size);
        free(data);
        return *ret ? EXIT_OK : log_error(EXIT_FAILURE_GENERIC, "Out of memory.");
}

int verb_create_template(sd_bus *bus, int argc, char **argv)
{
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL;
        _cleanup_(freep) char *hash = NULL;
        _cleanup_(freep) char *label = NULL;
        _cleanup_(closep) int tarball = -1;
        const char *name = argv[1];
        int r;

        if (!arg_suite && !arg_from)
                return log_error(EXIT_USAGE,
                                 "create-template needs --suite (bookworm, trixie, ...) or --from TEMPLATE.");

        if (arg_package_tarball) {
                r = bus_check_fd_passing(bus);
                if (r != EXIT_OK)
                        return r;
                tarball = open(arg_package_tarball, O_RDONLY | O_CLOEXEC | O_NOCTTY);
                if (tarball < 0)
                        return log_error(EXIT_FAILURE_GENERIC, "Cannot open %s: %s", arg_package_tarball,
                                         strerror(errno));
        }

        if (arg_root_password) {
                r = ask_root_password_hash(name, &hash);
                if (r != EXIT_OK)
                        return r;
        }

        r = bus_new_manager_call(bus, &m, "CreateTemplate");
        if (r >= 0)
                r = sd_bus_message_append(m, "ss", name, arg_suite ?: "");
        if (r >= 0)
                r = sd_bus_message_open_container(m, 'a', "{sv}");
        if (r >= 0)
                r = append_string_option(m, "variant", arg_variant);
        if (r >= 0)
                r = append_string_option(m, "arch", arg_arch);
        if (r >= 0 && arg_include) {
                r = sd_bus_message_open_container(m, 'e', "sv");
                if (r >= 0)
                        r = sd_bus_message_append(m, "s", "include");
                if (r >= 0)
                        r = sd_bus_message_open_container(m, 'v', "as");
                if (r >= 0)
                        r = sd_bus_message_append_strv(m, arg_include);
                if (r >= 0)
                        r = sd_bus_message_close_container(m);
                if (r >= 0)
                        r = sd_bus_message_close_container(m);
        }
        if (r >= 0)
                r = append_string_option(m, "mirror", arg_mirror);
        if (r >= 0 && tarball >= 0)
                r = sd_bus_message_append(m, "{sv}", "package_tarball", "h", tarball);
        if (r >= 0)
                r = append_string_option(m, "root_password_hashed", hash);
        if (r >= 0)
                r = append_string_option(m, "from", arg_from);
        if (r >= 0 && arg_no_cache)
                r = sd_bus_message_append(m, "{sv}", "image_cache", "b", 0);
        if (r >= 0)
                r = sd_bus_message_close_container(m);
        if (hash)
                explicit_bzero(hash, strlen(hash));
        if (r < 0)
                return log_error(EXIT_FAILURE_GENERIC, "Failed to create a bus message: %s", strerror(-r));

        if (asprintf(&label, "create-template %s", name) < 0)
                return log_error(EXIT_FAILURE_GENERIC, "Out of memory.");
        return job_run(bus, m, label);
}

/* Unlinks a temporary file that did not become the result. */
static void fclosep(FILE **f)
{
        if (*f)
                fclose(*f);
}

/* The lines of @sums except the one for @base. */
static int sums_without(const char *sums, const char *base, char **ret, size_t *ret_len)
{
        _cleanup_(fclosep) FILE *in = fopen(sums, "re");
        _cleanup_(freep) char *line = NULL;
        size_t cap = 0;
        FILE *mem;

        *ret = NULL;
        *ret_len = 0;
        if (!in)
                return errno == ENOENT ? 0 : -errno;
        mem = open_memstream(ret, ret_len);
        if (!mem)
                return -ENOMEM;
        while (getline(&line, &cap, in) > 0) {
                /* "<hash>  <name>" (text mode) or "<hash> *<name>" (binary mode) */
                const char *name = strchr(line, ' ');
                if (name && (name[1] == ' ' || name[1] == '*')) {
                        size_t n = strcspn(name + 2, "\n");
                        if (n == strlen(base) && strncmp(name + 2, base, n) == 0)
                                continue;
                }
                fputs(line, mem);
        }
        return fclose(mem) == 0 ? 0 : -ENOMEM;
}

/* Sets "<sha256>  <basename>" for @file in the SHA256SUMS beside it, replacing an older line. */
static int update_sha256sums(const char *file)
{
        _cleanup_(freep) char *dircopy = strdup(file), *basecopy = strdup(file), *sums = NULL, *tmp = NULL;
        _cleanup_(freep) char *old = NULL;
        _cleanup_(closep) int fd = -1;
        _cleanup_(unlink_tempp) char *tmp_owned = NULL;
        _cleanup_(fclosep) FILE *out = NULL;
        g_autoptr(GChecksum) checksum = g_checksum_new(G_CHECKSUM_SHA256);
        unsigned char buf[1 << 16];
        const char *base;
        size_t old_len = 0;
        ssize_t k;
        int tfd, r;

        if (!dircopy || !basecopy)
                return log_error(EXIT_FAILURE_GENERIC, "Out of memory.");
        base = basename(basecopy);
        if (asprintf(&sums, "%s/SHA256SUMS", dirname(dircopy)) < 0 || asprintf(&tmp, "%s.XXXXXX", sums) < 0)
                return log_error(EXIT_FAILURE_GENERIC, "Out of memory.");

        /* The finished file, read back: what a downloader will see. */
        fd = open(file, O_RDONLY | O_CLOEXEC | O_NOCTTY);
        if (fd < 0)
                return log_error(EXIT_FAILURE_GENERIC, "Cannot read %s back: %s", file, strerror(errno));
        while ((k = read(fd, buf, sizeof(buf))) != 0) {
                if (k < 0 && errno == EINTR)
                        continue;
                if (k < 0)
                        return log_error(EXIT_FAILURE_GENERIC, "Cannot read %s back: %s", file, strerror(errno));
                g_checksum_update(checksum, buf, (gssize) k);
        }

        r = sums_without(sums, base, &old, &old_len);
        if (r < 0)
                return log_error(EXIT_FAILURE_GENERIC, "Cannot read %s: %s", sums, strerror(-r));

        /* Written beside it and renamed over it: a reader never sees half a file. */
        tfd = mkostemp(tmp, O_CLOEXEC);
        if (tfd < 0)
                return log_error(EXIT_FAILURE_GENERIC, "Cannot write %s: %s", sums, strerror(errno));
        tmp_owned = strdup(tmp);
        out = fdopen(tfd, "w");
        if (!out || !tmp_owned) {
                if (!out)
                        close(tfd);
                (void) unlink(tmp);
                return log_error(EXIT_FAILURE_GENERIC, "Cannot write %s: %s", sums, strerror(errno));
        }
        (void) fchmod(tfd, 0644);
        if (old)
                fwrite(old, 1, old_len, out);
        fprintf(out, "%s  %s\n", g_checksum_get_string(checksum), base);
        if (fflush(out) != 0 || fsync(fileno(out)) < 0 || rename(tmp, sums) < 0)
                return log_error(EXIT_FAILURE_GENERIC, "Cannot write %s: %s", sums, strerror(errno));
        free(steal_pointer(&tmp_owned));
        log_debug("Added %s to %s.", base, sums);
        return EXIT_OK;
}

int verb_export_tar(sd_bus *bus, int argc, char **argv)
{
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL;
        _cleanup_(unlink_tempp) char *temp = NULL;
        _cleanup_(freep) char *label = NULL;
        _cleanup_(closep) int fd = -1;
        const char *name = argv[1], *file = argv[2], *format;
        bool to_stdout = strcmp(file, "-") == 0;
        int r;

        r = bus_check_fd_passing(bus);
        if (r != EXIT_OK)
                return r;

        format = arg_format;
        if (format && (strcmp(format, "tar") == 0 || strcmp(format, "btrfs") == 0))
                return log_error(EXIT_USAGE, "export-tar's --format is a compression; use export for --format %s.",
                                 format);
        if (!format && !to_stdout)
                format = export_format_to_string(export_format_from_filename(file));
        if (!format)
                format = ""; /* the daemon's default, zstd */

        if (!to_stdout) {
                struct stat st;
                if (stat(file, &st) >= 0 && S_ISDIR(st.st_mode))
                        return log_error(EXIT_USAGE,
                                         "Cannot write the archive to %s: it is a directory; name a file in it.", file);
        }
        if (arg_checksum && to_stdout)
                return log_error(EXIT_USAGE, "--checksum needs a file, not standard output.");
        if (arg_checksum && !arg_block)
                return log_error(EXIT_USAGE, "--checksum needs to wait for the export; drop --no-block.");
        r = export_file_open(file, arg_block, "an archive", &fd, &temp);
        if (r != EXIT_OK)
                return r;

        r = bus_new_manager_call(bus, &m, "ExportTar");
        if (r >= 0)
                r = sd_bus_message_append(m, "shs", name, to_stdout ? STDOUT_FILENO : fd, format);
        if (r < 0)
                return log_error(EXIT_FAILURE_GENERIC, "Failed to create a bus message: %s", strerror(-r));

        if (asprintf(&label, "export-tar %s", name) < 0)
                return log_error(EXIT_FAILURE_GENERIC, "Out of memory.");
        r = job_run_sized(bus, m, label, to_stdout ? STDOUT_FILENO : fd, "written");
        if (r == EXIT_OK && !arg_block && !to_stdout)
                log_info("%s is written as the job goes; if it fails or is canceled, the partial file stays there.",
                         file);
        if (r != EXIT_OK || !temp)
                return r;

        r = export_file_commit(fd, &temp, file);
        if (r != EXIT_OK)
                return r;

        if (arg_checksum)
                return update_sha256sums(file);
        return EXIT_OK;
}

int verb_import_tar(sd_bus *bus, int argc, char **argv)
{
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL;
        _cleanup_(freep) char *name = NULL, *label = NULL;
        _cleanup_(closep) int fd = -1;
        const char *file = argv[1];
        bool from_stdin = strcmp(file, "-") == 0;
        int r;

        r = bus_check_fd_passing(bus);
        if (r != EXIT_OK)
                return r;

        r = import_file_open(file, argc > 2 ? argv[2] : NULL, image_name_from_filename, "an archive", &fd, &name);
        if (r != EXIT_OK)
                return r;
        if (!from_stdin) {
                struct stat st;

                if (fstat(fd, &st) < 0)
                        return log_error(EXIT_FAILURE_GENERIC, "Cannot read %s: %s", file, strerror(errno));
                if (S_ISDIR(st.st_mode))
                        return log_error(EXIT_USAGE, "Cannot import %s: it is a directory, not a tar archive.", file);
        }

        r = bus_new_manager_call(bus, &m, "ImportTar");
        if (r >= 0)
                r = sd_bus_message_append(m, "hsb", from_stdin ? STDIN_FILENO : fd, name, (int) arg_read_only);
        if (r < 0)
                return log_error(EXIT_FAILURE_GENERIC, "Failed to create a bus message: %s", strerror(-r));

        if (asprintf(&label, "import-tar %s", name) < 0)
                return log_error(EXIT_FAILURE_GENERIC, "Out of memory.");
        return job_run_sized(bus, m, label, from_stdin ? STDIN_FILENO : fd, "read");
}

/* Any local user can read our command line: over an argument that may carry credentials or a token,
 * write its redacted form (cut to the argument's length; the rest zeroed). The real value must
 * have been copied first. Not a cure, since the argument was readable until now: a short window
 * rather than the whole wait. */
static void hide_url_argument(char *arg)
{
        _cleanup_(freep) char *shown = url_redact(arg);
        size_t n = strlen(arg), m = shown ? MIN(strlen(shown), n) : 0;

        if (shown)
                memcpy(arg, shown, m);
        memset(arg + m, 0, n - m);
}

int verb_pull_tar(sd_bus *bus, int argc, char **argv)
{
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL;
        _cleanup_(freep) char *url = NULL, *shown = NULL, *derived = NULL, *label = NULL;
        const char *name = argc > 2 ? argv[2] : NULL;
        int r;

        url = strdup(argv[1]);
        shown = url_redact(argv[1]);
        if (!url || !shown)
                return log_error(EXIT_FAILURE_GENERIC, "Out of memory.");
        hide_url_argument(argv[1]);

        if (!name) {
                derived = image_name_from_filename(url);
                if (!derived)
                        return log_error(EXIT_USAGE, "Cannot make an image name from '%s'; give one as NAME.", shown);
                name = derived;
        }

        r = bus_new_manager_call(bus, &m, "PullTar");
        if (r >= 0)
                r = sd_bus_message_append(m, "ss", url, name);
        if (r >= 0)
                r = sd_bus_message_open_container(m, 'a', "{sv}");
        if (r >= 0)
                r = append_string_option(m, "verify", arg_verify);
        if (r >= 0)
                r = append_bool_option(m, "read_only", arg_read_only, arg_read_only);
        if (r >= 0)
                r = sd_bus_message_close_container(m);
        if (r < 0)
                return log_error(EXIT_FAILURE_GENERIC, "Failed to create a bus message: %s", strerror(-r));

        if (asprintf(&label, "pull-tar %s", name) < 0)
                return log_error(EXIT_FAILURE_GENERIC, "Out of memory.");
        return job_run(bus, m, label);
}

int verb_jobs(sd_bus *bus, int argc, char **argv)
{
        _cleanup_(sd_bus_error_freep) sd_bus_error error = SD_BUS_ERROR_NULL;
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        _cleanup_(scols_unref_tablep) struct libscols_table *t = NULL;
        const char *type, *image, *path;
        uint32_t id;
        double progress;
        int r;

        r = sd_bus_call_method(bus, STAMP_BUS_NAME, STAMP_MANAGER_PATH, STAMP_MANAGER_IFACE, "ListJobs", &error, &reply,
                               NULL);
        if (r < 0)
                return log_bus_error(&error, r, "Failed to list jobs");

        t = table_new("jobs");
        if (!t)
                return log_error(EXIT_FAILURE_GENERIC, "Out of memory.");
        table_add_column(t, "ID", SCOLS_FL_RIGHT, SCOLS_JSON_NUMBER);
        table_add_column(t, "TYPE", 0, SCOLS_JSON_STRING);
        table_add_column(t, "IMAGE", 0, SCOLS_JSON_STRING);
        table_add_column(t, "PROGRESS", SCOLS_FL_RIGHT, SCOLS_JSON_NUMBER);
        table_add_column(t, "STATE", 0, SCOLS_JSON_STRING);
        table_add_column(t, "DESCRIPTION", SCOLS_FL_TRUNC, SCOLS_JSON_STRING);

        r = sd_bus_message_enter_container(reply, 'a', "(ussdo)");
        while (r >= 0 && (r = sd_bus_message_read(reply, "(ussdo)", &id, &type, &image, &progress, &path)) > 0) {
                struct libscols_line *line = scols_table_new_line(t, NULL);
                bool known = progress >= 0 && isfinite(progress);
                if (!line)
                        return log_error(EXIT_FAILURE_GENERIC, "Out of memory.");
                table_set(line, 0, "%" PRIu32, id);
                table_set(line, 1, "%s", type);
                table_set(line, 2, "%s", image);
                if (table_style.json)
                        table_set(line, 3, known ? "%g" : NULL, progress);
                else
                        table_set(line, 3, known ? "%.0f%%" : "-", floor(progress * 100));
                {
                        /* Facts ListJobs does not carry; a job that ended meanwhile shows none. A
                         * canceled job says so until it is gone. */
                        _cleanup_(freep) char *state = NULL, *description = NULL, *shown = NULL;
                        (void) sd_bus_get_property_string(bus, STAMP_BUS_NAME, path, STAMP_JOB_IFACE, "State", NULL,
                                                          &state);
                        (void) sd_bus_get_property_string(bus, STAMP_BUS_NAME, path, STAMP_JOB_IFACE, "Description",
                                                          NULL, &description);
                        if (description && *description && !table_style.json)
                                shown = text_escape(description, 0, ESCAPE_TERMINAL);
                        table_set(line, 4, state ? "%s" : NULL, state);
                        if (shown || (description && *description))
                                table_set(line, 5, "%s", shown ? shown : description);
                        else
                                table_set(line, 5, table_style.json ? NULL : "-");
                }
        }
        if (r < 0)
                return log_error(EXIT_FAILURE_GENERIC, "Failed to parse the list of jobs: %s", strerror(-r));

        r = table_print(t, "job", "jobs");
        if (r < 0)
                return log_error(EXIT_FAILURE_GENERIC, "Failed to print the table: %s", strerror(-r));
        return EXIT_OK;
}

int verb_cancel(sd_bus *bus, int argc, char **argv)
{
        int ret = EXIT_OK;

        for (int i = 1; i < argc; i++) {
                _cleanup_(sd_bus_error_freep) sd_bus_error error = SD_BUS_ERROR_NULL;
                _cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL;
                char *end;
                unsigned long id;
                int r;

                errno = 0;
                id = strtoul(argv[i], &end, 10);
                if (errno != 0 || end == argv[i] || *end != '\0' || id > UINT32_MAX || argv[i][0] == '-') {
                        r = log_error(EXIT_USAGE, "Not a job id: '%s'.", argv[i]);
                        if (ret == EXIT_OK)
                                ret = r;
                        continue;
                }

                r = bus_new_manager_call(bus, &m, "CancelJob");
                if (r >= 0)
                        r = sd_bus_message_append(m, "u", (uint32_t) id);
                if (r < 0)
                        return log_error(EXIT_FAILURE_GENERIC, "Failed to create a bus message: %s", strerror(-r));
                r = bus_call_mutating(bus, m, &error, NULL);
                if (r < 0) {
                        r = log_bus_error(&error, r, "Failed to cancel the job");
                        if (ret == EXIT_OK)
                                ret = r;
                }
        }
        return ret;
}
