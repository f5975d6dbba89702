/*
 * test_http_api.c: the HTTP API over real TCP on 127.0.0.1 with fake data
 * sources (hooks) and the core's real registry: Prometheus text format
 * (grouping, escaping, sanitising), /health 200/503, /api/v1/topics,
 * 404/405/HEAD, listen-address parsing and bind errors.
 */
#define _GNU_SOURCE /* strcasestr */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <cmocka.h>

#include "core.h"
#include "service/http_api.h"

/* ------------------------------------------------------------------------ */
/* Fake data.                                                               */
/* ------------------------------------------------------------------------ */

static void fake_metrics(void *ctx, void (*fn)(void *, const spool_metric_sample *), void *arg)
{
    (void)ctx;
    /* Interleaved on purpose: the exporter must regroup by name. */
    const spool_metric_sample s[] = {
        {"spool_input_records_total", "Records read by an input.", "counter",
         "kind=\"input\",plugin=\"stdin\",name=\"a\"", 5},
        {"spool_queue_depth", "Records waiting in a stage's queue.", "gauge", "stage=\"log\"", 3},
        {"spool_input_records_total", "Records read by an input.", "counter",
         "kind=\"input\",plugin=\"tail\",name=\"we\"ird\"", 7},
        {"spool_input_records_total", "Records read by an input.", "counter",
         "kind=\"input\",plugin=\"tail\",name=\"C:\\\\logs\\\\\"", 9},
        {"spool_tail-x_total", "Help with a \\ and a\nnewline.", "counter", "", 1},
        {"spool_broken", "Bad labels.", "gauge", "garbage", 4},
        {"spool_weird_type", "Unknown type.", "bogus", "", -2},
        {"spool_raw_backslash", "A raw trailing backslash.", "gauge", "p=\"a\\\"", 1},
        {"spool_stdin_lines_split", "A counter without _total.", "counter", "", 6},
    };
    for (size_t i = 0; i < sizeof(s) / sizeof(s[0]); i++) {
        fn(arg, &s[i]);
    }
}

static int healthy;
static const char *unhealthy_reason = "";

static int fake_health(void *ctx, char *reason, size_t cap)
{
    (void)ctx;
    if (healthy) {
        return 1;
    }
    snprintf(reason, cap, "%s", unhealthy_reason);
    return 0;
}

static int topics_rc;

static int fake_topics(void *ctx, spool_buf *out)
{
    (void)ctx;
    if (topics_rc < 0) {
        return topics_rc;
    }
    const char *j = "{\"topics\":[{\"name\":\"app\",\"partitions\":2}]}";
    return spool_buf_append(out, j, strlen(j));
}

static const spool_http_api_hooks fake_hooks = {
    .metrics_foreach = fake_metrics,
    .health_check = fake_health,
    .topics_json = fake_topics,
    .process_metrics = 1,
};

/* ------------------------------------------------------------------------ */
/* A tiny HTTP/1.0 client.                                                  */
/* ------------------------------------------------------------------------ */

typedef struct reply {
    int status;
    char headers[4096];
    char *body; /* NUL-terminated, malloc'd */
    size_t body_len;
} reply;

static void reply_free(reply *r)
{
    free(r->body);
    r->body = NULL;
}

static int connect_local(uint16_t port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_true(fd >= 0);
    struct timeval tv = {.tv_sec = 10};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    return fd;
}

static void http_request(uint16_t port, const char *method, const char *path, const char *body,
                         reply *r)
{
    char req[512];
    int n = snprintf(req, sizeof(req), "%s %s HTTP/1.0\r\nHost: 127.0.0.1\r\n", method, path);
    if (body) {
        n += snprintf(req + n, sizeof(req) - (size_t)n, "Content-Length: %zu\r\n", strlen(body));
    }
    n += snprintf(req + n, sizeof(req) - (size_t)n, "\r\n%s", body ? body : "");
    int fd = connect_local(port);
    assert_int_equal(send(fd, req, (size_t)n, MSG_NOSIGNAL), n);
    size_t cap = 1 << 16, len = 0;
    char *buf = malloc(cap);
    assert_non_null(buf);
    for (int i = 0; i < 10000; i++) {
        if (len + 1 == cap) {
            cap *= 2;
            buf = realloc(buf, cap);
            assert_non_null(buf);
        }
        ssize_t got = recv(fd, buf + len, cap - len - 1, 0);
        assert_true(got >= 0); /* -1 would be the 10 s timeout */
        if (got == 0) {
            break;
        }
        len += (size_t)got;
    }
    close(fd);
    buf[len] = '\0';
    assert_int_equal(sscanf(buf, "HTTP/1.%*d %d", &r->status), 1);
    char *end = strstr(buf, "\r\n\r\n");
    assert_non_null(end);
    size_t hlen = (size_t)(end - buf);
    assert_true(hlen < sizeof(r->headers));
    memcpy(r->headers, buf, hlen);
    r->headers[hlen] = '\0';
    r->body_len = len - hlen - 4;
    r->body = malloc(r->body_len + 1);
    assert_non_null(r->body);
    memcpy(r->body, end + 4, r->body_len + 1);
    free(buf);
}

static int has_header(const reply *r, const char *line)
{
    return strcasestr(r->headers, line) != NULL;
}

/* How many lines of text equal line exactly. */
static int count_lines(const char *text, const char *line)
{
    int n = 0;
    size_t l = strlen(line);
    for (const char *p = text; p && *p;) {
        const char *nl = strchr(p, '\n');
        size_t len = nl ? (size_t)(nl - p) : strlen(p);
        if (len == l && memcmp(p, line, l) == 0) {
            n++;
        }
        p = nl ? nl + 1 : NULL;
    }
    return n;
}

/*
 * Structural check of a text exposition: every line ends in \n; comment
 * lines are HELP, TYPE or other '#'; each family's samples are consecutive
 * and follow its TYPE; sample lines are `name[{...}] value`.
 */
static void check_exposition(const char *text)
{
    char seen[64][128];
    int nseen = 0;
    char cur[128] = "";
    assert_true(text[0] != '\0');
    assert_int_equal(text[strlen(text) - 1], '\n');
    for (const char *p = text; *p;) {
        const char *nl = strchr(p, '\n');
        assert_non_null(nl);
        char line[1024];
        size_t len = (size_t)(nl - p);
        assert_true(len < sizeof(line));
        memcpy(line, p, len);
        line[len] = '\0';
        p = nl + 1;
        char name[128];
        if (strncmp(line, "# TYPE ", 7) == 0) {
            assert_int_equal(sscanf(line + 7, "%127s", name), 1);
            for (int i = 0; i < nseen; i++) {
                assert_string_not_equal(seen[i], name); /* family appears twice */
            }
            assert_true(nseen < 64);
            snprintf(seen[nseen++], sizeof(seen[0]), "%s", name);
            snprintf(cur, sizeof(cur), "%s", name);
            continue;
        }
        if (line[0] == '#') {
            continue;
        }
        size_t nlen =
            strspn(line, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_:");
        assert_true(nlen > 0);
        memcpy(name, line, nlen);
        name[nlen] = '\0';
        assert_string_equal(name, cur);
        const char *rest = line + nlen;
        if (*rest == '{') {
            rest = strrchr(rest, '}');
            assert_non_null(rest);
            rest++;
        }
        assert_int_equal(*rest, ' ');
        char *endp;
        strtod(rest + 1, &endp);
        assert_true(endp > rest + 1 && *endp == '\0');
    }
}

/* ------------------------------------------------------------------------ */
/* Tests.                                                                   */
/* ------------------------------------------------------------------------ */

static void test_render_exact(void **state)
{
    spool_http_api_hooks h = fake_hooks;
    h.process_metrics = 0;
    spool_buf b = {0};
    assert_int_equal(spool_http_api_render_metrics(&h, &b), 0);
    assert_int_equal(spool_buf_append(&b, "", 1), 0);
    const char *t = (const char *)b.data;
    const char *want =
        "# HELP spool_broken Bad labels.\n"
        "# TYPE spool_broken gauge\n"
        "# skipped a sample of spool_broken: malformed labels\n"
        "# HELP spool_input_records_total Records read by an input.\n"
        "# TYPE spool_input_records_total counter\n"
        "spool_input_records_total{kind=\"input\",plugin=\"stdin\",name=\"a\"} 5\n"
        "spool_input_records_total{kind=\"input\",plugin=\"tail\",name=\"we\\\"ird\"} 7\n"
        "spool_input_records_total{kind=\"input\",plugin=\"tail\",name=\"C:\\\\logs\\\\\"} 9\n"
        "# HELP spool_queue_depth Records waiting in a stage's queue.\n"
        "# TYPE spool_queue_depth gauge\n"
        "spool_queue_depth{stage=\"log\"} 3\n"
        "# HELP spool_raw_backslash A raw trailing backslash.\n"
        "# TYPE spool_raw_backslash gauge\n"
        "spool_raw_backslash{p=\"a\\\\\"} 1\n"
        "# HELP spool_stdin_lines_split_total A counter without _total.\n"
        "# TYPE spool_stdin_lines_split_total counter\n"
        "spool_stdin_lines_split_total 6\n"
        "# HELP spool_tail_x_total Help with a \\\\ and a\\nnewline.\n"
        "# TYPE spool_tail_x_total counter\n"
        "spool_tail_x_total 1\n"
        "# HELP spool_weird_type Unknown type.\n"
        "# TYPE spool_weird_type untyped\n"
        "spool_weird_type -2\n";
    assert_string_equal(t, want);
    check_exposition(t);
    spool_buf_free(&b);
}

static void test_escape_helper(void **state)
{
    spool_buf b = {0};
    assert_int_equal(spool_prom_escape_label_value(&b, "a\"b\\c\nd"), 0);
    assert_int_equal(spool_buf_append(&b, "", 1), 0);
    assert_string_equal((const char *)b.data, "a\\\"b\\\\c\\nd");
    spool_buf_free(&b);
}

static void test_metrics_over_http(void **state)
{
    spool_http_api *api = NULL;
    assert_int_equal(spool_http_api_start_hooks("127.0.0.1:0", &fake_hooks, &api), 0);
    assert_non_null(api);
    uint16_t port = spool_http_api_port(api);
    assert_true(port > 0);

    reply r = {0};
    http_request(port, "GET", "/metrics", NULL, &r);
    assert_int_equal(r.status, 200);
    assert_true(has_header(&r, "Content-Type: text/plain; version=0.0.4"));
    check_exposition(r.body);
    assert_int_equal(count_lines(r.body, "# TYPE spool_input_records_total counter"), 1);
    assert_int_equal(count_lines(r.body, "spool_queue_depth{stage=\"log\"} 3"), 1);
    assert_non_null(strstr(r.body, "\n# TYPE process_resident_memory_bytes gauge\n"));
    assert_non_null(strstr(r.body, "\nprocess_resident_memory_bytes "));
    assert_non_null(strstr(r.body, "\n# TYPE process_cpu_seconds_total counter\n"));
    assert_non_null(strstr(r.body, "\nprocess_open_fds "));
    assert_non_null(strstr(r.body, "\nspool_build_info{version=\"" SPOOL_VERSION "\"} 1\n"));
    reply_free(&r);

    /* A query string is not part of the path. */
    http_request(port, "GET", "/metrics?x=1", NULL, &r);
    assert_int_equal(r.status, 200);
    reply_free(&r);

    spool_http_api_stop(api);
}

/* spool_healthy: /health's verdict as a gauge beside the process_* ones. */
static void test_healthy_gauge(void **state)
{
    spool_http_api_hooks h = fake_hooks;
    for (int want = 0; want <= 2; want++) {
        healthy = want == 1;
        unhealthy_reason = "output x: destination failing for 2s";
        h.health_check = want == 2 ? NULL : fake_health;
        spool_buf b = {0};
        assert_int_equal(spool_http_api_render_metrics(&h, &b), 0);
        assert_int_equal(spool_buf_append(&b, "", 1), 0);
        const char *t = (const char *)b.data;
        check_exposition(t);
        if (want == 2) {
            assert_null(strstr(t, "spool_healthy")); /* no health source: left out */
        } else {
            assert_non_null(strstr(t, "\n# TYPE spool_healthy gauge\n"));
            assert_non_null(strstr(t, want ? "\nspool_healthy 1\n" : "\nspool_healthy 0\n"));
        }
        spool_buf_free(&b);
    }
    healthy = 0;
    unhealthy_reason = "";
}

static void test_health(void **state)
{
    spool_http_api *api = NULL;
    assert_int_equal(spool_http_api_start_hooks("127.0.0.1:0", &fake_hooks, &api), 0);
    uint16_t port = spool_http_api_port(api);
    reply r = {0};

    healthy = 1;
    http_request(port, "GET", "/health", NULL, &r);
    assert_int_equal(r.status, 200);
    assert_true(has_header(&r, "Content-Type: application/json"));
    assert_string_equal(r.body, "{\"status\":\"ok\"}\n");
    reply_free(&r);

    healthy = 0;
    unhealthy_reason = "output \"http.0\": destination failing for 12s:\nconnect refused";
    http_request(port, "GET", "/health", NULL, &r);
    assert_int_equal(r.status, 503);
    assert_string_equal(r.body, "{\"status\":\"unhealthy\",\"reason\":\"output \\\"http.0\\\": "
                                "destination failing for 12s:\\nconnect refused\"}\n");
    reply_free(&r);

    /* Unhealthy without a reason still says something. */
    unhealthy_reason = "";
    http_request(port, "GET", "/health", NULL, &r);
    assert_int_equal(r.status, 503);
    assert_non_null(strstr(r.body, "\"reason\":\"unhealthy (no reason given)\""));
    reply_free(&r);

    healthy = 1;
    http_request(port, "GET", "/health", NULL, &r);
    assert_int_equal(r.status, 200);
    reply_free(&r);

    /* HEAD: same status and headers, no body. */
    http_request(port, "HEAD", "/health", NULL, &r);
    assert_int_equal(r.status, 200);
    assert_int_equal(r.body_len, 0);
    reply_free(&r);

    spool_http_api_stop(api);
}

static void test_topics(void **state)
{
    spool_http_api *api = NULL;
    assert_int_equal(spool_http_api_start_hooks("127.0.0.1:0", &fake_hooks, &api), 0);
    uint16_t port = spool_http_api_port(api);
    reply r = {0};

    topics_rc = 0;
    http_request(port, "GET", "/api/v1/topics", NULL, &r);
    assert_int_equal(r.status, 200);
    assert_true(has_header(&r, "Content-Type: application/json"));
    assert_string_equal(r.body, "{\"topics\":[{\"name\":\"app\",\"partitions\":2}]}");
    reply_free(&r);

    topics_rc = -EIO;
    http_request(port, "GET", "/api/v1/topics", NULL, &r);
    assert_int_equal(r.status, 500);
    assert_non_null(strstr(r.body, "\"error\":\""));
    reply_free(&r);
    topics_rc = 0;

    spool_http_api_stop(api);
}

static void test_not_found_and_methods(void **state)
{
    spool_http_api *api = NULL;
    assert_int_equal(spool_http_api_start_hooks("127.0.0.1:0", &fake_hooks, &api), 0);
    uint16_t port = spool_http_api_port(api);
    reply r = {0};
    const char *missing[] = {"/", "/metrics/", "/api/v1", "/api/v1/topics/x", "/healthz"};
    for (size_t i = 0; i < sizeof(missing) / sizeof(missing[0]); i++) {
        http_request(port, "GET", missing[i], NULL, &r);
        assert_int_equal(r.status, 404);
        reply_free(&r);
    }
    const char *methods[] = {"POST", "PUT", "DELETE"};
    for (size_t i = 0; i < sizeof(methods) / sizeof(methods[0]); i++) {
        http_request(port, methods[i], "/metrics", "{\"x\":1}", &r);
        assert_int_equal(r.status, 405);
        assert_true(has_header(&r, "Allow: GET, HEAD"));
        reply_free(&r);
    }
    http_request(port, "POST", "/health", NULL, &r);
    assert_int_equal(r.status, 405);
    reply_free(&r);

    /* Connections opened and dropped without a request do not wedge it. */
    for (int i = 0; i < 40; i++) {
        close(connect_local(port));
    }
    http_request(port, "GET", "/health", NULL, &r);
    assert_int_equal(r.status, 200);
    reply_free(&r);

    spool_http_api_stop(api);
}

static void test_listen_errors(void **state)
{
    spool_http_api *api = (spool_http_api *)0x1;
    const char *bad[] = {"",
                         "2020",
                         "127.0.0.1",
                         "127.0.0.1:",
                         "127.0.0.1:99999",
                         "127.0.0.1:20x0",
                         "::1:2020",
                         "[::1]2020",
                         "[::1:2020",
                         "no.such.host.invalid:2020"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        assert_int_equal(spool_http_api_start_hooks(bad[i], &fake_hooks, &api), -EINVAL);
        assert_null(api);
        api = (spool_http_api *)0x1;
    }
    assert_int_equal(spool_http_api_start(NULL, NULL, &api), -EINVAL);

    /* A port somebody else holds. */
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    assert_int_equal(listen(fd, 1), 0);
    socklen_t sl = sizeof(sa);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&sa, &sl), 0);
    char listen_on[64];
    snprintf(listen_on, sizeof(listen_on), "127.0.0.1:%u", ntohs(sa.sin_port));
    assert_int_equal(spool_http_api_start_hooks(listen_on, &fake_hooks, &api), -EADDRINUSE);
    assert_null(api);
    close(fd);

    spool_http_api_stop(NULL);
}

static void test_other_listen_forms(void **state)
{
    spool_http_api *api = NULL;
    reply r = {0};

    /* ":0": every IPv4 interface, so loopback too. */
    assert_int_equal(spool_http_api_start_hooks(":0", &fake_hooks, &api), 0);
    healthy = 1;
    http_request(spool_http_api_port(api), "GET", "/health", NULL, &r);
    assert_int_equal(r.status, 200);
    reply_free(&r);
    spool_http_api_stop(api);

    assert_int_equal(spool_http_api_start_hooks("localhost:0", &fake_hooks, &api), 0);
    assert_true(spool_http_api_port(api) > 0);
    spool_http_api_stop(api);

    /* IPv6 loopback, where the machine has it. */
    int rc = spool_http_api_start_hooks("[::1]:0", &fake_hooks, &api);
    if (rc == 0) {
        assert_true(spool_http_api_port(api) > 0);
        spool_http_api_stop(api);
    } else {
        assert_true(rc == -EADDRNOTAVAIL || rc == -EAFNOSUPPORT);
    }
}

static void test_real_registry(void **state)
{
    /* The core's registry as the source: counters registered the way
     * instances register them, with raw (unescaped) label values. */
    const char *labels = "kind=\"input\",plugin=\"tail\",name=\"we\"ird\\path\"";
    spool_counter *c = spool__metric_register("spool_test_events_total", "Events.", labels, 0);
    spool_counter *g = spool__metric_register("spool_test_level", "A level.", labels, 1);
    spool_counter *u = spool__metric_register("spool_test_unsuffixed", "No suffix.", labels, 0);
    assert_non_null(c);
    assert_non_null(g);
    assert_non_null(u);
    spool_counter_add(c, 42);
    spool_gauge_set(g, -5);
    spool_counter_add(u, 1);

    spool_http_api *api = NULL;
    assert_int_equal(spool_http_api_start("127.0.0.1:0", NULL, &api), 0);
    reply r = {0};
    http_request(spool_http_api_port(api), "GET", "/metrics", NULL, &r);
    assert_int_equal(r.status, 200);
    check_exposition(r.body);
    const char *esc = "{kind=\"input\",plugin=\"tail\",name=\"we\\\"ird\\\\path\"}";
    char line[256];
    snprintf(line, sizeof(line), "spool_test_events_total%s 42", esc);
    assert_int_equal(count_lines(r.body, line), 1);
    assert_int_equal(count_lines(r.body, "# TYPE spool_test_level gauge"), 1);
    snprintf(line, sizeof(line), "spool_test_level%s -5", esc);
    assert_int_equal(count_lines(r.body, line), 1);
    snprintf(line, sizeof(line), "spool_test_unsuffixed_total%s 1", esc);
    assert_int_equal(count_lines(r.body, line), 1);
    reply_free(&r);

    /* No service is running here: the real health check says so. */
    http_request(spool_http_api_port(api), "GET", "/health", NULL, &r);
    assert_int_equal(r.status, 503);
    assert_non_null(strstr(r.body, "\"status\":\"unhealthy\""));
    reply_free(&r);
    spool_http_api_stop(api);
    spool__metric_unregister_labels(labels);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_render_exact),
        cmocka_unit_test(test_escape_helper),
        cmocka_unit_test(test_metrics_over_http),
        cmocka_unit_test(test_healthy_gauge),
        cmocka_unit_test(test_health),
        cmocka_unit_test(test_topics),
        cmocka_unit_test(test_not_found_and_methods),
        cmocka_unit_test(test_listen_errors),
        cmocka_unit_test(test_other_listen_forms),
        cmocka_unit_test(test_real_registry),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
