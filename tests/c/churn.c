/* Memory that changes all the time: 64 MiB rewritten word by word, over and over, each pass
 * with a new generation number; `pos` says how far the current pass has got. At any instant
 * words [0, pos) hold the current generation and [pos, end) the previous one, so an image whose
 * memory is not exactly the memory of one instant (registers and globals included) fails the
 * check. The program also counts SIGCHLD and looks for children of its own: a checkpoint that
 * lets it run on must leave no trace of itself. */
#include <errno.h>
#include <stdint.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include "prog.h"

#define WORDS (64u << 20) / 8

static volatile sig_atomic_t sigchld;
static void on_chld(int s) { (void)s; sigchld++; }

static volatile uint64_t *m;
static volatile uint64_t gen, pos;

static uint64_t word(uint64_t g, uint64_t i) { return (g * 0x9E3779B97F4A7C15ull) ^ i; }

static void check_memory(void)
{
    uint64_t g = gen, p = pos;
    for (uint64_t i = 0; i < WORDS; i++)
        if (m[i] != word(i < p ? g : g - 1, i)) {
            printf("FAIL: word %llu holds %llx, not generation %llu (pass at %llu)\n", (unsigned long long)i, (unsigned long long)m[i],
                   (unsigned long long)(i < p ? g : g - 1), (unsigned long long)p);
            fflush(stdout);
            exit(1);
        }
}

int main(void)
{
    m = mmap(NULL, WORDS * 8, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    check(m != MAP_FAILED, "mmap");
    for (uint64_t i = 0; i < WORDS; i++)
        m[i] = word(0, i);
    gen = 1;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_chld;
    sigaction(SIGCHLD, &sa, NULL);
    ready();
    long passes = 0;
    while (!verify_now) {
        for (pos = 0; pos < WORDS && !verify_now; pos++)
            m[pos] = word(gen, pos);
        if (pos == WORDS) {
            gen++;
            pos = 0;
        }
        if (++passes % 4 == 0) {
            printf("tick %ld\n", passes);
            fflush(stdout);
        }
    }
    check_memory();
    check(sigchld == 0, "no SIGCHLD");
    siginfo_t si;
    si.si_pid = 0;
    check(waitid(P_ALL, 0, &si, WEXITED | WNOHANG | __WALL) == -1 && errno == ECHILD, "no child of its own, not even a reaped one");
    pass();
}
