/* A parent and 4 forked workers sharing memory: a MAP_SHARED|MAP_ANONYMOUS region with a
 * process-shared POSIX semaphore in it, a SysV shared memory segment (removed at once, so it
 * lives while attached) guarded by a SysV semaphore set, a memfd and a /dev/shm file (both
 * mapped shared, their descriptors closed), updated under the POSIX semaphore. Each worker takes each
 * lock, adds one to the shared total and to its own count, and lets go. On SIGUSR2 the parent
 * waits until the totals grow (the workers still share its memory), stops the workers, and
 * checks that each total is the sum of the workers' counts: nothing lost, nothing private. */
#define _GNU_SOURCE
#include "prog.h"

#include <errno.h>
#include <fcntl.h>
#include <semaphore.h>
#include <stdint.h>
#include <sys/ipc.h>
#include <sys/mman.h>
#include <sys/sem.h>
#include <sys/shm.h>
#include <sys/wait.h>

#define W 4

struct shared {
    sem_t lock;
    volatile int stop;
    volatile uint64_t total;
    volatile uint64_t count[W];
};

struct sysv {
    volatile uint64_t total;
    volatile uint64_t count[W];
};

static int semid;

struct extra {
    volatile uint64_t total;
};

static struct extra *map_fd(int fd)
{
    check(fd >= 0 && ftruncate(fd, 1 << 16) == 0, "sizing the shared file");
    struct extra *e = mmap(NULL, 1 << 16, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    check(e != MAP_FAILED, "mapping the shared file");
    close(fd);
    return e;
}

static void sysv_lock(int delta)
{
    struct sembuf op = {0, (short)delta, 0};
    while (semop(semid, &op, 1) != 0)
        check(errno == EINTR, "semop");
}

int main(void)
{
    struct shared *s = mmap(NULL, 4 << 20, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    check(s != MAP_FAILED, "mmap shared");
    check(sem_init(&s->lock, 1, 1) == 0, "sem_init");
    int shmid = shmget(IPC_PRIVATE, 1 << 20, IPC_CREAT | 0600);
    check(shmid >= 0, "shmget");
    struct sysv *v = shmat(shmid, NULL, 0);
    check(v != (void *)-1, "shmat");
    check(shmctl(shmid, IPC_RMID, NULL) == 0, "removing the segment (it lives while attached)");
    semid = semget(IPC_PRIVATE, 1, IPC_CREAT | 0600);
    check(semid >= 0, "semget");
    check(semctl(semid, 0, SETVAL, 1) == 0, "semctl SETVAL");
    int mfd = memfd_create("crest-workers", 0);
    int kept = dup(mfd); /* a memfd kept open as a descriptor too, at offset 8 */
    check(kept >= 0 && lseek(kept, 8, SEEK_SET) == 8, "keeping the memfd open");
    struct extra *mf = map_fd(mfd);
    char shm[64];
    snprintf(shm, sizeof shm, "/crest-workers-%d", (int)getpid());
    struct extra *sf = map_fd(shm_open(shm, O_RDWR | O_CREAT | O_EXCL, 0600));
    /* A child that writes a part of the shared mapping no other process ever touches, then
     * ends: its pages live only in the shared object, in no process's page tables. */
    pid_t scribe = fork();
    check(scribe >= 0, "fork");
    if (scribe == 0) {
        unsigned char *far = (unsigned char *)s + (2 << 20);
        for (int i = 0; i < (64 << 10); i++)
            far[i] = (unsigned char)(i * 7 + 1);
        _exit(0);
    }
    int sst;
    while (waitpid(scribe, &sst, 0) < 0)
        check(errno == EINTR, "waitpid");
    check(WIFEXITED(sst) && WEXITSTATUS(sst) == 0, "the scribe ended well");
    printf("ipc sem %d\n", semid);
    fflush(stdout);
    pid_t kids[W];
    for (int w = 0; w < W; w++) {
        kids[w] = fork();
        check(kids[w] >= 0, "fork");
        if (kids[w] == 0) {
            while (!s->stop) {
                while (sem_wait(&s->lock) != 0)
                    check(errno == EINTR, "sem_wait");
                s->total++;
                s->count[w]++;
                mf->total++;
                sf->total++;
                sem_post(&s->lock);
                sysv_lock(-1);
                v->total++;
                v->count[w]++;
                sysv_lock(1);
                struct timespec ts = {0, 200 * 1000};
                nanosleep(&ts, NULL);
            }
            _exit(0);
        }
    }
    while (s->total < 200 || v->total < 200) {
        struct timespec ts = {0, 10 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    ready();
    wait_for_verify(NULL);
    uint64_t a = s->total, b = v->total;
    for (int i = 0; i < 500 && (s->total < a + 100 || v->total < b + 100); i++) {
        struct timespec ts = {0, 10 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    check(s->total >= a + 100, "the workers' updates reach the parent through the shared mapping");
    check(v->total >= b + 100, "the workers' updates reach the parent through SysV shared memory");
    s->stop = 1;
    for (int w = 0; w < W; w++) {
        int st;
        while (waitpid(kids[w], &st, 0) < 0)
            check(errno == EINTR, "waitpid");
        check(WIFEXITED(st) && WEXITSTATUS(st) == 0, "worker ended well");
    }
    uint64_t sa = 0, sb = 0;
    for (int w = 0; w < W; w++) {
        sa += s->count[w];
        sb += v->count[w];
    }
    check(sa == s->total, "shared mapping: total is the sum of the workers' counts");
    const unsigned char *far = (const unsigned char *)s + (2 << 20);
    for (int i = 0; i < (64 << 10); i++)
        check(far[i] == (unsigned char)(i * 7 + 1), "shared mapping: what an ended child wrote is still there");
    check(mf->total == s->total, "memfd: the same total");
    uint64_t via_fd = 0;
    check(pread(kept, &via_fd, sizeof via_fd, 0) == sizeof via_fd && via_fd == mf->total, "the memfd's descriptor and its mapping are one object");
    check(lseek(kept, 0, SEEK_CUR) == 8, "the memfd descriptor's offset is kept");
    check(sf->total == s->total, "/dev/shm file: the same total");
    shm_unlink(shm);
    check(sb == v->total, "SysV memory: total is the sum of the workers' counts");
    check(semctl(semid, 0, GETVAL) == 1, "SysV semaphore free at the end");
    semctl(semid, 0, IPC_RMID);
    pass();
}
