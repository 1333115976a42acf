/* Stopped processes. With "tree": becomes a process group leader (so that its group is not
 * orphaned and SIGTSTP stops), forks a child, stops it with SIGTSTP and sees the stop with
 * waitid(WNOWAIT), says "ready" and ticks. After the restart (SIGUSR2) it checks that the child
 * is still stopped and that waitid still reports the stop, by SIGTSTP, continues it with
 * SIGCONT, sees it continue and exit with status 7, and prints PASS.
 * With "single": counts SIGCONTs, says "ready" and ticks; the test stops it, checkpoints and
 * restarts it, checks it stays stopped, continues it and sends SIGUSR2: it checks that it was
 * continued and prints PASS. */
#define _GNU_SOURCE
#include <errno.h>
#include <sys/wait.h>
#include "prog.h"

static volatile sig_atomic_t conts;
static void on_cont(int s)
{
    (void)s;
    conts++;
}

static char state_of(pid_t pid)
{
    char path[64], buf[512];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return '?';
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    char *p = strrchr(buf, ')');
    return p && p[1] ? p[2] : '?';
}

static int tree(void)
{
    check(setpgid(0, 0) == 0, "setpgid");
    /* Before the fork: the child may stop before it runs a single instruction. */
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_cont;
    sigaction(SIGCONT, &sa, NULL);
    pid_t child = fork();
    check(child >= 0, "fork");
    if (child == 0) {
        while (!conts)
            pause();
        _exit(7);
    }
    check(kill(child, SIGTSTP) == 0, "SIGTSTP");
    siginfo_t si;
    memset(&si, 0, sizeof si);
    check(waitid(P_PID, child, &si, WSTOPPED | WNOWAIT) == 0 && si.si_code == CLD_STOPPED && si.si_status == SIGTSTP, "the child stops by SIGTSTP");
    ready();
    wait_for_verify(NULL);

    check(state_of(child) == 'T', "the child is still stopped after the restart");
    memset(&si, 0, sizeof si);
    check(waitid(P_PID, child, &si, WSTOPPED | WNOHANG) == 0 && si.si_pid == child && si.si_code == CLD_STOPPED, "waitid still reports the child's stop");
    check(si.si_status == SIGTSTP, "by the signal that stopped it");
    check(kill(child, SIGCONT) == 0, "SIGCONT");
    /* It continues (reported unless it has ended meanwhile), its SIGCONT handler runs and it
     * exits with 7. */
    int st;
    check(waitpid(child, &st, WCONTINUED) == child, "waitpid");
    if (WIFCONTINUED(st))
        check(waitpid(child, &st, 0) == child, "waitpid");
    check(WIFEXITED(st) && WEXITSTATUS(st) == 7, "the child continues and runs on to its end");
    pass();
    return 0;
}

int main(int argc, char **argv)
{
    if (argc > 1 && strcmp(argv[1], "tree") == 0)
        return tree();
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_cont;
    sigaction(SIGCONT, &sa, NULL);
    ready();
    wait_for_verify(NULL);
    check(conts >= 1, "the restored process was continued");
    pass();
}
