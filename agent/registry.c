/*
 * registry.c: the plugins spool knows, built-in and external.
 *
 * Built-ins come from the generated table spool_builtin_plugins. External
 * plugins are shared objects in service.plugin_dir exporting
 * SPOOL_PLUGIN_SYMBOL. Before reading anything else of an external
 * plugin's struct the loader checks, in this order: abi_version equals
 * SPOOL_ABI_VERSION; struct_size is at least ABI 1's frozen size (a literal
 * below, never today's sizeof); then either abi_signature equals the core's
 * for the structs both sides index (record, header, option, chunk; the
 * plugin struct's own size must agree with struct_size), or, for a plugin
 * built against ABI 1's header (struct_size exactly ABI 1's, no signature
 * field), the core's structs still have ABI 1's sizes. Every refusal names
 * what the plugin was built against and what this spool expects. Then the
 * same invariants as for built-ins (name, kind, the callbacks the kind
 * needs). Built-ins are compiled with the core and skip the signature. Two
 * plugins of one kind may not share a name. Shared objects stay loaded for
 * the life of the process (their code may run until exit).
 *
 * Files named spool-<type>.so in plugin_dir are spool's own optional plugins
 * (kafka, journald, http; packaged as spool-plugin-<type>): load_dir skips
 * them, and spool_registry_load_type loads one only when a config names its
 * type, so an agent maps only the plugins it uses. A file holds one plugin, so
 * a type that is both an input and an output (http, kafka) has one file per kind
 * (spool-http-in.so, spool-http-out.so, spool-kafka-in.so; the table `packaged` names them).
 */
#include <dirent.h>
#include <dlfcn.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

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

/*
 * sizeof(spool_plugin) when ABI 1 was frozen (spool.h at commit 9cd97c0):
 * three 4-byte fields and padding, three pointers, a size_t and nine
 * callbacks, up to and including drain. A literal on purpose: it must not
 * follow the header as fields are added. The signature ABI 1's header would
 * have had is frozen the same way (record 72, header 32, option 72,
 * chunk 80, plugin 120 bytes on LP64). On 32-bit targets the record and
 * chunk sizes of ABI 1 depend on int64_t's alignment, so no signature is
 * frozen there and a plugin without one is refused (rebuilt, it has one).
 */
#if UINTPTR_MAX > 0xffffffffu
#define ABI1_PLUGIN_SIZE 120u /* x86-64, aarch64 and other LP64 targets */
#define ABI1_SIGNATURE 0x1048020048050078ull
#else
#define ABI1_PLUGIN_SIZE 64u /* ILP32: 16 four-byte fields */
#define ABI1_SIGNATURE 0ull  /* not frozen, see above */
#endif

/* The signature's plugin-size bits: a plugin built against an older header
 * with fewer trailing fields is fine (struct_size tells the core). */
#define SIG_PLUGIN_MASK 0xfffull
#define SIG_SIZE(sig, shift) ((unsigned)(((sig) >> (shift)) & 0xfff))

_Static_assert(offsetof(spool_plugin, abi_signature) >= ABI1_PLUGIN_SIZE,
               "spool_plugin must keep ABI 1's fields in front: add fields at its end");
_Static_assert(sizeof(spool_record) < 4096 && sizeof(spool_header) < 4096 &&
                   sizeof(spool_option) < 4096 && sizeof(spool_chunk) < 4096 &&
                   sizeof(spool_plugin) < 4096,
               "SPOOL_ABI_SIGNATURE packs each struct size in 12 bits");

static void describe_signature(uint64_t sig, char *buf, size_t cap)
{
    snprintf(buf, cap, "record %u, header %u, option %u, chunk %u, plugin %u bytes",
             SIG_SIZE(sig, 48), SIG_SIZE(sig, 36), SIG_SIZE(sig, 24), SIG_SIZE(sig, 12),
             SIG_SIZE(sig, 0));
}

int spool_registry_check_abi(const spool_plugin *p, char *errbuf, size_t cap)
{
    const uint64_t ours = SPOOL_ABI_SIGNATURE;
    const size_t sig_end = offsetof(spool_plugin, abi_signature) + sizeof(p->abi_signature);
    char theirs_text[128], ours_text[128];
    uint64_t theirs;
    describe_signature(ours, ours_text, sizeof(ours_text));
    if (p->abi_version != SPOOL_ABI_VERSION) {
        snprintf(errbuf, cap,
                 "built against spool ABI version %u; this spool expects ABI "
                 "version %u: rebuild it against this spool's spool/spool.h",
                 p->abi_version, SPOOL_ABI_VERSION);
        return -EINVAL;
    }
    if (p->struct_size < ABI1_PLUGIN_SIZE) {
        snprintf(errbuf, cap,
                 "plugin struct is %u bytes; ABI %u needs at least %u: rebuild it "
                 "against this spool's spool/spool.h",
                 p->struct_size, SPOOL_ABI_VERSION, ABI1_PLUGIN_SIZE);
        return -EINVAL;
    }
    if (p->struct_size < sig_end) {
        if (p->struct_size != ABI1_PLUGIN_SIZE) {
            snprintf(errbuf, cap,
                     "plugin struct is %u bytes: neither ABI 1's %u nor large "
                     "enough for abi_signature (%zu): rebuild it against this spool's "
                     "spool/spool.h",
                     p->struct_size, ABI1_PLUGIN_SIZE, sig_end);
            return -EINVAL;
        }
        /* Built against ABI 1's header, which had no signature field. */
        theirs = ABI1_SIGNATURE;
        if (theirs == 0) {
            snprintf(errbuf, cap,
                     "built against ABI 1's header without abi_signature, which "
                     "this 32-bit spool cannot verify: rebuild it against this spool's "
                     "spool/spool.h");
            return -EINVAL;
        }
    } else {
        theirs = p->abi_signature;
        if (theirs == 0) {
            snprintf(errbuf, cap,
                     "no abi_signature: set .abi_signature = SPOOL_ABI_SIGNATURE "
                     "(or use SPOOL_PLUGIN_ABI) in the plugin struct; this spool expects %s",
                     ours_text);
            return -EINVAL;
        }
    }
    describe_signature(theirs, theirs_text, sizeof(theirs_text));
    /* Format nibble and the four shared structs exactly; the plugin's own
     * size only has to agree with its struct_size. */
    if ((theirs & ~SIG_PLUGIN_MASK) != (ours & ~SIG_PLUGIN_MASK) ||
        SIG_SIZE(theirs, 0) != p->struct_size) {
        snprintf(errbuf, cap,
                 "ABI signature mismatch: built against a spool.h with %s; this "
                 "spool expects %s: rebuild it against this spool's spool/spool.h",
                 theirs_text, ours_text);
        return -EINVAL;
    }
    return 0;
}

static int validate(const spool_plugin *p, const char **why)
{
    if (p->abi_version != SPOOL_ABI_VERSION) {
        *why = "ABI version mismatch";
        return -EINVAL;
    }
    if (p->struct_size < ABI1_PLUGIN_SIZE) {
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
    /* The ABI fields first, before trusting anything else of the struct. */
    char abi_err[480];
    int rc = spool_registry_check_abi(p, abi_err, sizeof(abi_err));
    if (rc < 0) {
        snprintf(errbuf, cap, "refused: %s", abi_err);
        dlclose(h);
        return rc;
    }
    rc = spool_registry_add(p, path, &why);
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
    return l > 3 && strcmp(n + l - 3, ".so") == 0 && strncmp(n, "spool-", 6) != 0;
}

/* spool's optional plugins, their files and the Debian packages that ship them. */
static const struct {
    spool_plugin_kind kind;
    const char *name;
    const char *file;
    const char *package;
} packaged[] = {
    {SPOOL_PLUGIN_OUTPUT, "kafka", "spool-kafka.so", "spool-plugin-kafka"},
    {SPOOL_PLUGIN_INPUT, "kafka", "spool-kafka-in.so", "spool-plugin-kafka"},
    {SPOOL_PLUGIN_INPUT, "journald", "spool-journald.so", "spool-plugin-journald"},
    {SPOOL_PLUGIN_INPUT, "http", "spool-http-in.so", "spool-plugin-http"},
    {SPOOL_PLUGIN_OUTPUT, "http", "spool-http-out.so", "spool-plugin-http"},
    {SPOOL_PLUGIN_OUTPUT, "postgresql", "spool-postgresql.so", "spool-plugin-postgresql"},
    {SPOOL_PLUGIN_OUTPUT, "clickhouse", "spool-clickhouse.so", "spool-plugin-clickhouse"},
};

int spool_registry_load_type(const char *dir, spool_plugin_kind kind, const char *name,
                             char *errbuf, size_t cap)
{
    const char *package = NULL;
    char path[4096];
    errbuf[0] = '\0';
    if (!name[0] || strspn(name, "abcdefghijklmnopqrstuvwxyz0123456789_") != strlen(name)) {
        return -ENOENT; /* not a name a plugin file can have */
    }
    snprintf(path, sizeof(path), "%s/spool-%s.so", dir, name);
    for (size_t i = 0; i < sizeof(packaged) / sizeof(packaged[0]); i++) {
        if (packaged[i].kind == kind && strcmp(packaged[i].name, name) == 0) {
            package = packaged[i].package;
            snprintf(path, sizeof(path), "%s/%s", dir, packaged[i].file);
        }
    }
    if (access(path, F_OK) != 0) {
        if (package) {
            snprintf(errbuf, cap,
                     "the '%s' plugin is not installed: %s not found (install the package %s, "
                     "or set service.plugin_dir to where %s is)",
                     name, path, package, strrchr(path, '/') + 1);
        }
        return -ENOENT;
    }
    char err[512];
    int rc = spool_registry_load_file(path, err, sizeof(err));
    if (rc < 0) {
        snprintf(errbuf, cap, "%s: %s", path, err);
        return rc;
    }
    if (!spool_registry_find(kind, name)) {
        snprintf(errbuf, cap, "%s does not provide the plugin '%s' of this kind", path, name);
        return -ENOENT;
    }
    return 0;
}

void spool_registry_modules(const char *dir,
                            void (*fn)(void *arg, spool_plugin_kind kind, const char *name,
                                       const char *path),
                            void *arg)
{
    for (size_t i = 0; i < sizeof(packaged) / sizeof(packaged[0]); i++) {
        char path[4096];
        snprintf(path, sizeof(path), "%s/%s", dir, packaged[i].file);
        if (!spool_registry_find(packaged[i].kind, packaged[i].name) && access(path, F_OK) == 0) {
            fn(arg, packaged[i].kind, packaged[i].name, path);
        }
    }
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
