/* Descriptors opened with O_PATH, in DIR: a file, a directory (O_DIRECTORY), a symbolic link
 * itself (O_PATH | O_NOFOLLOW, close-on-exec) and the same link followed. After restart each
 * is still O_PATH on the same file: the link is the link (fstat, readlinkat), the directory
 * takes *at calls, and none of them reads. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <sys/stat.h>
#include "prog.h"

static ino_t ino_of(int fd)
{
    struct stat st;
    check(fstat(fd, &st) == 0, "fstat");
    return st.st_ino;
}

int main(int argc, char **argv)
{
    check(argc > 1, "usage: opaths DIR");
    char f[4096], d[4096], l[4096];
    snprintf(f, sizeof f, "%s/file", argv[1]);
    snprintf(d, sizeof d, "%s/sub", argv[1]);
    snprintf(l, sizeof l, "%s/link", argv[1]);
    int c = open(f, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    check(c >= 0 && write(c, "data", 4) == 4 && close(c) == 0, "the file");
    check(mkdir(d, 0755) == 0 && symlink("file", l) == 0, "the directory and the link");
    int pf = open(f, O_PATH), pd = open(d, O_PATH | O_DIRECTORY), pl = open(l, O_PATH | O_NOFOLLOW | O_CLOEXEC), pt = open(l, O_PATH);
    check(pf >= 0 && pd >= 0 && pl >= 0 && pt >= 0, "the O_PATH descriptors");
    ino_t fi = ino_of(pf), di = ino_of(pd), li = ino_of(pl);
    ready();
    wait_for_verify(NULL);

    int fds[] = {pf, pd, pl, pt};
    for (int i = 0; i < 4; i++)
        check(fcntl(fds[i], F_GETFL) & O_PATH, "O_PATH kept");
    check(fcntl(pl, F_GETFD) == FD_CLOEXEC && fcntl(pf, F_GETFD) == 0, "close-on-exec kept");
    struct stat st;
    check(fstat(pf, &st) == 0 && S_ISREG(st.st_mode) && st.st_ino == fi, "the file");
    check(fstat(pd, &st) == 0 && S_ISDIR(st.st_mode) && st.st_ino == di, "the directory");
    check(fstat(pl, &st) == 0 && S_ISLNK(st.st_mode) && st.st_ino == li, "the link itself");
    check(fstat(pt, &st) == 0 && S_ISREG(st.st_mode) && st.st_ino == fi, "the link followed is the file");
    char buf[64];
    ssize_t n = readlinkat(pl, "", buf, sizeof buf);
    check(n == 4 && memcmp(buf, "file", 4) == 0, "readlinkat on the link");
    check(read(pf, buf, 4) == -1 && errno == EBADF, "an O_PATH descriptor does not read");
    int x = openat(pd, "x", O_WRONLY | O_CREAT, 0600);
    check(x >= 0, "openat in the directory");
    close(x);
    check(faccessat(pd, "x", F_OK, 0) == 0, "the file made through the directory");
    pass();
}
