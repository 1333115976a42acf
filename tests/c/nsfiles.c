/* Descriptors of the process's own namespaces (/proc/self/ns/net at fd 30, .../uts at fd 31,
 * .../pid at fd 32): after a restart each still names the namespace the process is in (the
 * same inode as its /proc/self/ns entry, and the same link). With "other" (as root): fd 33 is
 * the UTS namespace of a child that made one of its own and ended, which crest must refuse. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <sched.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include "prog.h"

static const char *kinds[] = {"net", "uts", "pid"};

static void same(int fd, const char *kind)
{
    char path[64], want[64], got[64], what[128];
    struct stat a, b;
    snprintf(path, sizeof path, "/proc/self/ns/%s", kind);
    snprintf(what, sizeof what, "fd %d is the %s namespace the process is in", fd, kind);
    check(fstat(fd, &a) == 0 && stat(path, &b) == 0 && a.st_ino == b.st_ino && a.st_dev == b.st_dev, what);
    snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
    ssize_t n = readlink(path, got, sizeof got - 1);
    snprintf(path, sizeof path, "/proc/self/ns/%s", kind);
    ssize_t m = readlink(path, want, sizeof want - 1);
    check(n > 0 && m > 0 && n == m && memcmp(got, want, n) == 0, what);
}

int main(int argc, char **argv)
{
    for (int i = 0; i < 3; i++) {
        char path[64];
        snprintf(path, sizeof path, "/proc/self/ns/%s", kinds[i]);
        int fd = open(path, O_RDONLY);
        check(fd >= 0 && dup2(fd, 30 + i) == 30 + i && close(fd) == 0, path);
    }
    if (argc > 1 && strcmp(argv[1], "other") == 0) {
        int up[2], down[2];
        check(pipe(up) == 0 && pipe(down) == 0, "pipe");
        pid_t c = fork();
        check(c >= 0, "fork");
        if (c == 0) {
            char x;
            if (unshare(CLONE_NEWUTS) != 0)
                _exit(1);
            write(up[1], "u", 1);
            read(down[0], &x, 1);
            _exit(0);
        }
        char x, path[64];
        check(read(up[0], &x, 1) == 1, "the child's UTS namespace");
        snprintf(path, sizeof path, "/proc/%d/ns/uts", c);
        int fd = open(path, O_RDONLY);
        check(fd >= 0 && dup2(fd, 33) == 33 && close(fd) == 0, "fd 33");
        write(down[1], "e", 1);
        check(waitpid(c, NULL, 0) == c, "reaping the child");
        close(up[0]);
        close(up[1]);
        close(down[0]);
        close(down[1]);
    }
    ready();
    wait_for_verify(NULL);
    for (int i = 0; i < 3; i++)
        same(30 + i, kinds[i]);
    pass();
}
