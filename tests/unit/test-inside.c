/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* Pure logic of working inside machines: the published ports' syntax and addresses
 * (daemon/machine-ports.c), and the copy stream (transfer/copy-stream.c) written and read back, its
 * top renamed, a hostile stream refused without leaving anything. */
#include <fcntl.h>
#include <sys/stat.h>

#include <glib.h>
#include <glib/gstdio.h>

#include "copy-stream.h"
#include "machine-ports.h"
#include "util.h"

static void test_port_parse(void)
{
        MachinePort p;

        g_assert_null(machine_port_parse("tcp:8080:80", &p));
        g_assert_cmpstr(p.protocol, ==, "tcp");
        g_assert_cmpuint(p.host, ==, 8080);
        g_assert_cmpuint(p.container, ==, 80);
        g_assert_null(machine_port_parse("udp:53:5353", &p));
        g_assert_cmpstr(p.protocol, ==, "udp");
        g_assert_cmpuint(p.container, ==, 5353);
        g_assert_null(machine_port_parse("8080:80", &p));
        g_assert_cmpstr(p.protocol, ==, "tcp");
        g_assert_null(machine_port_parse("443", &p));
        g_assert_cmpuint(p.host, ==, 443);
        g_assert_cmpuint(p.container, ==, 443);
        g_assert_null(machine_port_parse("65535:1", &p));

        const char *bad[] = {"",  "0",    "65536", "tcp:",         "tcp:80:", "tcp::80", "sctp:1:2",
                             "x", "80:x", "-1",    "tcp:80:80:80", "1 ",      "+80",     "080080"};
        for (size_t i = 0; i < G_N_ELEMENTS(bad); i++)
                g_assert_nonnull(machine_port_parse(bad[i], &p));
}

static void test_net_addresses(void)
{
        char host[16], container[16];

        machine_net_addresses(0, host, container);
        g_assert_cmpstr(host, ==, "169.254.1.1");
        g_assert_cmpstr(container, ==, "169.254.1.2");
        machine_net_addresses(1, host, container);
        g_assert_cmpstr(host, ==, "169.254.1.5");
        machine_net_addresses(MACHINE_NET_INDEX_MAX - 1, host, container);
        g_assert_true(g_str_has_prefix(host, "169.254."));
        g_assert_false(g_str_has_prefix(host, "169.254.255."));
        machine_net_addresses(MACHINE_NET_INDEX_MAX, host, container);
        g_assert_cmpstr(host, ==, "169.254.1.1");
}

static void test_copy_names(void)
{
        g_assert_true(copy_name_is_valid("a"));
        g_assert_true(copy_name_is_valid(".hidden"));
        g_assert_false(copy_name_is_valid(""));
        g_assert_false(copy_name_is_valid("."));
        g_assert_false(copy_name_is_valid(".."));
        g_assert_false(copy_name_is_valid("a/b"));
        g_assert_false(copy_name_is_valid(NULL));
}

static int open_dir(const char *path)
{
        int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        g_assert_cmpint(fd, >=, 0);
        return fd;
}

static void test_copy_round_trip(void)
{
        g_autofree char *top = g_dir_make_tmp("stamp-copy-XXXXXX", NULL);
        g_autofree char *src = g_build_filename(top, "src", NULL), *sub = g_build_filename(src, "sub", NULL);
        g_autofree char *file = g_build_filename(sub, "f", NULL), *link = g_build_filename(src, "l", NULL);
        g_autofree char *dst = g_build_filename(top, "dst", NULL), *stream = g_build_filename(top, "stream", NULL);
        g_autofree char *copied = g_build_filename(dst, "renamed/sub/f", NULL), *target = NULL;
        g_autofree char *got = NULL;
        char err[1024] = "";
        struct stat st;
        int src_fd, out_fd, in_fd, dst_fd;

        g_assert_cmpint(g_mkdir_with_parents(sub, 0750), ==, 0);
        g_assert_cmpint(g_mkdir(dst, 0755), ==, 0);
        g_assert_true(g_file_set_contents(file, "data\n", -1, NULL));
        g_assert_cmpint(chmod(file, 0604), ==, 0);
        g_assert_cmpint(symlink("sub/f", link), ==, 0);

        src_fd = open_dir(src);
        out_fd = open(stream, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
        g_assert_cmpint(copy_stream_write(src_fd, "src", out_fd, err, sizeof err), ==, 0);
        close(out_fd);
        close(src_fd);

        in_fd = open(stream, O_RDONLY | O_CLOEXEC);
        dst_fd = open_dir(dst);
        g_assert_cmpint(copy_stream_extract(in_fd, dst_fd, "renamed", false, err, sizeof err), ==, 0);
        g_assert_true(g_file_get_contents(copied, &got, NULL, NULL));
        g_assert_cmpstr(got, ==, "data\n");
        g_assert_cmpint(stat(copied, &st), ==, 0);
        g_assert_cmpuint(st.st_mode & 07777, ==, 0604);
        {
                g_autofree char *l = g_build_filename(dst, "renamed/l", NULL);
                target = g_file_read_link(l, NULL);
        }
        g_assert_cmpstr(target, ==, "sub/f");

        /* Again into the same place: the name is taken, and nothing half-made stays. */
        g_assert_cmpint(lseek(in_fd, 0, SEEK_SET), ==, 0);
        g_assert_cmpint(copy_stream_extract(in_fd, dst_fd, "renamed", false, err, sizeof err), ==, -EEXIST);
        /* Under the stream's own name when none is given. */
        g_assert_cmpint(lseek(in_fd, 0, SEEK_SET), ==, 0);
        g_assert_cmpint(copy_stream_extract(in_fd, dst_fd, NULL, false, err, sizeof err), ==, 0);
        {
                g_autofree char *f = g_build_filename(dst, "src/sub/f", NULL);
                g_assert_true(g_file_test(f, G_FILE_TEST_IS_REGULAR));
        }
        close(in_fd);

        /* A stream that is no tar archive leaves nothing. */
        g_assert_true(g_file_set_contents(stream, "garbage garbage garbage", -1, NULL));
        in_fd = open(stream, O_RDONLY | O_CLOEXEC);
        g_assert_cmpint(copy_stream_extract(in_fd, dst_fd, "bad", false, err, sizeof err), ==, -EBADMSG);
        close(in_fd);
        {
                g_autoptr(GDir) d = g_dir_open(dst, 0, NULL);
                const char *n;
                unsigned count = 0;
                while ((n = g_dir_read_name(d)))
                        count++;
                g_assert_cmpuint(count, ==, 2); /* renamed, src */
        }
        close(dst_fd);
        {
                g_autofree char *cmd = g_strdup_printf("rm -rf '%s'", top);
                g_assert_cmpint(system(cmd), ==, 0);
        }
}

int main(int argc, char *argv[])
{
        g_test_init(&argc, &argv, NULL);
        g_test_add_func("/inside/port-parse", test_port_parse);
        g_test_add_func("/inside/net-addresses", test_net_addresses);
        g_test_add_func("/inside/copy-names", test_copy_names);
        g_test_add_func("/inside/copy-round-trip", test_copy_round_trip);
        return g_test_run();
}
