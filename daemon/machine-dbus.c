/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>

#include "authz.h"
#include "errors.h"
#include "exec.h"
#include "escape.h"
#include "image.h"
#include "image-dbus.h"
#include "machine-dbus.h"
#include "machine-cgroup.h"
#include "uid-range.h"
#include "names.h"
#include "options.h"
#include "snapshot-dbus.h"

/* nspawn takes the machine name as the container's hostname: an image name that is also a host name. */
static const char *machine_name_invalid_reason(const char *name)
{
        const char *why = image_name_invalid_reason(name);
        size_t label = 0;

        if (why)
                return why;
        for (const char *p = name; *p; p++) {
                if (*p == '_')
                        return "contains '_', which a host name cannot";
                if (*p != '.') {
                        if (++label > 63)
                                return "has a part between dots longer than 63 characters";
                        continue;
                }
                if (label == 0)
                        return "has an empty part between dots";
                label = 0;
        }
        if (label == 0)
                return "ends with '.'";
        return NULL;
}

static int bus_check_machine_name(const char *name, const char *what, sd_bus_error *error)
{
        return stamp_error_check_name(error, what, name, machine_name_invalid_reason(name));
}

/* The running machine @name, or NULL with @error set (InvalidName, NoSuchMachine). */
Machine *bus_find_machine(Manager *m, const char *name, sd_bus_error *error)
{
        Machine *mc;

        if (bus_check_machine_name(name, "machine name", error) < 0)
                return NULL;
        mc = machine_find(m, name);
        if (!mc || mc->state == MACHINE_EXITED) {
                sd_bus_error_setf(error, STAMP_ERROR_NO_SUCH_MACHINE, "No machine named %s is running", name);
                return NULL;
        }
        return mc;
}

/* ---- StartMachine ---- */

typedef struct StartOptions {
        char *name;
        int boot;
        char **command;
        int ephemeral;
        int read_only;
        int private_users;
        int private_network;
        char *term;
        int stdio_fd[3];
        char *snapshot;
        uint64_t memory_max;
        uint64_t cpu_weight;
        char **ports;
} StartOptions;

static const OptionSpec start_option_table[] = {
        {"name", OPTION_STRING, offsetof(StartOptions, name)},
        {"boot", OPTION_BOOL, offsetof(StartOptions, boot)},
        {"command", OPTION_STRV, offsetof(StartOptions, command)},
        {"ephemeral", OPTION_BOOL, offsetof(StartOptions, ephemeral)},
        {"read_only", OPTION_BOOL, offsetof(StartOptions, read_only)},
        {"private_users", OPTION_BOOL, offsetof(StartOptions, private_users)},
        {"private_network", OPTION_BOOL, offsetof(StartOptions, private_network)},
        {"term", OPTION_STRING, offsetof(StartOptions, term)},
        {"stdin", OPTION_FD, offsetof(StartOptions, stdio_fd[0])},
        {"stdout", OPTION_FD, offsetof(StartOptions, stdio_fd[1])},
        {"stderr", OPTION_FD, offsetof(StartOptions, stdio_fd[2])},
        {"snapshot", OPTION_STRING, offsetof(StartOptions, snapshot)},
        {"memory_max", OPTION_U64, offsetof(StartOptions, memory_max)},
        {"cpu_weight", OPTION_U64, offsetof(StartOptions, cpu_weight)},
        {"ports", OPTION_STRV, offsetof(StartOptions, ports)},
        {},
};

static void start_options_done(StartOptions *o)
{
        options_free(start_option_table, o);
}

/* The caller's stdio fds: something that can be read (stdin) or written (stdout, stderr). */
int check_stdio_fd(int fd, const char *key, bool input, sd_bus_error *error)
{
        struct stat st;
        int flags, mode;

        if (fd < 0)
                return 0;
        flags = fcntl(fd, F_GETFL);
        if (flags < 0 || fstat(fd, &st) < 0)
                return sd_bus_error_set_errnof(error, errno, "Cannot inspect the file descriptor of option \"%s\": %m",
                                               key);
        if (flags & O_PATH)
                return sd_bus_error_setf(error, SD_BUS_ERROR_INVALID_ARGS,
                                         "The file descriptor of option \"%s\" is an O_PATH one, which cannot be %s",
                                         key, input ? "read" : "written");
        if (S_ISDIR(st.st_mode))
                return sd_bus_error_setf(error, SD_BUS_ERROR_INVALID_ARGS,
                                         "The file descriptor of option \"%s\" is a directory", key);
        mode = flags & O_ACCMODE;
        if (input ? mode == O_WRONLY : mode == O_RDONLY)
                return sd_bus_error_setf(error, SD_BUS_ERROR_INVALID_ARGS,
                                         "The file descriptor of option \"%s\" is not open for %s", key,
                                         input ? "reading" : "writing");
        return 0;
}

/* The caller's terminal type, for nspawn's console: a short name, nothing nspawn's environment could
 * take for more. */
static int check_term(const char *term, sd_bus_error *error)
{
        size_t n;

        if (!term)
                return 0;
        n = strlen(term);
        if (n >= 1 && n <= 64 &&
            strspn(term, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._+-") == n)
                return 0;
        return sd_bus_error_setf(error, SD_BUS_ERROR_INVALID_ARGS,
                                 "Invalid option \"term\": 1 to 64 of A-Z a-z 0-9 . _ + - (a terminal type "
                                 "such as xterm-256color)");
}

static int check_command(char **command, bool boot, sd_bus_error *error)
{
        if (!command || !command[0])
                return 0;
        if (boot)
                return sd_bus_error_setf(error, SD_BUS_ERROR_INVALID_ARGS,
                                         "Options \"boot\" and \"command\" exclude each other: a booted machine "
                                         "runs its init");
        if (isempty(command[0]))
                return sd_bus_error_setf(error, SD_BUS_ERROR_INVALID_ARGS,
                                         "Option \"command\" starts with an empty program name");
        return 0;
}

static int check_machine_limits(const StartOptions *o, sd_bus_error *error)
{
        if (o->memory_max != UINT64_MAX && o->memory_max < MACHINE_MEMORY_MAX_MIN)
                return sd_bus_error_setf(error, SD_BUS_ERROR_INVALID_ARGS,
                                         "Option \"memory_max\" of %" PRIu64 " bytes is below the least a machine "
                                         "needs (%" PRIu64 " bytes)",
                                         o->memory_max, MACHINE_MEMORY_MAX_MIN);
        if (o->cpu_weight != UINT64_MAX &&
            (o->cpu_weight < MACHINE_CPU_WEIGHT_MIN || o->cpu_weight > MACHINE_CPU_WEIGHT_MAX))
                return sd_bus_error_setf(error, SD_BUS_ERROR_INVALID_ARGS,
                                         "Option \"cpu_weight\" is %" PRIu64 ", not between %" PRIu64 " and %" PRIu64,
                                         o->cpu_weight, MACHINE_CPU_WEIGHT_MIN, MACHINE_CPU_WEIGHT_MAX);
        return 0;
}

/* The ports to publish, checked: each valid, no host port twice. */
static int parse_ports(char **ports, MachinePort **ret, size_t *ret_n, sd_bus_error *error)
{
        _cleanup_free_ MachinePort *l = NULL;
        size_t n = ports ? g_strv_length(ports) : 0;

        *ret = NULL;
        *ret_n = 0;
        if (n == 0)
                return 0;
        if (n > MACHINE_PORTS_MAX)
                return sd_bus_error_setf(error, SD_BUS_ERROR_INVALID_ARGS,
                                         "Option \"ports\" names %zu ports; at most %d can be published", n,
                                         MACHINE_PORTS_MAX);
        l = calloc(n, sizeof *l);
        if (!l)
                return -ENOMEM;
        for (size_t i = 0; i < n; i++) {
                const char *why = machine_port_parse(ports[i], &l[i]);
                if (why) {
                        g_autofree char *shown = text_escape(ports[i], 64, ESCAPE_MESSAGE);
                        return sd_bus_error_setf(error, SD_BUS_ERROR_INVALID_ARGS, "Port \"%s\" of option \"ports\" %s",
                                                 shown, why);
                }
                for (size_t j = 0; j < i; j++)
                        if (l[j].host == l[i].host && streq(l[j].protocol, l[i].protocol))
                                return sd_bus_error_setf(error, SD_BUS_ERROR_INVALID_ARGS,
                                                         "Option \"ports\" publishes %s port %u twice", l[i].protocol,
                                                         l[i].host);
        }
        *ret = TAKE_PTR(l);
        *ret_n = n;
        return 0;
}

/* A link-local /30 no running machine has. */
static unsigned pick_net_index(Manager *m)
{
        static unsigned next;

        for (unsigned tries = 0; tries < MACHINE_NET_INDEX_MAX; tries++) {
                unsigned candidate = next++ % MACHINE_NET_INDEX_MAX;
                GHashTableIter it;
                gpointer v;
                bool taken = false;

                g_hash_table_iter_init(&it, m->machines);
                while (g_hash_table_iter_next(&it, NULL, &v))
                        if (((Machine *) v)->n_ports > 0 && ((Machine *) v)->net_index == candidate)
                                taken = true;
                if (!taken)
                        return candidate;
        }
        return next;
}

/* Whether @image may be started as asked, given who holds it now. */
static int check_image_free(Manager *m, const Image *img, bool writable, sd_bus_error *error)
{
        const char *image = img->name;
        const char *why = manager_image_busy_reason(m, image);
        Machine *holder;

        /* An export reads this image in place, walking its tree on host paths: root in a machine
         * could swap a directory for a link to the host's / under it (a read-only run too: nspawn
         * leaves it the privilege to remount). Only a read-only btrfs subvolume stays as it is. */
        if (manager_image_has_readers(m, image) && !(img->type == IMAGE_SUBVOLUME && img->read_only))
                return sd_bus_error_setf(error, STAMP_ERROR_IMAGE_BUSY,
                                         "Image %s is busy (being exported in place; a machine may run on it "
                                         "once the export has ended)",
                                         image);
        if (!why)
                return 0;
        holder = machine_holding_image(m, image);
        if (!writable && holder && holder->read_only)
                return 0; /* read-only runs share the image */
        return sd_bus_error_setf(error, STAMP_ERROR_IMAGE_BUSY, "Image %s is busy (%s)", image, why);
}

/* Option "snapshot": taken by the supervisor just before nspawn starts, on the image the machine then
 * holds; covered by the start's own authorization, since whoever may run a writable machine on the
 * image may change all of it anyway (rules see the detail "snapshot"). */
static int check_start_snapshot(Manager *m, const Image *img, const char *snapshot, bool ephemeral, sd_bus_error *error)
{
        if (ephemeral)
                return sd_bus_error_setf(error, SD_BUS_ERROR_INVALID_ARGS,
                                         "Options \"snapshot\" and \"ephemeral\" exclude each other: an ephemeral "
                                         "machine leaves its image as it was");
        return bus_check_snapshot_can_be_made(m, img, snapshot, error);
}

/* The caps on machines, in all and for the caller. Before authorization the caller's uid may not be
 * known yet (a connection's first call): its cap is then checked after, when @caller_needed. */
static int check_machine_caps(Manager *m, sd_bus_message *msg, bool caller_needed, char **ret_caller,
                              sd_bus_error *error)
{
        _cleanup_free_ char *caller = NULL;
        int k;

        if (g_hash_table_size(m->machines) >= m->settings.machines_max)
                return sd_bus_error_setf(error, SD_BUS_ERROR_LIMITS_EXCEEDED,
                                         "Too many machines running (at most %u in all); try again when one has "
                                         "ended",
                                         m->settings.machines_max);
        k = manager_caller_key(m, msg, &caller);
        if (k == -ENODATA && !caller_needed)
                return 0;
        if (k == -ENODATA)
                return sd_bus_error_set(error, SD_BUS_ERROR_ACCESS_DENIED, "Cannot tell who the caller is");
        if (k < 0)
                return k;
        if (machines_of_owner(m, caller) >= m->settings.machines_per_user_max)
                return sd_bus_error_setf(error, SD_BUS_ERROR_LIMITS_EXCEEDED,
                                         "Too many machines running for %s (at most %u %s)", caller,
                                         m->settings.machines_per_user_max, manager_caller_cap_scope(caller));
        if (ret_caller)
                *ret_caller = TAKE_PTR(caller);
        return 0;
}

int method_start_machine(sd_bus_message *msg, void *userdata, sd_bus_error *error)
{
        Manager *m = userdata;
        _cleanup_(start_options_done) StartOptions o = {.stdio_fd = {-1, -1, -1}};
        _cleanup_(machine_freep) Machine *mc = NULL;
        _cleanup_free_ char *caller = NULL;
        const char *image, *name, *path;
        bool boot, ephemeral, read_only, userns = false;
        uid_t uid = 0, uid_base = 0;
        _cleanup_free_ MachinePort *ports = NULL;
        size_t n_ports = 0;
        Image *img;
        int k;

        k = sd_bus_message_read(msg, "s", &image);
        if (k < 0)
                return k;
        k = bus_read_options(msg, start_option_table, &o, error);
        if (k < 0)
                return k;
        name = o.name ?: image;
        boot = o.boot > 0;
        ephemeral = o.ephemeral > 0;
        read_only = o.read_only > 0;

        if ((k = bus_check_image_name(image, "image name", error)) < 0)
                return k;
        if (!o.name && machine_name_invalid_reason(image))
                return sd_bus_error_setf(error, STAMP_ERROR_INVALID_NAME,
                                         "Image name %s cannot be a machine name (it %s); give one with option "
                                         "\"name\"",
                                         image, machine_name_invalid_reason(image));
        if ((k = bus_check_machine_name(name, "machine name", error)) < 0 ||
            (k = check_command(o.command, boot, error)) < 0 || (k = check_term(o.term, error)) < 0 ||
            (k = check_stdio_fd(o.stdio_fd[0], "stdin", true, error)) < 0 ||
            (k = check_stdio_fd(o.stdio_fd[1], "stdout", false, error)) < 0 ||
            (k = check_stdio_fd(o.stdio_fd[2], "stderr", false, error)) < 0 ||
            (k = check_machine_limits(&o, error)) < 0 || (k = parse_ports(o.ports, &ports, &n_ports, error)) < 0)
                return k;

        if ((k = bus_check_image_exists(m, image, &img, error)) < 0)
                return k;
        if (img->read_only && !ephemeral && !read_only)
                return sd_bus_error_setf(error, STAMP_ERROR_IMAGE_READ_ONLY,
                                         "Image %s is read-only; it can only be started ephemeral or read-only", image);
        if (machine_find(m, name))
                return sd_bus_error_setf(error, STAMP_ERROR_MACHINE_EXISTS, "A machine named %s already exists", name);
        if (o.snapshot && (k = check_start_snapshot(m, img, o.snapshot, ephemeral, error)) < 0)
                return k;
        if (!ephemeral && (k = check_image_free(m, img, !read_only, error)) < 0)
                return k;

        if ((k = check_machine_caps(m, msg, false, NULL, error)) < 0)
                return k;

        {
                const char *details[] = {"verb", "start", "image", image, "machine", name, "boot", boot ? "yes" : "no",
                                         "ephemeral", ephemeral ? "yes" : "no", "private_users",
                                         o.private_users == 0 ? "no" : "yes", "ports", n_ports > 0 ? "yes" : "no",
                                         /* last: without a snapshot, its NULL ends the details */
                                         o.snapshot ? "snapshot" : NULL, o.snapshot, NULL};
                AuthzOwner owner = {.own_action = STAMP_ACTION_START_OWN_MACHINE, .owner = image_owner(m, img)};
                /* On one's own image a machine may start without the administrator, but only in a user
                 * namespace: one that explicitly asks for root mapping (private_users false) asks for
                 * start-machine itself. */
                /* Ports on the host's addresses are the host's business: the administrator's. */
                if (o.private_users == 0 || n_ports > 0)
                        k = authz_verify(m->authz, msg, STAMP_ACTION_START_MACHINE, details, error);
                else
                        k = authz_verify_owned(m->authz, msg, STAMP_ACTION_START_MACHINE, &owner, details, &userns,
                                               error);
                if (k <= 0)
                        return k < 0 ? k : 1;
                k = authz_caller_uid(m->authz, msg, &uid);
                if (k < 0)
                        return sd_bus_error_set_errnof(error, k, "Cannot tell who the caller is: %m");
        }
        if ((k = check_machine_caps(m, msg, true, &caller, error)) < 0)
                return k;
        if (userns && (k = uid_range_pick(m, &uid_base)) < 0)
                return sd_bus_error_setf(error, SD_BUS_ERROR_LIMITS_EXCEEDED,
                                         "No free uid range for a user namespace: all %u are in use",
                                         (UID_RANGE_LAST - UID_RANGE_FIRST) / UID_RANGE_SIZE + 1);

        k = machine_new(m, name, image, caller, &mc);
        if (k < 0)
                return k;
        mc->command = TAKE_PTR(o.command);
        mc->term = TAKE_PTR(o.term);
        mc->starter = sd_bus_message_get_sender(msg) ? strdup(sd_bus_message_get_sender(msg)) : NULL;
        mc->boot = boot;
        mc->ephemeral = ephemeral;
        mc->read_only = read_only;
        mc->private_users = o.private_users > 0;
        mc->private_network = o.private_network > 0;
        mc->uid = uid;
        mc->userns = userns;
        mc->uid_base = uid_base;
        mc->memory_max = o.memory_max;
        mc->cpu_weight = o.cpu_weight;
        mc->ports = TAKE_PTR(ports);
        mc->n_ports = n_ports;
        if (n_ports > 0)
                mc->net_index = pick_net_index(m);
        mc->snapshot = TAKE_PTR(o.snapshot);
        for (int i = 0; i < 3; i++)
                mc->stdio_fd[i] = TAKE_FD(o.stdio_fd[i]);

        k = machine_start(mc);
        if (k < 0)
                return sd_bus_error_set_errnof(error, k, "Cannot start machine %s: %m", name);
        path = TAKE_PTR(mc)->object_path; /* the manager owns it now */
        return sd_bus_reply_method_return(msg, "o", path);
}

/* ---- ListMachines, StopMachine, KillMachine ---- */

int method_list_machines(sd_bus_message *msg, void *userdata, sd_bus_error *error)
{
        Manager *m = userdata;
        _cleanup_bus_message_ sd_bus_message *reply = NULL;
        g_autoptr(GList) names = g_hash_table_get_keys(m->machines);
        int k;

        names = g_list_sort(names, (GCompareFunc) strcmp);
        k = sd_bus_message_new_method_return(msg, &reply);
        if (k >= 0)
                k = sd_bus_message_open_container(reply, 'a', "(sssuo)");
        for (GList *l = names; k >= 0 && l; l = l->next) {
                Machine *mc = machine_find(m, l->data);
                k = sd_bus_message_append(reply, "(sssuo)", mc->name, mc->image, machine_state_to_string(mc->state),
                                          mc->leader, mc->object_path);
        }
        if (k >= 0)
                k = sd_bus_message_close_container(reply);
        if (k < 0)
                return k;
        return sd_bus_send(NULL, reply, NULL);
}

static int machine_method_stop(Manager *m, sd_bus_message *msg, Machine *mc, sd_bus_error *error)
{
        const char *details[] = {"verb", "stop", "machine", mc->name, "image", mc->image, NULL};
        AuthzOwner owner = {.own_action = STAMP_ACTION_MANAGE_OWN_MACHINES, .owner = mc->uid};
        int k;

        k = authz_verify_owned(m->authz, msg, STAMP_ACTION_MANAGE_MACHINES, &owner, details, NULL, error);
        if (k <= 0)
                return k < 0 ? k : 1;
        k = machine_stop(mc);
        if (k < 0)
                return sd_bus_error_set_errnof(error, k, "Cannot stop machine %s: %m", mc->name);
        return sd_bus_reply_method_return(msg, NULL);
}

static int machine_method_kill(Manager *m, sd_bus_message *msg, Machine *mc, const char *whom, int signo,
                               sd_bus_error *error)
{
        char number[16];
        const char *details[] = {"verb",   "kill", "machine", mc->name, "image", mc->image,
                                 "signal", number, "whom",    whom,     NULL};
        AuthzOwner owner = {.own_action = STAMP_ACTION_MANAGE_OWN_MACHINES, .owner = mc->uid};
        int k;

        snprintf(number, sizeof number, "%d", signo);
        k = authz_verify_owned(m->authz, msg, STAMP_ACTION_MANAGE_MACHINES, &owner, details, NULL, error);
        if (k <= 0)
                return k < 0 ? k : 1;
        k = machine_kill_whom(mc, machine_kill_whom_from_string(whom), signo);
        if (k == -ESRCH)
                return sd_bus_error_setf(error, STAMP_ERROR_NO_SUCH_MACHINE, "Machine %s has already ended", mc->name);
        if (k < 0)
                return sd_bus_error_set_errnof(error, k, "Cannot send signal %d to machine %s: %m", signo, mc->name);
        return sd_bus_reply_method_return(msg, NULL);
}

static int check_signal(int signo, sd_bus_error *error)
{
        if (signo >= 1 && signo < _NSIG)
                return 0;
        return sd_bus_error_setf(error, SD_BUS_ERROR_INVALID_ARGS, "Invalid signal number %d: not between 1 and %d",
                                 signo, _NSIG - 1);
}

static int check_whom(const char *whom, sd_bus_error *error)
{
        if (machine_kill_whom_from_string(whom) >= 0)
                return 0;
        return sd_bus_error_setf(error, SD_BUS_ERROR_INVALID_ARGS, "Invalid whom \"%s\": use \"all\" or \"leader\"",
                                 whom);
}

int method_stop_machine(sd_bus_message *msg, void *userdata, sd_bus_error *error)
{
        Manager *m = userdata;
        const char *name;
        Machine *mc = NULL;
        int k;

        k = sd_bus_message_read(msg, "s", &name);
        if (k < 0)
                return k;
        mc = bus_find_machine(m, name, error);
        if (!mc)
                return -ENXIO; /* @error says which */
        return machine_method_stop(m, msg, mc, error);
}

int method_kill_machine(sd_bus_message *msg, void *userdata, sd_bus_error *error)
{
        Manager *m = userdata;
        const char *name;
        int32_t signo;
        Machine *mc = NULL;
        int k;

        k = sd_bus_message_read(msg, "si", &name, &signo);
        if (k < 0)
                return k;
        if ((k = check_signal(signo, error)) < 0)
                return k;
        mc = bus_find_machine(m, name, error);
        if (!mc)
                return -ENXIO; /* @error says which */
        return machine_method_kill(m, msg, mc, "all", signo, error);
}

int method_kill_machine_ex(sd_bus_message *msg, void *userdata, sd_bus_error *error)
{
        Manager *m = userdata;
        const char *name, *whom;
        int32_t signo;
        Machine *mc = NULL;
        int k;

        k = sd_bus_message_read(msg, "ssi", &name, &whom, &signo);
        if (k < 0)
                return k;
        if ((k = check_signal(signo, error)) < 0 || (k = check_whom(whom, error)) < 0)
                return k;
        mc = bus_find_machine(m, name, error);
        if (!mc)
                return -ENXIO; /* @error says which */
        return machine_method_kill(m, msg, mc, whom, signo, error);
}

/* ---- the Machine object ---- */

static int machine_object_find(sd_bus *bus, const char *path, const char *interface, void *userdata, void **found,
                               sd_bus_error *error)
{
        Manager *m = userdata;
        _cleanup_free_ char *name = NULL;
        Machine *mc = NULL;

        if (sd_bus_path_decode(path, STAMP_MACHINE_PREFIX, &name) <= 0 || isempty(name))
                return 0;
        mc = machine_find(m, name);
        if (!mc)
                return 0;
        *found = mc;
        return 1;
}

static int machine_node_enumerator(sd_bus *bus, const char *path, void *userdata, char ***nodes, sd_bus_error *error)
{
        Manager *m = userdata;
        GHashTableIter it;
        gpointer v;
        char **l;
        size_t i = 0;

        l = calloc(g_hash_table_size(m->machines) + 1, sizeof(char *));
        if (!l)
                return -ENOMEM;
        g_hash_table_iter_init(&it, m->machines);
        while (g_hash_table_iter_next(&it, NULL, &v))
                if (!(l[i++] = strdup(((Machine *) v)->object_path))) {
                        strv_freep(&l);
                        return -ENOMEM;
                }
        *nodes = l;
        return 0;
}

static int method_stop(sd_bus_message *msg, void *userdata, sd_bus_error *error)
{
        Machine *mc = userdata;

        if (mc->state == MACHINE_EXITED)
                return sd_bus_error_setf(error, STAMP_ERROR_NO_SUCH_MACHINE, "Machine %s has already ended", mc->name);
        return machine_method_stop(mc->manager, msg, mc, error);
}

static int method_kill(sd_bus_message *msg, void *userdata, sd_bus_error *error)
{
        Machine *mc = userdata;
        int32_t signo;
        int k;

        k = sd_bus_message_read(msg, "i", &signo);
        if (k < 0)
                return k;
        if ((k = check_signal(signo, error)) < 0)
                return k;
        if (mc->state == MACHINE_EXITED)
                return sd_bus_error_setf(error, STAMP_ERROR_NO_SUCH_MACHINE, "Machine %s has already ended", mc->name);
        return machine_method_kill(mc->manager, msg, mc, "all", signo, error);
}

static int method_kill_ex(sd_bus_message *msg, void *userdata, sd_bus_error *error)
{
        Machine *mc = userdata;
        const char *whom;
        int32_t signo;
        int k;

        k = sd_bus_message_read(msg, "si", &whom, &signo);
        if (k < 0)
                return k;
        if ((k = check_signal(signo, error)) < 0 || (k = check_whom(whom, error)) < 0)
                return k;
        if (mc->state == MACHINE_EXITED)
                return sd_bus_error_setf(error, STAMP_ERROR_NO_SUCH_MACHINE, "Machine %s has already ended", mc->name);
        return machine_method_kill(mc->manager, msg, mc, whom, signo, error);
}

/* The terminal of the connection that started the machine changed its size: nspawn is to pass it on.
 * Only that connection may ask (its terminal is the console); nothing else changes, so no polkit. */
static int method_console_resized(sd_bus_message *msg, void *userdata, sd_bus_error *error)
{
        Machine *mc = userdata;
        const char *sender = sd_bus_message_get_sender(msg);
        int k;

        if (!mc->starter || !sender || !streq(mc->starter, sender))
                return sd_bus_error_setf(error, SD_BUS_ERROR_ACCESS_DENIED,
                                         "Only the caller that started machine %s on its terminal may say that "
                                         "the terminal was resized",
                                         mc->name);
        k = machine_console_resized(mc);
        if (k == -ESRCH)
                return sd_bus_error_setf(error, STAMP_ERROR_NO_SUCH_MACHINE, "Machine %s has already ended", mc->name);
        if (k < 0)
                return sd_bus_error_set_errnof(error, k, "Cannot tell machine %s of its console's size: %m", mc->name);
        return sd_bus_reply_method_return(msg, NULL);
}

/* The command's pid, looked for when asked: it may be forked after the leader was learned. */
static int property_get_payload(sd_bus *bus, const char *path, const char *interface, const char *property,
                                sd_bus_message *reply, void *userdata, sd_bus_error *error)
{
        Machine *mc = userdata;

        machine_learn_payload(mc);
        return sd_bus_message_append(reply, "u", mc->payload);
}

static int property_get_state(sd_bus *bus, const char *path, const char *interface, const char *property,
                              sd_bus_message *reply, void *userdata, sd_bus_error *error)
{
        Machine *mc = userdata;
        return sd_bus_message_append(reply, "s", machine_state_to_string(mc->state));
}

static int property_get_flag(sd_bus *bus, const char *path, const char *interface, const char *property,
                             sd_bus_message *reply, void *userdata, sd_bus_error *error)
{
        Machine *mc = userdata;
        bool v = streq(property, "Boot")            ? mc->boot
                 : streq(property, "UserNamespace") ? (mc->userns || mc->private_users)
                                                    : mc->ephemeral;
        return sd_bus_message_append(reply, "b", (int) v);
}

/* The host uid of the container's root: 0 without a user namespace, UINT32_MAX where nspawn picked it
 * (private_users asked for by an administrator). */
static int property_get_uid_shift(sd_bus *bus, const char *path, const char *interface, const char *property,
                                  sd_bus_message *reply, void *userdata, sd_bus_error *error)
{
        Machine *mc = userdata;
        uint32_t shift = mc->userns ? (uint32_t) mc->uid_base : mc->private_users ? UINT32_MAX : 0;
        return sd_bus_message_append(reply, "u", shift);
}

static int property_get_ports(sd_bus *bus, const char *path, const char *interface, const char *property,
                              sd_bus_message *reply, void *userdata, sd_bus_error *error)
{
        Machine *mc = userdata;
        int k = sd_bus_message_open_container(reply, 'a', "(sqq)");

        for (size_t i = 0; k >= 0 && i < mc->n_ports; i++)
                k = sd_bus_message_append(reply, "(sqq)", mc->ports[i].protocol, mc->ports[i].host,
                                          mc->ports[i].container);
        return k < 0 ? k : sd_bus_message_close_container(reply);
}

static const sd_bus_vtable machine_vtable[] = {
        SD_BUS_VTABLE_START(0),
        SD_BUS_PROPERTY("Name", "s", NULL, offsetof(Machine, name), SD_BUS_VTABLE_PROPERTY_CONST),
        SD_BUS_PROPERTY("Image", "s", NULL, offsetof(Machine, image), SD_BUS_VTABLE_PROPERTY_CONST),
        SD_BUS_PROPERTY("Leader", "u", NULL, offsetof(Machine, leader), SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("State", "s", property_get_state, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("ExitStatus", "i", NULL, offsetof(Machine, exit_status), SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("Boot", "b", property_get_flag, 0, SD_BUS_VTABLE_PROPERTY_CONST),
        SD_BUS_PROPERTY("Ephemeral", "b", property_get_flag, 0, SD_BUS_VTABLE_PROPERTY_CONST),
        SD_BUS_PROPERTY("Timestamp", "t", NULL, offsetof(Machine, timestamp_usec), SD_BUS_VTABLE_PROPERTY_CONST),
        SD_BUS_PROPERTY("Owner", "u", NULL, offsetof(Machine, uid), SD_BUS_VTABLE_PROPERTY_CONST),
        SD_BUS_PROPERTY("UserNamespace", "b", property_get_flag, 0, SD_BUS_VTABLE_PROPERTY_CONST),
        SD_BUS_PROPERTY("UIDShift", "u", property_get_uid_shift, 0, SD_BUS_VTABLE_PROPERTY_CONST),
        SD_BUS_PROPERTY("Payload", "u", property_get_payload, 0, 0),
        SD_BUS_METHOD("ConsoleResized", "", "", method_console_resized, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_PROPERTY("MemoryMax", "t", NULL, offsetof(Machine, memory_max), SD_BUS_VTABLE_PROPERTY_CONST),
        SD_BUS_PROPERTY("CPUWeight", "t", NULL, offsetof(Machine, cpu_weight), SD_BUS_VTABLE_PROPERTY_CONST),
        SD_BUS_PROPERTY("Ports", "a(sqq)", property_get_ports, 0, SD_BUS_VTABLE_PROPERTY_CONST),
        SD_BUS_METHOD("Stop", "", "", method_stop, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("Kill", SD_BUS_ARGS("i", signal), SD_BUS_NO_RESULT, method_kill,
                                SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("Exec", SD_BUS_ARGS("as", argv, "a{sv}", options), SD_BUS_RESULT("u", exec_id),
                                method_machine_exec, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("KillEx", SD_BUS_ARGS("s", whom, "i", signal), SD_BUS_NO_RESULT, method_kill_ex,
                                SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_VTABLE_END,
};

int manager_add_machine_objects(Manager *m)
{
        int k = sd_bus_add_fallback_vtable(m->bus, NULL, STAMP_MACHINE_PREFIX, STAMP_MACHINE_IFACE, machine_vtable,
                                           machine_object_find, m);
        if (k < 0)
                return k;
        return sd_bus_add_node_enumerator(m->bus, NULL, STAMP_MACHINE_PREFIX, machine_node_enumerator, m);
}
