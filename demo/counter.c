/* The demo program: counts once per 100 ms, keeps a checksum of a 64 MiB buffer it fills as
 * it goes, and prints both, so a person watching sees it go on from where it was after a
 * checkpoint and restart. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

int main(int argc, char **argv)
{
    size_t len = 64u << 20;
    uint64_t *buf = malloc(len);
    uint64_t sum = 0;
    long limit = argc > 1 ? atol(argv[1]) : 0;
    if (!buf)
        return 1;
    memset(buf, 0, len);
    for (unsigned long n = 1;; n++) {
        buf[(n * 4099) % (len / 8)] = n * 0x9e3779b97f4a7c15ull;
        sum += buf[(n * 4099) % (len / 8)];
        printf("pid %d: count %lu, checksum %016llx\n", (int)getpid(), n, (unsigned long long)sum);
        fflush(stdout);
        if (limit && (long)n >= limit)
            return 0;
        struct timespec ts = {0, 100 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
}
