/* File locks: a flock write lock, POSIX write and read locks on two byte ranges, an
 * open-file-description lock, and a flock read lock shared with a forked child through the
 * same open file. After restart each is held again: another process (forked to check) cannot
 * take what conflicts and can take what does not; the locks can be released and taken again.
 *
 *   locks DIR */
#define _GNU_SOURCE
#include <fcntl.h>
#include <sys/file.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include "prog.h"

static char a[4096], b[4096], c[4096], d[4096];
static int fa, fb, fc, fd_, child_pid;

/* In a forked process: 0 if the lock can be taken, 1 if not. */
static int can_take(const char *path, int kind, int ty, off_t start, off_t len)
{
    pid_t p = fork();
    if (p == 0) {
        int f = open(path, O_RDWR);
        if (f < 0)
            _exit(2);
        if (kind == 0)
            _exit(flock(f, (ty == F_WRLCK ? LOCK_EX : LOCK_SH) | LOCK_NB) == 0 ? 0 : 1);
        struct flock fl = {.l_type = ty, .l_whence = SEEK_SET, .l_start = start, .l_len = len};
        _exit(fcntl(f, kind == 1 ? F_SETLK : F_OFD_SETLK, &fl) == 0 ? 0 : 1);
    }
    int s = 0;
    waitpid(p, &s, 0);
    check(WIFEXITED(s) && WEXITSTATUS(s) != 2, "the checker opens the file");
    return WEXITSTATUS(s) == 0;
}

static void lock(int f, int cmd, int ty, off_t start, off_t len, const char *what)
{
    struct flock fl = {.l_type = ty, .l_whence = SEEK_SET, .l_start = start, .l_len = len};
    check(fcntl(f, cmd, &fl) == 0, what);
}

static int mkfile(char *path, const char *dir, const char *name)
{
    snprintf(path, 4096, "%s/%s", dir, name);
    int f = open(path, O_RDWR | O_CREAT | O_TRUNC, 0600);
    check(f >= 0 && ftruncate(f, 4096) == 0, "a file to lock");
    return f;
}

int main(int argc, char **argv)
{
    if (argc < 2)
        return 2;
    fa = mkfile(a, argv[1], "flocked");
    fb = mkfile(b, argv[1], "posix");
    fc = mkfile(c, argv[1], "ofd");
    fd_ = mkfile(d, argv[1], "shared");
    check(flock(fa, LOCK_EX) == 0, "flock");
    lock(fb, F_SETLK, F_WRLCK, 0, 100, "a POSIX write lock");
    lock(fb, F_SETLK, F_RDLCK, 200, 100, "a POSIX read lock");
    lock(fc, F_OFD_SETLK, F_WRLCK, 10, 0, "an OFD lock to the end");
    check(flock(fd_, LOCK_SH) == 0, "a shared flock");
    child_pid = fork();
    if (child_pid == 0) {
        /* Never outlives the test: it holds the file, and so the shared flock, as long as
         * its parent lives. */
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() == 1)
            _exit(0);
        for (;;)
            pause(); /* holds the shared open file, and so the flock, with the parent */
    }
    ready();
    wait_for_verify(NULL);

    check(!can_take(a, 0, F_WRLCK, 0, 0) && !can_take(a, 0, F_RDLCK, 0, 0), "the flock write lock is held");
    check(!can_take(b, 1, F_RDLCK, 50, 10), "the POSIX write lock is held");
    check(can_take(b, 1, F_WRLCK, 100, 100), "bytes 100-199 are free");
    check(can_take(b, 1, F_RDLCK, 200, 100) && !can_take(b, 1, F_WRLCK, 250, 1), "the POSIX read lock is held, shared");
    check(can_take(c, 2, F_WRLCK, 0, 10) && !can_take(c, 2, F_WRLCK, 4000, 1), "the OFD lock covers 10 to the end");
    check(can_take(d, 0, F_RDLCK, 0, 0) && !can_take(d, 0, F_WRLCK, 0, 0), "the shared flock is held");
    check(flock(fa, LOCK_UN) == 0 && can_take(a, 0, F_WRLCK, 0, 0) && flock(fa, LOCK_EX | LOCK_NB) == 0, "the flock is ours to release and take again");
    kill(child_pid, SIGKILL);
    waitpid(child_pid, NULL, 0);
    pass();
}
