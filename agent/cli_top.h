/*
 * cli_top.h: the `spool top` command (agent/cli_top.c), a live terminal
 * view of a running spool read through its HTTP API (/metrics, /health).
 * Takes the command's arguments (argv[0] is "top", as getopt wants it) and
 * returns the exit status: 0 ok, 1 spool unreachable (--once), 2 usage.
 */
#ifndef SPOOL_CLI_TOP_H
#define SPOOL_CLI_TOP_H

int spool_cli_top(int argc, char **argv);

#endif /* SPOOL_CLI_TOP_H */
