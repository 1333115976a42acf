/* A parent reads numbers that its child writes into a named pipe (a FIFO in DIR); some are
 * buffered in the FIFO at the checkpoint. After the restart, on SIGUSR2, the parent reads 200
 * more and checks that the numbers run on with no gap and no repeat, then ends the child. */
#include "prog.h"

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <sys/stat.h>
#include <sys/wait.h>

int main(int argc, char **argv)
{
    check(argc > 1, "usage: fifo DIR");
    char path[4096];
    snprintf(path, sizeof path, "%s/pipe.fifo", argv[1]);
    unlink(path);
    check(mkfifo(path, 0600) == 0, "mkfifo");
    pid_t child = fork();
    check(child >= 0, "fork");
    if (child == 0) {
        int w = open(path, O_WRONLY);
        check(w >= 0, "opening the FIFO to write");
        for (uint64_t n = 0;; n++) {
            check(write(w, &n, sizeof n) == sizeof n, "writing into the FIFO");
            if (n % 16 == 0) {
                struct timespec ts = {0, 1000 * 1000};
                nanosleep(&ts, NULL);
            }
        }
    }
    int r = open(path, O_RDONLY);
    check(r >= 0, "opening the FIFO to read");
    uint64_t want = 0, after = 0;
    for (;;) {
        uint64_t n;
        ssize_t got = read(r, &n, sizeof n);
        if (got < 0 && errno == EINTR)
            continue;
        check(got == sizeof n, "reading from the FIFO");
        check(n == want, "the numbers run on with no gap and no repeat");
        want++;
        if (want == 500)
            ready();
        if (want % 1000 == 0) {
            printf("tick %llu\n", (unsigned long long)want);
            fflush(stdout);
        }
        if (verify_now && ++after == 200)
            break;
    }
    kill(child, SIGKILL);
    int st;
    check(waitpid(child, &st, 0) == child, "the writer reaped");
    unlink(path);
    pass();
}
