/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <fcntl.h>
#include <inttypes.h>
#include <locale.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <sys/xattr.h>

#include <btrfsutil.h>
#include <json-glib/json-glib.h>
#include <pthread.h>
#include <libdeflate.h>

#include "btrfs-util.h"
#include "names.h"
#include "oci.h"
#include "owners.h"
#include "sha256.h"
#include "store.h"
#include "transfer.h"

/* PullImage and PushImage. A pull reads the manifest (the linux/amd64 one of an index), checks every
 * digest, fetches the layers it does not have into the blob cache, and applies them in order to the
 * job's hidden temporary, which becomes the image. A push writes the image as one tar layer (a
 * template) with an image config that carries stamp's annotations, uploads what the registry does not
 * have, and tags the manifest. */

/* ---- credentials ---- */

/* The credentials file (registries.conf(5) in stampd.conf(5)): a GKeyFile with a group per registry,
 * "[host:port]" with User= and Password=. Only root may read it: one that others can read, or that
 * is not root's, is ignored with a warning, since its secrets may already be out. */
static int credentials_load(JobChild *c, const char *path, const char *host, RegistryCredentials *ret)
{
        g_autoptr(GKeyFile) kf = g_key_file_new();
        g_autoptr(GError) e = NULL;
        _cleanup_close_ int fd = -1;
        g_autofree char *data = NULL;
        struct stat st;
        ssize_t n;

        *ret = (RegistryCredentials) {};
        if (isempty(path))
                return 0;
        fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
        if (fd < 0)
                return 0; /* none configured */
        if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) || st.st_size > 1024 * 1024)
                return 0;
        if (st.st_uid != 0 || (st.st_mode & 0077) != 0) {
                job_child_log(c, LOG_LEVEL_WARNING,
                              "Ignoring the registry credentials file: it must be root's and readable by root alone");
                return 0;
        }
        data = g_malloc0((size_t) st.st_size + 1);
        n = pread(fd, data, (size_t) st.st_size, 0);
        if (n != st.st_size || !g_key_file_load_from_data(kf, data, (gsize) n, G_KEY_FILE_NONE, &e)) {
                explicit_bzero(data, (size_t) st.st_size);
                job_child_log(c, LOG_LEVEL_WARNING, "Ignoring the registry credentials file: it cannot be read");
                return 0;
        }
        explicit_bzero(data, (size_t) st.st_size);
        if (!g_key_file_has_group(kf, host))
                return 0;
        ret->user = g_key_file_get_string(kf, host, "User", NULL);
        ret->password = g_key_file_get_string(kf, host, "Password", NULL);
        if (!ret->user) {
                g_free(ret->password);
                ret->password = NULL;
        }
        return 0;
}

static void credentials_done(RegistryCredentials *c)
{
        if (c->password)
                explicit_bzero(c->password, strlen(c->password));
        g_free(c->user);
        g_free(c->password);
}

/* ---- JSON ---- */

static JsonObject *json_object_of(JsonParser *p, const char *data, size_t size)
{
        JsonNode *root;

        if (!json_parser_load_from_data(p, data, (gssize) size, NULL))
                return NULL;
        root = json_parser_get_root(p);
        return root && JSON_NODE_HOLDS_OBJECT(root) ? json_node_get_object(root) : NULL;
}

static const char *json_string(JsonObject *o, const char *key)
{
        JsonNode *n = o ? json_object_get_member(o, key) : NULL;

        return n && JSON_NODE_HOLDS_VALUE(n) && json_node_get_value_type(n) == G_TYPE_STRING ? json_node_get_string(n)
                                                                                             : NULL;
}

static JsonObject *json_object_member(JsonObject *o, const char *key)
{
        JsonNode *n = o ? json_object_get_member(o, key) : NULL;

        return n && JSON_NODE_HOLDS_OBJECT(n) ? json_node_get_object(n) : NULL;
}

static JsonArray *json_array_member(JsonObject *o, const char *key)
{
        JsonNode *n = o ? json_object_get_member(o, key) : NULL;

        return n && JSON_NODE_HOLDS_ARRAY(n) ? json_node_get_array(n) : NULL;
}

typedef struct Descriptor {
        const char *media_type;
        const char *digest;
        uint64_t size;
} Descriptor;

static bool descriptor_read(JsonNode *n, Descriptor *ret)
{
        JsonObject *o = n && JSON_NODE_HOLDS_OBJECT(n) ? json_node_get_object(n) : NULL;
        JsonNode *size = o ? json_object_get_member(o, "size") : NULL;

        if (!o || !size || !JSON_NODE_HOLDS_VALUE(size) || json_node_get_value_type(size) != G_TYPE_INT64 ||
            json_node_get_int(size) < 0)
                return false;
        ret->media_type = json_string(o, "mediaType");
        ret->digest = json_string(o, "digest");
        ret->size = (uint64_t) json_node_get_int(size);
        return oci_digest_is_valid(ret->digest);
}

static bool layer_type_known(const char *t)
{
        static const char *const known[] = {
                "application/vnd.oci.image.layer.v1.tar",
                "application/vnd.oci.image.layer.v1.tar+gzip",
                "application/vnd.oci.image.layer.v1.tar+zstd",
                "application/vnd.oci.image.layer.nondistributable.v1.tar",
                "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
                "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd",
                "application/vnd.docker.image.rootfs.diff.tar.gzip",
                "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
        };
        for (size_t i = 0; t && i < ELEMENTSOF(known); i++)
                if (streq(t, known[i]))
                        return true;
        return false;
}

static void sha256_of(const void *data, size_t size, char ret[static 72])
{
        char hex[65];
        sha256_hex(data, size, hex);
        snprintf(ret, 72, "sha256:%s", hex);
}

/* ---- pull ---- */

/* The manifest for linux/amd64: @body itself, or the one an index names (fetched and checked). */
static int resolve_manifest(JobChild *c, Registry *r, const char *shown_ref, char **body, size_t *size, char **type)
{
        g_autoptr(JsonParser) p = json_parser_new();
        const char *mt;
        JsonObject *o;
        JsonArray *list;
        Descriptor chosen = {};

        o = json_object_of(p, *body, *size);
        if (!o)
                return job_child_fail(c, EBADMSG, "The manifest of %s is not a JSON object", shown_ref);
        mt = json_string(o, "mediaType") ?: *type;
        if (!streq_ptr(mt, OCI_INDEX_TYPE) && !streq_ptr(mt, DOCKER_LIST_TYPE))
                return 0;

        list = json_array_member(o, "manifests");
        for (guint i = 0; list && i < json_array_get_length(list); i++) {
                JsonNode *n = json_array_get_element(list, i);
                JsonObject *platform =
                        JSON_NODE_HOLDS_OBJECT(n) ? json_object_member(json_node_get_object(n), "platform") : NULL;
                Descriptor d;
                if (!descriptor_read(n, &d))
                        return job_child_fail(c, EBADMSG, "The index of %s has an invalid entry", shown_ref);
                if (streq_ptr(json_string(platform, "os"), "linux") &&
                    streq_ptr(json_string(platform, "architecture"), "amd64")) {
                        chosen = d;
                        break;
                }
        }
        if (!chosen.digest)
                return job_child_fail(c, EOPNOTSUPP, "The index of %s has no image for linux/amd64", shown_ref);

        _cleanup_free_ char *nb = NULL, *nt = NULL;
        size_t ns;
        char actual[72];
        int k = registry_get_manifest(r, chosen.digest, &nb, &ns, &nt, NULL);
        if (k < 0)
                return k;
        sha256_of(nb, ns, actual);
        if (!streq(actual, chosen.digest) || ns != chosen.size)
                return job_child_fail(c, EBADMSG, "The manifest %s of %s does not match its digest (it is %s)",
                                      chosen.digest, shown_ref, actual);
        free(*body);
        free(*type);
        *body = TAKE_PTR(nb);
        *size = ns;
        *type = TAKE_PTR(nt);
        return 0;
}

static int make_temporary(JobChild *c, const char *name)
{
        int subvolume_error, k;

        k = store_make_tree(c->store_fd, c->store_is_btrfs, c->temp_name, &subvolume_error);
        if (subvolume_error != 0)
                job_child_log(c, LOG_LEVEL_WARNING, "Cannot make a subvolume for the image (%s); using a directory",
                              strerror(subvolume_error));
        if (k < 0)
                return job_child_fail(c, -k, "Cannot make the new image %s: %s", name, strerror(-k));
        return 0;
}

/* A pulled template's recipe, naming the new subvolume's UUID instead of the original's: the
 * recipe is believed only on the subvolume it was written for. */
static char *recipe_rewrite(const char *text, int root_fd)
{
        g_autoptr(GVariant) v = g_variant_parse(G_VARIANT_TYPE_VARDICT, text, NULL, NULL, NULL);
        struct btrfs_util_subvolume_info info;
        GVariantBuilder b;
        GVariantIter it;
        const char *key;
        GVariant *value;
        char hex[33];

        if (!v)
                return NULL;
        g_variant_builder_init(&b, G_VARIANT_TYPE_VARDICT);
        g_variant_iter_init(&it, v);
        while (g_variant_iter_next(&it, "{&sv}", &key, &value)) {
                if (!streq(key, "uuid"))
                        g_variant_builder_add(&b, "{sv}", key, value);
                g_variant_unref(value);
        }
        if (btrfs_util_subvolume_info_fd(root_fd, 0, &info) == BTRFS_UTIL_OK) {
                uuid_to_hex(info.uuid, hex);
                g_variant_builder_add(&b, "{sv}", "uuid", g_variant_new_string(hex));
        }
        g_autoptr(GVariant) out = g_variant_ref_sink(g_variant_builder_end(&b));
        return g_variant_print(out, true);
}

/* A child applying layers, and the pipe on which it says why it failed: the parent says it (or not,
 * when its own failure came first and is the one that counts). */
typedef struct Applier {
        pid_t pid;
        int err_fd;
} Applier;

_noreturn_ _printf_(3, 4) static void applier_fail(int fd, int error, const char *fmt, ...)
{
        char text[4096];
        va_list ap;

        memcpy(text, &error, sizeof error);
        va_start(ap, fmt);
        vsnprintf(text + sizeof error, sizeof text - sizeof error, fmt, ap);
        va_end(ap);
        (void) loop_write(fd, text, sizeof error + strlen(text + sizeof error));
        _exit(EXIT_FAILURE);
}

/* Apply @n layers to the tree at @root_fd in a child confined to it (chroot): whatever slips past
 * the checks lands in there, and this process stays free to fetch what the child reads and to put
 * the image in place. Layer i is layers[i].size bytes read from fds[i]: a cached blob, or a pipe that
 * the download fills as it comes (all of them the same pipe then, one layer after the other). Each
 * layer's uncompressed tar is checked against diff_ids[i]. */
static int apply_layers_start(JobChild *c, int root_fd, const int *fds, const Descriptor *layers,
                              const char *const *diff_ids, size_t n, int feed_fd, const char *shown_ref, Applier *ret)
{
        int errp[2];
        pid_t pid;

        if (pipe2(errp, O_CLOEXEC) < 0)
                return job_child_fail(c, errno, "Cannot start applying the layers: %s", strerror(errno));
        pid = safe_fork(false);
        if (pid < 0) {
                safe_close(errp[0]);
                safe_close(errp[1]);
                return job_child_fail(c, (int) -pid, "Cannot start applying the layers: %s", strerror((int) -pid));
        }
        if (pid == 0) {
                char err[1024] = "";
                int k = 0;

                /* The pipe's writing end is the parent's alone: its end is the layers' end. */
                if (feed_fd >= 0)
                        safe_close(feed_fd);
                safe_close(errp[0]);

                (void) setlocale(LC_CTYPE, "C.UTF-8");
                if (fchdir(root_fd) < 0)
                        applier_fail(errp[1], errno, "Cannot enter the new image: %s", strerror(errno));
                if (chroot(".") < 0)
                        job_child_log(c, LOG_LEVEL_DEBUG, "Applying layers without a chroot: %s", strerror(errno));
                (void) umask(0022);
                for (size_t i = 0; i < n && k >= 0; i++) {
                        k = oci_layer_apply(c, fds[i], layers[i].size, diff_ids[i], err, sizeof err);
                        if (k < 0)
                                applier_fail(errp[1], -k, "Layer %s of %s: %s", layers[i].digest, shown_ref, err);
                }
                _exit(EXIT_SUCCESS);
        }
        safe_close(errp[1]);
        *ret = (Applier) {.pid = pid, .err_fd = errp[0]};
        return 0;
}

/* 0 if the child applied every layer; else why not, said if @report. */
static int apply_layers_wait(JobChild *c, Applier *a, bool report)
{
        char text[4096 + 1];
        int status, error;
        ssize_t n;

        while (waitpid(a->pid, &status, 0) < 0)
                if (errno != EINTR) {
                        a->err_fd = safe_close(a->err_fd);
                        return job_child_fail(c, errno, "Cannot wait for the layers: %s", strerror(errno));
                }
        if (WIFEXITED(status) && WEXITSTATUS(status) == 0) {
                a->err_fd = safe_close(a->err_fd);
                return 0;
        }
        do
                n = read(a->err_fd, text, sizeof text - 1);
        while (n < 0 && errno == EINTR);
        a->err_fd = safe_close(a->err_fd);
        if (!report)
                return -EBADMSG;
        if (n <= (ssize_t) sizeof error)
                return job_child_fail(c, EIO, "Applying the layers of the image failed");
        memcpy(&error, text, sizeof error);
        text[n] = '\0';
        return job_child_fail(c, error > 0 ? error : EBADMSG, "%s", text + sizeof error);
}

static int apply_layers_confined(JobChild *c, int root_fd, const int *fds, const Descriptor *layers,
                                 const char *const *diff_ids, size_t n, const char *shown_ref)
{
        Applier a;
        int k = apply_layers_start(c, root_fd, fds, layers, diff_ids, n, -1, shown_ref, &a);

        if (k < 0)
                return k;
        return apply_layers_wait(c, &a, true);
}

static void record_layer(JobChild *c, const char *name, int fd, const Descriptor *d, const char *diff_id)
{
        OciLayerRecord r = {.size = d->size};
        int k;

        snprintf(r.digest, sizeof r.digest, "%s", d->digest);
        /* checked against the layer as it was applied: a push of this template names it again */
        snprintf(r.diff_id, sizeof r.diff_id, "%s", diff_id);
        snprintf(r.media_type, sizeof r.media_type, "%s", d->media_type ?: OCI_LAYER_TYPE "+gzip");
        k = oci_layer_record_write(c->store_fd, name, fd, &r);
        if (k < 0)
                job_child_log(c, LOG_LEVEL_WARNING, "Cannot record the layer of %s: %s", name, strerror(-k));
}

/* The template of a clone being pulled, from its layer: made under a temporary name of its own,
 * read-only, recorded, and renamed to @name. Returns an fd of it. */
static int make_template_of_layer(JobChild *c, const char *name, int layer_fd, const Descriptor *layer,
                                  const char *diff_id, const char *shown_ref, int *ret_fd)
{
        _cleanup_free_ char *temp = store_temp_name(name);
        _cleanup_close_ int fd = -1;
        int k;

        if (!temp)
                return job_child_fail(c, ENOMEM, "Out of memory");
        job_child_log(c, LOG_LEVEL_INFO, "Making template %s of layer %s too", name, layer->digest);
        k = store_make_tree(c->store_fd, true, temp, NULL);
        if (k < 0)
                return job_child_fail(c, -k, "Cannot make template %s: %s", name, strerror(-k));
        fd = openat(c->store_fd, temp, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (fd < 0)
                k = job_child_fail(c, errno, "Cannot open template %s: %s", name, strerror(errno));
        if (k >= 0)
                k = apply_layers_confined(c, fd, &layer_fd, layer, &diff_id, 1, shown_ref);
        if (k >= 0 && (k = store_set_read_only_fd(fd, true)) < 0)
                k = job_child_fail(c, -k, "Cannot mark template %s read-only: %s", name, strerror(-k));
        if (k >= 0) {
                record_layer(c, name, fd, layer, diff_id);
                if (renameat2(c->store_fd, temp, c->store_fd, name, RENAME_NOREPLACE) < 0)
                        k = job_child_fail(c, errno, "Cannot put template %s in place: %s", name, strerror(errno));
                else
                        job_child_image_added(c, name);
        }
        if (k < 0) {
                fd = safe_close(fd);
                (void) store_remove_tree(c->store_fd, temp);
                return k;
        }
        if (lseek(layer_fd, 0, SEEK_SET) < 0)
                return job_child_fail(c, errno, "Cannot read layer %s again: %s", layer->digest, strerror(errno));
        *ret_fd = TAKE_FD(fd);
        return 0;
}

static int snapshot_template(JobChild *c, int base_fd, const char *base_name, const char *name)
{
        enum btrfs_util_error e;

        errno = 0;
        e = btrfs_util_create_snapshot_fd2(base_fd, c->store_fd, c->temp_name, 0, NULL, NULL);
        if (e != BTRFS_UTIL_OK)
                return job_child_fail(c, errno ?: EIO, "Cannot snapshot template %s for %s: %s", base_name, name,
                                      btrfs_util_strerror(e));
        return 0;
}

static int open_temporary(JobChild *c, const char *name, int *ret_fd)
{
        int fd = openat(c->store_fd, c->temp_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);

        if (fd < 0)
                return job_child_fail(c, errno, "Cannot open the new image %s: %s", name, strerror(errno));
        *ret_fd = fd;
        return 0;
}

int transfer_pull_image(JobChild *c, const JobArgs *a)
{
        _cleanup_(registry_freep) Registry *r = NULL;
        _cleanup_(credentials_done) RegistryCredentials cred = {};
        _cleanup_free_ char *body = NULL, *type = NULL, *config = NULL, *said_digest = NULL;
        g_autoptr(JsonParser) mp = json_parser_new(), cp = json_parser_new();
        g_autofree char *shown_ref = NULL;
        _cleanup_close_ int cache_fd = -1, root_fd = -1;
        g_autoptr(GPtrArray) keep = g_ptr_array_new_with_free_func(g_free);
        int layer_fds[OCI_LAYERS_MAX];
        size_t size, config_size, n_layers;
        uint64_t total = 0, done = 0, fetched_bytes = 0;
        Descriptor cfg, layers[OCI_LAYERS_MAX];
        const char *diff_ids[OCI_LAYERS_MAX];
        JsonObject *m, *co;
        JsonArray *la;
        const char *mt, *name = a->name;
        char actual[72];
        int k;

        shown_ref = g_strdup_printf("%s/%s%s%s", a->oci.registry, a->oci.repository,
                                    oci_digest_is_valid(a->oci.reference) ? "@" : ":", a->oci.reference);
        k = credentials_load(c, a->oci.credentials_file, a->oci.registry, &cred);
        if (k < 0)
                return k;
        job_child_log(c, LOG_LEVEL_INFO, "Pulling %s", shown_ref);
        job_child_progress(c, 0);
        k = registry_new(c, a->oci.registry, a->oci.repository, a->oci.insecure, false, &cred, &r);
        if (k < 0)
                return k;

        k = registry_get_manifest(r, a->oci.reference, &body, &size, &type, &said_digest);
        if (k < 0)
                return k;
        sha256_of(body, size, actual);
        if (oci_digest_is_valid(a->oci.reference) && !streq(actual, a->oci.reference))
                return job_child_fail(c, EBADMSG, "The manifest of %s does not match its digest (it is %s)", shown_ref,
                                      actual);
        /* Of a tag, the registry's word is all there is to check against. */
        if (said_digest && oci_digest_is_valid(said_digest) && !streq(said_digest, actual))
                return job_child_fail(c, EBADMSG,
                                      "The manifest of %s does not match the digest the registry gives for it (%s; it "
                                      "is %s)",
                                      shown_ref, said_digest, actual);
        k = resolve_manifest(c, r, shown_ref, &body, &size, &type);
        if (k < 0)
                return k;

        m = json_object_of(mp, body, size);
        if (!m)
                return job_child_fail(c, EBADMSG, "The manifest of %s is not a JSON object", shown_ref);
        mt = json_string(m, "mediaType") ?: type;
        if (!streq_ptr(mt, OCI_MANIFEST_TYPE) && !streq_ptr(mt, DOCKER_MANIFEST_TYPE)) {
                g_autofree char *t = g_strescape(mt ?: "(none)", NULL);
                return job_child_fail(c, EMEDIUMTYPE, "The manifest of %s is of an unsupported media type \"%.100s\"",
                                      shown_ref, t);
        }
        if (!descriptor_read(json_object_get_member(m, "config"), &cfg))
                return job_child_fail(c, EBADMSG, "The manifest of %s has no valid config", shown_ref);
        if (cfg.media_type && !streq(cfg.media_type, OCI_CONFIG_TYPE) && !streq(cfg.media_type, DOCKER_CONFIG_TYPE)) {
                g_autofree char *t = g_strescape(cfg.media_type, NULL);
                return job_child_fail(c, EMEDIUMTYPE, "The config of %s is of an unsupported media type \"%.100s\"",
                                      shown_ref, t);
        }
        la = json_array_member(m, "layers");
        n_layers = la ? json_array_get_length(la) : 0;
        if (n_layers == 0 || n_layers > OCI_LAYERS_MAX)
                return job_child_fail(c, EBADMSG, "The manifest of %s has %zu layers (from 1 to %d are taken)",
                                      shown_ref, n_layers, OCI_LAYERS_MAX);
        for (size_t i = 0; i < n_layers; i++) {
                if (!descriptor_read(json_array_get_element(la, (guint) i), &layers[i]))
                        return job_child_fail(c, EBADMSG, "Layer %zu of %s has an invalid descriptor", i, shown_ref);
                if (!layer_type_known(layers[i].media_type)) {
                        g_autofree char *t = g_strescape(layers[i].media_type ?: "(none)", NULL);
                        return job_child_fail(c, EMEDIUMTYPE,
                                              "Layer %s of %s is of an unsupported media type \"%.100s\"",
                                              layers[i].digest, shown_ref, t);
                }
                if (total + layers[i].size < total)
                        return job_child_fail(c, EBADMSG, "The layers of %s claim too many bytes", shown_ref);
                total += layers[i].size;
        }

        k = registry_get_blob_small(r, cfg.digest, cfg.size, OCI_CONFIG_MAX, &config, &config_size);
        if (k < 0)
                return k;
        co = json_object_of(cp, config, config_size);
        if (!co)
                return job_child_fail(c, EBADMSG, "The config of %s is not a JSON object", shown_ref);
        if ((json_string(co, "os") && !streq(json_string(co, "os"), "linux")) ||
            (json_string(co, "architecture") && !streq(json_string(co, "architecture"), "amd64"))) {
                g_autofree char *os = g_strescape(json_string(co, "os") ?: "?", NULL),
                                *arch = g_strescape(json_string(co, "architecture") ?: "?", NULL);
                return job_child_fail(c, EOPNOTSUPP, "%s is an image for %.32s/%.32s, not linux/amd64", shown_ref, os,
                                      arch);
        }

        /* What each layer is uncompressed: checked as it is applied. */
        JsonArray *ids = json_array_member(json_object_member(co, "rootfs"), "diff_ids");
        if (!ids || json_array_get_length(ids) != n_layers)
                return job_child_fail(c, EBADMSG,
                                      "The config of %s names %u layers in rootfs.diff_ids where its manifest has %zu",
                                      shown_ref, ids ? json_array_get_length(ids) : 0, n_layers);
        for (size_t i = 0; i < n_layers; i++) {
                JsonNode *n = json_array_get_element(ids, (guint) i);
                diff_ids[i] = JSON_NODE_HOLDS_VALUE(n) && json_node_get_value_type(n) == G_TYPE_STRING
                                      ? json_node_get_string(n)
                                      : NULL;
                if (!oci_digest_is_valid(diff_ids[i]))
                        return job_child_fail(c, EBADMSG, "The config of %s has no valid diff_id for layer %s",
                                              shown_ref, layers[i].digest);
        }

        cache_fd = oci_cache_open(c->store_fd);
        if (cache_fd < 0)
                return job_child_fail(c, -cache_fd, "Cannot open the blob cache: %s", strerror(-cache_fd));
        /* A clone whose template this host has (the same layer, recorded with the template): the
         * template is snapshotted and only the clone's own layer is fetched and applied. */
        JsonObject *annotations = json_object_member(m, "annotations");
        const char *kind = json_string(annotations, OCI_ANNOTATION_KIND);
        const char *origin = json_string(annotations, OCI_ANNOTATION_ORIGIN);
        bool template = streq_ptr(kind, "template") && n_layers == 1;
        bool clone = streq_ptr(kind, "clone") && n_layers == 2;
        _cleanup_free_ char *base_name = NULL;
        _cleanup_close_ int base_fd = -1;
        size_t first = 0;

        for (size_t i = 0; i < n_layers; i++)
                layer_fds[i] = -1;
        if (clone && oci_layer_record_find(c->store_fd, layers[0].digest, &base_name, &base_fd) >= 0) {
                job_child_log(c, LOG_LEVEL_INFO, "Template %s here is layer %s: only the clone's own layer is needed",
                              base_name, layers[0].digest);
                first = 1;
                total -= layers[0].size;
        }

        /* A clone whose template is not here: the template is made too, from the first layer, under
         * the name it had where it was pushed, if that is free. */
        bool make_template = clone && base_fd < 0 && origin && image_name_is_valid(origin) && !streq(origin, name) &&
                             c->store_is_btrfs && faccessat(c->store_fd, origin, F_OK, AT_SYMLINK_NOFOLLOW) < 0 &&
                             errno == ENOENT;
        int feed[2] = {-1, -1};
        Applier applier = {.pid = 0, .err_fd = -1};

        if (!make_template) {
                /* The layers are applied as they come, by a child confined to the new image that reads
                 * them from a pipe the download fills, while the download goes on: the two CPUs share
                 * the download, the digests, the inflating and the extraction. Nothing is in sight
                 * before every digest matched: the tree is the job's hidden temporary until then. */
                k = base_fd >= 0 ? snapshot_template(c, base_fd, base_name, name) : make_temporary(c, name);
                if (k >= 0)
                        k = open_temporary(c, name, &root_fd);
                if (k >= 0 && pipe2(feed, O_CLOEXEC) < 0)
                        k = job_child_fail(c, errno, "Cannot make a pipe: %s", strerror(errno));
                if (k >= 0) {
                        (void) fcntl(feed[1], F_SETPIPE_SZ, 1024 * 1024);
                        for (size_t i = first; i < n_layers; i++)
                                layer_fds[i] = feed[0];
                        k = apply_layers_start(c, root_fd, layer_fds + first, layers + first, diff_ids + first,
                                               n_layers - first, feed[1], shown_ref, &applier);
                        for (size_t i = first; i < n_layers; i++)
                                layer_fds[i] = -1;
                        feed[0] = safe_close(feed[0]);
                }
        }

        for (size_t i = first; i < n_layers && k >= 0; i++) {
                bool fetched;
                /* Downloading is most of a pull's time: it goes to 90 %, applying the rest. */
                registry_set_progress(r, total + total / 9, done);
                k = oci_cache_fetch(c, r, cache_fd, layers[i].digest, layers[i].size, feed[1], &fetched);
                if (k < 0)
                        break;
                layer_fds[i] = k;
                done += layers[i].size;
                if (fetched)
                        fetched_bytes += layers[i].size;
                else
                        job_child_log(c, LOG_LEVEL_INFO, "Layer %s is in the cache already", layers[i].digest);
                g_ptr_array_add(keep, g_strdup(layers[i].digest));
        }
        if (applier.pid > 0) {
                /* A failed download leaves the child nothing to finish: what it read is not verified,
                 * and the download's failure is the one said, not what the child made of its bytes. */
                if (k < 0)
                        (void) kill(applier.pid, SIGKILL);
                feed[1] = safe_close(feed[1]);
                int w = apply_layers_wait(c, &applier, k >= 0);
                if (k >= 0)
                        k = w;
        }
        feed[1] = safe_close(feed[1]);
        if (k >= 0)
                job_child_log(c, LOG_LEVEL_INFO, "Fetched %" PRIu64 " bytes of layers (%" PRIu64 " received in all)",
                              fetched_bytes, registry_bytes_received(r));

        if (k >= 0 && make_template) {
                k = make_template_of_layer(c, origin, layer_fds[0], &layers[0], diff_ids[0], shown_ref, &base_fd);
                if (k >= 0) {
                        first = 1;
                        base_name = strdup(origin);
                        k = snapshot_template(c, base_fd, base_name, name);
                }
                if (k >= 0)
                        k = open_temporary(c, name, &root_fd);
                if (k >= 0)
                        k = apply_layers_confined(c, root_fd, layer_fds + first, layers + first, diff_ids + first,
                                                  n_layers - first, shown_ref);
                if (k < 0 && base_name)
                        job_child_log(c, LOG_LEVEL_WARNING,
                                      "Template %s stays: it is complete and verified, and a pull of %s again needs "
                                      "only the clone's layer",
                                      base_name, shown_ref);
        }
        for (size_t i = 0; i < n_layers; i++)
                safe_close(layer_fds[i]);
        if (k < 0)
                return k;

        if (syncfs(root_fd) < 0)
                return job_child_fail(c, errno == EDQUOT ? ENOSPC : errno, "Cannot write image %s to disk: %s", name,
                                      strerror(errno));

        /* stamp's own: a template comes back as a template, with its recipe. */
        const char *recipe = json_string(annotations, OCI_ANNOTATION_RECIPE);
        if (recipe && template && strlen(recipe) < 64 * 1024) {
                g_autofree char *rewritten = recipe_rewrite(recipe, root_fd);
                if (!rewritten || fsetxattr(root_fd, RECIPE_XATTR, rewritten, strlen(rewritten), 0) < 0)
                        job_child_log(c, LOG_LEVEL_WARNING, "Cannot keep the recipe of %s", name);
        }

        bool read_only = a->oci.read_only || template;
        bool is_subvolume = fd_is_subvolume(root_fd) > 0;
        if (read_only && is_subvolume && (k = store_set_read_only_fd(root_fd, true)) < 0)
                return job_child_fail(c, -k, "Cannot mark image %s read-only: %s", name, strerror(-k));
        if (template && is_subvolume)
                record_layer(c, name, root_fd, &layers[0], diff_ids[0]);
        k = job_child_record_owner(c, name, root_fd);
        if (k < 0)
                return k;
        if (renameat2(c->store_fd, c->temp_name, c->store_fd, name, RENAME_NOREPLACE) < 0) {
                k = errno;
                job_child_drop_owner(c, name);
                if (k == EEXIST)
                        return job_child_fail(c, EEXIST, "An image named %s already exists", name);
                return job_child_fail(c, k, "Cannot put image %s in place: %s", name, strerror(k));
        }
        if (read_only && !is_subvolume && (k = store_set_read_only_fd(root_fd, true)) < 0) {
                (void) renameat2(c->store_fd, name, c->store_fd, c->temp_name, RENAME_NOREPLACE);
                return job_child_fail(c, -k, "Cannot mark image %s read-only: %s", name, strerror(-k));
        }

        g_ptr_array_add(keep, NULL);
        oci_cache_trim(cache_fd, a->oci.cache_max, (char *const *) keep->pdata);
        job_child_progress(c, 1.0);
        return 0;
}

/* ---- push ---- */

/* The uncompressed digest of a compressed layer (its diff_id in the config). */
static int layer_diff_id(int fd, char ret[static 72])
{
        _cleanup_(archive_read_freep) struct archive *a = archive_read_new();
        g_autoptr(Sha256) sum = sha256_new();
        struct archive_entry *e;
        int r;

        if (!a)
                return -ENOMEM;
        archive_read_support_filter_gzip(a);
        archive_read_support_filter_zstd(a);
        archive_read_support_format_raw(a);
        if (lseek(fd, 0, SEEK_SET) < 0)
                return -errno;
        if (archive_read_open_fd(a, fd, 256 * 1024) != ARCHIVE_OK || archive_read_next_header(a, &e) != ARCHIVE_OK)
                return -EBADMSG;
        for (;;) {
                const void *buf;
                size_t size;
                int64_t offset;
                r = archive_read_data_block(a, &buf, &size, &offset);
                if (r == ARCHIVE_EOF)
                        break;
                if (r != ARCHIVE_OK)
                        return -EBADMSG;
                sha256_update(sum, buf, size);
        }
        snprintf(ret, 72, "sha256:%s", sha256_get_string(sum));
        return 0;
}

typedef struct Layer {
        int fd;
        char digest[72];
        char diff_id[72];
        uint64_t size;
} Layer;

/* A gzip layer is compressed here rather than by libarchive: by libdeflate at its fastest level
 * (about twice zlib's speed at level 1 here, with a smaller result), beside the walk, in blocks of
 * 1 MiB that two worker threads compress at once while the next blocks are read. Each block is a
 * gzip member of its own: a gzip file may be several members one after the other (RFC 1952), which
 * gzip, zlib, libarchive and Go's readers (skopeo, the registries) all take as one stream. The same
 * tar gives the same layer, block for block. Both digests (of the tar, the config's diff_id, and of
 * the layer) are taken on the way instead of by reading the layer back twice. */
#define LAYER_GZIP_LEVEL 1
#define DEFLATE_BLOCK (1024 * 1024)
#define DEFLATE_RING 6
#define DEFLATE_WORKERS 2

typedef enum { SLOT_EMPTY, SLOT_FILLED, SLOT_BUSY, SLOT_DONE } SlotState;

typedef struct Slot {
        uint8_t *in;
        size_t in_len;
        uint8_t *out;
        size_t out_cap, out_len;
        SlotState state;
} Slot;

typedef struct Deflater {
        int in_fd;
        int out_fd;
        int stream_fd; /* a copy of the layer goes here too (to an upload), while it takes it; or -1 */
        bool stream_broken;
        Sha256 *raw, *packed;
        uint64_t size;
        int error;

        pthread_mutex_t lock;
        pthread_cond_t changed;
        Slot slots[DEFLATE_RING];
        uint64_t filled;  /* blocks read, in order: block i is in slot i % DEFLATE_RING */
        uint64_t claimed; /* blocks a worker took */
        bool quit;
        int worker_error;
} Deflater;

static void *deflate_worker(void *userdata)
{
        Deflater *d = userdata;
        struct libdeflate_compressor *c = libdeflate_alloc_compressor(LAYER_GZIP_LEVEL);

        pthread_mutex_lock(&d->lock);
        if (!c)
                d->worker_error = ENOMEM;
        while (c) {
                Slot *s;
                size_t n;

                while (!d->quit && d->claimed == d->filled)
                        pthread_cond_wait(&d->changed, &d->lock);
                if (d->claimed == d->filled)
                        break; /* quit, and nothing left */
                s = &d->slots[d->claimed % DEFLATE_RING];
                d->claimed++;
                s->state = SLOT_BUSY;
                pthread_mutex_unlock(&d->lock);
                n = libdeflate_gzip_compress(c, s->in, s->in_len, s->out, s->out_cap);
                pthread_mutex_lock(&d->lock);
                if (n == 0)
                        d->worker_error = EIO;
                s->out_len = n;
                s->state = SLOT_DONE;
                pthread_cond_broadcast(&d->changed);
        }
        pthread_cond_broadcast(&d->changed);
        pthread_mutex_unlock(&d->lock);
        if (c)
                libdeflate_free_compressor(c);
        return NULL;
}

/* Up to @n bytes, fewer only at the end of the input. */
static ssize_t read_full(int fd, uint8_t *p, size_t n)
{
        size_t got = 0;

        while (got < n) {
                ssize_t k = read(fd, p + got, n - got);
                if (k < 0) {
                        if (errno == EINTR)
                                continue;
                        return -errno;
                }
                if (k == 0)
                        break;
                got += (size_t) k;
        }
        return (ssize_t) got;
}

static int write_out(Deflater *d, const uint8_t *p, size_t n)
{
        int k = loop_write(d->out_fd, p, n);

        if (k < 0)
                return k;
        /* An upload that gave up is given up on here too: the layer is sent again afterwards. */
        if (d->stream_fd >= 0 && !d->stream_broken && loop_write(d->stream_fd, p, n) < 0)
                d->stream_broken = true;
        sha256_update(d->packed, p, n);
        d->size += n;
        return 0;
}

/* This thread reads the tar into free slots and writes the compressed blocks out in their order; the
 * workers compress whatever was read. */
static int deflate_all(Deflater *d)
{
        uint64_t written = 0;
        bool eof = false;
        int k = 0;

        pthread_mutex_lock(&d->lock);
        for (;;) {
                Slot *w = &d->slots[written % DEFLATE_RING], *r;
                ssize_t n;

                if (written < d->filled && w->state == SLOT_DONE) {
                        pthread_mutex_unlock(&d->lock);
                        k = write_out(d, w->out, w->out_len);
                        pthread_mutex_lock(&d->lock);
                        if (k < 0)
                                break;
                        w->state = SLOT_EMPTY;
                        written++;
                        continue;
                }
                if (d->worker_error) {
                        k = -d->worker_error;
                        break;
                }
                if (eof && written == d->filled)
                        break;
                if (eof || d->filled - written >= DEFLATE_RING) {
                        pthread_cond_wait(&d->changed, &d->lock);
                        continue;
                }
                r = &d->slots[d->filled % DEFLATE_RING];
                pthread_mutex_unlock(&d->lock);
                n = read_full(d->in_fd, r->in, DEFLATE_BLOCK);
                if (n >= 0 && n < DEFLATE_BLOCK)
                        eof = true;
                if (n > 0)
                        sha256_update(d->raw, r->in, (size_t) n);
                pthread_mutex_lock(&d->lock);
                if (n < 0) {
                        k = (int) n;
                        break;
                }
                if (n == 0 && d->filled > 0)
                        continue; /* the end, at a block's end; an empty tar is one empty member */
                r->in_len = (size_t) n;
                r->state = SLOT_FILLED;
                d->filled++;
                pthread_cond_broadcast(&d->changed);
        }
        d->quit = true;
        pthread_cond_broadcast(&d->changed);
        pthread_mutex_unlock(&d->lock);
        return k;
}

static void *deflater_thread(void *userdata)
{
        Deflater *d = userdata;
        pthread_t workers[DEFLATE_WORKERS];
        size_t started = 0;
        int k = 0;

        pthread_mutex_init(&d->lock, NULL);
        pthread_cond_init(&d->changed, NULL);
        for (size_t i = 0; i < DEFLATE_RING && k >= 0; i++) {
                Slot *s = &d->slots[i];
                s->out_cap = libdeflate_gzip_compress_bound(NULL, DEFLATE_BLOCK);
                s->in = malloc(DEFLATE_BLOCK);
                s->out = malloc(s->out_cap);
                if (!s->in || !s->out)
                        k = -ENOMEM;
        }
        for (size_t i = 0; i < DEFLATE_WORKERS && k >= 0; i++)
                if (pthread_create(&workers[started], NULL, deflate_worker, d) == 0)
                        started++;
        if (k >= 0 && started == 0)
                k = -EAGAIN;
        if (k >= 0)
                k = deflate_all(d);
        else {
                pthread_mutex_lock(&d->lock);
                d->quit = true;
                pthread_cond_broadcast(&d->changed);
                pthread_mutex_unlock(&d->lock);
        }
        for (size_t i = 0; i < started; i++)
                (void) pthread_join(workers[i], NULL);
        if (k < 0)
                d->error = -k;
        for (size_t i = 0; i < DEFLATE_RING; i++) {
                free(d->slots[i].in);
                free(d->slots[i].out);
        }
        pthread_mutex_destroy(&d->lock);
        pthread_cond_destroy(&d->changed);
        d->in_fd = safe_close(d->in_fd); /* on failure the walk gets EPIPE */
        return NULL;
}

static int layer_write_gzip(JobChild *c, int tree_fd, int out_fd, int stream_fd, const TreeTotal *total, Layer *ret,
                            char *err, size_t errlen)
{
        g_autoptr(Sha256) raw = sha256_new(), packed = sha256_new();
        Deflater d = {.out_fd = out_fd, .stream_fd = stream_fd, .raw = raw, .packed = packed};
        pthread_t thread;
        int p[2], k;

        if (pipe2(p, O_CLOEXEC) < 0)
                return errbuf_set(err, errlen, errno, "Cannot make a pipe: %s", strerror(errno));
        (void) fcntl(p[1], F_SETPIPE_SZ, DEFLATE_BLOCK);
        d.in_fd = p[0];
        if (pthread_create(&thread, NULL, deflater_thread, &d) != 0) {
                safe_close(p[0]);
                safe_close(p[1]);
                return errbuf_set(err, errlen, EAGAIN, "Cannot start compressing");
        }
        k = archive_write_tree(c, tree_fd, -1, p[1], EXPORT_UNCOMPRESSED, total, err, errlen);
        safe_close(p[1]);
        (void) pthread_join(thread, NULL);
        if (d.error)
                return errbuf_set(err, errlen, d.error, "Cannot compress the layer: %s", strerror(d.error));
        if (k < 0)
                return k;
        snprintf(ret->diff_id, sizeof ret->diff_id, "sha256:%s", sha256_get_string(raw));
        snprintf(ret->digest, sizeof ret->digest, "sha256:%s", sha256_get_string(packed));
        ret->size = d.size;
        return 0;
}

/* Write the tree at @tree_fd as a compressed tar layer into an unnamed file in the cache. */
static int layer_make_to(JobChild *c, int cache_fd, int tree_fd, ExportFormat format, int stream_fd, const char *what,
                         Layer *ret)
{
        _cleanup_close_ int fd = -1;
        char err[1024] = "";
        TreeTotal total;
        int k;

        fd = openat(cache_fd, ".", O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
        if (fd < 0)
                return job_child_fail(c, errno, "Cannot make the layer of %s: %s", what, strerror(errno));
        (void) tree_total_start(&total, tree_fd, UINT64_MAX);
        if (format == EXPORT_GZIP) {
                k = layer_write_gzip(c, tree_fd, fd, stream_fd, &total, ret, err, sizeof err);
                tree_total_stop(&total);
                if (k < 0)
                        return job_child_fail(c, -k, "Cannot make the layer of %s: %s", what, err);
        } else {
                k = archive_write_tree(c, tree_fd, -1, fd, format, &total, err, sizeof err);
                tree_total_stop(&total);
                if (k < 0)
                        return job_child_fail(c, -k, "Cannot make the layer of %s: %s", what, err);
                k = fd_sha256(fd, ret->digest, &ret->size);
                if (k >= 0)
                        k = layer_diff_id(fd, ret->diff_id);
        }
        if (k < 0)
                return job_child_fail(c, -k, "Cannot read back the layer of %s: %s", what, strerror(-k));
        k = oci_cache_add(cache_fd, fd, ret->digest);
        if (k < 0)
                job_child_log(c, LOG_LEVEL_WARNING, "Cannot keep the layer of %s in the cache: %s", what, strerror(-k));
        ret->fd = TAKE_FD(fd);
        return 0;
}

static int layer_make(JobChild *c, int cache_fd, int tree_fd, ExportFormat format, const char *what, Layer *ret)
{
        return layer_make_to(c, cache_fd, tree_fd, format, -1, what, ret);
}

typedef struct Upload {
        Registry *r;
        const char *url;
        int fd;
        char *next_url;
        int result;
} Upload;

static void *upload_thread(void *userdata)
{
        Upload *u = userdata;

        u->result = registry_stream_send(u->r, u->url, u->fd, &u->next_url);
        u->fd = safe_close(u->fd); /* the layer's writer stops sending */
        return NULL;
}

/* A gzip layer uploaded while it is made, as skopeo does, instead of after: *ret_uploaded says
 * whether that worked; if not, the caller uploads the finished layer as any other. */
static int layer_make_uploading(JobChild *c, Registry *r, int cache_fd, int tree_fd, const char *what, Layer *ret,
                                bool *ret_uploaded)
{
        _cleanup_free_ char *url = NULL;
        Upload u = {.r = r, .fd = -1};
        pthread_t thread;
        int p[2], k;

        *ret_uploaded = false;
        if (registry_stream_begin(r, &url) < 0 || pipe2(p, O_CLOEXEC) < 0) {
                job_child_log(c, LOG_LEVEL_INFO, "Uploading the layer of %s once it is made", what);
                return layer_make(c, cache_fd, tree_fd, EXPORT_GZIP, what, ret);
        }
        (void) fcntl(p[1], F_SETPIPE_SZ, DEFLATE_BLOCK);
        u.url = url;
        u.fd = p[0];
        if (pthread_create(&thread, NULL, upload_thread, &u) != 0) {
                safe_close(p[0]);
                safe_close(p[1]);
                return layer_make(c, cache_fd, tree_fd, EXPORT_GZIP, what, ret);
        }
        k = layer_make_to(c, cache_fd, tree_fd, EXPORT_GZIP, p[1], what, ret);
        safe_close(p[1]); /* the end of the upload's stream */
        (void) pthread_join(thread, NULL);
        if (k >= 0 && u.result >= 0 && u.next_url && registry_stream_finish(r, u.next_url, ret->digest) >= 0)
                *ret_uploaded = true;
        else if (k >= 0)
                job_child_log(c, LOG_LEVEL_INFO, "The upload of %s's layer while it was made failed; sending it again",
                              what);
        free(u.next_url);
        return k;
}

static void layer_remember(JobChild *c, const char *name, int image_fd, const Layer *l, const char *type)
{
        OciLayerRecord r = {.size = l->size};
        int k;

        strcpy(r.digest, l->digest);
        strcpy(r.diff_id, l->diff_id);
        snprintf(r.media_type, sizeof r.media_type, "%s", type);
        k = oci_layer_record_write(c->store_fd, name, image_fd, &r);
        if (k < 0)
                job_child_log(c, LOG_LEVEL_WARNING, "Cannot record the layer of %s: %s", name, strerror(-k));
}

/* The layer of template @name at @fd: the recorded one if its blob is still in the cache, else made
 * now (and recorded). */
static int template_layer(JobChild *c, Registry *reg, int cache_fd, int fd, const char *name, ExportFormat format,
                          Layer *ret, bool *ret_uploaded)
{
        const char *type = format == EXPORT_ZSTD ? OCI_LAYER_TYPE "+zstd" : OCI_LAYER_TYPE "+gzip";
        OciLayerRecord r;
        int k;

        if (oci_layer_record_read(c->store_fd, name, fd, &r) >= 0 && streq(r.media_type, type)) {
                int blob = oci_cache_open_blob(cache_fd, r.digest, r.size);
                /* Records of templates pulled by earlier versions named the layer's digest as its
                 * diff_id: that one is taken again from the layer itself. */
                if (blob >= 0 && streq(r.diff_id, r.digest) && layer_diff_id(blob, r.diff_id) < 0)
                        blob = safe_close(blob);
                if (blob >= 0 && lseek(blob, 0, SEEK_SET) < 0)
                        blob = safe_close(blob);
                if (blob >= 0) {
                        job_child_log(c, LOG_LEVEL_INFO, "Template %s is layer %s", name, r.digest);
                        *ret = (Layer) {.fd = blob, .size = r.size};
                        strcpy(ret->digest, r.digest);
                        strcpy(ret->diff_id, r.diff_id);
                        return 0;
                }
        }
        job_child_log(c, LOG_LEVEL_INFO, "Making the layer of template %s", name);
        k = format == EXPORT_GZIP ? layer_make_uploading(c, reg, cache_fd, fd, name, ret, ret_uploaded)
                                  : layer_make(c, cache_fd, fd, format, name, ret);
        best_effort(fchdir(c->store_fd));
        if (k < 0)
                return k;
        layer_remember(c, name, fd, ret, type);
        return 0;
}

static int delta_make(JobChild *c, int cache_fd, int base_fd, int tree_fd, ExportFormat format, const char *what,
                      Layer *ret)
{
        _cleanup_close_ int fd = -1;
        char err[1024] = "";
        int k;

        fd = openat(cache_fd, ".", O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
        if (fd < 0)
                return job_child_fail(c, errno, "Cannot make the layer of %s: %s", what, strerror(errno));
        k = oci_delta_write(c, base_fd, tree_fd, fd, format == EXPORT_ZSTD, err, sizeof err);
        if (k < 0)
                return job_child_fail(c, -k, "Cannot make the layer of %s: %s", what, err);
        k = fd_sha256(fd, ret->digest, &ret->size);
        if (k >= 0)
                k = layer_diff_id(fd, ret->diff_id);
        if (k < 0)
                return job_child_fail(c, -k, "Cannot read back the layer of %s: %s", what, strerror(-k));
        (void) oci_cache_add(cache_fd, fd, ret->digest);
        ret->fd = TAKE_FD(fd);
        return 0;
}

static int upload_blob(JobChild *c, Registry *r, const char *digest, int fd, const void *data, uint64_t size)
{
        int k = registry_has_blob(r, digest);

        if (k < 0)
                return k;
        if (k > 0) {
                job_child_log(c, LOG_LEVEL_INFO, "The registry has %s already", digest);
                return 0;
        }
        return registry_put_blob(r, digest, fd, data, size);
}

static void annotations_add(JsonBuilder *b, const JobArgs *a)
{
        const struct {
                const char *key, *value;
        } pairs[] = {
                {OCI_ANNOTATION_KIND, a->oci.kind},
                {OCI_ANNOTATION_NAME, a->name},
                {OCI_ANNOTATION_ORIGIN, a->oci.origin},
                {OCI_ANNOTATION_UUID, a->oci.uuid},
                {OCI_ANNOTATION_ORIGIN_UUID, a->oci.origin_uuid},
                {OCI_ANNOTATION_RECIPE, a->oci.recipe},
        };

        json_builder_begin_object(b);
        for (size_t i = 0; i < ELEMENTSOF(pairs); i++)
                if (!isempty(pairs[i].value)) {
                        json_builder_set_member_name(b, pairs[i].key);
                        json_builder_add_string_value(b, pairs[i].value);
                }
        json_builder_end_object(b);
}

static char *json_text(JsonBuilder *b)
{
        g_autoptr(JsonGenerator) g = json_generator_new();
        g_autoptr(JsonNode) root = json_builder_get_root(b);

        json_generator_set_root(g, root);
        return json_generator_to_data(g, NULL);
}

static void descriptor_add(JsonBuilder *b, const char *type, const char *digest, uint64_t size)
{
        json_builder_begin_object(b);
        json_builder_set_member_name(b, "mediaType");
        json_builder_add_string_value(b, type);
        json_builder_set_member_name(b, "digest");
        json_builder_add_string_value(b, digest);
        json_builder_set_member_name(b, "size");
        json_builder_add_int_value(b, (gint64) size);
        json_builder_end_object(b);
}

int transfer_push_image(JobChild *c, const JobArgs *a)
{
        _cleanup_(registry_freep) Registry *r = NULL;
        _cleanup_(credentials_done) RegistryCredentials cred = {};
        _cleanup_close_ int cache_fd = -1, snapshot_fd = -1;
        g_autoptr(JsonBuilder) cb = json_builder_new(), mb = json_builder_new();
        g_autofree char *shown_ref = NULL, *config = NULL, *manifest = NULL;
        ExportFormat format = streq_ptr(a->oci.compression, "zstd") ? EXPORT_ZSTD : EXPORT_GZIP;
        const char *layer_type = format == EXPORT_ZSTD ? OCI_LAYER_TYPE "+zstd" : OCI_LAYER_TYPE "+gzip";
        int tree_fd = a->oci.image_fd;
        Layer layers[2] = {{.fd = -1}, {.fd = -1}};
        bool uploaded[2] = {};
        size_t n_layers = 0;
        char config_digest[72];
        int k;

        shown_ref = g_strdup_printf("%s/%s:%s", a->oci.registry, a->oci.repository, a->oci.reference);
        k = credentials_load(c, a->oci.credentials_file, a->oci.registry, &cred);
        if (k < 0)
                return k;
        cache_fd = oci_cache_open(c->store_fd);
        if (cache_fd < 0)
                return job_child_fail(c, -cache_fd, "Cannot open the blob cache: %s", strerror(-cache_fd));
        (void) signal(SIGPIPE, SIG_IGN);
        job_child_progress(c, 0);

        if (a->oci.snapshot) {
                enum btrfs_util_error e;
                errno = 0;
                e = btrfs_util_create_snapshot_fd2(a->oci.image_fd, c->store_fd, c->temp_name,
                                                   BTRFS_UTIL_CREATE_SNAPSHOT_READ_ONLY, NULL, NULL);
                if (e != BTRFS_UTIL_OK)
                        return job_child_fail(c, errno ?: EIO, "Cannot take a snapshot of image %s to push: %s",
                                              a->name, btrfs_util_strerror(e));
                snapshot_fd = openat(c->store_fd, c->temp_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
                if (snapshot_fd < 0)
                        return job_child_fail(c, errno, "Cannot open the snapshot of image %s: %s", a->name,
                                              strerror(errno));
                tree_fd = snapshot_fd;
        }

        /* The registry first: a layer made now is uploaded as it is made. */
        job_child_log(c, LOG_LEVEL_INFO, "Pushing %s to %s", a->name, shown_ref);
        k = registry_new(c, a->oci.registry, a->oci.repository, a->oci.insecure, true, &cred, &r);
        if (k < 0)
                return k;

        if (a->oci.base_fd >= 0 && !isempty(a->oci.origin)) {
                /* A clone: its template's layer, the very blob the template was pushed or pulled as
                 * where that is known, and the clone's own changes. */
                k = template_layer(c, r, cache_fd, a->oci.base_fd, a->oci.origin, format, &layers[0], &uploaded[0]);
                if (k < 0)
                        return k;
                n_layers++;
                job_child_log(c, LOG_LEVEL_INFO, "Making the layer of %s's changes against %s", a->name, a->oci.origin);
                k = delta_make(c, cache_fd, a->oci.base_fd, tree_fd, format, a->name, &layers[1]);
                best_effort(fchdir(c->store_fd));
                if (k < 0) {
                        safe_close(layers[0].fd);
                        return k;
                }
                n_layers++;
        } else if (streq_ptr(a->oci.kind, "template") && snapshot_fd < 0) {
                /* The layer its clones were pushed with, if one was: the same blob again. */
                k = template_layer(c, r, cache_fd, a->oci.image_fd, a->name, format, &layers[0], &uploaded[0]);
                if (k < 0)
                        return k;
                n_layers++;
        } else {
                job_child_log(c, LOG_LEVEL_INFO, "Making the layer of %s", a->name);
                k = format == EXPORT_GZIP
                            ? layer_make_uploading(c, r, cache_fd, tree_fd, a->name, &layers[0], &uploaded[0])
                            : layer_make(c, cache_fd, tree_fd, format, a->name, &layers[0]);
                best_effort(fchdir(c->store_fd));
                if (k < 0)
                        return k;
                n_layers++;
        }

        /* The config: what the image runs on, its layers' uncompressed digests, stamp's labels. */
        json_builder_begin_object(cb);
        json_builder_set_member_name(cb, "architecture");
        json_builder_add_string_value(cb, "amd64");
        json_builder_set_member_name(cb, "os");
        json_builder_add_string_value(cb, "linux");
        json_builder_set_member_name(cb, "config");
        json_builder_begin_object(cb);
        json_builder_set_member_name(cb, "Labels");
        annotations_add(cb, a);
        json_builder_end_object(cb);
        json_builder_set_member_name(cb, "rootfs");
        json_builder_begin_object(cb);
        json_builder_set_member_name(cb, "type");
        json_builder_add_string_value(cb, "layers");
        json_builder_set_member_name(cb, "diff_ids");
        json_builder_begin_array(cb);
        for (size_t i = 0; i < n_layers; i++)
                json_builder_add_string_value(cb, layers[i].diff_id);
        json_builder_end_array(cb);
        json_builder_end_object(cb);
        json_builder_end_object(cb);
        config = json_text(cb);
        sha256_of(config, strlen(config), config_digest);

        json_builder_begin_object(mb);
        json_builder_set_member_name(mb, "schemaVersion");
        json_builder_add_int_value(mb, 2);
        json_builder_set_member_name(mb, "mediaType");
        json_builder_add_string_value(mb, OCI_MANIFEST_TYPE);
        json_builder_set_member_name(mb, "config");
        descriptor_add(mb, OCI_CONFIG_TYPE, config_digest, strlen(config));
        json_builder_set_member_name(mb, "layers");
        json_builder_begin_array(mb);
        for (size_t i = 0; i < n_layers; i++)
                descriptor_add(mb, layer_type, layers[i].digest, layers[i].size);
        json_builder_end_array(mb);
        json_builder_set_member_name(mb, "annotations");
        annotations_add(mb, a);
        json_builder_end_object(mb);
        manifest = json_text(mb);

        uint64_t total = strlen(config) + strlen(manifest), done = 0;
        for (size_t i = 0; i < n_layers; i++)
                total += layers[i].size;
        for (size_t i = 0; i < n_layers && k >= 0; i++) {
                registry_set_progress(r, total, done);
                if (!uploaded[i])
                        k = upload_blob(c, r, layers[i].digest, layers[i].fd, NULL, layers[i].size);
                done += layers[i].size;
        }
        if (k >= 0)
                k = upload_blob(c, r, config_digest, -1, config, strlen(config));
        if (k >= 0)
                k = registry_put_manifest(r, a->oci.reference, OCI_MANIFEST_TYPE, manifest, strlen(manifest));
        for (size_t i = 0; i < n_layers; i++)
                safe_close(layers[i].fd);
        if (k < 0)
                return k;
        {
                char *keep[3] = {layers[0].digest, n_layers > 1 ? layers[1].digest : NULL, NULL};
                oci_cache_trim(cache_fd, a->oci.cache_max, keep);
        }

        if (snapshot_fd >= 0) {
                snapshot_fd = safe_close(snapshot_fd);
                k = store_remove_tree(c->store_fd, c->temp_name);
                if (k < 0)
                        job_child_log(c, LOG_LEVEL_WARNING, "Cannot remove the push snapshot: %s", strerror(-k));
        }
        {
                char mdigest[72];
                sha256_of(manifest, strlen(manifest), mdigest);
                job_child_log(c, LOG_LEVEL_INFO, "Pushed %s as %s", shown_ref, mdigest);
        }
        job_child_progress(c, 1.0);
        return 0;
}
