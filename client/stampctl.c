/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* stampctl: the unprivileged client of stampd. Options, the verbs table, dispatch. */

#include <ctype.h>
#include <getopt.h>
#include <locale.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "formats.h"
#include "names.h"
#include "stampctl.h"
#include "table.h"

bool arg_json = false;
static bool arg_json_short = false;
bool arg_legend = true;
bool arg_ask_password = true;
bool arg_quiet = false;
bool arg_block = true;
bool arg_verbose = false;
const char *arg_host = NULL;

bool arg_read_only = false;
bool arg_keep_identity = false;
bool arg_mine = false;
const char *arg_from = NULL;
bool arg_cache = false;
bool arg_tree = false;
const char *arg_suite = NULL;
const char *arg_variant = NULL;
const char *arg_arch = NULL;
char **arg_include = NULL;
const char *arg_mirror = NULL;
const char *arg_package_tarball = NULL;
bool arg_root_password = false;
const char *arg_format = NULL;
bool arg_checksum = false;
const char *arg_verify = NULL;
bool arg_boot = false;
bool arg_ephemeral = false;
const char *arg_machine_name = NULL;
bool arg_private_network = false;
bool arg_private_users = false;
int arg_signal = SIGTERM;
bool arg_with_snapshots = false;
const char *arg_snapshot = NULL;
const char *arg_compression = NULL;
bool arg_delta = false;
const char *arg_parent = NULL;

const char *arg_kill_whom = NULL;

/* Options that only some verbs take; a verb lists the ones it accepts. */
#define OPT_READ_ONLY (UINT64_C(1) << 0)
#define OPT_TREE (UINT64_C(1) << 1)
#define OPT_SUITE (UINT64_C(1) << 2)
#define OPT_VARIANT (UINT64_C(1) << 3)
#define OPT_ARCH (UINT64_C(1) << 4)
#define OPT_INCLUDE (UINT64_C(1) << 5)
#define OPT_MIRROR (UINT64_C(1) << 6)
#define OPT_PACKAGE_TARBALL (UINT64_C(1) << 7)
#define OPT_ROOT_PASSWORD (UINT64_C(1) << 8)
#define OPT_FORMAT (UINT64_C(1) << 9)
#define OPT_CHECKSUM (UINT64_C(1) << 10)
#define OPT_VERIFY (UINT64_C(1) << 11)
#define OPT_BOOT (UINT64_C(1) << 12)
#define OPT_EPHEMERAL (UINT64_C(1) << 13)
#define OPT_NAME (UINT64_C(1) << 14)
#define OPT_PRIVATE_NETWORK (UINT64_C(1) << 15)
#define OPT_PRIVATE_USERS (UINT64_C(1) << 16)
#define OPT_SIGNAL (UINT64_C(1) << 17)
#define OPT_KEEP_IDENTITY (UINT64_C(1) << 18)
#define OPT_MINE (UINT64_C(1) << 19)
#define OPT_WITH_SNAPSHOTS (UINT64_C(1) << 20)
#define OPT_SNAPSHOT (UINT64_C(1) << 21)
#define OPT_USER (UINT64_C(1) << 22)
#define OPT_ENV (UINT64_C(1) << 23)
#define OPT_CHDIR (UINT64_C(1) << 24)
#define OPT_COMPRESSION (UINT64_C(1) << 25)
#define OPT_DELTA (UINT64_C(1) << 26)
#define OPT_PARENT (UINT64_C(1) << 27)
#define OPT_KILL_WHOM (UINT64_C(1) << 28)
uint64_t arg_memory_max = UINT64_MAX;
uint64_t arg_cpu_weight = UINT64_MAX;
char **arg_ports = NULL;

#define OPT_MEMORY_MAX (UINT64_C(1) << 29)
#define OPT_CPU_WEIGHT (UINT64_C(1) << 30)
#define OPT_PORT (UINT64_C(1) << 31)
bool arg_insecure = false;
#define OPT_INSECURE (UINT64_C(1) << 32)
#define OPT_CACHE (UINT64_C(1) << 33)
#define OPT_FROM (UINT64_C(1) << 34)
bool arg_no_cache = false;
#define OPT_NO_CACHE (UINT64_C(1) << 35)

#define OPTS_TEMPLATE                                                                                                  \
        (OPT_SUITE | OPT_VARIANT | OPT_ARCH | OPT_INCLUDE | OPT_MIRROR | OPT_PACKAGE_TARBALL | OPT_ROOT_PASSWORD |     \
         OPT_FROM | OPT_NO_CACHE)
#define OPTS_MACHINE (OPT_EPHEMERAL | OPT_NAME | OPT_READ_ONLY | OPT_PRIVATE_NETWORK | OPT_PRIVATE_USERS)
#define OPTS_LIMITS (OPT_MEMORY_MAX | OPT_CPU_WEIGHT | OPT_PORT)

#define ARGS_ANY ((unsigned) -1)

struct verb {
        const char *name;
        unsigned min_args; /* operands after the verb */
        unsigned max_args;
        uint64_t options;
        int (*run)(sd_bus *bus, int argc, char **argv);
        const char *synopsis;
};

static int verb_help(sd_bus *bus, int argc, char **argv);

static const struct verb verbs[] = {
        {"list", 0, 0, OPT_TREE | OPT_MINE, verb_list, "list [--tree] [--mine]"},
        {"show", 0, 1, 0, verb_show, "show [NAME]"},
        {"status", 0, 1, 0, verb_show, "status [NAME]"},
        {"clone", 2, 2, OPT_READ_ONLY | OPT_KEEP_IDENTITY, verb_clone, "clone SRC DST [--read-only] [--keep-identity]"},
        {"remove", 1, ARGS_ANY, OPT_WITH_SNAPSHOTS, verb_remove, "remove NAME... [--with-snapshots]"},
        {"rename", 2, 2, 0, verb_rename, "rename OLD NEW"},
        {"read-only", 1, 2, 0, verb_read_only, "read-only NAME [yes|no]"},
        {"create-template", 1, 1, OPTS_TEMPLATE, verb_create_template,
         "create-template NAME --suite S [--variant V] [--arch A] [--include P1,P2] [--mirror URL] "
         "[--package-tarball FILE] [--root-password] [--no-cache] | --from TEMPLATE [--include P1,P2]"},
        {"clean", 0, 0, OPT_CACHE, verb_clean, "clean --cache"},
        {"export-tar", 2, 2, OPT_FORMAT | OPT_CHECKSUM, verb_export_tar,
         "export-tar NAME FILE|- [--format F] [--checksum]"},
        {"import-tar", 1, 2, OPT_READ_ONLY, verb_import_tar, "import-tar FILE|- [NAME] [--read-only]"},
        {"pull-tar", 1, 2, OPT_VERIFY | OPT_READ_ONLY, verb_pull_tar,
         "pull-tar URL [NAME] [--verify no|checksum] [--read-only]"},
        {"diff", 1, 2, 0, verb_diff, "diff NAME [BASE]"},
        {"export", 2, 2, OPT_FORMAT | OPT_COMPRESSION | OPT_DELTA | OPT_PARENT, verb_export,
         "export NAME FILE|- [--format tar|btrfs] [--compression C] [--delta | --parent P]"},
        {"import", 1, 2, OPT_READ_ONLY, verb_import, "import FILE|- [NAME] [--read-only]"},
        {"push", 2, 2, OPT_INSECURE | OPT_COMPRESSION, verb_push,
         "push NAME REGISTRY/REPO:TAG [--compression gzip|zstd] [--insecure]"},
        {"pull", 1, 2, OPT_INSECURE | OPT_READ_ONLY, verb_pull,
         "pull REGISTRY/REPO[:TAG|@DIGEST] [NAME] [--read-only] [--insecure]"},
        {"jobs", 0, 0, 0, verb_jobs, "jobs"},
        {"cancel", 1, ARGS_ANY, 0, verb_cancel, "cancel ID..."},
        {"start", 1, ARGS_ANY, OPTS_MACHINE | OPT_BOOT | OPT_SNAPSHOT | OPTS_LIMITS, verb_start,
         "start NAME [--boot] [--ephemeral] [--name N] [--read-only] [--private-network] [--private-users] "
         "[--snapshot SNAP] [--memory-max SIZE] [--cpu-weight N] [--port P]... [-- CMD...]"},
        {"shell", 1, 1, OPTS_MACHINE | OPTS_LIMITS | OPT_USER | OPT_ENV | OPT_CHDIR, verb_shell_or_join,
         "shell NAME [--user U] [--env K=V]... [--chdir D] [--ephemeral] [--name N] [--read-only] "
         "[--private-network] [--private-users]"},
        {"exec", 1, ARGS_ANY, OPT_USER | OPT_ENV | OPT_CHDIR, verb_exec,
         "exec NAME [--user U] [--env K=V]... [--chdir D] -- CMD..."},
        {"machines", 0, 0, 0, verb_machines, "machines"},
        {"stop", 1, ARGS_ANY, 0, verb_stop, "stop NAME..."},
        {"kill", 1, ARGS_ANY, OPT_SIGNAL | OPT_KILL_WHOM, verb_kill, "kill NAME... [--signal SIG] [--kill-whom W]"},
        {"terminate", 1, ARGS_ANY, 0, verb_terminate, "terminate NAME..."},
        {"machine-status", 1, 1, 0, verb_machine_status, "machine-status NAME"},
        {"snapshot", 2, 2, 0, verb_snapshot, "snapshot NAME SNAP"},
        {"snapshots", 1, 1, 0, verb_snapshots, "snapshots NAME"},
        {"restore", 2, 2, 0, verb_restore, "restore NAME SNAP"},
        {"remove-snapshot", 2, ARGS_ANY, 0, verb_remove_snapshot, "remove-snapshot NAME SNAP..."},
        {"cp", 2, 2, 0, verb_cp, "cp SRC NAME:PATH | cp NAME:PATH DST"},
        {"set-limit", 1, 2, 0, verb_set_limit, "set-limit [NAME] BYTES|none"},
        {"help", 0, ARGS_ANY, 0, verb_help, "help"},
};

/* machinectl's names for the same verbs, so that its users' habits work. */
static const struct {
        const char *alias, *name;
} verb_aliases[] = {
        {"list-images", "list"},       {"show-image", "show"},        {"image-status", "status"},
        {"clone-image", "clone"},      {"remove-image", "remove"},    {"rename-image", "rename"},
        {"list-transfers", "jobs"},    {"cancel-transfer", "cancel"}, {"poweroff", "stop"},
        {"list-machines", "machines"},
};

static const struct verb *find_verb(const char *name)
{
        for (size_t i = 0; i < ELEMENTSOF(verb_aliases); i++)
                if (strcmp(verb_aliases[i].alias, name) == 0)
                        name = verb_aliases[i].name;
        for (size_t i = 0; i < ELEMENTSOF(verbs); i++)
                if (strcmp(verbs[i].name, name) == 0)
                        return &verbs[i];
        return NULL;
}

/* The verb (or alias) a typo most likely meant: within two edits, else NULL. */
static const char *nearest_verb(const char *typed)
{
        const char *best = NULL;
        unsigned best_distance = 3;

        for (size_t i = 0; i < ELEMENTSOF(verbs) + ELEMENTSOF(verb_aliases); i++) {
                const char *name = i < ELEMENTSOF(verbs) ? verbs[i].name : verb_aliases[i - ELEMENTSOF(verbs)].alias;
                unsigned d = edit_distance(typed, name);
                if (d < best_distance) {
                        best_distance = d;
                        best = name;
                }
        }
        return best;
}

static void help(void)
{
        printf("stampctl [OPTIONS...] COMMAND ...\n"
               "\n"
               "Manage machine images and containers through stampd (io.stamp.Stamp1).\n"
               "Without COMMAND: list.\n"
               "\n"
               "Image commands:\n"
               "  list [--tree] [--mine]     List images; --tree puts clones beneath\n"
               "                             the image they were cloned from; --mine\n"
               "                             lists only the caller's own\n"
               "  show [NAME]                Show an image's properties; without NAME\n"
               "                             the pool (path, usage, limit); alias status\n"
               "  clone SRC DST [--read-only] [--keep-identity]\n"
               "                             Clone an image (a btrfs snapshot; writable\n"
               "                             unless --read-only); a clone of a template\n"
               "                             gets its own machine-id, hostname and ssh\n"
               "                             host keys unless --keep-identity\n"
               "  remove NAME... [--with-snapshots]\n"
               "                             Remove images (and their snapshots)\n"
               "  rename OLD NEW             Rename an image\n"
               "  read-only NAME [yes|no]    Mark an image read-only (default) or not\n"
               "  diff NAME [BASE]           What NAME changed against BASE (default: its\n"
               "                             origin), as git diff --name-status\n"
               "  snapshot NAME SNAP         Take a read-only snapshot of image NAME\n"
               "  snapshots NAME             List the snapshots of image NAME\n"
               "  restore NAME SNAP          Put image NAME back to snapshot SNAP\n"
               "  remove-snapshot NAME SNAP...\n"
               "                             Remove snapshots of image NAME\n"
               "  set-limit [NAME] SIZE|none Limit an image's bytes, or without NAME\n"
               "                             the size of stampd's own pool\n"
               "\n"
               "Job commands (wait with a progress bar unless --no-block; Ctrl-C cancels):\n"
               "  create-template NAME --suite S [--variant V] [--arch A]\n"
               "                  [--include P1,P2] [--mirror URL]\n"
               "                  [--package-tarball FILE] [--root-password] [--no-cache]\n"
               "                             Build a Debian template with debootstrap\n"
               "  create-template NAME --from TEMPLATE [--include P1,P2] [--root-password]\n"
               "                             Derive a template: TEMPLATE plus packages\n"
               "  clean --cache              Empty the template builds' package cache\n"
               "  export-tar NAME FILE|- [--format F] [--checksum]\n"
               "                             Write an image as a tar archive\n"
               "  import-tar FILE|- [NAME] [--read-only]\n"
               "                             Make an image from a tar archive\n"
               "  export NAME FILE|- [--format tar|btrfs] [--compression C]\n"
               "         [--delta | --parent P]\n"
               "                             Write an image as a tar archive or a btrfs\n"
               "                             stream; --delta: only what it changed\n"
               "                             against its origin (a btrfs stream)\n"
               "  import FILE|- [NAME] [--read-only]\n"
               "                             Make an image from a tar archive or a btrfs\n"
               "                             stream (a delta needs its parent here)\n"
               "  pull-tar URL [NAME] [--verify no|checksum] [--read-only]\n"
               "                             Download a tar archive, make an image of it\n"
               "  push NAME REGISTRY/REPO:TAG [--compression gzip|zstd] [--insecure]\n"
               "                             Upload an image to an OCI registry (a\n"
               "                             clone of a template as the template's\n"
               "                             layer and one of its changes)\n"
               "  pull REGISTRY/REPO[:TAG|@DIGEST] [NAME] [--read-only] [--insecure]\n"
               "                             Make an image of one from an OCI registry\n"
               "  clean --cache              Empty the cache of registry layers\n"
               "  jobs                       List running jobs\n"
               "  cancel ID...               Cancel jobs\n"
               "\n"
               "Machine commands:\n"
               "  start NAME [--boot] [--ephemeral] [--name N] [--read-only]\n"
               "             [--private-network] [--private-users]\n"
               "             [--snapshot SNAP] [--memory-max SIZE] [--cpu-weight N]\n"
               "             [--port [tcp:|udp:]HOST[:MACHINE]]... [-- CMD...]\n"
               "                             Run CMD (default: a shell) or boot a\n"
               "                             container on image NAME with this\n"
               "                             program's stdio; wait and exit with its\n"
               "                             status unless --no-block (then its output\n"
               "                             goes to stampd's log)\n"
               "  shell NAME [--user U] [--ephemeral] [--name N] [--read-only]\n"
               "             [--private-network] [--private-users]\n"
               "                             A login shell in the running machine NAME\n"
               "                             (as root or U); if none runs, one in a\n"
               "                             container on image NAME, on this terminal\n"
               "                             (^]^]^] leaves)\n"
               "  exec NAME [--user U] [--env K=V]... [--chdir D] -- CMD...\n"
               "                             Run CMD in the running machine NAME with\n"
               "                             this program's stdio (a terminal of the\n"
               "                             machine's when that is one); exit with its\n"
               "                             status (128+N if killed by signal N)\n"
               "  machines                   List running machines\n"
               "  machine-status NAME        Show one running machine\n"
               "  stop NAME...               Stop machines (poweroff, or SIGTERM)\n"
               "  kill NAME... [--signal SIG] [--kill-whom all|leader]\n"
               "                             Send a signal (default TERM) to every\n"
               "                             process of machines, or to their leader\n"
               "  terminate NAME...          Kill machines at once (SIGKILL to all)\n"
               "  cp SRC NAME:PATH, cp NAME:PATH DST\n"
               "                             Copy a file or a tree into or out of a\n"
               "                             running machine, or a stopped image\n"
               "\n"
               "Options:\n"
               "  -h --help                  Show this help\n"
               "     --version               Show the version\n"
               "     --json                  Print tables and properties as JSON\n"
               "     --no-legend             Print no table header and footer\n"
               "     --no-ask-password       Never ask for a password; fail instead\n"
               "  -q --quiet                 No progress bar or informational messages\n"
               "     --no-block              Do not wait for jobs (print the job id)\n"
               "                             or machines\n"
               "  -v --verbose               Show the log of jobs, and debug messages\n"
               "  -H --host=[USER@]HOST      Talk to the stampd of a remote host (ssh)\n"
               "\n"
               "Options of single commands:\n"
               "     --tree                  list: clones beneath their origin\n"
               "     --read-only             clone, import-tar, pull-tar: make the new\n"
               "                             image read-only; start, shell: run on a\n"
               "                             read-only image\n"
               "     --suite=S               create-template: Debian suite (bookworm...)\n"
               "     --variant=V             create-template: minbase (default), buildd\n"
               "                             or fakechroot\n"
               "     --arch=A                create-template: default the host's\n"
               "     --include=P1,P2         create-template: extra packages; repeatable\n"
               "     --mirror=URL            create-template: the Debian mirror\n"
               "     --package-tarball=FILE  create-template: install offline from a\n"
               "                             'debootstrap --make-tarball' archive\n"
               "     --root-password         create-template: ask for root's password\n"
               "                             (hashed here; read from stdin when that is\n"
               "                             not a terminal)\n"
               "     --from=TEMPLATE         create-template: start from that template\n"
               "     --no-cache              create-template: a full build, even where the\n"
               "                             image cache has the tree (which it replaces)\n"
               "     --cache                 clean: the package cache\n"
               "     --format=F              export-tar: zstd, xz, gzip, bzip2 or\n"
               "                             uncompressed; default from FILE's suffix,\n"
               "                             else zstd\n"
               "     --format=tar|btrfs      export: a tar archive (default) or a btrfs\n"
               "                             send stream\n"
               "     --compression=C         export: zstd, xz, gzip, bzip2 or\n"
               "                             uncompressed; default from FILE's suffix,\n"
               "                             else zstd\n"
               "     --delta                 export: only the difference from the image's\n"
               "                             origin (implies --format btrfs)\n"
               "     --parent=P              export: only the difference from the\n"
               "                             read-only image P\n"
               "     --checksum              export-tar: add the archive's line to the\n"
               "                             SHA256SUMS file beside FILE\n"
               "     --verify=no|checksum    pull-tar: check the archive against the\n"
               "                             SHA256SUMS beside URL (default) or not\n"
               "     --insecure              push, pull: plain http, or TLS without\n"
               "                             verification (a registry on this machine)\n"
               "     --compression=C         push: gzip (default) or zstd layers\n"
               "  -b --boot                  start: boot the image's init\n"
               "  -x --ephemeral             start, shell: on a throw-away snapshot\n"
               "     --name=N                start, shell: machine name (default: image)\n"
               "     --private-network       start, shell: only a loopback network\n"
               "     --private-users         start, shell: user namespacing\n"
               "     --snapshot=SNAP         start: take snapshot SNAP of the image first\n"
               "     --with-snapshots        remove: remove the image's snapshots too\n"
               "  -s --signal=SIG            kill: TERM, SIGKILL, 9, RTMIN+4, ...\n"
               "     --user=U                exec, shell: the user in the machine (name\n"
               "                             or uid; default root)\n"
               "     --env=K=V               exec, shell: set K in the command's\n"
               "                             environment; repeatable\n"
               "     --chdir=D               exec, shell: working directory in the\n"
               "                             machine (default the user's home)\n"
               "     --kill-whom=all|leader  kill: every process (default) or PID 1\n"
               "\n"
               "Exit status: 0 success; 1 failure (a job failed or was canceled, too);\n"
               "2 usage error or invalid name; 3 not supported; 4 no such image, machine\n"
               "or job; 5 already exists, busy or read-only; 69 stampd or the bus cannot\n"
               "be reached; 77 permission denied. start and shell exit with the status of\n"
               "the machine's command: 128+N when signal N ended it (130 for Ctrl-C, 143 for\n"
               "stop, 137 for KILL). machinectl's names work too (list-images, show-image,\n"
               "poweroff, terminate, list-transfers, ...). See stampctl(1).\n");
}

static int verb_help(sd_bus *bus, int argc, char **argv)
{
        help();
        return EXIT_OK;
}

int log_error(int ret, const char *fmt, ...)
{
        va_list ap;

        fflush(stdout);
        fputs("stampctl: ", stderr);
        va_start(ap, fmt);
        vfprintf(stderr, fmt, ap);
        va_end(ap);
        fputc('\n', stderr);
        return ret;
}

void log_info(const char *fmt, ...)
{
        va_list ap;

        if (arg_quiet)
                return;
        va_start(ap, fmt);
        vfprintf(stderr, fmt, ap);
        va_end(ap);
        fputc('\n', stderr);
}

void log_debug(const char *fmt, ...)
{
        va_list ap;

        if (!arg_verbose)
                return;
        fputs("stampctl: ", stderr);
        va_start(ap, fmt);
        vfprintf(stderr, fmt, ap);
        va_end(ap);
        fputc('\n', stderr);
}

/* getopt's codes for the long options without a short form. */
enum {
        ARG_VERSION = 0x100,
        ARG_JSON,
        ARG_NO_LEGEND,
        ARG_NO_ASK_PASSWORD,
        ARG_NO_BLOCK,
        ARG_READ_ONLY,
        ARG_TREE,
        ARG_SUITE,
        ARG_VARIANT,
        ARG_ARCH,
        ARG_INCLUDE,
        ARG_MIRROR,
        ARG_PACKAGE_TARBALL,
        ARG_ROOT_PASSWORD,
        ARG_FORMAT,
        ARG_CHECKSUM,
        ARG_VERIFY,
        ARG_NAME,
        ARG_PRIVATE_NETWORK,
        ARG_PRIVATE_USERS,
        ARG_KEEP_IDENTITY,
        ARG_MINE,
        ARG_WITH_SNAPSHOTS,
        ARG_SNAPSHOT,
        ARG_USER,
        ARG_ENV,
        ARG_CHDIR,
        ARG_COMPRESSION,
        ARG_DELTA,
        ARG_PARENT,
        ARG_KILL_WHOM,
        ARG_MEMORY_MAX,
        ARG_CPU_WEIGHT,
        ARG_PORT,
        ARG_INSECURE,
        ARG_FROM,
        ARG_CACHE,
        ARG_NO_CACHE,
};

static const struct option long_options[] = {
        {"help", no_argument, NULL, 'h'},
        {"version", no_argument, NULL, ARG_VERSION},
        {"json", optional_argument, NULL, ARG_JSON},
        {"no-legend", no_argument, NULL, ARG_NO_LEGEND},
        {"no-ask-password", no_argument, NULL, ARG_NO_ASK_PASSWORD},
        {"quiet", no_argument, NULL, 'q'},
        {"no-block", no_argument, NULL, ARG_NO_BLOCK},
        {"verbose", no_argument, NULL, 'v'},
        {"host", required_argument, NULL, 'H'},
        {"read-only", no_argument, NULL, ARG_READ_ONLY},
        {"tree", no_argument, NULL, ARG_TREE},
        {"suite", required_argument, NULL, ARG_SUITE},
        {"variant", required_argument, NULL, ARG_VARIANT},
        {"arch", required_argument, NULL, ARG_ARCH},
        {"include", required_argument, NULL, ARG_INCLUDE},
        {"mirror", required_argument, NULL, ARG_MIRROR},
        {"package-tarball", required_argument, NULL, ARG_PACKAGE_TARBALL},
        {"root-password", no_argument, NULL, ARG_ROOT_PASSWORD},
        {"format", required_argument, NULL, ARG_FORMAT},
        {"checksum", no_argument, NULL, ARG_CHECKSUM},
        {"verify", required_argument, NULL, ARG_VERIFY},
        {"boot", no_argument, NULL, 'b'},
        {"ephemeral", no_argument, NULL, 'x'},
        {"name", required_argument, NULL, ARG_NAME},
        {"private-network", no_argument, NULL, ARG_PRIVATE_NETWORK},
        {"private-users", no_argument, NULL, ARG_PRIVATE_USERS},
        {"signal", required_argument, NULL, 's'},
        {"keep-identity", no_argument, NULL, ARG_KEEP_IDENTITY},
        {"mine", no_argument, NULL, ARG_MINE},
        {"with-snapshots", no_argument, NULL, ARG_WITH_SNAPSHOTS},
        {"snapshot", required_argument, NULL, ARG_SNAPSHOT},
        {"user", required_argument, NULL, ARG_USER},
        {"env", required_argument, NULL, ARG_ENV},
        {"chdir", required_argument, NULL, ARG_CHDIR},
        {"compression", required_argument, NULL, ARG_COMPRESSION},
        {"delta", no_argument, NULL, ARG_DELTA},
        {"parent", required_argument, NULL, ARG_PARENT},
        {"kill-whom", required_argument, NULL, ARG_KILL_WHOM},
        {"memory-max", required_argument, NULL, ARG_MEMORY_MAX},
        {"cpu-weight", required_argument, NULL, ARG_CPU_WEIGHT},
        {"port", required_argument, NULL, ARG_PORT},
        {"insecure", no_argument, NULL, ARG_INSECURE},
        {"from", required_argument, NULL, ARG_FROM},
        {"cache", no_argument, NULL, ARG_CACHE},
        {"no-cache", no_argument, NULL, ARG_NO_CACHE},
        {},
};

/* Which OPT_* bit a getopt value stands for; 0 for global options. */
static uint64_t option_bit(int c)
{
        switch (c) {
        case ARG_READ_ONLY:
                return OPT_READ_ONLY;
        case ARG_TREE:
                return OPT_TREE;
        case ARG_SUITE:
                return OPT_SUITE;
        case ARG_VARIANT:
                return OPT_VARIANT;
        case ARG_ARCH:
                return OPT_ARCH;
        case ARG_INCLUDE:
                return OPT_INCLUDE;
        case ARG_MIRROR:
                return OPT_MIRROR;
        case ARG_PACKAGE_TARBALL:
                return OPT_PACKAGE_TARBALL;
        case ARG_ROOT_PASSWORD:
                return OPT_ROOT_PASSWORD;
        case ARG_FORMAT:
                return OPT_FORMAT;
        case ARG_CHECKSUM:
                return OPT_CHECKSUM;
        case ARG_VERIFY:
                return OPT_VERIFY;
        case 'b':
                return OPT_BOOT;
        case 'x':
                return OPT_EPHEMERAL;
        case ARG_NAME:
                return OPT_NAME;
        case ARG_PRIVATE_NETWORK:
                return OPT_PRIVATE_NETWORK;
        case ARG_PRIVATE_USERS:
                return OPT_PRIVATE_USERS;
        case 's':
                return OPT_SIGNAL;
        case ARG_KEEP_IDENTITY:
                return OPT_KEEP_IDENTITY;
        case ARG_MINE:
                return OPT_MINE;
        case ARG_WITH_SNAPSHOTS:
                return OPT_WITH_SNAPSHOTS;
        case ARG_SNAPSHOT:
                return OPT_SNAPSHOT;
        case ARG_USER:
                return OPT_USER;
        case ARG_ENV:
                return OPT_ENV;
        case ARG_CHDIR:
                return OPT_CHDIR;
        case ARG_COMPRESSION:
                return OPT_COMPRESSION;
        case ARG_DELTA:
                return OPT_DELTA;
        case ARG_PARENT:
                return OPT_PARENT;
        case ARG_KILL_WHOM:
                return OPT_KILL_WHOM;
        case ARG_MEMORY_MAX:
                return OPT_MEMORY_MAX;
        case ARG_CPU_WEIGHT:
                return OPT_CPU_WEIGHT;
        case ARG_PORT:
                return OPT_PORT;
        case ARG_INSECURE:
                return OPT_INSECURE;
        case ARG_FROM:
                return OPT_FROM;
        case ARG_CACHE:
                return OPT_CACHE;
        case ARG_NO_CACHE:
                return OPT_NO_CACHE;
        default:
                return 0;
        }
}

static const char *option_name(uint64_t bit)
{
        for (const struct option *o = long_options; o->name; o++)
                if (option_bit(o->val) == bit)
                        return o->name;
        return "?";
}

/* Whether @arg follows "start NAME" on the command line as given: an option meant for
 * the command, before which '--' is missing. @argv is the command line before getopt reordered it. */
static bool start_command_option(char *const *argv, int argc, const char *arg)
{
        int positional = 0;
        bool start = false;

        for (int i = 1; i < argc; i++) {
                if (argv[i] == arg)
                        return start && positional >= 2;
                if (strcmp(argv[i], "--") == 0)
                        return false;
                if (argv[i][0] == '-')
                        continue;
                if (positional++ == 0)
                        start = strcmp(argv[i], "start") == 0;
        }
        return false;
}

/* Returns -1 to go on, or an exit code. */
static int parse_argv(int argc, char *argv[], uint64_t *given)
{
        _cleanup_(freep) char **original = malloc(sizeof(char *) * ((size_t) argc + 1));
        int c, r;

        *given = 0;
        if (!original)
                return log_error(EXIT_FAILURE_GENERIC, "Out of memory.");
        memcpy(original, argv, sizeof(char *) * ((size_t) argc + 1));
        opterr = 0;
        while ((c = getopt_long(argc, argv, ":hqvH:bxs:", long_options, NULL)) >= 0) {
                *given |= option_bit(c);
                switch (c) {
                case 'h':
                        help();
                        return EXIT_OK;
                case ARG_VERSION:
                        printf("stampctl %s\n", PACKAGE_VERSION);
                        return EXIT_OK;
                case ARG_JSON:
                        /* systemd's modes: pretty (also without a value), short (one line), off */
                        if (!optarg || strcmp(optarg, "pretty") == 0)
                                arg_json = true, arg_json_short = false;
                        else if (strcmp(optarg, "short") == 0)
                                arg_json = true, arg_json_short = true;
                        else if (strcmp(optarg, "off") == 0)
                                arg_json = false, arg_json_short = false;
                        else
                                return log_error(EXIT_USAGE, "Unknown JSON mode '%s': use pretty, short or off.",
                                                 optarg);
                        break;
                case ARG_NO_LEGEND:
                        arg_legend = false;
                        break;
                case ARG_NO_ASK_PASSWORD:
                        arg_ask_password = false;
                        break;
                case 'q':
                        arg_quiet = true;
                        break;
                case ARG_NO_BLOCK:
                        arg_block = false;
                        break;
                case 'v':
                        arg_verbose = true;
                        break;
                case 'H':
                        arg_host = optarg;
                        break;
                case ARG_READ_ONLY:
                        arg_read_only = true;
                        break;
                case ARG_KEEP_IDENTITY:
                        arg_keep_identity = true;
                        break;
                case ARG_MINE:
                        arg_mine = true;
                        break;
                case ARG_WITH_SNAPSHOTS:
                        arg_with_snapshots = true;
                        break;
                case ARG_SNAPSHOT:
                        arg_snapshot = optarg;
                        break;
                case ARG_USER:
                        arg_user = optarg;
                        break;
                case ARG_ENV:
                        if (!strchr(optarg, '=') || optarg[0] == '=')
                                return log_error(EXIT_USAGE, "Option --env wants NAME=VALUE, not '%s'.", optarg);
                        if (arg_env_add(optarg) < 0)
                                return log_error(EXIT_FAILURE_GENERIC, "Out of memory.");
                        break;
                case ARG_CHDIR:
                        arg_chdir = optarg;
                        break;
                case ARG_MEMORY_MAX:
                        if (parse_size_arg(optarg, &arg_memory_max) < 0 || arg_memory_max == UINT64_MAX)
                                return log_error(EXIT_USAGE, "Invalid --memory-max \"%s\": bytes, with K, M or G.",
                                                 optarg);
                        break;
                case ARG_PORT:
                        if (strv_extend_comma_list(&arg_ports, optarg) < 0)
                                return log_error(EXIT_FAILURE_GENERIC, "Out of memory.");
                        break;
                case ARG_CPU_WEIGHT: {
                        char *end;
                        errno = 0;
                        arg_cpu_weight = strtoull(optarg, &end, 10);
                        if (errno != 0 || end == optarg || *end || *optarg == '-')
                                return log_error(EXIT_USAGE, "Invalid --cpu-weight \"%s\": a number, 1 to 10000.",
                                                 optarg);
                        break;
                }
                case ARG_INSECURE:
                        arg_insecure = true;
                        break;
                case ARG_FROM:
                        arg_from = optarg;
                        break;
                case ARG_CACHE:
                        arg_cache = true;
                        break;
                case ARG_NO_CACHE:
                        arg_no_cache = true;
                        break;
                case ARG_TREE:
                        arg_tree = true;
                        break;
                case ARG_SUITE:
                        arg_suite = optarg;
                        break;
                case ARG_VARIANT:
                        arg_variant = optarg;
                        break;
                case ARG_ARCH:
                        arg_arch = optarg;
                        break;
                case ARG_INCLUDE:
                        if (strv_extend_comma_list(&arg_include, optarg) < 0)
                                return log_error(EXIT_FAILURE_GENERIC, "Out of memory.");
                        break;
                case ARG_MIRROR:
                        arg_mirror = optarg;
                        break;
                case ARG_PACKAGE_TARBALL:
                        arg_package_tarball = optarg;
                        break;
                case ARG_ROOT_PASSWORD:
                        arg_root_password = true;
                        break;
                case ARG_COMPRESSION:
                        if (!export_format_is_valid(optarg) || !*optarg)
                                return log_error(EXIT_USAGE,
                                                 "Unknown compression '%s': use zstd, xz, gzip, bzip2 or uncompressed.",
                                                 optarg);
                        arg_compression = optarg;
                        break;
                case ARG_DELTA:
                        arg_delta = true;
                        break;
                case ARG_PARENT:
                        arg_parent = optarg;
                        break;
                case ARG_FORMAT:
                        /* tar and btrfs are export's; the compressions export-tar's (each verb checks). */
                        if ((!export_format_is_valid(optarg) || !*optarg) && strcmp(optarg, "tar") != 0 &&
                            strcmp(optarg, "btrfs") != 0)
                                return log_error(EXIT_USAGE,
                                                 "Unknown format '%s': use zstd, xz, gzip, bzip2 or uncompressed.",
                                                 optarg);
                        arg_format = optarg;
                        break;
                case ARG_CHECKSUM:
                        arg_checksum = true;
                        break;
                case ARG_VERIFY:
                        if (strcmp(optarg, "no") != 0 && strcmp(optarg, "checksum") != 0)
                                return log_error(EXIT_USAGE, "Unknown verification '%s': use no or checksum.", optarg);
                        arg_verify = optarg;
                        break;
                case 'b':
                        arg_boot = true;
                        break;
                case 'x':
                        arg_ephemeral = true;
                        break;
                case ARG_NAME:
                        arg_machine_name = optarg;
                        break;
                case ARG_PRIVATE_NETWORK:
                        arg_private_network = true;
                        break;
                case ARG_PRIVATE_USERS:
                        arg_private_users = true;
                        break;
                case ARG_KILL_WHOM:
                        if (strcmp(optarg, "all") != 0 && strcmp(optarg, "leader") != 0)
                                return log_error(EXIT_USAGE, "Unknown --kill-whom '%s': use all or leader.", optarg);
                        arg_kill_whom = optarg;
                        break;
                case 's':
                        r = signal_from_string(optarg);
                        if (r < 0)
                                return log_error(EXIT_USAGE, "Unknown signal '%s'.", optarg);
                        arg_signal = r;
                        break;
                case '?': {
                        const char *arg = argv[optind - 1], *eq = strchr(arg, '=');
                        /* A value given to a long option that takes none: getopt says '?' with the
                         * option's own code in optopt, which is no character to show. */
                        if (strncmp(arg, "--", 2) == 0 && eq)
                                return log_error(EXIT_USAGE, "Option '%.*s' takes no value.", (int) (eq - arg), arg);
                        if (optopt > 0 && optopt < 0x80 && isprint(optopt))
                                /* In a cluster ("-la") getopt has not moved on: find the word as given. */
                                for (int i = 1; i < argc; i++)
                                        if (original[i][0] == '-' && original[i][1] != '-' &&
                                            strchr(original[i] + 1, optopt)) {
                                                arg = original[i];
                                                break;
                                        }
                        if (start_command_option(original, argc, arg))
                                return log_error(EXIT_USAGE,
                                                 "Unknown option '%s'; to pass options to the command, put '--' "
                                                 "before it: stampctl start NAME -- CMD...",
                                                 arg);
                        if (optopt > 0 && optopt < 0x80 && isprint(optopt))
                                return log_error(EXIT_USAGE, "Unknown option '-%c'; see 'stampctl --help'.", optopt);
                        return log_error(EXIT_USAGE, "Unknown option '%s'; see 'stampctl --help'.", arg);
                }
                case ':':
                        return log_error(EXIT_USAGE, "Option '%s' needs a value.", argv[optind - 1]);
                default:
                        return log_error(EXIT_FAILURE_GENERIC, "Unhandled option %d.", c);
                }
        }
        return -1;
}

/* Verbs that hand stampd file descriptors, which a connection over ssh cannot carry. */
static bool verb_passes_files(const char *name)
{
        static const char *const verbs_with_fds[] = {"export-tar", "import-tar", "export", "import",
                                                     "start",      "shell",      "exec"};

        for (size_t i = 0; i < ELEMENTSOF(verbs_with_fds); i++)
                if (strcmp(name, verbs_with_fds[i]) == 0)
                        return true;
        return strcmp(name, "create-template") == 0 && arg_package_tarball;
}

static bool colors_wanted(void)
{
        const char *term = getenv("TERM");

        if (getenv("NO_COLOR"))
                return false;
        if (term && strcmp(term, "dumb") == 0)
                return false;
        return isatty(STDOUT_FILENO);
}

static int bus_connect(sd_bus **ret)
{
        sd_bus *bus = NULL;
        int r;

        if (arg_host)
                r = sd_bus_open_system_remote(&bus, arg_host);
        else
                r = sd_bus_open_system(&bus);
        if (r < 0)
                return log_error(EXIT_UNAVAILABLE, "Failed to connect to the system bus%s%s: %s",
                                 arg_host ? " of " : "", arg_host ? arg_host : "", strerror(-r));
        *ret = bus;
        return EXIT_OK;
}

int main(int argc, char *argv[])
{
        _cleanup_(sd_bus_flush_close_unrefp) sd_bus *bus = NULL;
        const struct verb *verb = NULL;
        uint64_t given;
        unsigned nargs;
        char **args;
        int r;

        setlocale(LC_ALL, "");

        r = parse_argv(argc, argv, &given);
        if (r >= 0)
                return r;

        table_style.json = arg_json;
        table_style.legend = arg_legend;
        table_style.colors = colors_wanted();
        table_style.quiet = arg_quiet;

        args = argv + optind;
        nargs = (unsigned) (argc - optind);
        if (nargs == 0) {
                static char *default_args[] = {(char *) "list", NULL};
                args = default_args;
                nargs = 1;
        }

        verb = find_verb(args[0]);
        if (!verb) {
                const char *near = nearest_verb(args[0]);
                if (near)
                        return log_error(EXIT_USAGE, "Unknown command '%s'; did you mean '%s'?", args[0], near);
                return log_error(EXIT_USAGE, "Unknown command '%s'; see 'stampctl --help'.", args[0]);
        }

        if (nargs - 1 < verb->min_args)
                return log_error(EXIT_USAGE, "Too few arguments: stampctl %s", verb->synopsis);
        if (verb->max_args != ARGS_ANY && nargs - 1 > verb->max_args)
                return log_error(EXIT_USAGE, "Too many arguments: stampctl %s", verb->synopsis);
        if (given & ~verb->options) {
                uint64_t bit = given & ~verb->options;
                bit &= -bit;
                return log_error(EXIT_USAGE, "Option '--%s' does not apply to '%s': stampctl %s", option_name(bit),
                                 verb->name, verb->synopsis);
        }

        if (verb->run == verb_help)
                return verb_help(NULL, (int) nargs, args);

        if (arg_host && verb_passes_files(verb->name))
                return log_error(EXIT_NOT_SUPPORTED,
                                 "stampctl %s hands stampd open files, and a connection over ssh (-H) cannot pass file "
                                 "descriptors; run it on %s.",
                                 verb->name, arg_host);

        r = bus_connect(&bus);
        if (r != EXIT_OK)
                return r;

        if (arg_json_short) {
                /* Everything the verb prints, then squeezed onto one line. */
                FILE *real = stdout, *mem;
                _cleanup_(freep) char *buf = NULL, *compact = NULL;
                size_t len = 0;

                mem = open_memstream(&buf, &len);
                if (!mem)
                        return log_error(EXIT_FAILURE_GENERIC, "Out of memory.");
                stdout = mem;
                r = verb->run(bus, (int) nargs, args);
                fclose(mem);
                stdout = real;
                compact = buf ? json_compact(buf) : NULL;
                if (compact && *compact)
                        printf("%s\n", compact);
        } else
                r = verb->run(bus, (int) nargs, args);

        polkit_agent_close();
        fflush(stdout);
        if (ferror(stdout) && r == EXIT_OK)
                return log_error(EXIT_FAILURE_GENERIC, "Failed to write to standard output.");
        return r;
}
