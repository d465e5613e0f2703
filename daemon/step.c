/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <fcntl.h>
#include <limits.h>
#include <sys/syscall.h>

#include "step.h"
#include "machine-ports.h"
#include "store.h"

static int remove_tree_main(int argc, char *argv[]);

static const struct {
        const char *name;
        int (*main)(int argc, char *argv[]);
} steps[] = {
        {"machine", machine_supervisor_main}, {"remove-tree", remove_tree_main},
        {"pool-grow", pool_grow_main},        {"exec", exec_step_main},
        {"machine-net", machine_net_main},
};

/* stampd's own executable, opened at start (an upgrade may replace the file later; the fd keeps the
 * binary that runs). */
static int exe_fd = -1;

int step_setup(void)
{
        char path[PATH_MAX];
        ssize_t n;

        /* The link's target rather than the link itself: under valgrind, readlink() of /proc/self/exe
         * names stampd, while an exec of the link would run valgrind's tool. */
        n = readlink("/proc/self/exe", path, sizeof path - 1);
        if (n < 0)
                return -errno;
        path[n] = '\0';
        exe_fd = open(path, O_PATH | O_CLOEXEC);
        return exe_fd < 0 ? -errno : 0;
}

static int compare_ints(const void *a, const void *b)
{
        int x = *(const int *) a, y = *(const int *) b;
        return x < y ? -1 : x > y;
}

pid_t step_spawn(const char *name, char *const *args, const int *keep, size_t n_keep, bool new_pgrp)
{
        _cleanup_free_ int *sorted = NULL;
        _cleanup_free_ char **argv = NULL;
        char level[16];
        size_t n_args = 0, n_sorted = 0;
        pid_t pid;

        /* Everything the child needs is made here, before the fork: argv, and the fds to keep in
         * ascending order for close_range(). */
        while (args && args[n_args])
                n_args++;
        argv = calloc(n_args + 5, sizeof *argv);
        sorted = calloc(n_keep + 4, sizeof *sorted);
        if (!argv || !sorted)
                return -ENOMEM;
        argv[0] = (char *) "stampd";
        argv[1] = (char *) STEP_ARG;
        argv[2] = (char *) name;
        snprintf(level, sizeof level, "%d", log_max_level);
        argv[3] = level;
        for (size_t i = 0; i < n_args; i++)
                argv[4 + i] = args[i];
        for (int fd = 0; fd < 3; fd++)
                sorted[n_sorted++] = fd;
        for (size_t i = 0; i < n_keep; i++)
                if (keep[i] > 2)
                        sorted[n_sorted++] = keep[i];
        if (exe_fd >= 0)
                sorted[n_sorted++] = exe_fd;
        qsort(sorted, n_sorted, sizeof sorted[0], compare_ints);

        pid = safe_fork(new_pgrp);
        if (pid != 0)
                return pid;

        /* The child of a threaded process: only async-signal-safe calls (fcntl, close_range, fexecve,
         * execv) until the exec. */
        {
                unsigned from = 0;

                for (size_t i = 0; i < n_sorted; i++) {
                        if ((unsigned) sorted[i] < from)
                                continue;
                        if ((unsigned) sorted[i] > from)
                                (void) syscall(SYS_close_range, from, (unsigned) sorted[i] - 1, 0);
                        if (sorted[i] != exe_fd)
                                (void) fcntl(sorted[i], F_SETFD, 0);
                        from = (unsigned) sorted[i] + 1;
                }
                (void) syscall(SYS_close_range, from, ~0U, 0);
        }
        if (exe_fd >= 0)
                (void) fexecve(exe_fd, argv, environ);
        else
                execv("/proc/self/exe", argv);
        _exit(127);
}

int step_parse_fd(const char *value, int *ret)
{
        char *end;
        long fd;

        errno = 0;
        fd = strtol(value, &end, 10);
        if (errno || *end || end == value || fd < -1 || fd > INT32_MAX)
                return -EINVAL;
        if (fd >= 0 && fcntl((int) fd, F_SETFD, FD_CLOEXEC) < 0)
                return -errno;
        *ret = (int) fd;
        return 0;
}

int step_parse_args(int argc, char *argv[], int stdio[3], StepArgFunc func, void *userdata, char ***ret_rest)
{
        static const char *const stdio_keys[3] = {"stdin", "stdout", "stderr"};

        for (int i = 0; i < argc; i++) {
                const char *eq = strchr(argv[i], '=');
                char key[32];
                bool done = false;
                int k;

                if (streq(argv[i], "--")) {
                        *ret_rest = argv + i + 1;
                        break;
                }
                if (!eq || (size_t) (eq - argv[i]) >= sizeof key)
                        return -EINVAL;
                memcpy(key, argv[i], (size_t) (eq - argv[i]));
                key[eq - argv[i]] = '\0';
                for (int j = 0; j < 3 && !done; j++)
                        if (streq(key, stdio_keys[j])) {
                                k = step_parse_fd(eq + 1, &stdio[j]);
                                if (k < 0)
                                        return k;
                                done = true;
                        }
                if (done)
                        continue;
                k = func(key, eq + 1, userdata);
                if (k < 0)
                        return k;
        }
        return 0;
}

/* The step that removes a tree of the store: STORE-FD NAME. */
static int remove_tree_main(int argc, char *argv[])
{
        int store_fd = -1, k;

        if (argc != 2 || step_parse_fd(argv[0], &store_fd) < 0 || store_fd < 0) {
                log_error("Invalid arguments for removing a tree of the store.");
                return EXIT_FAILURE;
        }
        k = store_remove_tree_retrying(store_fd, argv[1]);
        if (k < 0)
                log_warning_errno(k, "Cannot remove %s from the store", argv[1]);
        return k < 0 ? EXIT_FAILURE : EXIT_SUCCESS;
}

pid_t step_spawn_remove_tree(int store_fd, const char *name, bool new_pgrp)
{
        char fd_arg[16];

        snprintf(fd_arg, sizeof fd_arg, "%d", store_fd);
        return step_spawn("remove-tree", (char *[]) {fd_arg, (char *) name, NULL}, &store_fd, 1, new_pgrp);
}

int step_dispatch(int argc, char *argv[])
{
        if (argc < 2 || !streq(argv[1], STEP_ARG))
                return -1;
        log_open("stampd");
        if (argc < 4) {
                log_error("%s needs a step and a log level.", STEP_ARG);
                return EXIT_FAILURE;
        }
        log_max_level = atoi(argv[3]);
        for (size_t i = 0; i < ELEMENTSOF(steps); i++)
                if (streq(steps[i].name, argv[2]))
                        return steps[i].main(argc - 4, argv + 4);
        log_error("Unknown step %s.", argv[2]);
        return EXIT_FAILURE;
}
