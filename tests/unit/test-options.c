/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* The a{sv} option reader (daemon/options.c): values land in their fields, and every refusal is
 * InvalidArgs naming the key, with nothing kept (no string, no fd). */
#include <fcntl.h>
#include <stddef.h>

#include <glib.h>

#include "options.h"
#include "unit-util.h"

typedef struct {
        char *mirror;
        char **include;
        int bootable;
        int tarball;
} Opts;

/* Shaped like CreateTemplate's: one option of each type. */
static const OptionSpec table[] = {
        {"mirror", OPTION_STRING, offsetof(Opts, mirror)},
        {"include", OPTION_STRV, offsetof(Opts, include)},
        {"bootable", OPTION_BOOL, offsetof(Opts, bootable)},
        {"package_tarball", OPTION_FD, offsetof(Opts, tarball)},
        {},
};

static sd_bus *bus;

static void assert_absent(const Opts *o)
{
        g_assert_null(o->mirror);
        g_assert_null(o->include);
        g_assert_cmpint(o->bootable, ==, -1);
        g_assert_cmpint(o->tarball, ==, -1);
}

/* Read the options of a sealed message; on refusal, check the error names @key and nothing is kept. */
static int read_opts(sd_bus_message *m, Opts *o, const char *expect_key)
{
        sd_bus_error error = SD_BUS_ERROR_NULL;
        unsigned fds_before = unit_count_fds();
        int k;

        memset(o, 0x55, sizeof *o); /* garbage: the reader must set every field */
        k = bus_read_options(m, table, o, &error);
        if (expect_key) {
                g_autofree char *quoted = g_strdup_printf("\"%s\"", expect_key);

                g_assert_cmpint(k, <, 0);
                g_assert_cmpstr(error.name, ==, SD_BUS_ERROR_INVALID_ARGS);
                if (!strstr(error.message, quoted))
                        g_error("error \"%s\" does not name %s", error.message, quoted);
                assert_absent(o);
                g_assert_cmpuint(unit_count_fds(), ==, fds_before);
        }
        sd_bus_error_free(&error);
        return k;
}

static void test_empty(void)
{
        sd_bus_message *m = unit_call_new(bus);
        Opts o;

        g_assert_cmpint(sd_bus_message_append(m, "a{sv}", 0), >=, 0);
        unit_call_seal(m);
        g_assert_cmpint(read_opts(m, &o, NULL), >=, 0);
        assert_absent(&o);
        options_free(table, &o);
        sd_bus_message_unref(m);
}

static void test_all_types(void)
{
        sd_bus_message *m = unit_call_new(bus);
        int fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
        Opts o;

        g_assert_cmpint(sd_bus_message_append(m, "a{sv}s", 4, "mirror", "s", "http://x/", "include", "as", 2, "a", "b",
                                              "bootable", "b", 0, "package_tarball", "h", fd, "after"),
                        >=, 0);
        unit_call_seal(m);
        g_assert_cmpint(read_opts(m, &o, NULL), >=, 0);
        g_assert_cmpstr(o.mirror, ==, "http://x/");
        g_assert_cmpuint(g_strv_length(o.include), ==, 2);
        g_assert_cmpstr(o.include[1], ==, "b");
        g_assert_cmpint(o.bootable, ==, 0);
        /* the fd is the reader's own dup, close-on-exec */
        g_assert_cmpint(o.tarball, >=, 3);
        g_assert_cmpint(o.tarball, !=, fd);
        g_assert_cmpint(fcntl(o.tarball, F_GETFD) & FD_CLOEXEC, ==, FD_CLOEXEC);
        {
                /* the read position is after the dictionary */
                const char *s;
                g_assert_cmpint(sd_bus_message_read(m, "s", &s), >, 0);
                g_assert_cmpstr(s, ==, "after");
        }
        options_free(table, &o);
        assert_absent(&o);
        close(fd);
        sd_bus_message_unref(m);
}

static void test_unknown_key(void)
{
        sd_bus_message *m = unit_call_new(bus);
        int fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
        Opts o;

        /* known values first, so that a leak of what was already read would show */
        g_assert_cmpint(sd_bus_message_append(m, "a{sv}", 4, "mirror", "s", "m", "package_tarball", "h", fd, "include",
                                              "as", 1, "x", "frobnicate", "b", 1),
                        >=, 0);
        unit_call_seal(m);
        read_opts(m, &o, "frobnicate");
        close(fd);
        sd_bus_message_unref(m);
}

static void test_unknown_key_escaped(void)
{
        sd_bus_message *m = unit_call_new(bus);
        sd_bus_error error = SD_BUS_ERROR_NULL;
        Opts o;

        g_assert_cmpint(sd_bus_message_append(m, "a{sv}", 1, "evil\nkey\x1b[31m", "b", 1), >=, 0);
        unit_call_seal(m);
        g_assert_cmpint(bus_read_options(m, table, &o, &error), <, 0);
        g_assert_cmpstr(error.name, ==, SD_BUS_ERROR_INVALID_ARGS);
        g_assert_null(strchr(error.message, '\n'));
        g_assert_null(strchr(error.message, '\x1b'));
        g_assert_nonnull(strstr(error.message, "evil\\nkey"));
        sd_bus_error_free(&error);
        sd_bus_message_unref(m);
}

static void test_wrong_types(void)
{
        static const struct {
                const char *key, *sig;
        } cases[] = {
                {"mirror", "b"},           {"mirror", "as"},  {"mirror", "o"},          {"mirror", "v"},
                {"include", "s"},          {"include", "ao"}, {"include", "aas"},       {"bootable", "s"},
                {"bootable", "i"},         {"bootable", "u"}, {"package_tarball", "i"}, {"package_tarball", "s"},
                {"package_tarball", "ah"},
        };

        for (size_t i = 0; i < G_N_ELEMENTS(cases); i++) {
                sd_bus_message *m = unit_call_new(bus);
                const char *sig = cases[i].sig;
                Opts o;
                int k;

                k = sd_bus_message_open_container(m, 'a', "{sv}");
                k = k >= 0 ? sd_bus_message_open_container(m, 'e', "sv") : k;
                k = k >= 0 ? sd_bus_message_append(m, "s", cases[i].key) : k;
                if (k >= 0 && streq(sig, "b"))
                        k = sd_bus_message_append(m, "v", "b", 1);
                else if (k >= 0 && streq(sig, "as"))
                        k = sd_bus_message_append(m, "v", "as", 1, "x");
                else if (k >= 0 && streq(sig, "o"))
                        k = sd_bus_message_append(m, "v", "o", "/x");
                else if (k >= 0 && streq(sig, "v"))
                        k = sd_bus_message_append(m, "v", "v", "s", "x");
                else if (k >= 0 && streq(sig, "s"))
                        k = sd_bus_message_append(m, "v", "s", "x");
                else if (k >= 0 && streq(sig, "ao"))
                        k = sd_bus_message_append(m, "v", "ao", 1, "/x");
                else if (k >= 0 && streq(sig, "aas"))
                        k = sd_bus_message_append(m, "v", "aas", 1, 1, "x");
                else if (k >= 0 && streq(sig, "i"))
                        k = sd_bus_message_append(m, "v", "i", 3);
                else if (k >= 0 && streq(sig, "u"))
                        k = sd_bus_message_append(m, "v", "u", 1);
                else if (k >= 0 && streq(sig, "ah"))
                        k = sd_bus_message_append(m, "v", "ah", 0);
                k = k >= 0 ? sd_bus_message_close_container(m) : k;
                k = k >= 0 ? sd_bus_message_close_container(m) : k;
                g_assert_cmpint(k, >=, 0);
                unit_call_seal(m);
                read_opts(m, &o, cases[i].key);
                sd_bus_message_unref(m);
        }
}

static void test_twice(void)
{
        sd_bus_message *m = unit_call_new(bus);
        Opts o;

        g_assert_cmpint(sd_bus_message_append(m, "a{sv}", 2, "mirror", "s", "a", "mirror", "s", "b"), >=, 0);
        unit_call_seal(m);
        read_opts(m, &o, "mirror");
        sd_bus_message_unref(m);
}

static void test_caps(void)
{
        g_autofree char *big = g_malloc0(OPTIONS_STRING_MAX + 2);
        sd_bus_message *m;
        Opts o;

        memset(big, 'x', OPTIONS_STRING_MAX + 1);

        /* a string one byte too long */
        m = unit_call_new(bus);
        g_assert_cmpint(sd_bus_message_append(m, "a{sv}", 1, "mirror", "s", big), >=, 0);
        unit_call_seal(m);
        read_opts(m, &o, "mirror");
        sd_bus_message_unref(m);

        /* exactly at the cap is fine */
        big[OPTIONS_STRING_MAX] = '\0';
        m = unit_call_new(bus);
        g_assert_cmpint(sd_bus_message_append(m, "a{sv}", 1, "mirror", "s", big), >=, 0);
        unit_call_seal(m);
        g_assert_cmpint(read_opts(m, &o, NULL), >=, 0);
        g_assert_cmpuint(strlen(o.mirror), ==, OPTIONS_STRING_MAX);
        options_free(table, &o);
        sd_bus_message_unref(m);

        /* an array with one entry too many, and one with a too-long entry */
        for (int round = 0; round < 2; round++) {
                m = unit_call_new(bus);
                g_assert_cmpint(sd_bus_message_open_container(m, 'a', "{sv}"), >=, 0);
                g_assert_cmpint(sd_bus_message_open_container(m, 'e', "sv"), >=, 0);
                g_assert_cmpint(sd_bus_message_append(m, "s", "include"), >=, 0);
                g_assert_cmpint(sd_bus_message_open_container(m, 'v', "as"), >=, 0);
                g_assert_cmpint(sd_bus_message_open_container(m, 'a', "s"), >=, 0);
                if (round == 0)
                        for (int i = 0; i < OPTIONS_STRV_MAX + 1; i++)
                                g_assert_cmpint(sd_bus_message_append(m, "s", "pkg"), >=, 0);
                else {
                        big[OPTIONS_STRING_MAX] = 'x';
                        g_assert_cmpint(sd_bus_message_append(m, "s", big), >=, 0);
                }
                for (int i = 0; i < 4; i++)
                        g_assert_cmpint(sd_bus_message_close_container(m), >=, 0);
                unit_call_seal(m);
                read_opts(m, &o, "include");
                sd_bus_message_unref(m);
        }
}

static void test_too_many_entries(void)
{
        /* The count cap needs a table with more keys than it: OPTIONS_MAX + 6 booleans. */
        enum { N = OPTIONS_MAX + 6 };
        OptionSpec big_table[N + 1] = {};
        char keys[N][8];
        int values[N];
        sd_bus_error error = SD_BUS_ERROR_NULL;

        for (int i = 0; i < N; i++) {
                snprintf(keys[i], sizeof keys[i], "k%d", i);
                big_table[i] = (OptionSpec) {keys[i], OPTION_BOOL, i * sizeof(int)};
        }
        for (int n = OPTIONS_MAX; n <= OPTIONS_MAX + 1; n++) {
                sd_bus_message *m = unit_call_new(bus);
                int k;

                g_assert_cmpint(sd_bus_message_open_container(m, 'a', "{sv}"), >=, 0);
                for (int i = 0; i < n; i++)
                        g_assert_cmpint(sd_bus_message_append(m, "{sv}", keys[i], "b", 1), >=, 0);
                g_assert_cmpint(sd_bus_message_close_container(m), >=, 0);
                unit_call_seal(m);
                k = bus_read_options(m, big_table, values, &error);
                if (n == OPTIONS_MAX) {
                        g_assert_cmpint(k, >=, 0);
                        g_assert_cmpint(values[OPTIONS_MAX - 1], ==, 1);
                        g_assert_cmpint(values[OPTIONS_MAX], ==, -1);
                } else {
                        g_assert_cmpint(k, <, 0);
                        g_assert_cmpstr(error.name, ==, SD_BUS_ERROR_INVALID_ARGS);
                        for (int i = 0; i < N; i++)
                                g_assert_cmpint(values[i], ==, -1);
                }
                sd_bus_error_free(&error);
                sd_bus_message_unref(m);
        }
}

static void test_not_a_dictionary(void)
{
        /* The vtable's signature protects the real methods; the reader still must not trust it. */
        sd_bus_message *m = unit_call_new(bus);
        sd_bus_error error = SD_BUS_ERROR_NULL;
        Opts o;

        g_assert_cmpint(sd_bus_message_append(m, "as", 1, "mirror"), >=, 0);
        unit_call_seal(m);
        g_assert_cmpint(bus_read_options(m, table, &o, &error), <, 0);
        assert_absent(&o);
        sd_bus_error_free(&error);
        sd_bus_message_unref(m);
}

static void test_no_leak_over_many_refusals(void)
{
        /* 1000 refused dictionaries, each holding an fd read before the refusal: the fd count stays. */
        unsigned before = unit_count_fds();
        int fd = open("/dev/null", O_RDONLY | O_CLOEXEC);

        for (int i = 0; i < 1000; i++) {
                sd_bus_message *m = unit_call_new(bus);
                sd_bus_error error = SD_BUS_ERROR_NULL;
                Opts o;

                g_assert_cmpint(sd_bus_message_append(m, "a{sv}", 2, "package_tarball", "h", fd, "bootable", "s", "no"),
                                >=, 0);
                unit_call_seal(m);
                g_assert_cmpint(bus_read_options(m, table, &o, &error), <, 0);
                sd_bus_error_free(&error);
                sd_bus_message_unref(m);
        }
        close(fd);
        g_assert_cmpuint(unit_count_fds(), ==, before);
}

int main(int argc, char *argv[])
{
        int r;

        g_test_init(&argc, &argv, NULL);
        bus = unit_bus_new();
        g_test_add_func("/options/empty", test_empty);
        g_test_add_func("/options/all-types", test_all_types);
        g_test_add_func("/options/unknown-key", test_unknown_key);
        g_test_add_func("/options/unknown-key-escaped", test_unknown_key_escaped);
        g_test_add_func("/options/wrong-types", test_wrong_types);
        g_test_add_func("/options/twice", test_twice);
        g_test_add_func("/options/caps", test_caps);
        g_test_add_func("/options/too-many-entries", test_too_many_entries);
        g_test_add_func("/options/not-a-dictionary", test_not_a_dictionary);
        g_test_add_func("/options/no-fd-leak", test_no_leak_over_many_refusals);
        r = g_test_run();
        sd_bus_flush_close_unref(bus);
        return r;
}
