/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <fcntl.h>
#include <inttypes.h>
#include <sched.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/wait.h>

#include "copy-stream.h"
#include "store.h"
#include "transfer.h"

/* Every job of stampd runs here, one job per run: template builds (debootstrap), export, import and
 * pull (libarchive, libcurl, which the daemon does not load), and the removal of what a failed job
 * left. The daemon forks and at once executes this program (daemon/job.c), and nothing else: a
 * threaded daemon's forked child may not go on to run code of its own. It hands over
 *
 *   fd 3  the job's socket to the daemon: progress, log and the error, as job_child_*() send them
 *   fd 4  the image store (O_DIRECTORY)
 *   fd 5  the job's arguments, a sealed memfd (store/job-args.h: encoded and decoded there only)
 *   fd 6… the job's own fds, as its arguments name them
 *
 * and in argv only the verb and the image's name, for people looking at ps; the arguments may hold
 * secrets, which a command line would show every local user.
 *
 * First the job gets namespaces of its own (job_namespace_enter()): a mount namespace for the
 * mounts the work makes (debootstrap mounts /proc in its target; the mirror's credentials live in a
 * tmpfs), and a PID namespace in which the work is PID 1, so that when the job ends, is canceled, or
 * the daemon dies, the kernel takes every process it started and every mount it made along with it.
 * Only a hidden temporary in the store can remain, which the daemon removes (the verb
 * remove-temporary) or its next start does. A template build goes one step further for the code
 * that comes with the packages: debootstrap's second stage runs in a user namespace of its own,
 * without privilege over the host (template.c).
 *
 * It is no command for people: it trusts what it is given. */

/* The process the daemon waits for, outside the namespace: it makes the namespaces, starts the work
 * as their PID 1, and ends with the work's status once nothing of the job runs any more. SIGTERM (a
 * cancel) kills the work, and with it everything in its namespace. Returns only in the work's
 * process. */
static void job_namespace_enter(JobChild *c)
{
        sigset_t ss;
        pid_t pid;
        int status;

        if (unshare(CLONE_NEWNS | CLONE_NEWPID) < 0) {
                job_child_log(c, LOG_LEVEL_WARNING, "Running without private namespaces: %s", strerror(errno));
                return;
        }
        (void) mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL);

        sigemptyset(&ss);
        sigaddset(&ss, SIGTERM);
        sigaddset(&ss, SIGCHLD);
        (void) sigprocmask(SIG_BLOCK, &ss, NULL);
        /* This program has no threads: its child may go on without an exec. */
        pid = fork();
        if (pid < 0) {
                job_child_fail(c, errno, "Cannot start the job's process: %s", strerror(errno));
                _exit(EXIT_FAILURE);
        }
        if (pid == 0) {
                (void) sigprocmask(SIG_UNBLOCK, &ss, NULL);
                (void) prctl(PR_SET_PDEATHSIG, SIGKILL);
                /* A /proc of this namespace's own: with the host's, /proc/self and /proc/1 would be
                 * other processes than ours (LeakSanitizer, for one, reads /proc/self/task). */
                if (mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL) < 0)
                        job_child_log(c, LOG_LEVEL_DEBUG, "Cannot mount /proc for the job: %s", strerror(errno));
                return;
        }
        /* The work's PID 1 ignores a SIGTERM from outside its namespace: a cancel's SIGTERM is for
         * this process, which kills the whole namespace; and it ends only once the last process in
         * there has, so nothing writes into the temporary any more when the daemon removes it. */
        for (;;) {
                siginfo_t si;
                if (sigwaitinfo(&ss, &si) < 0) {
                        if (errno == EINTR)
                                continue;
                        _exit(EXIT_FAILURE);
                }
                if (si.si_signo == SIGTERM)
                        (void) kill(pid, SIGKILL);
                if (waitpid(pid, &status, WNOHANG) == pid)
                        break;
        }
        _exit(WIFEXITED(status) ? WEXITSTATUS(status) : EXIT_FAILURE);
}

static void copy_cancel_on_sigterm(void)
{
        sigset_t ss;
        int fd;

        sigemptyset(&ss);
        sigaddset(&ss, SIGTERM);
        if (sigprocmask(SIG_BLOCK, &ss, NULL) < 0)
                return;
        fd = signalfd(-1, &ss, SFD_CLOEXEC | SFD_NONBLOCK);
        if (fd >= 0)
                copy_stream_set_cancel_fd(fd);
}

static int run_export(JobChild *c, const JobArgs *j)
{
        ExportArgs a = {
                .name = j->name,
                .image_fd = j->export.image_fd,
                .out_fd = j->export.out_fd,
                .format = export_format_from_string(j->export.format),
                .read_only = j->export.read_only,
                .usage = j->export.usage,
                .snapshot = j->export.snapshot,
        };

        if (a.format == _EXPORT_FORMAT_INVALID || (a.snapshot && !c->temp_name))
                return job_child_fail(c, EINVAL, "stamp-transfer: invalid arguments");
        return transfer_export(c, &a);
}

static int run_import(JobChild *c, const JobArgs *j)
{
        ImportArgs a = {.name = j->name, .in_fd = j->import.in_fd, .read_only = j->import.read_only};

        if (!c->temp_name)
                return job_child_fail(c, EINVAL, "stamp-transfer: invalid arguments");
        return transfer_import(c, &a);
}

static int run_pull(JobChild *c, const JobArgs *j)
{
        PullArgs a = {
                .url = j->pull.url,
                .sums_url = j->pull.sums_url,
                .file = j->pull.file,
                .name = j->name,
                .verify = j->pull.verify,
                .read_only = j->pull.read_only,
        };

        if (!c->temp_name)
                return job_child_fail(c, EINVAL, "stamp-transfer: invalid arguments");
        return transfer_pull(c, &a);
}

static int run_remove_temporary(JobChild *c)
{
        int k;

        if (!c->temp_name || strncmp(c->temp_name, STORE_TEMP_PREFIX, strlen(STORE_TEMP_PREFIX)) != 0 ||
            strchr(c->temp_name, '/'))
                return job_child_fail(c, EINVAL, "stamp-transfer: invalid arguments");
        k = store_remove_tree(c->store_fd, c->temp_name);
        if (k < 0)
                return job_child_fail(c, -k, "Cannot remove %s: %s", c->temp_name, strerror(-k));
        return 0;
}

int main(int argc, char *argv[])
{
        JobChild c = {.fd = JOB_ARGS_FD_COMM, .store_fd = JOB_ARGS_FD_STORE, .owner = UINT64_MAX};
        _cleanup_(job_args_done) JobArgs a;
        int k;

        job_args_init(&a, _JOB_TYPE_INVALID); /* every fd -1, before any return */
        if (argc < 2 || fcntl(JOB_ARGS_FD_COMM, F_GETFD) < 0 || fcntl(JOB_ARGS_FD_STORE, F_GETFD) < 0 ||
            fcntl(JOB_ARGS_FD_ARGS, F_GETFD) < 0) {
                fprintf(stderr, "stamp-transfer does the jobs of stampd, and is run by it only.\n");
                return 2;
        }
        /* Nothing this runs needs them; the job's own fds are made close-on-exec as they are decoded. */
        for (int fd = JOB_ARGS_FD_COMM; fd <= JOB_ARGS_FD_ARGS; fd++)
                (void) fcntl(fd, F_SETFD, FD_CLOEXEC);

        k = job_args_decode(JOB_ARGS_FD_ARGS, &a);
        (void) close(JOB_ARGS_FD_ARGS);
        if (k < 0 || !streq(argv[1], job_verb_to_string(a.type))) {
                job_child_fail(&c, EINVAL, "stamp-transfer: invalid arguments");
                return EXIT_FAILURE;
        }
        c.store_is_btrfs = a.store_is_btrfs;
        c.store = a.store_path;
        c.temp_name = a.temp_name;
        c.owner = a.owner;

        if (a.type == JOB_REMOVE_TEMPORARY)
                return run_remove_temporary(&c) < 0 ? EXIT_FAILURE : EXIT_SUCCESS;

        /* A copy starts no process and makes no mount: it needs no namespaces of its own, and a cancel's
         * SIGTERM reaches it, so that a copy in removes what it made before it ends. */
        if (a.type == JOB_COPY_TO)
                copy_cancel_on_sigterm();
        else if (a.type != JOB_COPY_FROM)
                job_namespace_enter(&c);
        switch (a.type) {
        case JOB_CREATE_TEMPLATE:
                k = transfer_template(&c, &a);
                break;
        case JOB_EXPORT_TAR:
                k = run_export(&c, &a);
                break;
        case JOB_IMPORT_TAR:
                k = run_import(&c, &a);
                break;
        case JOB_PULL_TAR:
                k = run_pull(&c, &a);
                break;
        case JOB_EXPORT:
                k = transfer_export_image(&c, &a);
                break;
        case JOB_IMPORT:
                k = transfer_import_image(&c, &a);
                break;
        case JOB_COPY_TO:
        case JOB_COPY_FROM:
                k = transfer_copy(&c, &a);
                break;
        case JOB_PULL_IMAGE:
                k = c.temp_name ? transfer_pull_image(&c, &a)
                                : job_child_fail(&c, EINVAL, "stamp-transfer: invalid arguments");
                break;
        case JOB_PUSH_IMAGE:
                k = transfer_push_image(&c, &a);
                break;
        default:
                k = job_child_fail(&c, EINVAL, "stamp-transfer: unknown verb");
        }

        /* No exit handlers, whatever the job: import and pull chroot into the new image, where no
         * /proc is reachable for them; and this is PID 1 of the job's PID namespace, which no signal
         * with its default action reaches, so an exit handler that aborts (LeakSanitizer's, in a
         * sanitizer build, over what a failed export left allocated) would spin for ever instead of
         * ending the job. */
        fflush(NULL);
        _exit(k < 0 ? EXIT_FAILURE : EXIT_SUCCESS);
}
