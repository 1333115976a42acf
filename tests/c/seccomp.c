/* Seccomp filters, per thread. With no_new_privs set, the main thread installs filter 1
 * (getppid fails with errno 11), creates a thread, which installs filter 2 (getpgid fails with
 * errno 12) for itself alone, then the main thread installs filter 3 (getsid fails with errno
 * 13, with SECCOMP_FILTER_FLAG_LOG) for itself alone. On SIGUSR2 each thread checks that its
 * filters, and only its, still apply, and counts them in /proc (Seccomp_filters). */
#define _GNU_SOURCE
#include "prog.h"

#include <errno.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <pthread.h>
#include <stddef.h>
#include <sys/prctl.h>
#include <sys/syscall.h>

static volatile int go, thread_ok = -1, thread_ready;
static char thread_why[128] = "no verdict";

static void filter(int nr, int err, unsigned flags)
{
    struct sock_filter f[] = {
        BPF_STMT(BPF_LD + BPF_W + BPF_ABS, offsetof(struct seccomp_data, nr)),
        BPF_JUMP(BPF_JMP + BPF_JEQ + BPF_K, (unsigned)nr, 0, 1),
        BPF_STMT(BPF_RET + BPF_K, SECCOMP_RET_ERRNO | (unsigned)err),
        BPF_STMT(BPF_RET + BPF_K, SECCOMP_RET_ALLOW),
    };
    struct sock_fprog prog = {.len = sizeof f / sizeof f[0], .filter = f};
    check(syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, flags, &prog) == 0, "installing a seccomp filter");
}

/* Whether system call nr fails with errno err (err 0: succeeds). */
static int gives(long nr, int err)
{
    errno = 0;
    long r = syscall(nr, 0);
    return err ? (r == -1 && errno == err) : r >= 0;
}

static int filters_here(void)
{
    char path[64], line[128];
    snprintf(path, sizeof path, "/proc/self/task/%ld/status", (long)syscall(SYS_gettid));
    FILE *f = fopen(path, "r");
    int n = -1;
    while (f && fgets(line, sizeof line, f))
        if (sscanf(line, "Seccomp_filters: %d", &n) == 1)
            break;
    if (f)
        fclose(f);
    return n;
}

static void *thread(void *arg)
{
    (void)arg;
    filter(SYS_getpgid, 12, 0);
    thread_ready = 1;
    while (!go)
        usleep(10000);
    if (!gives(SYS_getppid, 11))
        snprintf(thread_why, sizeof thread_why, "thread: getppid is not filtered by the shared filter");
    else if (!gives(SYS_getpgid, 12))
        snprintf(thread_why, sizeof thread_why, "thread: getpgid is not filtered by its own filter");
    else if (!gives(SYS_getsid, 0))
        snprintf(thread_why, sizeof thread_why, "thread: getsid is filtered by the main thread's filter");
    else if (filters_here() != 2)
        snprintf(thread_why, sizeof thread_why, "thread: %d filters, not 2", filters_here());
    else
        thread_ok = 1;
    return NULL;
}

int main(void)
{
    check(prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == 0, "no_new_privs");
    filter(SYS_getppid, 11, 0);
    pthread_t t;
    check(pthread_create(&t, NULL, thread, NULL) == 0, "pthread_create");
    while (!thread_ready)
        usleep(1000);
    filter(SYS_getsid, 13, SECCOMP_FILTER_FLAG_LOG);
    check(gives(SYS_getsid, 13) && gives(SYS_getpgid, 0), "filters before the checkpoint");
    ready();
    wait_for_verify(NULL);
    go = 1;
    check(pthread_join(t, NULL) == 0, "pthread_join");
    check(thread_ok == 1, thread_why);
    check(gives(SYS_getppid, 11), "main: getppid is filtered by the shared filter");
    check(gives(SYS_getsid, 13), "main: getsid is filtered by its own filter");
    check(gives(SYS_getpgid, 0), "main: getpgid is not filtered by the thread's filter");
    check(filters_here() == 2, "main: 2 filters");
    check(prctl(PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0) == 1, "no_new_privs kept");
    pass();
    return 0;
}
