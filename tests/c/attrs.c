/* Process settings that are neither memory nor files: an interval timer that keeps firing,
 * nice value, oom_score_adj, child-subreaper, parent-death signal, dumpable, THP disabled,
 * timer slack, the O_APPEND flag and SIGIO owner of a descriptor, and a sealed memfd with its
 * mode. Sets them all, says "ready", and on SIGUSR2 checks every one and prints PASS.
 * With "refuse MODE": sets up something crest refuses and waits for SIGUSR2: a POSIX timer
 * (posixtimer), or seccomp strict mode (seccomp: it spins, as it may only read and write). */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <linux/seccomp.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/time.h>
#include "prog.h"

static volatile sig_atomic_t alarms;
static void on_alarm(int s) { (void)s; alarms++; }

int main(int argc, char **argv)
{
    if (argc > 2 && strcmp(argv[1], "refuse") == 0) {
        if (strcmp(argv[2], "posixtimer") == 0) {
            timer_t t;
            struct sigevent ev;
            memset(&ev, 0, sizeof ev);
            ev.sigev_notify = SIGEV_NONE;
            check(timer_create(CLOCK_MONOTONIC, &ev, &t) == 0, "timer_create");
        }
        ready();
        if (strcmp(argv[2], "seccomp") == 0) {
            check(prctl(PR_SET_SECCOMP, SECCOMP_MODE_STRICT) == 0, "seccomp strict mode");
            while (!verify_now)
                ;
            write(1, "PASS\n", 5);
            syscall(SYS_exit, 0);
        }
        wait_for_verify(NULL);
        pass();
    }
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_alarm;
    sa.sa_flags = SA_RESTART;
    check(sigaction(SIGALRM, &sa, NULL) == 0, "sigaction SIGALRM");
    struct itimerval it = {{0, 20000}, {0, 20000}};
    check(setitimer(ITIMER_REAL, &it, NULL) == 0, "setitimer");
    struct itimerval prof = {{3000, 0}, {3000, 0}};
    check(setitimer(ITIMER_PROF, &prof, NULL) == 0, "setitimer ITIMER_PROF");
    check(setpriority(PRIO_PROCESS, 0, 7) == 0, "setpriority");
    FILE *oom = fopen("/proc/self/oom_score_adj", "w");
    check(oom && fprintf(oom, "345") > 0 && fclose(oom) == 0, "writing oom_score_adj");
    check(prctl(PR_SET_CHILD_SUBREAPER, 1) == 0, "PR_SET_CHILD_SUBREAPER");
    check(prctl(PR_SET_PDEATHSIG, SIGUSR1) == 0, "PR_SET_PDEATHSIG");
    /* Only root may still trace a process that is not dumpable. */
    int dumpable = geteuid() == 0 ? 0 : 1;
    check(prctl(PR_SET_DUMPABLE, dumpable) == 0, "PR_SET_DUMPABLE");
    check(prctl(PR_SET_THP_DISABLE, 1, 0, 0, 0) == 0, "PR_SET_THP_DISABLE");
    check(prctl(PR_SET_TIMERSLACK, 123456) == 0, "PR_SET_TIMERSLACK");
    int p[2];
    check(pipe(p) == 0, "pipe");
    check(fcntl(p[1], F_SETFL, O_NONBLOCK) == 0, "O_NONBLOCK");
    check(fcntl(p[0], F_SETOWN, getpid()) == 0 && fcntl(p[0], F_SETSIG, SIGRTMIN + 1) == 0, "F_SETOWN, F_SETSIG");
    int m = memfd_create("sealed", MFD_ALLOW_SEALING);
    check(m >= 0 && write(m, "sealed!", 7) == 7, "memfd");
    check(fcntl(m, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE) == 0, "F_ADD_SEALS");
    check(fchmod(m, 0640) == 0, "fchmod memfd");
    check(fcntl(m, F_SETFL, O_APPEND) == 0, "O_APPEND");
    ready();
    wait_for_verify(NULL);

    check(getitimer(ITIMER_REAL, &it) == 0 && it.it_interval.tv_usec == 20000 && it.it_interval.tv_sec == 0, "ITIMER_REAL interval");
    check(getitimer(ITIMER_PROF, &prof) == 0 && prof.it_interval.tv_sec == 3000 && prof.it_value.tv_sec > 2990, "ITIMER_PROF");
    int before = alarms;
    for (int i = 0; i < 50 && alarms < before + 3; i++)
        usleep(20000);
    check(alarms >= before + 3, "SIGALRM keeps coming after the restart");
    errno = 0;
    check(getpriority(PRIO_PROCESS, 0) == 7 && errno == 0, "nice value 7");
    char buf[32] = {0};
    FILE *f = fopen("/proc/self/oom_score_adj", "r");
    check(f && fgets(buf, sizeof buf, f) && atoi(buf) == 345, "oom_score_adj 345");
    fclose(f);
    int v = 0;
    check(prctl(PR_GET_CHILD_SUBREAPER, &v) == 0 && v == 1, "child subreaper");
    check(prctl(PR_GET_PDEATHSIG, &v) == 0 && v == SIGUSR1, "parent-death signal SIGUSR1");
    check(prctl(PR_GET_DUMPABLE) == dumpable, "dumpable flag");
    check(prctl(PR_GET_THP_DISABLE, 0, 0, 0, 0) == 1, "THP disabled");
    check(prctl(PR_GET_TIMERSLACK) == 123456, "timer slack 123456");
    check((fcntl(p[1], F_GETFL) & O_NONBLOCK) && !(fcntl(p[0], F_GETFL) & O_NONBLOCK), "O_NONBLOCK on the write end only");
    check(fcntl(p[0], F_GETOWN) == getpid() && fcntl(p[0], F_GETSIG) == SIGRTMIN + 1, "owner and signal for SIGIO");
    check(fcntl(m, F_GET_SEALS) == (F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE), "memfd seals");
    check(fcntl(m, F_GETFL) & O_APPEND, "memfd O_APPEND");
    struct stat st;
    check(fstat(m, &st) == 0 && (st.st_mode & 07777) == 0640 && st.st_size == 7, "memfd mode and size");
    check(pread(m, buf, 7, 0) == 7 && memcmp(buf, "sealed!", 7) == 0, "memfd contents");
    check(write(m, "x", 1) == -1 && errno == EPERM, "memfd still sealed against writes");
    pass();
}
