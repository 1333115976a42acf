/* File leases, in DIR: a read lease (r, open read-only), a write lease (w, open for writing),
 * a write lease being broken down to a read lease (b1: an open for reading broke it) and a
 * read lease being broken (b2: an open for writing), their break signal (SIGUSR1, F_SETSIG)
 * taken before the checkpoint. After restart: F_GETLEASE gives the same types, the leases
 * still keep conflicting opens out (the broken ones too, until given up), no second break
 * signal comes, and the owner for I/O signals is the process. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include "prog.h"

static volatile sig_atomic_t breaks, last_fd = -1;

static void on_break(int s, siginfo_t *si, void *ctx)
{
    (void)s;
    (void)ctx;
    breaks++;
    last_fd = si->si_fd;
}

/* Waits for break signal number N (1, 2...); its descriptor must be FD. */
static void break_signal(int n, int fd, const char *what)
{
    for (int i = 0; i < 100 && breaks < n; i++)
        usleep(10 * 1000);
    check(breaks == n && last_fd == fd, what);
}

static int open_in(const char *dir, const char *name, int flags)
{
    char p[4096];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    return open(p, flags | O_CREAT, 0600);
}

/* An open of DIR/NAME with FLAGS, non-blocking: 0 when it went through, else errno. */
static int try_open(const char *dir, const char *name, int flags)
{
    int fd = open_in(dir, name, flags | O_NONBLOCK);
    if (fd < 0)
        return errno;
    close(fd);
    return 0;
}

int main(int argc, char **argv)
{
    check(argc > 1, "usage: leases DIR");
    const char *dir = argv[1];
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_break;
    sa.sa_flags = SA_SIGINFO;
    check(sigaction(SIGUSR1, &sa, NULL) == 0, "sigaction");

    int r = open_in(dir, "r", O_RDONLY), w = open_in(dir, "w", O_WRONLY);
    int b1 = open_in(dir, "b1", O_RDWR), b2 = open_in(dir, "b2", O_RDONLY);
    check(r >= 0 && w >= 0 && b1 >= 0 && b2 >= 0, "opening the files");
    check(fcntl(r, F_SETLEASE, F_RDLCK) == 0 && fcntl(w, F_SETLEASE, F_WRLCK) == 0, "a read and a write lease");
    check(fcntl(b1, F_SETLEASE, F_WRLCK) == 0 && fcntl(b2, F_SETLEASE, F_RDLCK) == 0, "the leases to break");
    int all[] = {r, w, b1, b2};
    for (int i = 0; i < 4; i++)
        check(fcntl(all[i], F_SETSIG, SIGUSR1) == 0, "F_SETSIG");
    check(try_open(dir, "b1", O_RDONLY) == EWOULDBLOCK, "an open for reading breaks the write lease");
    break_signal(1, b1, "the break signal of the write lease");
    check(try_open(dir, "b2", O_WRONLY) == EWOULDBLOCK, "an open for writing breaks the read lease");
    break_signal(2, b2, "the break signal of the read lease");
    check(fcntl(b1, F_GETLEASE) == F_RDLCK && fcntl(b2, F_GETLEASE) == F_UNLCK, "the leases are being broken");
    ready();
    wait_for_verify(NULL);

    check(fcntl(r, F_GETLEASE) == F_RDLCK, "the read lease is held");
    check(fcntl(w, F_GETLEASE) == F_WRLCK, "the write lease is held");
    check(fcntl(b1, F_GETLEASE) == F_RDLCK, "the write lease is still being broken down to a read lease");
    check(fcntl(b2, F_GETLEASE) == F_UNLCK, "the read lease is still being broken");
    usleep(100 * 1000);
    check(breaks == 2, "no second break signal");
    check(fcntl(b1, F_GETSIG) == SIGUSR1 && fcntl(b1, F_GETOWN) == getpid(), "the owner and signal of a leased file");
    check(try_open(dir, "b2", O_WRONLY) == EWOULDBLOCK, "the lease being broken still keeps writers out");
    check(breaks == 2, "and signals nobody again");
    check(try_open(dir, "r", O_WRONLY) == EWOULDBLOCK, "the read lease keeps writers out");
    break_signal(3, r, "the read lease is broken, with its signal");
    check(try_open(dir, "w", O_RDONLY) == EWOULDBLOCK, "the write lease keeps readers out");
    break_signal(4, w, "the write lease is broken, with its signal");
    check(fcntl(b2, F_SETLEASE, F_UNLCK) == 0 && try_open(dir, "b2", O_WRONLY) == 0, "once given up, the file opens");
    pass();
}
