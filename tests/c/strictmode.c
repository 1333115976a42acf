/* Seccomp strict mode: a child enters it and waits in read() on a pipe. After restart the
 * parent finds the child still in strict mode (/proc/PID/status), has it answer one byte
 * (read and write are allowed), then asks a second child in strict mode for a system call
 * strict mode forbids, which kills it with SIGKILL: the mode is enforced again, not only
 * shown. */
#define _GNU_SOURCE
#include <linux/seccomp.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include "prog.h"

static pid_t strict_child(int *to, int *from)
{
    int down[2], up[2];
    check(pipe(down) == 0 && pipe(up) == 0, "pipes");
    pid_t pid = fork();
    check(pid >= 0, "fork");
    if (pid == 0) {
        close(down[1]);
        close(up[0]);
        if (prctl(PR_SET_SECCOMP, SECCOMP_MODE_STRICT) != 0)
            syscall(SYS_exit, 2);
        char c;
        if (read(down[0], &c, 1) != 1)
            syscall(SYS_exit, 3);
        if (c == 'k')
            syscall(SYS_getpid); /* forbidden: SIGKILL */
        c = 'E';
        write(up[1], &c, 1);
        syscall(SYS_exit, 0);
    }
    close(down[0]);
    close(up[1]);
    *to = down[1];
    *from = up[0];
    return pid;
}

static int seccomp_mode(pid_t pid)
{
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%d/status", pid);
    FILE *f = fopen(path, "r");
    int mode = -1;
    while (f && fgets(line, sizeof line, f))
        if (sscanf(line, "Seccomp:\t%d", &mode) == 1)
            break;
    if (f)
        fclose(f);
    return mode;
}

int main(void)
{
    int to1, from1, to2, from2;
    pid_t one = strict_child(&to1, &from1), two = strict_child(&to2, &from2);
    for (int i = 0; i < 200 && (seccomp_mode(one) != 1 || seccomp_mode(two) != 1); i++)
        usleep(10000);
    check(seccomp_mode(one) == 1 && seccomp_mode(two) == 1, "the children are in strict mode");
    ready();
    wait_for_verify(NULL);

    check(seccomp_mode(one) == 1 && seccomp_mode(two) == 1, "the children are still in strict mode");
    char c = 'e';
    check(write(to1, &c, 1) == 1 && read(from1, &c, 1) == 1 && c == 'E', "the first child answers");
    int st;
    check(waitpid(one, &st, 0) == one && WIFEXITED(st) && WEXITSTATUS(st) == 0, "the first child exits as it may");
    c = 'k';
    check(write(to2, &c, 1) == 1, "the second child is asked for a forbidden call");
    check(waitpid(two, &st, 0) == two && WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL, "strict mode kills the second child for it");
    pass();
}
