/*
 * io_posix.c: the partition log's I/O table bound to the real system calls,
 * plus two directory helpers. Every segment and checkpoint write of the log
 * goes through a spool_plog_io so tests can inject short writes, ENOSPC and
 * EIO (STYLE.md). Returns follow the system calls (-1 and errno), except
 * the helpers here, which return 0 or a negative errno.
 */
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "log/log_int.h"

static int posix_open(const char *path, int flags, int mode)
{
    return open(path, flags | O_CLOEXEC, mode);
}

static long posix_pwrite(int fd, const void *buf, size_t len, int64_t off)
{
    return (long)pwrite(fd, buf, len, (off_t)off);
}

static long posix_pread(int fd, void *buf, size_t len, int64_t off)
{
    return (long)pread(fd, buf, len, (off_t)off);
}

static int posix_fdatasync(int fd)
{
    return fdatasync(fd);
}

static int posix_ftruncate(int fd, int64_t len)
{
    return ftruncate(fd, (off_t)len);
}

static int posix_close(int fd)
{
    return close(fd);
}

const spool_plog_io spool_plog_io_posix = {
    .open = posix_open,
    .pwrite = posix_pwrite,
    .pread = posix_pread,
    .fdatasync = posix_fdatasync,
    .ftruncate = posix_ftruncate,
    .close = posix_close,
};

/* fsync a directory so entries created or renamed in it are durable. */
int spool__fsync_dir(const char *path)
{
    int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) {
        return -errno;
    }
    int rc = fsync(fd) < 0 ? -errno : 0;
    close(fd);
    return rc;
}

/* mkdir -p. 0 or negative errno. */
int spool__mkdirs(const char *path)
{
    return spool_mkdirs(path, 0750);
}
