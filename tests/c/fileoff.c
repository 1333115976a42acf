/* File offsets: a file written a record per tick (through two descriptors of one open file,
 * made with dup), an input file read a byte per tick (close-on-exec), and an O_APPEND file;
 * after restart every offset continues exactly, the dup still shares its offset, and the files
 * are gapless. Signals the program never touched are at their defaults, with no alternate stack. */
#include <fcntl.h>
#include "prog.h"

static int out, dupd, in, app;
static long written, readn;

static void work(long n)
{
    char rec[32];
    int l = snprintf(rec, sizeof rec, "%08ld\n", n);
    check(write(n % 2 ? dupd : out, rec, l) == l, "write record");
    written += l;
    char c;
    check(read(in, &c, 1) == 1 && c == (char)('a' + readn % 26), "sequential read continues");
    readn++;
    check(write(app, "x", 1) == 1, "append");
    check(lseek(out, 0, SEEK_CUR) == written, "write offset");
    check(lseek(dupd, 0, SEEK_CUR) == written, "the dup shares the write offset");
    check(lseek(in, 0, SEEK_CUR) == readn, "read offset");
}

int main(int argc, char **argv)
{
    (void)argc;
    char path[4096];
    snprintf(path, sizeof path, "%s/input", argv[1]);
    int w = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    for (int i = 0; i < 100000; i++) {
        char c = 'a' + i % 26;
        check(write(w, &c, 1) == 1, "make input");
    }
    close(w);
    in = open(path, O_RDONLY);
    snprintf(path, sizeof path, "%s/records", argv[1]);
    out = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    snprintf(path, sizeof path, "%s/appended", argv[1]);
    app = open(path, O_WRONLY | O_CREAT | O_APPEND | O_TRUNC, 0644);
    dupd = dup(out);
    check(in >= 0 && out >= 0 && app >= 0 && dupd >= 0, "open");
    check(fcntl(in, F_SETFD, FD_CLOEXEC) == 0, "set close-on-exec");
    ready();
    wait_for_verify(work);
    work(-1);
    check(fcntl(app, F_GETFL) & O_APPEND, "O_APPEND kept");
    check(fcntl(in, F_GETFD) == FD_CLOEXEC && fcntl(out, F_GETFD) == 0 && fcntl(dupd, F_GETFD) == 0, "close-on-exec flags");
    check_untouched_signals();
    check(lseek(app, 0, SEEK_END) == readn, "append file holds one byte per tick");
    pass();
}
