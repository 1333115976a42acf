/* Test harness helper, not a test program: runs CMD as a child subreaper, sends CMD SIGKILL
 * after USEC microseconds (never if USEC is negative), and waits for every descendant, orphans
 * included, before it exits. Each process it reaps is reported on stderr as
 * "killafter: reaped PID exit N" or "killafter: reaped PID signal N".
 * Exit status: CMD's, 128+N if CMD died by signal N.
 * usage: killafter USEC CMD [ARGS...] */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: killafter USEC CMD [ARGS...]\n");
        return 2;
    }
    long usec = atol(argv[1]);
    if (prctl(PR_SET_CHILD_SUBREAPER, 1) != 0) {
        perror("killafter: PR_SET_CHILD_SUBREAPER");
        return 2;
    }
    pid_t child = fork();
    if (child < 0) {
        perror("killafter: fork");
        return 2;
    }
    if (child == 0) {
        execvp(argv[2], argv + 2);
        perror("killafter: exec");
        _exit(127);
    }
    int code = -1;
    if (usec >= 0) {
        struct timespec ts = {usec / 1000000, (usec % 1000000) * 1000};
        nanosleep(&ts, NULL);
        int st;
        pid_t r = waitpid(child, &st, WNOHANG);
        if (r == child) {
            code = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
            fprintf(stderr, "killafter: reaped %d %s %d\n", (int)r, WIFEXITED(st) ? "exit" : "signal", WIFEXITED(st) ? WEXITSTATUS(st) : WTERMSIG(st));
        } else {
            kill(child, SIGKILL);
        }
    }
    for (;;) {
        int st;
        pid_t r = wait(&st);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            break;
        }
        if (r == child)
            code = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
        if (WIFEXITED(st))
            fprintf(stderr, "killafter: reaped %d exit %d\n", (int)r, WEXITSTATUS(st));
        else
            fprintf(stderr, "killafter: reaped %d signal %d\n", (int)r, WTERMSIG(st));
    }
    return code < 0 ? 2 : code;
}
