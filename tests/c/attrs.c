/* Process settings that are neither memory nor files: an interval timer that keeps firing,
 * nice value, oom_score_adj, child-subreaper, parent-death signal, dumpable, THP disabled,
 * timer slack, the O_APPEND flag and SIGIO owner of a descriptor, a pipe end opened twice with
 * different flags, a sealed memfd with its mode, an epoll target whose number was closed,
 * membarrier registration, locked and MAP_NORESERVE memory. Sets them all, says "ready", and
 * on SIGUSR2 checks every one and prints PASS.
 * With "creds" (as root): also becomes uid/gid 65534 with groups 100 and 65534, keeping only
 * CAP_NET_BIND_SERVICE, in its main thread only (raw system calls): a second thread stays root.
 * Checks both after the restart.
 * With "refuse MODE": sets up something crest refuses and waits for SIGUSR2: a POSIX timer
 * on the CPU clock of its parent (cputimer), seccomp strict mode (seccomp: it spins, as it may only read and write), a
 * descriptor table shared by two children but no longer by their parent, which left it
 * (sharedfiles), a child in the group of a process that
 * has exited, and its own child in it too (orphangroup), memory locked on fault with a guard
 * region in it (lockedguard, Linux 6.13). */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <pthread.h>
#include <linux/capability.h>
#include <linux/membarrier.h>
#include <linux/seccomp.h>
#include <sched.h>
#include <sys/epoll.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/time.h>
#include "prog.h"

static volatile sig_atomic_t alarms;
static void on_alarm(int s) { (void)s; alarms++; }

/* A child that waits to be killed, and dies with its parent. */
static void linger(void)
{
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    for (;;)
        pause();
}

static int smaps_has(void *addr, const char *flag)
{
    char line[512], want[32];
    snprintf(want, sizeof want, "%lx-", (unsigned long)addr);
    FILE *f = fopen("/proc/self/smaps", "r");
    int in = 0, found = 0;
    while (f && fgets(line, sizeof line, f)) {
        if (strchr(line, '-') && strchr(line, '-') < strchr(line, ' ') && line[0] != 'V')
            in = strncmp(line, want, strlen(want)) == 0;
        if (in && strncmp(line, "VmFlags:", 8) == 0) {
            char pat[8];
            snprintf(pat, sizeof pat, " %s", flag);
            found = strstr(line, pat) != NULL;
        }
    }
    if (f)
        fclose(f);
    return found;
}

/* A thread that keeps its own credentials: on SIGUSR2 it reads its uids. */
static volatile int root_uid = -1, root_done;
static void *stays_root(void *arg)
{
    (void)arg;
    while (!verify_now)
        usleep(10000);
    uid_t r, e, s;
    if (syscall(SYS_getresuid, &r, &e, &s) == 0)
        root_uid = (r == 0 && e == 0 && s == 0) ? 0 : (int)e;
    root_done = 1;
    return NULL;
}

static void caps(uint64_t *eff, uint64_t *prm)
{
    struct __user_cap_header_struct h = {_LINUX_CAPABILITY_VERSION_3, 0};
    struct __user_cap_data_struct d[2];
    check(syscall(SYS_capget, &h, d) == 0, "capget");
    *eff = d[0].effective | (uint64_t)d[1].effective << 32;
    *prm = d[0].permitted | (uint64_t)d[1].permitted << 32;
}

int main(int argc, char **argv)
{
    if (argc > 2 && strcmp(argv[1], "refuse") == 0) {
        if (strcmp(argv[2], "cputimer") == 0) {
            timer_t t;
            clockid_t clock;
            struct sigevent ev;
            memset(&ev, 0, sizeof ev);
            ev.sigev_notify = SIGEV_NONE;
            check(clock_getcpuclockid(getppid(), &clock) == 0, "clock_getcpuclockid");
            check(timer_create(clock, &ev, &t) == 0, "timer_create");
        }
        pid_t child = 0;
        if (strcmp(argv[2], "sharedfiles") == 0) {
            child = syscall(SYS_clone, CLONE_FILES | SIGCHLD, 0, 0, 0, 0);
            check(child >= 0, "clone(CLONE_FILES)");
            if (child == 0)
                linger();
            pid_t second = syscall(SYS_clone, CLONE_FILES | SIGCHLD, 0, 0, 0, 0);
            check(second >= 0, "clone(CLONE_FILES)");
            if (second == 0)
                linger();
            check(unshare(CLONE_FILES) == 0, "unshare(CLONE_FILES)");
        }
        if (strcmp(argv[2], "orphangroup") == 0) {
            /* A child leads a group, makes a sibling in it (CLONE_PARENT), which forks a
             * child of its own in it, and exits: the group's members have two parents, so no
             * stand-in leader could make the group for them. */
            int p[2];
            check(pipe(p) == 0, "pipe");
            pid_t leader = fork();
            check(leader >= 0, "fork");
            if (leader == 0) {
                setpgid(0, 0);
                pid_t c = syscall(SYS_clone, CLONE_PARENT | SIGCHLD, 0, 0, 0, 0);
                if (c == 0) {
                    if (fork() == 0)
                        linger();
                    linger();
                }
                write(p[1], &c, sizeof c);
                _exit(0);
            }
            check(read(p[0], &child, sizeof child) == sizeof child, "the sibling's pid");
            check(waitpid(leader, NULL, 0) == leader, "waiting for the group leader");
        }
        if (strcmp(argv[2], "lockedguard") == 0) {
            /* Memory locked on fault with a guard region in it (MADV_GUARD_INSTALL). */
            char *m = mmap(NULL, 8192, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
            check(m != MAP_FAILED, "mmap");
            m[0] = 1;
            check(madvise(m + 4096, 4096, 102 /* MADV_GUARD_INSTALL */) == 0, "MADV_GUARD_INSTALL");
            check(mlock2(m, 8192, MLOCK_ONFAULT) == 0, "mlock2 MLOCK_ONFAULT");
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
        if (child > 0) {
            kill(child, SIGKILL);
            check(waitpid(child, NULL, 0) == child, "reaping the child");
        }
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
    /* Before the prctl settings: a change of uid resets the parent-death signal. */
    int creds = argc > 1 && strcmp(argv[1], "creds") == 0 && geteuid() == 0;
    pthread_t root_thread;
    if (creds) {
        check(pthread_create(&root_thread, NULL, stays_root, NULL) == 0, "pthread_create");
        /* Raw system calls: glibc's wrappers would change every thread. */
        gid_t groups[] = {100, 65534};
        check(syscall(SYS_setgroups, 2, groups) == 0, "setgroups");
        check(prctl(PR_SET_KEEPCAPS, 1) == 0, "PR_SET_KEEPCAPS");
        check(syscall(SYS_setresgid, 65534, 65534, 65534) == 0 && syscall(SYS_setresuid, 65534, 65534, 65534) == 0, "becoming 65534");
        struct __user_cap_header_struct h = {_LINUX_CAPABILITY_VERSION_3, 0};
        struct __user_cap_data_struct d[2] = {{1u << CAP_NET_BIND_SERVICE, 1u << CAP_NET_BIND_SERVICE, 0}, {0, 0, 0}};
        check(syscall(SYS_capset, &h, d) == 0, "capset");
    }
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
    char path[64];
    snprintf(path, sizeof path, "/proc/self/fd/%d", p[1]);
    int again = open(path, O_WRONLY);
    check(again >= 0, "opening the write end again");
    /* epoll watches a pipe added as fd 200, which is then closed: the file stays as fd q[0]. */
    int q[2];
    check(pipe(q) == 0 && dup2(q[0], 200) == 200, "pipe at fd 200");
    int ep = epoll_create1(0);
    struct epoll_event ev = {EPOLLIN, {.u64 = 77}};
    check(ep >= 0 && epoll_ctl(ep, EPOLL_CTL_ADD, 200, &ev) == 0, "epoll_ctl");
    close(200);
    check(syscall(SYS_membarrier, MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED, 0, 0) == 0, "membarrier register");
    char *locked = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    check(locked != MAP_FAILED && mlock(locked, 4096) == 0, "mlock");
    locked[0] = 42;
    char *noreserve = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    check(noreserve != MAP_FAILED && smaps_has(noreserve, "nr"), "MAP_NORESERVE");
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
    check(!(fcntl(again, F_GETFL) & O_NONBLOCK), "the second open of the write end is its own open file");
    check(write(q[1], "e", 1) == 1 && epoll_wait(ep, &ev, 1, 1000) == 1 && ev.data.u64 == 77, "epoll target added as a closed number");
    check(syscall(SYS_membarrier, MEMBARRIER_CMD_PRIVATE_EXPEDITED, 0, 0) == 0, "membarrier still registered");
    check(smaps_has(locked, "lo") && locked[0] == 42, "mlock'd memory");
    check(smaps_has(noreserve, "nr"), "MAP_NORESERVE memory");
    if (creds) {
        uid_t r, e, sv;
        gid_t gr, ge, gs, groups[8];
        check(getresuid(&r, &e, &sv) == 0 && r == 65534 && e == 65534 && sv == 65534, "uids 65534");
        check(getresgid(&gr, &ge, &gs) == 0 && gr == 65534 && ge == 65534 && gs == 65534, "gids 65534");
        int n = getgroups(8, groups);
        check(n == 2 && ((groups[0] == 100 && groups[1] == 65534) || (groups[0] == 65534 && groups[1] == 100)), "groups 100 and 65534");
        uint64_t eff, prm;
        caps(&eff, &prm);
        check(eff == (1u << CAP_NET_BIND_SERVICE) && prm == eff, "only CAP_NET_BIND_SERVICE");
        check(pthread_join(root_thread, NULL) == 0 && root_done && root_uid == 0, "the other thread is still root");
    }
    pass();
}
