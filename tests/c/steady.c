/* A program that verifies itself again and again, for tests that checkpoint, kill or restart
 * it many times: MIB MiB of seeded pattern, a small region rewritten every tick, a log file
 * that gets one record per tick, its tick count and the monotonic clock. Each SIGUSR2 checks
 * all of it and prints "PASS k" (the k-th check), then it goes on ticking; a mismatch prints
 * FAIL and exits 1.
 * usage: steady MIB DIR [same-pid] */
#include <fcntl.h>
#include <stdint.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include "prog.h"

#define HOT 4096
#define REC 16

static uint64_t gen(uint64_t i) { uint64_t x = i * 0x9E3779B97F4A7C15ull + 7; x ^= x >> 31; return x * 0xBF58476D1CE4E5B9ull; }

static uint64_t *big;
static size_t words;
static uint64_t hot[HOT];
static long ticks, checks;
static int logfd;
static pid_t first_pid;
static struct timespec last_mono;

static void tick(void)
{
    hot[ticks % HOT] = gen((uint64_t)ticks ^ 0x5555);
    char rec[32];
    snprintf(rec, sizeof rec, "%015ld\n", ticks);
    check(write(logfd, rec, REC) == REC, "log record written");
    ticks++;
    printf("tick %ld\n", ticks);
    fflush(stdout);
}

static void verify(int same_pid)
{
    for (size_t i = 0; i < words; i++)
        check(big[i] == gen(i), "big pattern");
    for (long k = 0; k < HOT; k++) {
        uint64_t want = 0;
        if (ticks > k)
            want = gen((uint64_t)(k + HOT * ((ticks - 1 - k) / HOT)) ^ 0x5555);
        check(hot[k] == want, "hot region");
    }
    check(lseek(logfd, 0, SEEK_CUR) == ticks * REC, "log offset");
    struct stat st;
    check(fstat(logfd, &st) == 0 && st.st_size == ticks * REC, "log size");
    if (ticks > 0) {
        char rec[32] = {0}, want[32];
        snprintf(want, sizeof want, "%015ld\n", ticks - 1);
        int rd = open("steady.log", O_RDONLY);
        check(rd >= 0 && pread(rd, rec, REC, (ticks - 1) * REC) == REC && !memcmp(rec, want, REC), "last log record");
        close(rd);
    }
    check(!same_pid || syscall(SYS_getpid) == first_pid, "PID kept");
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    check(now.tv_sec > last_mono.tv_sec || (now.tv_sec == last_mono.tv_sec && now.tv_nsec >= last_mono.tv_nsec), "monotonic clock goes forward");
}

int main(int argc, char **argv)
{
    check(argc >= 3, "usage: steady MIB DIR [same-pid]");
    int same_pid = argc > 3 && !strcmp(argv[3], "same-pid");
    size_t len = (size_t)atol(argv[1]) << 20;
    words = len / 8;
    if (len) {
        big = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        check(big != MAP_FAILED, "mmap");
        for (size_t i = 0; i < words; i++)
            big[i] = gen(i);
    }
    check(chdir(argv[2]) == 0, "chdir");
    logfd = open("steady.log", O_WRONLY | O_CREAT | O_TRUNC, 0644);
    check(logfd >= 0, "open log");
    first_pid = getpid();
    clock_gettime(CLOCK_MONOTONIC, &last_mono);
    ready();
    for (;;) {
        if (verify_now) {
            verify_now = 0;
            verify(same_pid);
            checks++;
            printf("PASS %ld\n", checks);
            fflush(stdout);
        }
        clock_gettime(CLOCK_MONOTONIC, &last_mono);
        tick();
        struct timespec ts = {0, 20 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
}
