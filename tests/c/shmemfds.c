/* Descriptors of the memory object behind shared anonymous mappings (/dev/zero (deleted),
 * opened through /proc/self/map_files): one whose mapping is gone (the descriptor alone keeps
 * the object: "hello" in it, O_APPEND, offset 3), one whose mapping stays (two pages), mapped
 * private too (its first page written, copied on write). After restart: the first holds "hello"
 * at its offset with its flags; the second and its mapping are one object again, writes showing
 * both ways; the private mapping keeps its own page and shows the object's other page, writes
 * to the object included. Usage: shmemfds */
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include "prog.h"

#define PG 4096

static int object_of(void *addr, size_t len)
{
    char path[128];
    snprintf(path, sizeof path, "/proc/self/map_files/%lx-%lx", (unsigned long)addr, (unsigned long)addr + len);
    return open(path, O_RDWR);
}

int main(void)
{
    char *a = mmap(NULL, PG, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    check(a != MAP_FAILED, "mmap");
    int fa = object_of(a, PG);
    check(fa >= 0, "opening the first object");
    check(ftruncate(fa, 0) == 0 && munmap(a, PG) == 0, "emptying and unmapping it");
    check(fcntl(fa, F_SETFL, O_APPEND) == 0 && write(fa, "hello", 5) == 5 && lseek(fa, 3, SEEK_SET) == 3, "writing to it");
    int flags = fcntl(fa, F_GETFL);
    struct statfs fs1;
    check(fstatfs(fa, &fs1) == 0, "statfs");

    char *b = mmap(NULL, 2 * PG, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    check(b != MAP_FAILED, "mmap");
    memcpy(b + PG, "SECOND", 6);
    int fb = object_of(b, 2 * PG);
    check(fb >= 0, "opening the second object");
    char *p = mmap(NULL, 2 * PG, PROT_READ | PROT_WRITE, MAP_PRIVATE, fb, 0);
    check(p != MAP_FAILED, "mapping the second object private");
    memcpy(p, "PRIVATE", 7);
    ready();
    wait_for_verify(NULL);

    char got[16] = {0};
    struct statfs fs2;
    check(fcntl(fa, F_GETFL) == flags, "the first's flags");
    check(lseek(fa, 0, SEEK_CUR) == 3, "the first's offset");
    check(fstatfs(fa, &fs2) == 0 && fs2.f_type == fs1.f_type, "the first is on the same kind of file system");
    check(pread(fa, got, 16, 0) == 5 && !memcmp(got, "hello", 5), "the first's contents");
    check(pread(fb, got, 6, PG) == 6 && !memcmp(got, "SECOND", 6), "the second's contents");
    check(pwrite(fb, "FROMFD", 6, 100) == 6 && !memcmp(b + 100, "FROMFD", 6), "a write to the descriptor shows in the mapping");
    memcpy(b + 200, "FROMMAP", 7);
    check(pread(fb, got, 7, 200) == 7 && !memcmp(got, "FROMMAP", 7), "a write to the mapping shows through the descriptor");
    check(!memcmp(p, "PRIVATE", 7) && b[0] == 0, "the private copy of the first page, the object's untouched");
    check(!memcmp(p + PG, "SECOND", 6), "the object's second page shows through the private mapping");
    memcpy(b + PG + 50, "LATER", 5);
    check(!memcmp(p + PG + 50, "LATER", 5), "a later write to the object shows through the private mapping");
    pass();
}
