/* A process that unmapped its vDSO and the kernel's data pages beside it ([vvar],
 * [vvar_vclock]), as a program made for a kernel booted without a vDSO runs: crest finds the
 * `syscall` instruction it runs system calls through in the program's own code instead. After
 * restart it still has none of them, its memory is as it was, and it goes on making system
 * calls (nothing in it may call into the vDSO: glibc's clock_gettime would). With `partial`
 * it unmaps only [vvar], keeping the vDSO: that is refused at checkpoint, and the process,
 * left as it was, checks itself.
 *
 *   novdso [partial] */
#include <stdint.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include "prog.h"

static char pattern[1 << 16];

/* The number of special areas in /proc/self/maps. */
static int specials(void)
{
    FILE *f = fopen("/proc/self/maps", "r");
    check(f != NULL, "opening /proc/self/maps");
    char line[512];
    int n = 0;
    while (fgets(line, sizeof line, f))
        if (strstr(line, "[vdso]") || strstr(line, "[vvar]") || strstr(line, "[vvar_vclock]"))
            n++;
    fclose(f);
    return n;
}

int main(int argc, char **argv)
{
    int partial = argc > 1 && !strcmp(argv[1], "partial");
    for (unsigned i = 0; i < sizeof pattern; i++)
        pattern[i] = (char)(i * 31 % 253);
    FILE *f = fopen("/proc/self/maps", "r");
    check(f != NULL, "opening /proc/self/maps");
    char line[512];
    uintptr_t start[8], end[8];
    int n = 0;
    while (n < 8 && fgets(line, sizeof line, f))
        if ((!partial && (strstr(line, "[vdso]") || strstr(line, "[vvar_vclock]"))) || strstr(line, "[vvar]"))
            check(sscanf(line, "%lx-%lx", &start[n], &end[n]) == 2, "a special area's range"), n++;
    fclose(f);
    check(n > 0, "a vDSO to unmap");
    for (int i = 0; i < n; i++)
        check(syscall(SYS_munmap, start[i], end[i] - start[i]) == 0, "unmapping a special area");
    int left = specials();
    check(partial ? left > 0 : left == 0, "the special areas left");

    ready();
    wait_for_verify(NULL);

    check(specials() == left, "the same special areas after restart");
    for (unsigned i = 0; i < sizeof pattern; i++)
        check(pattern[i] == (char)(i * 31 % 253), "memory as it was");
    check(syscall(SYS_getpid) == getpid(), "system calls go on");
    pass();
}
