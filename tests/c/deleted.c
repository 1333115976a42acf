/* Files deleted while open or mapped. d1: three descriptors (two opens, one of them dup'ed, and
 * an O_APPEND one) at their own offsets, mode 0640, and a shared mapping of it; d2: mapped shared
 * only, its descriptor closed; d3: mapped private with one page written (copied on write).
 * All three unlinked. After restart: d1 is still deleted (no link), with its size, mode and
 * contents, each descriptor at its offset, the dup sharing its offset, the appending one
 * appending; the mapping and the descriptors share pages both ways; d2's mapping holds its
 * contents and is a file mapping of a deleted file still; d3 keeps its private page and reads
 * the file's in the other. Usage: deleted DIR */
#include <errno.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include "prog.h"

#define PG 4096
static char p1[4200], p2[4200], p3[4200];

static int made(const char *path, char fill, size_t len)
{
    int f = open(path, O_CREAT | O_RDWR | O_TRUNC, 0600);
    check(f >= 0, "creating a file");
    char buf[PG];
    memset(buf, fill, sizeof buf);
    for (size_t done = 0; done < len; done += PG)
        check(write(f, buf, len - done < PG ? len - done : PG) > 0, "filling a file");
    return f;
}

static int deleted_link(int fd, const char *path)
{
    char link[64], got[4400], want[4400];
    snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
    ssize_t n = readlink(link, got, sizeof got - 1);
    if (n < 0)
        return 0;
    got[n] = 0;
    snprintf(want, sizeof want, "%s (deleted)", path);
    return !strcmp(got, want);
}

int main(int argc, char **argv)
{
    check(argc == 2, "usage: deleted DIR");
    snprintf(p1, sizeof p1, "%s/d1", argv[1]);
    snprintf(p2, sizeof p2, "%s/d2", argv[1]);
    snprintf(p3, sizeof p3, "%s/d3", argv[1]);

    int f1 = made(p1, 'a', 3 * PG + 100);
    check(pwrite(f1, "hello deleted world", 19, 0) == 19, "pwrite");
    check(fchmod(f1, 0640) == 0, "fchmod");
    int f2 = open(p1, O_RDONLY);
    int f3 = open(p1, O_WRONLY | O_APPEND);
    int f4 = dup(f1);
    check(f2 >= 0 && f3 >= 0 && f4 >= 0, "more descriptors of d1");
    char *m1 = mmap(NULL, 4 * PG, PROT_READ | PROT_WRITE, MAP_SHARED, f1, 0);
    check(m1 != MAP_FAILED, "mapping d1");
    memcpy(m1 + PG, "MAPPED", 6);
    check(lseek(f1, 5, SEEK_SET) == 5 && lseek(f2, 7, SEEK_SET) == 7, "offsets");

    int g = made(p2, 'b', 2 * PG);
    char *m2 = mmap(NULL, 2 * PG, PROT_READ | PROT_WRITE, MAP_SHARED, g, 0);
    check(m2 != MAP_FAILED, "mapping d2");
    memcpy(m2 + PG, "SECOND", 6);
    close(g);

    int h = made(p3, 'c', 2 * PG);
    char *m3 = mmap(NULL, 2 * PG, PROT_READ | PROT_WRITE, MAP_PRIVATE, h, 0);
    check(m3 != MAP_FAILED, "mapping d3");
    memcpy(m3, "PRIVATE", 7);
    close(h);
    check(unlink(p1) == 0 && unlink(p2) == 0 && unlink(p3) == 0, "unlink");
    ready();
    wait_for_verify(NULL);

    struct stat st;
    check(fstat(f1, &st) == 0 && st.st_nlink == 0 && S_ISREG(st.st_mode), "d1 is still a deleted file");
    check(st.st_size == 3 * PG + 100 && (st.st_mode & 07777) == 0640, "d1's size and mode");
    check(access(p1, F_OK) == -1 && errno == ENOENT, "d1 is not linked anywhere");
    check(deleted_link(f1, p1) && deleted_link(f2, p1), "its descriptors read as the deleted file");
    char buf[32] = {0};
    check(pread(f2, buf, 19, 0) == 19 && !memcmp(buf, "hello deleted world", 19), "d1's contents");
    check(pread(f2, buf, 6, PG) == 6 && !memcmp(buf, "MAPPED", 6), "what was written through the mapping is in the file");
    check(pread(f2, buf, 1, 3 * PG + 99) == 1 && buf[0] == 'a', "d1's last byte");
    check(lseek(f1, 0, SEEK_CUR) == 5 && lseek(f2, 0, SEEK_CUR) == 7 && lseek(f4, 0, SEEK_CUR) == 5, "offsets after restart");
    check(lseek(f1, 9, SEEK_SET) == 9 && lseek(f4, 0, SEEK_CUR) == 9 && lseek(f2, 0, SEEK_CUR) == 7, "the dup shares its offset, the other open does not");
    check((fcntl(f2, F_GETFL) & O_ACCMODE) == O_RDONLY && (fcntl(f1, F_GETFL) & O_ACCMODE) == O_RDWR, "access modes");
    check((fcntl(f3, F_GETFL) & O_APPEND) && write(f3, "END", 3) == 3, "the appending descriptor");
    check(fstat(f1, &st) == 0 && st.st_size == 3 * PG + 103, "it appended at the end");
    check(pwrite(f1, "THROUGHFD", 9, 2 * PG) == 9 && !memcmp(m1 + 2 * PG, "THROUGHFD", 9), "a write to the file shows in the shared mapping");
    memcpy(m1 + 100, "INTOMAP", 7);
    check(pread(f2, buf, 7, 100) == 7 && !memcmp(buf, "INTOMAP", 7), "a write to the mapping shows in the file");
    check(!memcmp(m2 + PG, "SECOND", 6) && m2[0] == 'b' && m2[2 * PG - 1] == 'b', "d2's mapping holds its contents");
    check(!memcmp(m3, "PRIVATE", 7) && m3[7] == 'c' && m3[PG] == 'c', "d3's private page and its file page");
    FILE *maps = fopen("/proc/self/maps", "r");
    char line[8192];
    int d2_deleted = 0;
    char want[4400];
    snprintf(want, sizeof want, "%s (deleted)", p2);
    while (fgets(line, sizeof line, maps))
        if (strtoul(line, NULL, 16) == (unsigned long)m2 && strstr(line, want))
            d2_deleted = 1;
    fclose(maps);
    check(d2_deleted, "d2's mapping is of the deleted file");
    pass();
}
