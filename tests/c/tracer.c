/* A tracer and its tracee, as a debugger (strace, gdb) and the program it runs: the child
 * asks to be traced and ticks; the parent lets it run on after every stop. Prints "ready"
 * once the child is traced. */
#include <signal.h>
#include <stdio.h>
#include <sys/ptrace.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

int main(void)
{
    pid_t c = fork();
    if (c == 0) {
        ptrace(PTRACE_TRACEME, 0, 0, 0);
        raise(SIGSTOP);
        for (;;) {
            struct timespec ts = {0, 50 * 1000 * 1000};
            nanosleep(&ts, NULL);
        }
    }
    int st;
    waitpid(c, &st, 0);
    printf("ready %d\n", (int)c);
    fflush(stdout);
    ptrace(PTRACE_CONT, c, 0, 0);
    while (waitpid(c, &st, 0) == c && WIFSTOPPED(st))
        ptrace(PTRACE_CONT, c, 0, WSTOPSIG(st) == SIGSTOP ? 0 : WSTOPSIG(st));
    return 0;
}
