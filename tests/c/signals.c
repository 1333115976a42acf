/* Signal state: a SIGUSR1 handler with flags and mask, a SIGTRAP handler (the restore must not
 * reset it to the default), SIGPIPE ignored, a blocked mask, a queued real-time signal with its
 * value, an alternate stack; after restart all are as set, and the handlers still fire. */
#include <stdint.h>
#include "prog.h"

static volatile int hits, traps;
static void h(int s, siginfo_t *i, void *c) { (void)s; (void)i; (void)c; hits++; }
static void ht(int s) { (void)s; traps++; }

int main(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = h;
    sa.sa_flags = SA_SIGINFO | SA_RESTART;
    sigaddset(&sa.sa_mask, SIGWINCH);
    sigaction(SIGUSR1, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    signal(SIGTRAP, ht);
    sigset_t m;
    sigemptyset(&m);
    sigaddset(&m, SIGRTMIN + 1);
    sigaddset(&m, SIGWINCH);
    sigprocmask(SIG_BLOCK, &m, NULL);
    union sigval v = {.sival_int = 42};
    sigqueue(getpid(), SIGRTMIN + 1, v);
    stack_t ss = {.ss_sp = malloc(65536), .ss_size = 65536};
    sigaltstack(&ss, NULL);
    ready();
    wait_for_verify(NULL);
    struct sigaction o, pp;
    sigaction(SIGUSR1, NULL, &o);
    sigaction(SIGPIPE, NULL, &pp);
    check(o.sa_sigaction == h && (o.sa_flags & SA_SIGINFO) && (o.sa_flags & SA_RESTART), "SIGUSR1 handler and flags");
    check(sigismember(&o.sa_mask, SIGWINCH), "handler mask");
    check(pp.sa_handler == SIG_IGN, "SIGPIPE ignored");
    sigset_t cur, pend;
    sigprocmask(0, NULL, &cur);
    sigpending(&pend);
    check(sigismember(&cur, SIGRTMIN + 1) && sigismember(&cur, SIGWINCH), "blocked mask");
    check(sigismember(&pend, SIGRTMIN + 1), "pending signal");
    stack_t os;
    sigaltstack(NULL, &os);
    check(os.ss_sp == ss.ss_sp && os.ss_size == 65536, "alternate stack");
    kill(getpid(), SIGUSR1);
    check(hits == 1, "handler fires after restart");
    struct sigaction ot;
    sigaction(SIGTRAP, NULL, &ot);
    check(ot.sa_handler == ht, "SIGTRAP handler");
    raise(SIGTRAP);
    check(traps == 1, "SIGTRAP handler fires after restart");
    siginfo_t si;
    struct timespec z = {0, 0};
    sigset_t rt;
    sigemptyset(&rt);
    sigaddset(&rt, SIGRTMIN + 1);
    check(sigtimedwait(&rt, &si, &z) == SIGRTMIN + 1 && si.si_value.sival_int == 42, "queued value");
    pass();
}
