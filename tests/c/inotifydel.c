/* An inotify watch on a file deleted while open (and watched): the file is open at fd 20 and
 * watched (IN_MODIFY | IN_CLOSE_WRITE) as watch 1 of the inotify instance at fd 21, then
 * unlinked. After a restart a write to fd 20 and its close are events of that watch, with its
 * number, and nothing else is queued. Run in its scratch directory (DIR). */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <sys/inotify.h>
#include "prog.h"

static int drain(int fd, uint32_t *seen, int wd)
{
    char buf[4096] __attribute__((aligned(8)));
    int n = 0;
    for (;;) {
        ssize_t r = read(fd, buf, sizeof buf);
        if (r <= 0)
            return n;
        for (ssize_t off = 0; off < r;) {
            struct inotify_event *e = (void *)(buf + off);
            if (e->wd == wd)
                *seen |= e->mask;
            n++;
            off += sizeof *e + e->len;
        }
    }
}

int main(int argc, char **argv)
{
    check(argc > 1 && chdir(argv[1]) == 0, "the scratch directory");
    int f = open("watched", O_RDWR | O_CREAT | O_TRUNC, 0600);
    check(f >= 0 && dup2(f, 20) == 20 && close(f) == 0, "fd 20");
    int i = inotify_init1(IN_NONBLOCK);
    check(i >= 0 && dup2(i, 21) == 21 && close(i) == 0, "fd 21");
    int wd = inotify_add_watch(21, "watched", IN_MODIFY | IN_CLOSE_WRITE);
    check(wd == 1, "watch 1");
    check(unlink("watched") == 0, "unlink");
    uint32_t seen = 0;
    drain(21, &seen, wd);
    ready();
    wait_for_verify(NULL);
    seen = 0;
    check(drain(21, &seen, wd) == 0, "no event queued after the restart");
    check(write(20, "x", 1) == 1 && close(20) == 0, "writing and closing fd 20");
    drain(21, &seen, wd);
    check((seen & IN_MODIFY) != 0, "IN_MODIFY of the deleted file");
    check((seen & IN_CLOSE_WRITE) != 0, "IN_CLOSE_WRITE of the deleted file");
    pass();
}
