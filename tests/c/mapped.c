/* Memory that a restart maps from its image. 64 MiB of an anonymous mapping with a seeded
 * pattern; after the first SIGUSR2 (restarted once) it checks the pattern, overwrites the first
 * quarter with another one, forks a child that checks all of it, and says "written"; after the
 * second SIGUSR2 (restarted again, from an image taken of the restored copy after the first
 * image was deleted) it checks all of it again and says PASS. */
#include <stdint.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include "prog.h"

#define LEN (64u << 20)
#define WORDS (LEN / 8)

static uint64_t gen(uint64_t i) { uint64_t x = i * 0x9E3779B97F4A7C15ull + 11; x ^= x >> 29; return x * 0xBF58476D1CE4E5B9ull; }
static uint64_t want(uint64_t i, int written) { return written && i < WORDS / 4 ? ~gen(i) : gen(i); }

static void check_all(const uint64_t *m, int written, const char *what)
{
    for (size_t i = 0; i < WORDS; i++)
        check(m[i] == want(i, written), what);
}

static void await_usr2(void)
{
    while (!verify_now) {
        struct timespec ts = {0, 10 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    verify_now = 0;
}

int main(void)
{
    uint64_t *m = mmap(NULL, LEN, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    check(m != MAP_FAILED, "mmap");
    for (size_t i = 0; i < WORDS; i++)
        m[i] = gen(i);
    printf("at %p\n", (void *)m);
    ready();
    await_usr2();
    check_all(m, 0, "the pattern after the first restart");
    for (size_t i = 0; i < WORDS / 4; i++)
        m[i] = ~gen(i);
    pid_t c = fork();
    check(c >= 0, "fork");
    if (c == 0) {
        for (size_t i = 0; i < WORDS; i++)
            if (m[i] != want(i, 1))
                _exit(1);
        _exit(0);
    }
    int st;
    check(waitpid(c, &st, 0) == c && WIFEXITED(st) && WEXITSTATUS(st) == 0, "the forked child sees the written memory");
    check_all(m, 1, "the written pattern in the parent");
    printf("written\n");
    fflush(stdout);
    await_usr2();
    check_all(m, 1, "the pattern after the second restart");
    pass();
}
