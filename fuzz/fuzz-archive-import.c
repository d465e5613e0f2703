/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* Archive import (transfer/archive-util.c): the bytes are a tar stream (any compression) extracted
 * with archive_extract_stream() into a fresh directory, as ImportTar and PullTar do, then brought to
 * the top with tree_flatten_single_dir().
 *
 * Invariants: no memory error (ASan/UBSan); the result is 0 or one of the documented errors, with a
 * message; nothing is made outside the image's directory; and no symlink in the extracted tree leads
 * out of it (checked here independently of the daemon's own check).
 *
 * Safety of the machine: when run as root the target first moves into a private mount namespace in
 * which every mount is read-only, except a tmpfs for the work and the directories libFuzzer writes
 * (corpus and artifact directories named on the command line, and the working directory). An
 * extraction that escaped would then fail with EROFS — which is itself reported as a finding —
 * instead of writing over the machine. STAMP_FUZZ_NO_SANDBOX=1 turns that off. */
#include <dirent.h>
#include <inttypes.h>
#include <fcntl.h>
#include <ftw.h>
#include <linux/fs.h>
#include <linux/mount.h>
#include <sched.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/syscall.h>

#include <glib.h>

#include "archive-util.h"
#include "fuzz-util.h"

static int base_fd = -1; /* the work directory; holds only "root" while an input is extracted */
static int cwd_fd = -1;
static char base_path[PATH_MAX];

/* The job machinery is not linked: extraction reports progress and warnings through these. */
void job_child_progress(JobChild *c, double progress)
{
        FUZZ_CHECK(progress >= 0.0 && progress <= 1.0, "progress %f", progress);
}

void job_child_log(JobChild *c, int priority, const char *fmt, ...)
{
}

static int set_read_only(const char *path, bool recursive, bool ro)
{
        struct mount_attr attr = {};

        if (ro)
                attr.attr_set = MOUNT_ATTR_RDONLY;
        else
                attr.attr_clr = MOUNT_ATTR_RDONLY;
        return (int) syscall(SYS_mount_setattr, AT_FDCWD, path, recursive ? AT_RECURSIVE : 0, &attr, sizeof attr);
}

static void keep_writable(const char *path)
{
        char real[PATH_MAX];

        if (!realpath(path, real))
                return; /* not there (yet): libFuzzer would make it; make it now */
        if (mount(real, real, NULL, MS_BIND, NULL) < 0 || set_read_only(real, false, false) < 0)
                fprintf(stderr, "fuzz-archive-import: cannot keep %s writable: %m\n", real);
}

static void sandbox(int argc, char **argv)
{
        char cwd[PATH_MAX];

        if (geteuid() != 0 || getenv("STAMP_FUZZ_NO_SANDBOX"))
                return;
        if (!getcwd(cwd, sizeof cwd))
                abort();
        /* Directories libFuzzer may write to, made before everything turns read-only. */
        for (int i = 1; i < argc; i++) {
                const char *a = argv[i];
                if (strncmp(a, "-artifact_prefix=", 17) == 0 || strncmp(a, "-exact_artifact_path=", 21) == 0) {
                        char *dir = g_path_get_dirname(strchr(a, '=') + 1);
                        (void) g_mkdir_with_parents(dir, 0755);
                        g_free(dir);
                }
        }
        if (unshare(CLONE_NEWNS) < 0 || mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0) {
                fprintf(stderr, "fuzz-archive-import: no private mount namespace: %m\n");
                abort();
        }
        if (set_read_only("/", true, true) < 0) {
                fprintf(stderr, "fuzz-archive-import: cannot make / read-only: %m\n");
                abort();
        }
        if (mount("stamp-fuzz", base_path, "tmpfs", MS_NOSUID, "size=512m,mode=0700") < 0) {
                fprintf(stderr, "fuzz-archive-import: no tmpfs on %s: %m\n", base_path);
                abort();
        }
        keep_writable(cwd);
        for (int i = 1; i < argc; i++) {
                const char *a = argv[i];
                struct stat st;
                if (a[0] != '-' && stat(a, &st) == 0 && S_ISDIR(st.st_mode))
                        keep_writable(a);
                else if (strncmp(a, "-artifact_prefix=", 17) == 0 || strncmp(a, "-exact_artifact_path=", 21) == 0) {
                        char *dir = g_path_get_dirname(strchr(a, '=') + 1);
                        keep_writable(dir);
                        g_free(dir);
                }
        }
}

/* The work directory is made on the machine but used inside the namespace: a helper left outside
 * removes it when this process ends, however it ends. */
static void remove_at_exit(const char *path)
{
        int p[2];
        pid_t pid;

        if (pipe2(p, O_CLOEXEC) < 0)
                return;
        pid = fork();
        if (pid == 0) {
                char c;
                close(p[1]);
                while (read(p[0], &c, 1) < 0 && errno == EINTR)
                        ;
                (void) rmdir(path);
                _exit(0);
        }
        close(p[0]); /* the write end stays open until this process is gone */
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
        const char *env = getenv("STAMP_FUZZ_WORKDIR");

        if (env)
                snprintf(base_path, sizeof base_path, "%s", env);
        else {
                char tmpl[] = "/tmp/stamp-fuzz-archive-XXXXXX";
                if (!mkdtemp(tmpl))
                        abort();
                snprintf(base_path, sizeof base_path, "%s", tmpl);
                remove_at_exit(base_path);
        }
        sandbox(*argc, *argv);
        base_fd = open(base_path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        cwd_fd = open(".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (base_fd < 0 || cwd_fd < 0)
                abort();
        return 0;
}

/* ---- checks on the extracted tree ---- */

static size_t root_len;

/* Independently of archive_symlink_unsafe_reason(): resolve the link's target lexically from the
 * link's directory and see whether it climbs above the root. */
static bool link_stays_inside(const char *rel, const char *target)
{
        char **dir = g_strsplit(rel, "/", -1);
        char **tgt = g_strsplit(target, "/", -1);
        long depth = 0;
        bool inside = true;

        if (target[0] == '/')
                goto out; /* resolves in the image's own root when the container runs */
        for (char **c = dir; *c; c++)
                if (**c && strcmp(*c, ".") != 0)
                        depth++;
        depth--; /* the link's own name */
        for (char **c = tgt; *c && inside; c++) {
                if (strcmp(*c, "..") == 0)
                        inside = --depth >= 0;
                else if (**c && strcmp(*c, ".") != 0)
                        depth++;
        }
out:
        g_strfreev(dir);
        g_strfreev(tgt);
        return inside;
}

static int check_entry(const char *path, const struct stat *st, int type, struct FTW *ftw)
{
        if (type == FTW_SL) {
                char target[PATH_MAX + 1];
                ssize_t n = readlink(path, target, PATH_MAX);
                FUZZ_CHECK(n >= 0, "cannot read link %s", path);
                target[n] = '\0';
                FUZZ_CHECK(link_stays_inside(path + root_len + 1, target), "symlink %s -> %s leads out of the image",
                           path + root_len + 1, target);
        }
        return 0;
}

static void clear_flags(int fd)
{
        unsigned attr = 0;

        if (ioctl(fd, FS_IOC_GETFLAGS, &attr) >= 0 && (attr & (FS_IMMUTABLE_FL | FS_APPEND_FL))) {
                attr &= ~(FS_IMMUTABLE_FL | FS_APPEND_FL);
                (void) ioctl(fd, FS_IOC_SETFLAGS, &attr);
        }
}

static int remove_entry(const char *path, const struct stat *st, int type, struct FTW *ftw)
{
        if (type == FTW_DP || type == FTW_D || type == FTW_DNR) {
                int fd = open(path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
                if (fd >= 0) {
                        clear_flags(fd);
                        close(fd);
                }
                (void) chmod(path, 0700);
                if (rmdir(path) < 0 && ftw->level > 0)
                        FUZZ_CHECK(false, "cannot remove %s: %m", path);
                return 0;
        }
        if (type == FTW_F && S_ISREG(st->st_mode)) {
                int fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK);
                if (fd >= 0) {
                        clear_flags(fd);
                        close(fd);
                }
        }
        FUZZ_CHECK(unlink(path) == 0, "cannot remove %s: %m", path);
        return 0;
}

static void check_base_holds_only_root(void)
{
        int fd = openat(base_fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        DIR *d = fd >= 0 ? fdopendir(fd) : NULL;
        struct dirent *de;

        FUZZ_CHECK(d, "cannot list the work directory");
        while ((de = readdir(d)))
                FUZZ_CHECK(!strcmp(de->d_name, ".") || !strcmp(de->d_name, "..") || !strcmp(de->d_name, "root"),
                           "the extraction made \"%s\" beside the image", de->d_name);
        closedir(d);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
        ExtractResult result;
        char err[1024] = "";
        char root[PATH_MAX + 8];
        int in_fd, root_fd, k;

        in_fd = memfd_create("archive", MFD_CLOEXEC);
        if (in_fd < 0 || (size && write(in_fd, data, size) != (ssize_t) size) || lseek(in_fd, 0, SEEK_SET) < 0)
                abort();
        FUZZ_CHECK(mkdirat(base_fd, "root", 0755) == 0, "leftover from the last input: %m");
        root_fd = openat(base_fd, "root", O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (root_fd < 0 || fchdir(root_fd) < 0)
                abort();
        (void) umask(0022);

        k = archive_extract_stream((JobChild *) &result, in_fd, size, &result, err, sizeof err);
        if (getenv("STAMP_FUZZ_VERBOSE"))
                fprintf(stderr, "extract: %d (%s) entries=%" PRIu64 " %s\n", k, k < 0 ? strerror(-k) : "ok",
                        result.entries, err);
        if (k >= 0) {
                int f = tree_flatten_single_dir(root_fd);
                FUZZ_CHECK(f >= 0 || f == -EEXIST || f == -ENOTEMPTY || f == -ENOSPC, "tree_flatten_single_dir: %s",
                           strerror(-f));
        } else {
                FUZZ_CHECK(k != -EROFS, "tried to write outside the image: %s", err);
                FUZZ_CHECK(err[0], "failed (%s) without a message", strerror(-k));
                FUZZ_CHECK(k == -EBADMSG || k == -ENOSPC || k == -ENOMEM || k == -EIO, "unexpected error %d (%s): %s",
                           -k, strerror(-k), err);
        }
        if (fchdir(cwd_fd) < 0)
                abort();

        check_base_holds_only_root();
        snprintf(root, sizeof root, "%s/root", base_path);
        root_len = strlen(root);
        (void) nftw(root, check_entry, 16, FTW_PHYS);
        FUZZ_CHECK(nftw(root, remove_entry, 16, FTW_PHYS | FTW_DEPTH) == 0, "cannot clean up");
        (void) unlinkat(base_fd, "root", AT_REMOVEDIR);
        close(root_fd);
        close(in_fd);
        return 0;
}
