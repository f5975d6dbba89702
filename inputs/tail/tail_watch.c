/*
 * tail_watch.c: the inotify watcher of the tail input.
 *
 * Watches directories, never single files: a directory watch reports both
 * the entries that appear, move or vanish (-> rescan the globs) and writes
 * to the files inside it (-> that file is dirty), so 1,000 files in one
 * directory cost one watch. Directories are canonicalised (realpath) so
 * that "dir/name" of an event equals the realpath of a tracked file. A
 * watch may carry name filters: then only those entry names trigger a
 * rescan (used for the parent of a literal path component that does not
 * exist yet, e.g. /var/log while /var/log/app is missing).
 *
 * The set of watches is rebuilt by each rescan: begin() marks all unused,
 * add() re-marks, end() removes the rest.
 *
 * Not done here: polling. In poll mode the run loop does not create a
 * watcher and stats files on a timer instead.
 */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <unistd.h>

#include "tail.h"

#define WATCH_MASK                                                                                 \
    (IN_CREATE | IN_MOVED_TO | IN_MOVED_FROM | IN_DELETE | IN_DELETE_SELF | IN_MOVE_SELF |         \
     IN_MODIFY | IN_ONLYDIR)

typedef struct watch_entry {
    int wd;       /* inotify watch descriptor, -1 once gone */
    char *dir;    /* canonical directory path */
    int any;      /* every entry matters */
    char **names; /* else: these entry names matter */
    size_t nnames;
    int used; /* wanted by the current rescan */
} watch_entry;

struct tail_watch {
    int fd;         /* inotify fd */
    watch_entry *e; /* entries */
    size_t n, cap;
    char *evbuf; /* event read buffer */
};

#define EVBUF_SIZE (64 * 1024)

tail_watch *tail_watch_create(int *err)
{
    tail_watch *w = calloc(1, sizeof(*w));
    if (!w) {
        *err = ENOMEM;
        return NULL;
    }
    w->evbuf = malloc(EVBUF_SIZE);
    w->fd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
    if (w->fd < 0 || !w->evbuf) {
        *err = w->fd < 0 ? errno : ENOMEM;
        tail_watch_destroy(w);
        return NULL;
    }
    return w;
}

static void entry_free(watch_entry *e)
{
    free(e->dir);
    for (size_t i = 0; i < e->nnames; i++) {
        free(e->names[i]);
    }
    free(e->names);
}

void tail_watch_destroy(tail_watch *w)
{
    if (!w) {
        return;
    }
    for (size_t i = 0; i < w->n; i++) {
        entry_free(&w->e[i]);
    }
    free(w->e);
    free(w->evbuf);
    if (w->fd >= 0) {
        close(w->fd);
    }
    free(w);
}

int tail_watch_fd(const tail_watch *w)
{
    return w->fd;
}

size_t tail_watch_count(const tail_watch *w)
{
    return w->n;
}

void tail_watch_begin(tail_watch *w)
{
    for (size_t i = 0; i < w->n; i++) {
        w->e[i].used = 0;
        w->e[i].any = 0;
        for (size_t j = 0; j < w->e[i].nnames; j++) {
            free(w->e[i].names[j]);
        }
        w->e[i].nnames = 0;
    }
}

static int entry_add_name(watch_entry *e, const char *name)
{
    for (size_t i = 0; i < e->nnames; i++) {
        if (strcmp(e->names[i], name) == 0) {
            return 0;
        }
    }
    char **n = realloc(e->names, (e->nnames + 1) * sizeof(*n));
    if (!n) {
        return -ENOMEM;
    }
    e->names = n;
    if (!(n[e->nnames] = strdup(name))) {
        return -ENOMEM;
    }
    e->nnames++;
    return 0;
}

int tail_watch_add(tail_watch *w, const char *dir, const char *name_filter)
{
    char real[PATH_MAX];
    if (!realpath(dir, real)) {
        return -errno;
    }
    watch_entry *e = NULL;
    for (size_t i = 0; i < w->n; i++) {
        if (w->e[i].wd >= 0 && strcmp(w->e[i].dir, real) == 0) {
            e = &w->e[i];
            break;
        }
    }
    if (!e) {
        int wd = inotify_add_watch(w->fd, real, WATCH_MASK);
        if (wd < 0) {
            return -errno;
        }
        /* Two paths of one directory share a wd: keep one entry. */
        for (size_t i = 0; i < w->n; i++) {
            if (w->e[i].wd == wd) {
                e = &w->e[i];
                break;
            }
        }
    }
    if (!e) {
        if (w->n == w->cap) {
            size_t cap = w->cap ? w->cap * 2 : 16;
            watch_entry *ne = realloc(w->e, cap * sizeof(*ne));
            if (!ne) {
                return -ENOMEM;
            }
            w->e = ne;
            w->cap = cap;
        }
        e = &w->e[w->n];
        memset(e, 0, sizeof(*e));
        e->dir = strdup(real);
        if (!e->dir) {
            return -ENOMEM;
        }
        e->wd = -1;
        w->n++;
        e->wd = inotify_add_watch(w->fd, real, WATCH_MASK);
        if (e->wd < 0) {
            int r = -errno;
            entry_free(e);
            w->n--;
            return r;
        }
    }
    e->used = 1;
    if (!name_filter) {
        e->any = 1;
        return 0;
    }
    return entry_add_name(e, name_filter);
}

void tail_watch_end(tail_watch *w)
{
    size_t j = 0;
    for (size_t i = 0; i < w->n; i++) {
        if (!w->e[i].used || w->e[i].wd < 0) {
            if (w->e[i].wd >= 0) {
                inotify_rm_watch(w->fd, w->e[i].wd);
            }
            entry_free(&w->e[i]);
            continue;
        }
        w->e[j++] = w->e[i];
    }
    w->n = j;
}

static watch_entry *find_wd(tail_watch *w, int wd)
{
    for (size_t i = 0; i < w->n; i++) {
        if (w->e[i].wd == wd) {
            return &w->e[i];
        }
    }
    return NULL;
}

static int entry_wants(const watch_entry *e, const char *name)
{
    if (e->any) {
        return 1;
    }
    for (size_t i = 0; i < e->nnames; i++) {
        if (strcmp(e->names[i], name) == 0) {
            return 1;
        }
    }
    return 0;
}

int tail_watch_read(tail_watch *w, tail_watch_fn fn, void *arg)
{
    char path[PATH_MAX];
    for (;;) {
        ssize_t n = read(w->fd, w->evbuf, EVBUF_SIZE);
        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            return errno == EAGAIN ? 0 : -errno;
        }
        if (n == 0) {
            return 0;
        }
        for (char *p = w->evbuf; p < w->evbuf + n;) {
            const struct inotify_event *ev = (const struct inotify_event *)p;
            p += sizeof(*ev) + ev->len;
            if (ev->mask & IN_Q_OVERFLOW) {
                fn(arg, TAIL_WATCH_OVERFLOW, NULL, 0);
                continue;
            }
            watch_entry *e = find_wd(w, ev->wd);
            if (!e) {
                continue;
            }
            if (ev->mask & (IN_IGNORED | IN_DELETE_SELF | IN_MOVE_SELF | IN_UNMOUNT)) {
                if (ev->mask & IN_IGNORED) {
                    e->wd = -1; /* the kernel dropped it; the rescan re-adds or forgets */
                }
                fn(arg, TAIL_WATCH_RESCAN, NULL, 0);
                continue;
            }
            const char *name = ev->len ? ev->name : "";
            if (ev->len) {
                snprintf(path, sizeof(path), "%s/%s", strcmp(e->dir, "/") ? e->dir : "", name);
            }
            if ((ev->mask & (IN_MOVED_FROM | IN_MOVED_TO)) && ev->len && !(ev->mask & IN_ISDIR)) {
                fn(arg, (ev->mask & IN_MOVED_FROM) ? TAIL_WATCH_MOVED_FROM : TAIL_WATCH_MOVED_TO,
                   path, ev->cookie);
            }
            if ((ev->mask & (IN_CREATE | IN_MOVED_TO | IN_MOVED_FROM | IN_DELETE)) &&
                entry_wants(e, name)) {
                fn(arg, TAIL_WATCH_RESCAN, NULL, 0);
            }
            if ((ev->mask & IN_MODIFY) && ev->len) {
                fn(arg, TAIL_WATCH_MODIFIED, path, 0);
            }
        }
        if (n < EVBUF_SIZE / 2) {
            return 0;
        }
    }
}
