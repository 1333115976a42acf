/* Socket options and shutdown states: after restart every option set here reads back as it
 * was. A TCP socket with SOL_SOCKET ints (SO_PRIORITY, SO_RCVLOWAT, SO_DONTROUTE, SO_KEEPALIVE,
 * SO_OOBINLINE), SO_LINGER, SO_RCVTIMEO, a locked send buffer (SO_SNDBUF, SO_BUF_LOCK) and TCP
 * options (TCP_NODELAY, TCP_CORK, TCP_KEEPIDLE, TCP_USER_TIMEOUT); a UDP socket with a classic
 * BPF filter; another whose filter is locked; an IPv6 UDP socket bound to an address of no
 * interface with IP_FREEBIND, then cleared; a connected UDP socket shut down for writing; unix
 * pairs shut down for reading (a datagram end and a stream end); two UDP-Lite sockets
 * connected to each other with a checksum coverage (when the kernel has UDP-Lite). With
 * "root": SO_MARK and SO_BINDTODEVICE too. */
#include <arpa/inet.h>
#include <errno.h>
#include <linux/filter.h>
#include <net/if.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <sys/un.h>
#include "prog.h"

#ifndef SO_BUF_LOCK
#define SO_BUF_LOCK 72
#endif

static int geti(int fd, int level, int name)
{
    int v = -12345;
    socklen_t l = sizeof v;
    check(getsockopt(fd, level, name, &v, &l) == 0, "getsockopt");
    return v;
}

static void seti(int fd, int level, int name, int v, const char *what)
{
    check(setsockopt(fd, level, name, &v, sizeof v) == 0, what);
}

struct want {
    int level, name, value;
    const char *what;
};

static struct want tcp_ints[] = {
    /* IP_TOS sets the priority too: the priority set after it is the one that stays. */
    {IPPROTO_IP, IP_TOS, 0x10, "IP_TOS"},
    {SOL_SOCKET, SO_PRIORITY, 3, "SO_PRIORITY"},
    {SOL_SOCKET, SO_RCVLOWAT, 5, "SO_RCVLOWAT"},
    {SOL_SOCKET, SO_DONTROUTE, 1, "SO_DONTROUTE"},
    {SOL_SOCKET, SO_KEEPALIVE, 1, "SO_KEEPALIVE"},
    {SOL_SOCKET, SO_OOBINLINE, 1, "SO_OOBINLINE"},
    {IPPROTO_TCP, TCP_NODELAY, 1, "TCP_NODELAY"},
    {IPPROTO_TCP, TCP_CORK, 1, "TCP_CORK"},
    {IPPROTO_TCP, TCP_KEEPIDLE, 77, "TCP_KEEPIDLE"},
    {IPPROTO_TCP, TCP_USER_TIMEOUT, 1234, "TCP_USER_TIMEOUT"},
};
#define NTCP (sizeof tcp_ints / sizeof tcp_ints[0])

static struct sock_filter prog[] = {
    {0x28, 0, 0, 0x0000000c}, {0x15, 0, 1, 0x00000800}, {0x6, 0, 0, 0x0000ffff}, {0x6, 0, 0, 0x00000000},
};
#define NPROG (sizeof prog / sizeof prog[0])

int main(int argc, char **argv)
{
    int root = argc > 1 && !strcmp(argv[1], "root");
    int tcp = socket(AF_INET, SOCK_STREAM, 0);
    check(tcp >= 0, "a TCP socket");
    for (unsigned i = 0; i < NTCP; i++)
        seti(tcp, tcp_ints[i].level, tcp_ints[i].name, tcp_ints[i].value, tcp_ints[i].what);
    struct linger lg = {1, 30};
    check(setsockopt(tcp, SOL_SOCKET, SO_LINGER, &lg, sizeof lg) == 0, "SO_LINGER");
    struct timeval tv = {2, 500000};
    check(setsockopt(tcp, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv) == 0, "SO_RCVTIMEO");
    seti(tcp, SOL_SOCKET, SO_SNDBUF, 16384, "SO_SNDBUF");
    int sndbuf = geti(tcp, SOL_SOCKET, SO_SNDBUF);
    int lock = geti(tcp, SOL_SOCKET, SO_BUF_LOCK);
    check(lock == 1, "setting SO_SNDBUF locks the send buffer");
    if (root) {
        seti(tcp, SOL_SOCKET, SO_MARK, 42, "SO_MARK");
        check(setsockopt(tcp, SOL_SOCKET, SO_BINDTODEVICE, "lo", 3) == 0, "SO_BINDTODEVICE");
    }

    int filtered = socket(AF_INET, SOCK_DGRAM, 0), locked = socket(AF_INET, SOCK_DGRAM, 0);
    struct sock_fprog fp = {NPROG, prog};
    check(setsockopt(filtered, SOL_SOCKET, SO_ATTACH_FILTER, &fp, sizeof fp) == 0, "a BPF filter");
    check(setsockopt(locked, SOL_SOCKET, SO_ATTACH_FILTER, &fp, sizeof fp) == 0, "a second BPF filter");
    seti(locked, SOL_SOCKET, SO_LOCK_FILTER, 1, "SO_LOCK_FILTER");

    int six = socket(AF_INET6, SOCK_DGRAM, 0);
    struct sockaddr_in6 a6 = {.sin6_family = AF_INET6, .sin6_port = htons(0)};
    inet_pton(AF_INET6, "2001:db8::42", &a6.sin6_addr);
    seti(six, IPPROTO_IP, IP_FREEBIND, 1, "IP_FREEBIND");
    check(bind(six, (struct sockaddr *)&a6, sizeof a6) == 0, "binding an address of no interface");
    seti(six, IPPROTO_IP, IP_FREEBIND, 0, "clearing IP_FREEBIND");
    socklen_t l6 = sizeof a6;
    check(getsockname(six, (struct sockaddr *)&a6, &l6) == 0, "its address");

    int u1 = socket(AF_INET, SOCK_DGRAM, 0), u2 = socket(AF_INET, SOCK_DGRAM, 0);
    struct sockaddr_in a1 = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)}, a2 = a1;
    socklen_t l = sizeof a1;
    check(bind(u1, (struct sockaddr *)&a1, sizeof a1) == 0 && getsockname(u1, (struct sockaddr *)&a1, &l) == 0, "UDP one");
    check(bind(u2, (struct sockaddr *)&a2, sizeof a2) == 0 && getsockname(u2, (struct sockaddr *)&a2, &l) == 0, "UDP two");
    check(connect(u1, (struct sockaddr *)&a2, sizeof a2) == 0 && connect(u2, (struct sockaddr *)&a1, sizeof a1) == 0, "connected UDP");
    check(shutdown(u1, SHUT_WR) == 0, "UDP shut down for writing");

    /* UDP-Lite: level IPPROTO_UDPLITE (136), UDPLITE_SEND_CSCOV 10, UDPLITE_RECV_CSCOV 11. */
    int l1 = socket(AF_INET, SOCK_DGRAM, 136), l2 = socket(AF_INET, SOCK_DGRAM, 136);
    if (l1 >= 0 && l2 >= 0) {
        struct sockaddr_in b1 = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)}, b2 = b1;
        socklen_t bl = sizeof b1;
        check(bind(l1, (struct sockaddr *)&b1, sizeof b1) == 0 && getsockname(l1, (struct sockaddr *)&b1, &bl) == 0, "UDP-Lite one");
        check(bind(l2, (struct sockaddr *)&b2, sizeof b2) == 0 && getsockname(l2, (struct sockaddr *)&b2, &bl) == 0, "UDP-Lite two");
        check(connect(l1, (struct sockaddr *)&b2, sizeof b2) == 0 && connect(l2, (struct sockaddr *)&b1, sizeof b1) == 0, "connected UDP-Lite");
        seti(l1, 136, 10, 20, "UDPLITE_SEND_CSCOV");
        seti(l2, 136, 11, 20, "UDPLITE_RECV_CSCOV");
    }

    int dg[2], st[2];
    check(socketpair(AF_UNIX, SOCK_DGRAM, 0, dg) == 0 && socketpair(AF_UNIX, SOCK_STREAM, 0, st) == 0, "unix pairs");
    check(shutdown(dg[0], SHUT_RD) == 0 && shutdown(st[0], SHUT_RD) == 0, "unix ends shut down for reading");
    signal(SIGPIPE, SIG_IGN);

    ready();
    wait_for_verify(NULL);

    for (unsigned i = 0; i < NTCP; i++) {
        if (geti(tcp, tcp_ints[i].level, tcp_ints[i].name) != tcp_ints[i].value) {
            printf("%s is %d, not %d\n", tcp_ints[i].what, geti(tcp, tcp_ints[i].level, tcp_ints[i].name), tcp_ints[i].value);
            check(0, tcp_ints[i].what);
        }
    }
    struct linger lg2 = {0, 0};
    socklen_t ll = sizeof lg2;
    check(getsockopt(tcp, SOL_SOCKET, SO_LINGER, &lg2, &ll) == 0 && lg2.l_onoff == 1 && lg2.l_linger == 30, "SO_LINGER");
    struct timeval tv2 = {0, 0};
    socklen_t tl = sizeof tv2;
    check(getsockopt(tcp, SOL_SOCKET, SO_RCVTIMEO, &tv2, &tl) == 0 && tv2.tv_sec == 2 && tv2.tv_usec == 500000, "SO_RCVTIMEO");
    check(geti(tcp, SOL_SOCKET, SO_SNDBUF) == sndbuf, "SO_SNDBUF");
    check(geti(tcp, SOL_SOCKET, SO_BUF_LOCK) == lock, "SO_BUF_LOCK");
    if (root) {
        check(geti(tcp, SOL_SOCKET, SO_MARK) == 42, "SO_MARK");
        char dev[IFNAMSIZ] = {0};
        socklen_t dl = sizeof dev;
        check(getsockopt(tcp, SOL_SOCKET, SO_BINDTODEVICE, dev, &dl) == 0 && !strcmp(dev, "lo"), "SO_BINDTODEVICE");
    }

    for (int s = 0; s < 2; s++) {
        int fd = s ? locked : filtered;
        struct sock_filter got[NPROG + 1];
        socklen_t n = 0;
        check(getsockopt(fd, SOL_SOCKET, SO_GET_FILTER, NULL, &n) == 0 && n == NPROG, "the filter's length");
        n = NPROG;
        check(getsockopt(fd, SOL_SOCKET, SO_GET_FILTER, got, &n) == 0 && !memcmp(got, prog, sizeof prog), "the filter's instructions");
    }
    check(geti(filtered, SOL_SOCKET, SO_LOCK_FILTER) == 0 && geti(locked, SOL_SOCKET, SO_LOCK_FILTER) == 1, "SO_LOCK_FILTER");
    check(setsockopt(locked, SOL_SOCKET, SO_DETACH_FILTER, NULL, 0) != 0, "a locked filter cannot be detached");

    struct sockaddr_in6 b6;
    socklen_t bl6 = sizeof b6;
    check(getsockname(six, (struct sockaddr *)&b6, &bl6) == 0 && !memcmp(&b6.sin6_addr, &a6.sin6_addr, sizeof a6.sin6_addr) && b6.sin6_port == a6.sin6_port, "the IPv6 address of no interface");
    check(geti(six, IPPROTO_IP, IP_FREEBIND) == 0, "IP_FREEBIND cleared as it was");

    char b[8];
    check(send(u1, "x", 1, 0) < 0 && errno == EPIPE, "the UDP socket shut down for writing cannot send");
    check(send(u2, "y", 1, 0) == 1 && recv(u1, b, sizeof b, 0) == 1 && b[0] == 'y', "it still receives");

    if (l1 >= 0 && l2 >= 0) {
        check(geti(l1, 136, 10) == 20 && geti(l2, 136, 11) == 20, "the UDP-Lite checksum coverage");
        check(send(l1, "lite!", 5, 0) == 5 && recv(l2, b, sizeof b, 0) == 5 && send(l2, "ok", 2, 0) == 2 && recv(l1, b, sizeof b, 0) == 2, "UDP-Lite both ways");
    }

    check(send(dg[1], "z", 1, 0) < 0 && errno == EPIPE, "no datagram to an end shut down for reading");
    check(send(dg[0], "w", 1, 0) == 1 && recv(dg[1], b, sizeof b, 0) == 1, "the other way works");
    check(write(st[1], "v", 1) < 0 && errno == EPIPE, "no stream data to an end shut down for reading");
    check(write(st[0], "u", 1) == 1 && read(st[1], b, 1) == 1, "the other way works");
    pass();
}
