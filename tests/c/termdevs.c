/* Terminal devices that are not pseudo-terminals, open at numbers above 2 (root: makes the
 * nodes in DIR): the system console (5:1) read-only, a virtual console (4:5, tty5) read-write,
 * made exclusive (TIOCEXCL) and with its settings changed, and a duplicate of that one. After
 * the restart each descriptor is the same device, with the same open flags, the two duplicates
 * still share one open file, the console's settings are those set, and it is still
 * exclusive (a mode the kernel clears when the last descriptor of a terminal closes, as the
 * checkpoint's --kill does). */
#define _GNU_SOURCE
#include "prog.h"

#include <fcntl.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <termios.h>

static int open_node(const char *dir, const char *name, int major, int minor, int flags)
{
    char path[512];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    unlink(path);
    check(mknod(path, S_IFCHR | 0600, makedev(major, minor)) == 0, "mknod of a terminal node (needs root)");
    int fd = open(path, flags | O_NOCTTY);
    check(fd >= 0, "opening a terminal node");
    return fd;
}

int main(int argc, char **argv)
{
    check(argc > 1, "usage: termdevs DIR");
    int console = open_node(argv[1], "console", 5, 1, O_RDONLY);
    int vt = open_node(argv[1], "tty5", 4, 5, O_RDWR | O_NONBLOCK);
    int dup_vt = dup(vt);
    check(dup_vt > 2, "a duplicate of the console");
    struct stat c0, v0;
    check(fstat(console, &c0) == 0 && fstat(vt, &v0) == 0, "fstat before");
    struct termios t, orig;
    check(tcgetattr(vt, &t) == 0, "tcgetattr before");
    orig = t;
    t.c_lflag ^= ECHOE;
    t.c_cc[VMIN] = 3;
    t.c_cc[VTIME] = 7;
    check(tcsetattr(vt, TCSANOW, &t) == 0, "tcsetattr");
    check(ioctl(vt, TIOCEXCL) == 0, "TIOCEXCL");
    int cflags = fcntl(console, F_GETFL), vflags = fcntl(vt, F_GETFL);
    ready();
    wait_for_verify(NULL);

    struct stat c1, v1, d1;
    check(fstat(console, &c1) == 0 && fstat(vt, &v1) == 0 && fstat(dup_vt, &d1) == 0, "fstat after");
    check(c1.st_rdev == c0.st_rdev && S_ISCHR(c1.st_mode), "the console is the same device");
    check(v1.st_rdev == v0.st_rdev && d1.st_rdev == v0.st_rdev, "the virtual console is the same device");
    check(fcntl(console, F_GETFL) == cflags && fcntl(vt, F_GETFL) == vflags, "open flags kept");
    /* One open file: a status flag set through one shows through the other. */
    check(fcntl(vt, F_SETFL, vflags & ~O_NONBLOCK) == 0 && !(fcntl(dup_vt, F_GETFL) & O_NONBLOCK), "the duplicates share one open file");
    struct termios a;
    check(tcgetattr(vt, &a) == 0, "tcgetattr after");
    check(a.c_lflag == t.c_lflag && a.c_cc[VMIN] == 3 && a.c_cc[VTIME] == 7, "the virtual console's settings kept");
    int excl = 0;
    check(ioctl(vt, TIOCGEXCL, &excl) == 0 && excl == 1, "the virtual console still exclusive");
    check(ioctl(vt, TIOCNXCL) == 0, "TIOCNXCL");
    /* The device's settings outlive the program: leave them as they were. */
    check(tcsetattr(vt, TCSANOW, &orig) == 0, "tcsetattr back");
    pass();
}
