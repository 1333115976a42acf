/* Holds one object crest does not restore yet, and checks it on demand.
 *
 *   holder MODE DIR     MODE: tcp-conn, unix-outside, netlink, pty, pidfd-outside, udp-corked
 *                       or ebpf-filter (files in DIR)
 *
 * tcp-conn: a loopback TCP connection, both ends in the process, and its listening socket
 * (refused when cr_checkpoint may not use TCP repair).
 * netlink: a NETLINK_NETFILTER socket (netlink protocols whose kernel side keeps state by
 *     port id are not saved).
 * udp-corked: a UDP socket corked (UDP_CORK) with a datagram written and not sent yet.
 * ebpf-filter: a UDP socket with an eBPF program as its filter (SO_ATTACH_BPF; needs root).
 * pty: a pty master whose slave the test opens (DIR/pts names it), outside the checkpoint.
 * unix-outside: a unix stream socket connected to DIR/outside.sock, which the test listens on.
 * pidfd-outside: a pidfd of the parent (the test), outside the checkpoint.
 *
 * Ticks every 50 ms. SIGUSR1: the object must be as it was (a refused checkpoint left the
 * process alone): prints "intact OK" and goes on. SIGUSR2: the process was restarted from an
 * image taken with --drop-unsupported: its descriptor must now be a socket whose other end is
 * closed (end of file); prints "closed OK" and exits 0.
 * Any failed check prints "FAIL: why" and exits 1. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/udp.h>
#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <linux/bpf.h>
#include <linux/netlink.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <termios.h>
#include <unistd.h>

#include "prog.h"

static volatile sig_atomic_t intact_now;
static void on_usr1(int s) { (void)s; intact_now = 1; }

static const char *mode;
static const char *dir;
static int fd_a = -1, fd_b = -1, fd_l = -1;
static int port;

static void setup(void)
{
    if (!strcmp(mode, "tcp-conn")) {
        fd_l = socket(AF_INET, SOCK_STREAM, 0);
        struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
        int one = 1; /* as servers do, so that it can be bound again while old connections linger */
        check(fd_l >= 0 && setsockopt(fd_l, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) == 0 && bind(fd_l, (struct sockaddr *)&a, sizeof a) == 0 && listen(fd_l, 8) == 0, "listening on loopback");
        socklen_t l = sizeof a;
        getsockname(fd_l, (struct sockaddr *)&a, &l);
        port = ntohs(a.sin_port);
        fd_a = socket(AF_INET, SOCK_STREAM, 0);
        check(connect(fd_a, (struct sockaddr *)&a, sizeof a) == 0, "connecting over loopback");
        fd_b = accept(fd_l, NULL, NULL);
        check(fd_b >= 0, "accepting the connection");
    } else if (!strcmp(mode, "unix-outside")) {
        struct sockaddr_un a = {.sun_family = AF_UNIX};
        snprintf(a.sun_path, sizeof a.sun_path, "%s/outside.sock", dir);
        fd_a = socket(AF_UNIX, SOCK_STREAM, 0);
        check(fd_a >= 0 && connect(fd_a, (struct sockaddr *)&a, sizeof a) == 0, "connecting to the test's socket");
    } else if (!strcmp(mode, "netlink")) {
        fd_a = socket(AF_NETLINK, SOCK_RAW, NETLINK_NETFILTER);
        check(fd_a >= 0, "a netlink socket");
    } else if (!strcmp(mode, "udp-corked")) {
        fd_a = socket(AF_INET, SOCK_DGRAM, 0);
        struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(9), .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
        int one = 1;
        check(fd_a >= 0 && connect(fd_a, (struct sockaddr *)&a, sizeof a) == 0 && setsockopt(fd_a, IPPROTO_UDP, UDP_CORK, &one, sizeof one) == 0, "a corked UDP socket");
        check(write(fd_a, "corked", 6) == 6, "data written while corked");
    } else if (!strcmp(mode, "ebpf-filter")) {
        /* r0 = -1 (keep the whole packet); exit */
        struct bpf_insn insns[] = {{.code = BPF_ALU64 | BPF_MOV | BPF_K, .dst_reg = 0, .imm = -1}, {.code = BPF_JMP | BPF_EXIT}};
        union bpf_attr attr;
        memset(&attr, 0, sizeof attr);
        attr.prog_type = BPF_PROG_TYPE_SOCKET_FILTER;
        attr.insns = (unsigned long)insns;
        attr.insn_cnt = 2;
        attr.license = (unsigned long)"GPL";
        int prog = syscall(SYS_bpf, BPF_PROG_LOAD, &attr, sizeof attr);
        fd_a = socket(AF_INET, SOCK_DGRAM, 0);
        check(prog >= 0 && fd_a >= 0 && setsockopt(fd_a, SOL_SOCKET, SO_ATTACH_BPF, &prog, sizeof prog) == 0, "an eBPF socket filter");
        close(prog);
    } else if (!strcmp(mode, "pty")) {
        /* Its slave is opened by the test, outside the checkpoint. */
        fd_a = posix_openpt(O_RDWR | O_NOCTTY);
        check(fd_a >= 0 && grantpt(fd_a) == 0 && unlockpt(fd_a) == 0, "a pty");
        char name[4096];
        snprintf(name, sizeof name, "%s/pts", dir);
        FILE *f = fopen(name, "w");
        check(f && fputs(ptsname(fd_a), f) >= 0 && fclose(f) == 0, "writing the slave's name");
    } else if (!strcmp(mode, "pidfd-outside")) {
        fd_a = (int)syscall(SYS_pidfd_open, getppid(), 0);
        check(fd_a >= 0, "a pidfd of the parent");
    } else {
        check(0, "unknown mode");
    }
}

static void intact(void)
{
    char c = 0;
    if (!strcmp(mode, "unix-outside")) {
        check(write(fd_a, "x", 1) == 1, "writing to the test's socket");
    } else if (!strcmp(mode, "netlink")) {
        int type = 0;
        socklen_t l = sizeof type;
        check(getsockopt(fd_a, SOL_SOCKET, SO_TYPE, &type, &l) == 0 && type == SOCK_RAW, "the netlink socket is still there");
    } else if (!strcmp(mode, "ebpf-filter")) {
        socklen_t n = 0;
        check(getsockopt(fd_a, SOL_SOCKET, SO_GET_FILTER, NULL, &n) != 0 && errno == EACCES, "the eBPF filter is still attached");
    } else if (!strcmp(mode, "udp-corked")) {
        int cork = 0;
        socklen_t l = sizeof cork;
        check(getsockopt(fd_a, IPPROTO_UDP, UDP_CORK, &cork, &l) == 0 && cork == 1, "the UDP socket is still corked");
    } else if (!strcmp(mode, "pty")) {
        unsigned n;
        check(ioctl(fd_a, TIOCGPTN, &n) == 0 && write(fd_a, "x", 1) == 1, "the pty master is still there");
    } else if (!strcmp(mode, "tcp-conn")) {
        check(write(fd_a, "x", 1) == 1, "writing one end");
        check(read(fd_b, &c, 1) == 1 && c == 'x', "reading it at the other end");
    } else {
        check(syscall(SYS_pidfd_send_signal, fd_a, 0, NULL, 0) == 0, "the parent's pidfd still names it");
    }
    printf("intact OK\n");
    fflush(stdout);
}

static void closed(void)
{
    char c;
    int type = 0;
    socklen_t l = sizeof type;
    check(getsockopt(fd_a, SOL_SOCKET, SO_TYPE, &type, &l) == 0, "the dropped descriptor is a socket");
    check(read(fd_a, &c, 1) == 0, "the dropped descriptor reads end of file");
    if (fd_l >= 0) {
        /* The listening socket was saved: it is back, and accepts. */
        int s = socket(AF_INET, SOCK_STREAM, 0);
        struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port), .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
        check(connect(s, (struct sockaddr *)&a, sizeof a) == 0, "connecting to the restored listening socket");
        int c2 = accept(fd_l, NULL, NULL);
        check(c2 >= 0, "accepting on the restored listening socket");
        close(c2);
        close(s);
    }
    if (fd_b >= 0)
        check(read(fd_b, &c, 1) == 0, "the other dropped descriptor reads end of file");
    printf("closed OK\n");
    fflush(stdout);
    exit(0);
}

int main(int argc, char **argv)
{
    if (argc < 3)
        return 2;
    mode = argv[1];
    dir = argv[2];
    signal(SIGPIPE, SIG_IGN);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_usr1;
    sigaction(SIGUSR1, &sa, NULL);
    setup();
    ready();
    for (long n = 0;; n++) {
        if (intact_now) {
            intact_now = 0;
            intact();
        }
        if (verify_now)
            closed();
        printf("tick %ld\n", n);
        fflush(stdout);
        struct timespec ts = {0, 50 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
}
