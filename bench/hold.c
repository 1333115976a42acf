/* Benchmark target: holds argv[1] MiB of data in an anonymous mapping, prints "ready", then
 * sleeps. The data is pseudo-random (incompressible), or with argv[2] = "mixed", 1 MiB chunks in
 * turn: two of zeros (written, so the pages exist), one of English-like text, one random.
 * On SIGUSR2 it checks every byte against the generator and exits 0 (PASS) or 1 (FAIL), so the
 * benchmark knows a restored copy is right. */
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define CHUNK (1u << 20)

static volatile sig_atomic_t check;
static void on_usr2(int s) { (void)s; check = 1; }

static uint64_t next(uint64_t *x)
{
    *x ^= *x >> 12; *x ^= *x << 25; *x ^= *x >> 27;
    return *x * 0x2545F4914F6CDD1Dull;
}

static const char *words[] = {"the", "process", "memory", "of", "a", "checkpoint", "and", "restart", "is", "saved",
                              "to", "file", "then", "brought", "back", "after", "crash", "or", "reboot", "with",
                              "its", "threads", "registers", "open", "files", "signal", "state", "on", "another", "node"};

/* Chunk `i` of the data, as it must be. */
static void chunk(size_t i, int mixed, unsigned char *out)
{
    uint64_t x = 88172645463325252ull ^ (i * 0x9E3779B97F4A7C15ull);
    int kind = mixed ? (int)(i % 4) : 3;
    if (kind < 2) {
        memset(out, 0, CHUNK);
    } else if (kind == 2) {
        size_t at = 0;
        while (at < CHUNK) {
            const char *w = words[next(&x) % (sizeof words / sizeof words[0])];
            size_t l = strlen(w);
            for (size_t k = 0; k < l && at < CHUNK; k++)
                out[at++] = w[k];
            if (at < CHUNK)
                out[at++] = (next(&x) % 12 == 0) ? '\n' : ' ';
        }
    } else {
        for (size_t k = 0; k < CHUNK; k += 8) {
            uint64_t v = next(&x);
            memcpy(out + k, &v, 8);
        }
    }
}

int main(int argc, char **argv)
{
    size_t len = (size_t)atol(argv[1]) << 20;
    int mixed = argc > 2 && strcmp(argv[2], "mixed") == 0;
    unsigned char *m = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED)
        return 2;
    for (size_t i = 0; i < len / CHUNK; i++)
        chunk(i, mixed, m + i * CHUNK);
    signal(SIGUSR2, on_usr2);
    printf("ready\n");
    fflush(stdout);
    while (!check)
        pause();
    unsigned char *want = malloc(CHUNK);
    for (size_t i = 0; i < len / CHUNK; i++) {
        chunk(i, mixed, want);
        if (memcmp(want, m + i * CHUNK, CHUNK) != 0) {
            printf("FAIL in MiB %zu\n", i);
            return 1;
        }
    }
    printf("PASS\n");
    return 0;
}
