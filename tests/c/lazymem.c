/* Memory that a lazy restart gives on demand, touched by several threads at once and changed
 * before it is all in. 256 MiB of an anonymous mapping with a seeded pattern and 4 threads
 * waiting. On SIGUSR2 (restarted): the last 4 MiB are moved elsewhere (mremap), 4 MiB in the
 * middle are dropped (MADV_DONTNEED: they must read as zeros, not as the image's data), a child
 * is forked that checks all of it, and the 4 threads each check a quarter at the same time;
 * then the moved part, the dropped part and the child's verdict are checked: PASS. */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdint.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include "prog.h"

#define LEN (256ul << 20)
#define WORDS (LEN / 8)
#define PART (4ul << 20)
#define THREADS 4

static uint64_t *m;
static uint64_t *moved;
static volatile int go;
static uint64_t gen(uint64_t i) { uint64_t x = i * 0x9E3779B97F4A7C15ull + 13; x ^= x >> 30; return x * 0xBF58476D1CE4E5B9ull; }

/* The word at index i as it must read: the dropped part reads as zeros. */
static const size_t drop_from = (LEN / 2) / 8, drop_to = (LEN / 2 + PART) / 8, moved_from = (LEN - PART) / 8;
static uint64_t want(size_t i) { return i >= drop_from && i < drop_to ? 0 : gen(i); }

static void *worker(void *arg)
{
    long k = (long)arg;
    while (!go) {
        struct timespec ts = {0, 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    size_t from = moved_from / THREADS * k, to = moved_from / THREADS * (k + 1);
    for (size_t i = from; i < to; i++)
        if (m[i] != want(i))
            return (void *)1;
    return NULL;
}

int main(void)
{
    m = mmap(NULL, LEN, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    check(m != MAP_FAILED, "mmap");
    for (size_t i = 0; i < WORDS; i++)
        m[i] = gen(i);
    pthread_t t[THREADS];
    for (long k = 0; k < THREADS; k++)
        check(pthread_create(&t[k], NULL, worker, (void *)k) == 0, "pthread_create");
    ready();
    while (!verify_now) {
        struct timespec ts = {0, 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    /* Changed before the threads read it, as early as possible after the restart. */
    void *to = mmap(NULL, PART, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    check(to != MAP_FAILED, "a place to move to");
    moved = mremap(m + moved_from, PART, PART, MREMAP_MAYMOVE | MREMAP_FIXED, to);
    check(moved == to, "mremap");
    check(madvise(m + drop_from, PART, MADV_DONTNEED) == 0, "madvise");
    pid_t c = fork();
    check(c >= 0, "fork");
    if (c == 0) {
        for (size_t i = 0; i < moved_from; i++)
            if (m[i] != want(i))
                _exit(1);
        for (size_t i = 0; i < PART / 8; i++)
            if (moved[i] != gen(moved_from + i))
                _exit(2);
        _exit(0);
    }
    go = 1;
    for (long k = 0; k < THREADS; k++) {
        void *r;
        check(pthread_join(t[k], &r) == 0 && r == NULL, "every thread read its quarter right");
    }
    for (size_t i = 0; i < PART / 8; i++)
        check(moved[i] == gen(moved_from + i), "the moved part");
    for (size_t i = drop_from; i < drop_to; i++)
        check(m[i] == 0, "the dropped part reads as zeros");
    int st;
    check(waitpid(c, &st, 0) == c, "waitpid");
    check(WIFEXITED(st) && WEXITSTATUS(st) == 0, WIFEXITED(st) && WEXITSTATUS(st) == 2 ? "the child's moved part" : "the child's copy");
    pass();
}
