/* Two descriptors of the slave of a pseudo-terminal whose master was closed (hung up, its
 * node gone from /dev/pts). After restart both are still open on a pseudo-terminal slave that
 * is hung up as before: a read gives end of file, a write fails with EIO. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include "prog.h"

static void hung_up(int fd, const char *when)
{
    char c, what[128];
    struct stat st;
    snprintf(what, sizeof what, "%s: fd %d is a pseudo-terminal slave", when, fd);
    check(fstat(fd, &st) == 0 && S_ISCHR(st.st_mode) && major(st.st_rdev) >= 136 && major(st.st_rdev) < 144, what);
    snprintf(what, sizeof what, "%s: fd %d reads end of file", when, fd);
    check(read(fd, &c, 1) == 0, what);
    snprintf(what, sizeof what, "%s: fd %d cannot be written (EIO)", when, fd);
    check(write(fd, "x", 1) == -1 && errno == EIO, what);
}

int main(void)
{
    signal(SIGHUP, SIG_IGN);
    int master = posix_openpt(O_RDWR | O_NOCTTY);
    check(master >= 0 && grantpt(master) == 0 && unlockpt(master) == 0, "a pseudo-terminal");
    char name[64];
    check(ptsname_r(master, name, sizeof name) == 0, "ptsname");
    int one = open(name, O_RDWR | O_NOCTTY), two = open(name, O_RDWR | O_NOCTTY | O_NONBLOCK);
    check(one >= 0 && two >= 0, "two opens of the slave");
    close(master);
    check(access(name, F_OK) != 0, "the slave's node is gone");
    hung_up(one, "before");
    hung_up(two, "before");
    ready();
    wait_for_verify(NULL);
    hung_up(one, "after");
    hung_up(two, "after");
    check(fcntl(two, F_GETFL) & O_NONBLOCK, "the second keeps O_NONBLOCK");
    pass();
}
