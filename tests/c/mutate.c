/* Memory that changes shape while it is checkpointed, for the pre-copy of `cr_checkpoint --run`
 * (pages saved while the process runs, then only those written since saved again): an image
 * that keeps one stale page fails the check. Each step touches one region, then the program
 * sleeps ~1 ms, so checkpoints land both during and between steps:
 *   A  munmapped and mmapped afresh at the same address (MAP_FIXED), filled anew;
 *   B  moved by mremap(MREMAP_FIXED) between two slots of a PROT_NONE reservation, then the
 *      first word of every page rewritten (every 4th time the rest of the page too);
 *   C  its second half dropped with MADV_DONTNEED (read back as zeros), then refilled, or
 *      left zero until its next step;
 *   D  every 7th page rewritten (a different seventh each time);
 *   E  grown by one page per step with mremap, in place or moving to the other slot of its
 *      reservation, up to a limit, then shrunk back in place;
 *   F  a private mapping of a file it creates in its cwd: two pages written, and one written
 *      page dropped with MADV_DONTNEED and read, so that it holds the file's data again.
 * Every word is a hash of (region, generation, word index), the generations are in globals
 * (per page for D, E and F). Steps are counted; every 200 steps it prints "tick N".
 * Between two steps: on SIGUSR2 it checks everything and prints PASS (exit 0) or FAIL with the
 * region, page and word (exit 1); after a pause of more than 100 ms of real time (a freeze, or
 * a restart from an image) it checks everything at once, before a later step can overwrite a
 * stale page, and prints "checked after a pause of N ms at step S" (or FAIL, exit 1).
 * usage: mutate [MIB]   (size of each region, default 16) */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdint.h>
#include <sys/mman.h>
#include "prog.h"

enum { RA = 1, RB, RC, RD, RE, RF, REGIONS = 6 };
#define E_LIMIT 64 /* pages E grows by before it is shrunk back */
#define F_PAGES 64
#define PAUSE_MS 100

static size_t pg, wpp, len, words, npages;
static long steps;

static uint64_t h(uint64_t r, uint64_t g, uint64_t i)
{
    uint64_t x = (r << 56) ^ (g << 28) ^ i;
    x *= 0x9E3779B97F4A7C15ull;
    x ^= x >> 29;
    x *= 0xBF58476D1CE4E5B9ull;
    x ^= x >> 32;
    return x | 1; /* never 0: data is told from a dropped page */
}

static void fill(uint64_t *p, uint64_t r, uint64_t g, size_t from, size_t to)
{
    for (size_t i = from; i < to; i++)
        p[i] = h(r, g, i);
}

static void *map_at(void *at, size_t n, int prot)
{
    void *p = mmap(at, n, prot, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED | (prot == PROT_NONE ? MAP_NORESERVE : 0), -1, 0);
    check(p == at, "mmap at a fixed address");
    return p;
}

static void *reserve(size_t n)
{
    void *p = mmap(NULL, n, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    check(p != MAP_FAILED, "mmap a reservation");
    return p;
}

/* A: the same address, a new mapping each step. */
static uint64_t *a;
static uint64_t a_gen;

static void step_a(void)
{
    check(munmap(a, len) == 0, "munmap A");
    map_at(a, len, PROT_READ | PROT_WRITE);
    fill(a, RA, a_gen + 1, 0, words);
    a_gen++;
}

/* B: two slots of `len` with a PROT_NONE page between them, inside one reservation. Word i
 * holds generation b_head if it is the first of its page, b_rest otherwise. */
static char *b_res;
static int b_slot;
static uint64_t b_head, b_rest;

static uint64_t *b_at(int slot) { return (uint64_t *)(b_res + (size_t)slot * (len + pg)); }

static void step_b(void)
{
    uint64_t *from = b_at(b_slot), *to = b_at(!b_slot);
    void *p = mremap(from, len, len, MREMAP_MAYMOVE | MREMAP_FIXED, to);
    check(p == to, "mremap B to its other slot");
    map_at(from, len, PROT_NONE);
    b_slot = !b_slot;
    uint64_t g = b_head + 1;
    for (size_t i = 0; i < words; i += wpp)
        to[i] = h(RB, g, i);
    if (g % 4 == 0)
        for (size_t i = 0; i < words; i++)
            if (i % wpp)
                to[i] = h(RB, g, i);
    b_head = g;
    if (g % 4 == 0)
        b_rest = g;
}

/* C: the first half keeps generation 0; the second half is dropped, then refilled with
 * generation c_gen, or left zero (c_zero) until the next C step. */
static uint64_t *c;
static uint64_t c_gen, c_steps;
static int c_zero;

static void step_c(void)
{
    size_t half = words / 2;
    uint64_t n = c_steps + 1;
    if (c_zero) {
        fill(c, RC, c_gen + 1, half, words);
        c_gen++;
        c_zero = 0;
        c_steps = n;
        return;
    }
    check(madvise(c + half, len / 2, MADV_DONTNEED) == 0, "madvise C");
    if (n % 2 == 0) /* read it back (maps the zero page); the other times leave it unmapped */
        for (size_t i = half; i < words; i += wpp)
            check(c[i] == 0 && c[i + wpp - 1] == 0, "C reads zeros after MADV_DONTNEED");
    if (n % 3 == 0)
        c_zero = 1;
    else {
        fill(c, RC, c_gen + 1, half, words);
        c_gen++;
    }
    c_steps = n;
}

/* D: every 7th page, from page d_round % 7, gets generation d_round; d_gen has each page's. */
static uint64_t *d;
static uint32_t *d_gen;
static uint64_t d_round;

static void step_d(void)
{
    uint64_t g = d_round + 1;
    for (size_t p = g % 7; p < npages; p += 7) {
        fill(d, RD, g, p * wpp, (p + 1) * wpp);
        d_gen[p] = (uint32_t)g;
    }
    d_round = g;
}

/* E: in one of two slots of its reservation; e_size bytes between e_base and e_max; page p has
 * generation e_gen[p]. */
static char *e_res;
static uint64_t *e;
static size_t e_base, e_max, e_size;
static int e_slot;
static uint32_t *e_gen;
static uint64_t e_steps, e_fills;

static uint64_t *e_at(int slot) { return (uint64_t *)(e_res + (size_t)slot * (e_max + pg)); }

static void step_e(void)
{
    uint64_t n = e_steps + 1;
    if (e_size == e_max) {
        void *p = mremap(e, e_max, e_base, 0);
        check(p == e, "mremap E shrunk in place");
        map_at((char *)e + e_base, e_max - e_base, PROT_NONE);
        e_size = e_base;
        e_steps = n;
        return;
    }
    size_t grown = e_size + pg;
    if (n % 8 == 0) {
        uint64_t *to = e_at(!e_slot);
        void *p = mremap(e, e_size, grown, MREMAP_MAYMOVE | MREMAP_FIXED, to);
        check(p == to, "mremap E grown into its other slot");
        map_at(e, e_size, PROT_NONE);
        e = to;
        e_slot = !e_slot;
    } else {
        check(munmap((char *)e + e_size, pg) == 0, "munmap the page after E");
        void *p = mremap(e, e_size, grown, 0);
        check(p == e, "mremap E grown in place");
    }
    uint64_t g = e_fills + 1;
    size_t k = e_size / pg;
    fill(e, RE, g, k * wpp, (k + 1) * wpp);
    e_gen[k] = (uint32_t)g;
    e_fills = g;
    e_size = grown;
    e_steps = n;
}

/* F: page p has generation f_gen[p]; 0 is the file's data. */
static uint64_t *f;
static uint32_t f_gen[F_PAGES];
static uint64_t f_round;

static void step_f(void)
{
    uint64_t g = f_round + 1;
    for (size_t j = 0; j < 2; j++) {
        size_t p = (g * 2 + j) % F_PAGES;
        fill(f, RF, g, p * wpp, (p + 1) * wpp);
        f_gen[p] = (uint32_t)g;
    }
    /* Written 16 rounds ago, now dropped: it reads the file's data again. */
    size_t q = (g * 2 + F_PAGES / 2) % F_PAGES;
    check(madvise(f + q * wpp, pg, MADV_DONTNEED) == 0, "madvise F");
    f_gen[q] = 0;
    check(f[q * wpp] == h(RF, 0, q * wpp), "F reads the file's data after MADV_DONTNEED");
    f_round = g;
}

static void fail_at(const char *region, const uint64_t *base, size_t i, uint64_t want, uint64_t gen)
{
    printf("FAIL: region %s page %zu word %zu (address %p) holds %llx, not %llx (generation %llu), at step %ld\n", region, i / wpp, i % wpp, (void *)(base + i),
           (unsigned long long)base[i], (unsigned long long)want, (unsigned long long)gen, steps);
    fflush(stdout);
    exit(1);
}

static void verify(void)
{
    /* Steps of region k so far (step s touches region s % REGIONS). */
#define DONE(k) ((uint64_t)(steps + REGIONS - 1 - (k)) / REGIONS)
    char what[160];
    snprintf(what, sizeof what, "step counters agree (step %ld: A %llu B %llu C %llu D %llu E %llu F %llu)", steps, (unsigned long long)a_gen,
             (unsigned long long)b_head, (unsigned long long)c_steps, (unsigned long long)d_round, (unsigned long long)e_steps, (unsigned long long)f_round);
    check(a_gen == DONE(0) && b_head == DONE(1) && c_steps == DONE(2) && d_round == DONE(3) && e_steps == DONE(4) && f_round == DONE(5), what);
    for (size_t i = 0; i < words; i++)
        if (a[i] != h(RA, a_gen, i))
            fail_at("A", a, i, h(RA, a_gen, i), a_gen);
    uint64_t *b = b_at(b_slot);
    for (size_t i = 0; i < words; i++) {
        uint64_t g = i % wpp ? b_rest : b_head;
        if (b[i] != h(RB, g, i))
            fail_at("B", b, i, h(RB, g, i), g);
    }
    for (size_t i = 0; i < words; i++) {
        uint64_t g = i < words / 2 ? 0 : c_gen;
        uint64_t want = i >= words / 2 && c_zero ? 0 : h(RC, g, i);
        if (c[i] != want)
            fail_at(c_zero ? "C (second half dropped)" : "C", c, i, want, g);
    }
    for (size_t i = 0; i < words; i++)
        if (d[i] != h(RD, d_gen[i / wpp], i))
            fail_at("D", d, i, h(RD, d_gen[i / wpp], i), d_gen[i / wpp]);
    check(e == e_at(e_slot) && e_size >= e_base && e_size <= e_max, "E where and as large as it was");
    for (size_t i = 0; i < e_size / 8; i++)
        if (e[i] != h(RE, e_gen[i / wpp], i))
            fail_at("E", e, i, h(RE, e_gen[i / wpp], i), e_gen[i / wpp]);
    for (size_t i = 0; i < F_PAGES * wpp; i++)
        if (f[i] != h(RF, f_gen[i / wpp], i))
            fail_at(f_gen[i / wpp] ? "F (file, written)" : "F (file, its data)", f, i, h(RF, f_gen[i / wpp], i), f_gen[i / wpp]);
}

static long ms_since(const struct timespec *t)
{
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    return (now.tv_sec - t->tv_sec) * 1000 + (now.tv_nsec - t->tv_nsec) / 1000000;
}

int main(int argc, char **argv)
{
    size_t mib = argc > 1 ? (size_t)atol(argv[1]) : 16;
    check(mib >= 1, "usage: mutate [MIB]");
    pg = (size_t)sysconf(_SC_PAGESIZE);
    wpp = pg / 8;
    len = mib << 20;
    words = len / 8;
    npages = len / pg;

    a = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    check(a != MAP_FAILED, "mmap A");
    fill(a, RA, 0, 0, words);

    b_res = reserve(2 * len + pg);
    fill(map_at(b_at(0), len, PROT_READ | PROT_WRITE), RB, 0, 0, words);

    c = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    check(c != MAP_FAILED, "mmap C");
    fill(c, RC, 0, 0, words);

    d = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    check(d != MAP_FAILED, "mmap D");
    fill(d, RD, 0, 0, words);
    d_gen = calloc(npages, sizeof *d_gen);
    check(d_gen != NULL, "calloc");

    e_base = len / 2;
    e_max = e_base + E_LIMIT * pg;
    e_res = reserve(2 * e_max + pg);
    e = map_at(e_at(0), e_base, PROT_READ | PROT_WRITE);
    fill(e, RE, 0, 0, e_base / 8);
    e_size = e_base;
    e_gen = calloc(e_max / pg, sizeof *e_gen);
    check(e_gen != NULL, "calloc");

    int fd = open("mutate.dat", O_RDWR | O_CREAT | O_TRUNC, 0644);
    check(fd >= 0, "create mutate.dat");
    uint64_t *buf = malloc(F_PAGES * pg);
    check(buf != NULL, "malloc");
    fill(buf, RF, 0, 0, F_PAGES * wpp);
    check(write(fd, buf, F_PAGES * pg) == (ssize_t)(F_PAGES * pg), "write mutate.dat");
    free(buf);
    f = mmap(NULL, F_PAGES * pg, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
    check(f != MAP_FAILED, "mmap mutate.dat");
    close(fd);

    ready();
    struct timespec last;
    clock_gettime(CLOCK_REALTIME, &last);
    for (;;) {
        long paused = ms_since(&last);
        if (paused > PAUSE_MS) {
            verify();
            printf("checked after a pause of %ld ms at step %ld\n", paused, steps);
            fflush(stdout);
        }
        if (verify_now) {
            verify();
            pass();
        }
        /* From here to the next boundary: a step and a sleep, a few ms unless it was stopped. */
        clock_gettime(CLOCK_REALTIME, &last);
        switch (steps % REGIONS) {
        case 0: step_a(); break;
        case 1: step_b(); break;
        case 2: step_c(); break;
        case 3: step_d(); break;
        case 4: step_e(); break;
        default: step_f(); break;
        }
        steps++;
        if (steps % 200 == 0) {
            printf("tick %ld\n", steps / 200);
            fflush(stdout);
        }
        struct timespec ts = {0, 1000 * 1000};
        nanosleep(&ts, NULL);
    }
}
