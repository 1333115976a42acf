/* POSIX timers (timer_create): ids 0..6 are created and 2 and 4 deleted, so the ids left have
 * holes. Timer 0: periodic (30 ms) on CLOCK_MONOTONIC, SIGRTMIN with a pointer as its value,
 * caught by a handler that counts by value. Timer 1: one-shot on CLOCK_REALTIME far ahead
 * (600 s), SIGUSR1 with an integer value. Timer 3: disarmed, CLOCK_BOOTTIME, SIGEV_NONE.
 * Timer 5: periodic (40 ms) on CLOCK_MONOTONIC, SIGRTMIN+1 to a second thread
 * (SIGEV_THREAD_ID), which counts what it receives with sigwaitinfo. Timer 6: periodic on the
 * process CPU clock, SIGEV_NONE. With "expire" as its argument, timer 1 is a one-shot of 300 ms
 * instead: it expires while the process is checkpointed and must fire after the restart.
 * After the restart (SIGUSR2) it checks that timer_gettime works on each id and tells the
 * same state, that the deleted ids are still free, that signals keep arriving with the right
 * si_value and timer id, to the right thread, and prints PASS. */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <sys/syscall.h>
#include "prog.h"

#define NTIMERS 7
static timer_t ids[NTIMERS];
static volatile sig_atomic_t periodic_hits, bad_value, oneshot_hits, thread_hits_bad;
static volatile long thread_hits;
static volatile pid_t worker_tid, worker_tid_now;
static int tag = 42;
static int expire;

static void on_periodic(int sig, siginfo_t *si, void *uc)
{
    (void)sig;
    (void)uc;
    if (si->si_code != SI_TIMER || si->si_value.sival_ptr != &tag || si->si_timerid != 0)
        bad_value = 1;
    periodic_hits++;
}

static void on_oneshot(int sig, siginfo_t *si, void *uc)
{
    (void)sig;
    (void)uc;
    if (si->si_code != SI_TIMER || si->si_value.sival_int != 7001)
        bad_value = 2;
    oneshot_hits++;
}

static void *worker(void *arg)
{
    (void)arg;
    worker_tid = syscall(SYS_gettid);
    sigset_t m;
    sigemptyset(&m);
    sigaddset(&m, SIGRTMIN + 1);
    for (;;) {
        siginfo_t si;
        if (sigwaitinfo(&m, &si) != SIGRTMIN + 1)
            continue;
        if (si.si_code != SI_TIMER || si.si_value.sival_int != 5005)
            thread_hits_bad = 1;
        worker_tid_now = syscall(SYS_gettid); /* a new number after a restart without --restore-pid */
        thread_hits++;
    }
    return NULL;
}

static void make(int i, clockid_t clock, int notify, int sig, union sigval v)
{
    struct sigevent ev;
    memset(&ev, 0, sizeof ev);
    ev.sigev_notify = notify;
    ev.sigev_signo = sig;
    ev.sigev_value = v;
    if (notify == SIGEV_THREAD_ID)
        ev._sigev_un._tid = worker_tid;
    check(timer_create(clock, &ev, &ids[i]) == 0, "timer_create");
    check((intptr_t)ids[i] == i, "ids are handed out in order");
}

static void arm(int i, long value_ms, long interval_ms)
{
    struct itimerspec its = {{interval_ms / 1000, (interval_ms % 1000) * 1000000}, {value_ms / 1000, (value_ms % 1000) * 1000000}};
    check(timer_settime(ids[i], 0, &its, NULL) == 0, "timer_settime");
}

static long left_ms(int i, long *interval_ms)
{
    struct itimerspec its;
    check(timer_gettime(ids[i], &its) == 0, "timer_gettime works on every saved id");
    if (interval_ms)
        *interval_ms = its.it_interval.tv_sec * 1000 + its.it_interval.tv_nsec / 1000000;
    return its.it_value.tv_sec * 1000 + its.it_value.tv_nsec / 1000000;
}

static void settle(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000};
    while (nanosleep(&ts, &ts) == -1 && errno == EINTR)
        ;
}

int main(int argc, char **argv)
{
    expire = argc > 1 && strcmp(argv[1], "expire") == 0;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_flags = SA_SIGINFO | SA_RESTART;
    sa.sa_sigaction = on_periodic;
    check(sigaction(SIGRTMIN, &sa, NULL) == 0, "sigaction");
    sa.sa_sigaction = on_oneshot;
    check(sigaction(SIGUSR1, &sa, NULL) == 0, "sigaction");
    /* SIGRTMIN+1 is for the worker only. */
    sigset_t m;
    sigemptyset(&m);
    sigaddset(&m, SIGRTMIN + 1);
    check(pthread_sigmask(SIG_BLOCK, &m, NULL) == 0, "blocking SIGRTMIN+1");
    pthread_t th;
    check(pthread_create(&th, NULL, worker, NULL) == 0, "pthread_create");
    while (!worker_tid)
        settle(1);

    make(0, CLOCK_MONOTONIC, SIGEV_SIGNAL, SIGRTMIN, (union sigval){.sival_ptr = &tag});
    make(1, CLOCK_REALTIME, SIGEV_SIGNAL, SIGUSR1, (union sigval){.sival_int = 7001});
    make(2, CLOCK_MONOTONIC, SIGEV_NONE, 0, (union sigval){0});
    make(3, CLOCK_BOOTTIME, SIGEV_NONE, 0, (union sigval){.sival_int = 3003});
    make(4, CLOCK_MONOTONIC, SIGEV_NONE, 0, (union sigval){0});
    make(5, CLOCK_MONOTONIC, SIGEV_THREAD_ID, SIGRTMIN + 1, (union sigval){.sival_int = 5005});
    make(6, CLOCK_PROCESS_CPUTIME_ID, SIGEV_NONE, 0, (union sigval){0});
    check(timer_delete(ids[2]) == 0 && timer_delete(ids[4]) == 0, "timer_delete");
    arm(0, 30, 30);
    arm(1, expire ? 300 : 600 * 1000, 0);
    arm(5, 40, 40);
    arm(6, 3600 * 1000, 3600 * 1000);
    ready();
    wait_for_verify(NULL);

    /* After the restart. */
    long iv;
    long left = left_ms(0, &iv);
    check(iv == 30 && left <= 30, "the periodic timer keeps its period");
    left = left_ms(1, &iv);
    if (expire)
        check(iv == 0, "the short one-shot timer is one-shot");
    else
        check(iv == 0 && left > 0 && left < 600 * 1000, "the far one-shot timer is armed with at most its time left");
    left = left_ms(3, &iv);
    check(left == 0 && iv == 0, "the disarmed timer is disarmed");
    left = left_ms(5, &iv);
    check(iv == 40 && left <= 40, "the thread's timer keeps its period");
    left = left_ms(6, &iv);
    check(iv == 3600 * 1000 && left > 0 && left <= 3600 * 1000, "the CPU-time timer is armed");
    struct itimerspec its;
    check(timer_gettime((timer_t)2, &its) == -1 && errno == EINVAL, "deleted id 2 is free");
    check(timer_gettime((timer_t)4, &its) == -1 && errno == EINVAL, "deleted id 4 is free");

    sig_atomic_t p0 = periodic_hits;
    long t0 = thread_hits;
    settle(expire ? 400 : 200);
    check(periodic_hits >= p0 + 3, "the periodic timer's signal keeps arriving");
    check(thread_hits >= t0 + 2, "the thread's timer's signal keeps arriving at that thread");
    check(!bad_value && !thread_hits_bad, "every signal carries its timer's value");
    /* Timer 5 signals the worker thread, by its number now. */
    FILE *f = fopen("/proc/self/timers", "r");
    check(f != NULL, "/proc/self/timers");
    char line[256], want[64];
    int id = -1, found = 0;
    snprintf(want, sizeof want, "notify: signal/tid.%d", (int)worker_tid_now);
    while (fgets(line, sizeof line, f)) {
        sscanf(line, "ID: %d", &id);
        if (id == 5 && strncmp(line, want, strlen(want)) == 0)
            found = 1;
    }
    fclose(f);
    check(found, "the thread's timer signals that thread");
    if (expire)
        check(oneshot_hits == 1, "the one-shot timer that expired while checkpointed fired once after the restart");
    else
        check(oneshot_hits == 0, "the far one-shot timer has not fired");

    /* New timers take the next free id; the deleted ones are not reused. */
    timer_t n;
    struct sigevent ev;
    memset(&ev, 0, sizeof ev);
    ev.sigev_notify = SIGEV_NONE;
    check(timer_create(CLOCK_MONOTONIC, &ev, &n) == 0, "timer_create after the restart");
    pass();
}
