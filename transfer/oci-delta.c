/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <fcntl.h>
#include <sys/stat.h>

#include "archive-util.h"
#include "btrfs-diff.h"
#include "escape.h"
#include "oci.h"

/* A clone's own layer: what btrfs says changed against its template, nothing walked. Removed paths
 * become whiteouts (".wh.NAME" beside where NAME was; only the topmost of a removed tree), added,
 * changed and retyped ones become entries read from the clone's read-only snapshot, in path order so
 * that a directory comes before what is in it. Hard links among the entries stay links. */

#define CHANGES_MAX (UINT64_C(16) << 20)

typedef struct Change {
        char change;
        char *path;
} Change;

typedef struct Changes {
        GArray *list;
        uint64_t n;
} Changes;

static int on_change(char change, const char *path, void *userdata)
{
        Changes *ch = userdata;
        Change c = {.change = change, .path = strdup(path)};

        if (!c.path)
                return -ENOMEM;
        if (++ch->n > CHANGES_MAX) {
                free(c.path);
                return -E2BIG;
        }
        g_array_append_val(ch->list, c);
        return 0;
}

static void change_clear(void *p)
{
        free(((Change *) p)->path);
}

static bool has_prefix_dir(const char *path, const char *dir)
{
        size_t n = strlen(dir);
        return strncmp(path, dir, n) == 0 && path[n] == '/';
}

static int write_failure(struct archive *w, const char *path, char *err, size_t errlen)
{
        g_autofree char *p = text_escape(path, 200, ESCAPE_MESSAGE);
        int e = archive_errno(w);

        return errbuf_set(err, errlen,
                          e == ENOSPC || e == EDQUOT ? ENOSPC
                          : e > 0                    ? e
                                                     : EIO,
                          "Cannot write %s: %s", p, archive_error_string(w) ?: "failed");
}

static int write_entry_data(struct archive *w, int fd, const char *path, char *err, size_t errlen)
{
        _cleanup_free_ uint8_t *buf = malloc(1 << 20);

        if (!buf)
                return errbuf_set(err, errlen, ENOMEM, "Out of memory");
        for (;;) {
                ssize_t n = read(fd, buf, 1 << 20);
                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        return errbuf_set(err, errlen, errno, "Cannot read %s: %s", path, strerror(errno));
                }
                if (n == 0)
                        return 0;
                if (archive_write_data(w, buf, (size_t) n) < 0)
                        return write_failure(w, path, err, errlen);
        }
}

static int write_one(struct archive *w, struct archive *disk, struct archive_entry_linkresolver *lr, const char *path,
                     char *err, size_t errlen)
{
        _cleanup_(archive_entry_freep) struct archive_entry *e = archive_entry_new();
        struct archive_entry *sparse = NULL;
        _cleanup_close_ int fd = -1;
        struct stat st;

        if (!e)
                return errbuf_set(err, errlen, ENOMEM, "Out of memory");
        if (fstatat(AT_FDCWD, path, &st, AT_SYMLINK_NOFOLLOW) < 0)
                return errbuf_set(err, errlen, errno, "Cannot read %s: %s", path, strerror(errno));
        if (S_ISREG(st.st_mode) || S_ISDIR(st.st_mode)) {
                fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
                if (fd < 0)
                        return errbuf_set(err, errlen, errno, "Cannot open %s: %s", path, strerror(errno));
        }
        archive_entry_copy_sourcepath(e, path);
        archive_entry_copy_pathname(e, path);
        if (archive_read_disk_entry_from_file(disk, e, fd, &st) < ARCHIVE_WARN)
                return errbuf_set(err, errlen, EIO, "Cannot read %s: %s", path, archive_error_string(disk));
        archive_entry_copy_pathname(e, path);

        archive_entry_linkify(lr, &e, &sparse);
        if (!e)
                return 0; /* held back until its last link */
        if (archive_write_header(w, e) < ARCHIVE_WARN)
                return write_failure(w, path, err, errlen);
        if (S_ISREG(st.st_mode) && archive_entry_size(e) > 0) {
                int k = write_entry_data(w, fd, path, err, errlen);
                if (k < 0)
                        return k;
        }
        return 0;
}

int oci_delta_write(JobChild *c, int base_fd, int image_fd, int out_fd, bool zstd, char *err, size_t errlen)
{
        _cleanup_(archive_write_freep) struct archive *w = archive_write_new();
        _cleanup_(archive_read_freep) struct archive *disk = archive_read_disk_new();
        g_autoptr(GArray) list = g_array_new(false, false, sizeof(Change));
        g_autoptr(GPtrArray) deleted = g_ptr_array_new();
        struct archive_entry_linkresolver *lr = NULL;
        Changes ch = {.list = list};
        uint64_t n_whiteouts = 0, n_entries = 0;
        int k;

        g_array_set_clear_func(list, change_clear);
        if (!w || !disk)
                return errbuf_set(err, errlen, ENOMEM, "Out of memory");
        k = btrfs_diff(base_fd, image_fd, on_change, &ch);
        if (k < 0)
                return errbuf_set(err, errlen, -k, "Cannot tell what changed against the template: %s", strerror(-k));

        if (archive_write_set_format_pax(w) != ARCHIVE_OK ||
            archive_write_set_format_option(w, "pax", "hdrcharset", "BINARY") != ARCHIVE_OK ||
            (zstd ? archive_write_add_filter_zstd(w) : archive_write_add_filter_gzip(w)) != ARCHIVE_OK ||
            archive_write_set_bytes_in_last_block(w, 1) != ARCHIVE_OK || archive_write_open_fd(w, out_fd) != ARCHIVE_OK)
                return errbuf_set(err, errlen, EIO, "Cannot start the layer: %s", archive_error_string(w));
        lr = archive_entry_linkresolver_new();
        if (!lr)
                return errbuf_set(err, errlen, ENOMEM, "Out of memory");
        archive_entry_linkresolver_set_strategy(lr, archive_format(w));
        if (fchdir(image_fd) < 0) {
                archive_entry_linkresolver_free(lr);
                return errbuf_set(err, errlen, errno, "Cannot enter the image: %s", strerror(errno));
        }

        /* Whiteouts first: the topmost of each removed tree. The list is in path order, so a
         * removed directory comes before what was in it. */
        for (guint i = 0; i < list->len && k >= 0; i++) {
                Change *x = &g_array_index(list, Change, i);
                bool covered = false;
                if (x->change != 'D')
                        continue;
                for (guint j = 0; j < deleted->len && !covered; j++)
                        covered = has_prefix_dir(x->path, deleted->pdata[j]);
                if (covered)
                        continue;
                g_ptr_array_add(deleted, x->path);

                _cleanup_(archive_entry_freep) struct archive_entry *e = archive_entry_new();
                const char *slash = strrchr(x->path, '/');
                g_autofree char *name =
                        slash ? g_strdup_printf("%.*s/.wh.%s", (int) (slash - x->path), x->path, slash + 1)
                              : g_strdup_printf(".wh.%s", x->path);
                archive_entry_copy_pathname(e, name);
                archive_entry_set_filetype(e, AE_IFREG);
                archive_entry_set_perm(e, 0644);
                archive_entry_set_size(e, 0);
                if (archive_write_header(w, e) < ARCHIVE_WARN)
                        k = write_failure(w, name, err, errlen);
                n_whiteouts++;
        }
        for (guint i = 0; i < list->len && k >= 0; i++) {
                Change *x = &g_array_index(list, Change, i);
                if (x->change == 'D')
                        continue;
                k = write_one(w, disk, lr, x->path, err, errlen);
                n_entries++;
        }
        /* The links held back whose other names were not among the changes. */
        while (k >= 0) {
                struct archive_entry *e = NULL, *sparse = NULL;
                archive_entry_linkify(lr, &e, &sparse);
                if (!e)
                        break;
                const char *path = archive_entry_sourcepath(e) ?: archive_entry_pathname(e);
                if (archive_write_header(w, e) < ARCHIVE_WARN)
                        k = write_failure(w, path, err, errlen);
                else if (archive_entry_size(e) > 0) {
                        _cleanup_close_ int fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
                        k = fd < 0 ? errbuf_set(err, errlen, errno, "Cannot open %s: %s", path, strerror(errno))
                                   : write_entry_data(w, fd, path, err, errlen);
                }
                archive_entry_free(e);
        }
        archive_entry_linkresolver_free(lr);
        if (k < 0)
                return k;
        if (archive_write_close(w) != ARCHIVE_OK)
                return write_failure(w, "the layer", err, errlen);
        job_child_log(c, LOG_LEVEL_INFO, "The clone's own layer: %" PRIu64 " entries, %" PRIu64 " whiteouts", n_entries,
                      n_whiteouts);
        return 0;
}
