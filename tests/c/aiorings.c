/* AIO contexts (io_setup): one never used, one whose ring has wrapped around with three
 * completed events not yet consumed, each carrying its own aio_data. After restart both
 * contexts are where they were (same address, same number of events), the wrapped one has the
 * same head and tail, io_getevents returns the three events in order with their data, a new
 * write completes at the next slot, and io_destroy works on both.
 * With "direct DIR": a file of DIR is open with O_DIRECT too (or "no O_DIRECT" is printed and
 * the program exits), which a checkpoint refuses. */
#define _GNU_SOURCE
#include <linux/aio_abi.h>
#include <stdint.h>
#include <sys/syscall.h>
#include <fcntl.h>
#include "prog.h"

struct ring {
    unsigned id, nr, head, tail, magic, compat, incompat, header_length;
    struct io_event events[];
};

static long setup(unsigned n, aio_context_t *ctx) { return syscall(SYS_io_setup, n, ctx); }
static long submit(aio_context_t ctx, long n, struct iocb **p) { return syscall(SYS_io_submit, ctx, n, p); }
static long getevents(aio_context_t ctx, long min, long max, struct io_event *e) { return syscall(SYS_io_getevents, ctx, min, max, e, NULL); }

static int devnull;
static char byte;

static void write_one(aio_context_t ctx, uint64_t data)
{
    struct iocb cb, *p = &cb;
    memset(&cb, 0, sizeof cb);
    cb.aio_fildes = devnull;
    cb.aio_lio_opcode = IOCB_CMD_PWRITE;
    cb.aio_buf = (uintptr_t)&byte;
    cb.aio_nbytes = 1;
    cb.aio_data = data;
    check(submit(ctx, 1, &p) == 1, "io_submit");
}

int main(int argc, char **argv)
{
    aio_context_t idle = 0, used = 0;
    devnull = open("/dev/null", O_WRONLY);
    check(devnull >= 0, "open /dev/null");
    check(setup(1, &idle) == 0, "io_setup(1)");
    check(setup(64, &used) == 0, "io_setup(64)");
    volatile struct ring *r = (struct ring *)used;
    unsigned nr = r->nr;
    check(r->magic == 0xa10a10a1 && nr > 16, "a ring header");
    /* Around the ring once and a little more, consuming as it goes, then three left. */
    struct io_event ev[4];
    for (unsigned i = 0; i < nr + 5; i++) {
        write_one(used, 1000 + i);
        check(getevents(used, 1, 1, ev) == 1 && ev[0].data == 1000 + i, "each event comes back as it is written");
    }
    for (uint64_t i = 0; i < 3; i++)
        write_one(used, 7000 + i);
    unsigned head = r->head, tail = r->tail, idle_nr = ((struct ring *)idle)->nr;
    check(tail == (head + 3) % nr && head == 5, "the ring wrapped with three events left");
    if (argc > 2 && strcmp(argv[1], "direct") == 0) {
        char path[4096];
        snprintf(path, sizeof path, "%s/direct", argv[2]);
        if (open(path, O_RDWR | O_CREAT | O_DIRECT, 0600) < 0) {
            printf("no O_DIRECT\n");
            return 0;
        }
    }
    ready();
    wait_for_verify(NULL);

    check(((struct ring *)idle)->nr == idle_nr && getevents(idle, 0, 1, ev) == 0, "the idle context is there, empty");
    check(r->nr == nr && r->head == head && r->tail == tail, "the used ring has its size, head and tail");
    check(getevents(used, 3, 4, ev) == 3, "three events are waiting");
    for (uint64_t i = 0; i < 3; i++)
        check(ev[i].data == 7000 + i && ev[i].res == 1, "the waiting events keep their order and data");
    check(getevents(used, 0, 1, ev) == 0, "no more events");
    write_one(used, 9000);
    check(r->tail == (tail + 1) % nr, "a new write completes at the next slot");
    check(getevents(used, 1, 1, ev) == 1 && ev[0].data == 9000, "and its event comes back");
    check(syscall(SYS_io_destroy, idle) == 0 && syscall(SYS_io_destroy, used) == 0, "io_destroy");
    pass();
}
