/* A batch job's work for the cr_slurm test: the sum of i*i for i = 1..STEPS*CHUNK, computed a
 * chunk per step with a pause after each (STEP_MS milliseconds), one progress line per step,
 * and checked at the end against the closed form n(n+1)(2n+1)/6 (modulo 2^64). It prints
 * "begin" only when it starts afresh: a run restarted from a checkpoint goes on from the step
 * it had reached, so its output shows one "begin" however often it was preempted. The sum,
 * the step and the start time live only in memory.
 * usage: longsum STEPS STEP_MS */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

static void check(int ok, const char *what)
{
    if (!ok) {
        printf("FAIL: %s\n", what);
        fflush(stdout);
        exit(1);
    }
}

#define CHUNK 1000000ull

int main(int argc, char **argv)
{
    check(argc == 3, "usage: longsum STEPS STEP_MS");
    long steps = atol(argv[1]), step_ms = atol(argv[2]);
    uint64_t sum = 0;
    printf("begin pid %d steps %ld\n", (int)getpid(), steps);
    fflush(stdout);
    for (long s = 1; s <= steps; s++) {
        for (uint64_t i = (uint64_t)(s - 1) * CHUNK + 1; i <= (uint64_t)s * CHUNK; i++)
            sum += i * i;
        printf("step %ld/%ld pid %d partial %llu\n", s, steps, (int)getpid(), (unsigned long long)sum);
        fflush(stdout);
        struct timespec ts = { step_ms / 1000, (step_ms % 1000) * 1000000L };
        while (nanosleep(&ts, &ts) == -1)
            ;
    }
    unsigned __int128 n = (unsigned __int128)steps * CHUNK;
    uint64_t expect = (uint64_t)(n * (n + 1) * (2 * n + 1) / 6);
    check(sum == expect, "the sum equals n(n+1)(2n+1)/6");
    printf("RESULT ok %llu\n", (unsigned long long)sum);
    fflush(stdout);
    return 0;
}
