/*
 * tsan_thrd.c: ThreadSanitizer builds only (SPOOL_TSAN). glibc's C11
 * threads (thrd_*, mtx_*, cnd_*, call_once) call internal pthread functions
 * that the sanitizer's interceptors never see: a thread started by
 * thrd_create() has no sanitizer state and crashes at its first malloc, and
 * C11 locks give the sanitizer no happens-before, so it reports races that
 * are not there. librdkafka uses C11 threads throughout, so every kafka
 * handle (the kafka output, even `spool check` of a config naming one)
 * crashed or raced under TSan.
 *
 * This file defines those functions in the executable, which the dynamic
 * linker prefers over libc's for every shared library, as thin wrappers of
 * the intercepted pthread calls; glibc's C11 types share their storage with
 * the pthread types, as glibc's own implementation relies on. In any other
 * build the file is empty.
 */
#if defined(__SANITIZE_THREAD__)
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <threads.h>

#define TSAN_API __attribute__((visibility("default")))

typedef struct tsan_thrd_start {
    thrd_start_t fn;
    void *arg;
} tsan_thrd_start;

static void *tsan_thrd_trampoline(void *p)
{
    tsan_thrd_start s = *(tsan_thrd_start *)p;
    free(p);
    return (void *)(intptr_t)s.fn(s.arg);
}

TSAN_API int thrd_create(thrd_t *thr, thrd_start_t fn, void *arg)
{
    tsan_thrd_start *s = malloc(sizeof(*s));
    if (!s) {
        return thrd_nomem;
    }
    s->fn = fn;
    s->arg = arg;
    int rc = pthread_create(thr, NULL, tsan_thrd_trampoline, s);
    if (rc != 0) {
        free(s);
        return rc == 11 /* EAGAIN */ ? thrd_nomem : thrd_error;
    }
    return thrd_success;
}

static int tsan_rc(int rc)
{
    switch (rc) {
    case 0:
        return thrd_success;
    case 11: /* EAGAIN */
    case 12: /* ENOMEM */
        return thrd_nomem;
    case 16: /* EBUSY */
        return thrd_busy;
    case 110: /* ETIMEDOUT */
        return thrd_timedout;
    default:
        return thrd_error;
    }
}

TSAN_API int thrd_join(thrd_t thr, int *res)
{
    void *r = NULL;
    int rc = pthread_join(thr, &r);
    if (rc == 0 && res) {
        *res = (int)(intptr_t)r;
    }
    return tsan_rc(rc);
}

TSAN_API int thrd_detach(thrd_t thr)
{
    return tsan_rc(pthread_detach(thr));
}

TSAN_API int mtx_init(mtx_t *m, int type)
{
    pthread_mutexattr_t a;
    pthread_mutexattr_init(&a);
    if (type & mtx_recursive) {
        pthread_mutexattr_settype(&a, PTHREAD_MUTEX_RECURSIVE);
    }
    int rc = pthread_mutex_init((pthread_mutex_t *)m, &a);
    pthread_mutexattr_destroy(&a);
    return tsan_rc(rc);
}

TSAN_API int mtx_lock(mtx_t *m)
{
    return tsan_rc(pthread_mutex_lock((pthread_mutex_t *)m));
}

TSAN_API int mtx_trylock(mtx_t *m)
{
    return tsan_rc(pthread_mutex_trylock((pthread_mutex_t *)m));
}

TSAN_API int mtx_timedlock(mtx_t *restrict m, const struct timespec *restrict ts)
{
    return tsan_rc(pthread_mutex_timedlock((pthread_mutex_t *)m, ts));
}

TSAN_API int mtx_unlock(mtx_t *m)
{
    return tsan_rc(pthread_mutex_unlock((pthread_mutex_t *)m));
}

TSAN_API void mtx_destroy(mtx_t *m)
{
    pthread_mutex_destroy((pthread_mutex_t *)m);
}

TSAN_API int cnd_init(cnd_t *c)
{
    return tsan_rc(pthread_cond_init((pthread_cond_t *)c, NULL));
}

TSAN_API int cnd_signal(cnd_t *c)
{
    return tsan_rc(pthread_cond_signal((pthread_cond_t *)c));
}

TSAN_API int cnd_broadcast(cnd_t *c)
{
    return tsan_rc(pthread_cond_broadcast((pthread_cond_t *)c));
}

TSAN_API int cnd_wait(cnd_t *c, mtx_t *m)
{
    return tsan_rc(pthread_cond_wait((pthread_cond_t *)c, (pthread_mutex_t *)m));
}

TSAN_API int cnd_timedwait(cnd_t *restrict c, mtx_t *restrict m, const struct timespec *restrict ts)
{
    return tsan_rc(pthread_cond_timedwait((pthread_cond_t *)c, (pthread_mutex_t *)m, ts));
}

TSAN_API void cnd_destroy(cnd_t *c)
{
    pthread_cond_destroy((pthread_cond_t *)c);
}

TSAN_API void call_once(once_flag *flag, void (*fn)(void))
{
    pthread_once((pthread_once_t *)flag, fn);
}
#else
typedef int spool_tsan_thrd_unused; /* ISO C: a translation unit is not empty */
#endif
