/* Deleted directories. DIR/cwd (mode 0750) is the working directory and is open too, then
 * removed; DIR/gone/sub is open, then removed with DIR/gone above it. After restart: the
 * working directory and the descriptor are one deleted directory (same inode, no links),
 * /proc/self/cwd reads as it did, getcwd fails with ENOENT, the mode is kept; DIR/gone/sub is
 * open, a deleted directory, read as it was; nothing was left behind in DIR.
 * Usage: ghostdirs DIR */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <sys/stat.h>
#include "prog.h"

static char cwd[4200], gone[4200], sub[4200];

static int reads_as(const char *link, const char *path)
{
    char got[4400], want[4400];
    ssize_t n = readlink(link, got, sizeof got - 1);
    if (n < 0)
        return 0;
    got[n] = 0;
    snprintf(want, sizeof want, "%s (deleted)", path);
    return !strcmp(got, want);
}

int main(int argc, char **argv)
{
    check(argc == 2, "usage: ghostdirs DIR");
    snprintf(cwd, sizeof cwd, "%s/cwd", argv[1]);
    snprintf(gone, sizeof gone, "%s/gone", argv[1]);
    snprintf(sub, sizeof sub, "%s/gone/sub", argv[1]);
    check(mkdir(cwd, 0750) == 0 && chmod(cwd, 0750) == 0, "mkdir cwd");
    check(mkdir(gone, 0700) == 0 && mkdir(sub, 0711) == 0 && chmod(sub, 0711) == 0, "mkdir gone/sub");
    int d = open(cwd, O_DIRECTORY | O_RDONLY);
    int s = open(sub, O_DIRECTORY | O_RDONLY);
    check(d >= 0 && s >= 0, "opening the directories");
    check(chdir(cwd) == 0, "chdir");
    check(rmdir(cwd) == 0 && rmdir(sub) == 0 && rmdir(gone) == 0, "rmdir");
    char fdlink[64];
    ready();
    wait_for_verify(NULL);

    struct stat sd, sc, ss;
    check(fstat(d, &sd) == 0 && stat("/proc/self/cwd", &sc) == 0, "stat of the directory and of the working directory");
    check(S_ISDIR(sd.st_mode) && sd.st_nlink == 0, "the open directory is a deleted directory");
    check(sd.st_ino == sc.st_ino && sd.st_dev == sc.st_dev, "the working directory is the open directory");
    check((sd.st_mode & 07777) == 0750, "its mode");
    check(reads_as("/proc/self/cwd", cwd), "/proc/self/cwd reads as it did");
    char buf[4200];
    check(getcwd(buf, sizeof buf) == NULL && errno == ENOENT, "getcwd fails with ENOENT");
    snprintf(fdlink, sizeof fdlink, "/proc/self/fd/%d", d);
    check(reads_as(fdlink, cwd), "the descriptor reads as the deleted directory");
    check(fstat(s, &ss) == 0 && S_ISDIR(ss.st_mode) && ss.st_nlink == 0 && (ss.st_mode & 07777) == 0711, "gone/sub is a deleted directory with its mode");
    snprintf(fdlink, sizeof fdlink, "/proc/self/fd/%d", s);
    check(reads_as(fdlink, sub), "gone/sub's descriptor reads as it did");
    check(access(cwd, F_OK) == -1 && access(gone, F_OK) == -1, "nothing is left where they were");
    DIR *dir = opendir(argv[1]);
    check(dir != NULL, "listing DIR");
    struct dirent *e;
    while ((e = readdir(dir)))
        check(!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..") || e->d_type != DT_DIR, "no directory is left in DIR");
    closedir(dir);
    check(fchdir(d) == 0 || errno == ENOENT, "fchdir to the deleted directory");
    pass();
}
