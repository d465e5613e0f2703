/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <fcntl.h>
#include <linux/openat2.h>
#include <sys/stat.h>

#include <glib.h>

#include "identity.h"

#define SSH_HOST_KEY_PREFIX "ssh_host_"
#define KEY_FILE_MAX (64 * 1024)

/* @path below @root_fd, resolved as if @root_fd were "/" and refusing every symlink on the way, as an
 * O_PATH fd. -ELOOP for a symlink, -ENOENT if missing. */
static int open_below(int root_fd, const char *path, int flags)
{
        struct open_how how = {
                .flags = (uint64_t) (flags | O_CLOEXEC | O_NOFOLLOW),
                .resolve = RESOLVE_IN_ROOT | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS | RESOLVE_NO_XDEV,
        };
        int fd = openat2_retry(root_fd, path, &how);

        return fd < 0 ? -errno : fd;
}

/* Reopen the O_PATH fd @fd of a regular file for writing. -EPERM if it is not a regular file: a FIFO
 * or a device there must not be opened at all. */
static int reopen_regular_for_writing(int fd, int flags)
{
        char path[64];
        struct stat st;
        int k;

        if (fstat(fd, &st) < 0)
                return -errno;
        if (!S_ISREG(st.st_mode))
                return -EPERM;
        snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
        k = open(path, flags | O_WRONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
        return k < 0 ? -errno : k;
}

static int empty_machine_id(int root_fd)
{
        _cleanup_close_ int path_fd = open_below(root_fd, "etc/machine-id", O_PATH);
        _cleanup_close_ int fd = -1;

        if (path_fd == -ENOENT || path_fd == -ELOOP)
                return 0; /* none, or not a file of the image's own: nothing to forget */
        if (path_fd < 0)
                return path_fd;
        fd = reopen_regular_for_writing(path_fd, O_TRUNC);
        if (fd == -EPERM)
                return 0;
        return fd < 0 ? fd : 0;
}

/* Write @data as the file @name of the directory @dir_fd (an O_PATH fd is enough): into a temporary
 * first, renamed over what was there (a regular file or a symlink, never followed). A directory or
 * other odd thing in the way stays as it is. */
static int replace_file(int dir_fd, const char *name, const void *data, size_t size, mode_t mode)
{
        struct stat st;

        if (fstatat(dir_fd, name, &st, AT_SYMLINK_NOFOLLOW) >= 0 && !S_ISREG(st.st_mode) && !S_ISLNK(st.st_mode))
                return 0;
        return write_file_atomic_at(dir_fd, name, data, size, mode, false);
}

static int set_hostname(int root_fd, const char *hostname)
{
        _cleanup_close_ int etc = open_below(root_fd, "etc", O_PATH | O_DIRECTORY);
        _cleanup_free_ char *line = NULL;

        if (etc == -ENOENT || etc == -ELOOP || etc == -ENOTDIR)
                return 0; /* not a system that keeps one */
        if (etc < 0)
                return etc;
        if (asprintf(&line, "%s\n", hostname) < 0)
                return -ENOMEM;
        return replace_file(etc, "hostname", line, strlen(line), 0644);
}

static bool is_host_key_name(const char *name, char **ret_type)
{
        const char *type = name + strlen(SSH_HOST_KEY_PREFIX), *end;

        if (strncmp(name, SSH_HOST_KEY_PREFIX, strlen(SSH_HOST_KEY_PREFIX)) != 0)
                return false;
        end = strstr(type, "_key");
        if (!end || end == type || !(streq(end, "_key") || streq(end, "_key.pub")))
                return false;
        if (ret_type)
                *ret_type = strndup(type, (size_t) (end - type));
        return true;
}

/* Copy the file @name of @from_fd into @to_fd under the same name, with @mode. */
static int copy_key_file(int from_fd, int to_fd, const char *name, mode_t mode)
{
        _cleanup_close_ int fd = openat(from_fd, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
        char buf[KEY_FILE_MAX];
        ssize_t n;

        if (fd < 0)
                return -errno;
        n = read(fd, buf, sizeof buf);
        if (n < 0)
                return -errno;
        if ((size_t) n == sizeof buf)
                return -EFBIG;
        return replace_file(to_fd, name, buf, (size_t) n, mode);
}

/* Make a key of @type with ssh-keygen into @keys (a private directory of the host), named as sshd
 * looks for it; then copy it and its public half into @ssh_fd. */
static int make_host_key(int keys_fd, const char *keys, int ssh_fd, const char *type, const char *hostname)
{
        _cleanup_free_ char *file = NULL, *pub = NULL, *comment = NULL;
        int k;

        if (asprintf(&file, "%s/" SSH_HOST_KEY_PREFIX "%s_key", keys, type) < 0 ||
            asprintf(&pub, SSH_HOST_KEY_PREFIX "%s_key.pub", type) < 0 || asprintf(&comment, "root@%s", hostname) < 0)
                return -ENOMEM;
        char *argv[] = {(char *) "ssh-keygen", (char *) "-q", (char *) "-t", (char *) type, (char *) "-N", (char *) "",
                        (char *) "-C",         comment,       (char *) "-f", file,          NULL};
        k = run_command(argv);
        if (k != 0)
                return k < 0 ? k : -EIO;
        k = copy_key_file(keys_fd, ssh_fd, strrchr(file, '/') + 1, 0600);
        if (k >= 0)
                k = copy_key_file(keys_fd, ssh_fd, pub, 0644);
        return k;
}

static int renew_ssh_host_keys(int root_fd, const char *hostname)
{
        _cleanup_close_ int ssh = open_below(root_fd, "etc/ssh", O_RDONLY | O_DIRECTORY);
        g_autoptr(GPtrArray) types = g_ptr_array_new_with_free_func(free);
        g_autoptr(GPtrArray) names = g_ptr_array_new_with_free_func(free);
        g_autofree char *keys = NULL;
        _cleanup_close_ int keys_fd = -1;
        struct dirent *de;
        DIR *d;
        int r = 0;

        if (ssh == -ENOENT || ssh == -ELOOP || ssh == -ENOTDIR)
                return 0;
        if (ssh < 0)
                return ssh;
        d = opendir_at(ssh, ".");
        if (!d)
                return -errno;
        while ((de = readdir(d))) {
                char *type = NULL;
                if (!is_host_key_name(de->d_name, &type))
                        continue;
                g_ptr_array_add(names, strdup(de->d_name));
                if (type && !g_ptr_array_find_with_equal_func(types, type, g_str_equal, NULL))
                        g_ptr_array_add(types, type);
                else
                        free(type);
        }
        closedir(d);
        if (names->len == 0)
                return 0;

        /* The old keys go first and whatever happens next: a clone must never answer with its
         * template's identity. */
        for (guint i = 0; i < names->len; i++)
                if (unlinkat(ssh, names->pdata[i], 0) < 0 && errno != ENOENT)
                        return -errno;

        keys = g_dir_make_tmp("stamp-hostkeys-XXXXXX", NULL);
        if (!keys)
                return -EIO;
        keys_fd = open(keys, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        for (guint i = 0; keys_fd >= 0 && i < types->len; i++) {
                const char *type = types->pdata[i];
                int k;

                /* sshd has not read DSA keys for years; such a key is only removed. */
                if (streq(type, "dsa"))
                        continue;
                k = make_host_key(keys_fd, keys, ssh, type, hostname);
                if (k < 0) {
                        log_warning_errno(k,
                                          "Cannot make a new ssh host key of type %s for %s; it is removed and "
                                          "sshd will need one made",
                                          type, hostname);
                        if (r == 0)
                                r = k;
                }
        }
        {
                char *argv[] = {(char *) "rm", (char *) "-rf", (char *) "--", keys, NULL};
                (void) run_command(argv);
        }
        /* A key that could not be made is not worth failing the clone over: the old one is gone, which
         * is what matters, and the log says what to do. */
        return 0;
}

int store_reset_identity(int root_fd, const char *hostname, char *err, size_t errlen)
{
        int k;

        k = empty_machine_id(root_fd);
        if (k < 0)
                return errbuf_set(err, errlen, -k, "Cannot empty /etc/machine-id of %s: %s", hostname, strerror(-k));
        k = set_hostname(root_fd, hostname);
        if (k < 0)
                return errbuf_set(err, errlen, -k, "Cannot set /etc/hostname of %s: %s", hostname, strerror(-k));
        k = renew_ssh_host_keys(root_fd, hostname);
        if (k < 0)
                return errbuf_set(err, errlen, -k, "Cannot renew the ssh host keys of %s: %s", hostname, strerror(-k));
        return 0;
}
