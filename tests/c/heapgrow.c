/* After restart: malloc small and large blocks, sbrk, new mmaps, munmap and mprotect work;
 * getpid is the saved PID (argv[1] "same-pid"), the clocks run forward and are sane. */
#include <stdint.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/time.h>
#include "prog.h"

int main(int argc, char **argv)
{
    int same_pid = argc > 1 && !strcmp(argv[1], "same-pid");
    pid_t pid = getpid();
    struct timespec mono0, real0;
    clock_gettime(CLOCK_MONOTONIC, &mono0);
    clock_gettime(CLOCK_REALTIME, &real0);
    umask(0027);
    struct rlimit rl = {1000, 2000};
    check(setrlimit(RLIMIT_NOFILE, &rl) == 0, "setrlimit");
    prctl(PR_SET_NAME, "crest-heap");
    check(chdir("/tmp") == 0, "chdir");
    char *before = malloc(1000);
    strcpy(before, "allocated before");
    ready();
    wait_for_verify(NULL);
    check(!same_pid || getpid() == pid, "getpid is the saved PID");
    check(umask(0) == 0027, "umask");
    struct rlimit r2;
    check(getrlimit(RLIMIT_NOFILE, &r2) == 0 && r2.rlim_cur == 1000 && r2.rlim_max == 2000, "rlimit");
    char name[16] = {0};
    prctl(PR_GET_NAME, name);
    check(!strcmp(name, "crest-heap"), "comm");
    char cwd[256];
    check(getcwd(cwd, sizeof cwd) && !strcmp(cwd, "/tmp"), "cwd");
    struct timespec mono1, real1;
    clock_gettime(CLOCK_MONOTONIC, &mono1);
    clock_gettime(CLOCK_REALTIME, &real1);
    check(real1.tv_sec >= real0.tv_sec && real1.tv_sec < real0.tv_sec + 3600, "CLOCK_REALTIME");
    check(mono1.tv_sec >= mono0.tv_sec, "CLOCK_MONOTONIC forward");
    struct timeval tv;
    check(gettimeofday(&tv, NULL) == 0 && tv.tv_sec >= real0.tv_sec, "gettimeofday");
    check(!strcmp(before, "allocated before"), "old heap block");
    void *small[1000];
    for (int i = 0; i < 1000; i++) {
        small[i] = malloc(100 + i);
        memset(small[i], i & 0xff, 100 + i);
    }
    char *big = malloc(64 << 20);
    check(big != NULL, "large malloc");
    memset(big, 0x5a, 64 << 20);
    void *top = sbrk(0);
    check(sbrk(1 << 20) != (void *)-1, "sbrk grows");
    memset(top, 1, 1 << 20);
    char *m = mmap(NULL, 8 << 20, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    check(m != MAP_FAILED, "new mmap");
    memset(m, 7, 8 << 20);
    check(mprotect(m, 4096, PROT_READ) == 0, "mprotect");
    check(munmap(m + (4 << 20), 4 << 20) == 0, "munmap");
    for (int i = 0; i < 1000; i++) {
        for (int j = 0; j < 100 + i; j++)
            check(((unsigned char *)small[i])[j] == (i & 0xff), "small blocks");
        free(small[i]);
    }
    free(big);
    check_untouched_signals();
    pass();
}
