/* The process behind the golden images (make-golden.sh): MODE is single, tree, threads,
 * sharedfiles or guards. It fills a little memory with text, forks two children (tree), starts
 * three threads (threads), makes a child and a grandchild sharing its descriptor table with
 * clone(CLONE_FILES) (sharedfiles) or maps four pages of text with a guard region on the
 * second (guards, MADV_GUARD_INSTALL), creates the file READY, and sleeps until it is killed. */
#define _GNU_SOURCE
#include <sched.h>
#include <sys/mman.h>
#include <signal.h>
#include <sys/syscall.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char *heap;

static void fill(void)
{
    static const char words[] = "the pages of a process are saved and restored ";
    heap = malloc(16 << 10);
    for (size_t i = 0; i < (16 << 10); i++)
        heap[i] = words[i % (sizeof words - 1)];
}

static void *sleeper(void *arg)
{
    (void)arg;
    for (;;)
        pause();
    return NULL;
}

int main(int argc, char **argv)
{
    if (argc != 3)
        return 2;
    fill();
    if (strcmp(argv[1], "tree") == 0) {
        for (int i = 0; i < 2; i++)
            if (fork() == 0)
                sleeper(NULL);
    } else if (strcmp(argv[1], "threads") == 0) {
        for (int i = 0; i < 3; i++) {
            pthread_t t;
            if (pthread_create(&t, NULL, sleeper, NULL) != 0)
                return 1;
        }
    } else if (strcmp(argv[1], "sharedfiles") == 0) {
        if (syscall(SYS_clone, CLONE_FILES | SIGCHLD, 0, 0, 0, 0) == 0) {
            if (syscall(SYS_clone, CLONE_FILES | SIGCHLD, 0, 0, 0, 0) == 0)
                sleeper(NULL);
            sleeper(NULL);
        }
    } else if (strcmp(argv[1], "guards") == 0) {
        char *m = mmap(NULL, 4 << 12, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (m == MAP_FAILED)
            return 1;
        memcpy(m, heap, 4 << 12);
        if (madvise(m + (1 << 12), 1 << 12, 102 /* MADV_GUARD_INSTALL */) != 0)
            return 1;
    } else if (strcmp(argv[1], "single") != 0) {
        return 2;
    }
    FILE *f = fopen(argv[2], "w");
    if (!f)
        return 1;
    fclose(f);
    sleeper(NULL);
}
