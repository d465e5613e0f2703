/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* The error map (daemon/errors.c): errno → stamp's named errors and back, as callers see them. */
#include <glib.h>

#include "errors.h"

static const struct {
        int error;
        const char *name;
} expected[] = {
        {ENOENT, STAMP_ERROR_NO_SUCH_IMAGE},     {EEXIST, STAMP_ERROR_IMAGE_EXISTS},
        {ENOTEMPTY, STAMP_ERROR_IMAGE_EXISTS},   {EBUSY, STAMP_ERROR_IMAGE_BUSY},
        {EROFS, STAMP_ERROR_IMAGE_READ_ONLY},    {EBADMSG, STAMP_ERROR_BAD_ARCHIVE},
        {EOPNOTSUPP, STAMP_ERROR_NOT_SUPPORTED}, {ENOSPC, STAMP_ERROR_NO_SPACE},
        {EDQUOT, STAMP_ERROR_NO_SPACE},          {ENOMEM, SD_BUS_ERROR_NO_MEMORY},
        {EINVAL, SD_BUS_ERROR_INVALID_ARGS},
};

static void test_name_from_errno(void)
{
        for (size_t i = 0; i < G_N_ELEMENTS(expected); i++) {
                g_assert_cmpstr(stamp_error_name_from_errno(expected[i].error), ==, expected[i].name);
                g_assert_cmpstr(stamp_error_name_from_errno(-expected[i].error), ==, expected[i].name);
        }
        g_assert_null(stamp_error_name_from_errno(0));
        g_assert_null(stamp_error_name_from_errno(EIO));
        g_assert_null(stamp_error_name_from_errno(EXDEV));
        g_assert_null(stamp_error_name_from_errno(INT_MIN + 1));
}

static void test_set_errnof(void)
{
        for (size_t i = 0; i < G_N_ELEMENTS(expected); i++) {
                sd_bus_error e = SD_BUS_ERROR_NULL;

                g_assert_cmpint(stamp_error_set_errnof(&e, expected[i].error, "image %s: %d", "web", 42), ==,
                                -expected[i].error);
                g_assert_cmpstr(e.name, ==, expected[i].name);
                g_assert_cmpstr(e.message, ==, "image web: 42");
                sd_bus_error_free(&e);
        }
        {
                /* an errno without a name of its own: the generic one, still with the words */
                sd_bus_error e = SD_BUS_ERROR_NULL;
                g_autofree char *longmsg = g_strnfill(5000, 'm');

                g_assert_cmpint(stamp_error_set_errnof(&e, -EIO, "%s", longmsg), ==, -EIO);
                g_assert_cmpstr(e.name, ==, SD_BUS_ERROR_FAILED);
                g_assert_cmpuint(strlen(e.message), <, 5000); /* cut, not overflowed */
                g_assert_cmpuint(strlen(e.message), >, 0);
                sd_bus_error_free(&e);
        }
}

static void test_check_name(void)
{
        sd_bus_error e = SD_BUS_ERROR_NULL;
        g_autofree char *longname = g_strnfill(200, 'x');

        g_assert_cmpint(stamp_error_check_name(&e, "image name", "ok", NULL), ==, 0);
        g_assert_false(sd_bus_error_is_set(&e));

        g_assert_cmpint(stamp_error_check_name(&e, "image name", "a\x1b[2Jb", "it has a bad character"), <, 0);
        g_assert_cmpstr(e.name, ==, STAMP_ERROR_INVALID_NAME);
        g_assert_cmpstr(e.message, ==, "Invalid image name \"a\\033[2Jb\": it has a bad character");
        sd_bus_error_free(&e);

        g_assert_cmpint(stamp_error_check_name(&e, "machine name", longname, "it is too long"), <, 0);
        g_assert_cmpstr(e.message, ==, "Invalid machine name \"(too long to show)\": it is too long");
        sd_bus_error_free(&e);
}

static void test_map_round_trip(void)
{
        /* Registered at start, the map lets a handler return -errno and the caller see the name; and
         * every name of SPEC.md is in it. */
        static const char *const all[] = {
                STAMP_ERROR_NO_SUCH_IMAGE,  STAMP_ERROR_IMAGE_EXISTS,    STAMP_ERROR_INVALID_NAME,
                STAMP_ERROR_IMAGE_BUSY,     STAMP_ERROR_IMAGE_READ_ONLY, STAMP_ERROR_NO_SUCH_MACHINE,
                STAMP_ERROR_MACHINE_EXISTS, STAMP_ERROR_NO_SUCH_JOB,     STAMP_ERROR_UNSUPPORTED_FORMAT,
                STAMP_ERROR_BAD_ARCHIVE,    STAMP_ERROR_NOT_SUPPORTED,   STAMP_ERROR_NO_SPACE,
        };

        g_assert_cmpint(sd_bus_error_add_map(stamp_error_map), >=, 0);
        for (size_t i = 0; i < G_N_ELEMENTS(all); i++) {
                gboolean in_map = FALSE;
                sd_bus_error e = SD_BUS_ERROR_NULL;

                for (const sd_bus_error_map *m = stamp_error_map; m->name; m++)
                        if (m->name && g_str_equal(m->name, all[i]))
                                in_map = TRUE;
                g_assert_true(in_map);
                sd_bus_error_set(&e, all[i], "x");
                g_assert_cmpint(sd_bus_error_get_errno(&e), >, 0);
                sd_bus_error_free(&e);
        }
        /* errno → name → errno keeps the errno's meaning for stamp's own names */
        for (size_t i = 0; i < G_N_ELEMENTS(expected); i++) {
                sd_bus_error e = SD_BUS_ERROR_NULL;
                int back;

                sd_bus_error_set(&e, expected[i].name, "x");
                back = sd_bus_error_get_errno(&e);
                g_assert_cmpstr(stamp_error_name_from_errno(back), ==, expected[i].name);
                sd_bus_error_free(&e);
        }
}

int main(int argc, char *argv[])
{
        g_test_init(&argc, &argv, NULL);
        g_test_add_func("/errors/name-from-errno", test_name_from_errno);
        g_test_add_func("/errors/set-errnof", test_set_errnof);
        g_test_add_func("/errors/map-round-trip", test_map_round_trip);
        g_test_add_func("/errors/check-name", test_check_name);
        return g_test_run();
}
