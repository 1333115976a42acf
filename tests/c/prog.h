/* What every test program shares: a "ready" line, ticks while it waits, and SIGUSR2 meaning
 * "you were checkpointed and restarted: verify now". check() prints FAIL with a reason and
 * exits 1; pass() prints PASS and exits 0. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static volatile sig_atomic_t verify_now;
static void on_usr2(int s) { (void)s; verify_now = 1; }

static void ready(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_usr2;
    sigaction(SIGUSR2, &sa, NULL);
    printf("ready\n");
    fflush(stdout);
}

static void check(int ok, const char *what)
{
    if (!ok) {
        printf("FAIL: %s\n", what);
        fflush(stdout);
        exit(1);
    }
}

__attribute__((unused)) static void pass(void)
{
    printf("PASS\n");
    fflush(stdout);
    exit(0);
}

/* Signals a program never set are at their defaults and no alternate stack is set. */
__attribute__((unused)) static void check_untouched_signals(void)
{
    int sigs[] = {SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGCHLD, SIGUSR1, SIGTERM, SIGPIPE};
    for (unsigned i = 0; i < sizeof sigs / sizeof sigs[0]; i++) {
        struct sigaction o;
        check(sigaction(sigs[i], NULL, &o) == 0 && o.sa_handler == SIG_DFL, "untouched signal left at its default");
    }
    stack_t ss;
    check(sigaltstack(NULL, &ss) == 0 && (ss.ss_flags & SS_DISABLE), "no alternate signal stack");
}

/* Ticks every 50 ms until SIGUSR2; calls work() each tick if given. */
__attribute__((unused)) static void wait_for_verify(void (*work)(long))
{
    for (long n = 0; !verify_now; n++) {
        if (work)
            work(n);
        printf("tick %ld\n", n);
        fflush(stdout);
        struct timespec ts = {0, 50 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
}
