/* Pseudo-terminals inside the checkpoint, both ends in the image.
 *
 * The parent opens a pty pair and forks a child that starts a session, takes the slave as its
 * controlling terminal, puts it in raw mode with a window size of 37x111, and forks the
 * echoer: a process in a group of its own, which the child puts in the foreground. The
 * echoer reads "ping N" lines from the terminal and answers "ok N count=C" (C: bytes it has
 * read so far) after checking, each time, that its controlling terminal is the slave
 * (`/dev/tty` opens, `tty_nr`, `ttyname`, `tcgetsid`), that its group is in the foreground, and the window
 * size and settings; otherwise it answers "bad: why". The parent pings every 20 ms and checks
 * each answer, so a checkpoint may find a ping or an answer queued in the pair.
 *
 * A second pair stays in canonical mode with echo: the parent has written "partial" into it,
 * a line not ended, which is queued for its slave, and its echo is queued for its master.
 *
 * On SIGUSR2 (restarted) the parent pings 20 more times, ends the partial line and checks that
 * the slave reads "partial line\n" and the master the echo "partial line\r\n", then prints
 * PASS, having ended the echoer and the child. The child and the echoer die with their parents
 * (PR_SET_PDEATHSIG) if the parent fails. */
#define _GNU_SOURCE
#include "prog.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <termios.h>

#define ROWS 37
#define COLS 111

/* tty_nr of /proc/self/stat: the controlling terminal's device number. */
static long ctty_nr(void)
{
    char buf[1024];
    FILE *f = fopen("/proc/self/stat", "r");
    if (!f)
        return -1;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    char *p = strrchr(buf, ')');
    long tty = -1;
    if (!p || sscanf(p + 2, "%*c %*d %*d %*d %ld", &tty) != 1)
        return -1;
    return tty;
}

static void echoer(void)
{
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    char line[256];
    size_t len = 0;
    long count = 0;
    while (tcgetpgrp(0) != getpgrp())
        usleep(1000);
    if (write(1, "hello\n", 6) != 6)
        _exit(4);
    for (;;) {
        char c;
        ssize_t n = read(0, &c, 1);
        if (n <= 0)
            _exit(3);
        count++;
        if (c != '\n') {
            if (len < sizeof line - 1)
                line[len++] = c;
            continue;
        }
        line[len] = 0;
        len = 0;
        const char *bad = NULL;
        struct stat s0, sn;
        struct winsize ws;
        struct termios t;
        int tty = open("/dev/tty", O_RDWR | O_NOCTTY);
        const char *name = ttyname(0);
        if (tty < 0)
            bad = "no controlling terminal";
        else if (fstat(0, &s0) || ctty_nr() != (long)s0.st_rdev)
            bad = "the controlling terminal (tty_nr of /proc/self/stat) is not the terminal on fd 0";
        else if (!name || stat(name, &sn) || sn.st_rdev != s0.st_rdev)
            bad = "ttyname(0) does not name the terminal on fd 0";
        else if (tcgetpgrp(0) != getpgrp())
            bad = "the echoer's group is not in the foreground";
        else if (tcgetsid(0) != getsid(0))
            bad = "the terminal is not the session's";
        else if (getpgrp() == getsid(0))
            bad = "the echoer is in the session leader's group";
        else if (ioctl(0, TIOCGWINSZ, &ws) || ws.ws_row != ROWS || ws.ws_col != COLS)
            bad = "window size";
        else if (tcgetattr(0, &t) || (t.c_lflag & (ICANON | ECHO)) || (t.c_oflag & OPOST))
            bad = "the terminal is not raw";
        if (tty >= 0)
            close(tty);
        char out[512];
        int k = bad ? snprintf(out, sizeof out, "bad: %s (%s)\n", bad, line) : snprintf(out, sizeof out, "ok %s count=%ld\n", line + 5, count);
        if (write(1, out, k) != k)
            _exit(4);
    }
}

static void session(const char *slave)
{
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    setsid();
    int fd = open(slave, O_RDWR | O_NOCTTY);
    if (fd < 0 || ioctl(fd, TIOCSCTTY, 0))
        _exit(5);
    struct termios t;
    tcgetattr(fd, &t);
    cfmakeraw(&t);
    tcsetattr(fd, TCSANOW, &t);
    struct winsize ws = {.ws_row = ROWS, .ws_col = COLS};
    ioctl(fd, TIOCSWINSZ, &ws);
    dup2(fd, 0);
    dup2(fd, 1);
    dup2(fd, 2);
    if (fd > 2)
        close(fd);
    pid_t e = fork();
    if (e < 0)
        _exit(6);
    if (e == 0) {
        setpgid(0, 0);
        echoer();
    }
    setpgid(e, e);
    signal(SIGTTOU, SIG_IGN);
    if (tcsetpgrp(0, e))
        _exit(7);
    int st;
    while (waitpid(e, &st, 0) < 0 && errno == EINTR)
        ;
    _exit(8);
}

/* Reads one line from the master into buf, waiting up to 5 s. */
static void read_line(int m, char *buf, size_t size)
{
    size_t len = 0;
    for (;;) {
        struct pollfd p = {.fd = m, .events = POLLIN};
        int r = poll(&p, 1, 5000);
        if (r < 0 && errno == EINTR)
            continue; /* a restart interrupts a poll with a timeout, as a signal does */
        check(r == 1, "an answer from the echoer within 5 s");
        char c;
        ssize_t n = read(m, &c, 1);
        if (n < 0 && errno == EINTR)
            continue;
        check(n == 1, "reading the master");
        if (c == '\n')
            break;
        if (len < size - 1)
            buf[len++] = c;
    }
    buf[len] = 0;
}

static long sent;

static void ping(int m, long n)
{
    char out[64], want[128], got[256];
    int k = snprintf(out, sizeof out, "ping %ld\n", n);
    check(write(m, out, k) == k, "writing a ping");
    sent += k;
    read_line(m, got, sizeof got);
    snprintf(want, sizeof want, "ok %ld count=%ld", n, sent);
    if (strcmp(got, want)) {
        printf("FAIL: answer %s, expected %s\n", got, want);
        fflush(stdout);
        exit(1);
    }
}

static void read_all(int fd, char *buf, size_t size, size_t want)
{
    size_t len = 0;
    while (len < want && len < size - 1) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        int r = poll(&p, 1, 5000);
        if (r < 0 && errno == EINTR)
            continue;
        check(r == 1, "the partial line's bytes within 5 s");
        ssize_t n = read(fd, buf + len, size - 1 - len);
        check(n > 0, "reading the canonical pair");
        len += n;
    }
    buf[len] = 0;
}

int main(void)
{
    int m = posix_openpt(O_RDWR | O_NOCTTY);
    check(m >= 0 && grantpt(m) == 0 && unlockpt(m) == 0, "a pty");
    char slave[64];
    check(ptsname_r(m, slave, sizeof slave) == 0, "ptsname");
    pid_t child = fork();
    check(child >= 0, "fork");
    if (child == 0)
        session(slave);

    /* The canonical pair, a line half typed. */
    int m2 = posix_openpt(O_RDWR | O_NOCTTY);
    check(m2 >= 0 && grantpt(m2) == 0 && unlockpt(m2) == 0, "a second pty");
    int s2 = open(ptsname(m2), O_RDWR | O_NOCTTY);
    check(s2 >= 0, "the second pty's slave");
    check(write(m2, "partial", 7) == 7, "typing half a line");

    char hello[256];
    read_line(m, hello, sizeof hello);
    check(!strcmp(hello, "hello"), "the echoer says hello");
    long n = 0;
    for (int i = 0; i < 5; i++)
        ping(m, n++);
    ready();
    for (;;) {
        ping(m, n++);
        printf("tick %ld %s\n", n, slave);
        fflush(stdout);
        if (verify_now)
            break;
        struct timespec ts = {0, 20 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    for (int i = 0; i < 20; i++)
        ping(m, n++);
    char now[64];
    check(ptsname_r(m, now, sizeof now) == 0, "ptsname after the restart");
    if (strcmp(now, slave))
        printf("note: the pty is %s now (was %s)\n", now, slave);

    check(write(m2, " line\n", 6) == 6, "ending the line");
    char buf[256];
    read_all(s2, buf, sizeof buf, 13);
    if (strcmp(buf, "partial line\n")) {
        printf("FAIL: the canonical slave read '%s'\n", buf);
        exit(1);
    }
    read_all(m2, buf, sizeof buf, 14);
    if (strcmp(buf, "partial line\r\n")) {
        printf("FAIL: the canonical master read the echo '%s'\n", buf);
        exit(1);
    }
    /* The echoer first, so that the child reaps it, then the child. */
    pid_t fg = tcgetpgrp(m);
    check(fg > 0 && kill(-fg, SIGKILL) == 0, "ending the echoer's group");
    int st;
    check(waitpid(child, &st, 0) == child && WIFEXITED(st) && WEXITSTATUS(st) == 8, "the child reaps the echoer and ends");
    pass();
}
