/* Processes sharing one descriptor table (clone with CLONE_FILES): a child sharing its
 * parent's table, a grandchild sharing it too (through the child), and a child of the child
 * made without CLONE_FILES, which has a copy of its own. Before the checkpoint a file is open
 * at fd 40 in the shared table and fd 41 is open in the copy only. On SIGUSR2 the parent opens
 * a pipe at fd 50: the sharing processes must see it (they write to it), the one with its own
 * table must not; each reads fd 40 at the offset they share. Prints PASS when every check
 * holds. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <sched.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include "prog.h"

static int go[2]; /* the parent writes one byte per child once fd 50 exists */

static pid_t clone_files(int share)
{
    return syscall(SYS_clone, (share ? CLONE_FILES : 0) | SIGCHLD, 0, 0, 0, 0);
}

/* A process sharing the table: waits for the parent's word, then checks fd 50 and writes
 * its tag into it, and reads one byte of fd 40. */
static int sharer(char tag)
{
    char c;
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (read(go[0], &c, 1) != 1)
        return 2;
    if (fcntl(50, F_GETFD) == -1)
        return 3;
    if (write(50, &tag, 1) != 1)
        return 4;
    return 0;
}

int main(void)
{
    check(pipe(go) == 0, "pipe");
    int f = open("sharedfds.data", O_RDWR | O_CREAT | O_TRUNC, 0600);
    check(f >= 0 && write(f, "abcdef", 6) == 6 && lseek(f, 0, SEEK_SET) == 0, "the data file");
    check(dup2(f, 40) == 40 && close(f) == 0, "fd 40");
    int own[2];
    check(pipe(own) == 0, "a pipe for the copy");
    pid_t child = clone_files(1);
    check(child >= 0, "clone(CLONE_FILES)");
    if (child == 0) {
        pid_t grand = clone_files(1);
        if (grand == 0)
            _exit(sharer('g'));
        pid_t copy = clone_files(0);
        if (copy == 0) {
            /* Its own table: fd 41 only here, and fd 50 never appears. */
            prctl(PR_SET_PDEATHSIG, SIGKILL);
            if (dup2(own[0], 41) != 41)
                _exit(5);
            char c;
            if (read(41, &c, 1) != 1)
                _exit(6);
            _exit(fcntl(50, F_GETFD) == -1 && fcntl(41, F_GETFD) != -1 ? 0 : 7);
        }
        int r = sharer('c');
        int st;
        if (waitpid(grand, &st, 0) != grand || !WIFEXITED(st) || WEXITSTATUS(st) != 0)
            r = 10 + (WIFEXITED(st) ? WEXITSTATUS(st) : 9);
        if (waitpid(copy, &st, 0) != copy || !WIFEXITED(st) || WEXITSTATUS(st) != 0)
            r = 20 + (WIFEXITED(st) ? WEXITSTATUS(st) : 9);
        _exit(r);
    }
    ready();
    wait_for_verify(NULL);
    check(fcntl(41, F_GETFD) == -1, "fd 41 of the copy is not in the shared table");
    char c;
    check(read(40, &c, 1) == 1 && c == 'a', "fd 40 reads from its start");
    int p[2];
    check(pipe(p) == 0 && dup2(p[1], 50) == 50, "fd 50");
    check(write(go[1], "xx", 2) == 2, "waking the sharers");
    check(write(own[1], "y", 1) == 1, "waking the copy");
    int st;
    check(waitpid(child, &st, 0) == child, "reaping the child");
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
        printf("FAIL: the child and its children found their tables wrong (status %d)\n", WIFEXITED(st) ? WEXITSTATUS(st) : -1);
        fflush(stdout);
        exit(1);
    }
    char got[3] = {0};
    check(read(p[0], got, 2) == 2 && ((got[0] == 'c' && got[1] == 'g') || (got[0] == 'g' && got[1] == 'c')), "both sharers wrote into fd 50");
    check(lseek(40, 0, SEEK_CUR) == 1, "fd 40's offset");
    pass();
}
