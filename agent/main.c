/*
 * main.c: the `spool` command line.
 *
 *   spool run [-c FILE]        run in the foreground (embedded default config without -c)
 *   spool check [-c] FILE      validate a config; every error with file:line:column; exit 2
 *   spool topics ...           topics, partitions, offsets, sizes, lag (agent/cli_log.c)
 *   spool read TOPIC ...       print records (agent/cli_log.c)
 *   spool top [-c FILE|--url URL]  live view of a running spool (agent/cli_top.c)
 *   spool plugins              built-in and loaded plugins with their option tables, and
 *                              spool's optional modules present but not loaded
 *   spool version | help
 *
 * Exit status: 0 success, 1 runtime failure, 2 usage or configuration error
 * (including a log `spool run` would refuse: lost positions, partitions
 * dropped with undelivered records), 3 `spool read` skipped records it could
 * not read (each range named on stderr).
 */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core.h"
#include "cli_log.h"
#include "cli_top.h"

static const char usage_text[] =
    "usage: spool <command> [options]\n"
    "\n"
    "commands:\n"
    "  run [-c FILE] [--reset-positions] [--drop-partitions]\n"
    "                           run in the foreground (without -c: the embedded default config)\n"
    "  check [-c] FILE          validate a config file, print every error, exit 2 on error\n"
    "  topics [-c FILE | --data-dir DIR] [--json]\n"
    "                           topics, partitions, offsets, sizes and each output's lag\n"
    "  read TOPIC [-c FILE | --data-dir DIR] [-p N] [--from beginning|end|OFFSET|@MS]\n"
    "             [-n COUNT] [-f] [--format FMT]\n"
    "                           print records of a topic; exit 3 if some could not be read\n"
    "  query VIEW [-c FILE | --http ADDR] [--key K] [--from MS] [--to MS] [--json]\n"
    "                           a running stream's open windows (docs/streams.md)\n"
    "  top [-c FILE | --url URL] [--interval S] [--once]\n"
    "                           live view of a running spool: rates, lag, errors, health\n"
    "  plugins [-c FILE] [--plugin-dir DIR]\n"
    "                           list plugins and their options\n"
    "  version                  print the version\n"
    "  help                     this text\n"
    "\n"
    "Run `spool <command> --help` for a command's options.\n";

static int usage(FILE *f, int code)
{
    fputs(usage_text, f);
    return code;
}

static int cmd_help_wanted(int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            return 1;
        }
    }
    return 0;
}

/*
 * The options `spool run` and `spool check` share: -c FILE and the two log
 * overrides. Prints help_text for --help, usage_line for a bad option.
 * Returns -1 to go on (optind at the first operand), else the exit status.
 */
static int parse_run_options(int argc, char **argv, const char *help_text, const char *usage_line,
                             const char **config, int *overrides)
{
    static const struct option opts[] = {{"config", required_argument, NULL, 'c'},
                                         {"help", no_argument, NULL, 'h'},
                                         {"reset-positions", no_argument, NULL, 'R'},
                                         {"drop-partitions", no_argument, NULL, 'D'},
                                         {NULL, 0, NULL, 0}};
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "c:h", opts, NULL)) != -1) {
        switch (c) {
        case 'c':
            *config = optarg;
            break;
        case 'R':
            *overrides |= SPOOL_PLOG_RESET_POSITIONS;
            break;
        case 'D':
            *overrides |= SPOOL_PLOG_DROP_PARTITIONS;
            break;
        case 'h':
            fputs(help_text, stdout);
            return 0;
        default:
            fprintf(stderr, "%s\n", usage_line);
            return 2;
        }
    }
    return -1;
}

static int cmd_run(int argc, char **argv)
{
    const char *config = NULL;
    int overrides = 0;
    int rc = parse_run_options(
        argc, argv,
        "usage: spool run [-c FILE] [--reset-positions] [--drop-partitions]\n\n"
        "Runs spool in the foreground until SIGTERM or SIGINT; SIGHUP reloads FILE.\n"
        "Without -c, runs the embedded default configuration (conf/spool.yaml).\n"
        "  --reset-positions  start although state/checkpoint.* is lost while the log\n"
        "                     holds data (every tailed file is read again)\n"
        "  --drop-partitions  lower a topic's partition count although the partitions\n"
        "                     beyond it hold records not delivered to every output\n"
        "                     (they are discarded, and counted in a warning)\n",
        "usage: spool run [-c FILE] [--reset-positions] [--drop-partitions]", &config, &overrides);
    if (rc >= 0) {
        return rc;
    }
    spool_plog_set_overrides(overrides);
    if (optind < argc) {
        fprintf(stderr, "spool run: unexpected argument '%s'\nusage: spool run [-c FILE]\n",
                argv[optind]);
        return 2;
    }
    return spool_service_run(config);
}

static void print_join(const char *label, spool_instance **list, size_t n)
{
    printf("  %-8s %zu", label, n);
    for (size_t i = 0; i < n; i++) {
        printf("%s%s (%s)", i ? ", " : ": ", list[i]->name, list[i]->plugin->name);
    }
    printf("\n");
}

static int cmd_check(int argc, char **argv)
{
    const char *config = NULL;
    spool_errors errs = {0};
    spool_service_conf conf;
    int overrides = 0;
    int rc = parse_run_options(
        argc, argv,
        "usage: spool check [-c] FILE [--reset-positions] [--drop-partitions]\n\n"
        "Validates FILE against every plugin's options and prints each error as\n"
        "FILE:LINE:COLUMN: PATH: MESSAGE. When its data_dir exists, also reads the\n"
        "log (read-only) for what `spool run` would refuse: a lost checkpoint while\n"
        "the log holds data, partitions dropped with undelivered records (the flags\n"
        "check as `spool run` with the same flags would).\nExit "
        "status 0 when valid, 2 on any error.\n",
        "usage: spool check [-c] FILE", &config, &overrides);
    if (rc >= 0) {
        return rc;
    }
    if (!config && optind < argc) {
        config = argv[optind++];
    }
    if (!config || optind < argc) {
        fprintf(stderr, "usage: spool check [-c] FILE\n");
        return 2;
    }
    spool_plog_set_overrides(overrides);
    spool_registry_init();
    int n = spool_service_conf_load(config, &conf, &errs);
    if (n > 0) {
        spool_errors_print(&errs, stderr);
        fprintf(stderr, "%s: %zu error%s\n", config, errs.count, errs.count == 1 ? "" : "s");
        spool_errors_free(&errs);
        spool_service_conf_free(&conf);
        return 2;
    }
    printf("%s: ok\n", config);
    printf("  %-8s %zu", "topics", conf.ntopics);
    for (size_t i = 0; i < conf.ntopics; i++) {
        printf("%s%s (%d partition%s)", i ? ", " : ": ", conf.topics[i].name,
               conf.topics[i].partitions, conf.topics[i].partitions == 1 ? "" : "s");
    }
    printf("\n");
    print_join("inputs", conf.inputs, conf.ninputs);
    print_join("outputs", conf.outputs, conf.noutputs);
    if (conf.nprocessors) {
        print_join("processors", conf.processors, conf.nprocessors);
    }
    printf("  %-8s %s\n", "data_dir", conf.data_dir);
    spool_errors_free(&errs);
    spool_service_conf_free(&conf);
    return 0;
}

static const char *type_name(spool_opt_type t)
{
    static const char *names[] = {"string", "int", "bool", "size", "duration",
                                  "list",   "map", "enum", "table"};
    return (unsigned)t < sizeof(names) / sizeof(names[0]) ? names[t] : "?";
}

static void print_table(const spool_option *o)
{
    for (; o && o->name; o++) {
        char type[256];
        if (o->type == SPOOL_OPT_ENUM && o->enum_values) {
            size_t n = 0;
            for (const char *const *v = o->enum_values; *v; v++) {
                n += (size_t)snprintf(type + n, n < sizeof(type) ? sizeof(type) - n : 0, "%s%s",
                                      v == o->enum_values ? "" : "|", *v);
            }
        } else {
            snprintf(type, sizeof(type), "%s", type_name(o->type));
        }
        printf("    %-22s %-12s %-10s %s%s\n", o->name, type,
               o->required ? "(required)"
               : o->def    ? o->def
                           : "-",
               o->desc ? o->desc : "", "");
    }
}

static void print_plugin(void *arg, const spool_plugin *p, const char *origin)
{
    static const char *kinds[] = {"", "input", "processor", "output"};
    int *kind = arg;
    if ((int)p->kind != *kind) {
        return;
    }
    printf("%s %s (%s): %s\n", kinds[p->kind], p->name, origin,
           p->description ? p->description : "");
    printf("    %-22s %-12s %-10s %s\n", "OPTION", "TYPE", "DEFAULT", "DESCRIPTION");
    print_table(p->options);
    if (p->kind == SPOOL_PLUGIN_INPUT) {
        print_table(spool__input_common_options);
    } else if (p->kind == SPOOL_PLUGIN_OUTPUT) {
        print_table(spool__output_common_options);
    }
    printf("\n");
}

static void print_module(void *arg, spool_plugin_kind kind, const char *name, const char *path)
{
    static const char *kinds[] = {"", "input", "processor", "output"};
    int *want = arg;
    if ((int)kind == *want) {
        printf("%s %s (%s): loaded on demand, when a config names it\n\n", kinds[kind], name, path);
    }
}

static int cmd_plugins(int argc, char **argv)
{
    const char *config = NULL, *dir = NULL;
    static const struct option opts[] = {{"config", required_argument, NULL, 'c'},
                                         {"plugin-dir", required_argument, NULL, 'd'},
                                         {"help", no_argument, NULL, 'h'},
                                         {NULL, 0, NULL, 0}};
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "c:d:h", opts, NULL)) != -1) {
        switch (c) {
        case 'c':
            config = optarg;
            break;
        case 'd':
            dir = optarg;
            break;
        case 'h':
            printf("usage: spool plugins [-c FILE] [--plugin-dir DIR]\n\nLists built-in "
                   "plugins, and external ones from DIR or FILE's service.plugin_dir, with "
                   "their options; spool's optional plugins in that directory (spool-<type>.so) "
                   "that FILE does not name are listed as loaded on demand.\n");
            return 0;
        default:
            fprintf(stderr, "usage: spool plugins [-c FILE] [--plugin-dir DIR]\n");
            return 2;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "usage: spool plugins [-c FILE] [--plugin-dir DIR]\n");
        return 2;
    }
    spool_registry_init();
    spool_errors errs = {0};
    char *conf_dir = NULL;
    if (config) {
        spool_service_conf conf;
        spool_service_conf_load(config, &conf, &errs);
        if (!dir && conf.plugin_dir) {
            conf_dir = strdup(conf.plugin_dir);
        }
        spool_service_conf_free(&conf);
        errs.count = 0;
    }
    if (dir && spool_registry_load_dir(dir, &errs) < 0) {
        spool_errors_print(&errs, stderr);
    }
    spool_errors_free(&errs);
    for (int kind = SPOOL_PLUGIN_INPUT; kind <= SPOOL_PLUGIN_OUTPUT; kind++) {
        spool_registry_foreach(print_plugin, &kind);
        /* spool's optional plugins present but not loaded: listed, not loaded. */
        if (dir || conf_dir) {
            spool_registry_modules(dir ? dir : conf_dir, print_module, &kind);
        }
    }
    free(conf_dir);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        return usage(stderr, 2);
    }
    const char *cmd = argv[1];
    if (strcmp(cmd, "help") == 0 || strcmp(cmd, "--help") == 0 || strcmp(cmd, "-h") == 0) {
        return usage(stdout, 0);
    }
    if (strcmp(cmd, "version") == 0 || strcmp(cmd, "--version") == 0) {
        if (cmd_help_wanted(argc - 1, argv + 1)) {
            printf("usage: spool version\n");
            return 0;
        }
        printf("spool %s (plugin ABI %d)\n", SPOOL_VERSION, SPOOL_ABI_VERSION);
        return 0;
    }
    if (strcmp(cmd, "run") == 0) {
        return cmd_run(argc - 1, argv + 1);
    }
    if (strcmp(cmd, "check") == 0) {
        return cmd_check(argc - 1, argv + 1);
    }
    if (strcmp(cmd, "plugins") == 0) {
        return cmd_plugins(argc - 1, argv + 1);
    }
    if (strcmp(cmd, "topics") == 0) {
        return spool_cli_topics(argc - 2, argv + 2);
    }
    if (strcmp(cmd, "top") == 0) {
        return spool_cli_top(argc - 1, argv + 1);
    }
    if (strcmp(cmd, "read") == 0) {
        return spool_cli_read(argc - 2, argv + 2);
    }
    if (strcmp(cmd, "query") == 0) {
        return spool__cli_query(argc - 2, argv + 2);
    }
    fprintf(stderr, "spool: unknown command '%s'\n\n", cmd);
    return usage(stderr, 2);
}
