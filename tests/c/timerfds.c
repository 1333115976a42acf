/* timerfd and signalfd: a periodic timer read every tick, a one-shot timer far ahead, a timer
 * set for an absolute wall-clock time, a timer that fired and was never read, and a signalfd
 * reading SIGUSR1 (blocked) with one SIGUSR1 pending. After restart the periodic timer goes on
 * firing, the far timer has at most its time left, the wall-clock deadline is where it was,
 * the unread expiration is still there, and the signalfd reads the pending SIGUSR1 and a new
 * one. */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <sys/signalfd.h>
#include <sys/timerfd.h>
#include "prog.h"

static int periodic, far, wall, fired, sfd;
static uint64_t periodic_seen;
static struct timespec wall_deadline;

static void arm(int fd, int flags, time_t sec, long nsec, time_t isec, long insec)
{
    struct itimerspec its = {{isec, insec}, {sec, nsec}};
    check(timerfd_settime(fd, flags, &its, NULL) == 0, "timerfd_settime");
}

static void work(long n)
{
    (void)n;
    uint64_t v;
    if (read(periodic, &v, 8) == 8)
        periodic_seen += v;
}

int main(void)
{
    periodic = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK);
    far = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK);
    wall = timerfd_create(CLOCK_REALTIME, TFD_NONBLOCK | TFD_CLOEXEC);
    fired = timerfd_create(CLOCK_BOOTTIME, 0);
    check(periodic >= 0 && far >= 0 && wall >= 0 && fired >= 0, "timerfd_create");
    arm(periodic, 0, 0, 20 * 1000 * 1000, 0, 20 * 1000 * 1000);
    arm(far, 0, 600, 0, 0, 0);
    clock_gettime(CLOCK_REALTIME, &wall_deadline);
    wall_deadline.tv_sec += 900;
    arm(wall, TFD_TIMER_ABSTIME, wall_deadline.tv_sec, wall_deadline.tv_nsec, 0, 0);
    arm(fired, 0, 0, 1000 * 1000, 0, 0);
    usleep(20 * 1000); /* it fires; nobody reads it */
    sigset_t m;
    sigemptyset(&m);
    sigaddset(&m, SIGUSR1);
    check(sigprocmask(SIG_BLOCK, &m, NULL) == 0, "blocking SIGUSR1");
    sfd = signalfd(-1, &m, SFD_NONBLOCK);
    check(sfd >= 0, "signalfd");
    check(kill(getpid(), SIGUSR1) == 0, "a pending SIGUSR1");
    ready();
    wait_for_verify(work);

    uint64_t before = periodic_seen, v;
    usleep(100 * 1000);
    work(0);
    check(periodic_seen > before, "the periodic timer goes on firing");
    struct itimerspec its;
    check(timerfd_gettime(far, &its) == 0 && its.it_value.tv_sec < 600 && (its.it_value.tv_sec > 0 || its.it_value.tv_nsec > 0), "the far timer is still armed with at most its time left");
    check(read(far, &v, 8) == -1 && errno == EAGAIN, "the far timer has not fired");
    check(timerfd_gettime(wall, &its) == 0, "timerfd_gettime");
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    long diff = (long)(now.tv_sec + its.it_value.tv_sec - wall_deadline.tv_sec);
    check(diff >= -1 && diff <= 1, "the wall-clock deadline is where it was");
    check(read(fired, &v, 8) == 8 && v == 1, "the expiration nobody read is still there");
    struct signalfd_siginfo si;
    check(read(sfd, &si, sizeof si) == sizeof si && si.ssi_signo == SIGUSR1, "the signalfd reads the pending SIGUSR1");
    check(read(sfd, &si, sizeof si) == -1 && errno == EAGAIN, "only one was pending");
    check(kill(getpid(), SIGUSR1) == 0, "a new SIGUSR1");
    check(read(sfd, &si, sizeof si) == sizeof si && si.ssi_signo == SIGUSR1, "the signalfd reads a new SIGUSR1");
    check(fcntl(wall, F_GETFD) == FD_CLOEXEC && (fcntl(periodic, F_GETFL) & O_NONBLOCK) && !(fcntl(fired, F_GETFL) & O_NONBLOCK), "descriptor flags");
    pass();
}
