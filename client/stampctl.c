/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* stampctl: the unprivileged client of stampd. Options, the verbs table, dispatch. */

#include <ctype.h>
#include <getopt.h>
#include <locale.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "formats.h"
#include "names.h"
#include "stampctl.h"
#include "table.h"

bool arg_json = false;
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

/* Options that only some verbs take; a verb lists the ones it accepts. */
enum {
        OPT_READ_ONLY = 1u << 0,
        OPT_TREE = 1u << 1,
        OPT_SUITE = 1u << 2,
        OPT_VARIANT = 1u << 3,
        OPT_ARCH = 1u << 4,
        OPT_INCLUDE = 1u << 5,
        OPT_MIRROR = 1u << 6,
        OPT_PACKAGE_TARBALL = 1u << 7,
        OPT_ROOT_PASSWORD = 1u << 8,
        OPT_FORMAT = 1u << 9,
        OPT_CHECKSUM = 1u << 10,
        OPT_VERIFY = 1u << 11,
        OPT_BOOT = 1u << 12,
        OPT_EPHEMERAL = 1u << 13,
        OPT_NAME = 1u << 14,
        OPT_PRIVATE_NETWORK = 1u << 15,
        OPT_PRIVATE_USERS = 1u << 16,
        OPT_SIGNAL = 1u << 17,
        OPT_KEEP_IDENTITY = 1u << 18,
        OPT_MINE = 1u << 19,
        OPT_FROM = 1u << 20,
        OPT_CACHE = 1u << 21,
};

#define OPTS_TEMPLATE                                                                                                  \
        (OPT_SUITE | OPT_VARIANT | OPT_ARCH | OPT_INCLUDE | OPT_MIRROR | OPT_PACKAGE_TARBALL | OPT_ROOT_PASSWORD |     \
         OPT_FROM)
#define OPTS_MACHINE (OPT_EPHEMERAL | OPT_NAME | OPT_READ_ONLY | OPT_PRIVATE_NETWORK | OPT_PRIVATE_USERS)

#define ARGS_ANY ((unsigned) -1)

struct verb {
        const char *name;
        unsigned min_args; /* operands after the verb */
        unsigned max_args;
        unsigned options;
        int (*run)(sd_bus *bus, int argc, char **argv);
        const char *synopsis;
};

static int verb_help(sd_bus *bus, int argc, char **argv);

static const struct verb verbs[] = {
        {"list", 0, 0, OPT_TREE | OPT_MINE, verb_list, "list [--tree] [--mine]"},
        {"show", 0, 1, 0, verb_show, "show [NAME]"},
        {"status", 0, 1, 0, verb_show, "status [NAME]"},
        {"clone", 2, 2, OPT_READ_ONLY | OPT_KEEP_IDENTITY, verb_clone, "clone SRC DST [--read-only] [--keep-identity]"},
        {"remove", 1, ARGS_ANY, 0, verb_remove, "remove NAME..."},
        {"rename", 2, 2, 0, verb_rename, "rename OLD NEW"},
        {"read-only", 1, 2, 0, verb_read_only, "read-only NAME [yes|no]"},
        {"create-template", 1, 1, OPTS_TEMPLATE, verb_create_template,
         "create-template NAME --suite S [--variant V] [--arch A] [--include P1,P2] [--mirror URL] "
         "[--package-tarball FILE] [--root-password] | --from TEMPLATE [--include P1,P2]"},
        {"clean", 0, 0, OPT_CACHE, verb_clean, "clean --cache"},
        {"export-tar", 2, 2, OPT_FORMAT | OPT_CHECKSUM, verb_export_tar,
         "export-tar NAME FILE|- [--format F] [--checksum]"},
        {"import-tar", 1, 2, OPT_READ_ONLY, verb_import_tar, "import-tar FILE|- [NAME] [--read-only]"},
        {"pull-tar", 1, 2, OPT_VERIFY | OPT_READ_ONLY, verb_pull_tar,
         "pull-tar URL [NAME] [--verify no|checksum] [--read-only]"},
        {"jobs", 0, 0, 0, verb_jobs, "jobs"},
        {"cancel", 1, ARGS_ANY, 0, verb_cancel, "cancel ID..."},
        {"start", 1, ARGS_ANY, OPTS_MACHINE | OPT_BOOT, verb_start,
         "start NAME [--boot] [--ephemeral] [--name N] [--read-only] [--private-network] [--private-users] "
         "[-- CMD...]"},
        {"shell", 1, 1, OPTS_MACHINE, verb_shell, "shell NAME"},
        {"machines", 0, 0, 0, verb_machines, "machines"},
        {"stop", 1, ARGS_ANY, 0, verb_stop, "stop NAME..."},
        {"kill", 1, ARGS_ANY, OPT_SIGNAL, verb_kill, "kill NAME... [--signal SIG]"},
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
               "  remove NAME...             Remove images\n"
               "  rename OLD NEW             Rename an image\n"
               "  read-only NAME [yes|no]    Mark an image read-only (default) or not\n"
               "\n"
               "Job commands (wait with a progress bar unless --no-block; Ctrl-C cancels):\n"
               "  create-template NAME --suite S [--variant V] [--arch A]\n"
               "                  [--include P1,P2] [--mirror URL]\n"
               "                  [--package-tarball FILE] [--root-password]\n"
               "                             Build a Debian template with debootstrap\n"
               "  create-template NAME --from TEMPLATE [--include P1,P2] [--root-password]\n"
               "                             Derive a template: TEMPLATE plus packages\n"
               "  clean --cache              Empty the template builds' package cache\n"
               "  export-tar NAME FILE|- [--format F] [--checksum]\n"
               "                             Write an image as a tar archive\n"
               "  import-tar FILE|- [NAME] [--read-only]\n"
               "                             Make an image from a tar archive\n"
               "  pull-tar URL [NAME] [--verify no|checksum] [--read-only]\n"
               "                             Download a tar archive, make an image of it\n"
               "  jobs                       List running jobs\n"
               "  cancel ID...               Cancel jobs\n"
               "\n"
               "Machine commands:\n"
               "  start NAME [--boot] [--ephemeral] [--name N] [--read-only]\n"
               "             [--private-network] [--private-users] [-- CMD...]\n"
               "                             Run CMD (default: a shell) or boot a\n"
               "                             container on image NAME with this\n"
               "                             program's stdio; wait and exit with its\n"
               "                             status unless --no-block\n"
               "  shell NAME                 Interactive shell in a container on image\n"
               "                             NAME, on this terminal (^]^]^] leaves)\n"
               "  machines                   List running machines\n"
               "  stop NAME...               Stop machines (poweroff, or SIGTERM)\n"
               "  kill NAME... [--signal SIG]\n"
               "                             Send a signal (default TERM) to machines\n"
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
               "     --cache                 clean: the package cache\n"
               "     --format=F              export-tar: zstd, xz, gzip, bzip2 or\n"
               "                             uncompressed; default from FILE's suffix,\n"
               "                             else zstd\n"
               "     --checksum              export-tar: add the archive's line to the\n"
               "                             SHA256SUMS file beside FILE\n"
               "     --verify=no|checksum    pull-tar: check the archive against the\n"
               "                             SHA256SUMS beside URL (default) or not\n"
               "  -b --boot                  start: boot the image's init\n"
               "  -x --ephemeral             start, shell: on a throw-away snapshot\n"
               "     --name=N                start, shell: machine name (default: image)\n"
               "     --private-network       start, shell: only a loopback network\n"
               "     --private-users         start, shell: user namespacing\n"
               "  -s --signal=SIG            kill: TERM, SIGKILL, 9, RTMIN+4, ...\n"
               "\n"
               "Exit status: 0 success; 1 failure (a job failed or was canceled, too);\n"
               "2 usage error or invalid name; 3 not supported; 4 no such image, machine\n"
               "or job; 5 exists already, busy or read-only; 69 stampd or the bus cannot\n"
               "be reached; 77 permission denied. start and shell exit with the status of\n"
               "the machine. machinectl's names work too (list-images, show-image, poweroff,\n"
               "list-transfers, ...). See stampctl(1).\n");
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
        ARG_FROM,
        ARG_CACHE,
};

static const struct option long_options[] = {
        {"help", no_argument, NULL, 'h'},
        {"version", no_argument, NULL, ARG_VERSION},
        {"json", no_argument, NULL, ARG_JSON},
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
        {"from", required_argument, NULL, ARG_FROM},
        {"cache", no_argument, NULL, ARG_CACHE},
        {},
};

/* Which OPT_* bit a getopt value stands for; 0 for global options. */
static unsigned option_bit(int c)
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
        case ARG_FROM:
                return OPT_FROM;
        case ARG_CACHE:
                return OPT_CACHE;
        default:
                return 0;
        }
}

static const char *option_name(unsigned bit)
{
        for (const struct option *o = long_options; o->name; o++)
                if (option_bit(o->val) == bit)
                        return o->name;
        return "?";
}

/* Returns -1 to go on, or an exit code. */
static int parse_argv(int argc, char *argv[], unsigned *given)
{
        int c, r;

        *given = 0;
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
                        arg_json = true;
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
                case ARG_FROM:
                        arg_from = optarg;
                        break;
                case ARG_CACHE:
                        arg_cache = true;
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
                case ARG_FORMAT:
                        if (!export_format_is_valid(optarg) || !*optarg)
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
        unsigned given, nargs;
        char **args;
        int r;

        setlocale(LC_ALL, "");

        r = parse_argv(argc, argv, &given);
        if (r >= 0)
                return r;

        table_style.json = arg_json;
        table_style.legend = arg_legend;
        table_style.colors = colors_wanted();

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
                unsigned bit = given & ~verb->options;
                bit &= -bit;
                return log_error(EXIT_USAGE, "Option --%s does not apply to '%s': stampctl %s", option_name(bit),
                                 verb->name, verb->synopsis);
        }

        if (verb->run == verb_help)
                return verb_help(NULL, (int) nargs, args);

        r = bus_connect(&bus);
        if (r != EXIT_OK)
                return r;

        r = verb->run(bus, (int) nargs, args);

        polkit_agent_close();
        fflush(stdout);
        if (ferror(stdout) && r == EXIT_OK)
                return log_error(EXIT_FAILURE_GENERIC, "Failed to write to standard output.");
        return r;
}
