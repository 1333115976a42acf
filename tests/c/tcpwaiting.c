/* TCP connections waiting to be accepted, their clients in this process:
 *  - two connections waiting on an IPv4 listener bound to 127.0.0.1, the first client with
 *    TCP_NODELAY set;
 *  - one on an IPv6 listener bound to the wildcard address [::], from a client connected to
 *    [::1];
 *  - one on a second IPv6 wildcard listener from an IPv4 client (dual stack: 127.0.0.1);
 *  - a listener with nothing waiting.
 * After restart each listener has its connections waiting again: accept() gives them, each
 * from its client's address and port, the clients keep their addresses and options, data goes
 * both ways on each connection, and the listeners take new connections.
 *
 *   tcpwaiting            the test above
 *   tcpwaiting data       a client sent data on its connection before it was accepted: the
 *                         checkpoint is refused (that data cannot be read without accepting)
 *   tcpwaiting outside    prints "port N" and waits: a client outside the image connects to
 *                         it (the checkpoint is refused, naming the client) */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include "prog.h"

#define NCLIENTS 4

static int l4, l6, l64, lidle;
static int clients[NCLIENTS], listener_of[NCLIENTS];
static struct sockaddr_storage client_addr[NCLIENTS];

static int listener(int family, const char *ip)
{
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof ss);
    socklen_t len;
    if (family == AF_INET) {
        struct sockaddr_in *a = (struct sockaddr_in *)&ss;
        a->sin_family = AF_INET;
        inet_pton(AF_INET, ip, &a->sin_addr);
        len = sizeof *a;
    } else {
        struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;
        a->sin6_family = AF_INET6;
        inet_pton(AF_INET6, ip, &a->sin6_addr);
        len = sizeof *a;
    }
    int l = socket(family, SOCK_STREAM, 0);
    int v6only = 0;
    if (family == AF_INET6)
        setsockopt(l, IPPROTO_IPV6, IPV6_V6ONLY, &v6only, sizeof v6only);
    check(l >= 0 && bind(l, (struct sockaddr *)&ss, len) == 0 && listen(l, 8) == 0, "listener");
    return l;
}

static int port_of(int fd)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof ss;
    check(getsockname(fd, (struct sockaddr *)&ss, &len) == 0, "getsockname");
    return ntohs(ss.ss_family == AF_INET ? ((struct sockaddr_in *)&ss)->sin_port : ((struct sockaddr_in6 *)&ss)->sin6_port);
}

/* Client i connects, from family `family`, to `ip` at the port of listener l. */
static void client(int i, int family, const char *ip, int l)
{
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof ss);
    socklen_t len;
    if (family == AF_INET) {
        struct sockaddr_in *a = (struct sockaddr_in *)&ss;
        a->sin_family = AF_INET;
        a->sin_port = htons(port_of(l));
        inet_pton(AF_INET, ip, &a->sin_addr);
        len = sizeof *a;
    } else {
        struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;
        a->sin6_family = AF_INET6;
        a->sin6_port = htons(port_of(l));
        inet_pton(AF_INET6, ip, &a->sin6_addr);
        len = sizeof *a;
    }
    clients[i] = socket(family, SOCK_STREAM, 0);
    listener_of[i] = l;
    check(clients[i] >= 0 && connect(clients[i], (struct sockaddr *)&ss, len) == 0, "connect");
    socklen_t al = sizeof client_addr[i];
    check(getsockname(clients[i], (struct sockaddr *)&client_addr[i], &al) == 0, "client address");
}

/* The same endpoint, an IPv4 address possibly given as IPv4-mapped IPv6. */
static int same_end(const struct sockaddr_storage *a, const struct sockaddr_storage *b)
{
    unsigned char ia[16], ib[16];
    int pa, pb;
    const struct sockaddr_storage *s[2] = {a, b};
    unsigned char *ip[2] = {ia, ib};
    int *port[2] = {&pa, &pb};
    for (int k = 0; k < 2; k++) {
        memset(ip[k], 0, 16);
        if (s[k]->ss_family == AF_INET) {
            const struct sockaddr_in *v4 = (const struct sockaddr_in *)s[k];
            ip[k][10] = ip[k][11] = 0xff;
            memcpy(ip[k] + 12, &v4->sin_addr, 4);
            *port[k] = v4->sin_port;
        } else {
            const struct sockaddr_in6 *v6 = (const struct sockaddr_in6 *)s[k];
            memcpy(ip[k], &v6->sin6_addr, 16);
            *port[k] = v6->sin6_port;
        }
    }
    return pa == pb && memcmp(ia, ib, 16) == 0;
}

static int readable(int fd, int ms)
{
    struct pollfd p = {fd, POLLIN, 0};
    return poll(&p, 1, ms) == 1 && (p.revents & POLLIN);
}

static void verify(void)
{
    int opt = 0;
    socklen_t ol = sizeof opt;
    check(getsockopt(clients[0], IPPROTO_TCP, TCP_NODELAY, &opt, &ol) == 0 && opt == 1, "the first client keeps TCP_NODELAY");
    int got[NCLIENTS] = {0};
    for (int i = 0; i < NCLIENTS; i++) {
        struct sockaddr_storage now;
        socklen_t al = sizeof now;
        check(getsockname(clients[i], (struct sockaddr *)&now, &al) == 0 && same_end(&now, &client_addr[i]), "a client keeps its address and port");
    }
    int ls[3] = {l4, l6, l64};
    for (int k = 0; k < 3; k++) {
        check(readable(ls[k], 5000), "a listener has its connections waiting again");
        int flags = fcntl(ls[k], F_GETFL);
        fcntl(ls[k], F_SETFL, flags | O_NONBLOCK);
        for (;;) {
            struct sockaddr_storage from;
            socklen_t fl = sizeof from;
            int s = accept(ls[k], (struct sockaddr *)&from, &fl);
            if (s < 0) {
                check(errno == EAGAIN, "accept");
                break;
            }
            int which = -1;
            for (int i = 0; i < NCLIENTS; i++)
                if (listener_of[i] == ls[k] && same_end(&from, &client_addr[i]))
                    which = i;
            check(which >= 0 && !got[which], "an accepted connection comes from one of the clients, once");
            got[which] = 1;
            char buf[16];
            check(write(clients[which], "ping", 4) == 4 && readable(s, 5000) && read(s, buf, sizeof buf) == 4 && memcmp(buf, "ping", 4) == 0, "the client's data reaches the server");
            check(write(s, "pong", 4) == 4 && readable(clients[which], 5000) && read(clients[which], buf, sizeof buf) == 4 && memcmp(buf, "pong", 4) == 0, "the server's data reaches the client");
            close(s);
        }
        fcntl(ls[k], F_SETFL, flags);
    }
    for (int i = 0; i < NCLIENTS; i++)
        check(got[i], "every waiting connection is accepted after the restart");
    /* The listeners take new connections. */
    client(0, AF_INET, "127.0.0.1", lidle);
    check(readable(lidle, 5000), "the idle listener takes a new connection");
    int s = accept(lidle, NULL, NULL);
    check(s >= 0, "accept on the idle listener");
    pass();
}

int main(int argc, char **argv)
{
    const char *mode = argc > 1 ? argv[1] : "";
    if (strcmp(mode, "outside") == 0) {
        l4 = listener(AF_INET, "127.0.0.1");
        printf("port %d\n", port_of(l4));
        ready();
        wait_for_verify(NULL);
        return 0;
    }
    l4 = listener(AF_INET, "127.0.0.1");
    l6 = listener(AF_INET6, "::");
    l64 = listener(AF_INET6, "::");
    lidle = listener(AF_INET, "0.0.0.0");
    client(0, AF_INET, "127.0.0.1", l4);
    int one = 1;
    check(setsockopt(clients[0], IPPROTO_TCP, TCP_NODELAY, &one, sizeof one) == 0, "TCP_NODELAY");
    client(1, AF_INET, "127.0.0.1", l4);
    client(2, AF_INET6, "::1", l6);
    client(3, AF_INET, "127.0.0.1", l64);
    if (strcmp(mode, "data") == 0)
        check(write(clients[1], "early", 5) == 5, "write before accept");
    /* The handshakes are done: each connection waits in its listener's queue. */
    check(readable(l4, 5000) && readable(l6, 5000) && readable(l64, 5000), "connections wait");
    ready();
    wait_for_verify(NULL);
    verify();
    return 0;
}
