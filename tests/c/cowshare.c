/* Memory a parent and its forked children share copy-on-write. The parent fills private
 * anonymous memory, a private mapping of a file (some pages written) and a heap buffer, then
 * forks child 1 (which writes some pages and forks a grandchild, which writes others) and
 * child 2 (which writes nothing); the parent then writes pages of its own. Everyone then
 * waits. On SIGUSR2 the parent checks the contents of every page of every process (the
 * others' through /proc/PID/mem) and, when /proc/PID/pagemap shows page frames (root), that
 * every page nobody wrote since the fork is still one page frame in every process that has
 * it, and that every written page is a copy of its own. Each child dies with its parent
 * (PR_SET_PDEATHSIG), so a failed check leaves nothing behind. */
#define _GNU_SOURCE
#include "prog.h"

#include <dirent.h>
#include <fcntl.h>
#include <stdint.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/wait.h>

#define PG 4096
#define N 64   /* anonymous pages */
#define F 16   /* file pages */
#define H 8    /* heap pages */

static unsigned char *anon, *file, *heap;
static volatile int role; /* 0 parent, 1 child 1, 2 child 2, 3 grandchild */

static unsigned char orig(int i) { return (unsigned char)(i * 13 + 5) | 1; }

/* What page i of the anonymous memory holds in the process of `r`. */
static unsigned char anon_byte(int r, int i)
{
    if (i >= 40)
        return 0; /* never touched */
    if (r == 1 || r == 3) {
        if (i < 8)
            return 0xC1;
        if (r == 3 && i < 12)
            return 0xD1;
    }
    if (r == 0) {
        if (i >= 16 && i < 20)
            return 0xA1;
        if (i == 30)
            return 0; /* dropped by the parent after the forks */
    }
    return orig(i);
}

static unsigned char file_byte(int r, int i)
{
    if (i >= 4)
        return 0x11;
    if (i == 1 && (r == 1 || r == 3))
        return 0x33;
    if (i == 2 && r == 0)
        return 0x44;
    return 0x22;
}

/* Whether anonymous page i is still one page frame in the processes of roles ra and rb (one
 * the other's ancestor): nobody in either line wrote or dropped it since they parted. */
static int anon_shared(int ra, int rb, int i)
{
    int parent = ra == 0 || rb == 0, line1 = (ra == 1 || ra == 3) != (rb == 1 || rb == 3), grand = (ra == 3) != (rb == 3);
    if (i >= 40)
        return 0;
    if (parent && (i == 30 || (i >= 16 && i < 20)))
        return 0;
    if (line1 && i < 8)
        return 0;
    if (grand && i >= 8 && i < 12)
        return 0;
    return 1;
}

static int file_shared(int r, int q, int i)
{
    if (i >= 4)
        return 0; /* the file's own pages: not copies */
    if (i == 1 && ((r == 1 || r == 3) != (q == 1 || q == 3)))
        return 0;
    if (i == 2 && ((r == 0) != (q == 0)))
        return 0;
    return 1;
}

static void fill(unsigned char *p, int c, int n) { memset(p, c, (size_t)n * PG); }

static void wait_forever(void)
{
    for (;;)
        pause();
}

static uint64_t frame(int pid, const void *addr)
{
    char path[64];
    uint64_t e = 0;
    snprintf(path, sizeof path, "/proc/%d/pagemap", pid);
    int fd = open(path, O_RDONLY);
    check(fd >= 0, "open pagemap");
    check(pread(fd, &e, 8, (off_t)((uintptr_t)addr / PG * 8)) == 8, "read pagemap");
    close(fd);
    if (!(e & (1ULL << 63)))
        return 0;
    return e & ((1ULL << 55) - 1);
}

static void read_mem(int pid, const void *addr, void *buf, size_t len)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/mem", pid);
    int fd = open(path, O_RDONLY);
    check(fd >= 0, "open /proc/PID/mem");
    check(pread(fd, buf, len, (off_t)(uintptr_t)addr) == (ssize_t)len, "read /proc/PID/mem");
    close(fd);
}

static int children(int pid, int *out, int max)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/task/%d/children", pid, pid);
    FILE *f = fopen(path, "r");
    int n = 0;
    if (!f)
        return 0;
    while (n < max && fscanf(f, "%d", &out[n]) == 1)
        n++;
    fclose(f);
    return n;
}

static void check_contents(int pid, int r)
{
    static unsigned char page[PG];
    char what[128];
    for (int i = 0; i < N; i++) {
        read_mem(pid, anon + i * PG, page, PG);
        for (int b = 0; b < PG; b++)
            if (page[b] != anon_byte(r, i)) {
                snprintf(what, sizeof what, "process of role %d: anonymous page %d holds %#x at %d, not %#x", r, i, page[b], b, anon_byte(r, i));
                check(0, what);
            }
    }
    for (int i = 0; i < F; i++) {
        read_mem(pid, file + i * PG, page, PG);
        for (int b = 0; b < PG; b++)
            if (page[b] != file_byte(r, i)) {
                snprintf(what, sizeof what, "process of role %d: file page %d holds %#x, not %#x", r, i, page[b], file_byte(r, i));
                check(0, what);
            }
    }
    for (int i = 0; i < H; i++) {
        read_mem(pid, heap + i * PG, page, PG);
        check(page[0] == 0x5a && page[PG - 1] == 0x5a, "heap contents");
    }
}

/* Pages of processes `a` (role ra) and `b` (role rb), one the other's ancestor. */
static int check_frames(int a, int ra, int b, int rb)
{
    char what[160];
    int shared = 0;
    for (int i = 0; i < N; i++) {
        uint64_t fa = frame(a, anon + i * PG), fb = frame(b, anon + i * PG);
        int want = anon_shared(ra, rb, i);
        if (want) {
            snprintf(what, sizeof what, "anonymous page %d: roles %d and %d no longer share it (frames %#llx, %#llx)", i, ra, rb, (unsigned long long)fa, (unsigned long long)fb);
            check(fa != 0 && fa == fb, what);
            shared++;
        } else if (i < 40 && i != 30) {
            snprintf(what, sizeof what, "anonymous page %d: roles %d and %d share a page one of them wrote", i, ra, rb);
            check(fa != fb, what);
        }
    }
    for (int i = 0; i < F; i++) {
        uint64_t fa = frame(a, file + i * PG), fb = frame(b, file + i * PG);
        if (file_shared(ra, rb, i)) {
            snprintf(what, sizeof what, "file page %d: roles %d and %d no longer share its copy (frames %#llx, %#llx)", i, ra, rb, (unsigned long long)fa, (unsigned long long)fb);
            check(fa != 0 && fa == fb, what);
            shared++;
        } else if (i < 4) {
            snprintf(what, sizeof what, "file page %d: roles %d and %d share a copy one of them wrote", i, ra, rb);
            check(fa != fb, what);
        }
    }
    for (int i = 1; i < H - 1; i++) {
        uint64_t fa = frame(a, heap + i * PG), fb = frame(b, heap + i * PG);
        snprintf(what, sizeof what, "heap page %d: roles %d and %d no longer share it", i, ra, rb);
        check(fa != 0 && fa == fb, what);
        shared++;
    }
    return shared;
}

static void verify(void)
{
    int kids[4], gk[4];
    int n = children(getpid(), kids, 4);
    check(n == 2, "the parent has its two children");
    int c1 = 0, c2 = 0;
    for (int k = 0; k < n; k++) {
        int r = 0;
        read_mem(kids[k], (const void *)&role, &r, sizeof r);
        if (r == 1)
            c1 = kids[k];
        if (r == 2)
            c2 = kids[k];
    }
    check(c1 && c2, "both children found by role");
    check(children(c1, gk, 4) == 1, "child 1 has its child");
    int g = gk[0];
    int r = 0;
    read_mem(g, (const void *)&role, &r, sizeof r);
    check(r == 3, "the grandchild found");
    check_contents(getpid(), 0);
    check_contents(c1, 1);
    check_contents(c2, 2);
    check_contents(g, 3);
    if (frame(getpid(), anon) == 0) {
        printf("page frames not readable (not root): sharing not checked\n");
    } else {
        int s = check_frames(getpid(), 0, c1, 1) + check_frames(getpid(), 0, c2, 2) + check_frames(c1, 1, g, 3) + check_frames(getpid(), 0, g, 3);
        printf("shared pages checked: %d\n", s);
    }
    /* The memory is still private: a write is seen by no one else. */
    anon[20 * PG] = 0x77;
    unsigned char b = 0;
    read_mem(c2, anon + 20 * PG, &b, 1);
    check(b == orig(20), "a write after the restart stays private");
    kill(g, SIGKILL);
    kill(c1, SIGKILL);
    kill(c2, SIGKILL);
    waitpid(c1, NULL, 0);
    waitpid(c2, NULL, 0);
    pass();
}

int main(void)
{
    printf("start\n");
    fflush(stdout);
    anon = mmap(NULL, N * PG, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    check(anon != MAP_FAILED, "mmap anonymous");
    for (int i = 0; i < 40; i++)
        memset(anon + i * PG, orig(i), PG);
    int fd = open("cowshare.data", O_RDWR | O_CREAT | O_TRUNC, 0600);
    check(fd >= 0, "create the data file");
    static unsigned char page[PG];
    memset(page, 0x11, PG);
    for (int i = 0; i < F; i++)
        check(write(fd, page, PG) == PG, "write the data file");
    file = mmap(NULL, F * PG, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
    check(file != MAP_FAILED, "mmap the file");
    close(fd);
    fill(file, 0x22, 4);
    heap = malloc((H + 1) * PG);
    check(heap != NULL, "malloc");
    heap = (unsigned char *)(((uintptr_t)heap + PG - 1) & ~(uintptr_t)(PG - 1));
    fill(heap, 0x5a, H);

    int done[2];
    check(pipe(done) == 0, "pipe");
    pid_t c1 = fork();
    check(c1 >= 0, "fork child 1");
    if (c1 == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        role = 1;
        fill(anon, 0xC1, 8);
        fill(file + PG, 0x33, 1);
        pid_t g = fork();
        check(g >= 0, "fork the grandchild");
        if (g == 0) {
            prctl(PR_SET_PDEATHSIG, SIGKILL);
            role = 3;
            fill(anon + 8 * PG, 0xD1, 4);
            check(write(done[1], "g", 1) == 1, "tell");
            wait_forever();
        }
        check(write(done[1], "1", 1) == 1, "tell");
        wait_forever();
    }
    pid_t c2 = fork();
    check(c2 >= 0, "fork child 2");
    if (c2 == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        role = 2;
        check(write(done[1], "2", 1) == 1, "tell");
        wait_forever();
    }
    char c;
    for (int k = 0; k < 3; k++)
        check(read(done[0], &c, 1) == 1, "children ready");
    close(done[0]);
    close(done[1]);
    fill(anon + 16 * PG, 0xA1, 4);
    madvise(anon + 30 * PG, PG, MADV_DONTNEED);
    fill(file + 2 * PG, 0x44, 1);
    /* Before the checkpoint the same checks hold (sanity of the test itself). */
    check_contents(getpid(), 0);
    if (frame(getpid(), anon))
        check_frames(getpid(), 0, c2, 2);
    ready();
    wait_for_verify(NULL);
    verify();
    return 0;
}
