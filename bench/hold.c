/* Benchmark target: holds argv[1] MiB of data in an anonymous mapping, prints
 * "ready ADDRESS BYTES", then sleeps. What the mapping holds, in 1 MiB chunks, depends on argv[2]:
 *   (none)   pseudo-random data everywhere (incompressible);
 *   mixed    in turn two chunks of zeros (written, so the pages exist), one of English-like
 *            text, one random: half zero pages, a quarter text, a quarter random;
 *   sparse   in turn one random chunk, one chunk of zeros (written), two chunks never touched:
 *            a quarter of the mapping holds data, a quarter is resident zeros, half was never
 *            touched (no page at all).
 * On SIGUSR2 it checks every byte against the generator and prints "PASS rss_mib=N" (its
 * resident memory before the check, which read faults on untouched pages do not grow) and
 * exits 0, or prints "FAIL ..." and exits 1, so the benchmark knows a restored copy is right. */
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define CHUNK (1u << 20)

enum mode { RANDOM, MIXED, SPARSE };
enum kind { ZEROS, UNTOUCHED, TEXT, DATA };

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

static enum kind kind_of(size_t i, enum mode mode)
{
    static const enum kind mixed[4] = {ZEROS, ZEROS, TEXT, DATA};
    static const enum kind sparse[4] = {DATA, ZEROS, UNTOUCHED, UNTOUCHED};
    switch (mode) {
    case MIXED: return mixed[i % 4];
    case SPARSE: return sparse[i % 4];
    default: return DATA;
    }
}

/* Chunk `i` of the data, as it must be (an untouched chunk reads as zeros). */
static void chunk(size_t i, enum kind kind, unsigned char *out)
{
    uint64_t x = 88172645463325252ull ^ (i * 0x9E3779B97F4A7C15ull);
    if (kind == ZEROS || kind == UNTOUCHED) {
        memset(out, 0, CHUNK);
    } else if (kind == TEXT) {
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

static long rss_mib(void)
{
    long size = 0, resident = 0;
    FILE *f = fopen("/proc/self/statm", "r");
    if (f) {
        if (fscanf(f, "%ld %ld", &size, &resident) != 2)
            resident = 0;
        fclose(f);
    }
    return resident * sysconf(_SC_PAGESIZE) >> 20;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: hold MiB [mixed|sparse]\n");
        return 2;
    }
    size_t len = (size_t)atol(argv[1]) << 20;
    enum mode mode = RANDOM;
    if (argc > 2 && strcmp(argv[2], "mixed") == 0)
        mode = MIXED;
    else if (argc > 2 && strcmp(argv[2], "sparse") == 0)
        mode = SPARSE;
    else if (argc > 2) {
        fprintf(stderr, "hold: unknown kind %s\n", argv[2]);
        return 2;
    }
    unsigned char *m = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED)
        return 2;
    for (size_t i = 0; i < len / CHUNK; i++)
        if (kind_of(i, mode) != UNTOUCHED)
            chunk(i, kind_of(i, mode), m + i * CHUNK);
    signal(SIGUSR2, on_usr2);
    printf("ready %p %zu\n", (void *)m, len);
    fflush(stdout);
    while (!check)
        pause();
    long rss = rss_mib();
    unsigned char *want = malloc(CHUNK);
    for (size_t i = 0; i < len / CHUNK; i++) {
        chunk(i, kind_of(i, mode), want);
        if (memcmp(want, m + i * CHUNK, CHUNK) != 0) {
            printf("FAIL in MiB %zu\n", i);
            return 1;
        }
    }
    printf("PASS rss_mib=%ld\n", rss);
    return 0;
}
