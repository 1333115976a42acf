/* eventfd and epoll: a counting eventfd written every tick, a semaphore eventfd, a pipe with
 * bytes buffered, and an epoll set watching all three with its own data words. After restart
 * epoll reports exactly the three with their data, the counters hold what was written, the
 * semaphore counts down one by one, and the pipe still holds its bytes. */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include "prog.h"

static int counter, sem, pipefd[2], ep;
static uint64_t written = 5;

static void work(long n)
{
    (void)n;
    uint64_t one = 1;
    check(write(counter, &one, 8) == 8, "adding to the eventfd");
    written++;
}

static void watch(int fd, uint32_t events, uint64_t data)
{
    struct epoll_event ev = {.events = events, .data.u64 = data};
    check(epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) == 0, "epoll_ctl");
}

int main(void)
{
    counter = eventfd(5, EFD_NONBLOCK | EFD_CLOEXEC);
    sem = eventfd(3, EFD_SEMAPHORE | EFD_NONBLOCK);
    check(counter >= 0 && sem >= 0 && pipe(pipefd) == 0, "eventfds and a pipe");
    check(write(pipefd[1], "abc", 3) == 3, "filling the pipe");
    ep = epoll_create1(0);
    check(ep >= 0, "epoll_create1");
    watch(counter, EPOLLIN, 0x1111);
    watch(pipefd[0], EPOLLIN, 0x2222);
    watch(sem, EPOLLIN | EPOLLET, 0x3333);
    ready();
    wait_for_verify(work);

    struct epoll_event evs[8];
    int n = epoll_wait(ep, evs, 8, 1000);
    check(n == 3, "epoll reports the three watched descriptors");
    uint64_t seen = 0;
    for (int i = 0; i < n; i++) {
        check(evs[i].events & EPOLLIN, "each is readable");
        seen |= evs[i].data.u64 == 0x1111 ? 1 : evs[i].data.u64 == 0x2222 ? 2 : evs[i].data.u64 == 0x3333 ? 4 : 8;
    }
    check(seen == 7, "epoll gives each its own data word");
    uint64_t v = 0;
    check(read(counter, &v, 8) == 8 && v == written, "the eventfd holds what was written");
    check(read(counter, &v, 8) == -1 && errno == EAGAIN, "the eventfd is non-blocking and empty after a read");
    for (int i = 0; i < 3; i++)
        check(read(sem, &v, 8) == 8 && v == 1, "the semaphore eventfd counts down by one");
    check(read(sem, &v, 8) == -1 && errno == EAGAIN, "the semaphore is at zero");
    char buf[8];
    check(read(pipefd[0], buf, sizeof buf) == 3 && !memcmp(buf, "abc", 3), "the pipe holds its bytes");
    check(fcntl(counter, F_GETFD) == FD_CLOEXEC && fcntl(sem, F_GETFD) == 0, "close-on-exec flags");
    pass();
}
