/* Connections whose two ends are both in this process, over loopback:
 *  - a TCP connection (IPv4) accepted from a listener, with data queued both ways: a short
 *    message each way that nobody read yet, then megabytes from the client that fill the
 *    server's receive queue and stay in the client's send queue (not sent yet);
 *  - a TCP connection over IPv6 with a message queued each way;
 *  - a half-closed TCP connection: the client sent "bye" and shut down writing; the server
 *    has not read it (its side is in CLOSE_WAIT, the client's in FIN_WAIT2); another over
 *    IPv4 between IPv6 sockets (addresses ::ffff:127.0.0.1);
 *  - two UDP sockets connected to each other.
 * After restart every connection goes on: the same addresses, the queued data in order, the
 * end of file after "bye", options kept, and the listener still accepts.
 *
 *   tcpconns */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include "prog.h"

static int lst, c4, s4, c6, s6, hc, hs, mc, ms, u1, u2;
static long bulk; /* bytes the client wrote after its message */
static struct sockaddr_storage a_c4, a_s4, p_c4, a_c6;

static int opt(int fd, int level, int name)
{
    int v = -1;
    socklen_t l = sizeof v;
    check(getsockopt(fd, level, name, &v, &l) == 0, "getsockopt");
    return v;
}

static void pair(int family, int *client, int *server, int *listener)
{
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof ss);
    socklen_t len;
    if (family == AF_INET) {
        struct sockaddr_in *a = (struct sockaddr_in *)&ss;
        a->sin_family = AF_INET;
        a->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        len = sizeof *a;
    } else {
        struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;
        a->sin6_family = AF_INET6;
        a->sin6_addr = in6addr_loopback;
        if (family == -AF_INET6) /* IPv4 between IPv6 sockets */
            inet_pton(AF_INET6, "::ffff:127.0.0.1", &a->sin6_addr);
        len = sizeof *a;
        family = AF_INET6;
    }
    int l = socket(family, SOCK_STREAM, 0);
    check(l >= 0 && bind(l, (struct sockaddr *)&ss, len) == 0 && listen(l, 4) == 0, "listener");
    check(getsockname(l, (struct sockaddr *)&ss, &len) == 0, "listener address");
    *client = socket(family, SOCK_STREAM, 0);
    check(connect(*client, (struct sockaddr *)&ss, len) == 0, "connect");
    *server = accept(l, NULL, NULL);
    check(*server >= 0, "accept");
    if (listener)
        *listener = l;
    else
        close(l);
}

static void read_exact(int fd, void *buf, size_t n, const char *what)
{
    size_t got = 0;
    while (got < n) {
        ssize_t r = read(fd, (char *)buf + got, n - got);
        check(r > 0, what);
        got += r;
    }
}

static int same(int fd, int peer, struct sockaddr_storage *was)
{
    struct sockaddr_storage now;
    socklen_t l = sizeof now;
    memset(&now, 0, sizeof now);
    if ((peer ? getpeername(fd, (struct sockaddr *)&now, &l) : getsockname(fd, (struct sockaddr *)&now, &l)) != 0)
        return 0;
    return !memcmp(&now, was, l);
}

static void save_addr(int fd, int peer, struct sockaddr_storage *to)
{
    socklen_t l = sizeof *to;
    memset(to, 0, sizeof *to);
    check((peer ? getpeername(fd, (struct sockaddr *)to, &l) : getsockname(fd, (struct sockaddr *)to, &l)) == 0, "address");
}

int main(void)
{
    int one = 1;
    pair(AF_INET, &c4, &s4, &lst);
    check(setsockopt(c4, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one) == 0 && setsockopt(s4, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof one) == 0, "options");
    save_addr(c4, 0, &a_c4);
    save_addr(s4, 0, &a_s4);
    save_addr(c4, 1, &p_c4);
    check(write(c4, "hello from client", 17) == 17 && write(s4, "hello from server", 17) == 17, "messages");
    /* Fill the server's receive queue and the client's send queue. */
    int fl = fcntl(c4, F_GETFL);
    fcntl(c4, F_SETFL, fl | O_NONBLOCK);
    char chunk[65536];
    for (;;) {
        for (int i = 0; i < (int)sizeof chunk; i++)
            chunk[i] = (char)((bulk + i) * 7 % 251);
        ssize_t n = write(c4, chunk, sizeof chunk);
        if (n < 0) {
            check(errno == EAGAIN, "filling the queues");
            /* Let the kernel move what it can, then once more. */
            struct pollfd p = {c4, POLLOUT, 0};
            if (poll(&p, 1, 200) == 1)
                continue;
            break;
        }
        bulk += n;
    }
    fcntl(c4, F_SETFL, fl);

    pair(AF_INET6, &c6, &s6, NULL);
    save_addr(c6, 0, &a_c6);
    check(write(c6, "six to server", 13) == 13 && write(s6, "six to client", 13) == 13, "IPv6 messages");

    pair(AF_INET, &hc, &hs, NULL);
    check(write(hc, "bye", 3) == 3 && shutdown(hc, SHUT_WR) == 0, "half-closing");
    pair(-AF_INET6, &mc, &ms, NULL);
    check(write(mc, "mapped", 6) == 6 && shutdown(mc, SHUT_WR) == 0, "half-closing over IPv4 between IPv6 sockets");

    struct sockaddr_in ua = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)}, ub = ua;
    socklen_t l = sizeof ua;
    u1 = socket(AF_INET, SOCK_DGRAM, 0);
    u2 = socket(AF_INET, SOCK_DGRAM, 0);
    check(bind(u1, (struct sockaddr *)&ua, l) == 0 && bind(u2, (struct sockaddr *)&ub, l) == 0, "UDP bind");
    getsockname(u1, (struct sockaddr *)&ua, &l);
    getsockname(u2, (struct sockaddr *)&ub, &l);
    check(connect(u1, (struct sockaddr *)&ub, l) == 0 && connect(u2, (struct sockaddr *)&ua, l) == 0, "UDP connect");
    usleep(100 * 1000);
    /* The segment sizes each end sends with (over loopback half the peer's window, 32 KiB). */
    int mss_c4 = opt(c4, IPPROTO_TCP, TCP_MAXSEG), mss_s4 = opt(s4, IPPROTO_TCP, TCP_MAXSEG);

    ready();
    wait_for_verify(NULL);

    /* Not the default of 536 bytes, which a connection rebuilt without its agreed size takes:
     * 60 times the packets, and a receiver that runs out of memory before its window closes. */
    check(opt(c4, IPPROTO_TCP, TCP_MAXSEG) >= mss_c4 / 2 && opt(s4, IPPROTO_TCP, TCP_MAXSEG) >= mss_s4 / 2, "segment sizes kept");

    check(same(c4, 0, &a_c4) && same(s4, 0, &a_s4) && same(c4, 1, &p_c4) && same(c6, 0, &a_c6), "the same addresses");
    check(opt(c4, IPPROTO_TCP, TCP_NODELAY) == 1 && opt(s4, SOL_SOCKET, SO_KEEPALIVE) == 1, "options kept");
    char b[64];
    read_exact(c4, b, 17, "the client reads the server's message");
    check(!memcmp(b, "hello from server", 17), "the server's message");
    read_exact(s4, b, 17, "the server reads the client's message");
    check(!memcmp(b, "hello from client", 17), "the client's message");
    for (long at = 0; at < bulk;) {
        long want = bulk - at < (long)sizeof chunk ? bulk - at : (long)sizeof chunk;
        ssize_t n = read(s4, chunk, want);
        check(n > 0, "the server reads the bulk data");
        for (ssize_t i = 0; i < n; i++)
            if (chunk[i] != (char)((at + i) * 7 % 251))
                check(0, "the bulk data in order");
        at += n;
    }
    check(write(s4, "more", 4) == 4, "the server writes on");
    read_exact(c4, b, 4, "the client reads on");
    check(!memcmp(b, "more", 4), "new data");

    read_exact(s6, b, 13, "IPv6: the server reads");
    check(!memcmp(b, "six to server", 13), "IPv6: the client's message");
    read_exact(c6, b, 13, "IPv6: the client reads");
    check(!memcmp(b, "six to client", 13), "IPv6: the server's message");
    check(write(c6, "again", 5) == 5, "IPv6: the client writes on");
    read_exact(s6, b, 5, "IPv6: the server reads on");

    read_exact(hs, b, 3, "half-closed: the server reads");
    check(!memcmp(b, "bye", 3), "half-closed: the message");
    check(read(hs, b, sizeof b) == 0, "half-closed: then end of file");
    check(write(hs, "ok", 2) == 2, "half-closed: the server still writes");
    read_exact(hc, b, 2, "half-closed: the client still reads");
    check(!memcmp(b, "ok", 2), "half-closed: the reply");
    close(hs);
    check(read(hc, b, sizeof b) == 0, "half-closed: the client sees the end");

    read_exact(ms, b, 6, "half-closed over IPv4 between IPv6 sockets: the server reads");
    check(!memcmp(b, "mapped", 6), "half-closed, mapped: the message");
    check(read(ms, b, sizeof b) == 0, "half-closed, mapped: then end of file");
    check(write(ms, "ok", 2) == 2, "half-closed, mapped: the server still writes");
    read_exact(mc, b, 2, "half-closed, mapped: the client still reads");

    check(send(u1, "dgram", 5, 0) == 5, "UDP: sending");
    check(recv(u2, b, sizeof b, 0) == 5 && !memcmp(b, "dgram", 5), "UDP: the peer receives");
    check(send(u2, "back", 4, 0) == 4 && recv(u1, b, sizeof b, 0) == 4, "UDP: and back");

    int c = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_storage la;
    socklen_t ll = sizeof la;
    getsockname(lst, (struct sockaddr *)&la, &ll);
    check(connect(c, (struct sockaddr *)&la, ll) == 0, "the listener accepts");
    int a = accept(lst, NULL, NULL);
    check(a >= 0, "accept after restart");
    printf("bulk %ld\n", bulk);
    pass();
}
