#define _GNU_SOURCE
/* What waits in unix socket queues: datagrams, descriptors in flight, connections not accepted.
 *
 *   unixqueues DIR            the state below; after restart everything is read back and checked
 *   unixqueues DIR epoll      an epoll set in flight watching an eventfd (refused at checkpoint
 *                             time: only the sockets of the pair that carries it are tied to it)
 *   unixqueues DIR epollpair  an epoll set in flight watching the receiving end of the pair that
 *                             carries it, sent twice (as CRIU's scm05): after restart it is
 *                             received, reports that end readable with its data, and the end can
 *                             be removed from it by its number
 *   unixqueues DIR inet       a UDP socket in flight (refused likewise)
 *   unixqueues DIR closed     a connection waiting on a listener whose client was closed (refused:
 *                             what the client sent cannot be read without accepting it)
 *   unixqueues DIR sent       a connection waiting on a listener whose client, held here, sent
 *                             data on it (refused likewise)
 *
 * - A datagram server bound at DIR/srv with five datagrams queued: from an unnamed client since
 *   closed, from a client bound at DIR/cli (still open), from a sender bound to an abstract
 *   name and since closed, from a sender bound to another abstract name and still open (as the
 *   ranks of an MPI job wake each other), and from itself. Each comes back whole, in order,
 *   with the sender's address the server saw; the open abstract sender still has its name.
 * - A datagram pair whose sending end was closed, with three datagrams queued for the other end:
 *   an empty one first, then one of bytes, then one carrying the read end of a pipe (its write
 *   end held here) with data in the pipe.
 * - A stream pair with a message carrying both ends of a pipe (neither held here any more), a
 *   regular file open at offset 3, an eventfd with a count of 5 and one end of another socket
 *   pair (its other end held here); then bytes without descriptors.
 * - A seqpacket pair with a message carrying a descriptor also held here (the same pipe end).
 * - A stream listener at DIR/lst (mode 0640) with two connections waiting to be accepted, from
 *   two clients held here; a seqpacket listener at DIR/seq with one waiting. Accepted after
 *   restart, each talks to its client. The listener's file keeps its mode.
 */
#include <errno.h>
#include <fcntl.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include "prog.h"

static struct sockaddr_un name(const char *dir, const char *file)
{
    struct sockaddr_un a = {.sun_family = AF_UNIX};
    snprintf(a.sun_path, sizeof a.sun_path, "%s/%s", dir, file);
    return a;
}

static int bound(int type, struct sockaddr_un *a)
{
    int s = socket(AF_UNIX, type, 0);
    check(s >= 0 && bind(s, (struct sockaddr *)a, sizeof *a) == 0, "binding a unix socket");
    return s;
}

/* Sends `len` bytes of `data` on `via` with descriptors `fds` (n of them). */
static void send_fds(int via, const void *data, size_t len, const int *fds, int n)
{
    char control[CMSG_SPACE(8 * sizeof(int))];
    struct iovec iov = {(void *)data, len};
    struct msghdr h = {.msg_iov = &iov, .msg_iovlen = 1};
    memset(control, 0, sizeof control);
    if (n > 0) {
        h.msg_control = control;
        h.msg_controllen = CMSG_SPACE(n * sizeof(int));
        struct cmsghdr *c = CMSG_FIRSTHDR(&h);
        c->cmsg_level = SOL_SOCKET;
        c->cmsg_type = SCM_RIGHTS;
        c->cmsg_len = CMSG_LEN(n * sizeof(int));
        memcpy(CMSG_DATA(c), fds, n * sizeof(int));
    }
    check(sendmsg(via, &h, 0) == (ssize_t)len, "sending a message with descriptors");
}

/* Receives one message into buf (returns its length), its descriptors into fds (*n of them). */
static ssize_t recv_fds(int via, void *buf, size_t len, int *fds, int *n)
{
    char control[CMSG_SPACE(8 * sizeof(int))];
    struct iovec iov = {buf, len};
    struct msghdr h = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = control, .msg_controllen = sizeof control};
    ssize_t r = recvmsg(via, &h, MSG_DONTWAIT);
    *n = 0;
    check(!(h.msg_flags & (MSG_TRUNC | MSG_CTRUNC)), "a message whole, with its descriptors");
    for (struct cmsghdr *c = CMSG_FIRSTHDR(&h); r >= 0 && c; c = CMSG_NXTHDR(&h, c))
        if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS) {
            int k = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
            memcpy(fds + *n, CMSG_DATA(c), k * sizeof(int));
            *n += k;
        }
    return r;
}

static void from(int srv, const char *want, size_t len, const char *sender, int abstract, const char *what)
{
    char b[64] = {0};
    struct sockaddr_un a;
    socklen_t al = sizeof a;
    memset(&a, 0, sizeof a);
    ssize_t r = recvfrom(srv, b, sizeof b, MSG_DONTWAIT, (struct sockaddr *)&a, &al);
    check(r == (ssize_t)len && !memcmp(b, want, len), what);
    if (!sender)
        check(al <= sizeof(sa_family_t), "an unnamed sender is still unnamed");
    else if (abstract)
        check(al > sizeof(sa_family_t) && a.sun_path[0] == 0 && !strncmp(a.sun_path + 1, sender, al - sizeof(sa_family_t) - 1), "the abstract sender's name");
    else
        check(al > sizeof(sa_family_t) && !strcmp(a.sun_path, sender), "the sender's name");
}

int main(int argc, char **argv)
{
    if (argc < 2)
        return 2;
    const char *dir = argv[1];
    if (argc > 2 && !strcmp(argv[2], "epollpair")) {
        int sk[2], ep = epoll_create1(0);
        check(ep >= 0 && socketpair(AF_UNIX, SOCK_DGRAM, 0, sk) == 0, "an epoll set and a pair");
        struct epoll_event ev = {.events = EPOLLIN, .data.u64 = 0x5eed0000u + (unsigned)sk[1]};
        check(epoll_ctl(ep, EPOLL_CTL_ADD, sk[1], &ev) == 0, "watching the receiving end");
        send_fds(sk[0], "e", 1, &ep, 1);
        send_fds(sk[0], "f", 1, &ep, 1);
        close(ep);
        ready();
        wait_for_verify(NULL);
        char c;
        int got = -1;
        struct iovec iov = {&c, 1};
        char ctl[CMSG_SPACE(sizeof(int))];
        struct msghdr h = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl, .msg_controllen = sizeof ctl};
        check(recvmsg(sk[1], &h, 0) == 1 && c == 'e', "the first message");
        struct cmsghdr *ch = CMSG_FIRSTHDR(&h);
        check(ch && ch->cmsg_type == SCM_RIGHTS, "the epoll set in flight");
        memcpy(&got, CMSG_DATA(ch), sizeof got);
        struct epoll_event out;
        check(epoll_wait(got, &out, 1, 0) == 1 && out.events == EPOLLIN && out.data.u64 == 0x5eed0000u + (unsigned)sk[1], "the set reports the end readable, with its data");
        check(epoll_ctl(got, EPOLL_CTL_DEL, sk[1], NULL) == 0, "the end is removed from the set by its number");
        check(epoll_wait(got, &out, 1, 0) == 0, "the set is empty then");
        pass();
    }
    if (argc > 2 && (!strcmp(argv[2], "epoll") || !strcmp(argv[2], "inet"))) {
        int sk[2], ep = !strcmp(argv[2], "epoll") ? epoll_create1(0) : socket(AF_INET, SOCK_DGRAM, 0);
        check(ep >= 0 && socketpair(AF_UNIX, SOCK_DGRAM, 0, sk) == 0, "an epoll set or a UDP socket, and a pair");
        if (!strcmp(argv[2], "epoll")) {
            int e = eventfd(0, 0);
            struct epoll_event ev = {.events = EPOLLIN};
            check(e >= 0 && epoll_ctl(ep, EPOLL_CTL_ADD, e, &ev) == 0, "watching an eventfd");
        }
        send_fds(sk[0], "e", 1, &ep, 1);
        close(ep);
        ready();
        wait_for_verify(NULL);
        pass();
    }
    if (argc > 2 && (!strcmp(argv[2], "closed") || !strcmp(argv[2], "sent"))) {
        struct sockaddr_un a = name(dir, "lst");
        int l = bound(SOCK_STREAM, &a), c = socket(AF_UNIX, SOCK_STREAM, 0);
        check(listen(l, 4) == 0 && connect(c, (struct sockaddr *)&a, sizeof a) == 0 && write(c, "x", 1) == 1, "a connection with data");
        if (!strcmp(argv[2], "closed"))
            close(c);
        ready();
        wait_for_verify(NULL);
        pass();
    }

    /* The datagram server. */
    struct sockaddr_un srv_a = name(dir, "srv"), cli_a = name(dir, "cli");
    int srv = bound(SOCK_DGRAM, &srv_a);
    int gone = socket(AF_UNIX, SOCK_DGRAM, 0);
    check(sendto(gone, "unnamed", 7, 0, (struct sockaddr *)&srv_a, sizeof srv_a) == 7, "an unnamed sender");
    close(gone);
    int cli = bound(SOCK_DGRAM, &cli_a);
    check(sendto(cli, "named", 5, 0, (struct sockaddr *)&srv_a, sizeof srv_a) == 5, "a named sender");
    struct sockaddr_un abs_a = {.sun_family = AF_UNIX};
    int abs_len = snprintf(abs_a.sun_path + 1, sizeof abs_a.sun_path - 1, "crest-unixqueues-%d", getpid());
    int abstract = socket(AF_UNIX, SOCK_DGRAM, 0);
    check(bind(abstract, (struct sockaddr *)&abs_a, sizeof(sa_family_t) + 1 + abs_len) == 0, "an abstract name");
    check(sendto(abstract, "a", 1, 0, (struct sockaddr *)&srv_a, sizeof srv_a) == 1, "a datagram from an abstract name");
    close(abstract);
    struct sockaddr_un held_a = {.sun_family = AF_UNIX};
    int held_len = snprintf(held_a.sun_path + 1, sizeof held_a.sun_path - 1, "crest-unixqueues-held-%d", getpid());
    socklen_t held_al = sizeof(sa_family_t) + 1 + held_len;
    int held = socket(AF_UNIX, SOCK_DGRAM, 0);
    check(bind(held, (struct sockaddr *)&held_a, held_al) == 0, "another abstract name");
    check(sendto(held, "held", 4, 0, (struct sockaddr *)&srv_a, sizeof srv_a) == 4, "a datagram from an abstract name still held");
    check(sendto(srv, "self", 4, 0, (struct sockaddr *)&srv_a, sizeof srv_a) == 4, "to itself");

    /* The datagram pair whose sender was closed, with a pipe's read end in flight. */
    int dp[2], p1[2];
    check(socketpair(AF_UNIX, SOCK_DGRAM, 0, dp) == 0 && pipe(p1) == 0, "a datagram pair and a pipe");
    check(write(p1[1], "in the pipe", 11) == 11, "data in the pipe");
    check(send(dp[1], "", 0, 0) == 0, "an empty datagram");
    check(send(dp[1], "first", 5, 0) == 5, "a datagram of bytes");
    send_fds(dp[1], "second", 6, &p1[0], 1);
    close(dp[1]);
    close(p1[0]);

    /* The stream pair with many descriptors in flight. */
    int sp[2], p2[2], other[2];
    check(socketpair(AF_UNIX, SOCK_STREAM, 0, sp) == 0 && pipe(p2) == 0 && socketpair(AF_UNIX, SOCK_STREAM, 0, other) == 0, "a stream pair, a pipe, another pair");
    check(write(p2[1], "xyz", 3) == 3, "data in the second pipe");
    char path[4096];
    snprintf(path, sizeof path, "%s/file", dir);
    int f = open(path, O_CREAT | O_RDWR | O_TRUNC, 0600);
    check(f >= 0 && write(f, "0123456789", 10) == 10 && lseek(f, 3, SEEK_SET) == 3, "a regular file at offset 3");
    int ev = eventfd(5, 0);
    check(ev >= 0, "an eventfd");
    int carried[5] = {p2[0], p2[1], f, ev, other[1]};
    send_fds(sp[0], "fds", 3, carried, 5);
    check(send(sp[0], "tail", 4, 0) == 4, "bytes after them");
    for (int i = 0; i < 5; i++)
        close(carried[i]);

    /* The seqpacket pair carrying a descriptor also held here. */
    int qp[2], p3[2];
    check(socketpair(AF_UNIX, SOCK_SEQPACKET, 0, qp) == 0 && pipe(p3) == 0, "a seqpacket pair, a third pipe");
    send_fds(qp[1], "kept", 4, &p3[0], 1);

    /* The listeners with connections waiting. */
    struct sockaddr_un lst_a = name(dir, "lst"), seq_a = name(dir, "seq");
    int lst = bound(SOCK_STREAM, &lst_a), seq = bound(SOCK_SEQPACKET, &seq_a);
    check(chmod(lst_a.sun_path, 0640) == 0 && listen(lst, 8) == 0 && listen(seq, 8) == 0, "listening");
    int waiting[2] = {socket(AF_UNIX, SOCK_STREAM, 0), socket(AF_UNIX, SOCK_STREAM, 0)}, sq = socket(AF_UNIX, SOCK_SEQPACKET, 0);
    for (int i = 0; i < 2; i++)
        check(connect(waiting[i], (struct sockaddr *)&lst_a, sizeof lst_a) == 0, "connecting to the listener");
    check(connect(sq, (struct sockaddr *)&seq_a, sizeof seq_a) == 0, "connecting to the seqpacket listener");

    ready();
    wait_for_verify(NULL);

    from(srv, "unnamed", 7, NULL, 0, "the unnamed sender's datagram");
    from(srv, "named", 5, cli_a.sun_path, 0, "the named sender's datagram");
    from(srv, "a", 1, abs_a.sun_path + 1, 1, "the abstract sender's datagram");
    from(srv, "held", 4, held_a.sun_path + 1, 1, "the datagram of the abstract sender still open");
    from(srv, "self", 4, srv_a.sun_path, 0, "its own datagram");
    char b[64] = {0};
    check(recv(srv, b, sizeof b, MSG_DONTWAIT) == -1 && errno == EAGAIN, "nothing more on the server");
    check(sendto(cli, "again", 5, 0, (struct sockaddr *)&srv_a, sizeof srv_a) == 5 && recv(srv, b, sizeof b, 0) == 5, "the server still receives");
    check(sendto(held, "more", 4, 0, (struct sockaddr *)&srv_a, sizeof srv_a) == 4, "the abstract sender still sends");
    from(srv, "more", 4, held_a.sun_path + 1, 1, "the abstract sender kept its name");

    int fds[8], n;
    check(recv_fds(dp[0], b, sizeof b, fds, &n) == 0 && n == 0, "the empty datagram first");
    memset(b, 0, sizeof b);
    check(recv_fds(dp[0], b, sizeof b, fds, &n) == 5 && !strcmp(b, "first") && n == 0, "the datagram of bytes, without descriptors");
    memset(b, 0, sizeof b);
    check(recv_fds(dp[0], b, sizeof b, fds, &n) == 6 && !strcmp(b, "second") && n == 1, "the second datagram, with the pipe's read end");
    memset(b, 0, sizeof b);
    check(read(fds[0], b, sizeof b) == 11 && !strcmp(b, "in the pipe"), "the pipe's data");
    check(write(p1[1], "more", 4) == 4 && read(fds[0], b, sizeof b) == 4, "the pipe's write end held here feeds it");
    check(send(dp[0], "x", 1, 0) == -1, "the closed sender stays closed");

    memset(b, 0, sizeof b);
    check(recv_fds(sp[1], b, 3, fds, &n) == 3 && !strcmp(b, "fds") && n == 5, "the stream message with five descriptors");
    memset(b, 0, sizeof b);
    check(read(fds[0], b, sizeof b) == 3 && !strcmp(b, "xyz"), "the second pipe's data");
    check(write(fds[1], "w", 1) == 1 && read(fds[0], b, 1) == 1 && b[0] == 'w', "both ends of the second pipe work");
    check(read(fds[2], b, 1) == 1 && b[0] == '3', "the regular file at its offset");
    uint64_t count = 0;
    check(read(fds[3], &count, 8) == 8 && count == 5, "the eventfd's count");
    check(write(fds[4], "o", 1) == 1 && read(other[0], b, 1) == 1 && b[0] == 'o', "the socket in flight is connected to its other end");
    memset(b, 0, sizeof b);
    check(recv(sp[1], b, sizeof b, MSG_DONTWAIT) == 4 && !strcmp(b, "tail"), "the bytes after them");

    memset(b, 0, sizeof b);
    check(recv_fds(qp[0], b, sizeof b, fds, &n) == 4 && !strcmp(b, "kept") && n == 1, "the seqpacket message with a descriptor");
    check(write(p3[1], "k", 1) == 1 && read(fds[0], b, 1) == 1 && b[0] == 'k', "the descriptor also held here is of the same pipe");

    struct stat st;
    check(stat(lst_a.sun_path, &st) == 0 && (st.st_mode & 07777) == 0640, "the listener's file keeps its mode");
    check(write(waiting[0], "1", 1) == 1 && write(waiting[1], "2", 1) == 1, "the clients write");
    int seen = 0;
    for (int i = 0; i < 2; i++) {
        int c = accept4(lst, NULL, NULL, SOCK_NONBLOCK);
        check(c >= 0 && read(c, b, 2) == 1 && (b[0] == '1' || b[0] == '2'), "accepting a connection that was waiting, which reaches its client");
        seen |= 1 << (b[0] - '1');
    }
    check(seen == 3, "each client has its connection");
    check(fcntl(lst, F_SETFL, O_NONBLOCK) == 0 && accept(lst, NULL, NULL) == -1 && errno == EAGAIN, "no other connection waits");
    int c = accept(seq, NULL, NULL);
    check(c >= 0 && send(sq, "sp", 2, 0) == 2 && recv(c, b, sizeof b, 0) == 2, "the seqpacket connection");
    pass();
}
