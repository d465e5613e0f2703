/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>

#include "transfer.h"

/* The tar jobs of stampd: export, import and pull, with libarchive and libcurl, which the daemon
 * does not load. stampd runs it as PID 1 of a job's namespace (job_start_exec()) with:
 *
 *   fd 3  the job's socket to the daemon: progress, log and the error, as job_child_*() send them
 *   fd 4  the image store (O_DIRECTORY)
 *   fd 5… the job's own: export: the image, then where the archive goes; import: the archive
 *
 * and everything else as arguments. It is no command for people: it trusts what it is given. */

#define FD_COMM 3
#define FD_STORE 4
#define FD_JOB 5

static int parse_yes_no(const char *s, bool *ret)
{
        if (streq(s, "yes"))
                *ret = true;
        else if (streq(s, "no"))
                *ret = false;
        else
                return -EINVAL;
        return 0;
}

int main(int argc, char *argv[])
{
        enum {
                ARG_STORE_BTRFS = 0x100,
                ARG_TEMP,
                ARG_NAME,
                ARG_READ_ONLY,
                ARG_FORMAT,
                ARG_USAGE,
                ARG_SNAPSHOT,
                ARG_FILE,
                ARG_VERIFY,
        };
        static const struct option options[] = {
                {"store-btrfs", required_argument, NULL, ARG_STORE_BTRFS},
                {"temp", required_argument, NULL, ARG_TEMP},
                {"name", required_argument, NULL, ARG_NAME},
                {"read-only", required_argument, NULL, ARG_READ_ONLY},
                {"format", required_argument, NULL, ARG_FORMAT},
                {"usage", required_argument, NULL, ARG_USAGE},
                {"snapshot", required_argument, NULL, ARG_SNAPSHOT},
                {"file", required_argument, NULL, ARG_FILE},
                {"verify", required_argument, NULL, ARG_VERIFY},
                {},
        };
        JobChild c = {.fd = FD_COMM, .store_fd = FD_STORE};
        const char *verb, *name = NULL, *format = NULL, *url = NULL, *sums_url = NULL, *file = NULL;
        static char urls[2 * 4096 + 64]; /* each URL is at most 4096 bytes (pull.c), SHA256SUMS a bit more */
        bool read_only = false, snapshot = false, verify = true;
        uint64_t usage = UINT64_MAX;
        int opt, k = 0;

        if (argc < 2 || fcntl(FD_COMM, F_GETFD) < 0 || fcntl(FD_STORE, F_GETFD) < 0) {
                fprintf(stderr, "stamp-transfer does the tar jobs of stampd, and is run by it only.\n");
                return 2;
        }
        /* Nothing this runs needs them. */
        for (int fd = FD_COMM; fd <= FD_JOB + 1; fd++)
                (void) fcntl(fd, F_SETFD, FD_CLOEXEC);
        verb = argv[1];
        while ((opt = getopt_long(argc - 1, argv + 1, "", options, NULL)) >= 0) {
                switch (opt) {
                case ARG_STORE_BTRFS:
                        k = parse_yes_no(optarg, &c.store_is_btrfs);
                        break;
                case ARG_TEMP:
                        c.temp_name = optarg;
                        break;
                case ARG_NAME:
                        name = optarg;
                        break;
                case ARG_READ_ONLY:
                        k = parse_yes_no(optarg, &read_only);
                        break;
                case ARG_FORMAT:
                        format = optarg;
                        break;
                case ARG_USAGE: {
                        char *end;
                        errno = 0;
                        usage = strtoull(optarg, &end, 10);
                        if (errno != 0 || end == optarg || *end)
                                k = -EINVAL;
                        break;
                }
                case ARG_SNAPSHOT:
                        k = parse_yes_no(optarg, &snapshot);
                        break;
                case ARG_FILE:
                        file = optarg;
                        break;
                case ARG_VERIFY:
                        k = parse_yes_no(optarg, &verify);
                        break;
                default:
                        k = -EINVAL;
                }
                if (k < 0)
                        break;
        }
        if (k < 0 || optind != argc - 1 || !name) {
                job_child_fail(&c, EINVAL, "stamp-transfer: invalid arguments");
                return EXIT_FAILURE;
        }

        if (streq(verb, "export")) {
                ExportArgs a = {
                        .name = name,
                        .image_fd = FD_JOB,
                        .out_fd = FD_JOB + 1,
                        .format = export_format_from_string(format),
                        .read_only = read_only,
                        .usage = usage,
                        .snapshot = snapshot,
                };
                if (a.format == _EXPORT_FORMAT_INVALID || (snapshot && !c.temp_name))
                        k = job_child_fail(&c, EINVAL, "stamp-transfer: invalid arguments");
                else
                        k = transfer_export(&c, &a);
        } else if (streq(verb, "import")) {
                ImportArgs a = {.name = name, .in_fd = FD_JOB, .read_only = read_only};
                if (!c.temp_name)
                        k = job_child_fail(&c, EINVAL, "stamp-transfer: invalid arguments");
                else
                        k = transfer_import(&c, &a);
        } else if (streq(verb, "pull")) {
                /* The archive's URL and its SHA256SUMS' URL, each NUL-terminated, on the job's fd. */
                ssize_t n = read(FD_JOB, urls, sizeof urls - 1);
                if (n > 0) {
                        urls[n] = '\0';
                        url = urls;
                        if (strlen(url) + 1 < (size_t) n)
                                sums_url = url + strlen(url) + 1;
                }
                PullArgs a = {
                        .url = url,
                        .sums_url = sums_url,
                        .file = file,
                        .name = name,
                        .verify = verify,
                        .read_only = read_only,
                };
                if (!url || !sums_url || !file || !c.temp_name)
                        k = job_child_fail(&c, EINVAL, "stamp-transfer: invalid arguments");
                else
                        k = transfer_pull(&c, &a);
        } else
                k = job_child_fail(&c, EINVAL, "stamp-transfer: unknown verb");

        /* Import and pull chroot into the new image: no /proc is reachable from there, and exit
         * handlers that need it (LeakSanitizer's, in a sanitizer build) would fail; skip them. */
        if (streq(verb, "import") || streq(verb, "pull")) {
                fflush(NULL);
                _exit(k < 0 ? EXIT_FAILURE : EXIT_SUCCESS);
        }
        return k < 0 ? EXIT_FAILURE : EXIT_SUCCESS;
}
