/*
 * mkdirs.c: spool_mkdirs, `mkdir -p` for the core (data_dir, the partition
 * log's topic directories) and plugins (the file output's templated
 * paths). Each missing component is created with the given mode (less the
 * umask); components that exist are left alone, so concurrent callers
 * creating the same tree both succeed. Any thread.
 */
#include <errno.h>
#include <string.h>
#include <sys/stat.h>

#include "spool/spool.h"

int spool_mkdirs(const char *path, unsigned mode)
{
    char buf[4096];
    size_t n = path ? strlen(path) : 0;
    if (n == 0) {
        return -EINVAL;
    }
    if (n >= sizeof(buf)) {
        return -ENAMETOOLONG;
    }
    memcpy(buf, path, n + 1);
    for (size_t i = 1; i <= n; i++) {
        if (buf[i] == '/' || buf[i] == '\0') {
            char c = buf[i];
            buf[i] = '\0';
            if (buf[i - 1] != '/' && mkdir(buf, (mode_t)mode) < 0 && errno != EEXIST) {
                return -errno;
            }
            buf[i] = c;
        }
    }
    struct stat st;
    if (stat(buf, &st) < 0) {
        return -errno;
    }
    return S_ISDIR(st.st_mode) ? 0 : -ENOTDIR;
}
