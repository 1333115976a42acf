/* File offsets: a file written a record per tick, an input file read a byte per tick, and an
 * O_APPEND file; after restart every offset continues exactly and the files are gapless. */
#include <fcntl.h>
#include "prog.h"

static int out, in, app;
static long written, readn;

static void work(long n)
{
    char rec[32];
    int l = snprintf(rec, sizeof rec, "%08ld\n", n);
    check(write(out, rec, l) == l, "write record");
    written += l;
    char c;
    check(read(in, &c, 1) == 1 && c == (char)('a' + readn % 26), "sequential read continues");
    readn++;
    check(write(app, "x", 1) == 1, "append");
    check(lseek(out, 0, SEEK_CUR) == written, "write offset");
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
    check(in >= 0 && out >= 0 && app >= 0, "open");
    ready();
    wait_for_verify(work);
    work(-1);
    check(fcntl(app, F_GETFL) & O_APPEND, "O_APPEND kept");
    check(lseek(app, 0, SEEK_END) == readn, "append file holds one byte per tick");
    pass();
}
