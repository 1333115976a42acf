/* Deleted nodes other than regular files: a FIFO with 3000 bytes queued, open read-only
 * non-blocking, write-only and read-write; a symbolic link open with O_PATH; a character
 * device node of /dev/null (made with mknod when permitted: argument "dev"); a file unlinked
 * under one name and still linked under another, open at an offset. All removed. After restart
 * the FIFO holds the same bytes and takes more, its descriptors have their modes and are one
 * FIFO; the symbolic link reads its target; the device is /dev/null's with its mode; the file
 * is the same inode with its size and offset; nothing is left in DIR but the other name.
 * Usage: ghostnodes DIR [dev] */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include "prog.h"

static char fifo[4200], sym[4200], dev[4200], file[4200], other[4200];

int main(int argc, char **argv)
{
    check(argc >= 2, "usage: ghostnodes DIR [dev]");
    int with_dev = argc > 2 && !strcmp(argv[2], "dev");
    snprintf(fifo, sizeof fifo, "%s/fifo", argv[1]);
    snprintf(sym, sizeof sym, "%s/sym", argv[1]);
    snprintf(dev, sizeof dev, "%s/null", argv[1]);
    snprintf(file, sizeof file, "%s/file", argv[1]);
    snprintf(other, sizeof other, "%s/other", argv[1]);

    check(mkfifo(fifo, 0640) == 0 && chmod(fifo, 0640) == 0, "mkfifo");
    int rd = open(fifo, O_RDONLY | O_NONBLOCK);
    int wr = open(fifo, O_WRONLY);
    int rw = open(fifo, O_RDWR);
    check(rd >= 0 && wr >= 0 && rw >= 0, "opening the FIFO");
    char data[3000];
    for (int i = 0; i < 3000; i++)
        data[i] = (char)(i * 7);
    check(write(wr, data, sizeof data) == sizeof data, "filling the FIFO");

    check(symlink("/some/target/of/it", sym) == 0, "symlink");
    int sl = open(sym, O_PATH | O_NOFOLLOW);
    check(sl >= 0, "opening the symbolic link");

    int nd = -1;
    if (with_dev) {
        check(mknod(dev, S_IFCHR | 0620, makedev(1, 3)) == 0 && chmod(dev, 0620) == 0, "mknod");
        nd = open(dev, O_RDWR);
        check(nd >= 0, "opening the device");
    }

    int f = open(file, O_RDWR | O_CREAT | O_TRUNC, 0600);
    check(f >= 0 && write(f, "0123456789", 10) == 10 && lseek(f, 4, SEEK_SET) == 4, "the file");
    check(link(file, other) == 0, "link");
    struct stat before;
    check(fstat(f, &before) == 0, "fstat");

    check(unlink(fifo) == 0 && unlink(sym) == 0 && unlink(file) == 0 && (!with_dev || unlink(dev) == 0), "unlink");
    ready();
    wait_for_verify(NULL);

    struct stat st, st2;
    check(fstat(rd, &st) == 0 && S_ISFIFO(st.st_mode) && st.st_nlink == 0 && (st.st_mode & 07777) == 0640, "a deleted FIFO with its mode");
    check(fstat(wr, &st2) == 0 && st2.st_ino == st.st_ino && fstat(rw, &st2) == 0 && st2.st_ino == st.st_ino, "one FIFO for the three descriptors");
    check((fcntl(rd, F_GETFL) & (O_ACCMODE | O_NONBLOCK)) == (O_RDONLY | O_NONBLOCK), "the read end's flags");
    check((fcntl(wr, F_GETFL) & (O_ACCMODE | O_NONBLOCK)) == O_WRONLY, "the write end's flags");
    check((fcntl(rw, F_GETFL) & O_ACCMODE) == O_RDWR, "the read-write descriptor");
    check(write(wr, "more", 4) == 4, "writing to the FIFO");
    char got[3100];
    ssize_t n = read(rd, got, sizeof got);
    check(n == 3004 && !memcmp(got, data, 3000) && !memcmp(got + 3000, "more", 4), "the FIFO's bytes, then the new ones");
    check(read(rd, got, 1) == -1 && errno == EAGAIN, "and nothing more");

    check(fstat(sl, &st) == 0 && S_ISLNK(st.st_mode), "the O_PATH descriptor is of a symbolic link");
    n = readlinkat(sl, "", got, sizeof got - 1);
    check(n == 18 && !memcmp(got, "/some/target/of/it", 18), "the symbolic link's target");

    if (with_dev) {
        check(fstat(nd, &st) == 0 && st.st_mode == (S_IFCHR | 0620) && st.st_rdev == makedev(1, 3) && st.st_nlink == 0, "the device node");
        check(write(nd, "x", 1) == 1 && read(nd, got, 1) == 0, "it is /dev/null");
    }

    check(fstat(f, &st) == 0 && st.st_ino == before.st_ino && st.st_dev == before.st_dev && st.st_size == 10, "the file linked under another name");
    check(lseek(f, 0, SEEK_CUR) == 4 && read(f, got, 3) == 3 && !memcmp(got, "456", 3), "its offset and contents");
    check(access(fifo, F_OK) == -1 && access(sym, F_OK) == -1 && access(dev, F_OK) == -1 && access(file, F_OK) == -1, "nothing is left under the removed names");
    check(access(other, F_OK) == 0, "the other name is there");
    pass();
}
