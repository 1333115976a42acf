/* Threads that check their TLS and stack contents, wait on a mutex and a condition variable,
 * use rseq (sched_getcpu) and are joined at the end: argv[1] seconds, argv[2] threads. Prints
 * "tick" lines, then PASS (exit 0) or FAIL (exit 1). */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
#include <time.h>
#include <sched.h>
#define N_MAX 256
static int N = 8;
static __thread unsigned long tls = 0;
static volatile unsigned long counts[N_MAX];
static volatile int stop;
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
static int ticket;
static void *worker(void *arg) {
    long id = (long)arg; char stackpat[256];
    for (int i = 0; i < 256; i++) stackpat[i] = (char)(id * 7 + i);
    tls = id * 1000003;
    while (!stop) {
        if (tls != id * 1000003) { printf("FAIL tls %ld\n", id); exit(1); }
        for (int i = 0; i < 256; i++) if (stackpat[i] != (char)(id * 7 + i)) { printf("FAIL stack %ld\n", id); exit(1); }
        counts[id]++;
        if (id == 0) { pthread_mutex_lock(&mu); ticket++; pthread_cond_signal(&cv); pthread_mutex_unlock(&mu); }
        if (id == 1) { pthread_mutex_lock(&mu); while (ticket == 0 && !stop) pthread_cond_wait(&cv, &mu); ticket = 0; pthread_mutex_unlock(&mu); }
        struct timespec ts = {0, 1000000}; nanosleep(&ts, 0);
        if (sched_getcpu() < 0) { printf("FAIL getcpu\n"); exit(1); }
    }
    return (void *)(id + 1);
}
int main(int argc, char **argv) {
    pthread_t t[N_MAX];
    if (argc > 2) N = atoi(argv[2]);
    for (long i = 0; i < N; i++) pthread_create(&t[i], 0, worker, (void *)i);
    int secs = atoi(argv[1]);
    for (int s = 0; s < secs * 10; s++) {
        struct timespec ts = {0, 100000000}; nanosleep(&ts, 0);
        unsigned long tot = 0; for (int i = 0; i < N; i++) tot += counts[i];
        printf("tick %d total %lu\n", s, tot); fflush(stdout);
    }
    stop = 1; pthread_mutex_lock(&mu); pthread_cond_broadcast(&cv); pthread_mutex_unlock(&mu);
    for (long i = 0; i < N; i++) { void *r; pthread_join(t[i], &r); if ((long)r != i + 1) { printf("FAIL join\n"); return 1; } }
    printf("PASS\n"); return 0;
}
