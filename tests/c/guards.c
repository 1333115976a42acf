/* Guard regions (madvise MADV_GUARD_INSTALL, Linux 6.13): pages that fault when touched, in
 * private anonymous memory (one page and a run of two among pages of data) and in a private
 * mapping of a file (unlinked), whose other pages hold written and unwritten data. After
 * restart every guard page still faults (SIGSEGV, caught), in the process and in a child it
 * forks (guards are inherited), and the pages around them hold their data. The anonymous
 * memory is two mappings (its last pages made read-only), the run of two guard pages one in
 * each: the checkpoint, which looks for guards in mappings next to each other at once, finds
 * each mapping's own. */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdint.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include "prog.h"

#ifndef MADV_GUARD_INSTALL
#define MADV_GUARD_INSTALL 102
#endif

#define PG 4096
#define ANON 8
#define FILEPAGES 4

static uint8_t *anon, *filemap;
static const int anon_guard[ANON] = {0, 1, 0, 0, 1, 1, 0, 0};
static const int file_guard[FILEPAGES] = {0, 1, 0, 1};

static sigjmp_buf jb;
static volatile sig_atomic_t armed;
static void on_segv(int s)
{
    (void)s;
    if (armed)
        siglongjmp(jb, 1);
}

/* Whether reading *p faults. */
static int faults(volatile uint8_t *p)
{
    armed = 1;
    if (sigsetjmp(jb, 1)) {
        armed = 0;
        return 1;
    }
    (void)*p;
    armed = 0;
    return 0;
}

static int all_well(void)
{
    for (int i = 0; i < ANON; i++) {
        if (faults(anon + i * PG) != anon_guard[i])
            return 0;
        if (!anon_guard[i] && (anon[i * PG] != (uint8_t)(i + 1) || anon[i * PG + PG - 1] != (uint8_t)(i + 101)))
            return 0;
    }
    for (int i = 0; i < FILEPAGES; i++) {
        if (faults(filemap + i * PG) != file_guard[i])
            return 0;
        /* Page 0 was written (a private copy), page 2 not (the file's bytes). */
        if (i == 0 && filemap[0] != 0x5a)
            return 0;
        if (i == 2 && filemap[2 * PG] != 'f')
            return 0;
    }
    return 1;
}

int main(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_segv;
    check(sigaction(SIGSEGV, &sa, NULL) == 0, "SIGSEGV handler");

    anon = mmap(NULL, ANON * PG, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    check(anon != MAP_FAILED, "mmap anonymous");
    for (int i = 0; i < ANON; i++) {
        anon[i * PG] = (uint8_t)(i + 1);
        anon[i * PG + PG - 1] = (uint8_t)(i + 101);
    }

    char path[] = "/tmp/crest-guards-XXXXXX";
    int fd = mkstemp(path);
    check(fd >= 0, "mkstemp");
    unlink(path);
    char buf[PG];
    memset(buf, 'f', sizeof buf);
    for (int i = 0; i < FILEPAGES; i++)
        check(write(fd, buf, PG) == PG, "writing the file");
    filemap = mmap(NULL, FILEPAGES * PG, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
    check(filemap != MAP_FAILED, "mmap of the file");
    close(fd);
    filemap[0] = 0x5a;

    for (int i = 0; i < ANON; i++)
        if (anon_guard[i])
            check(madvise(anon + i * PG, PG, MADV_GUARD_INSTALL) == 0, "MADV_GUARD_INSTALL on anonymous memory");
    for (int i = 0; i < FILEPAGES; i++)
        if (file_guard[i])
            check(madvise(filemap + i * PG, PG, MADV_GUARD_INSTALL) == 0, "MADV_GUARD_INSTALL on the file mapping");
    check(mprotect(anon + 5 * PG, (ANON - 5) * PG, PROT_READ) == 0, "making the last anonymous pages read-only");
    check(all_well(), "guards fault before the checkpoint");

    ready();
    wait_for_verify(NULL);

    check(all_well(), "guard pages fault and the pages around them keep their data");
    pid_t c = fork();
    check(c >= 0, "fork");
    if (c == 0)
        _exit(all_well() ? 0 : 1);
    int st;
    check(waitpid(c, &st, 0) == c && WIFEXITED(st) && WEXITSTATUS(st) == 0, "a child inherits the guard pages");
    pass();
}
