/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <fcntl.h>
#include <limits.h>
#include <sys/stat.h>
#include <sys/syscall.h>

#include "authz.h"
#include "errors.h"
#include "image.h"
#include "image-dbus.h"
#include "job.h"
#include "job-dbus.h"
#include "job-util.h"
#include "machine.h"

/* CopyToMachine, CopyFromMachine, CopyToImage, CopyFromImage: a tar stream through the caller's fd
 * (transfer/copy-stream.h says what it holds), made into a tree in the machine or the image, or
 * written from one, by a job (transfer/copy.c). The daemon opens no path the caller named: it hands
 * the job the machine's root as its leader sees it, or the image's directory, and the job resolves
 * the path in there. */

typedef struct CopyOptions {
        int unused; /* no option yet: the dictionary is there to grow */
} CopyOptions;

static const OptionSpec copy_option_table[] = {
        {},
};

static int check_copy_path(const char *path, sd_bus_error *error)
{
        if (isempty(path) || path[0] != '/')
                return sd_bus_error_setf(error, SD_BUS_ERROR_INVALID_ARGS,
                                         "Path \"%s\" is not absolute: name a path inside, from its /",
                                         isempty(path) ? "" : path);
        if (strlen(path) >= PATH_MAX)
                return sd_bus_error_setf(error, SD_BUS_ERROR_INVALID_ARGS, "Path is longer than %d bytes",
                                         PATH_MAX - 1);
        return 0;
}

static int read_copy_call(sd_bus_message *msg, bool out, const char **ret_name, const char **ret_path, int *ret_fd,
                          sd_bus_error *error)
{
        CopyOptions o = {};
        int k;

        k = sd_bus_message_read(msg, "ssh", ret_name, ret_path, ret_fd);
        if (k < 0)
                return k;
        k = bus_read_options(msg, copy_option_table, &o, error);
        if (k < 0)
                return k;
        if ((k = check_copy_path(*ret_path, error)) < 0 || (k = bus_check_archive_fd(*ret_fd, out, error)) < 0)
                return k;
        return 0;
}

static int pidfd_alive(int pidfd)
{
        return syscall(SYS_pidfd_send_signal, pidfd, 0, NULL, 0) < 0 ? -errno : 0;
}

/* The root of @mc as its leader sees it, and its user namespace if it is not ours (else -1). */
static int open_machine_root(Machine *mc, int *ret_root, int *ret_userns, sd_bus_error *error)
{
        _cleanup_close_ int root = -1, userns = -1;
        char path[64];
        struct stat ours, theirs;

        if (mc->state != MACHINE_RUNNING || mc->leader == 0 || mc->leader_pidfd < 0)
                return sd_bus_error_setf(error, STAMP_ERROR_NO_SUCH_MACHINE, "Machine %s is %s, not running", mc->name,
                                         machine_state_to_string(mc->state));
        snprintf(path, sizeof path, "/proc/%" PRIu32 "/root", mc->leader);
        root = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        snprintf(path, sizeof path, "/proc/%" PRIu32 "/ns/user", mc->leader);
        userns = open(path, O_RDONLY | O_CLOEXEC);
        /* Opened by pid: only if the leader still lives are they its. */
        if (root < 0 || userns < 0 || pidfd_alive(mc->leader_pidfd) < 0)
                return sd_bus_error_setf(error, STAMP_ERROR_NO_SUCH_MACHINE, "Machine %s has ended", mc->name);
        if (stat("/proc/self/ns/user", &ours) < 0 || fstat(userns, &theirs) < 0)
                return sd_bus_error_set_errnof(error, errno, "Cannot inspect the user namespace of machine %s: %m",
                                               mc->name);
        if (ours.st_dev == theirs.st_dev && ours.st_ino == theirs.st_ino)
                userns = safe_close(userns);
        *ret_root = TAKE_FD(root);
        *ret_userns = TAKE_FD(userns);
        return 0;
}

static int copy_job_start(sd_bus_message *msg, Job **jp, JobArgs *a, const char *name, const char *path, int fd)
{
        a->name = strdup(name);
        a->copy.path = strdup(path);
        if (!a->name || !a->copy.path)
                return -ENOMEM;
        a->copy.data_fd = fcntl(fd, F_DUPFD_CLOEXEC, 3);
        if (a->copy.data_fd < 0)
                return -errno;
        return job_start_reply(jp, a, msg);
}

static int method_copy_machine(sd_bus_message *msg, Manager *m, bool out, sd_bus_error *error)
{
        _cleanup_(job_freep) Job *j = NULL;
        _cleanup_(job_args_done) JobArgs a;
        JobType type = out ? JOB_COPY_FROM : JOB_COPY_TO;
        const char *name, *path;
        Machine *mc;
        int fd, k;

        job_args_init(&a, type);
        if ((k = read_copy_call(msg, out, &name, &path, &fd, error)) < 0)
                return k;
        if ((k = bus_check_image_name(name, "machine name", error)) < 0)
                return k;
        mc = machine_find(m, name);
        if (!mc || mc->state == MACHINE_EXITED)
                return sd_bus_error_setf(error, STAMP_ERROR_NO_SUCH_MACHINE, "No machine named %s is running", name);

        /* No lock: the machine holds its image, and the copy works in the machine, not on the image. */
        const char *details[] = {
                "verb", out ? "copy-from" : "copy-to", "machine", mc->name, "image", mc->image, "path", path, NULL};
        AuthzOwner owner = {.own_action = STAMP_ACTION_MANAGE_OWN_MACHINES, .owner = mc->uid};
        k = job_new_authorized(m, type, mc->image, false, msg, STAMP_ACTION_LOGIN, &owner, details, &j, error);
        if (k <= 0)
                return k < 0 ? k : 1;

        k = open_machine_root(mc, &a.copy.root_fd, &a.copy.userns_fd, error);
        if (k < 0)
                return k;
        return copy_job_start(msg, &j, &a, name, path, fd);
}

static int method_copy_image(sd_bus_message *msg, Manager *m, bool out, sd_bus_error *error)
{
        _cleanup_(job_freep) Job *j = NULL;
        _cleanup_(job_args_done) JobArgs a;
        JobType type = out ? JOB_COPY_FROM : JOB_COPY_TO;
        const char *name, *path, *action = out ? STAMP_ACTION_EXPORT : STAMP_ACTION_MANAGE_IMAGES;
        Image *img;
        int fd, k;

        job_args_init(&a, type);
        if ((k = read_copy_call(msg, out, &name, &path, &fd, error)) < 0)
                return k;
        if ((k = bus_check_image_name(name, "image name", error)) < 0 ||
            (k = bus_check_image_exists(m, name, &img, error)) < 0)
                return k;
        if (!out && img->read_only)
                return sd_bus_error_setf(error, STAMP_ERROR_IMAGE_READ_ONLY,
                                         "Image %s is read-only: nothing can be copied into it", name);

        /* Held while the copy works in place: no machine starts on it meanwhile, whose root could
         * change the tree under the walk (the walk stays inside the image anyway). */
        const char *details[] = {"verb", out ? "copy-from" : "copy-to", "image", name, "path", path, NULL};
        AuthzOwner owner = {.own_action = STAMP_ACTION_MANAGE_OWN_IMAGES, .owner = image_owner(m, img)};
        k = job_new_authorized(m, type, name, true, msg, action, &owner, details, &j, error);
        if (k <= 0)
                return k < 0 ? k : 1;

        a.copy.root_fd = bus_open_image(m, name, error);
        if (a.copy.root_fd < 0)
                return a.copy.root_fd;
        return copy_job_start(msg, &j, &a, name, path, fd);
}

int method_copy_to_machine(sd_bus_message *msg, void *userdata, sd_bus_error *error)
{
        return method_copy_machine(msg, userdata, false, error);
}

int method_copy_from_machine(sd_bus_message *msg, void *userdata, sd_bus_error *error)
{
        return method_copy_machine(msg, userdata, true, error);
}

int method_copy_to_image(sd_bus_message *msg, void *userdata, sd_bus_error *error)
{
        return method_copy_image(msg, userdata, false, error);
}

int method_copy_from_image(sd_bus_message *msg, void *userdata, sd_bus_error *error)
{
        return method_copy_image(msg, userdata, true, error);
}
