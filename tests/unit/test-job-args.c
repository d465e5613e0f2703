/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* A job's arguments (store/job-args.c): what stampd encodes, stamp-transfer decodes to the same,
 * fds at their places; anything else is refused. */
#include <fcntl.h>
#include <sys/mman.h>

#include <glib.h>

#include "job-args.h"

/* Put @fds where stamp-transfer finds them, as the daemon's exec does. */
static void place_fds(const int *fds, size_t n)
{
        for (size_t i = 0; i < n; i++)
                g_assert_cmpint(dup2(fds[i], JOB_ARGS_FD_FIRST + (int) i), ==, JOB_ARGS_FD_FIRST + (int) i);
}

static int memfd_of(GVariant *v)
{
        int fd = memfd_create("test", MFD_CLOEXEC);

        g_assert_cmpint(fd, >=, 0);
        g_assert_cmpint(loop_write(fd, g_variant_get_data(v), g_variant_get_size(v)), ==, 0);
        return fd;
}

static void test_template_round_trip(void)
{
        static const char *const include[] = {"dbus", "vim", NULL};
        JobArgs a, b;
        int fds[JOB_ARGS_FDS_MAX], pipefd[2], args_fd;
        size_t n = 0;

        g_assert_cmpint(pipe2(pipefd, O_CLOEXEC), ==, 0);
        job_args_init(&a, JOB_CREATE_TEMPLATE);
        a.name = g_strdup("deb12");
        a.store_path = g_strdup("/var/lib/machines");
        a.store_is_btrfs = true;
        a.temp_name = g_strdup(".#stamp-deb12-1");
        a.template.suite = g_strdup("bookworm");
        a.template.include = g_strdupv((char **) include);
        a.template.mirror = g_strdup("http://deb.debian.org/debian");
        a.template.mirror_user = g_strdup("u s");
        a.template.mirror_password = g_strdup("p:w@d");
        a.template.keyring = g_strdup("/usr/share/keyrings/debian-archive-keyring.gpg");
        a.template.bootable = true;
        a.template.package_tarball = pipefd[0];

        args_fd = job_args_encode(&a, fds, &n);
        g_assert_cmpint(args_fd, >=, 0);
        /* sealed: what the helper reads is what was written */
        g_assert_cmpint(fcntl(args_fd, F_GET_SEALS) & (F_SEAL_WRITE | F_SEAL_SEAL), ==, F_SEAL_WRITE | F_SEAL_SEAL);
        g_assert_cmpuint(n, ==, 1);
        g_assert_cmpint(fds[0], ==, pipefd[0]);
        place_fds(fds, n);

        g_assert_cmpint(job_args_decode(args_fd, &b), ==, 0);
        g_assert_cmpint(b.type, ==, JOB_CREATE_TEMPLATE);
        g_assert_cmpstr(b.name, ==, "deb12");
        g_assert_cmpstr(b.store_path, ==, "/var/lib/machines");
        g_assert_true(b.store_is_btrfs);
        g_assert_cmpstr(b.temp_name, ==, ".#stamp-deb12-1");
        g_assert_cmpstr(b.template.suite, ==, "bookworm");
        g_assert_true(g_strv_equal((const char *const *) b.template.include, include));
        g_assert_cmpstr(b.template.mirror_user, ==, "u s");
        g_assert_cmpstr(b.template.mirror_password, ==, "p:w@d");
        g_assert_null(b.template.variant);
        g_assert_null(b.template.root_password_hashed);
        g_assert_true(b.template.bootable);
        g_assert_cmpint(b.template.package_tarball, ==, JOB_ARGS_FD_FIRST);
        g_assert_cmpint(fcntl(JOB_ARGS_FD_FIRST, F_GETFD), ==, FD_CLOEXEC);
        /* the other types' fields stay empty */
        g_assert_cmpint(b.export.image_fd, ==, -1);
        g_assert_null(b.pull.url);

        job_args_done(&b); /* closes JOB_ARGS_FD_FIRST */
        g_assert_cmpint(fcntl(JOB_ARGS_FD_FIRST, F_GETFD), <, 0);
        job_args_done(&a);
        close(pipefd[1]);
        close(args_fd);
}

static void test_export_round_trip(void)
{
        JobArgs a, b;
        int fds[JOB_ARGS_FDS_MAX], args_fd;
        size_t n = 0;

        job_args_init(&a, JOB_EXPORT_TAR);
        a.name = g_strdup("img");
        a.export.format = g_strdup("xz");
        a.export.usage = UINT64_C(1) << 40;
        a.export.image_fd = open("/", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        a.export.out_fd = open("/dev/null", O_WRONLY | O_CLOEXEC);
        args_fd = job_args_encode(&a, fds, &n);
        g_assert_cmpint(args_fd, >=, 0);
        g_assert_cmpuint(n, ==, 2);
        place_fds(fds, n);
        g_assert_cmpint(job_args_decode(args_fd, &b), ==, 0);
        g_assert_cmpstr(b.export.format, ==, "xz");
        g_assert_cmpuint(b.export.usage, ==, UINT64_C(1) << 40);
        g_assert_cmpint(b.export.image_fd, ==, JOB_ARGS_FD_FIRST);
        g_assert_cmpint(b.export.out_fd, ==, JOB_ARGS_FD_FIRST + 1);
        g_assert_null(b.temp_name);
        job_args_done(&b);
        job_args_done(&a);
        close(args_fd);
}

static void test_push_image_round_trip(void)
{
        JobArgs a, b;
        int fds[JOB_ARGS_FDS_MAX], args_fd;
        size_t n = 0;

        job_args_init(&a, JOB_PUSH_IMAGE);
        g_assert_cmpuint(a.oci.cache_max, ==, UINT64_MAX);
        g_assert_cmpint(a.oci.base_fd, ==, -1);
        a.name = g_strdup("web");
        a.oci.registry = g_strdup("registry.example.com:5000");
        a.oci.repository = g_strdup("team/web");
        a.oci.reference = g_strdup("v1");
        a.oci.credentials_file = g_strdup("/etc/stamp/registries.conf");
        a.oci.compression = g_strdup("zstd");
        a.oci.insecure = true;
        a.oci.cache_max = UINT64_C(10) << 30;
        a.oci.kind = g_strdup("clone");
        a.oci.origin = g_strdup("base");
        a.oci.image_fd = open("/", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        a.oci.base_fd = open("/", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        args_fd = job_args_encode(&a, fds, &n);
        g_assert_cmpint(args_fd, >=, 0);
        g_assert_cmpuint(n, ==, 2);
        place_fds(fds, n);
        g_assert_cmpint(job_args_decode(args_fd, &b), ==, 0);
        g_assert_cmpint(b.type, ==, JOB_PUSH_IMAGE);
        g_assert_cmpstr(job_verb_to_string(b.type), ==, "push-image");
        g_assert_cmpstr(b.oci.registry, ==, "registry.example.com:5000");
        g_assert_cmpstr(b.oci.repository, ==, "team/web");
        g_assert_cmpstr(b.oci.reference, ==, "v1");
        g_assert_cmpstr(b.oci.credentials_file, ==, "/etc/stamp/registries.conf");
        g_assert_cmpstr(b.oci.compression, ==, "zstd");
        g_assert_true(b.oci.insecure);
        g_assert_false(b.oci.snapshot);
        g_assert_cmpuint(b.oci.cache_max, ==, UINT64_C(10) << 30);
        g_assert_cmpstr(b.oci.kind, ==, "clone");
        g_assert_cmpstr(b.oci.origin, ==, "base");
        g_assert_null(b.oci.recipe);
        g_assert_cmpint(b.oci.image_fd, ==, JOB_ARGS_FD_FIRST);
        g_assert_cmpint(b.oci.base_fd, ==, JOB_ARGS_FD_FIRST + 1);
        job_args_done(&b);
        job_args_done(&a);
        close(args_fd);

        /* a pull has no image fd to take, and a push needs one */
        job_args_init(&a, JOB_PUSH_IMAGE);
        a.name = g_strdup("web");
        a.oci.registry = g_strdup("h:1");
        a.oci.repository = g_strdup("r");
        a.oci.reference = g_strdup("t");
        g_assert_cmpint(job_args_encode(&a, fds, &n), ==, -EINVAL);
        a.type = JOB_PULL_IMAGE;
        args_fd = job_args_encode(&a, fds, &n);
        g_assert_cmpint(args_fd, >=, 0);
        g_assert_cmpint(job_args_decode(args_fd, &b), ==, 0);
        g_assert_cmpstr(job_verb_to_string(b.type), ==, "pull-image");
        g_assert_cmpint(b.oci.image_fd, ==, -1);
        job_args_done(&b);
        job_args_done(&a);
        close(args_fd);
}

static void test_missing_required(void)
{
        JobArgs a;
        int fds[JOB_ARGS_FDS_MAX];
        size_t n = 0;

        job_args_init(&a, JOB_PULL_TAR);
        a.name = g_strdup("img");
        a.pull.url = g_strdup("https://example.org/x.tar");
        /* no sums-url, no file */
        g_assert_cmpint(job_args_encode(&a, fds, &n), ==, -EINVAL);
        job_args_done(&a);
        job_args_init(&a, _JOB_TYPE_INVALID);
        g_assert_cmpint(job_args_encode(&a, fds, &n), ==, -EINVAL);
        job_args_done(&a);
}

static void test_refused(void)
{
        const char *const cases[] = {
                "('nosuchverb', {'name': <'x'>})",
                "('import', {'name': <'x'>, 'in': <handle 0>, 'bogus': <true>})",      /* unknown key */
                "('import', {'name': <'x'>, 'in': <handle 0>, 'read-only': <'yes'>})", /* wrong type */
                "('import', {'name': <'x'>})",                                         /* no fd */
                "('import', {'in': <handle 0>})",                                      /* no name */
                "('import', {'name': <'x'>, 'in': <handle 3>})",                       /* no such fd */
                "('import', {'name': <'x'>, 'in': <handle -1>})",
                "('import', {'name': <'x'>, 'in': <handle 99>})",
                "('export', {'name': <'x'>, 'format': <'xz'>, 'image': <handle 0>, 'out': <handle 0>, "
                "'name': <'y'>})", /* twice */
        };
        int in = open("/dev/null", O_RDONLY | O_CLOEXEC);

        for (size_t i = 0; i < G_N_ELEMENTS(cases); i++) {
                g_autoptr(GVariant) v = g_variant_ref_sink(g_variant_new_parsed(cases[i]));
                int fd = memfd_of(v);
                JobArgs b;

                place_fds(&in, 1);
                (void) close(JOB_ARGS_FD_FIRST + 3);
                g_test_message("%s", cases[i]);
                g_assert_cmpint(job_args_decode(fd, &b), ==, -EBADMSG);
                close(fd);
        }
        /* not a variant of the type at all, and empty */
        for (int empty = 0; empty <= 1; empty++) {
                int fd = memfd_create("test", MFD_CLOEXEC);
                JobArgs b;
                if (!empty)
                        g_assert_cmpint(loop_write(fd, "garbage", 7), ==, 0);
                g_assert_cmpint(job_args_decode(fd, &b), ==, -EBADMSG);
                close(fd);
        }
        close(in);
        (void) close(JOB_ARGS_FD_FIRST);
}

static void test_mirror_and_arch(void)
{
        g_assert_true(debian_mirror_is_valid("http://deb.debian.org/debian"));
        g_assert_true(debian_mirror_is_valid("https://u:p@[::1]:8080/debian"));
        g_assert_false(debian_mirror_is_valid("file:///srv"));
        g_assert_false(debian_mirror_is_valid("copy:///srv"));
        g_assert_false(debian_mirror_is_valid("http://a b/"));
        g_assert_false(debian_mirror_is_valid("http:///x"));
        g_assert_true(debian_arch_is_valid("amd64"));
        g_assert_false(debian_arch_is_valid("AMD64"));
        g_assert_false(debian_arch_is_valid("../x"));
        g_assert_false(debian_arch_is_valid(""));
}

int main(int argc, char *argv[])
{
        g_test_init(&argc, &argv, NULL);
        g_test_add_func("/job-args/template-round-trip", test_template_round_trip);
        g_test_add_func("/job-args/export-round-trip", test_export_round_trip);
        g_test_add_func("/job-args/push-image-round-trip", test_push_image_round_trip);
        g_test_add_func("/job-args/missing-required", test_missing_required);
        g_test_add_func("/job-args/refused", test_refused);
        g_test_add_func("/job-args/mirror-and-arch", test_mirror_and_arch);
        return g_test_run();
}
