/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <dirent.h>
#include <fcntl.h>
#include <limits.h>
#include <locale.h>
#include <poll.h>
#include <linux/fiemap.h>
#include <linux/fs.h>
#include <linux/openat2.h>
#include <sched.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>

#include <glib.h>

#include "archive-util.h"
#include "escape.h"
#include "names.h"

#define READ_BUFFER_SIZE (256 * 1024)
/* What the export hands write(2) at a time. libarchive's default is a tape's 10 KiB: 24,000 writes
 * for a 230 MB tree, and on btrfs each write costs a space reservation and an extent-state update
 * besides its copy; that was half the export's CPU. 1 MiB makes them 240. */
#define EXPORT_BLOCK_SIZE (1024 * 1024)
#define ZERO_BUFFER_SIZE (1024 * 1024)
/* How many steps the holes of an image's files may take in one export (see Holes below): a
 * fraction of a second. With steps of 2 GiB that is 4 PiB of holes, far more than any sparse disk
 * image or database in a container holds; but off_t lets a file claim 8 EiB, which would take
 * hours. */
#define EXPORT_HOLE_STEPS_MAX (UINT64_C(1) << 21)

/* Levels chosen against importd's xz (preset 6, one thread). zstd 9 (on all CPUs): 1.245x xz's size
 * on usr/bin + usr/lib/x86_64-linux-gnu of a bootable bookworm minbase (73 MiB of mostly binaries)
 * and 1.10x on the whole tree (223 MiB), with 2.1 s of CPU for the 73 MiB where xz takes 54
 * (bench/export-disk). zstd 7 was 1.285x there; 10 gains 0.5 % for 50 % more time; 11 and up cost
 * 2-20x the time for another 1 %. libarchive 3.6 offers no long-distance matching or window size,
 * which would do better (zstd --long=27 -9: 1.23x). xz 3 takes 0.27x the time of xz 6 at 1.12x
 * its size. Both run on all CPUs. */
#define ZSTD_LEVEL "9"
#define XZ_LEVEL "3"

/* Numeric owners (no name lookups are set up), everything export keeps, and nothing written
 * through a symlink or outside the working directory. */
#define EXTRACT_FLAGS                                                                                                  \
        (ARCHIVE_EXTRACT_OWNER | ARCHIVE_EXTRACT_PERM | ARCHIVE_EXTRACT_TIME | ARCHIVE_EXTRACT_XATTR |                 \
         ARCHIVE_EXTRACT_ACL | ARCHIVE_EXTRACT_FFLAGS | ARCHIVE_EXTRACT_SECURE_SYMLINKS |                              \
         ARCHIVE_EXTRACT_SECURE_NODOTDOT | ARCHIVE_EXTRACT_SECURE_NOABSOLUTEPATHS)

/* An entry's name as it may appear in a message: escaped, and cut if very long (the start of a deep
 * path still says where it is). */
static char *shown(const char *s)
{
        return text_escape(s ?: "", 200, ESCAPE_MESSAGE);
}

/* ---- checks on names ---- */

static bool component_is(const char *p, size_t n, const char *what)
{
        return n == strlen(what) && memcmp(p, what, n) == 0;
}

const char *archive_path_unsafe_reason(const char *path)
{
        if (!path || path[0] == '\0')
                return "has an empty name";
        if (path[0] == '/')
                return "is an absolute path";
        for (const char *p = path; *p;) {
                size_t n = strcspn(p, "/");
                if (component_is(p, n, ".."))
                        return "has a \"..\" component";
                p += n;
                p += strspn(p, "/");
        }
        return NULL;
}

const char *archive_symlink_unsafe_reason(const char *path, const char *target)
{
        size_t depth = 0;

        if (!target || target[0] == '\0')
                return "is a symlink with an empty target";
        if (target[0] == '/')
                return NULL;

        /* The directory the link is in, counted in components below the root. */
        for (const char *p = path; *p;) {
                size_t n = strcspn(p, "/");
                if (n > 0 && !component_is(p, n, "."))
                        depth++;
                p += n;
                p += strspn(p, "/");
        }
        if (depth > 0)
                depth--;

        for (const char *p = target; *p;) {
                size_t n = strcspn(p, "/");
                if (component_is(p, n, "..")) {
                        if (depth == 0)
                                return "is a symlink that leads out of the image";
                        depth--;
                } else if (n > 0 && !component_is(p, n, "."))
                        depth++;
                p += n;
                p += strspn(p, "/");
        }
        return NULL;
}

static bool path_is_root(const char *path)
{
        for (const char *p = path; *p;) {
                size_t n = strcspn(p, "/");
                if (n > 0 && !component_is(p, n, "."))
                        return false;
                p += n;
                p += strspn(p, "/");
        }
        return true;
}

/* ---- progress ---- */

typedef struct Progress {
        JobChild *c;
        uint64_t total;              /* 0: unknown, nothing is reported */
        const TreeTotal *live_total; /* if set, the total is read from here: it may come later */
        uint64_t done;
        uint64_t next_usec;
} Progress;

static void progress_add(Progress *p, uint64_t n)
{
        uint64_t now;
        double v;

        p->done += n;
        if (p->live_total)
                p->total = atomic_load_explicit(&p->live_total->bytes, memory_order_relaxed);
        if (p->total == 0)
                return;
        now = now_usec(CLOCK_MONOTONIC);
        if (now < p->next_usec)
                return;
        p->next_usec = now + JOB_PROGRESS_INTERVAL_USEC;
        /* The total is an estimate: 1 is only said when the job is done. */
        v = (double) p->done / (double) p->total;
        job_child_progress(p->c, v > 0.99 ? 0.99 : v);
}

/* ---- export ---- */

/* Where the archive goes. Into a regular file, write(2) is a third of the export's CPU (the copy
 * into the page cache, btrfs's space reservations): a thread of its own does it there, on the
 * other CPU, while the walk reads on, through SINK_SLOTS blocks. Into a pipe or socket the writes
 * stay in line, so that progress never runs ahead of what the reader took. */
#define SINK_SLOTS 2

typedef struct Sink {
        int fd;
        _Atomic int error; /* errno of the write that failed */
        bool threaded;
        pthread_t thread;
        pthread_mutex_t lock;
        pthread_cond_t changed;
        uint8_t *slot[SINK_SLOTS];
        size_t len[SINK_SLOTS];
        unsigned head, filled; /* the next slot to write; how many are waiting */
        bool closing;
} Sink;

static int wait_fd(int fd, short events)
{
        struct pollfd pfd = {.fd = fd, .events = events};

        /* The caller may have handed us a non-blocking fd. */
        if (poll(&pfd, 1, -1) < 0 && errno != EINTR)
                return -errno;
        return 0;
}

/* 0 or a positive errno. */
static int write_all(int fd, const uint8_t *p, size_t left)
{
        while (left > 0) {
                ssize_t k = write(fd, p, left);
                if (k < 0) {
                        if (errno == EINTR)
                                continue;
                        if (errno == EAGAIN && wait_fd(fd, POLLOUT) >= 0)
                                continue;
                        return errno;
                }
                p += k;
                left -= (size_t) k;
        }
        return 0;
}

static void *sink_thread(void *userdata)
{
        Sink *s = userdata;

        pthread_mutex_lock(&s->lock);
        for (;;) {
                unsigned i;
                int e = 0;

                while (s->filled == 0 && !s->closing)
                        pthread_cond_wait(&s->changed, &s->lock);
                if (s->filled == 0)
                        break;
                i = s->head;
                if (!s->error) {
                        pthread_mutex_unlock(&s->lock);
                        e = write_all(s->fd, s->slot[i], s->len[i]);
                        pthread_mutex_lock(&s->lock);
                }
                if (e && !s->error)
                        s->error = e;
                s->head = (i + 1) % SINK_SLOTS;
                s->filled--;
                pthread_cond_broadcast(&s->changed);
        }
        pthread_mutex_unlock(&s->lock);
        return NULL;
}

static void sink_start(Sink *s, int fd, bool threaded)
{
        struct stat st;

        *s = (Sink) {.fd = fd};
        if (!threaded || fstat(fd, &st) < 0 || !S_ISREG(st.st_mode))
                return;
        for (unsigned i = 0; i < SINK_SLOTS; i++)
                if (!(s->slot[i] = malloc(EXPORT_BLOCK_SIZE)))
                        goto fail;
        pthread_mutex_init(&s->lock, NULL);
        pthread_cond_init(&s->changed, NULL);
        if (pthread_create(&s->thread, NULL, sink_thread, s) != 0) {
                pthread_cond_destroy(&s->changed);
                pthread_mutex_destroy(&s->lock);
                goto fail;
        }
        s->threaded = true;
        return;
fail:
        for (unsigned i = 0; i < SINK_SLOTS; i++)
                free(TAKE_PTR(s->slot[i]));
}

/* Wait until every block is written and end the thread; the first error, or 0. */
static int sink_stop(Sink *s)
{
        int e;

        if (!s->threaded)
                return s->error;
        pthread_mutex_lock(&s->lock);
        s->closing = true;
        pthread_cond_broadcast(&s->changed);
        pthread_mutex_unlock(&s->lock);
        (void) pthread_join(s->thread, NULL);
        s->threaded = false;
        pthread_cond_destroy(&s->changed);
        pthread_mutex_destroy(&s->lock);
        for (unsigned i = 0; i < SINK_SLOTS; i++)
                free(TAKE_PTR(s->slot[i]));
        e = s->error;
        return e;
}

static void sink_stopp(Sink *s)
{
        (void) sink_stop(s);
}

static la_ssize_t sink_write(struct archive *a, void *userdata, const void *buf, size_t n)
{
        Sink *s = userdata;
        const uint8_t *p = buf;
        int e;

        if (!s->threaded) {
                e = write_all(s->fd, p, n);
                if (e) {
                        s->error = e;
                        archive_set_error(a, e, "Cannot write the archive: %s", strerror(e));
                        return -1;
                }
                return (la_ssize_t) n;
        }
        for (size_t done = 0; done < n;) {
                size_t k = MIN(n - done, (size_t) EXPORT_BLOCK_SIZE);
                unsigned i;

                pthread_mutex_lock(&s->lock);
                while (s->filled == SINK_SLOTS && !s->error)
                        pthread_cond_wait(&s->changed, &s->lock);
                e = s->error;
                i = (s->head + s->filled) % SINK_SLOTS;
                pthread_mutex_unlock(&s->lock);
                if (e) {
                        archive_set_error(a, e, "Cannot write the archive: %s", strerror(e));
                        return -1;
                }
                /* Slot i is free: the thread only reads the filled ones. */
                memcpy(s->slot[i], p + done, k);
                pthread_mutex_lock(&s->lock);
                s->len[i] = k;
                s->filled++;
                pthread_cond_broadcast(&s->changed);
                pthread_mutex_unlock(&s->lock);
                done += k;
        }
        return (la_ssize_t) n;
}

static int sink_close(struct archive *a, void *userdata)
{
        Sink *s = userdata;
        int e = sink_stop(s);

        if (e) {
                archive_set_error(a, e, "Cannot write the archive: %s", strerror(e));
                return ARCHIVE_FATAL;
        }
        return ARCHIVE_OK;
}

static int n_cpus(void)
{
        cpu_set_t set;

        if (sched_getaffinity(0, sizeof set, &set) == 0 && CPU_COUNT(&set) > 0)
                return CPU_COUNT(&set);
        return 1;
}

static int set_filter(struct archive *w, ExportFormat format, char *err, size_t errlen)
{
        char threads[16];
        int r;

        snprintf(threads, sizeof threads, "%d", n_cpus());
        switch (format) {
        case EXPORT_ZSTD:
                r = archive_write_add_filter_zstd(w);
                if (r == ARCHIVE_OK)
                        r = archive_write_set_filter_option(w, NULL, "compression-level", ZSTD_LEVEL);
                if (r == ARCHIVE_OK)
                        (void) archive_write_set_filter_option(w, NULL, "threads", threads);
                break;
        case EXPORT_XZ:
                r = archive_write_add_filter_xz(w);
                if (r == ARCHIVE_OK)
                        r = archive_write_set_filter_option(w, NULL, "compression-level", XZ_LEVEL);
                if (r == ARCHIVE_OK)
                        (void) archive_write_set_filter_option(w, NULL, "threads", threads);
                break;
        case EXPORT_GZIP:
                r = archive_write_add_filter_gzip(w);
                break;
        case EXPORT_BZIP2:
                r = archive_write_add_filter_bzip2(w);
                break;
        case EXPORT_UNCOMPRESSED:
                r = archive_write_add_filter_none(w);
                break;
        default:
                return errbuf_set(err, errlen, EPROTONOSUPPORT, "Unknown export format");
        }
        if (r != ARCHIVE_OK)
                return errbuf_set(err, errlen, EPROTONOSUPPORT, "Cannot compress with %s: %s",
                                  export_format_to_string(format), archive_error_string(w) ?: "not built in");
        return 0;
}

static int export_write_failure(struct archive *w, const Sink *sink, char *err, size_t errlen)
{
        int e = sink->error ?: archive_errno(w);

        if (e == EPIPE || e == ECONNRESET)
                return errbuf_set(err, errlen, EPIPE, "The reader closed the stream");
        if (e == ENOSPC || e == EDQUOT)
                return errbuf_set(err, errlen, ENOSPC, "No space left where the archive is written");
        return errbuf_set(err, errlen, e > 0 ? e : EIO, "Cannot write the archive: %s",
                          archive_error_string(w) ?: "unknown error");
}

/* Zeros to hand the tar writer for a hole. It keeps holes as holes (its sparse map says where they
 * are) and only counts down the zeros it is given, but takes at most INT_MAX bytes a call: a
 * read-only mapping of that many zero pages lets a hole of a TiB go by in 512 calls instead of a
 * million. Nothing touches the pages unless the writer copies them; then they read as zeros, as
 * the hole does. Without the mapping, a static buffer of zeros does the same in smaller steps. */
typedef struct Holes {
        const uint8_t *zeros;
        size_t size;
        bool mapped;
        uint64_t total; /* fed so far in this export */
        uint64_t max;   /* what they may add up to: EXPORT_HOLE_STEPS_MAX steps */
} Holes;

static void holes_init(Holes *h)
{
        static const uint8_t zeros[ZERO_BUFFER_SIZE];
        size_t size = (size_t) INT_MAX & ~((size_t) 0xfffff);
        void *p = mmap(NULL, size, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);

        if (p != MAP_FAILED)
                *h = (Holes) {.zeros = p, .size = size, .mapped = true};
        else
                *h = (Holes) {.zeros = zeros, .size = sizeof zeros};
        h->max = (uint64_t) h->size * EXPORT_HOLE_STEPS_MAX;
}

static void holes_done(Holes *h)
{
        if (h->mapped)
                (void) munmap((void *) h->zeros, h->size);
        h->mapped = false;
}

static int export_copy_data(struct archive *disk, struct archive *w, const Sink *sink, Progress *progress, Holes *holes,
                            struct archive_entry *e, char *err, size_t errlen)
{
        const char *path = archive_entry_pathname(e);
        bool fed = false;
        int64_t pos = 0;

        for (;;) {
                const void *buf;
                size_t size;
                int64_t offset;
                int r = archive_read_data_block(disk, &buf, &size, &offset);

                if (r == ARCHIVE_EOF) {
                        /* The writer puts out a sparse file's map on its first call; a file that is
                         * all hole has had none yet. */
                        if (!fed && archive_write_data(w, holes->zeros, 0) < 0)
                                return export_write_failure(w, sink, err, errlen);
                        return 0;
                }
                if (r != ARCHIVE_OK) {
                        g_autofree char *p = shown(path);
                        int ae = archive_errno(disk);
                        return errbuf_set(err, errlen, ae > 0 ? ae : EIO, "Cannot read %s of the image: %s", p,
                                          archive_error_string(disk) ?: "unknown error");
                }
                /* A hole at the end (the reader says it as an empty block) costs nothing: the
                 * writer ends the entry without being fed. Holes before data are fed, and what
                 * that may cost is bounded. */
                if (size == 0)
                        continue;
                if (offset > pos) {
                        holes->total += (uint64_t) (offset - pos);
                        if (holes->total > holes->max) {
                                g_autofree char *p = shown(path);
                                return errbuf_set(err, errlen, EOPNOTSUPP,
                                                  "The image's files have more than %" PRIu64
                                                  " TiB of holes in all (%s is %" PRIi64 " bytes long)",
                                                  holes->max >> 40, p, archive_entry_size(e));
                        }
                }
                while (pos < offset) {
                        size_t n = (size_t) MIN((int64_t) holes->size, offset - pos);
                        la_ssize_t k = archive_write_data(w, holes->zeros, n);
                        if (k <= 0)
                                return export_write_failure(w, sink, err, errlen);
                        pos += k;
                }
                for (size_t done = 0; done < size;) {
                        la_ssize_t k = archive_write_data(w, (const uint8_t *) buf + done, size - done);
                        if (k <= 0)
                                return export_write_failure(w, sink, err, errlen);
                        done += (size_t) k;
                }
                fed = true;
                pos += (int64_t) size;
                progress_add(progress, size);
        }
}

/* ---- reading a snapshot's data through the live image ----
 *
 * A writable image is exported from a read-only snapshot, for one instant of it. But the snapshot's
 * files are new inodes: none of their data is in the page cache, and reading them cold made a
 * writable image's export take twice as long as a read-only one's. Their data extents are the live image's, though,
 * until the live file is written to: btrfs must copy a shared extent on write (even for a NOCOW file), so a live file
 * whose extent map still equals the snapshot's holds the snapshot's data. A chunk of a big file is therefore read from
 * the live file's (likely cached) pages, then the live file is flushed (FIEMAP_FLAG_SYNC: a page changed before or
 * during the read is written, to new extents) and its extent map over the chunk compared with the snapshot's: the same,
 * the chunk is the snapshot's; not, the chunk and the rest of the file are read from the snapshot. Both files are
 * opened beneath their trees without following a symlink or leaving the file system, and must be the same regular file
 * (inode). A writer that changes the live file and then clones the snapshot's very extents back into it (FICLONE from a
 * copy it kept) could pass off what it wrote in between: only root in the image can, and only with the image's own
 * data. */

/* Files up to btrfs's max_inline (2048 bytes by default) keep their data in the metadata, which the
 * snapshot shares and which is cached: they are read from the snapshot. */
#define LIVE_READ_MIN 2049
#define LIVE_CHUNK (4 * 1024 * 1024)
#define LIVE_EXTENTS 32

typedef struct LiveTree {
        int live_fd; /* borrowed; -1: not in use */
        int snap_fd; /* borrowed */
        dev_t live_dev, snap_dev;
        uint8_t *buf; /* LIVE_CHUNK bytes */
        uint64_t live_bytes, snap_bytes;
} LiveTree;

typedef struct ExtentMap {
        struct fiemap fm;
        struct fiemap_extent extents[LIVE_EXTENTS];
} ExtentMap;

/* Open @path beneath @dir_fd for reading if it is a regular file, inode @ino on @dev (the tree's
 * own subvolume, not one nested in it), without following a symlink or leaving the file system;
 * fills @st. In a live image anything may be at that path by now: with @live it is looked at
 * through O_PATH first, so that no device node or FIFO is ever opened (an open alone can do things
 * to a device), then reopened through /proc as the inode it is. A read-only snapshot holds still. */
static int open_regular_beneath(int dir_fd, const char *path, bool live, ino_t ino, dev_t dev, struct stat *st)
{
        struct open_how how = {
                .flags = (live ? O_PATH : O_RDONLY | O_NONBLOCK | O_NOCTTY) | O_NOFOLLOW | O_CLOEXEC,
                .resolve = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS | RESOLVE_NO_XDEV,
        };
        _cleanup_close_ int p = openat2_retry(dir_fd, path, &how);
        char proc[64];
        int fd;

        if (p < 0 || fstat(p, st) < 0)
                return -errno;
        if (!S_ISREG(st->st_mode) || st->st_ino != ino || st->st_dev != dev)
                return -ESTALE;
        if (!live)
                return TAKE_FD(p);
        snprintf(proc, sizeof proc, "/proc/self/fd/%d", p);
        fd = open(proc, O_RDONLY | O_NOCTTY | O_CLOEXEC);
        return fd < 0 ? -errno : fd;
}

/* The extents over [@start, @start + @len) of @fd, flushed first if @sync; false if they cannot be
 * told (an error, or more than fit: then the caller does not rely on them). */
static bool extent_map(int fd, uint64_t start, uint64_t len, bool sync, ExtentMap *m)
{
        memset(m, 0, sizeof *m);
        m->fm.fm_start = start;
        m->fm.fm_length = len;
        m->fm.fm_flags = sync ? FIEMAP_FLAG_SYNC : 0;
        m->fm.fm_extent_count = LIVE_EXTENTS;
        if (ioctl(fd, FS_IOC_FIEMAP, &m->fm) < 0)
                return false;
        return m->fm.fm_mapped_extents < LIVE_EXTENTS;
}

static bool extent_maps_equal(const ExtentMap *a, const ExtentMap *b)
{
        /* Whether an extent counts as shared is the one thing that may differ between the two. */
        const uint32_t ignored = FIEMAP_EXTENT_SHARED;

        if (a->fm.fm_mapped_extents != b->fm.fm_mapped_extents)
                return false;
        for (uint32_t i = 0; i < a->fm.fm_mapped_extents; i++) {
                const struct fiemap_extent *x = &a->extents[i], *y = &b->extents[i];
                if (x->fe_logical != y->fe_logical || x->fe_physical != y->fe_physical ||
                    x->fe_length != y->fe_length || (x->fe_flags & ~ignored) != (y->fe_flags & ~ignored))
                        return false;
                if (x->fe_flags & (FIEMAP_EXTENT_UNKNOWN | FIEMAP_EXTENT_DELALLOC))
                        return false;
        }
        return true;
}

static ssize_t pread_full(int fd, uint8_t *buf, size_t n, uint64_t offset)
{
        size_t done = 0;

        while (done < n) {
                ssize_t k = pread(fd, buf + done, n - done, (off_t) (offset + done));
                if (k < 0) {
                        if (errno == EINTR)
                                continue;
                        return -errno;
                }
                if (k == 0)
                        break;
                done += (size_t) k;
        }
        return (ssize_t) done;
}

/* Export the data of @e, a regular file of the snapshot, as described above. Returns 1 if done, 0
 * if the file is not one to read this way (the caller reads it from the snapshot as any other), or
 * a negative errno with @err set. */
static int export_copy_data_live(LiveTree *lt, struct archive *w, const Sink *sink, Progress *progress,
                                 struct archive_entry *e, char *err, size_t errlen)
{
        const char *path = archive_entry_pathname(e);
        int64_t size = archive_entry_size(e);
        _cleanup_close_ int snap = -1, live = -1;
        struct stat ss, ls;
        bool from_live = true;

        if (lt->live_fd < 0 || !path || size < LIVE_READ_MIN || archive_entry_sparse_count(e) > 0)
                return 0;
        snap = open_regular_beneath(lt->snap_fd, path, false, (ino_t) archive_entry_ino64(e), lt->snap_dev, &ss);
        if (snap < 0 || ss.st_size != size)
                return 0;
        live = open_regular_beneath(lt->live_fd, path, true, ss.st_ino, lt->live_dev, &ls);
        if (live < 0 || ls.st_size != ss.st_size)
                return 0;

        for (uint64_t off = 0; off < (uint64_t) size;) {
                size_t n = (size_t) MIN((uint64_t) LIVE_CHUNK, (uint64_t) size - off);
                ExtentMap sm, lm;
                ssize_t k = -1;

                if (from_live) {
                        k = pread_full(live, lt->buf, n, off);
                        if (k != (ssize_t) n || !extent_map(snap, off, n, false, &sm) ||
                            !extent_map(live, off, n, true, &lm) || !extent_maps_equal(&sm, &lm))
                                from_live = false;
                }
                if (!from_live) {
                        k = pread_full(snap, lt->buf, n, off);
                        if (k < 0) {
                                g_autofree char *p = shown(path);
                                return errbuf_set(err, errlen, (int) -k, "Cannot read %s of the image: %s", p,
                                                  strerror((int) -k));
                        }
                        if (k != (ssize_t) n) {
                                g_autofree char *p = shown(path);
                                return errbuf_set(err, errlen, EIO, "Cannot read %s of the image: it ended early", p);
                        }
                        lt->snap_bytes += n;
                } else
                        lt->live_bytes += n;
                for (size_t done = 0; done < n;) {
                        la_ssize_t w_k = archive_write_data(w, lt->buf + done, n - done);
                        if (w_k <= 0)
                                return export_write_failure(w, sink, err, errlen);
                        done += (size_t) w_k;
                }
                off += n;
                progress_add(progress, n);
        }
        return 1;
}

static int export_entry(struct archive *disk, struct archive *w, struct archive_entry *e, bool current,
                        const Sink *sink, Progress *progress, Holes *holes, LiveTree *lt, char *err, size_t errlen)
{
        int r = archive_write_header(w, e);

        if (r == ARCHIVE_WARN)
                job_child_log(progress->c, LOG_LEVEL_WARNING, "%s: %s", archive_entry_pathname(e),
                              archive_error_string(w));
        else if (r != ARCHIVE_OK) {
                if (r == ARCHIVE_FATAL)
                        return export_write_failure(w, sink, err, errlen);
                g_autofree char *p = shown(archive_entry_pathname(e));
                return errbuf_set(err, errlen, EIO, "Cannot archive %s: %s", p, archive_error_string(w));
        }
        /* Only the entry the disk reader is on has its data at hand; a hard link carries none. */
        if (current && archive_entry_size(e) > 0) {
                r = export_copy_data_live(lt, w, sink, progress, e, err, errlen);
                if (r == 0)
                        r = export_copy_data(disk, w, sink, progress, holes, e, err, errlen);
                if (r < 0)
                        return r;
        }
        r = archive_write_finish_entry(w);
        if (r < ARCHIVE_WARN)
                return export_write_failure(w, sink, err, errlen);
        return 0;
}

static void linkresolver_freep(struct archive_entry_linkresolver **r)
{
        if (*r)
                archive_entry_linkresolver_free(*r);
}

int archive_write_tree(JobChild *c, int tree_fd, int live_fd, int out_fd, ExportFormat format, const TreeTotal *total,
                       char *err, size_t errlen)
{
        _cleanup_(archive_read_freep) struct archive *disk = archive_read_disk_new();
        _cleanup_(archive_write_freep) struct archive *w = archive_write_new();
        /* Declared after w: its thread is ended before w is freed. */
        _cleanup_(sink_stopp) Sink sink = {.fd = -1};
        _cleanup_(linkresolver_freep) struct archive_entry_linkresolver *resolver = archive_entry_linkresolver_new();
        _cleanup_(archive_entry_freep) struct archive_entry *e = NULL;
        _cleanup_(holes_done) Holes holes = {};
        _cleanup_free_ uint8_t *live_buf = live_fd >= 0 ? malloc(LIVE_CHUNK) : NULL;
        LiveTree lt = {.live_fd = live_buf ? live_fd : -1, .snap_fd = tree_fd, .buf = live_buf};
        Progress progress = {.c = c, .live_total = total};
        struct stat st;
        int r, k;

        holes_init(&holes);
        if (lt.live_fd >= 0) {
                if (fstat(lt.live_fd, &st) < 0)
                        lt.live_fd = -1;
                lt.live_dev = st.st_dev;
                if (fstat(lt.snap_fd, &st) < 0)
                        lt.live_fd = -1;
                lt.snap_dev = st.st_dev;
        }

        if (!disk || !w || !resolver)
                return errbuf_set(err, errlen, ENOMEM, "Out of memory");

        /* Full pax keeps mtimes to the nanosecond; atime and ctime are left out below. Names go
         * out as the bytes they are, whatever their encoding. */
        if (archive_write_set_format_pax(w) != ARCHIVE_OK ||
            archive_write_set_format_option(w, "pax", "hdrcharset", "BINARY") != ARCHIVE_OK)
                return errbuf_set(err, errlen, EIO, "Cannot set up the tar writer: %s", archive_error_string(w));
        k = set_filter(w, format, err, errlen);
        if (k < 0)
                return k;
        /* Padding after a compressed stream makes readers refuse it, and pipes are not tapes. */
        archive_write_set_bytes_per_block(w, EXPORT_BLOCK_SIZE);
        archive_write_set_bytes_in_last_block(w, 1);
        sink_start(&sink, out_fd, n_cpus() > 1);
        if (archive_write_open(w, &sink, NULL, sink_write, sink_close) != ARCHIVE_OK)
                return export_write_failure(w, &sink, err, errlen);
        archive_entry_linkresolver_set_strategy(resolver, archive_format(w));

        if (fchdir(tree_fd) < 0)
                return errbuf_set(err, errlen, errno, "Cannot enter the image: %s", strerror(errno));
        /* Physical: symlinks are archived as links, never followed. */
        archive_read_disk_set_symlink_physical(disk);
        archive_read_disk_set_behavior(disk, ARCHIVE_READDISK_NO_TRAVERSE_MOUNTS);
        if (archive_read_disk_open(disk, ".") != ARCHIVE_OK)
                return errbuf_set(err, errlen, archive_errno(disk) > 0 ? archive_errno(disk) : EIO,
                                  "Cannot read the image: %s", archive_error_string(disk));

        for (;;) {
                _cleanup_(archive_entry_freep) struct archive_entry *spare = NULL;
                bool current = true;

                archive_entry_free(e);
                e = archive_entry_new();
                if (!e)
                        return errbuf_set(err, errlen, ENOMEM, "Out of memory");
                r = archive_read_next_header2(disk, e);
                if (r == ARCHIVE_EOF)
                        break;
                if (r == ARCHIVE_FATAL) {
                        int ae = archive_errno(disk);
                        return errbuf_set(err, errlen, ae > 0 ? ae : EIO, "Cannot read the image: %s",
                                          archive_error_string(disk));
                }
                if (r != ARCHIVE_OK) {
                        /* Something vanished or could not be read fully: say so, go on. */
                        job_child_log(c, LOG_LEVEL_WARNING, "%s: %s", archive_entry_pathname(e) ?: "?",
                                      archive_error_string(disk));
                        if (r == ARCHIVE_FAILED)
                                continue;
                }
                (void) archive_read_disk_descend(disk);

                archive_entry_unset_atime(e);
                archive_entry_unset_ctime(e);
                archive_entry_unset_birthtime(e);
                if (archive_entry_filetype(e) != AE_IFREG)
                        archive_entry_set_size(e, 0);

                archive_entry_linkify(resolver, &e, &spare);
                while (e) {
                        k = export_entry(disk, w, e, current, &sink, &progress, &holes, &lt, err, errlen);
                        if (k < 0)
                                return k;
                        archive_entry_free(e);
                        e = TAKE_PTR(spare);
                        current = false;
                }
        }

        /* Entries the resolver held back (none for tar, but that is its business). */
        for (;;) {
                struct archive_entry *spare = NULL;

                archive_entry_free(e);
                e = NULL;
                archive_entry_linkify(resolver, &e, &spare);
                if (!e)
                        break;
                k = export_entry(disk, w, e, false, &sink, &progress, &holes, &lt, err, errlen);
                if (spare)
                        archive_entry_free(spare);
                if (k < 0)
                        return k;
        }

        if (archive_write_close(w) != ARCHIVE_OK)
                return export_write_failure(w, &sink, err, errlen);
        if (lt.live_fd >= 0)
                job_child_log(c, LOG_LEVEL_DEBUG,
                              "Read %" PRIu64 " MiB of the snapshot's files through the live image, %" PRIu64
                              " MiB of them from the snapshot",
                              lt.live_bytes >> 20, lt.snap_bytes >> 20);
        return 0;
}

/* Add up the file data below the directory @name of @parent_fd, not leaving the file system @dev. */
static void count_dir(TreeTotal *t, int parent_fd, const char *name, dev_t dev, unsigned depth, uint64_t *sum)
{
        DIR *d = opendir_at(parent_fd, name);
        struct dirent *de;

        if (!d)
                return;
        while ((de = readdir(d)) && !atomic_load_explicit(&t->stop, memory_order_relaxed)) {
                struct stat st;

                if (de->d_type != DT_REG && de->d_type != DT_DIR && de->d_type != DT_UNKNOWN)
                        continue;
                if (dot_or_dot_dot(de->d_name))
                        continue;
                if (fstatat(dirfd(d), de->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0)
                        continue;
                if (S_ISREG(st.st_mode)) {
                        uint64_t allocated = (uint64_t) st.st_blocks * 512;
                        /* Holes are not read; small inline files count as their size. */
                        *sum += st.st_size > 0 && allocated > 0 ? MIN((uint64_t) st.st_size, allocated)
                                                                : (uint64_t) st.st_size;
                } else if (S_ISDIR(st.st_mode) && st.st_dev == dev && depth < TREE_COUNT_MAX_DEPTH)
                        count_dir(t, dirfd(d), de->d_name, dev, depth + 1, sum);
        }
        closedir(d);
}

static void *tree_total_thread(void *p)
{
        TreeTotal *t = p;
        uint64_t sum = 0;
        struct stat st;

        /* Progress of an export that ends within half a second shows nothing anyway, and on two
         * busy CPUs a walk beside it slows it down: only a longer one is counted. */
        for (unsigned i = 0; i < TREE_COUNT_DELAY_MSEC / 10 && !atomic_load(&t->stop); i++)
                (void) nanosleep(&(struct timespec) {.tv_nsec = 10 * 1000 * 1000}, NULL);

        if (!atomic_load(&t->stop) && fstat(t->tree_fd, &st) >= 0) {
                count_dir(t, t->tree_fd, ".", st.st_dev, 0, &sum);
                if (!atomic_load(&t->stop))
                        atomic_store(&t->bytes, sum);
        }
        return NULL;
}

int tree_total_start(TreeTotal *t, int tree_fd, uint64_t known)
{
        /* The walk opens directories of its own (opendir_at()): it moves no offset of the export's. */
        *t = (TreeTotal) {.tree_fd = tree_fd};
        if (known > 0 && known != UINT64_MAX) {
                atomic_store(&t->bytes, known);
                return 0;
        }
        if (pthread_create(&t->thread, NULL, tree_total_thread, t) != 0)
                return -EAGAIN;
        t->counting = true;
        return 0;
}

void tree_total_stop(TreeTotal *t)
{
        if (!t->counting)
                return;
        atomic_store(&t->stop, true);
        (void) pthread_join(t->thread, NULL);
        t->counting = false;
}

/* ---- import ---- */

typedef struct Source {
        int fd;
        bool eof;
        int error;
        Progress progress;
        uint8_t *buf;
} Source;

static la_ssize_t source_read(struct archive *a, void *userdata, const void **ret)
{
        Source *s = userdata;

        for (;;) {
                ssize_t n = read(s->fd, s->buf, READ_BUFFER_SIZE);
                if (n > 0) {
                        progress_add(&s->progress, (uint64_t) n);
                        *ret = s->buf;
                        return n;
                }
                if (n == 0) {
                        s->eof = true;
                        return 0;
                }
                if (errno == EINTR)
                        continue;
                if (errno == EAGAIN && wait_fd(s->fd, POLLIN) >= 0)
                        continue;
                s->error = errno;
                archive_set_error(a, errno, "Cannot read the archive: %s", strerror(errno));
                return -1;
        }
}

static int import_read_failure(struct archive *a, const Source *src, char *err, size_t errlen)
{
        if (src->error)
                return errbuf_set(err, errlen, src->error, "Cannot read the archive: %s", strerror(src->error));
        if (archive_errno(a) == ENOMEM)
                return errbuf_set(err, errlen, ENOMEM, "Out of memory");
        return errbuf_set(err, errlen, EBADMSG, "The archive is damaged or not a tar archive: %s",
                          archive_error_string(a) ?: "unreadable");
}

static int import_write_failure(struct archive *w, struct archive_entry *e, char *err, size_t errlen)
{
        g_autofree char *p = shown(archive_entry_pathname(e));
        int ae = archive_errno(w);

        switch (ae) {
        case ENOSPC:
        case EDQUOT:
                return errbuf_set(err, errlen, ENOSPC, "No space left for the image while writing %s", p);
        case EIO:
        case EROFS:
        case ENOMEM:
                return errbuf_set(err, errlen, ae, "Cannot write %s: %s", p, archive_error_string(w));
        default:
                /* libarchive's own refusals (a path through a symlink, a link to nowhere) land here. */
                return errbuf_set(err, errlen, EBADMSG, "Refusing the archive at entry %s: %s", p,
                                  archive_error_string(w) ?: "cannot be extracted");
        }
}

static int import_check_entry(struct archive_entry *e, char *err, size_t errlen)
{
        const char *path = archive_entry_pathname(e);
        const char *hardlink = archive_entry_hardlink(e);
        const char *why;

        if (!path)
                return errbuf_set(err, errlen, EBADMSG,
                                  "Refusing the archive: an entry has a name that cannot be read");
        why = archive_path_unsafe_reason(path);
        if (why) {
                g_autofree char *p = shown(path);
                return errbuf_set(err, errlen, EBADMSG, "Refusing the archive: entry \"%s\" %s", p, why);
        }
        if (hardlink) {
                why = archive_path_unsafe_reason(hardlink);
                if (why) {
                        g_autofree char *p = shown(path), *t = shown(hardlink);
                        return errbuf_set(err, errlen, EBADMSG,
                                          "Refusing the archive: entry \"%s\" is a hard link to \"%s\", which %s", p, t,
                                          why);
                }
                return 0;
        }
        switch (archive_entry_filetype(e)) {
        case AE_IFLNK:
                why = archive_symlink_unsafe_reason(path, archive_entry_symlink(e));
                if (why) {
                        g_autofree char *p = shown(path), *t = shown(archive_entry_symlink(e));
                        return errbuf_set(err, errlen, EBADMSG, "Refusing the archive: entry \"%s\" (-> \"%s\") %s", p,
                                          t, why);
                }
                return 0;
        case AE_IFREG:
        case AE_IFDIR:
        case AE_IFCHR:
        case AE_IFBLK:
        case AE_IFIFO:
                return 0;
        default: {
                g_autofree char *p = shown(path);
                return errbuf_set(err, errlen, EBADMSG,
                                  "Refusing the archive: entry \"%s\" has an unsupported file type", p);
        }
        }
}

int archive_entry_check_safe(struct archive_entry *e, char *err, size_t errlen)
{
        return import_check_entry(e, err, errlen);
}

static int import_copy_data(struct archive *a, struct archive *w, struct archive_entry *e, const Source *src, char *err,
                            size_t errlen)
{
        for (;;) {
                const void *buf;
                size_t size;
                int64_t offset;
                int r = archive_read_data_block(a, &buf, &size, &offset);

                if (r == ARCHIVE_EOF)
                        return 0;
                if (r != ARCHIVE_OK)
                        return import_read_failure(a, src, err, errlen);
                /* Any negative answer is a failure: libarchive reports a failed write(2), ENOSPC
                 * included, as ARCHIVE_WARN and carries on, leaving a hole where the data should be. */
                if (archive_write_data_block(w, buf, size, offset) < 0)
                        return import_write_failure(w, e, err, errlen);
        }
}

int archive_extract_stream(JobChild *c, int in_fd, uint64_t in_size, ExtractResult *result, char *err, size_t errlen)
{
        _cleanup_(archive_read_freep) struct archive *a = archive_read_new();
        _cleanup_(archive_write_freep) struct archive *w = archive_write_disk_new();
        _cleanup_free_ uint8_t *buf = malloc(READ_BUFFER_SIZE);
        Source src = {.fd = in_fd, .progress = {.c = c, .total = in_size}, .buf = buf};
        struct timespec root_times[2] = {{.tv_nsec = UTIME_OMIT}, {.tv_nsec = UTIME_OMIT}};
        int r, k;

        *result = (ExtractResult) {};
        if (!a || !w || !buf)
                return errbuf_set(err, errlen, ENOMEM, "Out of memory");

        /* UTF-8 names in pax headers then come out as the same bytes. (In a chroot the locale cannot
         * be loaded any more: callers that confine themselves set it first.) */
        (void) setlocale(LC_CTYPE, "C.UTF-8");

        /* Named one by one: "all" includes filters that run external programs. */
        archive_read_support_filter_gzip(a);
        archive_read_support_filter_bzip2(a);
        archive_read_support_filter_xz(a);
        archive_read_support_filter_lzma(a);
        archive_read_support_filter_lzip(a);
        archive_read_support_filter_zstd(a);
        archive_read_support_filter_lz4(a);
        archive_read_support_filter_compress(a);
        archive_read_support_format_tar(a);
        archive_write_disk_set_options(w, EXTRACT_FLAGS);

        if (archive_read_open(a, &src, NULL, source_read, NULL) != ARCHIVE_OK) {
                result->input_ended = src.eof;
                return import_read_failure(a, &src, err, errlen);
        }

        for (;;) {
                struct archive_entry *e;
                int64_t before = archive_filter_bytes(a, 0);

                r = archive_read_next_header(a, &e);
                result->input_ended = src.eof;
                if (r == ARCHIVE_EOF) {
                        /* libarchive takes a stream that stops between two entries for a whole archive;
                         * a complete one ends with a zero block, which it consumes. */
                        if (result->entries == 0)
                                return errbuf_set(err, errlen, EBADMSG, "The archive is empty or not a tar archive");
                        if (archive_filter_bytes(a, 0) - before < 512)
                                return errbuf_set(err, errlen, EBADMSG,
                                                  "The archive ends early: it stops after %" PRIu64
                                                  " entries, without an end-of-archive marker",
                                                  result->entries);
                        break;
                }
                if (r == ARCHIVE_WARN)
                        job_child_log(c, LOG_LEVEL_WARNING, "%s", archive_error_string(a));
                else if (r != ARCHIVE_OK)
                        return import_read_failure(a, &src, err, errlen);

                k = import_check_entry(e, err, errlen);
                if (k < 0)
                        return k;
                /* libarchive sets the times of an existing directory at once, and the root's then
                 * change with every entry made in it: they are set again at the end. */
                if (path_is_root(archive_entry_pathname(e)) && archive_entry_mtime_is_set(e)) {
                        root_times[1].tv_sec = archive_entry_mtime(e);
                        root_times[1].tv_nsec = archive_entry_mtime_nsec(e);
                }

                r = archive_write_header(w, e);
                if (r < ARCHIVE_WARN)
                        return import_write_failure(w, e, err, errlen);
                if (r == ARCHIVE_WARN)
                        job_child_log(c, LOG_LEVEL_WARNING, "%s: %s", archive_entry_pathname(e),
                                      archive_error_string(w));
                if (archive_entry_size(e) > 0) {
                        k = import_copy_data(a, w, e, &src, err, errlen);
                        result->input_ended = src.eof;
                        if (k < 0)
                                return k;
                }
                r = archive_write_finish_entry(w);
                if (r < ARCHIVE_WARN)
                        return import_write_failure(w, e, err, errlen);
                if (r == ARCHIVE_WARN)
                        job_child_log(c, LOG_LEVEL_WARNING, "%s: %s", archive_entry_pathname(e),
                                      archive_error_string(w));
                result->entries++;
        }

        /* Directory modes and times are set last, once nothing more is written into them. */
        r = archive_write_close(w);
        if (r < ARCHIVE_WARN) {
                int ae = archive_errno(w);
                return errbuf_set(err, errlen,
                                  ae == ENOSPC || ae == EDQUOT ? ENOSPC
                                  : ae > 0                     ? ae
                                                               : EIO,
                                  "Cannot finish the image: %s", archive_error_string(w));
        }
        if (root_times[1].tv_nsec != UTIME_OMIT && utimensat(AT_FDCWD, ".", root_times, 0) < 0)
                job_child_log(c, LOG_LEVEL_WARNING, "Cannot set the times of the image's root: %s", strerror(errno));
        result->input_ended = src.eof;

        /* Write-back errors (a full disk found late) show only here: the image is not complete until
         * its data is on disk. */
        {
                _cleanup_close_ int root = open(".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
                if (root < 0 || syncfs(root) < 0) {
                        int e = errno;
                        return errbuf_set(err, errlen, e == ENOSPC || e == EDQUOT ? ENOSPC : e,
                                          "Cannot write the image to disk: %s", strerror(e));
                }
        }
        return 0;
}

/* ---- layout ---- */

static bool has_entry(int dir_fd, const char *name)
{
        return faccessat(dir_fd, name, F_OK, AT_SYMLINK_NOFOLLOW) == 0;
}

static int single_entry(int dir_fd, char **ret)
{
        _cleanup_free_ char *name = NULL;
        DIR *d = opendir_at(dir_fd, ".");
        struct dirent *de;
        unsigned n = 0;

        if (!d)
                return -errno;
        while ((de = readdir(d)))
                if (!dot_or_dot_dot(de->d_name) && n++ == 0)
                        name = strdup(de->d_name);
        closedir(d);
        if (n != 1)
                return 0;
        if (!name)
                return -ENOMEM;
        *ret = TAKE_PTR(name);
        return 1;
}

static int move_children_up(int from_fd, int to_fd)
{
        DIR *d = opendir_at(from_fd, ".");
        struct dirent *de;
        int k = 0;

        if (!d)
                return -errno;
        while ((de = readdir(d)))
                if (!dot_or_dot_dot(de->d_name) &&
                    renameat2(from_fd, de->d_name, to_fd, de->d_name, RENAME_NOREPLACE) < 0) {
                        k = -errno;
                        break;
                }
        closedir(d);
        return k;
}

int tree_flatten_single_dir(int root_fd)
{
        _cleanup_free_ char *name = NULL;
        _cleanup_close_ int sub = -1;
        char hidden[64];
        struct stat st;
        int k;

        if (has_entry(root_fd, "etc") || has_entry(root_fd, "usr"))
                return 0;
        k = single_entry(root_fd, &name);
        if (k <= 0)
                return k;
        sub = openat(root_fd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (sub < 0)
                return 0; /* not a directory */
        if (!has_entry(sub, "etc") && !has_entry(sub, "usr"))
                return 0;
        if (fstat(sub, &st) < 0)
                return -errno;

        /* Out of the way first: the tree may hold an entry of the directory's own name. */
        snprintf(hidden, sizeof hidden, ".#stamp-flatten-");
        random_hex(hidden + strlen(hidden), 16);
        if (renameat2(root_fd, name, root_fd, hidden, RENAME_NOREPLACE) < 0)
                return -errno;
        k = move_children_up(sub, root_fd);
        if (k < 0)
                return k;
        if (unlinkat(root_fd, hidden, AT_REMOVEDIR) < 0)
                return -errno;

        /* The directory stood for the image's root: its owner, mode and times are the root's. */
        if (fchown(root_fd, st.st_uid, st.st_gid) < 0 || fchmod(root_fd, st.st_mode & 07777) < 0 ||
            futimens(root_fd, (const struct timespec[2]) {st.st_atim, st.st_mtim}) < 0)
                return -errno;
        return 1;
}
