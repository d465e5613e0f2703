/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <fcntl.h>
#include <sys/stat.h>

#include "errors.h"
#include "job-dbus.h"
#include "job-util.h"
#include "machine.h"
#include "pool.h"

static const char *file_type_name(mode_t mode)
{
        switch (mode & S_IFMT) {
        case S_IFDIR:
                return "a directory";
        case S_IFCHR:
                return "a character device";
        case S_IFBLK:
                return "a block device";
        case S_IFLNK:
                return "a symlink";
        default:
                return "an unknown kind of file";
        }
}

int bus_check_archive_fd(int fd, bool for_writing, sd_bus_error *error)
{
        struct stat st;
        int flags = fcntl(fd, F_GETFL);

        if (flags < 0 || fstat(fd, &st) < 0)
                return sd_bus_error_set_errnof(error, errno, "Cannot use the file descriptor %d: %m", fd);
        if (flags & O_PATH)
                return sd_bus_error_setf(
                        error, SD_BUS_ERROR_INVALID_ARGS,
                        "The file descriptor is an O_PATH descriptor, which can be neither read nor written");
        if (!S_ISREG(st.st_mode) && !S_ISFIFO(st.st_mode) && !S_ISSOCK(st.st_mode))
                return sd_bus_error_setf(error, SD_BUS_ERROR_INVALID_ARGS,
                                         "The file descriptor refers to %s, not to a file or a pipe",
                                         file_type_name(st.st_mode));
        if (for_writing && (flags & O_ACCMODE) == O_RDONLY)
                return sd_bus_error_setf(error, SD_BUS_ERROR_INVALID_ARGS,
                                         "The file descriptor is open read-only; the archive must be written to it");
        if (!for_writing && (flags & O_ACCMODE) == O_WRONLY)
                return sd_bus_error_setf(error, SD_BUS_ERROR_INVALID_ARGS,
                                         "The file descriptor is open write-only; the archive must be read from it");
        return 0;
}

int bus_check_image_readable(Manager *m, const char *name, const Image *img, const char *busy_more, bool *ret_in_place,
                             bool *ret_snapshot, sd_bus_error *error)
{
        bool in_place = img->read_only && !manager_image_busy_reason(m, name);
        bool snapshot = !in_place && m->store_is_btrfs && img->type == IMAGE_SUBVOLUME;
        Machine *runner = snapshot ? NULL : machine_holding_image(m, name);

        if (runner)
                return sd_bus_error_setf(error, STAMP_ERROR_IMAGE_BUSY,
                                         "Image %s is busy (running as machine %s): it cannot be snapshotted here%s",
                                         name, runner->name, busy_more);
        if (ret_in_place)
                *ret_in_place = in_place;
        *ret_snapshot = snapshot;
        return 0;
}

int bus_open_image(Manager *m, const char *name, sd_bus_error *error)
{
        int fd = openat(m->store_fd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);

        if (fd < 0)
                return sd_bus_error_setf(error, STAMP_ERROR_NO_SUCH_IMAGE, "Cannot open image %s: %s", name,
                                         strerror(errno));
        return fd;
}

int job_new_authorized(Manager *m, JobType type, const char *image, bool lock, sd_bus_message *msg, const char *action,
                       const AuthzOwner *owner, const char *const *details, Job **ret, sd_bus_error *error)
{
        _cleanup_(job_freep) Job *j = NULL;
        int k;

        k = job_new(m, type, image, lock, msg, &j, error);
        if (k < 0)
                return k;
        j->action = action;
        k = owner ? authz_verify_owned(m->authz, msg, action, owner, details, NULL, error)
                  : authz_verify(m->authz, msg, action, details, error);
        if (k <= 0)
                return k;
        *ret = TAKE_PTR(j);
        return 1;
}

int job_make_image(Job *j, sd_bus_message *msg, JobArgs *a, const char *name, sd_bus_error *error)
{
        int k;

        if ((k = job_claim_owner(j, msg, a, error)) < 0)
                return k;
        j->makes_image = true;
        j->temp_name = store_temp_name(name);
        free(a->name);
        a->name = strdup(name);
        if (!j->temp_name || !a->name)
                return -ENOMEM;
        return 0;
}

int job_read_image(Job *j, const char *name, bool snapshot)
{
        if (snapshot) {
                j->temp_name = store_temp_name(name);
                if (!j->temp_name)
                        return -ENOMEM;
        } else {
                manager_image_reader_add(j->manager, name);
                j->reader_held = true;
        }
        return 0;
}

int job_start_reply(Job **jp, JobArgs *a, sd_bus_message *msg)
{
        Job *started;
        int k;

        if ((*jp)->makes_image)
                pool_maybe_grow((*jp)->manager);
        k = job_start(*jp, a);
        if (k < 0)
                return k;
        started = TAKE_PTR(*jp); /* the manager's now */
        job_emit_new(started);
        return sd_bus_reply_method_return(msg, "uo", started->id, started->object_path);
}
