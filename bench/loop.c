/* Benchmark target for downtime: fills argv[1] MiB of an anonymous mapping with pseudo-random
 * data (so that a copy-on-write snapshot of it has real page tables to copy), prints "ready",
 * then spins in a tight loop reading CLOCK_MONOTONIC and keeps the longest gap between two
 * consecutive readings: whatever stops it (a checkpoint, the scheduler) shows as a gap.
 * On SIGUSR1 it prints "gap_us N" (the longest gap since the previous report, in microseconds)
 * and starts over. On SIGUSR2 it checks its data and prints PASS (exit 0) or FAIL (exit 1). */
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

#define CHUNK (1u << 20)

static volatile sig_atomic_t report, check;
static void on_usr1(int s) { (void)s; report = 1; }
static void on_usr2(int s) { (void)s; check = 1; }

static void fill(size_t i, uint64_t *out)
{
    uint64_t x = 0x9E3779B97F4A7C15ull ^ (i * 0xD1B54A32D192ED03ull);
    for (size_t k = 0; k < CHUNK / 8; k++) {
        x ^= x >> 12; x ^= x << 25; x ^= x >> 27;
        out[k] = x * 0x2545F4914F6CDD1Dull;
    }
}

static int64_t now_ns(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (int64_t)t.tv_sec * 1000000000 + t.tv_nsec;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: loop MiB\n");
        return 2;
    }
    size_t len = (size_t)atol(argv[1]) << 20;
    unsigned char *m = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED)
        return 2;
    for (size_t i = 0; i < len / CHUNK; i++)
        fill(i, (uint64_t *)(m + i * CHUNK));
    signal(SIGUSR1, on_usr1);
    signal(SIGUSR2, on_usr2);
    printf("ready\n");
    fflush(stdout);
    int64_t prev = now_ns(), longest = 0;
    while (!check) {
        int64_t t = now_ns();
        if (t - prev > longest)
            longest = t - prev;
        prev = t;
        if (report) {
            report = 0;
            printf("gap_us %lld\n", (long long)(longest / 1000));
            fflush(stdout);
            longest = 0;
            prev = now_ns();
        }
    }
    uint64_t *want = malloc(CHUNK);
    for (size_t i = 0; i < len / CHUNK; i++) {
        fill(i, want);
        if (memcmp(want, m + i * CHUNK, CHUNK) != 0) {
            printf("FAIL in MiB %zu\n", i);
            return 1;
        }
    }
    printf("PASS\n");
    return 0;
}
