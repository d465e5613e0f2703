/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* The benchmark's own btrfs helper, built by bench/run with cc against libbtrfsutil.
 *
 *   snap time SRC DST           one snapshot; prints the nanoseconds of the bare libbtrfsutil call
 *                               (the ioctl with its two opens), the floor a daemon's clone is held to
 *   snap many SRC DIR PREFIX N  N snapshots DIR/PREFIXNNNN of SRC (set-up for ListImages at scale)
 *   snap burst SRC DIR PREFIX T N
 *                               T threads making N snapshots each, at once; prints the nanoseconds
 *                               until all are made (the snapshot half of the concurrent floor)
 *   snap rm PATH...             deletes subvolumes (clean-up between runs; not timed)
 *   snap settle FS              syncs FS and waits until btrfs's cleaner has dropped every deleted
 *                               subvolume, so that it does not run into the next measurement
 *
 * A process of its own so the time is the call's, without a process spawn in it. */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <btrfsutil.h>

static long long now_ns(void)
{
        struct timespec ts;

        clock_gettime(CLOCK_MONOTONIC, &ts);
        return ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static int fail(const char *what, const char *path, enum btrfs_util_error e)
{
        fprintf(stderr, "snap: %s %s: %s (%s)\n", what, path, btrfs_util_strerror(e), strerror(errno));
        return EXIT_FAILURE;
}

typedef struct Burst {
        const char *src, *dir, *prefix;
        int thread, n;
        enum btrfs_util_error e;
} Burst;

static void *burst_thread(void *p)
{
        Burst *b = p;
        char path[4096];

        for (int i = 0; i < b->n && b->e == BTRFS_UTIL_OK; i++) {
                snprintf(path, sizeof path, "%s/%s%02d-%02d", b->dir, b->prefix, b->thread, i);
                b->e = btrfs_util_create_snapshot(b->src, path, 0, NULL, NULL);
        }
        return NULL;
}

int main(int argc, char *argv[])
{
        enum btrfs_util_error e;

        if (argc == 4 && strcmp(argv[1], "time") == 0) {
                long long t0 = now_ns(), t1;

                e = btrfs_util_create_snapshot(argv[2], argv[3], 0, NULL, NULL);
                t1 = now_ns();
                if (e != BTRFS_UTIL_OK)
                        return fail("cannot snapshot to", argv[3], e);
                printf("%lld\n", t1 - t0);
                return EXIT_SUCCESS;
        }
        if (argc == 6 && strcmp(argv[1], "many") == 0) {
                long n = strtol(argv[5], NULL, 10);
                char path[4096];

                for (long i = 0; i < n; i++) {
                        snprintf(path, sizeof path, "%s/%s%04ld", argv[3], argv[4], i);
                        e = btrfs_util_create_snapshot(argv[2], path, 0, NULL, NULL);
                        if (e != BTRFS_UTIL_OK)
                                return fail("cannot snapshot to", path, e);
                }
                return EXIT_SUCCESS;
        }
        if (argc == 7 && strcmp(argv[1], "burst") == 0) {
                int t = atoi(argv[5]), n = atoi(argv[6]);
                Burst b[64];
                pthread_t tid[64];
                long long t0, t1;

                if (t < 1 || t > 64 || n < 1)
                        return 2;
                t0 = now_ns();
                for (int i = 0; i < t; i++) {
                        b[i] = (Burst) {argv[2], argv[3], argv[4], i, n, BTRFS_UTIL_OK};
                        if (pthread_create(&tid[i], NULL, burst_thread, &b[i]) != 0)
                                return EXIT_FAILURE;
                }
                for (int i = 0; i < t; i++)
                        pthread_join(tid[i], NULL);
                t1 = now_ns();
                for (int i = 0; i < t; i++)
                        if (b[i].e != BTRFS_UTIL_OK)
                                return fail("cannot snapshot into", argv[3], b[i].e);
                printf("%lld\n", t1 - t0);
                return EXIT_SUCCESS;
        }
        if (argc >= 2 && strcmp(argv[1], "rm") == 0) {
                for (int i = 2; i < argc; i++) {
                        e = btrfs_util_delete_subvolume(argv[i], 0);
                        if (e != BTRFS_UTIL_OK)
                                return fail("cannot delete", argv[i], e);
                }
                return EXIT_SUCCESS;
        }
        if (argc == 3 && strcmp(argv[1], "settle") == 0) {
                /* The cleaner runs after a commit; the sync ioctl commits and wakes it, where
                 * `btrfs subvolume sync` would wait for the 30 s commit interval. */
                for (int i = 0; i < 60 * 50; i++) {
                        uint64_t *ids = NULL;
                        size_t n = 0;

                        e = btrfs_util_sync(argv[2]);
                        if (e != BTRFS_UTIL_OK)
                                return fail("cannot sync", argv[2], e);
                        e = btrfs_util_deleted_subvolumes(argv[2], &ids, &n);
                        free(ids);
                        if (e != BTRFS_UTIL_OK)
                                return fail("cannot list deleted subvolumes of", argv[2], e);
                        if (n == 0)
                                return EXIT_SUCCESS;
                        usleep(20 * 1000);
                }
                fprintf(stderr, "snap: %s: deleted subvolumes still there after a minute\n", argv[2]);
                return EXIT_FAILURE;
        }
        fprintf(stderr, "usage: snap time SRC DST | snap many SRC DIR PREFIX N | snap burst SRC DIR PREFIX T N | "
                        "snap rm PATH... | snap settle FS\n");
        return 2;
}
