/*
 * pg.c: the `postgresql` output. Each chunk becomes one transaction on one
 * libpq connection:
 *
 *   BEGIN;
 *   SELECT last_offset FROM spool_offsets WHERE output=$1 AND topic=$2 AND partition=$3
 *       FOR UPDATE;
 *   COPY "table" ("col", ...) FROM STDIN;          -- the records past last_offset
 *   INSERT INTO spool_offsets ... ON CONFLICT DO UPDATE SET last_offset = <chunk's last>;
 *   COMMIT;
 *
 * so the rows and the progress that names them commit together: a chunk
 * sent again (a retry after an unknown COMMIT outcome, or a restart after
 * kill -9, which re-reads from spool's last committed cursor) skips the
 * records at or below the stored offset. Delivery into PostgreSQL is thus
 * exactly once per (offsets_id, topic, partition), as long as one spool
 * output writes under that id.
 *
 * Errors (SQLSTATE): connection failures (class 08, or a lost connection),
 * serialization and deadlock (40), resource shortage (53), operator
 * intervention (57: admin shutdown, crash, cancel) and anything unknown
 * are retried; data errors (22) and integrity violations (23) reject the
 * chunk with the server's message (dead letter). A table or column dropped
 * while running (42) is retried and logged: the records stay in spool's log.
 *
 * At init the table and every mapped column are checked when the server
 * answers (a missing one stops `spool run` with a clear error); when it
 * does not, the check runs at the first connection, and the output retries
 * until it passes. flush() is synchronous: one chunk at a time per output.
 * stop() shuts the connection's socket down (shutdown(2), from the main
 * thread), which ends any libpq call blocked on it at once, even against a
 * server that stopped answering; connecting polls in 100 ms steps and gives
 * up when stopping. So shutdown stays bounded; the transaction cut short is
 * rolled back by the server (or committed: the offsets table tells).
 */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <poll.h>
#include <sys/socket.h>

#include <libpq-fe.h>

#include "pg_int.h"

#define PG_REASON_MAX 1024       /* bytes of a reject/retry reason */
#define PG_COPY_PIECE (1u << 20) /* bytes of COPY data sent at once */

typedef struct pg_ctx {
    /* options (filled by the core) */
    char *conninfo;          /* libpq connection string or postgresql:// URL */
    char *table;             /* target table, optionally schema-qualified */
    spool_strmap columns;    /* column -> field */
    char *offsets_table;     /* progress table, created if missing */
    char *offsets_id;        /* the output's name in the progress table (default: instance name) */
    int64_t connect_timeout; /* ms */

    /* runner-thread state */
    spool_instance *ins;
    pg_column *cols; /* columns.count entries */
    size_t ncols;
    PGconn *conn;           /* NULL when not connected */
    int schema_ok;          /* the table check passed on some connection */
    int failing;            /* the last flush failed (log the recovery once) */
    char *copy_sql;         /* COPY "t" ("a","b") FROM STDIN */
    char *select_sql;       /* SELECT last_offset ... FOR UPDATE */
    char *upsert_sql;       /* INSERT ... ON CONFLICT DO UPDATE */
    char *create_sql;       /* CREATE TABLE IF NOT EXISTS <offsets_table> */
    spool_buf rows;         /* COPY data being encoded (about PG_COPY_PIECE), reused */
    size_t rows_held;       /* bytes of rows counted in the memory account */
    spool_counter *skipped; /* records already in PostgreSQL, not sent again */

    /* shared with stop() on the main thread */
    pthread_mutex_t lock;
    int lock_init;
    int sock;     /* conn's socket while connected, else -1; guarded by lock */
    int stopping; /* guarded by lock */
} pg_ctx;

static const spool_option pg_options[] = {
    SPOOL_OPT_STR("conninfo", pg_ctx, conninfo, NULL, 1,
                  "libpq connection string or URL, e.g. postgresql://spool@db/logs"),
    SPOOL_OPT_STR("table", pg_ctx, table, NULL, 1, "table to COPY into (schema.table allowed)"),
    SPOOL_OPT_STRMAP("columns", pg_ctx, columns,
                     "column: field (key, value, timestamp, topic or a header name)"),
    SPOOL_OPT_STR("offsets_table", pg_ctx, offsets_table, "spool_offsets", 0,
                  "progress table (output, topic, partition, last_offset), created if missing"),
    SPOOL_OPT_STR("offsets_id", pg_ctx, offsets_id, NULL, 0,
                  "this output's key in offsets_table (default: the output's name)"),
    SPOOL_OPT_TIME("connect_timeout", pg_ctx, connect_timeout, "10s", 1000, 3600000,
                   "connection timeout (whole seconds)"),
    SPOOL_OPT_END,
};

/* ---------------------------------------------------------------------- */
/* Helpers                                                                */

static char *pg_buf_string(spool_buf *b)
{
    if (spool_buf_append(b, "", 1) < 0) {
        spool_buf_free(b);
        return NULL;
    }
    char *s = (char *)b->data;
    *b = (spool_buf){0};
    return s;
}

/* One line for a reason or the log: the server's message without its
 * trailing newline, newlines inside turned into spaces. */
static void pg_one_line(char *dst, size_t cap, const char *src)
{
    size_t n = 0;
    for (; src && *src && n + 1 < cap; src++) {
        dst[n++] = (*src == '\n' || *src == '\r') ? ' ' : *src;
    }
    while (n > 0 && dst[n - 1] == ' ') {
        n--;
    }
    dst[n] = '\0';
}

/* Publishes (or, with -1, withdraws) the socket stop() may shut down. */
static void pg_set_sock(pg_ctx *c, int sock)
{
    pthread_mutex_lock(&c->lock);
    c->sock = sock;
    pthread_mutex_unlock(&c->lock);
}

static void pg_disconnect(pg_ctx *c)
{
    if (c->conn) {
        pg_set_sock(c, -1); /* before the fd is closed: stop() never sees a stale one */
        PQfinish(c->conn);
        c->conn = NULL;
    }
}

static int pg_is_stopping(pg_ctx *c)
{
    pthread_mutex_lock(&c->lock);
    int s = c->stopping;
    pthread_mutex_unlock(&c->lock);
    return s;
}

/* SPOOL_RETRY or SPOOL_REJECT for a server error's SQLSTATE (NULL: none,
 * e.g. the connection broke). */
static int pg_classify(const char *state)
{
    if (!state || strlen(state) != 5) {
        return SPOOL_RETRY;
    }
    if (strncmp(state, "22", 2) == 0 || strncmp(state, "23", 2) == 0) {
        return SPOOL_REJECT;
    }
    return SPOOL_RETRY;
}

/* Describes a failed result (or the connection's error when res is NULL)
 * into reason; returns SPOOL_RETRY or SPOOL_REJECT. */
static int pg_failure(pg_ctx *c, PGresult *res, const char *what, char *reason, size_t cap)
{
    char msg[PG_REASON_MAX / 2];
    const char *state = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
    const char *text = res ? PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY) : NULL;
    if (!text || !*text) {
        text = c->conn ? PQerrorMessage(c->conn) : "not connected";
    }
    pg_one_line(msg, sizeof(msg), text);
    const char *ctxt = res ? PQresultErrorField(res, PG_DIAG_CONTEXT) : NULL;
    char where[256] = "";
    if (ctxt) {
        pg_one_line(where, sizeof(where), ctxt);
    }
    if (state) {
        snprintf(reason, cap, "%s: %s (SQLSTATE %s)", what, msg, state);
    } else {
        snprintf(reason, cap, "%s: %s", what, msg);
    }
    if (where[0]) {
        size_t n = strlen(reason);
        snprintf(reason + n, cap - n, "; %s", where);
    }
    return pg_classify(state);
}

/* Runs a statement that returns no rows. 0, or the classification with
 * reason filled. */
static int pg_exec(pg_ctx *c, const char *sql, const char *what, char *reason, size_t cap)
{
    PGresult *res = PQexec(c->conn, sql);
    int ok = res && PQresultStatus(res) == PGRES_COMMAND_OK;
    int rc = ok ? 0 : pg_failure(c, res, what, reason, cap);
    PQclear(res);
    return rc;
}

/* ---------------------------------------------------------------------- */
/* Connection and table check                                             */

/* The server's notices and warnings go to spool's log, not stderr. */
static void pg_notice(void *arg, const char *message)
{
    pg_ctx *c = arg;
    char line[PG_REASON_MAX];
    pg_one_line(line, sizeof(line), message);
    spool_log_debug(c->ins, "server: %s", line);
}

static int pg_connect(pg_ctx *c, char *reason, size_t cap)
{
    char timeout[32];
    snprintf(timeout, sizeof(timeout), "%" PRId64, (c->connect_timeout + 999) / 1000);
    const char *keys[] = {"dbname", "connect_timeout", "fallback_application_name",
                          "client_encoding", NULL};
    const char *vals[] = {c->conninfo, timeout, "spool", "UTF8", NULL};
    c->conn = PQconnectStartParams(keys, vals, 1);
    if (!c->conn) {
        snprintf(reason, cap, "connecting: out of memory");
        return SPOOL_RETRY;
    }
    /* Poll in short steps: stop() can end a connection attempt too. */
    int64_t deadline = spool_monotonic_ms() + c->connect_timeout;
    PostgresPollingStatusType st = PGRES_POLLING_WRITING;
    while (PQstatus(c->conn) != CONNECTION_BAD && st != PGRES_POLLING_OK &&
           st != PGRES_POLLING_FAILED) {
        if (pg_is_stopping(c) || spool_monotonic_ms() > deadline) {
            snprintf(reason, cap, "connecting: %s", pg_is_stopping(c) ? "stopping" : "timed out");
            PQfinish(c->conn);
            c->conn = NULL;
            return SPOOL_RETRY;
        }
        struct pollfd pfd = {.fd = PQsocket(c->conn),
                             .events = st == PGRES_POLLING_READING ? POLLIN : POLLOUT};
        if (pfd.fd < 0 || poll(&pfd, 1, 100) > 0) {
            st = PQconnectPoll(c->conn); /* a bad socket: it fails the attempt */
        }
    }
    if (PQstatus(c->conn) != CONNECTION_OK) {
        char msg[PG_REASON_MAX / 2];
        pg_one_line(msg, sizeof(msg), PQerrorMessage(c->conn));
        snprintf(reason, cap, "connecting: %s", msg);
        PQfinish(c->conn);
        c->conn = NULL;
        return SPOOL_RETRY;
    }
    pg_set_sock(c, PQsocket(c->conn));
    PQsetNoticeProcessor(c->conn, pg_notice, c);
    /* A COMMIT acknowledged is durable whatever the server's default: the
     * exactly-once promise relies on it (spool's cursor moves past it). */
    int rc = pg_exec(c, "SET synchronous_commit TO on", "connecting", reason, cap);
    if (rc != 0) {
        pg_disconnect(c);
        return rc;
    }
    return 0;
}

/* Checks the table and its columns, sets each column's kind, creates the
 * offsets table. 0; -ENOENT with reason when the table or a column is
 * missing; SPOOL_RETRY-style failure (-EIO) otherwise. */
static int pg_check_schema(pg_ctx *c, char *reason, size_t cap)
{
    spool_buf q = {0};
    if (pg_quote_table(&q, c->table) < 0) {
        spool_buf_free(&q);
        snprintf(reason, cap, "out of memory");
        return -EIO;
    }
    char *qname = pg_buf_string(&q);
    if (!qname) {
        snprintf(reason, cap, "out of memory");
        return -EIO;
    }
    const char *params[1] = {qname};
    PGresult *res =
        PQexecParams(c->conn,
                     "SELECT a.attname, t.typname FROM pg_attribute a JOIN pg_type t ON "
                     "t.oid = a.atttypid WHERE a.attrelid = to_regclass($1) AND a.attnum > 0 "
                     "AND NOT a.attisdropped",
                     1, NULL, params, NULL, NULL, 0);
    int rc = 0;
    if (!res || PQresultStatus(res) != PGRES_TUPLES_OK) {
        pg_failure(c, res, "checking the table", reason, cap);
        rc = -EIO;
        goto out;
    }
    int n = PQntuples(res);
    if (n == 0) {
        snprintf(reason, cap, "no table %s in the database (or it has no columns)", qname);
        rc = -ENOENT;
        goto out;
    }
    for (size_t i = 0; i < c->ncols; i++) {
        int found = -1;
        for (int j = 0; j < n; j++) {
            if (strcmp(PQgetvalue(res, j, 0), c->cols[i].column) == 0) {
                found = j;
                break;
            }
        }
        if (found < 0) {
            snprintf(reason, cap, "table %s has no column \"%s\"", qname, c->cols[i].column);
            rc = -ENOENT;
            goto out;
        }
        const char *type = PQgetvalue(res, found, 1);
        c->cols[i].kind = PG_KIND_TEXT;
        if (strcmp(type, "timestamptz") == 0 || strcmp(type, "timestamp") == 0 ||
            strcmp(type, "date") == 0) {
            c->cols[i].kind = PG_KIND_TS;
        } else if (strcmp(type, "bytea") == 0) {
            c->cols[i].kind = PG_KIND_BYTEA;
        }
    }
    PQclear(res);
    res = NULL;
    int e = pg_exec(c, c->create_sql, "creating the offsets table", reason, cap);
    if (e != 0) {
        rc = -EIO;
    }
out:
    PQclear(res);
    free(qname);
    return rc;
}

/* Connected and checked, or a failure: SPOOL_RETRY with reason. */
static int pg_ready(pg_ctx *c, char *reason, size_t cap)
{
    if (c->conn && PQstatus(c->conn) != CONNECTION_OK) {
        pg_disconnect(c);
    }
    if (!c->conn) {
        int rc = pg_connect(c, reason, cap);
        if (rc != 0) {
            return rc;
        }
    }
    if (!c->schema_ok) {
        int rc = pg_check_schema(c, reason, cap);
        if (rc < 0) {
            if (rc == -ENOENT) {
                spool_log_error(c->ins, "%s", reason);
            }
            pg_disconnect(c);
            return SPOOL_RETRY;
        }
        c->schema_ok = 1;
    }
    return 0;
}

/* ---------------------------------------------------------------------- */
/* Callbacks                                                              */

static int pg_name_ok(const char *s, size_t max)
{
    return s && *s && strlen(s) <= max;
}

static int pg_check(spool_instance *ins, void *vctx)
{
    pg_ctx *c = vctx;
    int rc = 0;
    char *err = NULL;
    PQconninfoOption *opts = PQconninfoParse(c->conninfo, &err);
    if (!opts) {
        char msg[PG_REASON_MAX / 2];
        pg_one_line(msg, sizeof(msg), err ? err : "out of memory");
        spool_config_error(ins, "conninfo", "invalid connection string: %s", msg);
        rc = -EINVAL;
    }
    PQconninfoFree(opts);
    PQfreemem(err);
    /* NAMEDATALEN is 64: identifiers are at most 63 bytes. */
    const char *dot = c->table ? strchr(c->table, '.') : NULL;
    if (!pg_name_ok(c->table, 127) ||
        (dot && (dot == c->table || !dot[1] || dot - c->table > 63 || strlen(dot + 1) > 63)) ||
        (!dot && strlen(c->table) > 63)) {
        spool_config_error(ins, "table", "a table name (or schema.table), each part 1-63 bytes");
        rc = -EINVAL;
    }
    if (!pg_name_ok(c->offsets_table, 63) || strchr(c->offsets_table, '.')) {
        spool_config_error(ins, "offsets_table", "a table name of 1-63 bytes, no schema");
        rc = -EINVAL;
    }
    if (c->offsets_id && !*c->offsets_id) {
        spool_config_error(ins, "offsets_id", "must not be empty");
        rc = -EINVAL;
    }
    if (spool_check_column_map(ins, "columns", &c->columns) < 0) {
        rc = -EINVAL;
    }
    for (size_t i = 0; i < c->columns.count; i++) {
        if (!pg_name_ok(c->columns.keys[i], 63)) {
            spool_config_error(ins, "columns", "column name \"%s\": 1-63 bytes",
                               c->columns.keys[i]);
            rc = -EINVAL;
        }
    }
    return rc;
}

/* A statement of the offsets table, printf-formatted, as a new string (NULL:
 * out of memory or longer than 1 KiB). */
static char *pg_sqlf(const char *fmt, ...) SPOOL_PRINTF(1, 2);
static char *pg_sqlf(const char *fmt, ...)
{
    char sql[1024];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(sql, sizeof(sql), fmt, ap);
    va_end(ap);
    return n >= 0 && (size_t)n < sizeof(sql) ? strdup(sql) : NULL;
}

static int pg_build_sql(pg_ctx *c)
{
    spool_buf b = {0};
    int e = 0;
    e |= spool_buf_append(&b, "COPY ", 5);
    e |= pg_quote_table(&b, c->table);
    e |= spool_buf_append(&b, " (", 2);
    for (size_t i = 0; i < c->ncols; i++) {
        e |= i ? spool_buf_append(&b, ", ", 2) : 0;
        e |= pg_quote_ident(&b, c->cols[i].column);
    }
    e |= spool_buf_append(&b, ") FROM STDIN", 12);
    if (e || !(c->copy_sql = pg_buf_string(&b))) {
        goto fail;
    }
    spool_buf o = {0};
    if (pg_quote_ident(&o, c->offsets_table) < 0) {
        spool_buf_free(&o);
        goto fail;
    }
    spool_buf_append(&o, "", 1);
    const char *ot = (const char *)o.data;
    c->select_sql = pg_sqlf("SELECT last_offset FROM %s WHERE output = $1 AND topic = $2 AND "
                            "partition = $3 FOR UPDATE",
                            ot);
    c->upsert_sql = pg_sqlf("INSERT INTO %s (output, topic, partition, last_offset) VALUES ($1, "
                            "$2, $3, $4) ON CONFLICT (output, topic, partition) DO UPDATE SET "
                            "last_offset = EXCLUDED.last_offset, updated_at = now()",
                            ot);
    c->create_sql = pg_sqlf("CREATE TABLE IF NOT EXISTS %s (output text NOT NULL, topic text "
                            "NOT NULL, partition integer NOT NULL, last_offset bigint NOT NULL, "
                            "updated_at timestamptz NOT NULL DEFAULT now(), PRIMARY KEY (output, "
                            "topic, partition))",
                            ot);
    spool_buf_free(&o);
    if (!c->select_sql || !c->upsert_sql || !c->create_sql) {
        return -ENOMEM;
    }
    return 0;
fail:
    spool_buf_free(&b);
    return -ENOMEM;
}

static int pg_init(spool_instance *ins, void *vctx)
{
    pg_ctx *c = vctx;
    int rc = pg_check(ins, vctx);
    if (rc < 0) {
        return rc;
    }
    c->ins = ins;
    c->sock = -1;
    if (pthread_mutex_init(&c->lock, NULL) != 0) {
        return -ENOMEM;
    }
    c->lock_init = 1;
    if (!c->offsets_id) {
        c->offsets_id = strdup(spool_instance_name(ins));
        if (!c->offsets_id) {
            return -ENOMEM;
        }
    }
    c->ncols = c->columns.count;
    c->cols = calloc(c->ncols, sizeof(*c->cols));
    if (!c->cols) {
        return -ENOMEM;
    }
    for (size_t i = 0; i < c->ncols; i++) {
        c->cols[i].column = c->columns.keys[i];
        c->cols[i].field = c->columns.values[i];
        c->cols[i].field_len = strlen(c->columns.values[i]);
    }
    rc = pg_build_sql(c);
    if (rc < 0) {
        return rc;
    }
    c->skipped = spool_counter_register(
        ins, "skipped_records", "records found already in PostgreSQL (offsets table) and not sent");
    char reason[PG_REASON_MAX];
    if (pg_connect(c, reason, sizeof(reason)) != 0) {
        spool_log_warn(ins, "%s; the table is checked once the server answers", reason);
        return 0;
    }
    rc = pg_check_schema(c, reason, sizeof(reason));
    if (rc == -ENOENT) {
        spool_config_error(ins, strncmp(reason, "no table", 8) == 0 ? "table" : "columns", "%s",
                           reason);
        return -EINVAL;
    }
    if (rc < 0) {
        spool_log_warn(ins, "%s; checked again at the next connection", reason);
        pg_disconnect(c);
        return 0;
    }
    c->schema_ok = 1;
    return 0;
}

/* The stored last offset of the chunk's partition (-1: none), inside the
 * open transaction. 0 or a failure with reason. */
static int pg_stored_offset(pg_ctx *c, const spool_chunk *ch, int64_t *last, char *reason,
                            size_t cap)
{
    char part[16];
    snprintf(part, sizeof(part), "%" PRId32, ch->partition);
    const char *params[3] = {c->offsets_id, ch->topic ? ch->topic : "", part};
    PGresult *res = PQexecParams(c->conn, c->select_sql, 3, NULL, params, NULL, NULL, 0);
    if (!res || PQresultStatus(res) != PGRES_TUPLES_OK) {
        int rc = pg_failure(c, res, "reading the offsets table", reason, cap);
        PQclear(res);
        return rc;
    }
    *last = -1;
    if (PQntuples(res) > 0) {
        *last = strtoll(PQgetvalue(res, 0, 0), NULL, 10);
    }
    PQclear(res);
    return 0;
}

/* COPY records [from, count) of the chunk. 0 or a failure with reason. */
static int pg_copy(pg_ctx *c, const spool_chunk *ch, size_t from, char *reason, size_t cap)
{
    PGresult *res = PQexec(c->conn, c->copy_sql);
    if (!res || PQresultStatus(res) != PGRES_COPY_IN) {
        int rc = pg_failure(c, res, "COPY", reason, cap);
        PQclear(res);
        return rc;
    }
    PQclear(res);
    /* Rows go out in pieces of PG_COPY_PIECE bytes while the next ones are
     * encoded: the server parses while spool encodes, and the buffer stays
     * small whatever the chunk's size. */
    const char *abort_msg = NULL;
    c->rows.len = 0;
    for (size_t i = from; i < ch->count && !abort_msg; i++) {
        if (pg_copy_row(&c->rows, c->cols, c->ncols, &ch->records[i], ch->topic) < 0) {
            abort_msg = "spool: out of memory encoding rows";
        } else if (c->rows.len >= PG_COPY_PIECE || i + 1 == ch->count) {
            if (PQputCopyData(c->conn, (const char *)c->rows.data, (int)c->rows.len) != 1) {
                abort_msg = "spool: sending rows failed";
            }
            spool_memory_adjust(&c->rows_held, c->rows.cap);
            c->rows.len = 0;
        }
    }
    int ok = PQputCopyEnd(c->conn, abort_msg) == 1 && !abort_msg;
    int rc = 0;
    while ((res = PQgetResult(c->conn)) != NULL) {
        if (rc == 0 && PQresultStatus(res) != PGRES_COMMAND_OK) {
            rc = pg_failure(c, res, "COPY", reason, cap);
            /* The CONTEXT names the row ("COPY t, line 17"): name its offset. */
            const char *ctxt = PQresultErrorField(res, PG_DIAG_CONTEXT);
            const char *line = ctxt ? strstr(ctxt, ", line ") : NULL;
            long ln = line ? strtol(line + 7, NULL, 10) : 0;
            if (ln >= 1 && from + (size_t)ln - 1 < ch->count) {
                size_t n = strlen(reason);
                snprintf(reason + n, cap - n, " (record at offset %" PRId64 ")",
                         ch->records[from + (size_t)ln - 1].offset);
            }
        }
        PQclear(res);
    }
    if (abort_msg) {
        snprintf(reason, cap, "COPY: %s", abort_msg + 7);
        return SPOOL_RETRY;
    }
    if (rc == 0 && !ok) {
        rc = pg_failure(c, NULL, "COPY", reason, cap);
    }
    return rc;
}

static int pg_upsert(pg_ctx *c, const spool_chunk *ch, int64_t last, char *reason, size_t cap)
{
    char part[16], off[24];
    snprintf(part, sizeof(part), "%" PRId32, ch->partition);
    snprintf(off, sizeof(off), "%" PRId64, last);
    const char *params[4] = {c->offsets_id, ch->topic ? ch->topic : "", part, off};
    PGresult *res = PQexecParams(c->conn, c->upsert_sql, 4, NULL, params, NULL, NULL, 0);
    int rc = 0;
    if (!res || PQresultStatus(res) != PGRES_COMMAND_OK) {
        rc = pg_failure(c, res, "updating the offsets table", reason, cap);
    }
    PQclear(res);
    return rc;
}

/* One attempt at the chunk's transaction. */
static int pg_deliver(pg_ctx *c, const spool_chunk *ch, char *reason, size_t cap)
{
    int rc = pg_ready(c, reason, cap);
    if (rc != 0) {
        return rc;
    }
    if ((rc = pg_exec(c, "BEGIN", "BEGIN", reason, cap)) != 0) {
        return rc;
    }
    int64_t stored = -1;
    if ((rc = pg_stored_offset(c, ch, &stored, reason, cap)) != 0) {
        goto rollback;
    }
    size_t from = 0;
    while (from < ch->count && ch->records[from].offset <= stored) {
        from++;
    }
    if (from > 0) {
        spool_counter_add(c->skipped, from);
        spool_log_debug(
            c->ins, "%s/%" PRId32 ": %zu records up to offset %" PRId64 " already in PostgreSQL",
            ch->topic, ch->partition, from, stored);
    }
    if (from == ch->count) {
        return pg_exec(c, "COMMIT", "COMMIT", reason, cap);
    }
    if ((rc = pg_copy(c, ch, from, reason, cap)) != 0) {
        goto rollback;
    }
    if ((rc = pg_upsert(c, ch, ch->records[ch->count - 1].offset, reason, cap)) != 0) {
        goto rollback;
    }
    return pg_exec(c, "COMMIT", "COMMIT", reason, cap);
rollback:
    if (c->conn && PQstatus(c->conn) == CONNECTION_OK) {
        char ignored[64];
        pg_exec(c, "ROLLBACK", "ROLLBACK", ignored, sizeof(ignored));
    }
    return rc;
}

static int pg_flush(spool_instance *ins, void *vctx, const spool_chunk *ch)
{
    pg_ctx *c = vctx;
    if (ch->count == 0) {
        return SPOOL_OK;
    }
    if (pg_is_stopping(c)) {
        spool_output_set_reject_reason(ins, "stopping");
        return SPOOL_RETRY;
    }
    char reason[PG_REASON_MAX];
    reason[0] = '\0';
    int64_t t0 = spool_monotonic_ms();
    int rc = pg_deliver(c, ch, reason, sizeof(reason));
    spool_log_debug(ins, "%s/%" PRId32 ": %zu records in %" PRId64 " ms (%d)", ch->topic,
                    ch->partition, ch->count, spool_monotonic_ms() - t0, rc);
    if (c->conn && PQstatus(c->conn) != CONNECTION_OK) {
        pg_disconnect(c);
    }
    return spool_output_flush_report(ins, ch, rc, reason, &c->failing);
}

static void pg_stop(spool_instance *ins, void *vctx)
{
    pg_ctx *c = vctx;
    if (!c->lock_init) {
        return;
    }
    pthread_mutex_lock(&c->lock);
    c->stopping = 1;
    if (c->sock >= 0) {
        shutdown(c->sock, SHUT_RDWR);
    }
    pthread_mutex_unlock(&c->lock);
}

static void pg_destroy(spool_instance *ins, void *vctx)
{
    pg_ctx *c = vctx;
    if (c->lock_init) {
        pg_disconnect(c);
        pthread_mutex_destroy(&c->lock);
    } else if (c->conn) {
        PQfinish(c->conn);
    }
    spool_buf_free(&c->rows);
    spool_memory_adjust(&c->rows_held, 0);
    free(c->cols);
    free(c->copy_sql);
    free(c->select_sql);
    free(c->upsert_sql);
    free(c->create_sql);
    c->cols = NULL;
    c->copy_sql = c->select_sql = c->upsert_sql = c->create_sql = NULL;
}

const spool_plugin spool_plugin_postgresql = {
    SPOOL_PLUGIN_ABI, /* with the signature: also built as an external .so */
    .kind = SPOOL_PLUGIN_OUTPUT,
    .name = "postgresql",
    .description = "COPY chunks into a PostgreSQL table, exactly once (offsets in the same "
                   "transaction)",
    .options = pg_options,
    .context_size = sizeof(pg_ctx),
    .check = pg_check,
    .init = pg_init,
    .flush = pg_flush,
    .stop = pg_stop,
    .destroy = pg_destroy,
};
