/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <fcntl.h>
#include <grp.h>
#include <libgen.h>
#include <linux/openat2.h>
#include <sched.h>
#include <sys/stat.h>

#include "copy-stream.h"
#include "transfer.h"

/* CopyToMachine, CopyFromMachine, CopyToImage, CopyFromImage: the caller's tar stream (copy-stream.h)
 * made into a tree inside a machine or an image, or a tree of it written to the caller's fd.
 *
 * The daemon hands over the root to work in (the machine's /proc/PID/root, or the image's directory)
 * and, for a machine in a user namespace, that namespace. The job joins the namespace first, as its
 * root: owners are then the ones seen inside, in both directions, and what it makes lands on disk as
 * the machine's own files would. Then it makes the root its own root (chroot): from there on no path,
 * no symlink, no ".." the machine's files hold leads anywhere but into the machine, whatever its root
 * changes meanwhile. The path the caller named is resolved with RESOLVE_IN_ROOT besides, so a symlink
 * on the way is followed as the machine itself would follow it. */

static int openat2_(int dir_fd, const char *path, int flags, uint64_t resolve)
{
        struct open_how how = {.flags = (uint64_t) flags | O_CLOEXEC, .resolve = resolve};
        int fd = openat2_retry(dir_fd, path, &how);
        return fd < 0 ? -errno : fd;
}

#define IN_ROOT (RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)

/* Join the machine's user namespace as its root, then make @root_fd this process's root. */
static int enter_root(JobChild *c, const char *name, const CopyJobArgs *a)
{
        if (a->userns_fd >= 0) {
                if (setns(a->userns_fd, CLONE_NEWUSER) < 0)
                        return job_child_fail(c, errno, "Cannot join the machine's user namespace: %s",
                                              strerror(errno));
                if (setgroups(0, NULL) < 0 && errno != EPERM)
                        return job_child_fail(c, errno, "Cannot drop supplementary groups: %s", strerror(errno));
                if (setresgid(0, 0, 0) < 0 || setresuid(0, 0, 0) < 0)
                        return job_child_fail(c, errno, "Cannot become root of the machine's user namespace: %s",
                                              strerror(errno));
        }
        if (fchdir(a->root_fd) < 0 || chroot(".") < 0 || chdir("/") < 0)
                return job_child_fail(c, errno, "Cannot enter the root of %s: %s", name, strerror(errno));
        return 0;
}

/* The last component of @path (no trailing slashes), in @buf. */
static const char *last_component(const char *path, char *buf, size_t size)
{
        size_t n = strlen(path);
        const char *start;

        while (n > 1 && path[n - 1] == '/')
                n--;
        start = path + n;
        while (start > path && start[-1] != '/')
                start--;
        n -= (size_t) (start - path);
        if (n >= size)
                return NULL;
        memcpy(buf, start, n);
        buf[n] = '\0';
        return buf;
}

/* The directory @path is in ("/" for a name at the top). */
static char *parent_of(const char *path)
{
        size_t n = strlen(path);

        while (n > 1 && path[n - 1] == '/')
                n--;
        while (n > 0 && path[n - 1] != '/')
                n--;
        while (n > 1 && path[n - 1] == '/')
                n--;
        return strndup(path, n > 0 ? n : 1);
}

static int copy_in(JobChild *c, const JobArgs *j)
{
        const CopyJobArgs *a = &j->copy;
        _cleanup_close_ int dir_fd = -1;
        _cleanup_free_ char *parent = NULL;
        char base[COPY_NAME_MAX + 1], err[1024] = "";
        const char *name = NULL;
        int k;

        /* An existing directory takes the copy under the name it has in the stream (as cp does);
         * anything else is the copy's new name in its parent directory. */
        dir_fd = openat2_(a->root_fd, a->path, O_RDONLY | O_DIRECTORY, IN_ROOT);
        if (dir_fd < 0 && dir_fd != -ENOENT && dir_fd != -ENOTDIR)
                return job_child_fail(c, -dir_fd, "Cannot open %s in %s: %s", a->path, j->name, strerror(-dir_fd));
        if (dir_fd < 0) {
                if (dir_fd == -ENOTDIR) {
                        struct stat st;
                        _cleanup_close_ int fd = openat2_(a->root_fd, a->path, O_PATH, IN_ROOT);
                        if (fd >= 0 && fstat(fd, &st) == 0)
                                return job_child_fail(c, EEXIST, "%s exists already in %s", a->path, j->name);
                }
                name = last_component(a->path, base, sizeof base);
                if (!name || !copy_name_is_valid(name))
                        return job_child_fail(c, EINVAL, "Invalid path %s", a->path);
                parent = parent_of(a->path);
                if (!parent)
                        return job_child_fail(c, ENOMEM, "Out of memory");
                dir_fd = openat2_(a->root_fd, parent, O_RDONLY | O_DIRECTORY, IN_ROOT);
                if (dir_fd < 0)
                        return job_child_fail(c, -dir_fd, "Cannot open directory %s in %s: %s", parent, j->name,
                                              strerror(-dir_fd));
        }
        k = enter_root(c, j->name, a);
        if (k < 0)
                return k;
        k = copy_stream_extract(a->data_fd, dir_fd, name, true, err, sizeof err);
        if (k < 0)
                return job_child_fail(c, -k, "Copying into %s of %s failed: %s", a->path, j->name, err);
        return 0;
}

static int copy_out(JobChild *c, const JobArgs *j)
{
        const CopyJobArgs *a = &j->copy;
        _cleanup_close_ int path_fd = -1, fd = -1;
        char base[COPY_NAME_MAX + 1], err[1024] = "";
        const char *name;
        struct stat st;
        int k;

        name = last_component(a->path, base, sizeof base);
        if (streq(a->path, "/") || (name && streq(name, "/")))
                name = "root";
        if (!name || !copy_name_is_valid(name))
                return job_child_fail(c, EINVAL, "Invalid path %s", a->path);
        path_fd = openat2_(a->root_fd, a->path, O_PATH, IN_ROOT);
        if (path_fd < 0)
                return job_child_fail(c, -path_fd, "Cannot open %s in %s: %s", a->path, j->name, strerror(-path_fd));
        if (fstat(path_fd, &st) < 0)
                return job_child_fail(c, errno, "Cannot inspect %s in %s: %s", a->path, j->name, strerror(errno));
        /* Only now opened for reading: a fifo or a device is never opened at all. */
        if (!S_ISREG(st.st_mode) && !S_ISDIR(st.st_mode))
                return job_child_fail(c, EINVAL, "%s in %s is neither a regular file nor a directory", a->path,
                                      j->name);
        fd = openat2_(a->root_fd, a->path, O_RDONLY | O_NOCTTY | O_NONBLOCK, IN_ROOT);
        if (fd < 0)
                return job_child_fail(c, -fd, "Cannot open %s in %s: %s", a->path, j->name, strerror(-fd));
        {
                struct stat again;
                if (fstat(fd, &again) < 0 || again.st_dev != st.st_dev || again.st_ino != st.st_ino)
                        return job_child_fail(c, EBUSY, "%s in %s changed while it was opened", a->path, j->name);
        }
        k = enter_root(c, j->name, a);
        if (k < 0)
                return k;
        k = copy_stream_write(fd, name, a->data_fd, err, sizeof err);
        if (k < 0)
                return job_child_fail(c, -k, "Copying %s out of %s failed: %s", a->path, j->name, err);
        return 0;
}

int transfer_copy(JobChild *c, const JobArgs *j)
{
        if (!j->copy.path || j->copy.path[0] != '/')
                return job_child_fail(c, EINVAL, "stamp-transfer: invalid arguments");
        return j->type == JOB_COPY_TO ? copy_in(c, j) : copy_out(c, j);
}
