/* incr MIB: a large memory of which each round rewrites 1 MiB, for incremental checkpoints.
 * Every 8-byte word of page p holds a value made from p, the round that last wrote the page
 * (gen[p]) and the word's index. Prints "ready", then on SIGUSR1 rewrites the next 1 MiB and
 * prints "round N"; on SIGUSR2 checks every word and writes "PASS round N" (or what is wrong)
 * into the file "result" of its working directory, then ends (0: good). On SIGHUP it maps 4 MiB
 * more, written through, and prints "mapped" (a mapping new since the last checkpoint). On
 * SIGWINCH it forks a child that waits (ending when its parent is gone) and prints "forked". */
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

static volatile sig_atomic_t want_round, want_check, want_map, want_fork;
static void on_winch(int s) { (void)s; want_fork = 1; }
static void on_hup(int s) { (void)s; want_map = 1; }
static void on_usr1(int s) { (void)s; want_round = 1; }
static void on_usr2(int s) { (void)s; want_check = 1; }

static unsigned long value(size_t p, unsigned g, size_t w) { return (p * 0x9E3779B97F4A7C15ul) ^ ((unsigned long)g << 40) ^ (w + 1); }

int main(int argc, char **argv) {
    size_t pages = (size_t)atol(argc > 1 ? argv[1] : "128") * 256;
    unsigned long *mem = mmap(NULL, pages * 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    unsigned *gen = mmap(NULL, pages * sizeof *gen, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (mem == MAP_FAILED || gen == MAP_FAILED) return 2;
    for (size_t p = 0; p < pages; p++)
        for (size_t w = 0; w < 512; w++) mem[p * 512 + w] = value(p, 0, w);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_usr1;
    sigaction(SIGUSR1, &sa, NULL);
    sa.sa_handler = on_usr2;
    sigaction(SIGUSR2, &sa, NULL);
    sa.sa_handler = on_hup;
    sigaction(SIGHUP, &sa, NULL);
    sa.sa_handler = on_winch;
    sigaction(SIGWINCH, &sa, NULL);
    unsigned round = 0;
    printf("ready\n");
    fflush(stdout);
    for (;;) {
        struct timespec ts = {0, 5 * 1000 * 1000};
        nanosleep(&ts, NULL);
        if (want_map) {
            want_map = 0;
            char *more = mmap(NULL, 4 << 20, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
            if (more == MAP_FAILED) return 4;
            memset(more, 0x5a, 4 << 20);
            printf("mapped\n");
            fflush(stdout);
        }
        if (want_fork) {
            want_fork = 0;
            pid_t parent = getpid(), child = fork();
            if (child < 0) return 5;
            if (child == 0)
                for (;;) {
                    struct timespec t = {0, 20 * 1000 * 1000};
                    nanosleep(&t, NULL);
                    if (getppid() != parent) _exit(0);
                }
            printf("forked %d\n", (int)child);
            fflush(stdout);
        }
        if (want_round) {
            want_round = 0;
            round++;
            size_t start = ((size_t)round * 7919 * 256) % (pages - 256);
            for (size_t p = start; p < start + 256; p++) {
                gen[p] = round;
                for (size_t w = 0; w < 512; w++) mem[p * 512 + w] = value(p, round, w);
            }
            printf("round %u\n", round);
            fflush(stdout);
        }
        if (want_check) {
            char msg[200];
            int bad = 0;
            snprintf(msg, sizeof msg, "PASS round %u\n", round);
            for (size_t p = 0; p < pages && !bad; p++)
                for (size_t w = 0; w < 512; w++)
                    if (mem[p * 512 + w] != value(p, gen[p], w)) {
                        snprintf(msg, sizeof msg, "FAIL round %u: page %zu word %zu is %#lx, not %#lx\n", round, p, w, mem[p * 512 + w], value(p, gen[p], w));
                        bad = 1;
                        break;
                    }
            int fd = open("result", O_WRONLY | O_CREAT | O_TRUNC, 0644);
            if (fd < 0 || write(fd, msg, strlen(msg)) < 0) return 3;
            close(fd);
            return bad;
        }
    }
}
