/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* The polkit text agent: pkttyagent, started for this process so that polkit can
 * ask the person at this terminal for a password. */

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <systemd/sd-login.h>

#include "stampctl.h"

#define AGENT_NOTIFY_FD 3
/* pkttyagent registers within milliseconds; this only bounds a polkitd that hangs. */
#define AGENT_REGISTER_TIMEOUT_MS (30 * 1000)

static pid_t agent_pid = 0;

static void close_all_fds_from(int lowest)
{
#ifdef SYS_close_range
        if (syscall(SYS_close_range, (unsigned) lowest, ~0U, 0) >= 0)
                return;
#endif
        long max = sysconf(_SC_OPEN_MAX);
        if (max < 0 || max > 65536)
                max = 65536;
        for (int fd = lowest; fd < max; fd++)
                close(fd);
}

static _Noreturn void agent_exec(int notify_fd, pid_t parent, bool fallback)
{
        char notify[16], process[32];
        sigset_t none;
        const char *argv[8];
        int n = 0;

        /* The agent must not outlive us, and must see signals the way a fresh process does. */
        if (prctl(PR_SET_PDEATHSIG, SIGTERM) < 0 || getppid() != parent)
                _exit(EXIT_FAILURE);
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        signal(SIGINT, SIG_DFL);
        signal(SIGTERM, SIG_DFL);
        signal(SIGHUP, SIG_DFL);
        signal(SIGPIPE, SIG_DFL);

        /* The prompt goes to the terminal, never into a stdout that carries data
         * (an archive of export-tar, say). */
        if (!isatty(STDOUT_FILENO) && dup2(STDIN_FILENO, STDOUT_FILENO) < 0)
                _exit(EXIT_FAILURE);

        if (notify_fd != AGENT_NOTIFY_FD) {
                if (dup2(notify_fd, AGENT_NOTIFY_FD) < 0)
                        _exit(EXIT_FAILURE);
        } else if (fcntl(notify_fd, F_SETFD, 0) < 0)
                _exit(EXIT_FAILURE);
        close_all_fds_from(AGENT_NOTIFY_FD + 1);

        snprintf(notify, sizeof(notify), "%d", AGENT_NOTIFY_FD);
        snprintf(process, sizeof(process), "%d", (int) parent);
        argv[n++] = "pkttyagent";
        argv[n++] = "--notify-fd";
        argv[n++] = notify;
        argv[n++] = "--process";
        argv[n++] = process;
        /* A --fallback agent only answers where no session agent does, which
         * polkit decides per logind session: outside a session it is never asked. */
        if (fallback)
                argv[n++] = "--fallback";
        argv[n] = NULL;

        execvp("pkttyagent", (char **) argv);
        execv("/usr/bin/pkttyagent", (char **) argv);
        _exit(127);
}

static bool agent_alive(void)
{
        int status;

        if (agent_pid <= 0)
                return false;
        if (waitpid(agent_pid, &status, WNOHANG) == 0)
                return true;
        agent_pid = 0;
        return false;
}

int polkit_agent_open(void)
{
        int fds[2];
        pid_t parent, pid;
        bool fallback;
        struct pollfd pfd;
        int r;

        if (agent_alive())
                return 0;
        if (!arg_ask_password || arg_host)
                return 0;
        /* root is authorized without asking */
        if (geteuid() == 0)
                return 0;
        if (!isatty(STDIN_FILENO))
                return 0;

        if (pipe2(fds, O_CLOEXEC) < 0)
                return -errno;

        parent = getpid();
        fallback = sd_pid_get_session(0, NULL) >= 0;

        fflush(stdout);
        fflush(stderr);
        pid = fork();
        if (pid < 0) {
                r = -errno;
                close(fds[0]);
                close(fds[1]);
                return r;
        }
        if (pid == 0) {
                close(fds[0]);
                agent_exec(fds[1], parent, fallback);
        }

        close(fds[1]);
        agent_pid = pid;

        /* pkttyagent closes the notify fd once it is registered; an agent that
         * failed to start closes it by exiting. */
        pfd = (struct pollfd) {.fd = fds[0], .events = POLLIN};
        do
                r = poll(&pfd, 1, AGENT_REGISTER_TIMEOUT_MS);
        while (r < 0 && errno == EINTR);
        close(fds[0]);

        if (r == 0)
                log_debug("pkttyagent did not register within %d s; going on without waiting.",
                          AGENT_REGISTER_TIMEOUT_MS / 1000);
        else if (!agent_alive())
                log_debug("pkttyagent exited instead of registering; polkit cannot ask for a password here.");
        else
                log_debug("pkttyagent (pid %d) registered for pid %d%s.", (int) pid, (int) parent,
                          fallback ? " as a fallback agent" : "");
        return 0;
}

void polkit_agent_close(void)
{
        pid_t pid = agent_pid;

        if (pid <= 0)
                return;
        agent_pid = 0;

        kill(pid, SIGTERM);
        kill(pid, SIGCONT);
        while (waitpid(pid, NULL, 0) < 0 && errno == EINTR)
                ;
}
