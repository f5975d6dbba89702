/*
 * config.h: the YAML configuration: loading (libyaml) into a tree that keeps
 * every node's file position, environment substitution, units, and
 * validation against declarative option tables.
 *
 * Every error is collected, not only the first, each with file:line:column
 * and the path of the offending node ("inputs[2].paths"). The loader never
 * prints; the caller prints spool_errors.
 *
 * ${VAR} and ${VAR:-default} are replaced in scalar values when the file is
 * loaded (an unset ${VAR} without default is an error); "{{ field }}"
 * templates are left as they are for per-record rendering.
 */
#ifndef SPOOL_CONFIG_H
#define SPOOL_CONFIG_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include "spool/spool.h"

/* ---- errors ---- */

typedef struct spool_error {
    char *file; /* the config file */
    int line;   /* 1-based, 0 if unknown */
    int column; /* 1-based, 0 if unknown */
    char *path; /* "inputs[2].paths", "" for the document */
    char *message;
} spool_error;

typedef struct spool_errors {
    spool_error *items;
    size_t count;
    size_t cap;
} spool_errors;

void spool_errors_add(spool_errors *e, const char *file, int line, int column, const char *path,
                      const char *fmt, ...) SPOOL_PRINTF(6, 7);
/* "FILE:LINE:COL: PATH: MESSAGE\n" for each error, to the stream. Parts
 * that are empty are left out with their separator: no file -> no
 * "FILE:LINE:COL: ", line 0 -> "FILE: ", column 0 -> "FILE:LINE: ", empty
 * path -> no "PATH: ". Messages are lower-case, without a final period. */
void spool_errors_print(const spool_errors *e, void *stream /* FILE * */);
/* Frees the items and resets *e to empty (reusable). Accepts NULL. */
void spool_errors_free(spool_errors *e);
/* The va_list form of spool_errors_add. */
void spool_errors_addv(spool_errors *e, const char *file, int line, int column, const char *path,
                       const char *fmt, va_list ap);
/* Stable sort by file, line, column (errors without a position first). */
void spool_errors_sort(spool_errors *e);

/* ---- the tree ---- */

typedef enum spool_cnode_type {
    SPOOL_CNODE_SCALAR,
    SPOOL_CNODE_SEQUENCE,
    SPOOL_CNODE_MAPPING,
} spool_cnode_type;

typedef struct spool_cnode spool_cnode;
struct spool_cnode {
    spool_cnode_type type;
    int line, column;    /* 1-based start of the node */
    char *value;         /* SCALAR: text after ${VAR} substitution */
    int quoted;          /* SCALAR: was quoted in the file (so "3" stays a string) */
    int is_null;         /* SCALAR: an empty/~/null plain scalar */
    spool_cnode **items; /* SEQUENCE: items; MAPPING: values */
    char **keys;         /* MAPPING: keys, parallel to items */
    int *key_lines;      /* MAPPING: position of each key */
    int *key_columns;
    size_t count;
    int bad; /* SCALAR: ${VAR} substitution failed (already reported) */
    /* SCALAR: 1 when the value's text is exactly the file's text from the
     * column after the opening quote (or the start, unquoted) on one line:
     * no escapes, no ${VAR}, no folding; so value[i] is at column + i (+1
     * when quoted). Set by the loader; spool_config_value_pos uses it. */
    int verbatim;
};

typedef struct spool_cdoc {
    char *file;        /* path as given */
    spool_cnode *root; /* NULL for an empty document */
} spool_cdoc;

/* Parses a file into a tree. Invalid YAML or an unreadable file adds an
 * error (libyaml's own position) and returns -EINVAL / -errno.
 * Exact behaviour (see tree.c):
 *  - 0: no error; doc->root is the tree (NULL for an empty file).
 *  - -EINVAL with doc->root set: errors that do not stop parsing were added
 *    (duplicate keys, unset ${VAR}, anchors/aliases, a second document);
 *    the tree is usable, so the caller should still validate it to report
 *    every error of the file in one run.
 *  - -EINVAL with doc->root NULL: a YAML syntax error ("invalid YAML: ...").
 *  - -errno (-ENOENT, -EACCES, ...): unreadable; the error is
 *    "cannot read FILE: strerror" with no file/line in the error itself.
 *  - -ENOMEM.
 * Always call spool_cdoc_free afterwards (doc->file is set in every case
 * except -ENOMEM). */
int spool_cdoc_load_file(const char *path, spool_cdoc *doc, spool_errors *errs);
/* The same from a buffer; `name` is used in positions. */
int spool_cdoc_load_buffer(const char *name, const char *text, size_t len, spool_cdoc *doc,
                           spool_errors *errs);
void spool_cdoc_free(spool_cdoc *doc);

/* The value under key in a mapping, or NULL. */
const spool_cnode *spool_cnode_get(const spool_cnode *map, const char *key);
/* "a scalar", "null", "a list", "a mapping" ("nothing" for NULL), for
 * messages such as "expected a mapping, got a list". */
const char *spool_cnode_type_name(const spool_cnode *n);
/* Frees a node and its children. Accepts NULL. */
void spool_cnode_free(spool_cnode *n);

/* ---- scalars with units ---- */

/* "64MiB", "10GB", "4k", "4096" -> bytes (KiB/MiB/GiB/TiB are 1024-based,
 * KB/MB/GB/TB and k/m/g 1000-based... see the .c for the exact table).
 * 0 or -EINVAL. */
int spool_parse_size(const char *text, int64_t *bytes);
/* "500ms", "7d", "1h30m", "2s", "250us" (rounded up to ms), "0" -> ms. */
int spool_parse_duration(const char *text, int64_t *ms);
/* "true/false/yes/no/on/off". */
int spool_parse_bool(const char *text, int *out);
/* The exact conventions (units.c):
 *  sizes: number [blanks] [unit], unit case-insensitive; none or B = 1;
 *    K/KB, M/MB, G/GB, T/TB = 1000^n; Ki/KiB, Mi/MiB, Gi/GiB, Ti/TiB = 1024^n;
 *    a fraction is allowed ("1.5GiB") and the result rounded down to a byte.
 *  durations: one or more number+unit parts ("1h30m", "1h 30m"), units
 *    case-sensitive: us, ms, s, m (minute), h, d, w; fractions allowed
 *    ("1.5s"); rounded up to whole ms; a bare number is an error except "0".
 *  booleans: true/false, yes/no, on/off, any case.
 * All return 0, -EINVAL (bad text) or -ERANGE (does not fit int64). */

/* Writes the shortest exact form of a size ("64MiB", "10GB", "1500B") or a
 * duration ("1h30m", "500ms", "0s") into buf (snprintf semantics); returns
 * the length needed. For messages and `spool plugins`. */
size_t spool_format_size(int64_t bytes, char *buf, size_t cap);
size_t spool_format_duration(int64_t ms, char *buf, size_t cap);

/* ---- validation against option tables ---- */

/*
 * Fills ctx from the mapping `map` by `tables` (several tables may share
 * one mapping, e.g. the core's common input options and the plugin's; each
 * table fills its own ctx). Reports: unknown keys (with a did-you-mean from
 * all tables), wrong types, out-of-range values, bad units, bad enum
 * values, missing required options. Options not given get their defaults.
 * Keys listed in `ignore` (NULL-terminated, may be NULL) are accepted as
 * they are. `path` prefixes error paths ("inputs[0]"). `what` names the
 * mapping in messages ("inputs[0] (tail)"). Returns the number of errors
 * added (0 = all good).
 *
 * Details (validate.c): `doc` gives the file name for errors (may be NULL).
 * `map` may be NULL or a null scalar (= an empty mapping). A null value
 * counts as absent (the default applies). A ctxs[i] of NULL (or ctxs NULL)
 * validates without storing. Stored strings/lists/maps are malloc'd and
 * replace (and free) what the field held, so contexts must start zeroed;
 * release them with spool_options_free(table, ctx). Values are stored even
 * when other options of the same mapping had errors.
 */
int spool_config_fill(const spool_cdoc *doc, const spool_cnode *map,
                      const spool_option *const *tables, void *const *ctxs, size_t ntables,
                      const char *const *ignore, const char *path, const char *what,
                      spool_errors *errs);

/* Position of the node an option came from ("paths" or "multiline.start"),
 * for errors a plugin reports in check(). 0 if found. */
int spool_config_option_pos(const spool_cnode *map, const char *option, int *line, int *column);

/* Position of byte `offset` (0-based) inside the scalar value of the
 * option (as spool_config_option_pos finds it; also "rules[1].when"): 1 and
 * the exact line/column when the value is verbatim on one line (plain or
 * quoted, no escapes or ${VAR}), 0 and the value's own start otherwise,
 * -ENOENT when the option is not in map. */
int spool_config_value_pos(const spool_cnode *map, const char *option, size_t offset, int *line,
                           int *column);

/* Levenshtein-closest of candidates to word, or NULL if none is close. */
const char *spool_did_you_mean(const char *word, const char *const *candidates, size_t n);

/* ---- addresses (checks.c) ---- */

/* Validates host:port or [v6]:port (SPOOL_ADDR_* flags); on error -EINVAL
 * with every problem found in why ("'999.1.1.1' is not a valid IPv4
 * address; port 99999 is out of range (1 to 65535)"). */
int spool__address_valid(const char *text, int flags, char *why, size_t cap);
/* For a valid address to listen on: its host (if any) resolves here, as
 * run will need it to. 0, or -EINVAL with why. */
int spool__listen_resolvable(const char *text, char *why, size_t cap);

#endif /* SPOOL_CONFIG_H */
