/* Benchmark target for incremental checkpoints: holds argv[1] MiB in an anonymous mapping, each
 * 8-byte word made from its page, the generation that last wrote the page (kept in gen[]) and its
 * index. Prints "ready ADDRESS BYTES", then:
 *   (no argv[3])  on SIGUSR1 rewrites the next argv[2] MiB (wrapping round the mapping) with a new
 *                 generation and prints "rewrote N"; between signals it sleeps, so a checkpoint
 *                 always finds it between two rewrites;
 *   argv[3] work  rewrites the first argv[2] MiB over and over, as its own work, and every 0.5 s
 *                 prints "work MIB SECONDS" (MiB rewritten so far, CLOCK_MONOTONIC), the measure
 *                 of its progress.
 * On SIGUSR2 (taken between two pages) it checks every word and prints "PASS" and exits 0, or
 * prints "FAIL ..." and exits 1. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

static volatile sig_atomic_t want_round, want_check;
static void on_usr1(int s) { (void)s; want_round = 1; }
static void on_usr2(int s) { (void)s; want_check = 1; }

static unsigned long value(size_t p, unsigned g, size_t w) { return (p * 0x9E3779B97F4A7C15ul) ^ ((unsigned long)g << 40) ^ (w + 1); }

static unsigned long *mem;
static unsigned *gen;
static size_t pages;

static void write_page(size_t p, unsigned g)
{
    gen[p] = g;
    for (size_t w = 0; w < 512; w++) mem[p * 512 + w] = value(p, g, w);
}

static int check(void)
{
    for (size_t p = 0; p < pages; p++)
        for (size_t w = 0; w < 512; w++)
            if (mem[p * 512 + w] != value(p, gen[p], w)) {
                printf("FAIL page %zu word %zu\n", p, w);
                return 1;
            }
    printf("PASS\n");
    return 0;
}

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

int main(int argc, char **argv)
{
    pages = (size_t)atol(argc > 1 ? argv[1] : "1024") * 256;
    size_t step = (size_t)atol(argc > 2 ? argv[2] : "64") * 256;
    int work = argc > 3;
    if (step == 0 || step > pages) step = pages;
    mem = mmap(NULL, pages * 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    gen = mmap(NULL, pages * sizeof *gen, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (mem == MAP_FAILED || gen == MAP_FAILED) return 2;
    for (size_t p = 0; p < pages; p++) write_page(p, 0);
    signal(SIGUSR1, on_usr1);
    signal(SIGUSR2, on_usr2);
    setvbuf(stdout, NULL, _IOLBF, 0);
    printf("ready %p %zu\n", (void *)mem, pages * 4096);
    unsigned g = 0;
    size_t at = 0;
    if (work) {
        unsigned long done = 0;
        double next = now() + 0.5;
        for (g = 1;; g++)
            for (size_t p = 0; p < step; p++) {
                if (want_check) return check();
                write_page(p, g);
                if (++done % 256 == 0 && now() >= next) {
                    printf("work %lu %.6f\n", done / 256, now());
                    next += 0.5;
                }
            }
    }
    for (;;) {
        struct timespec ts = {0, 2 * 1000 * 1000};
        nanosleep(&ts, NULL);
        if (want_check) return check();
        if (want_round) {
            want_round = 0;
            g++;
            for (size_t k = 0; k < step; k++) write_page((at + k) % pages, g);
            at = (at + step) % pages;
            printf("rewrote %u\n", g);
        }
    }
}
