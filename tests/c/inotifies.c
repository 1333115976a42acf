/* inotify: one instance (non-blocking, close-on-exec) watching a directory for creations, a
 * file in it for writes, and, after a gap in the watch numbers (a watch added and removed), a
 * second directory; another instance (blocking) watching the first directory for deletions.
 * After restart every watch reports its events on its own watch descriptor, no stale event
 * (IN_IGNORED) is queued, the next watch gets the number the kernel would have given next, and
 * the descriptor flags are as they were. Usage: inotifies DIR */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include "prog.h"

static char dir[4096], w1[4200], w2[4200], file[4300], third[4200];

/* Reads the events queued on fd (at least one): returns the first one's wd, its mask in
 * *mask, its name in name, and in *more the bytes of the events after it. */
static char evbuf[4096] __attribute__((aligned(8)));
static struct inotify_event *next_event;
static int events(int fd, uint32_t *mask, char *name, size_t len, ssize_t *more)
{
    ssize_t n = read(fd, evbuf, sizeof evbuf);
    check(n >= (ssize_t)sizeof(struct inotify_event), "an inotify event is read");
    struct inotify_event *e = (struct inotify_event *)evbuf;
    *mask = e->mask;
    snprintf(name, len, "%s", e->len ? e->name : "");
    *more = n - (ssize_t)(sizeof *e + e->len);
    next_event = (struct inotify_event *)(evbuf + sizeof *e + e->len);
    return e->wd;
}

/* Reads exactly one event from fd. */
static int one_event(int fd, uint32_t *mask, char *name, size_t len)
{
    ssize_t more;
    int wd = events(fd, mask, name, len, &more);
    check(more == 0, "exactly one event was queued");
    return wd;
}

static void touch(const char *path)
{
    int f = open(path, O_CREAT | O_WRONLY, 0644);
    check(f >= 0, "creating a file");
    close(f);
}

int main(int argc, char **argv)
{
    check(argc == 2, "usage: inotifies DIR");
    snprintf(dir, sizeof dir, "%s", argv[1]);
    snprintf(w1, sizeof w1, "%s/w1", dir);
    snprintf(w2, sizeof w2, "%s/w2", dir);
    snprintf(third, sizeof third, "%s/w3", dir);
    snprintf(file, sizeof file, "%s/f", w1);
    check(mkdir(w1, 0755) == 0 && mkdir(w2, 0755) == 0 && mkdir(third, 0755) == 0, "mkdir");
    touch(file);

    int a = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
    int b = inotify_init1(0);
    check(a >= 0 && b >= 0, "inotify_init1");
    int wd_dir = inotify_add_watch(a, w1, IN_CREATE);
    int wd_file = inotify_add_watch(a, file, IN_MODIFY);
    int gap = inotify_add_watch(a, dir, IN_ALL_EVENTS);
    check(inotify_rm_watch(a, gap) == 0, "removing a watch");
    int wd_w2 = inotify_add_watch(a, w2, IN_CREATE | IN_ONESHOT);
    int wd_b = inotify_add_watch(b, w1, IN_DELETE);
    check(wd_dir == 1 && wd_file == 2 && gap == 3 && wd_w2 == 4 && wd_b == 1, "watch numbers as the kernel gives them");
    /* The IN_IGNORED of the removed watch, read now. */
    uint32_t mask;
    char name[256];
    check(one_event(a, &mask, name, sizeof name) == gap && (mask & IN_IGNORED), "the removed watch's IN_IGNORED");
    ready();
    wait_for_verify(NULL);

    check(read(a, name, sizeof name) == -1 && errno == EAGAIN, "no stale event is queued after restart");
    char path[4400];
    snprintf(path, sizeof path, "%s/new", w1);
    touch(path);
    check(one_event(a, &mask, name, sizeof name) == wd_dir && (mask & IN_CREATE) && !strcmp(name, "new"), "the directory watch reports a creation on its number");
    int f = open(file, O_WRONLY);
    check(f >= 0 && write(f, "x", 1) == 1, "writing the watched file");
    close(f);
    check(one_event(a, &mask, name, sizeof name) == wd_file && (mask & IN_MODIFY), "the file watch reports a write on its number");
    snprintf(path, sizeof path, "%s/x", w2);
    touch(path);
    ssize_t more;
    check(events(a, &mask, name, sizeof name, &more) == wd_w2 && (mask & IN_CREATE) && !strcmp(name, "x"), "the watch after the gap reports on its number");
    check(more == sizeof(struct inotify_event) && next_event->wd == wd_w2 && (next_event->mask & IN_IGNORED), "it was one-shot and is gone after its event");
    snprintf(path, sizeof path, "%s/new", w1);
    check(unlink(path) == 0, "unlink");
    check(one_event(b, &mask, name, sizeof name) == wd_b && (mask & IN_DELETE) && !strcmp(name, "new"), "the second instance reports a deletion");
    check(inotify_add_watch(a, third, IN_CREATE) == 5, "the next watch gets the next number");
    check(fcntl(a, F_GETFD) == FD_CLOEXEC && (fcntl(a, F_GETFL) & O_NONBLOCK), "flags of the first instance");
    check(fcntl(b, F_GETFD) == 0 && !(fcntl(b, F_GETFL) & O_NONBLOCK), "flags of the second instance");
    pass();
}
