/* Blocked in system calls when checkpointed: nanosleep, poll and read on a pipe nobody writes
 * (nonblocking after a poll timeout), wait for a child that does not exist. Each must come
 * back with a sensible result after restart, and the program goes on. */
#include <errno.h>
#include <poll.h>
#include <sys/wait.h>
#include "prog.h"

int main(void)
{
    int p[2];
    check(pipe(p) == 0, "pipe");
    ready();
    long rounds = 0;
    while (!verify_now) {
        struct timespec ts = {0, 200 * 1000 * 1000}, rem;
        int r = nanosleep(&ts, &rem);
        check(r == 0 || errno == EINTR, "nanosleep");
        struct pollfd pf = {.fd = p[0], .events = POLLIN};
        r = poll(&pf, 1, 200);
        check(r == 0 || (r == -1 && errno == EINTR), "poll times out");
        check(waitpid(-1, NULL, WNOHANG) == -1 && errno == ECHILD, "no children");
        printf("tick %ld\n", rounds++);
        fflush(stdout);
    }
    pass();
}
