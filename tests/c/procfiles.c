/* Files of /proc/PID of processes in the checkpoint: a child's /proc/CHILD/stat, the
 * process's own /proc/self/maps read part way (offset kept), its /proc/self/status and its
 * /proc/self directory. After restart (PIDs may have changed): the stat file is the child's
 * (its parent is this process), maps reads on from its offset and is this process's (it
 * holds the marker mapping), status names this process's PID, the directory is its own.
 * Usage: procfiles */
#include <fcntl.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include "prog.h"

static char buf[1 << 16];

static ssize_t read_all(int fd)
{
    ssize_t got = 0, n;
    while ((n = read(fd, buf + got, sizeof buf - 1 - got)) > 0)
        got += n;
    buf[got > 0 ? got : 0] = 0;
    return got;
}

int main(void)
{
    pid_t child = fork();
    check(child >= 0, "fork");
    if (child == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        for (;;)
            pause();
    }
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/stat", child);
    int st = open(path, O_RDONLY);
    int maps = open("/proc/self/maps", O_RDONLY);
    int status = open("/proc/self/status", O_RDONLY);
    int dir = open("/proc/self", O_RDONLY | O_DIRECTORY);
    check(st >= 0 && maps >= 0 && status >= 0 && dir >= 0, "opening the /proc files");
    char *mark = mmap(NULL, 3 * 4096, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    check(mark != MAP_FAILED, "mmap");
    check(read(maps, buf, 10) == 10, "reading maps part way");
    off_t off = lseek(maps, 0, SEEK_CUR);
    ready();
    wait_for_verify(NULL);

    check(lseek(maps, 0, SEEK_CUR) == off, "the offset of maps");
    check(lseek(maps, 0, SEEK_SET) == 0 && read_all(maps) > 0, "reading maps");
    char want[64];
    snprintf(want, sizeof want, "%lx-%lx ", (unsigned long)mark, (unsigned long)mark + 3 * 4096);
    check(strstr(buf, want) != NULL, "maps is this process's");

    check(read_all(st) > 0, "reading the child's stat");
    int spid = 0, sppid = 0;
    char state;
    check(sscanf(buf, "%d %*s %c %d", &spid, &state, &sppid) == 3, "parsing the child's stat");
    check(sppid == getpid(), "the stat file is of a child of this process");
    check(kill(spid, 0) == 0, "the child it names is alive");

    check(read_all(status) > 0, "reading status");
    snprintf(want, sizeof want, "\nPid:\t%d\n", getpid());
    check(strstr(buf, want) != NULL, "status is this process's");

    int self_stat = openat(dir, "stat", O_RDONLY);
    check(self_stat >= 0 && read_all(self_stat) > 0, "reading stat through the directory");
    check(atoi(buf) == getpid(), "the directory is this process's");

    kill(spid, SIGKILL);
    waitpid(spid, NULL, 0);
    pass();
}
