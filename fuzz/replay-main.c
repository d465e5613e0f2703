/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* A main() for fuzz targets built without libFuzzer (any compiler): runs the target once on every
 * file named on the command line, or in the directories named there, and reports each as a TAP
 * line. Used by the `fuzz` test suite to replay the corpus and the crash reproducers, so that a
 * regression shows in every build, not only in a fuzzing one. */
#include <dirent.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
__attribute__((weak)) int LLVMFuzzerInitialize(int *argc, char ***argv);

static unsigned n_run;

static int run_file(const char *path)
{
        FILE *f = fopen(path, "rb");
        uint8_t *buf = NULL;
        size_t n = 0, cap = 0;

        if (!f) {
                printf("not ok %u - %s: %s\n", ++n_run, path, strerror(errno));
                return 1;
        }
        for (;;) {
                if (n == cap) {
                        cap = cap ? cap * 2 : 65536;
                        buf = realloc(buf, cap);
                        if (!buf)
                                abort();
                }
                size_t r = fread(buf + n, 1, cap - n, f);
                if (r == 0)
                        break;
                n += r;
        }
        fclose(f);
        /* A copy of exactly the input's size, so that ASan sees reads past its end. */
        uint8_t *exact = malloc(n ? n : 1);
        if (!exact)
                abort();
        memcpy(exact, buf, n);
        free(buf);
        fflush(stdout);
        LLVMFuzzerTestOneInput(exact, n);
        free(exact);
        printf("ok %u - %s\n", ++n_run, path);
        fflush(stdout);
        return 0;
}

static int compare(const void *a, const void *b)
{
        return strcmp(*(char *const *) a, *(char *const *) b);
}

static int run_path(const char *path)
{
        struct stat st;
        struct dirent *de;
        char **names = NULL;
        size_t n = 0;
        DIR *d;
        int failed = 0;

        if (stat(path, &st) < 0 || !S_ISDIR(st.st_mode))
                return run_file(path);
        d = opendir(path);
        if (!d)
                return run_file(path);
        while ((de = readdir(d))) {
                if (de->d_name[0] == '.')
                        continue;
                names = realloc(names, (n + 1) * sizeof *names);
                if (!names || asprintf(&names[n], "%s/%s", path, de->d_name) < 0)
                        abort();
                n++;
        }
        closedir(d);
        if (n > 0)
                qsort(names, n, sizeof *names, compare);
        for (size_t i = 0; i < n; i++) {
                failed |= run_file(names[i]);
                free(names[i]);
        }
        free(names);
        return failed;
}

int main(int argc, char *argv[])
{
        int failed = 0;

        if (LLVMFuzzerInitialize)
                LLVMFuzzerInitialize(&argc, &argv);
        for (int i = 1; i < argc; i++)
                failed |= run_path(argv[i]);
        printf("1..%u\n", n_run);
        return failed;
}
