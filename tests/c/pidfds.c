/* pidfds: one of the process itself (PIDFD_NONBLOCK; another with PIDFD_THREAD where the
 * kernel has it), one of a live child, one of a child made by clone(CLONE_PIDFD), two of a child
 * that exited with status 7 (one process: one inode), one of a child killed by SIGKILL. After
 * restart the first two name the restored processes (a signal sent through the child's pidfd
 * reaches it, and it can be waited for), the dead ones still read as dead, keep their inodes
 * apart as before, and give the same exit statuses (when the kernel shows them). */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdint.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include "prog.h"

#include <linux/sched.h>

#ifndef PIDFD_NONBLOCK
#define PIDFD_NONBLOCK O_NONBLOCK
#endif
#ifndef PIDFD_THREAD
#define PIDFD_THREAD O_EXCL
#endif

struct info { uint64_t mask, cgroupid; uint32_t ids[11]; int32_t exit_code; };
#define INFO_EXIT (1ULL << 3)
#define GET_INFO _IOWR(0xFF, 11, struct info)

static int pidfd_open(pid_t pid, unsigned flags) { return (int)syscall(SYS_pidfd_open, pid, flags); }
static int send_sig(int fd, int sig) { return (int)syscall(SYS_pidfd_send_signal, fd, sig, NULL, 0); }

static int fdinfo_pid(int fd)
{
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/self/fdinfo/%d", fd);
    FILE *f = fopen(path, "r");
    int pid = -100;
    while (f && fgets(line, sizeof line, f))
        if (sscanf(line, "Pid: %d", &pid) == 1)
            break;
    if (f)
        fclose(f);
    return pid;
}

static uint64_t ino(int fd)
{
    struct stat st;
    check(fstat(fd, &st) == 0, "fstat of a pidfd");
    return st.st_ino;
}

/* The exit status the kernel gives for a dead process's pidfd, or -1. */
static int exit_of(int fd)
{
    struct info i = {.mask = INFO_EXIT};
    if (ioctl(fd, GET_INFO, &i) != 0 || !(i.mask & INFO_EXIT))
        return -1;
    return i.exit_code;
}

static int readable(int fd)
{
    struct pollfd p = {fd, POLLIN, 0};
    return poll(&p, 1, 0) == 1 && (p.revents & POLLIN);
}

int main(void)
{
    int self = pidfd_open(getpid(), PIDFD_NONBLOCK);
    check(self >= 0, "pidfd_open of itself");

    pid_t live = fork();
    check(live >= 0, "fork");
    if (live == 0) {
        for (;;)
            pause();
    }
    int lfd = pidfd_open(live, 0);
    check(lfd >= 0, "pidfd_open of the live child");
    int thr = pidfd_open(getpid(), PIDFD_THREAD); /* -1 on kernels before 6.9 */

    int cfd = -1;
    pid_t cloned = (pid_t)syscall(SYS_clone, CLONE_PIDFD | SIGCHLD, 0, &cfd, NULL, 0);
    check(cloned >= 0, "clone(CLONE_PIDFD)");
    if (cloned == 0) {
        for (;;)
            pause();
    }
    check(cfd >= 0 && fdinfo_pid(cfd) == cloned, "the pidfd clone gives");

    int go[2];
    check(pipe(go) == 0, "pipe");
    pid_t seven = fork();
    check(seven >= 0, "fork");
    if (seven == 0) {
        char c;
        close(go[1]);
        (void)!read(go[0], &c, 1);
        _exit(7);
    }
    close(go[0]);
    int s1 = pidfd_open(seven, 0), s2 = pidfd_open(seven, 0);
    check(s1 >= 0 && s2 >= 0, "pidfd_open of the child that exits");
    close(go[1]);
    int st;
    check(waitpid(seven, &st, 0) == seven && WIFEXITED(st) && WEXITSTATUS(st) == 7, "the child exits with 7");

    pid_t killed = fork();
    check(killed >= 0, "fork");
    if (killed == 0) {
        for (;;)
            pause();
    }
    int kfd = pidfd_open(killed, 0);
    check(kfd >= 0, "pidfd_open of the child killed");
    check(send_sig(kfd, SIGKILL) == 0, "killing it through its pidfd");
    check(waitpid(killed, &st, 0) == killed && WIFSIGNALED(st), "the child is killed");

    int has_exit = exit_of(s1) == (7 << 8);
    check(ino(s1) == ino(s2) && ino(s1) != ino(kfd), "pidfd inodes before");
    uint64_t s1_ino = ino(s1);
    ready();
    wait_for_verify(NULL);

    check(fdinfo_pid(self) == getpid(), "the own pidfd names the restored process");
    check((fcntl(self, F_GETFL) & (O_NONBLOCK | O_ACCMODE)) == (O_NONBLOCK | O_RDWR), "the own pidfd keeps PIDFD_NONBLOCK");
    check(fcntl(self, F_GETFD) == FD_CLOEXEC, "close-on-exec kept");
    check(send_sig(self, 0) == 0, "a signal through the own pidfd");

    if (thr >= 0)
        check((fcntl(thr, F_GETFL) & O_EXCL) && fdinfo_pid(thr) == getpid(), "the PIDFD_THREAD pidfd keeps its flag");
    check(fdinfo_pid(cfd) == cloned && send_sig(cfd, SIGKILL) == 0, "SIGKILL through the pidfd clone gave");
    check(waitpid(cloned, &st, 0) == cloned && WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL, "the cloned child ends by that SIGKILL");
    check(fdinfo_pid(lfd) == live, "the child's pidfd names it");
    check(!readable(lfd), "the live child is alive");
    check(send_sig(lfd, SIGTERM) == 0, "SIGTERM through the child's pidfd");
    check(waitpid(live, &st, 0) == live && WIFSIGNALED(st) && WTERMSIG(st) == SIGTERM, "the child ends by that SIGTERM");

    for (int i = 0; i < 3; i++) {
        int fd = i == 0 ? s1 : i == 1 ? s2 : kfd;
        check(fdinfo_pid(fd) == -1, "a dead process's pidfd shows no PID");
        check(send_sig(fd, 0) == -1 && errno == ESRCH, "a dead process's pidfd cannot be signalled");
        check(readable(fd), "a dead process's pidfd is readable");
    }
    check(ino(s1) == ino(s2), "the two pidfds of one dead process share their inode");
    check(ino(s1) != ino(kfd), "pidfds of two dead processes have two inodes");
    (void)s1_ino;
    if (has_exit) {
        check(exit_of(s1) == (7 << 8) && exit_of(s2) == (7 << 8), "the exit status of the dead process");
        check(exit_of(kfd) == SIGKILL, "the wait status of the process killed");
    }
    pass();
}
