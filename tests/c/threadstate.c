/* The state of each of many threads (argv[1], default 50): its own name, blocked mask, timer
 * slack, robust futex list and rseq registration; every third thread an alternate signal
 * stack; some threads signals pending for them alone (one sent with pthread_kill, one queued
 * with a value). With "trap" as argv[2] the program also handles SIGTRAP, which makes a
 * restore set the threads up one system call at a time rather than in batches. After restart
 * each thread checks its own state and takes its pending signals, then all are joined. */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <sys/prctl.h>
#include <sys/rseq.h>
#include <sys/syscall.h>
#include <linux/futex.h>
#include "prog.h"

#define MAXT 256
static int n = 50;
static volatile int go;
static int started, good;

static void on_trap(int s) { (void)s; }

static void *worker(void *arg)
{
    long i = (long)arg;
    char name[16];
    snprintf(name, sizeof name, "w%ld", i);
    pthread_setname_np(pthread_self(), name);
    sigset_t m;
    sigemptyset(&m);
    sigaddset(&m, SIGUSR1);
    sigaddset(&m, SIGUSR2);
    sigaddset(&m, SIGRTMIN + 2);
    if (i % 2)
        sigaddset(&m, SIGWINCH);
    pthread_sigmask(SIG_SETMASK, &m, NULL);
    prctl(PR_SET_TIMERSLACK, 50000 + i * 1000, 0, 0, 0);
    void *alt = NULL;
    if (i % 3 == 0) {
        alt = malloc(65536);
        stack_t ss = {.ss_sp = alt, .ss_size = 65536};
        check(sigaltstack(&ss, NULL) == 0, "sigaltstack");
    }
    struct robust_list_head *head;
    size_t len;
    check(syscall(SYS_get_robust_list, 0, &head, &len) == 0, "get_robust_list");
    if (i % 4 == 1)
        pthread_kill(pthread_self(), SIGUSR1);
    if (i % 4 == 2) {
        union sigval v = {.sival_int = (int)i};
        pthread_sigqueue(pthread_self(), SIGRTMIN + 2, v);
    }
    __atomic_add_fetch(&started, 1, __ATOMIC_SEQ_CST);
    while (!go) {
        struct timespec ts = {0, 10 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }

    char now[16];
    pthread_getname_np(pthread_self(), now, sizeof now);
    check(strcmp(now, name) == 0, "thread name");
    sigset_t cur;
    pthread_sigmask(0, NULL, &cur);
    check(sigismember(&cur, SIGUSR1) && sigismember(&cur, SIGRTMIN + 2) && sigismember(&cur, SIGWINCH) == (int)(i % 2), "blocked mask");
    check(prctl(PR_GET_TIMERSLACK, 0, 0, 0, 0) == 50000 + i * 1000, "timer slack");
    stack_t os;
    check(sigaltstack(NULL, &os) == 0, "reading the alternate stack");
    if (alt)
        check(os.ss_sp == alt && os.ss_size == 65536 && !(os.ss_flags & SS_DISABLE), "alternate stack");
    else
        check(os.ss_flags & SS_DISABLE, "no alternate stack");
    struct robust_list_head *head2;
    size_t len2;
    check(syscall(SYS_get_robust_list, 0, &head2, &len2) == 0 && head2 == head && len2 == len, "robust futex list");
    if (__rseq_size > 0) {
        /* Registered again at the same place: a second registration of the same area and
         * length is refused as busy. The C library registers at least 32 bytes, whatever
         * feature size it reports. */
        struct rseq *rs = (struct rseq *)((char *)__builtin_thread_pointer() + __rseq_offset);
        unsigned len = __rseq_size < 32 ? 32 : __rseq_size;
        check(syscall(SYS_rseq, rs, len, 0, RSEQ_SIG) == -1 && errno == EBUSY, "rseq registered");
        check((int)rs->cpu_id >= 0, "rseq cpu id");
    }
    siginfo_t si;
    struct timespec z = {0, 0};
    sigset_t one;
    if (i % 4 == 1) {
        sigemptyset(&one);
        sigaddset(&one, SIGUSR1);
        check(sigtimedwait(&one, &si, &z) == SIGUSR1 && (si.si_code == SI_TKILL || si.si_code == SI_USER), "SIGUSR1 pending for the thread");
    }
    if (i % 4 == 2) {
        sigemptyset(&one);
        sigaddset(&one, SIGRTMIN + 2);
        check(sigtimedwait(&one, &si, &z) == SIGRTMIN + 2 && si.si_code == SI_QUEUE && si.si_value.sival_int == i, "queued signal pending for the thread, with its value");
    }
    sigemptyset(&one);
    sigaddset(&one, SIGUSR1);
    sigaddset(&one, SIGRTMIN + 2);
    check(sigtimedwait(&one, &si, &z) == -1 && errno == EAGAIN, "no other signal pending");
    __atomic_add_fetch(&good, 1, __ATOMIC_SEQ_CST);
    return (void *)(i + 1);
}

int main(int argc, char **argv)
{
    pthread_t t[MAXT];
    if (argc > 1)
        n = atoi(argv[1]);
    check(n > 0 && n <= MAXT, "thread count");
    if (argc > 2 && strcmp(argv[2], "trap") == 0)
        signal(SIGTRAP, on_trap);
    for (long i = 0; i < n; i++)
        check(pthread_create(&t[i], NULL, worker, (void *)i) == 0, "pthread_create");
    while (__atomic_load_n(&started, __ATOMIC_SEQ_CST) < n) {
        struct timespec ts = {0, 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    ready();
    wait_for_verify(NULL);
    go = 1;
    for (long i = 0; i < n; i++) {
        void *r;
        check(pthread_join(t[i], &r) == 0 && (long)r == i + 1, "thread joined with its result");
    }
    check(good == n, "every thread checked itself");
    pass();
}
