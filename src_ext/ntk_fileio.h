/* Small file-I/O helpers shared by the out-of-core writers (_blockio.pyx,
 * ntk_directio.h). */
#ifndef NTK_FILEIO_H
#define NTK_FILEIO_H

#include <errno.h>
#include <unistd.h>

/* pwrite all n bytes of buf at off, resuming after short writes and EINTR.
 * Returns 0, or an errno (ENOSPC for a write that makes no progress). */
static int ntk_pwrite_all(int fd, const char *buf, long long n, long long off) {
    while (n > 0) {
        ssize_t k = pwrite(fd, buf, (size_t)n, (off_t)off);
        if (k < 0) {
            if (errno == EINTR) continue;
            return errno;
        }
        if (k == 0) return ENOSPC;
        buf += k; off += k; n -= k;
    }
    return 0;
}

#endif
