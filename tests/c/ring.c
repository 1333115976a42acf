/* A ring of N processes (8, or RING_N from the environment, or the second argument, up to
 * 1000) passing a counter
 * through pipes. Process 0 forks process 1, which forks process 2, ... (a chain N deep);
 * process k reads the counter from pipe k and writes it plus one to pipe k+1 (mod N), so it
 * sees k, k+N, k+2N, ... and checks that no value is lost
 * or repeated. Every process checks its PID and parent PID stay the same ("same-pid"; the
 * first one's parent is cr_restart after a restart).
 * On SIGUSR2, process 0 sends a stop mark around the ring; each process passes it on, waits
 * for its child and exits with the child's failure or its own; process 0 prints PASS. */
#include "prog.h"

#include <errno.h>
#include <stdint.h>
#include <sys/wait.h>

static int N = 8;
/* Hops the counter makes between two ticks (64 rounds of a ring of 8). */
#define HOPS 512
#define STOP UINT64_MAX

static int same_pid;

static void xread(int fd, uint64_t *v)
{
    for (;;) {
        ssize_t r = read(fd, v, sizeof *v);
        if (r == (ssize_t)sizeof *v)
            return;
        if (r < 0 && errno == EINTR)
            continue;
        check(0, "reading the counter from the ring");
    }
}

static void xwrite(int fd, uint64_t v)
{
    for (;;) {
        ssize_t r = write(fd, &v, sizeof v);
        if (r == (ssize_t)sizeof v)
            return;
        if (r < 0 && errno == EINTR)
            continue;
        check(0, "writing the counter into the ring");
    }
}

/* Runs member k of the ring; never returns. */
__attribute__((noreturn)) static void member(int k, int (*fds)[2])
{
    pid_t me = getpid(), parent = getppid(), child = 0;
    if (k + 1 < N) {
        child = fork();
        check(child >= 0, "fork");
        if (child == 0) {
            member(k + 1, fds);
        }
    }
    for (int i = 0; i < N; i++) {
        if (i != k)
            close(fds[i][0]);
        if (i != (k + 1) % N)
            close(fds[i][1]);
    }
    int in = fds[k][0], out = fds[(k + 1) % N][1];
    uint64_t last = 0, seen = 0;
    if (k == 0) {
        xwrite(out, 1); /* member 0 has "seen" 0 */
        seen = 1;
    }
    int stopping = 0;
    for (;;) {
        uint64_t v;
        xread(in, &v);
        if (v == STOP) {
            if (k != 0)
                xwrite(out, STOP);
            break;
        }
        check(v % N == (uint64_t)k, "a counter reached the wrong member");
        check(seen == 0 || v == last + N, "a counter value was lost or repeated");
        last = v;
        seen++;
        if (same_pid) {
            check(getpid() == me, "PID unchanged");
            check(k == 0 || getppid() == parent, "parent PID unchanged");
        }
        if (k == 0 && verify_now && !stopping) {
            /* Stop once the ring has gone round a few more times since the restart. */
            stopping = 1;
            xwrite(out, STOP);
            continue;
        }
        uint64_t per_tick = HOPS / N > 4 ? HOPS / N : 4;
        if (k == 0 && seen == per_tick)
            ready();
        if (k == 0 && !stopping && seen % per_tick == 0) {
            printf("tick %llu\n", (unsigned long long)v);
            fflush(stdout);
        }
        struct timespec ts = {0, 500 * 1000};
        nanosleep(&ts, NULL);
        xwrite(out, v + 1);
    }
    int failed = 0;
    if (child > 0) {
        int st;
        while (waitpid(child, &st, 0) < 0 && errno == EINTR) {
        }
        failed = !WIFEXITED(st) || WEXITSTATUS(st) != 0;
    }
    if (k == 0) {
        check(!failed, "every member of the ring ended well");
        check(seen * N > 800, "the counter went round");
        pass();
    }
    _exit(failed ? 1 : 0);
}

int main(int argc, char **argv)
{
    same_pid = argc > 1 && strcmp(argv[1], "same-pid") == 0;
    const char *n = getenv("RING_N");
    if (n && *n)
        N = atoi(n);
    if (argc > 2)
        N = atoi(argv[2]);
    check(N >= 2 && N <= 1000, "RING_N between 2 and 1000");
    int (*fds)[2] = calloc((size_t)N, sizeof *fds);
    check(fds != NULL, "calloc");
    for (int i = 0; i < N; i++)
        check(pipe(fds[i]) == 0, "pipe");
    alarm(120);
    member(0, fds);
    return 1;
}
