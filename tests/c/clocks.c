/* The clocks that count from boot, CLOCK_MONOTONIC and CLOCK_BOOTTIME, never go back for a
 * restored process, even where the restarting machine's clocks are behind (after a reboot):
 * the test restarts it in a time namespace set back to 5 s after boot, as a machine booted
 * since would be. Each tick it reads both; after the restart (SIGUSR2) it checks they are at or past the
 * last values read before the checkpoint. */
#include <stdint.h>
#include "prog.h"

static int64_t now(clockid_t c)
{
    struct timespec ts;
    check(clock_gettime(c, &ts) == 0, "clock_gettime");
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static int64_t last_mono, last_boot;

static void tick(long n)
{
    (void)n;
    int64_t m = now(CLOCK_MONOTONIC), b = now(CLOCK_BOOTTIME);
    check(m >= last_mono && b >= last_boot, "the clocks never go back");
    last_mono = m;
    last_boot = b;
}

int main(void)
{
    tick(0);
    ready();
    wait_for_verify(tick);
    int64_t m = now(CLOCK_MONOTONIC), b = now(CLOCK_BOOTTIME);
    printf("monotonic %lld -> %lld, boottime %lld -> %lld\n", (long long)last_mono, (long long)m, (long long)last_boot, (long long)b);
    check(m >= last_mono, "CLOCK_MONOTONIC is not behind the last value read before the checkpoint");
    check(b >= last_boot, "CLOCK_BOOTTIME is not behind the last value read before the checkpoint");
    check(m - last_mono < 600LL * 1000000000, "CLOCK_MONOTONIC did not jump ahead");
    pass();
}
