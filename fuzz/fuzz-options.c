/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* The a{sv} option reader (daemon/options.c) on dictionaries built from the fuzz input: random keys
 * (known, unknown, repeated, with control bytes), values of every D-Bus type including nested
 * variants, dictionaries and huge arrays. A small model here says what the reader must do with each
 * dictionary; the reader must agree: accepted values land in their fields, and every refusal is
 * InvalidArgs naming the offending key, with no string or fd kept. */
#include <dirent.h>
#include <fcntl.h>
#include <stddef.h>

#include <glib.h>

#include "fuzz-util.h"
#include "options.h"
#include "template.h"

/* CreateTemplate's own table: one option of each type. */
#define table template_options
typedef TemplateOptions Opts;

static const char *const extra_keys[] = {"", "Variant", "variant ", "include\n", "stdin", "name", "verify", "\x1b[2J"};

#define TABLE_MAX 16

static sd_bus *bus;
static int dev_null = -1;
static size_t n_table;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
        while (table[n_table].key)
                n_table++;
        if (n_table == 0 || n_table > TABLE_MAX)
                abort();
        bus = fuzz_bus_new();
        dev_null = open("/dev/null", O_RDONLY | O_CLOEXEC);
        return dev_null < 0 ? -1 : 0;
}

static unsigned count_fds(void)
{
        DIR *d = opendir("/proc/self/fd");
        struct dirent *de;
        unsigned n = 0;

        if (!d)
                abort();
        while ((de = readdir(d)))
                n += de->d_name[0] != '.';
        closedir(d);
        return n;
}

/* What the model expects of one entry. */
typedef struct Expect {
        const OptionSpec *spec; /* NULL: unknown key */
        bool ok;                /* right type, within the caps */
        char *s;                /* for a string value */
        GPtrArray *strv;        /* for an array of strings */
        int b;
} Expect;

/* Valid UTF-8 without NUL, from the input (D-Bus strings must be). Long strings repeat a pattern. */
static char *gen_string(FuzzInput *in)
{
        uint8_t mode = fuzz_u8(in);
        char *s;

        if (mode < 0xf0) {
                s = fuzz_string(in, 64);
        } else {
                /* long: around the 4096-byte cap */
                size_t n = OPTIONS_STRING_MAX - 8 + fuzz_u8(in) % 16;
                if (mode == 0xff)
                        n = (size_t) fuzz_u16(in) * 8; /* up to 512 KiB */
                s = malloc(n + 1);
                if (!s)
                        abort();
                memset(s, 'a' + mode % 26, n);
                s[n] = '\0';
        }
        if (!g_utf8_validate(s, -1, NULL)) {
                char *v = g_utf8_make_valid(s, -1);
                free(s);
                s = strdup(v);
                g_free(v);
        }
        return s;
}

static int append_value(sd_bus_message *m, FuzzInput *in, int depth, Expect *e, OptionType want, bool known);

/* A nested a{sv} of a few entries with random values (never matched against the table). */
static int append_dict(sd_bus_message *m, FuzzInput *in, int depth)
{
        unsigned n = fuzz_u8(in) % 4;
        int k = sd_bus_message_open_container(m, 'a', "{sv}");

        for (unsigned i = 0; k >= 0 && i < n; i++) {
                Expect dummy = {};
                char *key = gen_string(in);
                k = sd_bus_message_open_container(m, 'e', "sv");
                if (k >= 0)
                        k = sd_bus_message_append(m, "s", key);
                if (k >= 0)
                        k = append_value(m, in, depth + 1, &dummy, OPTION_BOOL, false);
                if (k >= 0)
                        k = sd_bus_message_close_container(m);
                free(key);
                free(dummy.s);
                if (dummy.strv)
                        g_ptr_array_unref(dummy.strv);
        }
        return k >= 0 ? sd_bus_message_close_container(m) : k;
}

/* Append one variant value; tell @e whether it is what the option of type @want accepts. */
static int append_value(sd_bus_message *m, FuzzInput *in, int depth, Expect *e, OptionType want, bool known)
{
        uint8_t t = fuzz_u8(in);
        int k;

        /* Mostly the right type for a known key, so that deeper paths are reached. */
        if (known && t < 0x90) {
                switch (want) {
                case OPTION_STRING:
                        t = 0;
                        break;
                case OPTION_BOOL:
                        t = 1;
                        break;
                case OPTION_STRV:
                        t = 2;
                        break;
                case OPTION_FD:
                        t = 3;
                        break;
                case OPTION_U64: /* no such option in the table */
                        break;
                }
        } else
                t %= 13;
        if (depth > 3 && t >= 10)
                t = 1;

        e->ok = false;
        switch (t) {
        case 0: {
                e->s = gen_string(in);
                e->ok = want == OPTION_STRING && strlen(e->s) <= OPTIONS_STRING_MAX;
                return sd_bus_message_append(m, "v", "s", e->s);
        }
        case 1:
                e->b = fuzz_u8(in) & 1;
                e->ok = want == OPTION_BOOL;
                return sd_bus_message_append(m, "v", "b", e->b);
        case 2: {
                uint8_t mode = fuzz_u8(in);
                size_t n = mode < 0xf0 ? mode % 8 : OPTIONS_STRV_MAX - 2 + mode % 4;
                if (mode == 0xff)
                        n = fuzz_u16(in); /* up to 65535 entries */
                e->strv = g_ptr_array_new_with_free_func(free);
                k = sd_bus_message_open_container(m, 'v', "as");
                if (k >= 0)
                        k = sd_bus_message_open_container(m, 'a', "s");
                e->ok = want == OPTION_STRV && n <= OPTIONS_STRV_MAX;
                for (size_t i = 0; k >= 0 && i < n; i++) {
                        char *s = i < 8 ? gen_string(in) : strdup("pkg");
                        if (strlen(s) > OPTIONS_STRING_MAX)
                                e->ok = false;
                        k = sd_bus_message_append(m, "s", s);
                        g_ptr_array_add(e->strv, s);
                }
                if (k >= 0)
                        k = sd_bus_message_close_container(m);
                if (k >= 0)
                        k = sd_bus_message_close_container(m);
                return k;
        }
        case 3:
                e->ok = want == OPTION_FD;
                return sd_bus_message_append(m, "v", "h", dev_null);
        case 4:
                return sd_bus_message_append(m, "v", "i", (int32_t) fuzz_u16(in));
        case 5:
                return sd_bus_message_append(m, "v", "t", (uint64_t) fuzz_u16(in) << 40);
        case 6:
                return sd_bus_message_append(m, "v", "d", 0.5 * fuzz_u8(in));
        case 7:
                return sd_bus_message_append(m, "v", "o", "/io/stamp/Stamp1");
        case 8: {
                /* a huge byte array */
                size_t n = (size_t) fuzz_u16(in) * 16;
                void *p = NULL;
                k = sd_bus_message_open_container(m, 'v', "ay");
                if (k >= 0)
                        k = sd_bus_message_append_array_space(m, 'y', n, &p);
                if (k >= 0 && n)
                        memset(p, 0xaa, n);
                if (k >= 0)
                        k = sd_bus_message_close_container(m);
                return k;
        }
        case 9:
                return sd_bus_message_append(m, "v", "g", "a{sv}");
        case 10: {
                /* a variant in a variant */
                Expect inner = {};
                k = sd_bus_message_open_container(m, 'v', "v");
                if (k >= 0)
                        k = append_value(m, in, depth + 1, &inner, want, false);
                if (k >= 0)
                        k = sd_bus_message_close_container(m);
                free(inner.s);
                if (inner.strv)
                        g_ptr_array_unref(inner.strv);
                return k;
        }
        case 11:
                k = sd_bus_message_open_container(m, 'v', "a{sv}");
                if (k >= 0)
                        k = append_dict(m, in, depth + 1);
                if (k >= 0)
                        k = sd_bus_message_close_container(m);
                return k;
        default:
                return sd_bus_message_append(m, "v", "ah", 2, dev_null, dev_null);
        }
}

static const OptionSpec *lookup(const char *key)
{
        for (const OptionSpec *o = table; o->key; o++)
                if (strcmp(o->key, key) == 0)
                        return o;
        return NULL;
}

static void *field(Opts *o, const OptionSpec *spec)
{
        return (uint8_t *) o + spec->offset;
}

static void check_absent(Opts *o)
{
        for (const OptionSpec *spec = table; spec->key; spec++)
                switch (spec->type) {
                case OPTION_STRING:
                        FUZZ_CHECK(*(char **) field(o, spec) == NULL, "%s kept after a refusal", spec->key);
                        break;
                case OPTION_STRV:
                        FUZZ_CHECK(*(char ***) field(o, spec) == NULL, "%s kept after a refusal", spec->key);
                        break;
                case OPTION_BOOL:
                case OPTION_FD:
                        FUZZ_CHECK(*(int *) field(o, spec) == -1, "%s kept after a refusal", spec->key);
                        break;
                case OPTION_U64:
                        FUZZ_CHECK(*(uint64_t *) field(o, spec) == UINT64_MAX, "%s kept after a refusal", spec->key);
                        break;
                }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
        FuzzInput in = {data, size, 0};
        sd_bus_message *m = NULL;
        sd_bus_error error = SD_BUS_ERROR_NULL;
        Expect expect[80] = {};
        char *keys[80] = {};
        unsigned n = fuzz_u8(&in) % 80, fail_at = UINT32_MAX, fds_before;
        bool seen[TABLE_MAX] = {};
        Opts o;
        int k;

        if (sd_bus_message_new_method_call(bus, &m, "io.stamp.Stamp1", "/io/stamp/Stamp1", "io.stamp.Stamp1.Manager",
                                           "CreateTemplate") < 0)
                abort();
        k = sd_bus_message_open_container(m, 'a', "{sv}");
        for (unsigned i = 0; k >= 0 && i < n; i++) {
                uint8_t sel = fuzz_u8(&in);
                const OptionSpec *spec;

                if (sel < 0xa0)
                        keys[i] = strdup(table[sel % n_table].key);
                else if (sel < 0xc0)
                        keys[i] = strdup(extra_keys[sel % G_N_ELEMENTS(extra_keys)]);
                else
                        keys[i] = gen_string(&in);
                spec = lookup(keys[i]);
                expect[i].spec = spec;
                k = sd_bus_message_open_container(m, 'e', "sv");
                if (k >= 0)
                        k = sd_bus_message_append(m, "s", keys[i]);
                if (k >= 0)
                        k = append_value(m, &in, 0, &expect[i], spec ? spec->type : OPTION_BOOL, spec != NULL);
                if (k >= 0)
                        k = sd_bus_message_close_container(m);

                /* The model: the first entry that is unknown, repeated, of the wrong type or too big
                 * is where the reader must stop, with an error naming its key. */
                if (fail_at == UINT32_MAX) {
                        size_t idx = spec ? (size_t) (spec - table) : 0;
                        if (i >= OPTIONS_MAX || !spec || seen[idx] || !expect[i].ok)
                                fail_at = i;
                        else
                                seen[idx] = true;
                }
        }
        if (k >= 0)
                k = sd_bus_message_close_container(m);
        if (k >= 0)
                k = sd_bus_message_append(m, "s", "next-argument");
        if (k < 0)
                goto out; /* sd-bus refused to build it (e.g. too big): nothing to read */
        if (sd_bus_message_seal(m, 1, 0) < 0 || sd_bus_message_rewind(m, 1) < 0)
                abort();

        fds_before = count_fds();
        memset(&o, 0x5a, sizeof o);
        k = bus_read_options(m, table, &o, &error);

        if (fail_at != UINT32_MAX) {
                FUZZ_CHECK(k < 0, "entry %u (\"%s\") must be refused", fail_at, keys[fail_at]);
                FUZZ_CHECK(sd_bus_error_is_set(&error), "refused (%d) without an error", k);
                FUZZ_CHECK(strcmp(error.name, SD_BUS_ERROR_INVALID_ARGS) == 0, "refused with %s: %s", error.name,
                           error.message);
                if (fail_at < OPTIONS_MAX) {
                        char *shown = g_strescape(keys[fail_at], NULL);
                        char *quoted = g_strdup_printf("\"%s\"", shown);
                        FUZZ_CHECK(strstr(error.message, quoted), "\"%s\" does not name the key %s", error.message,
                                   quoted);
                        g_free(shown);
                        g_free(quoted);
                }
                for (const char *c = error.message; *c; c++)
                        FUZZ_CHECK((unsigned char) *c >= 0x20, "raw control character in \"%s\"", error.message);
                check_absent(&o);
                FUZZ_CHECK(count_fds() == fds_before, "an fd was kept after a refusal");
        } else {
                const char *next = NULL;

                FUZZ_CHECK(k >= 0, "refused a good dictionary: %s", error.message ?: "(no message)");
                for (unsigned i = 0; i < n; i++) {
                        const OptionSpec *spec = expect[i].spec;
                        switch (spec->type) {
                        case OPTION_STRING:
                                FUZZ_CHECK(strcmp(*(char **) field(&o, spec), expect[i].s) == 0, "%s", spec->key);
                                break;
                        case OPTION_BOOL:
                                FUZZ_CHECK(*(int *) field(&o, spec) == expect[i].b, "%s", spec->key);
                                break;
                        case OPTION_STRV: {
                                char **l = *(char ***) field(&o, spec);
                                FUZZ_CHECK(l && g_strv_length(l) == expect[i].strv->len, "%s", spec->key);
                                for (guint j = 0; j < expect[i].strv->len; j++)
                                        FUZZ_CHECK(strcmp(l[j], expect[i].strv->pdata[j]) == 0, "%s[%u]", spec->key, j);
                                break;
                        }
                        case OPTION_FD: {
                                int fd = *(int *) field(&o, spec);
                                FUZZ_CHECK(fd >= 3 && fcntl(fd, F_GETFD) == FD_CLOEXEC, "%s: fd %d", spec->key, fd);
                                break;
                        }
                        case OPTION_U64: /* no such option in the table */
                                break;
                        }
                }
                FUZZ_CHECK(sd_bus_message_read(m, "s", &next) > 0 && strcmp(next, "next-argument") == 0,
                           "read position after the dictionary is wrong");
                options_free(table, &o);
                check_absent(&o);
                FUZZ_CHECK(count_fds() == fds_before, "options_free() left an fd open");
        }

out:
        sd_bus_error_free(&error);
        sd_bus_message_unref(m);
        for (unsigned i = 0; i < 80; i++) {
                free(keys[i]);
                free(expect[i].s);
                if (expect[i].strv)
                        g_ptr_array_unref(expect[i].strv);
        }
        return 0;
}
