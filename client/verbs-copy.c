/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* stampctl cp: files into and out of a running machine or a stopped image. stampctl opens the host's
 * side itself, as the user who runs it, and a child of it writes or reads the tar stream of
 * copy-stream.h through a pipe whose other end goes to stampd: the daemon never sees a host path. */
#include <fcntl.h>
#include <libgen.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include "copy-stream.h"
#include "names.h"
#include "stampctl.h"

static int safe_close_(int fd)
{
        if (fd >= 0)
                close(fd);
        return -1;
}

/* "NAME:PATH" with NAME an image or machine name and PATH absolute: the inside of one. */
static bool split_remote(const char *arg, char **ret_name, const char **ret_path)
{
        const char *colon = strchr(arg, ':');
        char *name;

        if (!colon || colon == arg || memchr(arg, '/', (size_t) (colon - arg)))
                return false;
        name = strndup(arg, (size_t) (colon - arg));
        if (!name)
                return false;
        if (image_name_invalid_reason(name)) {
                free(name);
                return false;
        }
        *ret_name = name;
        *ret_path = colon + 1;
        return true;
}

/* Whether a machine named @name runs: then the copy goes into it, else into the image. */
static int machine_is_running(sd_bus *bus, const char *name, bool *ret)
{
        _cleanup_(sd_bus_error_freep) sd_bus_error error = SD_BUS_ERROR_NULL;
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        const char *n, *image, *state, *path;
        uint32_t leader;
        int r;

        *ret = false;
        r = sd_bus_call_method(bus, STAMP_BUS_NAME, STAMP_MANAGER_PATH, STAMP_MANAGER_IFACE, "ListMachines", &error,
                               &reply, NULL);
        if (r < 0)
                return log_bus_error(&error, r, "Failed to list machines");
        r = sd_bus_message_enter_container(reply, 'a', "(sssuo)");
        while (r > 0 && (r = sd_bus_message_read(reply, "(sssuo)", &n, &image, &state, &leader, &path)) > 0)
                if (strcmp(n, name) == 0 && strcmp(state, "exited") != 0)
                        *ret = true;
        if (r < 0)
                return log_error(EXIT_FAILURE_GENERIC, "Failed to parse the list of machines: %s", strerror(-r));
        return EXIT_OK;
}

/* The name a host path's top gets in the stream: its last component, or the real one for "." and
 * the like. */
static char *top_name_of(const char *path)
{
        _cleanup_(freep) char *copy = strdup(path), *real = NULL;
        const char *base;

        if (!copy)
                return NULL;
        base = basename(copy);
        if (copy_name_is_valid(base) && strcmp(base, "") != 0)
                return strdup(base);
        real = realpath(path, NULL);
        if (!real)
                return NULL;
        base = strrchr(real, '/');
        base = base ? base + 1 : real;
        return strdup(copy_name_is_valid(base) ? base : "root");
}

static int wait_child(pid_t pid)
{
        int status;

        while (waitpid(pid, &status, 0) < 0)
                if (errno != EINTR)
                        return -errno;
        return WIFEXITED(status) && WEXITSTATUS(status) == 0 ? 0 : -EIO;
}

static int call_copy(sd_bus *bus, const char *method, const char *name, const char *path, int fd, const char *label)
{
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL;
        int r;

        r = bus_new_manager_call(bus, &m, method);
        if (r >= 0)
                r = sd_bus_message_append(m, "ssh", name, path, fd);
        if (r >= 0)
                r = sd_bus_message_append(m, "a{sv}", 0);
        if (r < 0)
                return log_error(EXIT_FAILURE_GENERIC, "Failed to create a bus message: %s", strerror(-r));
        arg_block = true; /* the stream needs this process until the copy has ended */
        return job_run(bus, m, label);
}

static int copy_to(sd_bus *bus, const char *host, const char *name, const char *path)
{
        _cleanup_(closep) int src = -1, rd = -1, wr = -1;
        _cleanup_(freep) char *top = NULL, *label = NULL;
        bool running;
        struct stat st;
        int fds[2], r, c;
        pid_t pid;

        src = open(host, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
        if (src < 0)
                return log_error(EXIT_FAILURE_GENERIC, "Cannot open %s: %s", host, strerror(errno));
        if (fstat(src, &st) < 0)
                return log_error(EXIT_FAILURE_GENERIC, "Cannot inspect %s: %s", host, strerror(errno));
        if (!S_ISREG(st.st_mode) && !S_ISDIR(st.st_mode))
                return log_error(EXIT_USAGE, "%s is neither a regular file nor a directory.", host);
        top = top_name_of(host);
        if (!top)
                return log_error(EXIT_FAILURE_GENERIC, "Cannot name %s in the copy.", host);
        r = machine_is_running(bus, name, &running);
        if (r != EXIT_OK)
                return r;
        if (pipe2(fds, O_CLOEXEC) < 0)
                return log_error(EXIT_FAILURE_GENERIC, "Cannot make a pipe: %s", strerror(errno));
        rd = fds[0];
        wr = fds[1];

        pid = fork();
        if (pid < 0)
                return log_error(EXIT_FAILURE_GENERIC, "Cannot fork: %s", strerror(errno));
        if (pid == 0) {
                char err[1024] = "";
                close(rd);
                if (copy_stream_write(src, top, wr, err, sizeof err) < 0) {
                        /* The daemon's job says why the copy failed when the stream just ended early. */
                        if (!strstr(err, "went away"))
                                fprintf(stderr, "stampctl: %s\n", err);
                        _exit(EXIT_FAILURE);
                }
                _exit(EXIT_SUCCESS);
        }
        wr = safe_close_(wr);

        if (asprintf(&label, "cp %s %s:%s", host, name, path) < 0)
                return log_error(EXIT_FAILURE_GENERIC, "Out of memory.");
        r = call_copy(bus, running ? "CopyToMachine" : "CopyToImage", name, path, rd, label);
        rd = safe_close_(rd); /* the writer learns of a refusal from a pipe without a reader */
        c = wait_child(pid);
        if (r == EXIT_OK && c < 0)
                return log_error(EXIT_FAILURE_GENERIC, "Reading %s failed.", host);
        return r;
}

static int copy_from(sd_bus *bus, const char *name, const char *path, const char *host)
{
        _cleanup_(closep) int dir = -1, rd = -1, wr = -1;
        _cleanup_(freep) char *copy = NULL, *label = NULL, *child_name = NULL;
        const char *parent;
        bool running;
        struct stat st;
        int fds[2], r, c;
        pid_t pid;

        /* Into an existing directory under the name it has inside, as cp does; else as @host. */
        if (stat(host, &st) == 0 && S_ISDIR(st.st_mode))
                parent = host;
        else {
                _cleanup_(freep) char *b = strdup(host);
                copy = strdup(host);
                if (!copy || !b)
                        return log_error(EXIT_FAILURE_GENERIC, "Out of memory.");
                child_name = strdup(basename(b));
                parent = dirname(copy);
                if (!child_name || !copy_name_is_valid(child_name))
                        return log_error(EXIT_USAGE, "Cannot copy to %s: name a file or a directory.", host);
        }
        dir = open(parent, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (dir < 0)
                return log_error(EXIT_FAILURE_GENERIC, "Cannot open directory %s: %s", parent, strerror(errno));
        r = machine_is_running(bus, name, &running);
        if (r != EXIT_OK)
                return r;
        if (pipe2(fds, O_CLOEXEC) < 0)
                return log_error(EXIT_FAILURE_GENERIC, "Cannot make a pipe: %s", strerror(errno));
        rd = fds[0];
        wr = fds[1];

        pid = fork();
        if (pid < 0)
                return log_error(EXIT_FAILURE_GENERIC, "Cannot fork: %s", strerror(errno));
        if (pid == 0) {
                char err[1024] = "";
                close(wr);
                /* Owners as they were inside only for root: anyone else gets files of their own. */
                if (copy_stream_extract(rd, dir, child_name, geteuid() == 0, err, sizeof err) < 0) {
                        fprintf(stderr, "stampctl: %s\n", err);
                        _exit(EXIT_FAILURE);
                }
                _exit(EXIT_SUCCESS);
        }
        rd = safe_close_(rd);

        if (asprintf(&label, "cp %s:%s %s", name, path, host) < 0)
                return log_error(EXIT_FAILURE_GENERIC, "Out of memory.");
        r = call_copy(bus, running ? "CopyFromMachine" : "CopyFromImage", name, path, wr, label);
        wr = safe_close_(wr); /* the reader sees the end of the stream, or of a refused one */
        c = wait_child(pid);
        if (r == EXIT_OK && c < 0)
                return log_error(EXIT_FAILURE_GENERIC, "Writing %s failed.", host);
        return r;
}

int verb_cp(sd_bus *bus, int argc, char **argv)
{
        _cleanup_(freep) char *src_name = NULL, *dst_name = NULL;
        const char *src_path = NULL, *dst_path = NULL;
        bool src_remote, dst_remote;
        int r;

        src_remote = split_remote(argv[1], &src_name, &src_path);
        dst_remote = split_remote(argv[2], &dst_name, &dst_path);
        if (src_remote == dst_remote)
                return log_error(EXIT_USAGE, "Exactly one of SRC and DST must be NAME:PATH (a machine or an image).");
        r = bus_check_fd_passing(bus);
        if (r != EXIT_OK)
                return r;
        if (dst_remote)
                return copy_to(bus, argv[1], dst_name, dst_path);
        return copy_from(bus, src_name, src_path, argv[2]);
}
