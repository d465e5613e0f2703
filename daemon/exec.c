/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>

#include "authz.h"
#include "errors.h"
#include "exec.h"
#include "machine-dbus.h"
#include "options.h"
#include "step.h"

#define EXEC_REPORT_MAX 4096

typedef struct ExecOptions {
        char *user;
        char **environment;
        char *working_directory;
        int stdio_fd[3];
} ExecOptions;

static const OptionSpec exec_option_table[] = {
        {"user", OPTION_STRING, offsetof(ExecOptions, user)},
        {"environment", OPTION_STRV, offsetof(ExecOptions, environment)},
        {"working_directory", OPTION_STRING, offsetof(ExecOptions, working_directory)},
        {"stdin", OPTION_FD, offsetof(ExecOptions, stdio_fd[0])},
        {"stdout", OPTION_FD, offsetof(ExecOptions, stdio_fd[1])},
        {"stderr", OPTION_FD, offsetof(ExecOptions, stdio_fd[2])},
        {},
};

static void exec_options_done(ExecOptions *o)
{
        options_free(exec_option_table, o);
}

Exec *exec_free(Exec *e)
{
        if (!e)
                return NULL;
        if (e->manager && e->id && g_hash_table_lookup(e->manager->execs, GUINT_TO_POINTER(e->id)) == e)
                g_hash_table_remove(e->manager->execs, GUINT_TO_POINTER(e->id));
        if (e->pid > 0) {
                /* The daemon is going away: the step goes with it (the command, once it is the user,
                 * stays with its machine, which goes too). */
                (void) kill(e->pid, SIGKILL);
                (void) waitpid(e->pid, NULL, 0);
        }
        sd_event_source_disable_unref(e->child_source);
        safe_close(e->status_fd);
        free(e->machine);
        free(e->caller);
        free(e->destination);
        free(e);
        return NULL;
}

static inline void exec_freep(Exec **e)
{
        exec_free(*e);
}

void execs_free_all(Manager *m)
{
        GList *all = g_hash_table_get_values(m->execs);

        for (GList *l = all; l; l = l->next)
                exec_free(l->data);
        g_list_free(all);
}

static unsigned execs_of_caller(Manager *m, const char *caller)
{
        GHashTableIter it;
        gpointer v;
        unsigned n = 0;

        g_hash_table_iter_init(&it, m->execs);
        while (g_hash_table_iter_next(&it, NULL, &v))
                if (streq(((Exec *) v)->caller, caller))
                        n++;
        return n;
}

/* ---- the end of a command ---- */

static void exec_send_exited(Exec *e, const char *result, int status, const char *message)
{
        Manager *m = e->manager;
        _cleanup_bus_message_ sd_bus_message *sig = NULL;
        int k;

        log_info("Exec %" PRIu32 " in machine %s: %s %d%s%s.", e->id, e->machine, result, status,
                 isempty(message) ? "" : ": ", message ?: "");
        k = sd_bus_message_new_signal(m->bus, &sig, STAMP_MANAGER_PATH, STAMP_MANAGER_IFACE, "ExecExited");
        if (k >= 0 && e->destination)
                k = sd_bus_message_set_destination(sig, e->destination);
        if (k >= 0)
                k = sd_bus_message_append(sig, "ussis", e->id, e->machine, result, (int32_t) status, message ?: "");
        if (k >= 0)
                k = sd_bus_send(m->bus, sig, NULL);
        if (k < 0)
                log_warning_errno(k, "Cannot send ExecExited for exec %" PRIu32, e->id);
}

static int on_exec_exit(sd_event_source *s, const siginfo_t *si, void *userdata)
{
        _cleanup_(exec_freep) Exec *e = userdata;
        char report[EXEC_REPORT_MAX + 1], result[EXEC_RESULT_MAX];
        const char *text;
        ssize_t n;
        int status;

        e->child_source = sd_event_source_disable_unref(e->child_source);
        e->pid = 0;
        /* The step wrote its one line before it ended: it is in the pipe, no waiting. */
        n = read(e->status_fd, report, EXEC_REPORT_MAX);
        if (n < 0)
                n = 0;
        report[n] = '\0';
        if (exec_parse_report(report, result, &status, &text) >= 0) {
                exec_send_exited(e, result, status, text);
                return 0;
        }
        {
                char why[128];
                snprintf(why, sizeof why, "the helper running it ended without a report (%s %d)",
                         si->si_code == CLD_EXITED ? "status" : "signal", si->si_status);
                exec_send_exited(e, "failed", EIO, why);
        }
        return 0;
}

int exec_parse_report(char *line, char result[EXEC_RESULT_MAX], int *ret_status, const char **ret_message)
{
        static const char *const results[] = {"exited", "killed", "dumped", "failed", "exec-failed"};
        char *end, *word_end;
        size_t n;
        long status;
        bool known = false;

        line[strcspn(line, "\n")] = '\0';
        word_end = strchr(line, ' ');
        if (!word_end)
                return -EBADMSG;
        n = (size_t) (word_end - line);
        for (size_t i = 0; i < ELEMENTSOF(results); i++)
                if (strlen(results[i]) == n && strncmp(line, results[i], n) == 0)
                        known = true;
        if (!known || n >= EXEC_RESULT_MAX)
                return -EBADMSG;
        errno = 0;
        status = strtol(word_end + 1, &end, 10);
        if (errno || end == word_end + 1 || status < INT32_MIN || status > INT32_MAX || (*end && *end != ' '))
                return -EBADMSG;
        memcpy(result, line, n);
        result[n] = '\0';
        *ret_status = (int) status;
        /* Words only where the command did not run; the others have none. */
        *ret_message = strstr(result, "failed") && *end ? end + 1 : "";
        return 0;
}

/* ---- checks ---- */

bool exec_environment_entry_valid(const char *entry)
{
        const char *eq = strchr(entry, '=');

        if (!eq || eq == entry)
                return false;
        for (const char *p = entry; p < eq; p++)
                if (!(g_ascii_isalnum(*p) || *p == '_') || (p == entry && g_ascii_isdigit(*p)))
                        return false;
        return true;
}

bool exec_user_valid(const char *user)
{
        size_t n = strlen(user);

        if (n == 0 || n > 256 || user[0] == '-' || user[0] == '.')
                return false;
        for (const char *p = user; *p; p++)
                if (!(g_ascii_isalnum(*p) || strchr("._-$", *p)))
                        return false;
        return true;
}

static int check_exec_args(char **argv, const ExecOptions *o, sd_bus_error *error)
{
        size_t n = 0, bytes = 0;

        for (char **a = argv; a && *a; a++, n++)
                bytes += strlen(*a) + 1;
        for (char **e = o->environment; e && *e; e++, n++)
                bytes += strlen(*e) + 1;
        if (n > EXEC_ARGS_MAX || bytes > EXEC_ARG_BYTES_MAX)
                return sd_bus_error_setf(error, SD_BUS_ERROR_INVALID_ARGS,
                                         "The command and its environment are too long (%zu strings, %zu bytes; at "
                                         "most %d strings, %u bytes)",
                                         n, bytes, EXEC_ARGS_MAX, EXEC_ARG_BYTES_MAX);
        if (argv && argv[0] && isempty(argv[0]))
                return sd_bus_error_setf(error, SD_BUS_ERROR_INVALID_ARGS,
                                         "The command starts with an empty program name");
        for (char **e = o->environment; e && *e; e++)
                if (!exec_environment_entry_valid(*e))
                        return sd_bus_error_setf(error, SD_BUS_ERROR_INVALID_ARGS,
                                                 "Invalid entry \"%.64s\" in option \"environment\": not NAME=VALUE "
                                                 "with a NAME of letters, digits and '_'",
                                                 *e);
        if (o->user && !exec_user_valid(o->user))
                return sd_bus_error_setf(error, SD_BUS_ERROR_INVALID_ARGS,
                                         "Invalid user \"%.64s\": not a user name or number", o->user);
        if (o->working_directory && o->working_directory[0] != '/')
                return sd_bus_error_setf(error, SD_BUS_ERROR_INVALID_ARGS,
                                         "Option \"working_directory\" is not an absolute path: %.256s",
                                         o->working_directory);
        return 0;
}

/* ---- the call ---- */

static char **exec_step_args(Machine *mc, int leader_fd, int status_fd, const int stdio[3], bool pty,
                             const ExecOptions *o, char **argv)
{
        GPtrArray *a = g_ptr_array_new();

        g_ptr_array_add(a, g_strdup_printf("machine=%s", mc->name));
        g_ptr_array_add(a, g_strdup_printf("leader=%d", leader_fd));
        g_ptr_array_add(a, g_strdup_printf("status=%d", status_fd));
        g_ptr_array_add(a, g_strdup_printf("stdin=%d", stdio[0]));
        g_ptr_array_add(a, g_strdup_printf("stdout=%d", stdio[1]));
        g_ptr_array_add(a, g_strdup_printf("stderr=%d", stdio[2]));
        g_ptr_array_add(a, g_strdup_printf("pty=%d", pty));
        if (o->user)
                g_ptr_array_add(a, g_strdup_printf("user=%s", o->user));
        if (o->working_directory)
                g_ptr_array_add(a, g_strdup_printf("cwd=%s", o->working_directory));
        for (char **e = o->environment; e && *e; e++)
                g_ptr_array_add(a, g_strdup_printf("env=%s", *e));
        g_ptr_array_add(a, g_strdup("--"));
        for (char **c = argv; c && *c; c++)
                g_ptr_array_add(a, g_strdup(*c));
        g_ptr_array_add(a, NULL);
        return (char **) g_ptr_array_free(a, FALSE);
}

static int exec_start(Manager *m, Machine *mc, sd_bus_message *msg, const char *caller, uid_t uid, ExecOptions *o,
                      char **argv, uint32_t *ret_id, sd_bus_error *error)
{
        _cleanup_(exec_freep) Exec *e = NULL;
        _cleanup_close_ int leader_fd = -1, status_r = -1, status_w = -1;
        g_auto(GStrv) args = NULL;
        int pipefd[2], keep[5];
        bool pty;
        pid_t pid;
        int k;

        e = calloc(1, sizeof *e);
        if (!e)
                return -ENOMEM;
        e->manager = m;
        e->status_fd = -1;
        e->machine = strdup(mc->name);
        e->caller = strdup(caller);
        e->uid = uid;
        e->destination = sd_bus_message_get_sender(msg) ? strdup(sd_bus_message_get_sender(msg)) : NULL;
        if (!e->machine || !e->caller || (sd_bus_message_get_sender(msg) && !e->destination))
                return -ENOMEM;

        leader_fd = fcntl(mc->leader_pidfd, F_DUPFD_CLOEXEC, 3);
        if (leader_fd < 0)
                return sd_bus_error_set_errnof(error, errno, "Cannot hold machine %s's leader: %m", mc->name);
        if (pipe2(pipefd, O_CLOEXEC) < 0)
                return sd_bus_error_set_errnof(error, errno, "Cannot make a pipe: %m");
        status_r = pipefd[0];
        status_w = pipefd[1];
        (void) fcntl(status_r, F_SETFL, O_NONBLOCK);

        /* One terminal when the caller's stdin and stdout are one: the command gets a terminal of the
         * machine's, relayed to it. */
        pty = o->stdio_fd[0] >= 0 && o->stdio_fd[1] >= 0 && isatty(o->stdio_fd[0]) && isatty(o->stdio_fd[1]);
        args = exec_step_args(mc, leader_fd, status_w, o->stdio_fd, pty, o, argv);
        keep[0] = leader_fd;
        keep[1] = status_w;
        for (int i = 0; i < 3; i++)
                keep[2 + i] = o->stdio_fd[i];
        pid = step_spawn("exec", args, keep, ELEMENTSOF(keep), false);
        if (pid < 0)
                return sd_bus_error_set_errnof(error, (int) -pid, "Cannot start the command: %m");
        e->pid = pid;
        e->status_fd = TAKE_FD(status_r);
        k = sd_event_add_child(m->event, &e->child_source, pid, WEXITED, on_exec_exit, e);
        if (k < 0)
                return k; /* exec_free() kills the step */

        do
                e->id = ++m->next_exec_id;
        while (e->id == 0 || g_hash_table_contains(m->execs, GUINT_TO_POINTER(e->id)));
        g_hash_table_insert(m->execs, GUINT_TO_POINTER(e->id), e);
        log_info("Exec %" PRIu32 " in machine %s for %s: %s%s (pid %d).", e->id, mc->name, caller,
                 argv && argv[0] ? argv[0] : "a login shell", pty ? ", on a terminal" : "", (int) pid);
        *ret_id = TAKE_PTR(e)->id;
        return 0;
}

static int exec_caps(Manager *m, sd_bus_message *msg, bool caller_needed, char **ret_caller, sd_bus_error *error)
{
        _cleanup_free_ char *caller = NULL;
        int k;

        if (g_hash_table_size(m->execs) >= EXEC_MAX)
                return sd_bus_error_setf(error, SD_BUS_ERROR_LIMITS_EXCEEDED,
                                         "Too many commands running in machines (at most %d in all)", EXEC_MAX);
        k = manager_caller_key(m, msg, &caller);
        if (k == -ENODATA && !caller_needed)
                return 0;
        if (k == -ENODATA)
                return sd_bus_error_set(error, SD_BUS_ERROR_ACCESS_DENIED, "Cannot tell who the caller is");
        if (k < 0)
                return k;
        if (execs_of_caller(m, caller) >= EXEC_PER_CALLER_MAX)
                return sd_bus_error_setf(error, SD_BUS_ERROR_LIMITS_EXCEEDED,
                                         "Too many commands running in machines for %s (at most %d %s)", caller,
                                         EXEC_PER_CALLER_MAX, manager_caller_cap_scope(caller));
        if (ret_caller)
                *ret_caller = TAKE_PTR(caller);
        return 0;
}

static int exec_method(Manager *m, sd_bus_message *msg, const char *name, sd_bus_error *error)
{
        _cleanup_(exec_options_done) ExecOptions o = {.stdio_fd = {-1, -1, -1}};
        _cleanup_strv_free_ char **argv = NULL;
        _cleanup_free_ char *caller = NULL;
        Machine *mc;
        uint32_t id = 0;
        uid_t uid = 0;
        int k;

        k = sd_bus_message_read_strv(msg, &argv);
        if (k < 0)
                return k;
        k = bus_read_options(msg, exec_option_table, &o, error);
        if (k < 0)
                return k;
        if ((k = check_exec_args(argv, &o, error)) < 0 ||
            (k = check_stdio_fd(o.stdio_fd[0], "stdin", true, error)) < 0 ||
            (k = check_stdio_fd(o.stdio_fd[1], "stdout", false, error)) < 0 ||
            (k = check_stdio_fd(o.stdio_fd[2], "stderr", false, error)) < 0)
                return k;
        mc = bus_find_machine(m, name, error);
        if (!mc)
                return -ENXIO; /* @error says which */
        if (mc->state != MACHINE_RUNNING)
                return sd_bus_error_setf(error, STAMP_ERROR_NO_SUCH_MACHINE,
                                         "Machine %s is not running (it is %s); a command can run in it once it is",
                                         name, machine_state_to_string(mc->state));
        if (mc->leader_pidfd < 0)
                return sd_bus_error_setf(error, STAMP_ERROR_NO_SUCH_MACHINE,
                                         "Machine %s runs, but its leader process is not known", name);
        if ((k = exec_caps(m, msg, false, NULL, error)) < 0)
                return k;

        {
                const char *details[] = {"verb",    argv && argv[0] ? "exec" : "shell",
                                         "machine", mc->name,
                                         "image",   mc->image,
                                         "user",    o.user ?: "root",
                                         "command", argv && argv[0] ? argv[0] : "",
                                         NULL};
                AuthzOwner owner = {.own_action = STAMP_ACTION_MANAGE_OWN_MACHINES, .owner = mc->uid};

                k = authz_verify_owned(m->authz, msg, STAMP_ACTION_LOGIN, &owner, details, NULL, error);
                if (k <= 0)
                        return k < 0 ? k : 1;
        }
        if ((k = exec_caps(m, msg, true, &caller, error)) < 0)
                return k;

        k = authz_caller_uid(m->authz, msg, &uid);
        if (k < 0)
                return sd_bus_error_set_errnof(error, -k, "Cannot tell who the caller is: %m");
        k = exec_start(m, mc, msg, caller, uid, &o, argv, &id, error);
        if (k < 0)
                return sd_bus_error_is_set(error)
                               ? k
                               : sd_bus_error_set_errnof(error, k, "Cannot run a command in machine %s: %m", name);
        return sd_bus_reply_method_return(msg, "u", id);
}

int method_exec_machine(sd_bus_message *msg, void *userdata, sd_bus_error *error)
{
        const char *name;
        int k;

        k = sd_bus_message_read(msg, "s", &name);
        if (k < 0)
                return k;
        return exec_method(userdata, msg, name, error);
}

int method_machine_exec(sd_bus_message *msg, void *userdata, sd_bus_error *error)
{
        Machine *mc = userdata;
        _cleanup_free_ char *name = strdup(mc->name);

        if (!name)
                return -ENOMEM;
        return exec_method(mc->manager, msg, name, error);
}

int method_kill_exec(sd_bus_message *msg, void *userdata, sd_bus_error *error)
{
        Manager *m = userdata;
        const char *sender = sd_bus_message_get_sender(msg);
        uint32_t id;
        int32_t signo;
        Exec *e;
        int k;

        k = sd_bus_message_read(msg, "ui", &id, &signo);
        if (k < 0)
                return k;
        if (signo < 1 || signo >= _NSIG)
                return sd_bus_error_setf(error, SD_BUS_ERROR_INVALID_ARGS,
                                         "Invalid signal number %d: not between 1 and %d", signo, _NSIG - 1);
        e = g_hash_table_lookup(m->execs, GUINT_TO_POINTER(id));
        if (!e)
                return sd_bus_error_setf(error, STAMP_ERROR_NO_SUCH_EXEC, "No command with id %" PRIu32 " is running",
                                         id);
        /* Whoever started it may signal it; anyone else needs what would let them run one there. */
        if (!streq_ptr(sender, e->destination)) {
                char number[16];
                const char *details[] = {"verb", "kill-exec", "machine", e->machine, "signal", number, NULL};
                AuthzOwner owner = {.own_action = STAMP_ACTION_MANAGE_OWN_MACHINES, .owner = e->uid};

                snprintf(number, sizeof number, "%d", signo);
                k = authz_verify_owned(m->authz, msg, STAMP_ACTION_LOGIN, &owner, details, NULL, error);
                if (k <= 0)
                        return k < 0 ? k : 1;
                /* Polkit took its time: the command may have ended meanwhile. */
                e = g_hash_table_lookup(m->execs, GUINT_TO_POINTER(id));
                if (!e)
                        return sd_bus_error_setf(error, STAMP_ERROR_NO_SUCH_EXEC,
                                                 "No command with id %" PRIu32 " is running", id);
        }
        if (e->pid > 0 && sigqueue(e->pid, EXEC_FORWARD_SIGNAL, (union sigval) {.sival_int = signo}) < 0)
                return sd_bus_error_set_errnof(error, errno, "Cannot signal command %" PRIu32 ": %m", id);
        log_debug("Exec %" PRIu32 " in machine %s: signal %d for the command.", e->id, e->machine, (int) signo);
        return sd_bus_reply_method_return(msg, NULL);
}
