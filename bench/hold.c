/* Benchmark target: holds argv[1] MiB of pseudo-random (incompressible) data in an anonymous
 * mapping, prints "ready", then sleeps. On SIGUSR2 it checks every byte against the generator
 * and exits 0 (PASS) or 1 (FAIL), so the benchmark knows a restored copy is right. */
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

static volatile sig_atomic_t check;
static void on_usr2(int s) { (void)s; check = 1; }

static uint64_t next(uint64_t *x)
{
    *x ^= *x >> 12; *x ^= *x << 25; *x ^= *x >> 27;
    return *x * 0x2545F4914F6CDD1Dull;
}

int main(int argc, char **argv)
{
    size_t len = (size_t)atol(argv[1]) << 20;
    uint64_t *m = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED)
        return 2;
    uint64_t x = 88172645463325252ull;
    for (size_t i = 0; i < len / 8; i++)
        m[i] = next(&x);
    signal(SIGUSR2, on_usr2);
    printf("ready\n");
    fflush(stdout);
    while (!check)
        pause();
    x = 88172645463325252ull;
    for (size_t i = 0; i < len / 8; i++)
        if (m[i] != next(&x)) {
            printf("FAIL at %zu\n", i * 8);
            return 1;
        }
    printf("PASS\n");
    return 0;
}
