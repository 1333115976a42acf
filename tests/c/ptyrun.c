/* ptyrun PROG ARGS...: runs PROG in a new session whose controlling terminal, standard input,
 * output and error are a fresh pseudo-terminal, and copies what PROG writes there to ptyrun's
 * own standard output until PROG ends; exits with PROG's status. A test's stand-in for a user
 * at a terminal. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/ioctl.h>
#include <sys/wait.h>
#include <termios.h>
#include <unistd.h>

int main(int argc, char **argv)
{
    if (argc < 2)
        return 2;
    int m = posix_openpt(O_RDWR | O_NOCTTY | O_CLOEXEC);
    if (m < 0 || grantpt(m) || unlockpt(m))
        return 3;
    const char *slave = ptsname(m);
    pid_t c = fork();
    if (c == 0) {
        setsid();
        int s = open(slave, O_RDWR);
        if (s < 0)
            _exit(4);
        ioctl(s, TIOCSCTTY, 0);
        dup2(s, 0);
        dup2(s, 1);
        dup2(s, 2);
        if (s > 2)
            close(s);
        execvp(argv[1], argv + 1);
        _exit(127);
    }
    char buf[4096];
    for (;;) {
        ssize_t n = read(m, buf, sizeof buf);
        if (n <= 0)
            break; /* EIO once the last slave descriptor is closed */
        fwrite(buf, 1, n, stdout);
        fflush(stdout);
    }
    int st = 0;
    waitpid(c, &st, 0);
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}
