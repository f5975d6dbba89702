/*
 * tail_glob.c: glob patterns over paths, for `paths` and `exclude`.
 *
 * A pattern is split at '/' into components. Inside a component, `*`, `?`
 * and `[...]` work as in the shell (fnmatch(3) with FNM_PERIOD, so `*` does
 * not match a leading dot); a component that is exactly `**` matches zero or
 * more whole directories. Expansion starts at the longest literal prefix of
 * the pattern, reads only the directories that can hold matches, and reports
 * each of them (the watcher watches exactly those); if the literal prefix
 * does not exist yet, its nearest existing ancestor is reported with the one
 * entry name whose creation matters.
 *
 * Limits: `**` does not follow symlinked directories (no loops); recursion
 * depth is bounded at 64 directories.
 */
#include <dirent.h>
#include <errno.h>
#include <fnmatch.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "tail.h"

#define GLOB_MAX_DEPTH 64
#define GLOB_MAX_COMPONENTS 128

int tail_glob_has_magic(const char *s)
{
    return strpbrk(s, "*?[") != NULL;
}

/* Splits a copy of path into components (no empty ones). Returns count or -1. */
static int split_components(char *s, char **comp, int max)
{
    int n = 0;
    char *save = NULL;
    for (char *t = strtok_r(s, "/", &save); t; t = strtok_r(NULL, "/", &save)) {
        if (n == max) {
            return -1;
        }
        comp[n++] = t;
    }
    return n;
}

static int match_components(char **pc, int np, char **sc, int ns)
{
    while (np > 0) {
        if (strcmp(pc[0], "**") == 0) {
            /* Zero directories, or one more and try again. */
            for (int skip = 0; skip <= ns; skip++) {
                if (match_components(pc + 1, np - 1, sc + skip, ns - skip)) {
                    return 1;
                }
            }
            return 0;
        }
        if (ns == 0 || fnmatch(pc[0], sc[0], FNM_PERIOD) != 0) {
            return 0;
        }
        pc++;
        np--;
        sc++;
        ns--;
    }
    return ns == 0;
}

int tail_glob_match(const char *pattern, const char *path)
{
    if (!strchr(pattern, '/')) {
        const char *base = strrchr(path, '/');
        return fnmatch(pattern, base ? base + 1 : path, FNM_PERIOD) == 0;
    }
    size_t lp = strlen(pattern) + 1, ls = strlen(path) + 1;
    char *bp = malloc(lp), *bs = malloc(ls);
    char *pc[GLOB_MAX_COMPONENTS], *sc[GLOB_MAX_COMPONENTS];
    int ok = 0;
    if (!bp || !bs) {
        goto out;
    }
    memcpy(bp, pattern, lp);
    memcpy(bs, path, ls);
    int np = split_components(bp, pc, GLOB_MAX_COMPONENTS);
    int ns = split_components(bs, sc, GLOB_MAX_COMPONENTS);
    if (np < 0 || ns < 0) {
        goto out;
    }
    ok = match_components(pc, np, sc, ns);
out:
    free(bp);
    free(bs);
    return ok;
}

typedef struct expand {
    tail_glob_file_fn on_file;
    tail_glob_dir_fn on_dir;
    void *arg;
} expand;

static void join(char *out, size_t cap, const char *dir, const char *name)
{
    size_t dl = strlen(dir);
    const char *sep = dl > 0 && dir[dl - 1] == '/' ? "" : "/";
    if (snprintf(out, cap, "%s%s%s", dir, sep, name) >= (int)cap) {
        out[0] = '\0'; /* longer than a path can be: names nothing, so matches nothing */
    }
}

static void expand_at(expand *e, const char *dir, char **pc, int np, int depth);

static void found(expand *e, const char *path)
{
    struct stat st;
    if (stat(path, &st) == 0 && S_ISREG(st.st_mode)) {
        e->on_file(e->arg, path, &st);
    }
}

static void expand_dirent(expand *e, const char *dir, char **pc, int np, int depth)
{
    DIR *d = opendir(dir);
    if (!d) {
        return;
    }
    int star2 = strcmp(pc[0], "**") == 0;
    struct dirent *de;
    char path[PATH_MAX];
    while ((de = readdir(d)) != NULL) {
        if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0) {
            continue;
        }
        join(path, sizeof(path), dir, de->d_name);
        if (star2) {
            /* `**` eats this directory (not following symlinks) and stays. */
            if (de->d_name[0] == '.') {
                continue;
            }
            int isdir = de->d_type == DT_DIR;
            if (de->d_type == DT_UNKNOWN) {
                struct stat st;
                isdir = lstat(path, &st) == 0 && S_ISDIR(st.st_mode);
            }
            if (isdir) {
                expand_at(e, path, pc, np, depth + 1);
            }
            continue;
        }
        if (fnmatch(pc[0], de->d_name, FNM_PERIOD) != 0) {
            continue;
        }
        if (np == 1) {
            found(e, path);
        } else {
            expand_at(e, path, pc + 1, np - 1, depth + 1);
        }
    }
    closedir(d);
}

/* dir exists (or is expected to); match pc[0..np) below it. */
static void expand_at(expand *e, const char *dir, char **pc, int np, int depth)
{
    if (depth > GLOB_MAX_DEPTH) {
        return;
    }
    struct stat st;
    if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode)) {
        return;
    }
    if (np == 0) {
        return;
    }
    if (strcmp(pc[0], "**") == 0) {
        e->on_dir(e->arg, dir, NULL);
        expand_at(e, dir, pc + 1, np - 1, depth); /* zero directories */
        if (np == 1) {
            /* A trailing `**` matches every file below. */
            DIR *d = opendir(dir);
            if (d) {
                struct dirent *de;
                char path[PATH_MAX];
                while ((de = readdir(d)) != NULL) {
                    if (de->d_name[0] == '.') {
                        continue;
                    }
                    join(path, sizeof(path), dir, de->d_name);
                    found(e, path);
                }
                closedir(d);
            }
        }
        expand_dirent(e, dir, pc, np, depth);
        return;
    }
    if (!tail_glob_has_magic(pc[0])) {
        char path[PATH_MAX];
        join(path, sizeof(path), dir, pc[0]);
        /* The literal entry may be created later: watch its parent for it. */
        e->on_dir(e->arg, dir, pc[0]);
        if (np == 1) {
            found(e, path);
        } else {
            expand_at(e, path, pc + 1, np - 1, depth + 1);
        }
        return;
    }
    e->on_dir(e->arg, dir, NULL);
    expand_dirent(e, dir, pc, np, depth);
}

void tail_glob_expand(const char *pattern, tail_glob_file_fn on_file, tail_glob_dir_fn on_dir,
                      void *arg)
{
    expand e = {on_file, on_dir, arg};
    size_t len = strlen(pattern) + 1;
    char *buf = malloc(len);
    char *pc[GLOB_MAX_COMPONENTS];
    if (!buf) {
        return;
    }
    memcpy(buf, pattern, len);
    int np = split_components(buf, pc, GLOB_MAX_COMPONENTS);
    if (np <= 0) {
        free(buf);
        return;
    }
    /* The longest literal prefix that exists is where expansion starts. */
    char dir[PATH_MAX] = "/";
    int i = 0;
    while (i < np - 1 && !tail_glob_has_magic(pc[i])) {
        char next[PATH_MAX];
        join(next, sizeof(next), dir, pc[i]);
        struct stat st;
        if (stat(next, &st) != 0 || !S_ISDIR(st.st_mode)) {
            break;
        }
        snprintf(dir, sizeof(dir), "%s", next);
        i++;
    }
    expand_at(&e, dir, pc + i, np - i, 0);
    free(buf);
}
