/* Semaphore sets that are not the process's (root only): as root it makes a set no semop ever
 * went through and, with "operated", one it operates on (without SEM_UNDO), prints
 * "ipc A [B]", then becomes user and group 65534, which may not change either. With "threads"
 * a second thread runs beside it (the kernel gives threads a SEM_UNDO list when the first is
 * created). It holds no adjustment on either set: after the restart it checks that it is
 * still that user and that the sets are as they were. */
#define _GNU_SOURCE
#include "prog.h"

#include <errno.h>
#include <grp.h>
#include <pthread.h>
#include <sys/sem.h>

static void *idle(void *arg)
{
    (void)arg;
    for (;;)
        pause();
    return NULL;
}

int main(int argc, char **argv)
{
    int threads = 0, operated = 0;
    for (int i = 1; i < argc; i++) {
        threads |= strcmp(argv[i], "threads") == 0;
        operated |= strcmp(argv[i], "operated") == 0;
    }
    int a = semget(IPC_PRIVATE, 1, 0600 | IPC_CREAT);
    check(a >= 0, "semget A");
    int b = -1;
    if (operated) {
        b = semget(IPC_PRIVATE, 1, 0600 | IPC_CREAT);
        check(b >= 0, "semget B");
        struct sembuf up = {0, 1, 0};
        check(semop(b, &up, 1) == 0, "semop on B as root");
        printf("ipc %d %d\n", a, b);
    } else {
        printf("ipc %d\n", a);
    }
    fflush(stdout);
    check(setgroups(0, NULL) == 0 && setgid(65534) == 0 && setuid(65534) == 0, "becoming 65534 (needs root)");
    /* Without SEM_UNDO: a semop with it makes the process an undo list even when refused. */
    struct sembuf down = {0, -1, IPC_NOWAIT};
    check(semop(a, &down, 1) == -1 && errno == EACCES, "A may not be changed");
    pthread_t t;
    if (threads)
        check(pthread_create(&t, NULL, idle, NULL) == 0, "pthread_create");
    ready();
    wait_for_verify(NULL);
    check(getuid() == 65534 && getgid() == 65534, "still user and group 65534");
    check(semop(a, &down, 1) == -1 && errno == EACCES, "A still may not be changed");
    check(semctl(a, 0, GETVAL) == -1 && errno == EACCES, "A still may not be read");
    pass();
}
