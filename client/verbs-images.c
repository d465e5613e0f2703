/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* list, show, clone, remove, rename, read-only */

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "escape.h"
#include "stampctl.h"
#include "table.h"

struct image {
        char *name;
        char *type;
        bool read_only;
        uint64_t crtime;
        uint64_t mtime;
        uint64_t usage;
        char *path;
        char *origin;
        uint32_t owner; /* 0 (root) until the Owner property says otherwise */
};

struct image_list {
        struct image *items;
        size_t n;
};

static void image_list_free(struct image_list *l)
{
        for (size_t i = 0; i < l->n; i++) {
                free(l->items[i].name);
                free(l->items[i].type);
                free(l->items[i].path);
                free(l->items[i].origin);
        }
        free(l->items);
        *l = (struct image_list) {0};
}

/* Fills @l (emptied by the caller's cleanup, also on failure). */
static int list_images(sd_bus *bus, struct image_list *l)
{
        _cleanup_(sd_bus_error_freep) sd_bus_error error = SD_BUS_ERROR_NULL;
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        const char *name, *type, *path;
        uint64_t crtime, mtime, usage;
        int ro, r;

        r = sd_bus_call_method(bus, STAMP_BUS_NAME, STAMP_MANAGER_PATH, STAMP_MANAGER_IFACE, "ListImages", &error,
                               &reply, NULL);
        if (r < 0)
                return log_bus_error(&error, r, "Failed to list images");

        r = sd_bus_message_enter_container(reply, 'a', "(ssbttto)");
        while (r >= 0 &&
               (r = sd_bus_message_read(reply, "(ssbttto)", &name, &type, &ro, &crtime, &mtime, &usage, &path)) > 0) {
                struct image *items = realloc(l->items, sizeof(struct image) * (l->n + 1));
                struct image *img;

                if (!items)
                        return log_error(EXIT_FAILURE_GENERIC, "Out of memory.");
                l->items = items;
                img = &l->items[l->n++];
                *img = (struct image) {
                        .name = strdup(name),
                        .type = strdup(type),
                        .read_only = ro,
                        .crtime = crtime,
                        .mtime = mtime,
                        .usage = usage,
                        .path = strdup(path),
                };
                if (!img->name || !img->type || !img->path)
                        return log_error(EXIT_FAILURE_GENERIC, "Out of memory.");
        }
        if (r < 0)
                return log_error(EXIT_FAILURE_GENERIC, "Failed to parse the list of images: %s", strerror(-r));
        return EXIT_OK;
}

static struct image *image_by_path(struct image_list *l, const char *path)
{
        for (size_t i = 0; i < l->n; i++)
                if (strcmp(l->items[i].path, path) == 0)
                        return &l->items[i];
        return NULL;
}

/* Origin and owner of every image in one round trip: ObjectManager.GetManagedObjects. */
static int fill_origins_managed(sd_bus *bus, struct image_list *l)
{
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        const char *path, *iface, *prop;
        int r;

        r = sd_bus_call_method(bus, STAMP_BUS_NAME, STAMP_MANAGER_PATH, "org.freedesktop.DBus.ObjectManager",
                               "GetManagedObjects", NULL, &reply, NULL);
        if (r < 0)
                return r;

        r = sd_bus_message_enter_container(reply, 'a', "{oa{sa{sv}}}");
        if (r < 0)
                return r;
        while ((r = sd_bus_message_enter_container(reply, 'e', "oa{sa{sv}}")) > 0) {
                struct image *img;

                r = sd_bus_message_read(reply, "o", &path);
                if (r < 0)
                        return r;
                img = image_by_path(l, path);
                if (!img) {
                        r = sd_bus_message_skip(reply, "a{sa{sv}}");
                        if (r < 0)
                                return r;
                        r = sd_bus_message_exit_container(reply);
                        if (r < 0)
                                return r;
                        continue;
                }

                r = sd_bus_message_enter_container(reply, 'a', "{sa{sv}}");
                if (r < 0)
                        return r;
                while ((r = sd_bus_message_enter_container(reply, 'e', "sa{sv}")) > 0) {
                        r = sd_bus_message_read(reply, "s", &iface);
                        if (r < 0)
                                return r;
                        if (strcmp(iface, STAMP_IMAGE_IFACE) != 0) {
                                r = sd_bus_message_skip(reply, "a{sv}");
                                if (r < 0)
                                        return r;
                        } else {
                                r = sd_bus_message_enter_container(reply, 'a', "{sv}");
                                if (r < 0)
                                        return r;
                                while ((r = sd_bus_message_enter_container(reply, 'e', "sv")) > 0) {
                                        r = sd_bus_message_read(reply, "s", &prop);
                                        if (r < 0)
                                                return r;
                                        if (strcmp(prop, "Origin") == 0) {
                                                const char *origin;
                                                r = sd_bus_message_read(reply, "v", "s", &origin);
                                                if (r < 0)
                                                        return r;
                                                free(img->origin);
                                                img->origin = strdup(origin);
                                                if (!img->origin)
                                                        return -ENOMEM;
                                        } else if (strcmp(prop, "Owner") == 0) {
                                                r = sd_bus_message_read(reply, "v", "u", &img->owner);
                                                if (r < 0)
                                                        return r;
                                        } else {
                                                r = sd_bus_message_skip(reply, "v");
                                                if (r < 0)
                                                        return r;
                                        }
                                        r = sd_bus_message_exit_container(reply);
                                        if (r < 0)
                                                return r;
                                }
                                if (r < 0)
                                        return r;
                                r = sd_bus_message_exit_container(reply);
                                if (r < 0)
                                        return r;
                        }
                        r = sd_bus_message_exit_container(reply);
                        if (r < 0)
                                return r;
                }
                if (r < 0)
                        return r;
                r = sd_bus_message_exit_container(reply);
                if (r < 0)
                        return r;
                r = sd_bus_message_exit_container(reply);
                if (r < 0)
                        return r;
        }
        return r;
}

static void fill_origins(sd_bus *bus, struct image_list *l)
{
        int r;

        r = fill_origins_managed(bus, l);
        if (r >= 0)
                return;
        log_debug("GetManagedObjects failed (%s); asking each image for its origin and owner.", strerror(-r));

        for (size_t i = 0; i < l->n; i++) {
                _cleanup_(freep) char *origin = NULL;
                if (sd_bus_get_property_string(bus, STAMP_BUS_NAME, l->items[i].path, STAMP_IMAGE_IFACE, "Origin", NULL,
                                               &origin) >= 0) {
                        free(l->items[i].origin);
                        l->items[i].origin = steal_pointer(&origin);
                }
                (void) sd_bus_get_property_trivial(bus, STAMP_BUS_NAME, l->items[i].path, STAMP_IMAGE_IFACE, "Owner",
                                                   NULL, 'u', &l->items[i].owner);
        }
}

/* How list fits its table into the width it has (table_width()). */
struct list_layout {
        bool short_timestamps; /* "2024-01-02 03:04" instead of "Tue 2024-01-02 03:04:05 CET" */
        bool origin_column;    /* not in a text --tree: the tree says it */
        size_t name_max;       /* names longer are ellipsized; 0: no limit */
        size_t origin_max;
};

static int image_row(struct libscols_table *t, struct libscols_line *parent, const struct image *img,
                     const struct list_layout *layout, unsigned depth, struct libscols_line **ret)
{
        struct libscols_line *line = scols_table_new_line(t, parent);
        char buf[FORMAT_TIMESTAMP_MAX];
        const char *origin = img->origin && *img->origin ? img->origin : NULL;

        if (!line)
                return -ENOMEM;
        if (ret)
                *ret = line;

        table_set(line, 0, "%s", img->name);
        table_set(line, 1, "%s", img->type);
        if (table_style.json) {
                table_set(line, 2, "%s", img->read_only ? "1" : "0");
                table_set(line, 3, "%" PRIu32, img->owner);
                if (img->usage == UINT64_MAX)
                        table_set(line, 4, NULL);
                else
                        table_set(line, 4, "%" PRIu64, img->usage);
                table_set(line, 5, "%" PRIu64, img->crtime);
                table_set(line, 6, "%" PRIu64, img->mtime);
                table_set(line, 7, "%s", origin ? origin : "");
                return 0;
        }

        if (layout->name_max > 0) {
                /* The tree's lines take two columns a level. */
                size_t room = layout->name_max > 2 * depth + 2 ? layout->name_max - 2 * depth : 2;
                _cleanup_(freep) char *name = ellipsize(img->name, room);
                table_set(line, 0, "%s", name ? name : img->name);
        }
        table_set(line, 2, "%s", img->read_only ? "yes" : "no");
        if (img->read_only && table_style.colors)
                scols_cell_set_color(scols_line_get_cell(line, 2), "red");
        table_set(line, 3, "%s", format_user(buf, sizeof(buf), img->owner));
        table_set(line, 4, "%s", format_bytes(buf, sizeof(buf), img->usage));
        if (layout->short_timestamps) {
                table_set(line, 5, "%s", format_timestamp_short(buf, sizeof(buf), img->crtime));
                table_set(line, 6, "%s", format_timestamp_short(buf, sizeof(buf), img->mtime));
        } else {
                table_set(line, 5, "%s", format_timestamp(buf, sizeof(buf), img->crtime));
                table_set(line, 6, "%s", format_timestamp(buf, sizeof(buf), img->mtime));
        }
        if (layout->origin_column) {
                /* The origin is read from the image: escaped on a terminal (JSON escapes its own). */
                _cleanup_(freep) char *shown = origin ? text_escape(origin, 0, ESCAPE_TERMINAL) : NULL;
                _cleanup_(freep) char *cut =
                        shown && layout->origin_max > 0 ? ellipsize(shown, layout->origin_max) : NULL;
                table_set(line, 7, "%s", cut ? cut : shown ? shown : "-");
        }
        return 0;
}

#define MAX(a, b) ((a) > (b) ? (a) : (b))

/* Chooses short timestamps, then ellipsized names and origins, as far as @width needs (0: no limit). */
static void list_fit(const struct image_list *l, unsigned width, struct list_layout *layout)
{
        char buf[FORMAT_TIMESTAMP_MAX];
        size_t name = strlen("NAME"), type = strlen("TYPE"), owner = strlen("OWNER"), usage = strlen("USAGE"),
               origin = layout->origin_column ? strlen("ORIGIN") : 0, stamp = strlen("MODIFIED"), stamp_short, fixed,
               total;

        if (width == 0)
                return;
        for (size_t i = 0; i < l->n; i++) {
                const struct image *img = &l->items[i];
                name = MAX(name, strlen(img->name) + (arg_tree ? 2 : 0));
                type = MAX(type, strlen(img->type));
                owner = MAX(owner, strlen(format_user(buf, sizeof buf, img->owner)));
                usage = MAX(usage, strlen(format_bytes(buf, sizeof buf, img->usage)));
                stamp = MAX(stamp, strlen(format_timestamp(buf, sizeof buf, img->crtime)));
                stamp = MAX(stamp, strlen(format_timestamp(buf, sizeof buf, img->mtime)));
                if (layout->origin_column && img->origin)
                        origin = MAX(origin, strlen(img->origin));
        }
        stamp_short = MAX(strlen("MODIFIED"), strlen("2024-01-02 03:04"));
        /* columns, and one space between each two */
        fixed = type + strlen("RO") + owner + usage + (layout->origin_column ? 7 : 6);
        total = fixed + name + origin + 2 * stamp;
        if (total <= width)
                return;
        layout->short_timestamps = true;
        total = fixed + name + origin + 2 * stamp_short;
        /* Then the names give way, the longer first, never below 8 characters. */
        while (total > width && (name > 8 || origin > 8)) {
                if (name >= origin && name > 8)
                        name--;
                else
                        origin--;
                total--;
        }
        layout->name_max = name;
        layout->origin_max = layout->origin_column ? origin : 0;
}

int verb_list(sd_bus *bus, int argc, char **argv)
{
        _cleanup_(scols_unref_tablep) struct libscols_table *t = NULL;
        _cleanup_(image_list_free) struct image_list l = {0};
        struct list_layout layout = {};
        int r;

        r = list_images(bus, &l);
        if (r != EXIT_OK)
                return r;
        fill_origins(bus, &l);
        if (arg_mine) {
                /* One's own images only; a clone's origin may then be missing, and it stands at the top. */
                size_t kept = 0;
                uid_t me = getuid();
                for (size_t i = 0; i < l.n; i++) {
                        if (l.items[i].owner == me) {
                                l.items[kept++] = l.items[i];
                                continue;
                        }
                        free(l.items[i].name);
                        free(l.items[i].type);
                        free(l.items[i].path);
                        free(l.items[i].origin);
                }
                l.n = kept;
        }

        layout.origin_column = table_style.json || !arg_tree;
        if (!table_style.json)
                list_fit(&l, table_width(), &layout);

        t = table_new("images");
        if (!t)
                return log_error(EXIT_FAILURE_GENERIC, "Out of memory.");
        table_add_column(t, "NAME", arg_tree ? SCOLS_FL_TREE : 0, SCOLS_JSON_STRING);
        table_add_column(t, "TYPE", 0, SCOLS_JSON_STRING);
        table_add_column(t, "RO", 0, SCOLS_JSON_BOOLEAN);
        table_add_column(t, "OWNER", 0, SCOLS_JSON_NUMBER);
        table_add_column(t, "USAGE", SCOLS_FL_RIGHT, SCOLS_JSON_NUMBER);
        /* On a narrow terminal the timestamps and the origin give way; elsewhere
         * nothing is cut. */
        table_add_column(t, "CREATED", SCOLS_FL_TRUNC, SCOLS_JSON_NUMBER);
        table_add_column(t, "MODIFIED", SCOLS_FL_TRUNC, SCOLS_JSON_NUMBER);
        if (layout.origin_column)
                table_add_column(t, "ORIGIN", SCOLS_FL_TRUNC, SCOLS_JSON_STRING);

        {
                /* Without --tree every image is a root, so this only sorts by name. */
                _cleanup_(freep) const char **names = calloc(l.n + 1, sizeof(char *));
                _cleanup_(freep) const char **origins = calloc(l.n + 1, sizeof(char *));
                _cleanup_(freep) size_t *order = calloc(l.n + 1, sizeof(size_t));
                _cleanup_(freep) long *parent = calloc(l.n + 1, sizeof(long));
                _cleanup_(freep) unsigned *depth = calloc(l.n + 1, sizeof(unsigned));
                _cleanup_(freep) struct libscols_line **lines = calloc(l.n + 1, sizeof(struct libscols_line *));

                if (!names || !origins || !order || !parent || !depth || !lines)
                        return log_error(EXIT_FAILURE_GENERIC, "Out of memory.");
                for (size_t i = 0; i < l.n; i++) {
                        names[i] = l.items[i].name;
                        origins[i] = arg_tree ? l.items[i].origin : NULL;
                }
                tree_order(names, origins, l.n, order, parent, depth);
                r = 0;
                for (size_t k = 0; k < l.n && r >= 0; k++) {
                        size_t i = order[k];
                        r = image_row(t, parent[i] >= 0 ? lines[parent[i]] : NULL, &l.items[i], &layout, depth[i],
                                      &lines[i]);
                }
        }
        if (r < 0)
                return log_error(EXIT_FAILURE_GENERIC, "Failed to build the table: %s", strerror(-r));

        r = table_print(t, "image", "images");
        if (r < 0)
                return log_error(EXIT_FAILURE_GENERIC, "Failed to print the table: %s", strerror(-r));
        return EXIT_OK;
}

/* How show prints one property. */
struct field {
        const char *property;
        const char *label;
};

static const struct field image_fields[] = {
        {"Name", "Name"},
        {"Path", "Path"},
        {"Type", "Type"},
        {"ReadOnly", "Read-only"},
        {"Template", "Template"},
        {"CreationTimestamp", "Created"},
        {"ModificationTimestamp", "Modified"},
        {"Usage", "Usage"},
        {"UsageExclusive", "Exclusive"},
        {"Limit", "Limit"},
        {"Origin", "Origin"},
        {"Owner", "Owner"},
        {"Recipe", "Recipe"},
        {"OSRelease", "OS release"},
        {},
};

static const struct field pool_fields[] = {
        {"PoolPath", "Pool"}, {"PoolUsage", "Usage"}, {"PoolLimit", "Limit"}, {"CacheUsage", "Package cache"}, {},
};

struct rendered {
        char *property;
        char *text; /* may hold several lines */
};

struct rendered_list {
        struct rendered *items;
        size_t n;
};

static void rendered_list_free(struct rendered_list *l)
{
        for (size_t i = 0; i < l->n; i++) {
                free(l->items[i].property);
                free(l->items[i].text);
        }
        free(l->items);
        *l = (struct rendered_list) {0};
}

/* Takes @text. */
static int rendered_list_add(struct rendered_list *l, const char *property, char *text)
{
        struct rendered *items = realloc(l->items, sizeof(struct rendered) * (l->n + 1));

        if (!items) {
                free(text);
                return -ENOMEM;
        }
        l->items = items;
        l->items[l->n] = (struct rendered) {.property = strdup(property), .text = text};
        if (!l->items[l->n].property) {
                free(text);
                return -ENOMEM;
        }
        l->n++;
        return 0;
}

static bool is_size_property(const char *name)
{
        return strstr(name, "Usage") || strstr(name, "Limit") || strstr(name, "Size");
}

static bool is_timestamp_key(const char *name)
{
        return strstr(name, "Timestamp") || strcasecmp(name, "created") == 0 || strcasecmp(name, "modified") == 0;
}

/* A basic-typed value with the property's meaning applied: sizes, timestamps. */
static int render_scalar(sd_bus_message *m, const char *name, const char *sig, char **ret)
{
        char buf[FORMAT_TIMESTAMP_MAX];
        uint64_t t;
        int r;

        if (strcmp(sig, "t") == 0 && (is_size_property(name) || is_timestamp_key(name))) {
                r = sd_bus_message_read_basic(m, 't', &t);
                if (r < 0)
                        return r;
                if (is_timestamp_key(name))
                        format_timestamp(buf, sizeof(buf), t);
                else
                        format_bytes(buf, sizeof(buf), t);
                *ret = strdup(buf);
                return *ret ? 0 : -ENOMEM;
        }
        if (strcmp(sig, "u") == 0 && strcmp(name, "Owner") == 0) {
                uint32_t uid;
                r = sd_bus_message_read_basic(m, 'u', &uid);
                if (r < 0)
                        return r;
                format_user(buf, sizeof(buf), uid);
                *ret = strdup(buf);
                return *ret ? 0 : -ENOMEM;
        }
        return text_from_value(m, ret);
}

/* a{sv} and a{ss}: one "key: value" (a{sv}) or "KEY=value" (a{ss}) per line. */
static int render_dict(sd_bus_message *m, const char *sig, char **ret)
{
        _cleanup_(freep) char *buf = NULL;
        bool variant = strcmp(sig, "a{sv}") == 0;
        size_t len = 0;
        const char *key;
        FILE *f;
        int r;

        r = sd_bus_message_enter_container(m, 'a', sig + 1);
        if (r < 0)
                return r;
        f = open_memstream(&buf, &len);
        if (!f)
                return -ENOMEM;
        for (bool first = true; (r = sd_bus_message_enter_container(m, 'e', variant ? "sv" : "ss")) > 0;
             first = false) {
                _cleanup_(freep) char *value = NULL;

                r = sd_bus_message_read(m, "s", &key);
                if (r < 0)
                        break;
                if (variant) {
                        const char *contents;
                        r = sd_bus_message_peek_type(m, NULL, &contents);
                        if (r < 0)
                                break;
                        r = sd_bus_message_enter_container(m, 'v', contents);
                        if (r < 0)
                                break;
                        r = render_scalar(m, key, contents, &value);
                        if (r < 0)
                                break;
                        r = sd_bus_message_exit_container(m);
                        if (r < 0)
                                break;
                } else {
                        r = text_from_value(m, &value);
                        if (r < 0)
                                break;
                }
                r = sd_bus_message_exit_container(m);
                if (r < 0)
                        break;
                {
                        /* os-release keys are the image's, as much as its values. */
                        _cleanup_(freep) char *shown_key = text_escape(key, 0, ESCAPE_TERMINAL);
                        if (!shown_key) {
                                r = -ENOMEM;
                                break;
                        }
                        fprintf(f, variant ? "%s%s: %s" : "%s%s=%s", first ? "" : "\n", shown_key, value);
                }
        }
        if (fclose(f) != 0 && r >= 0)
                r = -ENOMEM;
        if (r < 0)
                return r;
        r = sd_bus_message_exit_container(m);
        if (r < 0)
                return r;
        *ret = len > 0 ? steal_pointer(&buf) : strdup("-");
        return *ret ? 0 : -ENOMEM;
}

static void print_multiline(unsigned width, const char *label, const char *text)
{
        const char *p = text;

        printf("%*s: ", (int) width, label);
        for (;;) {
                size_t n = strcspn(p, "\n");
                printf("%.*s\n", (int) n, p);
                if (!p[n])
                        break;
                p += n + 1;
                printf("%*s  ", (int) width, "");
        }
}

static const char *rendered_get(struct rendered *r, size_t n, const char *property)
{
        for (size_t i = 0; i < n; i++)
                if (r[i].property && strcmp(r[i].property, property) == 0)
                        return r[i].text;
        return NULL;
}

/* Finds KEY=value in an a{ss} rendering. */
static char *os_release_value(const char *text, const char *key)
{
        size_t k = strlen(key);

        for (const char *p = text; p && *p;) {
                size_t n = strcspn(p, "\n");
                if (n > k && strncmp(p, key, k) == 0 && p[k] == '=')
                        return strndup(p + k + 1, n - k - 1);
                p += n;
                if (*p)
                        p++;
        }
        return NULL;
}

static bool field_known(const struct field *fields, const char *property)
{
        for (const struct field *f = fields; f->property; f++)
                if (strcmp(f->property, property) == 0)
                        return true;
        return false;
}

/* Renders every property of a GetAll reply as text. */
static int render_properties(sd_bus_message *reply, struct rendered_list *l)
{
        const char *name, *contents;
        int r;

        r = sd_bus_message_enter_container(reply, 'a', "{sv}");
        while (r >= 0 && (r = sd_bus_message_enter_container(reply, 'e', "sv")) > 0) {
                char *text = NULL;

                r = sd_bus_message_read(reply, "s", &name);
                if (r >= 0)
                        r = sd_bus_message_peek_type(reply, NULL, &contents);
                if (r >= 0)
                        r = sd_bus_message_enter_container(reply, 'v', contents);
                if (r < 0)
                        return r;
                if (strcmp(contents, "a{sv}") == 0 || strcmp(contents, "a{ss}") == 0)
                        r = render_dict(reply, contents, &text);
                else
                        r = render_scalar(reply, name, contents, &text);
                if (r >= 0)
                        r = rendered_list_add(l, name, text);
                if (r >= 0)
                        r = sd_bus_message_exit_container(reply);
                if (r >= 0)
                        r = sd_bus_message_exit_container(reply);
        }
        return r;
}

static int print_properties_text(sd_bus *bus, const char *path, const char *iface, const struct field *fields)
{
        _cleanup_(sd_bus_error_freep) sd_bus_error error = SD_BUS_ERROR_NULL;
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        _cleanup_(rendered_list_free) struct rendered_list l = {0};
        unsigned width = 0;
        int r;

        r = sd_bus_call_method(bus, STAMP_BUS_NAME, path, "org.freedesktop.DBus.Properties", "GetAll", &error, &reply,
                               "s", iface);
        if (r < 0)
                return log_bus_error(&error, r, "Failed to get properties");

        r = render_properties(reply, &l);
        if (r < 0)
                return log_error(EXIT_FAILURE_GENERIC, "Failed to parse the properties: %s", strerror(-r));

        for (const struct field *f = fields; f->property; f++)
                if (strlen(f->label) > width)
                        width = (unsigned) strlen(f->label);
        for (size_t i = 0; i < l.n; i++)
                if (!field_known(fields, l.items[i].property) && strlen(l.items[i].property) > width)
                        width = (unsigned) strlen(l.items[i].property);

        /* Known properties in a fixed order, then whatever else the daemon has. */
        for (const struct field *f = fields; f->property; f++) {
                const char *text = rendered_get(l.items, l.n, f->property);
                if (!text)
                        continue;
                if (strcmp(f->property, "OSRelease") == 0) {
                        _cleanup_(freep) char *pretty = os_release_value(text, "PRETTY_NAME");
                        if (!pretty)
                                pretty = os_release_value(text, "NAME");
                        if (pretty)
                                print_field(width, "OS", pretty);
                }
                if (strcmp(f->property, "ReadOnly") == 0 && strcmp(text, "yes") == 0 && color_highlight())
                        printf("%*s: %syes\033[0m\n", (int) width, f->label, color_highlight());
                else
                        print_multiline(width, f->label, text);
        }
        for (size_t i = 0; i < l.n; i++)
                if (!field_known(fields, l.items[i].property))
                        print_multiline(width, l.items[i].property, l.items[i].text);
        return EXIT_OK;
}

static int get_image_path(sd_bus *bus, const char *name, char **ret)
{
        _cleanup_(sd_bus_error_freep) sd_bus_error error = SD_BUS_ERROR_NULL;
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        const char *path;
        int r;

        r = sd_bus_call_method(bus, STAMP_BUS_NAME, STAMP_MANAGER_PATH, STAMP_MANAGER_IFACE, "GetImage", &error, &reply,
                               "s", name);
        if (r < 0)
                return log_bus_error(&error, r, "Failed to get the image");
        r = sd_bus_message_read(reply, "o", &path);
        if (r < 0)
                return log_error(EXIT_FAILURE_GENERIC, "Failed to parse the reply of GetImage: %s", strerror(-r));
        *ret = strdup(path);
        return *ret ? EXIT_OK : log_error(EXIT_FAILURE_GENERIC, "Out of memory.");
}

static bool image_exists(sd_bus *bus, const char *name)
{
        _cleanup_(sd_bus_error_freep) sd_bus_error error = SD_BUS_ERROR_NULL;
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;

        /* Anything but NoSuchImage counts as there: get_image_path() then says what went wrong. */
        return sd_bus_call_method(bus, STAMP_BUS_NAME, STAMP_MANAGER_PATH, STAMP_MANAGER_IFACE, "GetImage", &error,
                                  &reply, "s", name) >= 0 ||
               !sd_bus_error_has_name(&error, STAMP_ERROR_NO_SUCH_IMAGE);
}

static bool machine_running(sd_bus *bus, const char *name)
{
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        const char *n, *image, *state, *path;
        uint32_t leader;
        int r;

        r = sd_bus_call_method(bus, STAMP_BUS_NAME, STAMP_MANAGER_PATH, STAMP_MANAGER_IFACE, "ListMachines", NULL,
                               &reply, NULL);
        if (r >= 0)
                r = sd_bus_message_enter_container(reply, 'a', "(sssuo)");
        while (r >= 0 && (r = sd_bus_message_read(reply, "(sssuo)", &n, &image, &state, &leader, &path)) > 0)
                if (strcmp(n, name) == 0)
                        return true;
        return false;
}

/* The caller's own images against the limits stampd.conf sets, below the pool's lines. */
static void print_own_usage(sd_bus *bus)
{
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        char used[FORMAT_BYTES_MAX], max[FORMAT_BYTES_MAX], user[256];
        uint32_t images, images_max;
        uint64_t bytes, bytes_max;
        int r;

        r = sd_bus_call_method(bus, STAMP_BUS_NAME, STAMP_MANAGER_PATH, STAMP_MANAGER_IFACE, "GetUserUsage", NULL,
                               &reply, "u", (uint32_t) getuid());
        if (r >= 0)
                r = sd_bus_message_read(reply, "uutt", &images, &images_max, &bytes, &bytes_max);
        if (r < 0)
                return; /* an older stampd: the pool's lines are all there is */
        format_user(user, sizeof(user), (uint32_t) getuid());
        if (images_max == UINT32_MAX)
                printf("Yours: %" PRIu32 " images of %s, no limit\n", images, user);
        else
                printf("Yours: %" PRIu32 " of %" PRIu32 " images of %s\n", images, images_max, user);
        if (bytes == UINT64_MAX)
                printf("       bytes used unknown (the store keeps no quota groups)\n");
        else if (bytes_max == UINT64_MAX)
                printf("       %s used, no limit\n", format_bytes(used, sizeof(used), bytes));
        else
                printf("       %s used of %s\n", format_bytes(used, sizeof(used), bytes),
                       format_bytes(max, sizeof(max), bytes_max));
}

int verb_show(sd_bus *bus, int argc, char **argv)
{
        _cleanup_(freep) char *path = NULL;
        int r;

        if (argc < 2) {
                if (arg_json)
                        return print_properties_json(bus, STAMP_MANAGER_PATH, STAMP_MANAGER_IFACE);
                r = print_properties_text(bus, STAMP_MANAGER_PATH, STAMP_MANAGER_IFACE, pool_fields);
                if (r == EXIT_OK)
                        print_own_usage(bus);
                return r;
        }

        /* machinectl's status NAME is a machine's: with no image of that name, a machine of it. */
        if (!image_exists(bus, argv[1]) && machine_running(bus, argv[1]))
                return verb_machine_status(bus, argc, argv);

        r = get_image_path(bus, argv[1], &path);
        if (r != EXIT_OK)
                return r;
        if (arg_json)
                return print_properties_json(bus, path, STAMP_IMAGE_IFACE);
        return print_properties_text(bus, path, STAMP_IMAGE_IFACE, image_fields);
}

/* Calls a mutating Manager method with the given arguments; prints the error. */
static int call_manager(sd_bus *bus, const char *member, const char *what, const char *types, ...)
{
        _cleanup_(sd_bus_error_freep) sd_bus_error error = SD_BUS_ERROR_NULL;
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL;
        va_list ap;
        int r;

        r = bus_new_manager_call(bus, &m, member);
        if (r < 0)
                return log_error(EXIT_FAILURE_GENERIC, "Failed to create a bus message: %s", strerror(-r));
        va_start(ap, types);
        r = sd_bus_message_appendv(m, types, ap);
        va_end(ap);
        if (r < 0)
                return log_error(EXIT_FAILURE_GENERIC, "Failed to create a bus message: %s", strerror(-r));

        r = bus_call_mutating(bus, m, &error, NULL);
        if (r < 0)
                return log_bus_error(&error, r, what);
        return EXIT_OK;
}

int verb_clone(sd_bus *bus, int argc, char **argv)
{
        return call_manager(bus, "CloneImageEx", "Failed to clone the image", "ssa{sv}", argv[1], argv[2], 2,
                            "read_only", "b", (int) arg_read_only, "keep_identity", "b", (int) arg_keep_identity);
}

int verb_remove(sd_bus *bus, int argc, char **argv)
{
        int ret = EXIT_OK;

        for (int i = 1; i < argc; i++) {
                int r = arg_with_snapshots
                                ? call_manager(bus, "RemoveImageEx", "Failed to remove the image", "sa{sv}", argv[i], 1,
                                               "with_snapshots", "b", 1)
                                : call_manager(bus, "RemoveImage", "Failed to remove the image", "s", argv[i]);
                if (r != EXIT_OK && ret == EXIT_OK)
                        ret = r;
        }
        return ret;
}

int verb_rename(sd_bus *bus, int argc, char **argv)
{
        return call_manager(bus, "RenameImage", "Failed to rename the image", "ss", argv[1], argv[2]);
}

int verb_read_only(sd_bus *bus, int argc, char **argv)
{
        int b = 1;

        if (argc > 2) {
                b = parse_boolean(argv[2]);
                if (b < 0)
                        return log_error(EXIT_USAGE, "Expected yes or no, not '%s'.", argv[2]);
        }
        return call_manager(bus, "MarkImageReadOnly", "Failed to change the image", "sb", argv[1], b);
}
