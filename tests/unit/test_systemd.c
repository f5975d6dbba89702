/*
 * test_systemd.c: the sd_notify wrappers against a fake systemd: a unixgram
 * socket the test binds and names in NOTIFY_SOCKET, as systemd does for a
 * Type=notify unit. Also: no-ops outside systemd, and the watchdog env.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

#include <cmocka.h>

#include "service/systemd.h"

typedef struct fake_systemd {
    int fd;
    char dir[64];
    char path[108];
} fake_systemd;

static int fake_bind(fake_systemd *f, int abstract)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    socklen_t len;
    f->fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (f->fd < 0) {
        return -errno;
    }
    struct timeval tv = {.tv_sec = 5};
    setsockopt(f->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    if (abstract) {
        f->dir[0] = '\0';
        snprintf(f->path, sizeof(f->path), "@spool-test-notify-%d", (int)getpid());
        sa.sun_path[0] = '\0';
        memcpy(sa.sun_path + 1, f->path + 1, strlen(f->path) - 1);
        len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + strlen(f->path));
    } else {
        snprintf(f->dir, sizeof(f->dir), "/tmp/spool-sd-XXXXXX");
        if (!mkdtemp(f->dir)) {
            return -errno;
        }
        snprintf(f->path, sizeof(f->path), "%s/notify", f->dir);
        snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", f->path);
        len = sizeof(sa);
    }
    if (bind(f->fd, (struct sockaddr *)&sa, len) < 0) {
        return -errno;
    }
    setenv("NOTIFY_SOCKET", f->path, 1);
    return 0;
}

static int setup_fs(void **state)
{
    fake_systemd *f = calloc(1, sizeof(*f));
    assert_non_null(f);
    assert_int_equal(fake_bind(f, 0), 0);
    *state = f;
    return 0;
}

static int setup_abstract(void **state)
{
    fake_systemd *f = calloc(1, sizeof(*f));
    assert_non_null(f);
    assert_int_equal(fake_bind(f, 1), 0);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fake_systemd *f = *state;
    unsetenv("NOTIFY_SOCKET");
    close(f->fd);
    if (f->dir[0]) {
        unlink(f->path);
        rmdir(f->dir);
    }
    free(f);
    return 0;
}

/* The next datagram systemd would get, NUL-terminated. */
static void recv_msg(fake_systemd *f, char *buf, size_t cap)
{
    ssize_t n = recv(f->fd, buf, cap - 1, 0);
    assert_true(n > 0);
    buf[n] = '\0';
}

static void test_no_systemd_is_noop(void **state)
{
    unsetenv("NOTIFY_SOCKET");
    unsetenv("WATCHDOG_USEC");
    unsetenv("WATCHDOG_PID");
    assert_int_equal(spool_sd_ready(), 0);
    assert_int_equal(spool_sd_stopping(), 0);
    assert_int_equal(spool_sd_reloading(), 0);
    assert_int_equal(spool_sd_status("recovering %d topics", 3), 0);
    assert_int_equal(spool_sd_watchdog_ping(), 0);
    int64_t ms = 123;
    assert_int_equal(spool_sd_watchdog_enabled(&ms), 0);
    assert_int_equal(ms, 0);
}

static void test_messages(void **state)
{
    fake_systemd *f = *state;
    char buf[1024];

    assert_int_equal(spool_sd_ready(), 1);
    recv_msg(f, buf, sizeof(buf));
    assert_string_equal(buf, "READY=1");

    assert_int_equal(spool_sd_stopping(), 1);
    recv_msg(f, buf, sizeof(buf));
    assert_string_equal(buf, "STOPPING=1");

    assert_int_equal(spool_sd_watchdog_ping(), 1);
    recv_msg(f, buf, sizeof(buf));
    assert_string_equal(buf, "WATCHDOG=1");

    assert_int_equal(spool_sd_reloading(), 1);
    recv_msg(f, buf, sizeof(buf));
    const char *pfx = "RELOADING=1\nMONOTONIC_USEC=";
    assert_memory_equal(buf, pfx, strlen(pfx));
    const char *digits = buf + strlen(pfx);
    assert_true(strlen(digits) > 0);
    assert_int_equal(strspn(digits, "0123456789"), strlen(digits));
    assert_true(strtoull(digits, NULL, 10) > 0);
}

static void test_status(void **state)
{
    fake_systemd *f = *state;
    char buf[2048];

    assert_int_equal(spool_sd_status("running: %d inputs, %d outputs", 2, 1), 1);
    recv_msg(f, buf, sizeof(buf));
    assert_string_equal(buf, "STATUS=running: 2 inputs, 1 outputs");

    /* A newline would start a second assignment: it must not get through. */
    assert_int_equal(spool_sd_status("line one\nREADY=1"), 1);
    recv_msg(f, buf, sizeof(buf));
    assert_string_equal(buf, "STATUS=line one READY=1");

    char long_text[1000];
    memset(long_text, 'x', sizeof(long_text) - 1);
    long_text[sizeof(long_text) - 1] = '\0';
    assert_int_equal(spool_sd_status("%s", long_text), 1);
    recv_msg(f, buf, sizeof(buf));
    assert_int_equal(strlen(buf), strlen("STATUS=") + 256);
}

static void test_watchdog_env(void **state)
{
    char pid[32];
    int64_t ms = -1;

    setenv("WATCHDOG_USEC", "30000000", 1);
    snprintf(pid, sizeof(pid), "%d", (int)getpid());
    setenv("WATCHDOG_PID", pid, 1);
    assert_int_equal(spool_sd_watchdog_enabled(&ms), 1);
    assert_int_equal(ms, 30000);
    assert_int_equal(spool_sd_watchdog_enabled(NULL), 1);

    /* Meant for another process (e.g. our parent): not ours to ping. */
    snprintf(pid, sizeof(pid), "%d", (int)getpid() + 1);
    setenv("WATCHDOG_PID", pid, 1);
    assert_int_equal(spool_sd_watchdog_enabled(&ms), 0);
    assert_int_equal(ms, 0);

    /* No WATCHDOG_PID: the timeout applies to whoever reads it. */
    unsetenv("WATCHDOG_PID");
    assert_int_equal(spool_sd_watchdog_enabled(&ms), 1);
    assert_int_equal(ms, 30000);

    setenv("WATCHDOG_USEC", "thirty", 1);
    assert_true(spool_sd_watchdog_enabled(&ms) < 0);

    unsetenv("WATCHDOG_USEC");
    assert_int_equal(spool_sd_watchdog_enabled(&ms), 0);
}

static void test_dead_socket_is_an_error(void **state)
{
    /* NOTIFY_SOCKET names a path nobody listens on: the error is returned
     * (the caller decides it is not fatal), not swallowed. */
    setenv("NOTIFY_SOCKET", "/nonexistent-spool-dir/notify", 1);
    assert_true(spool_sd_ready() < 0);
    unsetenv("NOTIFY_SOCKET");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_no_systemd_is_noop),
        cmocka_unit_test_setup_teardown(test_messages, setup_fs, teardown),
        cmocka_unit_test_setup_teardown(test_messages, setup_abstract, teardown),
        cmocka_unit_test_setup_teardown(test_status, setup_fs, teardown),
        cmocka_unit_test(test_watchdog_env),
        cmocka_unit_test(test_dead_socket_is_an_error),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
