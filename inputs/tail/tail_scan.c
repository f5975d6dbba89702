/*
 * tail_scan.c: which files the tail input follows, and rotation.
 *
 * A scan expands every `paths` glob (minus `exclude`), and for each regular
 * file found (symlinks followed) looks up its identity (dev, ino):
 *  - known: it is still followed; if it now has another matched name
 *    (renamed within the globs) the `path` header follows the new name;
 *  - new: a file appeared; if its path belonged to another followed file,
 *    that one was rotated away (rename + create, or replaced): it becomes
 *    TAIL_ROTATED, is read to its end first, and is closed when it stops
 *    growing for rotate_wait (at once if deleted). A new file is read from
 *    the beginning, except at the very first start where `read_from`
 *    applies, and except a file with a stored position whose fingerprint
 *    still matches (restart): it resumes there.
 *  - followed files not found are TAIL_ROTATED (renamed out of the globs or
 *    deleted while open).
 * Positions read at start that match no file found are looked up by inode
 * in the directory they were last seen in (a rotated file being finished
 * when spool stopped); if that fails the file is reported gone and its
 * position forgotten.
 *
 * A stored position is trusted only if the file still has the same first
 * bytes and the same bytes before the position; else the file is read from
 * the beginning (warning), and a new file holding what it held (a copy made
 * while spool was stopped) continues from the position. A file renamed away
 * while spool was stopped is followed by the file now at its path; files
 * created after it and rotated away before spool knew them are found by
 * birth time next to it.
 *
 * After a scan: new files are compared with the followed ones (copies,
 * tail_file.c), and truncated files restart (after their copies are known).
 *
 * The scan also rebuilds the inotify watch set and the lookup tables.
 */
#define _GNU_SOURCE /* statx: birth times */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <libgen.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include "tail.h"

typedef struct tail_restore {
    char *source;
    tail_pos pos;
    int claimed;
    int rejected;    /* claimed, but its file no longer holds what the position covers */
    tail_file *file; /* the file restored at this position (initial scan only) */
} tail_restore;

/* ---- a tiny open-addressing table: 64-bit hash -> file ---- */

static uint64_t mix64(uint64_t x)
{
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdULL;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ULL;
    x ^= x >> 33;
    return x;
}

static uint64_t id_hash(uint64_t dev, uint64_t ino)
{
    return mix64(dev * 0x9e3779b97f4a7c15ULL ^ ino);
}

static uint64_t str_hash(const char *s)
{
    return mix64(tail_fnv1a((const uint8_t *)s, strlen(s)));
}

static int map_put(tail_map *m, uint64_t h, tail_file *f)
{
    if ((m->n + 1) * 2 > m->cap) {
        size_t cap = m->cap ? m->cap * 2 : 256;
        tail_map_slot *s = calloc(cap, sizeof(*s));
        if (!s) {
            return -ENOMEM;
        }
        for (size_t i = 0; i < m->cap; i++) {
            if (m->s[i].f) {
                size_t j = m->s[i].h & (cap - 1);
                while (s[j].f) {
                    j = (j + 1) & (cap - 1);
                }
                s[j] = m->s[i];
            }
        }
        free(m->s);
        m->s = s;
        m->cap = cap;
    }
    size_t j = h & (m->cap - 1);
    while (m->s[j].f) {
        j = (j + 1) & (m->cap - 1);
    }
    m->s[j].h = h;
    m->s[j].f = f;
    m->n++;
    return 0;
}

static void map_clear(tail_map *m)
{
    if (m->s) {
        memset(m->s, 0, m->cap * sizeof(*m->s));
    }
    m->n = 0;
}

void tail_scan_maps_free(tail_rt *rt)
{
    free(rt->by_id.s);
    free(rt->by_real.s);
    memset(&rt->by_id, 0, sizeof(rt->by_id));
    memset(&rt->by_real, 0, sizeof(rt->by_real));
}

static tail_file *find_id(tail_rt *rt, uint64_t dev, uint64_t ino)
{
    tail_map *m = &rt->by_id;
    if (!m->cap) {
        return NULL;
    }
    uint64_t h = id_hash(dev, ino);
    for (size_t j = h & (m->cap - 1); m->s[j].f; j = (j + 1) & (m->cap - 1)) {
        if (m->s[j].h == h && m->s[j].f->dev == dev && m->s[j].f->ino == ino) {
            return m->s[j].f;
        }
    }
    return NULL;
}

void tail_scan_index(tail_rt *rt)
{
    map_clear(&rt->by_id);
    map_clear(&rt->by_real);
    for (size_t i = 0; i < rt->nfiles; i++) {
        tail_file *f = rt->files[i];
        map_put(&rt->by_id, id_hash(f->dev, f->ino), f);
        if (f->state == TAIL_ACTIVE) {
            /* A rotated file's old name may be its successor's; rotated
             * files are read every cycle anyway. */
            map_put(&rt->by_real, str_hash(f->real), f);
        }
    }
    rt->index_stale = 0;
}

tail_file *tail_scan_by_real(tail_rt *rt, const char *real)
{
    if (rt->index_stale) {
        tail_scan_index(rt);
    }
    tail_map *m = &rt->by_real;
    if (!m->cap) {
        return NULL;
    }
    uint64_t h = str_hash(real);
    for (size_t j = h & (m->cap - 1); m->s[j].f; j = (j + 1) & (m->cap - 1)) {
        if (m->s[j].h == h && strcmp(m->s[j].f->real, real) == 0) {
            return m->s[j].f;
        }
    }
    return NULL;
}

/* ---- positions read at start ---- */

static void restore_one(void *arg, const char *source, const void *blob, size_t len)
{
    tail_rt *rt = arg;
    if (strcmp(source, TAIL_MARKER_SOURCE) == 0) {
        rt->had_marker = 1;
        return;
    }
    if (strncmp(source, "file:", 5) != 0) {
        return;
    }
    tail_restore *nr = realloc(rt->restore, (rt->nrestore + 1) * sizeof(*nr));
    if (!nr) {
        return;
    }
    rt->restore = nr;
    tail_restore *r = &nr[rt->nrestore];
    memset(r, 0, sizeof(*r));
    if (tail_pos_decode(blob, len, &r->pos) < 0) {
        spool_log_warn(rt->ins, "ignoring an unreadable position for %s", source);
        return;
    }
    if (!(r->source = strdup(source))) {
        return;
    }
    rt->nrestore++;
}

int tail_scan_restore(tail_rt *rt)
{
    int r = spool_input_foreach_position(rt->ins, restore_one, rt);
    if (r < 0 && r != -ENOENT) {
        return r;
    }
    rt->first_start = !rt->had_marker && rt->nrestore == 0;
    return 0;
}

void tail_scan_restore_free(tail_rt *rt)
{
    for (size_t i = 0; i < rt->nrestore; i++) {
        free(rt->restore[i].source);
    }
    free(rt->restore);
    rt->restore = NULL;
    rt->nrestore = 0;
}

static tail_restore *restore_find(tail_rt *rt, uint64_t dev, uint64_t ino)
{
    for (size_t i = 0; i < rt->nrestore; i++) {
        if (rt->restore[i].pos.dev == dev && rt->restore[i].pos.ino == ino) {
            return &rt->restore[i];
        }
    }
    return NULL;
}

/* 1 if fd holds what pos covers: the same beginning, and the same bytes
 * before the offset (when the position has them). */
static int holds_position(int fd, const tail_pos *pos, int64_t size)
{
    uint64_t h = 0;
    uint32_t len = 0;
    if (tail_fingerprint(fd, pos->fp_len, &h, &len) < 0 || len != pos->fp_len ||
        h != pos->fp_hash) {
        return 0;
    }
    if (tail_compressed_fd(fd)) {
        return 1; /* an offset in its decompressed stream: identity is all there is */
    }
    if (pos->offset > size) {
        return 0;
    }
    if (pos->bk_len == 0) {
        return 1; /* a version 1 position: nothing more to compare */
    }
    return tail_back_hash(fd, pos->offset, &h, &len) == 0 && len == pos->bk_len &&
           h == pos->bk_hash;
}

/* Where a file found at start begins, from its stored position if any. */
static int64_t start_offset(tail_rt *rt, const char *path, const struct stat *st,
                            tail_restore **restored)
{
    tail_restore *rs =
        rt->nrestore ? restore_find(rt, (uint64_t)st->st_dev, (uint64_t)st->st_ino) : NULL;
    if (rs) {
        rs->claimed = 1;
        int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
        uint64_t h = 0;
        uint32_t len = 0;
        int same = fd >= 0 && tail_fingerprint(fd, rs->pos.fp_len, &h, &len) == 0 &&
                   len == rs->pos.fp_len && h == rs->pos.fp_hash;
        int holds = same && holds_position(fd, &rs->pos, (int64_t)st->st_size);
        if (fd >= 0) {
            close(fd);
        }
        if (holds) {
            *restored = rs;
            return rs->pos.offset;
        }
        rs->rejected = 1;
        if (!same) {
            spool_log_warn(rt->ins,
                           "%s: its beginning is not what was read before (rewritten "
                           "while spool was stopped, or the inode reused by another file); "
                           "reading it from the beginning",
                           path);
        } else if (rs->pos.offset > (int64_t)st->st_size) {
            spool_log_warn(rt->ins,
                           "%s: shorter than its position (%" PRId64 "): truncated "
                           "while spool was stopped; reading it from the beginning",
                           path, rs->pos.offset);
        } else {
            spool_log_warn(rt->ins,
                           "%s: the bytes before its position (%" PRId64 ") are not "
                           "the ones read there: truncated and rewritten while spool was "
                           "stopped; reading it from the beginning",
                           path, rs->pos.offset);
        }
        return 0;
    }
    if (rt->initial && rt->first_start && rt->ctx->read_from == TAIL_FROM_END) {
        return (int64_t)st->st_size;
    }
    return 0;
}

/* Initial scan: f (new, read from 0) holds what a file truncated while spool
 * was stopped held at its position (a copytruncate copy): it continues from
 * there, before that file's new content. 1 if so. */
static int link_restored_copy(tail_rt *rt, tail_file *f)
{
    struct stat st;
    if (f->fd < 0 || fstat(f->fd, &st) < 0) {
        return 0;
    }
    for (size_t i = 0; i < rt->nrestore; i++) {
        tail_restore *rs = &rt->restore[i];
        if (rs->rejected != 1 || rs->pos.offset <= 0 || rs->pos.bk_len == 0 ||
            !holds_position(f->fd, &rs->pos, (int64_t)st.st_size)) {
            continue;
        }
        rs->rejected = 2;
        f->read_off = rs->pos.offset;
        tail_split_reset(&f->sp, rs->pos.offset);
        lseek(f->fd, rs->pos.offset, SEEK_SET);
        f->bk_hash = rs->pos.bk_hash;
        f->bk_len = rs->pos.bk_len;
        f->bk_off = rs->pos.offset;
        f->prio = 1;
        tail_file *orig = find_id(rt, rs->pos.dev, rs->pos.ino);
        if (orig && orig != f) {
            orig->after = f;
            orig->after_since_ms = rt->now_ms;
        }
        spool_log_info(rt->ins,
                       "%s: a copy of %s as it was when spool stopped "
                       "(copytruncate); continuing it from offset %" PRId64,
                       f->path, rs->pos.path, rs->pos.offset);
        return 1;
    }
    return 0;
}

/* Finds the entry of dir whose inode is (dev, ino); 1 and fills out if found. */
static int find_in_dir(const char *dir, uint64_t dev, uint64_t ino, char *out, size_t cap)
{
    DIR *d = opendir(dir);
    if (!d) {
        return 0;
    }
    struct dirent *de;
    int found = 0;
    while (!found && (de = readdir(d)) != NULL) {
        if ((uint64_t)de->d_ino != ino) {
            continue;
        }
        snprintf(out, cap, "%s/%s", dir, de->d_name);
        struct stat st;
        found = stat(out, &st) == 0 && (uint64_t)st.st_dev == dev && (uint64_t)st.st_ino == ino &&
                S_ISREG(st.st_mode);
    }
    closedir(d);
    return found;
}

/* A file's birth time in ns (statx), 0 if the file system has none. */
static int64_t birth_ns(int fd)
{
    struct statx sx;
    if (fd < 0 || statx(fd, "", AT_EMPTY_PATH, STATX_BTIME, &sx) != 0 ||
        !(sx.stx_mask & STATX_BTIME)) {
        return 0;
    }
    return (int64_t)sx.stx_btime.tv_sec * 1000000000 + sx.stx_btime.tv_nsec;
}

/* Opens a rotated file found at `path` by inode; it becomes TAIL_ROTATED. */
static tail_file *adopt_rotated(tail_rt *rt, const char *path, const char *shown, int64_t offset)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        return NULL;
    }
    struct stat st;
    if (fstat(fd, &st) < 0) {
        close(fd);
        return NULL;
    }
    tail_file *f = tail_file_new(rt, shown, path, &st);
    if (!f) {
        close(fd);
        return NULL;
    }
    f->fd = fd;
    rt->nopen++;
    f->born_ns = birth_ns(fd);
    f->state = TAIL_ROTATED;
    f->read_off = offset;
    tail_split_reset(&f->sp, offset);
    tail_fingerprint(fd, TAIL_FP_MAX, &f->fp_hash, &f->fp_len);
    lseek(fd, offset, SEEK_SET);
    f->dirty = 1;
    rt->index_stale = 1;
    return f;
}

/* The file f follows: of the other files that had f's matched path, the
 * one born last before f (without birth times: the one found last). */
static tail_file *latest_before(tail_rt *rt, const char *path, const tail_file *f)
{
    tail_file *best = NULL;
    for (size_t j = 0; j < rt->nfiles; j++) {
        tail_file *g = rt->files[j];
        if (g == f || strcmp(g->path, path) != 0 ||
            (f->born_ns && g->born_ns && g->born_ns >= f->born_ns)) {
            continue;
        }
        if (!best || g->born_ns >= best->born_ns) {
            best = g;
        }
    }
    return best;
}

static void set_after(tail_rt *rt, tail_file *f, tail_file *x)
{
    f->after = x;
    f->after_since_ms = rt->now_ms;
}

/* x was renamed away from its matched path: the files that had that path
 * after it (born later; without birth times: the active one) come after
 * it, unless they already follow a younger one. */
static void set_successor(tail_rt *rt, tail_file *x)
{
    for (size_t j = 0; j < rt->nfiles; j++) {
        tail_file *g = rt->files[j];
        int born_known = g->born_ns && x->born_ns;
        if (g == x || strcmp(g->path, x->path) != 0 ||
            (born_known ? g->born_ns <= x->born_ns : g->state != TAIL_ACTIVE)) {
            continue;
        }
        if (!g->after || g->after->born_ns <= x->born_ns) {
            set_after(rt, g, x);
        }
    }
}

static int matched(const tail_rt *rt, const char *path);

typedef struct tail_unknown {
    char *path;
    struct statx_timestamp btime;
} tail_unknown;

static int btime_cmp(const struct statx_timestamp *a, const struct statx_timestamp *b)
{
    if (a->tv_sec != b->tv_sec) {
        return a->tv_sec < b->tv_sec ? -1 : 1;
    }
    return a->tv_nsec < b->tv_nsec ? -1 : a->tv_nsec > b->tv_nsec;
}

static int unknown_cmp(const void *a, const void *b)
{
    return btime_cmp(&((const tail_unknown *)a)->btime, &((const tail_unknown *)b)->btime);
}

#define TAIL_MAX_UNKNOWN 256

/*
 * x was renamed away from its matched path while spool was stopped (create
 * rotation). Files next to it named like its matched path (app.log.1,
 * app.log-2024...) that were created after it (birth time), that no
 * position names and that the globs do not match were created at the
 * matched path and rotated away before spool ever stored their position
 * (spool was not running, or killed before): they are read from the
 * beginning, oldest first, after x and before the file now at the path.
 * Without birth times (file systems without statx btime) nothing is done.
 */
static void adopt_unknown_rotations(tail_rt *rt, tail_file *x)
{
    struct statx sx;
    const char *slash_p = strrchr(x->path, '/');
    if (x->fd < 0 || !slash_p || strcmp(x->real, x->path) == 0 ||
        statx(x->fd, "", AT_EMPTY_PATH, STATX_BTIME, &sx) != 0 || !(sx.stx_mask & STATX_BTIME)) {
        return;
    }
    struct statx_timestamp born = sx.stx_btime;
    const char *base = slash_p + 1;
    size_t bl = strlen(base);
    char dir[PATH_MAX], path[PATH_MAX];
    snprintf(dir, sizeof(dir), "%s", x->real);
    char *slash = strrchr(dir, '/');
    if (!slash || slash == dir) {
        return;
    }
    *slash = '\0';
    DIR *d = opendir(dir);
    if (!d) {
        return;
    }
    if (rt->index_stale) {
        tail_scan_index(rt);
    }
    tail_unknown *u = NULL;
    size_t nu = 0;
    struct dirent *de;
    while (nu < TAIL_MAX_UNKNOWN && (de = readdir(d)) != NULL) {
        size_t dl = strlen(dir), nl = strlen(de->d_name);
        if (strncmp(de->d_name, base, bl) != 0 || de->d_name[bl] == '\0' ||
            dl + nl + 2 > sizeof(path)) {
            continue;
        }
        memcpy(path, dir, dl);
        path[dl] = '/';
        memcpy(path + dl + 1, de->d_name, nl + 1);
        struct statx st;
        if (statx(AT_FDCWD, path, 0, STATX_BTIME | STATX_TYPE | STATX_INO, &st) != 0 ||
            !S_ISREG(st.stx_mode) || !(st.stx_mask & STATX_BTIME) ||
            btime_cmp(&st.stx_btime, &born) <= 0 || matched(rt, path) ||
            find_id(rt, makedev(st.stx_dev_major, st.stx_dev_minor), st.stx_ino)) {
            continue;
        }
        tail_unknown *nu_arr = realloc(u, (nu + 1) * sizeof(*u));
        char *p = strdup(path);
        if (!nu_arr || !p) {
            free(p);
            if (nu_arr) {
                u = nu_arr;
            }
            break;
        }
        u = nu_arr;
        u[nu].path = p;
        u[nu].btime = st.stx_btime;
        nu++;
    }
    closedir(d);
    if (nu > 1) {
        qsort(u, nu, sizeof(*u), unknown_cmp);
    }
    tail_file *prev = x;
    for (size_t i = 0; i < nu; i++) {
        tail_file *f = adopt_rotated(rt, u[i].path, x->path, 0);
        if (f) {
            f->last_grow_ms = rt->now_ms;
            set_after(rt, f, prev);
            tail_file_touch(rt, f);
            map_put(&rt->by_id, id_hash(f->dev, f->ino), f);
            spool_log_warn(rt->ins,
                           "%s: created at %s and rotated away while spool did not "
                           "follow it (no stored position); reading it from the beginning",
                           u[i].path, x->path);
            prev = f;
        }
        free(u[i].path);
    }
    free(u);
    if (prev != x) {
        set_successor(rt, prev);
    }
}

void tail_scan_restore_leftovers(tail_rt *rt)
{
    char dir[PATH_MAX], found[PATH_MAX];
    tail_file **anchors = calloc(rt->nrestore ? rt->nrestore : 1, sizeof(*anchors));
    size_t nanchors = 0;
    for (size_t i = 0; i < rt->nrestore; i++) {
        tail_restore *rs = &rt->restore[i];
        if (rs->claimed) {
            continue;
        }
        snprintf(dir, sizeof(dir), "%s", rs->pos.path);
        char *dn = dirname(dir);
        if (find_in_dir(dn, rs->pos.dev, rs->pos.ino, found, sizeof(found))) {
            FILE *fp = fopen(found, "rb");
            uint64_t h = 0;
            uint32_t len = 0;
            int ok = fp && tail_fingerprint(fileno(fp), rs->pos.fp_len, &h, &len) == 0 &&
                     len == rs->pos.fp_len && h == rs->pos.fp_hash;
            if (fp) {
                fclose(fp);
            }
            if (ok && rs->pos.bk_len > 0) {
                int fd = open(found, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
                struct stat fst;
                ok = fd >= 0 && fstat(fd, &fst) == 0 &&
                     holds_position(fd, &rs->pos, (int64_t)fst.st_size);
                if (fd >= 0) {
                    close(fd);
                }
            }
            tail_file *x = ok ? adopt_rotated(rt, found, rs->pos.path, rs->pos.offset) : NULL;
            if (x) {
                x->bk_hash = rs->pos.bk_hash;
                x->bk_len = rs->pos.bk_len;
                x->bk_off = rs->pos.bk_len ? rs->pos.offset : -1;
                set_successor(rt, x);
                map_put(&rt->by_id, id_hash(x->dev, x->ino), x);
                if (anchors) {
                    anchors[nanchors++] = x;
                }
                spool_log_info(rt->ins,
                               "%s: rotated to %s (not finished when spool stopped); "
                               "finishing it from offset %" PRId64,
                               rs->pos.path, found, rs->pos.offset);
                continue;
            }
        }
        spool_log_warn(rt->ins,
                       "%s: removed while spool was stopped (position %" PRId64 "); forgetting it",
                       rs->pos.path, rs->pos.offset);
        tail_batch_forget(rt, rs->source);
    }
    /* Renamed files in birth order (they were adopted in position order). */
    for (size_t i = 0; i < nanchors; i++) {
        tail_file *pred = latest_before(rt, anchors[i]->path, anchors[i]);
        if (pred && pred->state == TAIL_ROTATED) {
            set_after(rt, anchors[i], pred);
        }
        set_successor(rt, anchors[i]);
    }
    for (size_t i = 0; i < nanchors; i++) {
        adopt_unknown_rotations(rt, anchors[i]);
    }
    free(anchors);
    tail_scan_restore_free(rt);
}

/* ---- the scan ---- */

static int excluded(const tail_rt *rt, const char *path)
{
    for (size_t i = 0; i < rt->ctx->exclude.count; i++) {
        if (tail_glob_match(rt->ctx->exclude.items[i], path)) {
            return 1;
        }
    }
    return 0;
}

static int same_file_at(const char *path, const tail_file *f)
{
    struct stat st;
    return stat(path, &st) == 0 && (uint64_t)st.st_dev == f->dev && (uint64_t)st.st_ino == f->ino;
}

static void file_set_path(tail_file *f, const char *path)
{
    char *p = strdup(path);
    if (!p) {
        return;
    }
    free(f->path);
    f->path = p;
    f->hdrs[1].value = (const uint8_t *)p;
    f->hdrs[1].value_len = (int32_t)strlen(p);
}

/* realpath(path) into out (PATH_MAX bytes), or NULL. A file that is not a
 * symlink resolves to its directory's real path and its name, and the
 * directory's is reused while a scan stays in it (one lstat per file, not a
 * readlink per path component: a rescan of 10,000 files spent most of its
 * time in realpath). Each scan resolves its directories afresh. */
static char *real_of(tail_rt *rt, const char *path, char *out)
{
    const char *slash = strrchr(path, '/');
    struct stat st;
    size_t dl = slash ? (size_t)(slash - path) : 0;
    if (dl == 0 || dl >= sizeof(rt->rdir_key) || !slash[1] || strcmp(slash + 1, ".") == 0 ||
        strcmp(slash + 1, "..") == 0 || lstat(path, &st) != 0 || S_ISLNK(st.st_mode)) {
        return realpath(path, out);
    }
    if (!rt->rdir_ok || strlen(rt->rdir_key) != dl || memcmp(rt->rdir_key, path, dl) != 0) {
        rt->rdir_ok = 0;
        memcpy(rt->rdir_key, path, dl);
        rt->rdir_key[dl] = '\0';
        if (!realpath(rt->rdir_key, rt->rdir_real)) {
            return realpath(path, out);
        }
        rt->rdir_ok = 1;
    }
    int n = snprintf(out, PATH_MAX, "%s/%s", strcmp(rt->rdir_real, "/") ? rt->rdir_real : "",
                     slash + 1);
    return n > 0 && n < PATH_MAX ? out : realpath(path, out);
}

static void set_real(tail_rt *rt, tail_file *f, const char *path)
{
    char real[PATH_MAX];
    if (!real_of(rt, path, real) || strcmp(real, f->real) == 0) {
        return;
    }
    char *p = strdup(real);
    if (p) {
        free(f->real);
        f->real = p;
        rt->index_stale = 1;
    }
}

static void make_rotated(tail_rt *rt, tail_file *f, const char *why)
{
    if (f->state == TAIL_ROTATED) {
        return;
    }
    if (f->fd < 0) {
        /* Closed (idle, or over max_open_files): find it by inode next to
         * its old name, where rename-based rotation leaves it. */
        char dir[PATH_MAX], found[PATH_MAX];
        snprintf(dir, sizeof(dir), "%s", f->real);
        if (find_in_dir(dirname(dir), f->dev, f->ino, found, sizeof(found))) {
            int fd = open(found, O_RDONLY | O_CLOEXEC);
            if (fd >= 0) {
                f->fd = fd;
                rt->nopen++;
                lseek(fd, f->read_off, SEEK_SET);
            }
        }
        if (f->fd < 0) {
            spool_log_warn(rt->ins,
                           "%s: %s while closed and not found again; lines written "
                           "after offset %" PRId64 " are not read",
                           f->path, why, f->read_off);
        }
    }
    f->state = TAIL_ROTATED;
    f->dirty = 1;
    f->last_grow_ms = rt->now_ms;
    rt->rotations++;
    if (rt->c_rot) {
        spool_counter_add(rt->c_rot, 1);
    }
    spool_log_info(rt->ins, "%s: %s; finishing it (%s)", f->path, why, f->source);
}

static void on_dir(void *arg, const char *dir, const char *name_filter)
{
    tail_rt *rt = arg;
    if (!rt->watch) {
        return;
    }
    int r = tail_watch_add(rt->watch, dir, name_filter);
    if (r < 0 && r != -ENOENT && !rt->watch_warned) {
        rt->watch_warned = 1;
        spool_log_warn(rt->ins, "cannot watch %s: %s; relying on rescans every %" PRId64 " ms", dir,
                       strerror(-r), rt->ctx->poll_interval_ms);
        rt->watch_degraded = 1;
    }
}

static void on_file(void *arg, const char *path, const struct stat *st)
{
    tail_rt *rt = arg;
    if (excluded(rt, path)) {
        return;
    }
    tail_file *f = find_id(rt, (uint64_t)st->st_dev, (uint64_t)st->st_ino);
    if (f) {
        if (f->seen) {
            return; /* another name of a file already found in this scan */
        }
        f->seen = 1;
        if (strcmp(f->path, path) != 0 && !same_file_at(f->path, f)) {
            if (!f->renamed_from) {
                f->renamed_from = strdup(f->path);
            }
            file_set_path(f, path);
        }
        if (strcmp(f->path, path) == 0) {
            set_real(rt, f, path);
        }
        if (f->state == TAIL_ROTATED) {
            f->state = TAIL_ACTIVE; /* renamed back under the globs */
        }
        if ((int64_t)st->st_size != f->read_off) {
            f->dirty = 1;
        }
        return;
    }
    /* A new identity. Whoever had this path was rotated away or replaced:
     * its lines come first. */
    for (size_t i = 0; i < rt->nfiles; i++) {
        tail_file *o = rt->files[i];
        if (o->state == TAIL_ACTIVE && strcmp(o->path, path) == 0) {
            make_rotated(rt, o, "replaced by a new file at its path");
        }
    }
    char real[PATH_MAX];
    if (!real_of(rt, path, real)) {
        snprintf(real, sizeof(real), "%s", path);
    }
    f = tail_file_new(rt, path, real, st);
    if (!f) {
        spool_log_error(rt->ins, "%s: out of memory", path);
        return;
    }
    tail_restore *restored = NULL;
    int64_t off = start_offset(rt, path, st, &restored);
    f->read_off = off;
    tail_split_reset(&f->sp, off);
    if (restored) {
        restored->file = f;
        f->bk_hash = restored->pos.bk_hash;
        f->bk_len = restored->pos.bk_len;
        f->bk_off = restored->pos.bk_len ? off : -1;
    }
    f->seen = 1;
    f->dirty = 1;
    f->fresh = 1;
    map_put(&rt->by_id, id_hash(f->dev, f->ino), f);
    map_put(&rt->by_real, str_hash(f->real), f);
    /* Opened at once: if it is rotated away before it is read, the fd still
     * reaches it. */
    tail_file_open(rt, f);
    f->born_ns = birth_ns(f->fd);
    tail_file *pred = latest_before(rt, path, f);
    if (pred) {
        set_after(rt, f, pred); /* the files that had its path before: their lines first */
    }
    if (!restored) {
        /* Its position is stored at once, before any data comes: if spool
         * dies and the file is rotated before the restart, the restart
         * still knows it and finds it by inode. */
        tail_file_touch(rt, f);
    }
    /* Read from the beginning: it may be a copy of a file already read
     * (copytruncate); looked at before its first read, all files known. */
    f->copy_check = off == 0;
    spool_log_debug(rt->ins, "%s: following (%s) from offset %" PRId64 "%s", path, f->source, off,
                    restored ? " (stored position)" : "");
    /* Watch the real directory too (a symlink's target elsewhere). */
    if (rt->watch) {
        char *slash = strrchr(real, '/');
        if (slash && slash != real) {
            *slash = '\0';
            on_dir(rt, real, "\x01"); /* modifications only: no name triggers a rescan */
        }
    }
}

/* After a scan: copies of followed files (copytruncate), the order between
 * a file and the one renamed away from its path, truncated files restarted
 * (after their copies were found). */
static void scan_links(tail_rt *rt)
{
    if (rt->index_stale) {
        tail_scan_index(rt);
    }
    for (size_t i = 0; rt->initial && i < rt->nfiles; i++) {
        tail_file *f = rt->files[i];
        if (f->copy_check && link_restored_copy(rt, f)) {
            f->copy_check = 0;
            tail_file_touch(rt, f); /* continued from its original's position */
        }
    }
    for (size_t i = 0; i < rt->nfiles; i++) {
        tail_file *f = rt->files[i];
        if (f->fresh && !f->after) {
            for (size_t j = 0; j < rt->nfiles; j++) {
                tail_file *x = rt->files[j];
                if (x != f && x->renamed_from && strcmp(x->renamed_from, f->path) == 0) {
                    f->after = x; /* renamed within the globs (app.log -> app.log.1) */
                    f->after_since_ms = rt->now_ms;
                }
            }
        }
    }
    if (rt->initial) {
        /* A file renamed while spool was stopped: the one now at its old path
         * comes after it. */
        for (size_t i = 0; i < rt->nrestore; i++) {
            tail_restore *rs = &rt->restore[i];
            if (!rs->file || strcmp(rs->pos.path, rs->file->path) == 0) {
                continue;
            }
            for (size_t j = 0; j < rt->nfiles; j++) {
                tail_file *g = rt->files[j];
                if (g != rs->file && !g->after && strcmp(g->path, rs->pos.path) == 0) {
                    g->after = rs->file;
                    g->after_since_ms = rt->now_ms;
                }
            }
        }
    }
    int undecided = 0;
    for (int plain = 1; plain >= 0; plain--) {
        /* Before truncated files restart: a copy continues what they held.
         * Plain files first: logrotate's compress makes the .gz of a plain
         * copy, which continues (it can be read while the .gz is written);
         * the .gz, found in the same scan, is then a copy of that copy. */
        for (size_t i = 0; i < rt->nfiles; i++) {
            tail_file *f = rt->files[i];
            if (!f->copy_check) {
                continue;
            }
            int compressed = f->kind == TAIL_KIND_UNKNOWN ? f->fd >= 0 && tail_compressed_fd(f->fd)
                                                          : f->kind != TAIL_KIND_TEXT;
            if (compressed != plain) {
                undecided |= tail_file_check_copy(rt, f) < 0;
            }
        }
    }
    for (size_t i = 0; i < rt->nfiles; i++) {
        tail_file *f = rt->files[i];
        f->fresh = 0;
        free(f->renamed_from);
        f->renamed_from = NULL;
        if (!f->trunc_pending) {
            continue;
        }
        if (undecided && rt->now_ms - f->trunc_ms < rt->ctx->rotate_wait_ms) {
            /* A compressed file is being written: it may be this one's copy,
             * which only its old beginning and position tell. Look again. */
            rt->need_rescan = 1;
        } else if (tail_file_restart_pending(rt, f) < 0) {
            rt->need_rescan = 1; /* could not queue its last line: again later */
        }
    }
}

void tail_scan(tail_rt *rt)
{
    if (rt->index_stale) {
        tail_scan_index(rt);
    }
    for (size_t i = 0; i < rt->nfiles; i++) {
        rt->files[i]->seen = 0;
    }
    rt->rdir_ok = 0; /* directories may have been replaced since the last scan */
    if (rt->watch) {
        tail_watch_begin(rt->watch);
    }
    for (size_t i = 0; i < rt->ctx->paths.count; i++) {
        tail_glob_expand(rt->ctx->paths.items[i], on_file, on_dir, rt);
    }
    /* The directories of files being finished stay watched (their writes). */
    for (size_t i = 0; i < rt->nfiles; i++) {
        tail_file *f = rt->files[i];
        if (f->state == TAIL_ACTIVE && !f->seen) {
            struct stat st;
            int gone = f->fd >= 0 && fstat(f->fd, &st) == 0 && st.st_nlink == 0;
            make_rotated(rt, f, gone ? "deleted" : "renamed or no longer matched");
        }
        if (rt->watch && f->state == TAIL_ROTATED) {
            char dir[PATH_MAX];
            snprintf(dir, sizeof(dir), "%s", f->real);
            on_dir(rt, dirname(dir), "\x01");
        }
    }
    if (rt->watch) {
        tail_watch_end(rt->watch);
    }
    rt->rdir_ok = 0; /* outside a scan, paths resolve in full */
    rt->index_stale = 1;
    scan_links(rt);
}

/* ---- renames seen by inotify ---- */

typedef struct tail_move {
    uint32_t cookie;
    char *shown; /* the matched path the renamed file had */
} tail_move;

#define TAIL_MAX_MOVES 256

static int matched(const tail_rt *rt, const char *path)
{
    for (size_t i = 0; i < rt->ctx->paths.count; i++) {
        if (tail_glob_match(rt->ctx->paths.items[i], path)) {
            return !excluded(rt, path);
        }
    }
    return 0;
}

void tail_scan_moved_from(tail_rt *rt, const char *path, uint32_t cookie)
{
    const char *shown = NULL;
    for (size_t i = 0; i < rt->nmoved && !shown; i++) {
        if (strcmp(rt->moved[i], path) == 0) {
            shown = rt->moved_shown[i]; /* renamed again (rotation chains) */
        }
    }
    if (!shown && !matched(rt, path)) {
        return;
    }
    if (rt->nmoves == TAIL_MAX_MOVES) {
        free(rt->moves[0].shown);
        memmove(rt->moves, rt->moves + 1, (rt->nmoves - 1) * sizeof(*rt->moves));
        rt->nmoves--;
    }
    tail_move *nm = realloc(rt->moves, (rt->nmoves + 1) * sizeof(*nm));
    if (!nm) {
        return;
    }
    rt->moves = nm;
    nm[rt->nmoves].cookie = cookie;
    nm[rt->nmoves].shown = strdup(shown ? shown : path);
    if (nm[rt->nmoves].shown) {
        rt->nmoves++;
    }
}

void tail_scan_moved_to(tail_rt *rt, const char *path, uint32_t cookie)
{
    for (size_t i = 0; i < rt->nmoves; i++) {
        if (rt->moves[i].cookie != cookie) {
            continue;
        }
        char *shown = rt->moves[i].shown;
        memmove(rt->moves + i, rt->moves + i + 1, (rt->nmoves - i - 1) * sizeof(*rt->moves));
        rt->nmoves--;
        char **a = realloc(rt->moved, (rt->nmoved + 1) * sizeof(*a));
        if (a) {
            rt->moved = a;
        }
        char **b = realloc(rt->moved_shown, (rt->nmoved + 1) * sizeof(*b));
        if (b) {
            rt->moved_shown = b;
        }
        char *p = strdup(path);
        if (!a || !b || !p) {
            free(p);
            free(shown);
            return;
        }
        rt->moved[rt->nmoved] = p;
        rt->moved_shown[rt->nmoved] = shown;
        rt->nmoved++;
        return;
    }
}

void tail_scan_adopt_moved(tail_rt *rt)
{
    if (rt->nmoved == 0) {
        return;
    }
    if (rt->index_stale) {
        tail_scan_index(rt);
    }
    /* Newest names last: a chain's last element is where the file is now. */
    for (size_t i = 0; i < rt->nmoved; i++) {
        struct stat st;
        if (stat(rt->moved[i], &st) != 0 || !S_ISREG(st.st_mode) ||
            find_id(rt, (uint64_t)st.st_dev, (uint64_t)st.st_ino) || matched(rt, rt->moved[i])) {
            continue; /* gone, known, or still under the globs (the scan takes it) */
        }
        tail_file *f = adopt_rotated(rt, rt->moved[i], rt->moved_shown[i], 0);
        if (f) {
            f->last_grow_ms = rt->now_ms;
            tail_file_touch(rt, f);
            tail_file *pred = latest_before(rt, f->path, f);
            if (pred) {
                set_after(rt, f, pred);
            }
            set_successor(rt, f);
            map_put(&rt->by_id, id_hash(f->dev, f->ino), f);
            spool_log_info(rt->ins, "%s: created and rotated to %s between two scans; reading it",
                           rt->moved_shown[i], rt->moved[i]);
        }
    }
    for (size_t i = 0; i < rt->nmoved; i++) {
        free(rt->moved[i]);
        free(rt->moved_shown[i]);
    }
    rt->nmoved = 0;
}

void tail_scan_moves_free(tail_rt *rt)
{
    for (size_t i = 0; i < rt->nmoves; i++) {
        free(rt->moves[i].shown);
    }
    free(rt->moves);
    rt->moves = NULL;
    rt->nmoves = 0;
    rt->nmoved = 0; /* adopt_moved freed the strings; only arrays remain */
    free(rt->moved);
    free(rt->moved_shown);
    rt->moved = NULL;
    rt->moved_shown = NULL;
}
