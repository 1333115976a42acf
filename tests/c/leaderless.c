/* A process group whose leader has ended: a child leads a group, makes two siblings in it
 * (CLONE_PARENT: children of this process), one that lives on and one that exits at once and
 * stays a zombie, then exits itself and is reaped. After restart both siblings are in the
 * group of the ended leader's id, the zombie is still there to be waited for, and the group's
 * id is not a process (the stand-in leader that made it again has ended). */
#define _GNU_SOURCE
#include <sched.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include "prog.h"

int main(void)
{
    int p[2];
    check(pipe(p) == 0, "pipe");
    pid_t leader = fork();
    check(leader >= 0, "fork");
    if (leader == 0) {
        check(setpgid(0, 0) == 0, "setpgid");
        pid_t kids[2];
        for (int i = 0; i < 2; i++) {
            kids[i] = syscall(SYS_clone, CLONE_PARENT | SIGCHLD, 0, 0, 0, 0);
            if (kids[i] == 0) {
                if (i == 1)
                    _exit(7);
                prctl(PR_SET_PDEATHSIG, SIGKILL);
                for (;;)
                    pause();
            }
        }
        check(write(p[1], kids, sizeof kids) == sizeof kids, "telling the siblings' pids");
        _exit(0);
    }
    pid_t kids[2];
    check(read(p[0], kids, sizeof kids) == sizeof kids, "the siblings' pids");
    check(waitpid(leader, NULL, 0) == leader, "reaping the group leader");
    siginfo_t si;
    memset(&si, 0, sizeof si);
    check(waitid(P_PID, kids[1], &si, WEXITED | WNOWAIT) == 0 && si.si_pid == kids[1], "the zombie sibling");
    check(getpgid(kids[0]) == leader && getpgid(kids[1]) == leader, "both siblings in the leader's group");
    ready();
    wait_for_verify(NULL);

    check(getpgid(kids[0]) == leader, "the living sibling is in the group of the ended leader");
    check(getpgid(kids[1]) == leader, "the zombie sibling is in the group of the ended leader");
    check(kill(leader, 0) == -1, "no process has the ended leader's id");
    check(kill(-leader, 0) == 0, "the group can be signalled");
    memset(&si, 0, sizeof si);
    check(waitid(P_PID, kids[1], &si, WEXITED) == 0 && si.si_pid == kids[1] && si.si_code == CLD_EXITED && si.si_status == 7, "the zombie is reaped with its status");
    memset(&si, 0, sizeof si);
    check(waitid(P_ALL, 0, &si, WEXITED | WNOHANG) == 0 && si.si_pid == 0, "no other child has ended (no stand-in left to reap)");
    kill(kids[0], SIGKILL);
    check(waitpid(kids[0], NULL, 0) == kids[0], "reaping the living sibling");
    pass();
}
