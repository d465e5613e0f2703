/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <getopt.h>
#include <limits.h>
#include <malloc.h>
#include <signal.h>

#include "config.h"
#include "manager.h"
#include "pool.h"
#include "step.h"

static void help(void)
{
        printf("Usage: stampd [OPTIONS]\n\n"
               "The stamp machine image service (io.stamp.Stamp1 on the system bus).\n\n"
               "  --store DIR          Image store (default: %s)\n"
               "  --idle-timeout SEC   Exit after SEC seconds with nothing to do; 0: never (default: %d)\n"
               "  --no-pool            Never make a loopback btrfs pool; clones are copies then\n"
               "  --config FILE        Configuration file (default: %s)\n"
               "  --log-level LEVEL    err, warning, notice, info or debug (default: info)\n"
               "  -h --help            Show this help\n"
               "     --version         Show the version\n",
               DEFAULT_STORE, DEFAULT_IDLE_TIMEOUT_SEC, CONFIG_FILE);
}

static int parse_args(int argc, char *argv[], Manager *m)
{
        enum { ARG_STORE = 0x100, ARG_IDLE_TIMEOUT, ARG_NO_POOL, ARG_LOG_LEVEL, ARG_VERSION, ARG_CONFIG };
        static const struct option options[] = {
                {"store", required_argument, NULL, ARG_STORE},
                {"idle-timeout", required_argument, NULL, ARG_IDLE_TIMEOUT},
                {"no-pool", no_argument, NULL, ARG_NO_POOL},
                {"config", required_argument, NULL, ARG_CONFIG},
                {"log-level", required_argument, NULL, ARG_LOG_LEVEL},
                {"help", no_argument, NULL, 'h'},
                {"version", no_argument, NULL, ARG_VERSION},
                {},
        };
        const char *store = DEFAULT_STORE, *config = NULL;
        int c, k;

        while ((c = getopt_long(argc, argv, "h", options, NULL)) >= 0)
                switch (c) {
                case ARG_STORE:
                        store = optarg;
                        break;
                case ARG_IDLE_TIMEOUT: {
                        char *end;
                        unsigned long sec;
                        errno = 0;
                        sec = strtoul(optarg, &end, 10);
                        if (errno || *end || end == optarg || sec > UINT32_MAX) {
                                log_error("Invalid --idle-timeout: %s", optarg);
                                return -EINVAL;
                        }
                        m->idle_timeout_usec = sec * USEC_PER_SEC;
                        break;
                }
                case ARG_NO_POOL:
                        m->no_pool = true;
                        break;
                case ARG_CONFIG:
                        config = optarg;
                        break;
                case ARG_LOG_LEVEL: {
                        int l = log_level_from_string(optarg);
                        if (l < 0) {
                                log_error("Invalid --log-level: %s", optarg);
                                return -EINVAL;
                        }
                        log_max_level = l;
                        break;
                }
                case 'h':
                        help();
                        return 0;
                case ARG_VERSION:
                        printf("stampd %s\n", PACKAGE_VERSION);
                        return 0;
                default:
                        return -EINVAL;
                }
        if (optind < argc) {
                log_error("stampd takes no arguments.");
                return -EINVAL;
        }
        /* The default file may be missing; one named here must be there. */
        k = settings_load(&m->settings, config ?: CONFIG_FILE);
        if (k == -ENOENT && config) {
                log_error("--config %s: no such file", config);
                return -EINVAL;
        }

        m->store = realpath(store, NULL);
        if (!m->store) {
                /* Not there yet: the pool set-up creates it. Keep it absolute and without a trailing '/'. */
                if (store[0] != '/') {
                        log_error("--store must be an absolute path: %s", store);
                        return -EINVAL;
                }
                m->store = strdup(store);
                if (!m->store)
                        return -ENOMEM;
                for (size_t n = strlen(m->store); n > 1 && m->store[n - 1] == '/'; n--)
                        m->store[n - 1] = '\0';
        }
        return 1;
}

int main(int argc, char *argv[])
{
        _cleanup_(manager_freep) Manager *m = NULL;
        sigset_t mask;
        int k;

        /* A copy of stampd re-executed for a piece of work of its own (step.h) does that and nothing
         * else. */
        k = step_dispatch(argc, argv);
        if (k >= 0)
                return k;

        /* Before any thread exists: sd-event takes these through signalfd and child watches. */
        sigemptyset(&mask);
        sigaddset(&mask, SIGCHLD);
        sigaddset(&mask, SIGTERM);
        sigaddset(&mask, SIGINT);
        sigprocmask(SIG_BLOCK, &mask, NULL);
        signal(SIGPIPE, SIG_IGN);
        /* One malloc arena for all threads: the polkit thread, GDBus's and the short-lived workers
         * allocate little, and an arena each would stay in the idle daemon's resident memory. */
        (void) mallopt(M_ARENA_MAX, 1);
        setvbuf(stderr, NULL, _IOLBF, 0);
        log_open("stampd");
        /* D-Bus's activation helper starts us with an empty environment; the tools we run (mkfs.btrfs,
         * mount, debootstrap, systemd-nspawn) live in sbin. The same PATH systemd gives services. */
        if (!getenv("PATH"))
                (void) setenv("PATH", DEFAULT_PATH, 1);

        k = manager_new(&m);
        if (k < 0) {
                log_error_errno(k, "Cannot set up");
                return EXIT_FAILURE;
        }
        k = parse_args(argc, argv, m);
        if (k <= 0)
                return k < 0 ? EXIT_FAILURE : EXIT_SUCCESS;

        if (geteuid() != 0)
                log_warning("Not running as root: most operations will fail.");
        k = step_setup();
        if (k < 0)
                log_warning_errno(k, "Cannot open stampd's own executable; steps run /proc/self/exe");

        k = pool_setup(m);
        if (k < 0)
                return EXIT_FAILURE;
        k = manager_open_store(m);
        if (k < 0)
                return EXIT_FAILURE;
        k = manager_connect_bus(m);
        if (k < 0)
                return EXIT_FAILURE;

        k = manager_run(m);
        if (k < 0) {
                log_error_errno(k, "Event loop failed");
                return EXIT_FAILURE;
        }
        log_info("Exiting.");
        return EXIT_SUCCESS;
}
