/* A parent with two children that have ended and are not reaped yet (zombies): one exited
 * with status 7, one was killed by SIGTERM. After the restart, on SIGUSR2, the parent reaps
 * them: waitpid on their PIDs gives back exactly those statuses ("same-pid": the PIDs are the
 * saved ones; otherwise any child is reaped). A third child, alive, is reaped after SIGKILL. */
#include "prog.h"

#include <errno.h>
#include <sys/wait.h>

int main(int argc, char **argv)
{
    int same_pid = argc > 1 && strcmp(argv[1], "same-pid") == 0;
    pid_t exited = fork();
    check(exited >= 0, "fork");
    if (exited == 0)
        _exit(7);
    pid_t killed = fork();
    check(killed >= 0, "fork");
    if (killed == 0) {
        for (;;)
            pause();
    }
    kill(killed, SIGTERM);
    pid_t alive = fork();
    check(alive >= 0, "fork");
    if (alive == 0) {
        for (;;)
            pause();
    }
    /* Wait until both have ended, without reaping them. */
    siginfo_t si;
    check(waitid(P_PID, exited, &si, WEXITED | WNOWAIT) == 0, "first child ended");
    check(waitid(P_PID, killed, &si, WEXITED | WNOWAIT) == 0, "second child ended");
    ready();
    wait_for_verify(NULL);
    int st, seen = 0;
    for (int i = 0; i < 2; i++) {
        pid_t p = waitpid(same_pid ? (i == 0 ? exited : killed) : -1, &st, WNOHANG);
        check(p > 0, "a zombie child is there to be reaped");
        if (p == exited || (!same_pid && WIFEXITED(st))) {
            check(WIFEXITED(st) && WEXITSTATUS(st) == 7, "the exited child's status is 7");
            seen |= 1;
        } else {
            check(WIFSIGNALED(st) && WTERMSIG(st) == SIGTERM, "the killed child died by SIGTERM");
            seen |= 2;
        }
    }
    check(seen == 3, "both zombies reaped");
    check(kill(alive, SIGKILL) == 0, "the live child is there");
    check(waitpid(alive, &st, 0) == alive && WIFSIGNALED(st), "the live child reaped");
    check(waitpid(-1, &st, WNOHANG) < 0 && errno == ECHILD, "no other child");
    pass();
}
