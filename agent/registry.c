/*
 * registry.c: the plugins spool knows, built-in and external.
 *
 * Built-ins come from the generated table spool_builtin_plugins. External
 * plugins are shared objects in service.plugin_dir exporting
 * SPOOL_PLUGIN_SYMBOL; the loader checks the ABI version and struct size
 * before reading anything else of the struct, then the same invariants as
 * for built-ins (name, kind, the callbacks the kind needs). Two plugins of
 * one kind may not share a name. Shared objects stay loaded for the life of
 * the process (their code may run until exit).
 */
#include <dirent.h>
#include <dlfcn.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core.h"

#define REGISTRY_MAX 256

extern const spool_plugin *const spool_builtin_plugins[];

typedef struct reg_entry {
    const spool_plugin *plugin;
    char *origin; /* "built-in" or the .so path */
} reg_entry;

static pthread_mutex_t reg_lock = PTHREAD_MUTEX_INITIALIZER;
static reg_entry entries[REGISTRY_MAX];
static size_t nentries;
static int builtins_done;

/* The size of spool_plugin when SPOOL_ABI_VERSION 1 was fixed. */
#define SPOOL_PLUGIN_MIN_SIZE sizeof(spool_plugin)

static int validate(const spool_plugin *p, const char **why)
{
    if (p->abi_version != SPOOL_ABI_VERSION) {
        *why = "ABI version mismatch";
        return -EINVAL;
    }
    if (p->struct_size < SPOOL_PLUGIN_MIN_SIZE) {
        *why = "plugin struct too small for this ABI version";
        return -EINVAL;
    }
    if (!p->name || !p->name[0]) {
        *why = "plugin has no name";
        return -EINVAL;
    }
    switch (p->kind) {
    case SPOOL_PLUGIN_INPUT:
        if (!p->run && !p->start) {
            *why = "input plugin has neither run nor start";
            return -EINVAL;
        }
        break;
    case SPOOL_PLUGIN_PROCESSOR:
        if (!p->process) {
            *why = "processor plugin has no process callback";
            return -EINVAL;
        }
        break;
    case SPOOL_PLUGIN_OUTPUT:
        if (!p->flush) {
            *why = "output plugin has no flush callback";
            return -EINVAL;
        }
        break;
    default:
        *why = "unknown plugin kind";
        return -EINVAL;
    }
    return 0;
}

int spool_registry_add(const spool_plugin *p, const char *origin, const char **why)
{
    int rc = validate(p, why);
    if (rc < 0) {
        return rc;
    }
    pthread_mutex_lock(&reg_lock);
    for (size_t i = 0; i < nentries; i++) {
        if (entries[i].plugin->kind == p->kind && strcmp(entries[i].plugin->name, p->name) == 0) {
            pthread_mutex_unlock(&reg_lock);
            *why = "a plugin of that kind and name is already registered";
            return -EEXIST;
        }
    }
    if (nentries == REGISTRY_MAX) {
        pthread_mutex_unlock(&reg_lock);
        *why = "too many plugins";
        return -ENOSPC;
    }
    entries[nentries].plugin = p;
    entries[nentries].origin = strdup(origin);
    nentries++;
    pthread_mutex_unlock(&reg_lock);
    return 0;
}

int spool_registry_init(void)
{
    const char *why;
    if (builtins_done) {
        return 0;
    }
    builtins_done = 1;
    for (size_t i = 0; spool_builtin_plugins[i]; i++) {
        int rc = spool_registry_add(spool_builtin_plugins[i], "built-in", &why);
        if (rc < 0) {
            spool_log_error(NULL, "built-in plugin %s: %s", spool_builtin_plugins[i]->name, why);
            return rc;
        }
    }
    return 0;
}

void spool_registry_reset(void)
{
    pthread_mutex_lock(&reg_lock);
    for (size_t i = 0; i < nentries; i++) {
        free(entries[i].origin);
    }
    nentries = 0;
    builtins_done = 0;
    pthread_mutex_unlock(&reg_lock);
}

const spool_plugin *spool_registry_find(spool_plugin_kind kind, const char *name)
{
    const spool_plugin *p = NULL;
    pthread_mutex_lock(&reg_lock);
    for (size_t i = 0; i < nentries; i++) {
        if (entries[i].plugin->kind == kind && strcmp(entries[i].plugin->name, name) == 0) {
            p = entries[i].plugin;
            break;
        }
    }
    pthread_mutex_unlock(&reg_lock);
    return p;
}

void spool_registry_foreach(void (*fn)(void *arg, const spool_plugin *p, const char *origin),
                            void *arg)
{
    pthread_mutex_lock(&reg_lock);
    size_t n = nentries;
    reg_entry copy[REGISTRY_MAX];
    memcpy(copy, entries, n * sizeof(*copy));
    pthread_mutex_unlock(&reg_lock);
    for (size_t i = 0; i < n; i++) {
        fn(arg, copy[i].plugin, copy[i].origin);
    }
}

size_t spool_registry_names(spool_plugin_kind kind, const char **names, size_t cap)
{
    size_t n = 0;
    pthread_mutex_lock(&reg_lock);
    for (size_t i = 0; i < nentries && n < cap; i++) {
        if (entries[i].plugin->kind == kind) {
            names[n++] = entries[i].plugin->name;
        }
    }
    pthread_mutex_unlock(&reg_lock);
    return n;
}

int spool_registry_load_file(const char *path, char *errbuf, size_t cap)
{
    void *h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    const char *why;
    if (!h) {
        snprintf(errbuf, cap, "cannot load plugin: %s", dlerror());
        return -ENOEXEC;
    }
    spool_plugin_register_fn reg;
    *(void **)&reg = dlsym(h, SPOOL_PLUGIN_SYMBOL);
    if (!reg) {
        snprintf(errbuf, cap, "not a spool plugin: no symbol '%s'", SPOOL_PLUGIN_SYMBOL);
        dlclose(h);
        return -ENOEXEC;
    }
    const spool_plugin *p = reg();
    if (!p) {
        snprintf(errbuf, cap, "plugin registration returned NULL");
        dlclose(h);
        return -EINVAL;
    }
    /* Read only the two leading fields before trusting the rest. */
    if (p->abi_version != SPOOL_ABI_VERSION) {
        snprintf(errbuf, cap, "plugin ABI version %u, this spool needs %u (rebuild it against "
                 "this version's spool/spool.h)", p->abi_version, SPOOL_ABI_VERSION);
        dlclose(h);
        return -EINVAL;
    }
    int rc = spool_registry_add(p, path, &why);
    if (rc < 0) {
        snprintf(errbuf, cap, "plugin '%s': %s", p->name ? p->name : "?", why);
        dlclose(h);
        return rc;
    }
    return 0;
}

static int has_so_suffix(const char *n)
{
    size_t l = strlen(n);
    return l > 3 && strcmp(n + l - 3, ".so") == 0;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

int spool_registry_load_dir(const char *dir, spool_errors *errs)
{
    DIR *d = opendir(dir);
    char *names[REGISTRY_MAX];
    size_t n = 0;
    int failures = 0;
    if (!d) {
        if (errno == ENOENT) {
            return 0; /* no external plugins */
        }
        spool_errors_add(errs, dir, 0, 0, "service.plugin_dir", "cannot open plugin_dir: %s",
                         strerror(errno));
        return -errno;
    }
    struct dirent *de;
    while ((de = readdir(d)) && n < REGISTRY_MAX) {
        if (has_so_suffix(de->d_name)) {
            names[n++] = strdup(de->d_name);
        }
    }
    closedir(d);
    qsort(names, n, sizeof(*names), cmp_str);
    for (size_t i = 0; i < n; i++) {
        char path[4096], err[512];
        if (!names[i]) {
            continue;
        }
        snprintf(path, sizeof(path), "%s/%s", dir, names[i]);
        if (spool_registry_load_file(path, err, sizeof(err)) < 0) {
            spool_errors_add(errs, path, 0, 0, "service.plugin_dir", "%s", err);
            failures++;
        }
        free(names[i]);
    }
    return failures ? -EINVAL : 0;
}
