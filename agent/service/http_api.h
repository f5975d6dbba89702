/*
 * http_api.h: the agent's read-only HTTP API (service.http.listen), served
 * by libmicrohttpd on one internal polling thread:
 *
 *   GET /metrics        Prometheus text exposition format 0.0.4, from
 *                       spool_metrics_foreach() plus a few process_* gauges
 *                       and spool_healthy (1 when /health is 200, else 0)
 *   GET /health         200 {"status":"ok"} or
 *                       503 {"status":"unhealthy","reason":"..."} from
 *                       spool_service_health()
 *   GET /api/v1/topics  JSON from spool_topics_json() (`spool topics --json`)
 *
 * Anything else is 404; a method other than GET or HEAD on a known path is
 * 405. The API never reads a request body and never mutates the agent.
 */
#ifndef SPOOL_SERVICE_HTTP_API_H
#define SPOOL_SERVICE_HTTP_API_H

#include <stddef.h>
#include <stdint.h>

#include "codec/codec.h"
#include "metrics.h"

struct spool_service;

typedef struct spool_http_api spool_http_api;

/*
 * Provided by the core (agent/topics_json.c), not by this module: appends
 * the JSON document `spool topics --json` prints to `out`, for the running
 * service svc (no topics when svc is NULL). Returns 0 or a negative errno.
 * Called on the HTTP thread, so it must be safe to call while the pipeline
 * runs.
 */
int spool_topics_json(struct spool_service *svc, spool_buf *out);

/*
 * Provided by the service (agent/service.c): 1 if svc is healthy, else 0 and
 * a one-line reason naming the stuck stage or the failing output (e.g.
 * "output http.0: destination failing for 12s: connect refused"), computed
 * from what the writer and the output runners report. svc NULL: 0, "not
 * running". Any thread.
 */
int spool_service_health(struct spool_service *svc, char *reason, size_t cap);

/*
 * Where the API's data comes from. spool_http_api_start() uses the real
 * core functions on the service it is given; tests pass their own. Every
 * hook is called on the HTTP thread while a request is served, with `ctx` as
 * its first argument. A NULL hook makes its path answer 503.
 */
typedef struct spool_http_api_hooks {
    void *ctx; /* passed to every hook (the running service for the core's) */
    void (*metrics_foreach)(void *ctx, void (*fn)(void *arg, const spool_metric_sample *s),
                            void *arg);
    int (*health_check)(void *ctx, char *reason, size_t cap); /* 1 healthy, 0 + reason */
    int (*topics_json)(void *ctx, spool_buf *out);            /* 0 or -errno */
    int process_metrics; /* 1: add process_* gauges read from /proc/self */
    /* GET /api/v1/views/<name>?key=&from=&to= (streams): 0, -ENOENT (no such
     * stream) or -errno; appends a JSON array to out. */
    int (*view_query)(void *ctx, const char *name, const char *key, int64_t from, int64_t to,
                      spool_buf *out);
} spool_http_api_hooks;

/*
 * Starts the API listening on `listen`: "HOST:PORT", "[IPV6]:PORT" or
 * ":PORT" (all IPv4 interfaces); HOST may be a name; PORT 0 picks a free
 * port (see spool_http_api_port). The API serves svc's figures (svc may be
 * NULL: no partitions, /health "not running"); svc must outlive the server.
 * On success *out owns a running server (stop it with spool_http_api_stop).
 * Returns 0, -EINVAL (unparseable address), -EADDRINUSE / -EACCES /
 * -EADDRNOTAVAIL (bind failed), -ENOMEM, or -EIO (libmicrohttpd failed
 * otherwise). Call from any one thread.
 */
int spool_http_api_start(const char *listen, struct spool_service *svc, spool_http_api **out);

/* The same with explicit data sources (copied; NULL = the core's). */
int spool_http_api_start_hooks(const char *listen, const spool_http_api_hooks *hooks,
                               spool_http_api **out);

/* The bound TCP port (useful after asking for port 0). */
uint16_t spool_http_api_port(const spool_http_api *api);

/* Stops serving, joins the HTTP thread and frees api. Accepts NULL. Must not
 * be called from a hook. */
void spool_http_api_stop(spool_http_api *api);

/*
 * Renders the whole /metrics body (exposed for tests and for a future
 * `spool metrics` command). Samples are re-grouped by name so HELP/TYPE
 * appear once per family even if the source interleaves names; metric and
 * label names are sanitised to [a-zA-Z_:][a-zA-Z0-9_:]*; a counter's name
 * gets a "_total" suffix if it lacks one; an unknown type becomes
 * "untyped"; label values and
 * HELP text are escaped as the format requires (a labels string that is
 * already escaped is kept; one with raw quotes, backslashes or newlines is
 * escaped). Returns 0 or -ENOMEM. Any thread.
 */
int spool_http_api_render_metrics(const spool_http_api_hooks *hooks, spool_buf *out);

/*
 * Appends `v` escaped for a Prometheus label value (\ -> \\, " -> \",
 * newline -> \n) to out. For the metrics registry, which preformats label
 * strings. Returns 0 or -ENOMEM.
 */
int spool_prom_escape_label_value(spool_buf *out, const char *v);

#endif /* SPOOL_SERVICE_HTTP_API_H */
