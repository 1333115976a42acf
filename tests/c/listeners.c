/* Sockets a server holds while no client is connected: a TCP listener on loopback with
 * SO_REUSEADDR and TCP_NODELAY, an IPv6-only TCP listener, a bound UDP socket, a unix stream
 * listener at a path in DIR, an abstract unix seqpacket listener and a bound unix datagram
 * socket, plus a TCP socket not bound yet; and two TCP listeners that share a port through
 * SO_REUSEPORT, which one of them cleared since; and an ICMP echo socket bound to loopback (if
 * ping_group_range lets this process make one). After restart each is bound to its address
 * again with its options, and a client reaches it (the echo socket gets its echo reply).
 *
 *   listeners DIR */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/ip_icmp.h>
#include <netinet/tcp.h>
#include <stddef.h>
#include <sys/socket.h>
#include <sys/un.h>
#include "prog.h"

static int tcp4, tcp6, udp, ux, uxabs, uxdg, fresh, rp1, rp2, ping;
static struct sockaddr_in arp, aping;
static struct sockaddr_in a4;
static struct sockaddr_in6 a6;
static struct sockaddr_in au;
static struct sockaddr_un p_ux, p_abs, p_dg;
static socklen_t l_abs;

static int opt(int fd, int level, int name)
{
    int v = -1;
    socklen_t l = sizeof v;
    check(getsockopt(fd, level, name, &v, &l) == 0, "getsockopt");
    return v;
}

static void reach(int listener, int domain, int type, struct sockaddr *to, socklen_t len, const char *what)
{
    int c = socket(domain, type, 0);
    check(c >= 0 && connect(c, to, len) == 0, what);
    int s = accept(listener, NULL, NULL);
    check(s >= 0, what);
    check(write(c, "ping", 4) == 4, what);
    char b[4];
    check(read(s, b, 4) == 4 && !memcmp(b, "ping", 4), what);
    close(s);
    close(c);
}

int main(int argc, char **argv)
{
    if (argc < 2)
        return 2;
    int one = 1;
    socklen_t l;
    tcp4 = socket(AF_INET, SOCK_STREAM, 0);
    a4 = (struct sockaddr_in){.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    check(setsockopt(tcp4, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) == 0 && setsockopt(tcp4, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one) == 0, "options");
    check(bind(tcp4, (struct sockaddr *)&a4, sizeof a4) == 0 && listen(tcp4, 5) == 0, "TCP listener");
    l = sizeof a4;
    getsockname(tcp4, (struct sockaddr *)&a4, &l);

    tcp6 = socket(AF_INET6, SOCK_STREAM, 0);
    a6 = (struct sockaddr_in6){.sin6_family = AF_INET6, .sin6_addr = in6addr_loopback};
    check(setsockopt(tcp6, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one) == 0, "IPV6_V6ONLY");
    check(bind(tcp6, (struct sockaddr *)&a6, sizeof a6) == 0 && listen(tcp6, 5) == 0, "TCP6 listener");
    l = sizeof a6;
    getsockname(tcp6, (struct sockaddr *)&a6, &l);

    udp = socket(AF_INET, SOCK_DGRAM, 0);
    au = (struct sockaddr_in){.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    check(bind(udp, (struct sockaddr *)&au, sizeof au) == 0, "UDP bound");
    l = sizeof au;
    getsockname(udp, (struct sockaddr *)&au, &l);

    ux = socket(AF_UNIX, SOCK_STREAM, 0);
    p_ux.sun_family = AF_UNIX;
    snprintf(p_ux.sun_path, sizeof p_ux.sun_path, "%s/listen.sock", argv[1]);
    check(bind(ux, (struct sockaddr *)&p_ux, sizeof p_ux) == 0 && listen(ux, 3) == 0, "unix listener");

    uxabs = socket(AF_UNIX, SOCK_SEQPACKET, 0);
    p_abs.sun_family = AF_UNIX;
    int n = snprintf(p_abs.sun_path + 1, sizeof p_abs.sun_path - 1, "crest-test-%d", (int)getpid());
    l_abs = offsetof(struct sockaddr_un, sun_path) + 1 + n;
    check(bind(uxabs, (struct sockaddr *)&p_abs, l_abs) == 0 && listen(uxabs, 3) == 0, "abstract listener");

    uxdg = socket(AF_UNIX, SOCK_DGRAM, 0);
    p_dg.sun_family = AF_UNIX;
    snprintf(p_dg.sun_path, sizeof p_dg.sun_path, "%s/dgram.sock", argv[1]);
    check(bind(uxdg, (struct sockaddr *)&p_dg, sizeof p_dg) == 0, "unix datagram socket");

    fresh = socket(AF_INET, SOCK_STREAM, 0);
    check(fresh >= 0, "an unbound socket");

    rp1 = socket(AF_INET, SOCK_STREAM, 0);
    rp2 = socket(AF_INET, SOCK_STREAM, 0);
    arp = (struct sockaddr_in){.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    check(setsockopt(rp1, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) == 0 && setsockopt(rp2, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) == 0, "SO_REUSEPORT");
    check(bind(rp1, (struct sockaddr *)&arp, sizeof arp) == 0 && listen(rp1, 5) == 0, "the first listener of a shared port");
    l = sizeof arp;
    getsockname(rp1, (struct sockaddr *)&arp, &l);
    check(bind(rp2, (struct sockaddr *)&arp, sizeof arp) == 0 && listen(rp2, 5) == 0, "the second listener of the port");
    int zero = 0;
    check(setsockopt(rp2, SOL_SOCKET, SO_REUSEPORT, &zero, sizeof zero) == 0, "the second one clears SO_REUSEPORT");

    ping = socket(AF_INET, SOCK_DGRAM, IPPROTO_ICMP);
    if (ping >= 0) {
        aping = (struct sockaddr_in){.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
        check(bind(ping, (struct sockaddr *)&aping, sizeof aping) == 0, "an ICMP echo socket bound");
        l = sizeof aping;
        getsockname(ping, (struct sockaddr *)&aping, &l);
    }

    ready();
    wait_for_verify(NULL);

    reach(tcp4, AF_INET, SOCK_STREAM, (struct sockaddr *)&a4, sizeof a4, "a client reaches the TCP listener");
    check(opt(tcp4, SOL_SOCKET, SO_REUSEADDR) == 1 && opt(tcp4, IPPROTO_TCP, TCP_NODELAY) == 1 && opt(tcp4, SOL_SOCKET, SO_ACCEPTCONN) == 1, "TCP listener options");
    reach(tcp6, AF_INET6, SOCK_STREAM, (struct sockaddr *)&a6, sizeof a6, "a client reaches the IPv6 listener");
    check(opt(tcp6, IPPROTO_IPV6, IPV6_V6ONLY) == 1, "IPV6_V6ONLY kept");
    int c = socket(AF_INET, SOCK_DGRAM, 0);
    check(sendto(c, "dgram", 5, 0, (struct sockaddr *)&au, sizeof au) == 5, "sending to the UDP socket");
    char b[16];
    check(recv(udp, b, sizeof b, 0) == 5 && !memcmp(b, "dgram", 5), "the UDP socket receives");
    close(c);
    reach(ux, AF_UNIX, SOCK_STREAM, (struct sockaddr *)&p_ux, sizeof p_ux, "a client reaches the unix listener");
    reach(uxabs, AF_UNIX, SOCK_SEQPACKET, (struct sockaddr *)&p_abs, l_abs, "a client reaches the abstract listener");
    c = socket(AF_UNIX, SOCK_DGRAM, 0);
    check(sendto(c, "unix", 4, 0, (struct sockaddr *)&p_dg, sizeof p_dg) == 4, "sending to the unix datagram socket");
    check(recv(uxdg, b, sizeof b, 0) == 4 && !memcmp(b, "unix", 4), "the unix datagram socket receives");
    close(c);
    struct sockaddr_in fa;
    l = sizeof fa;
    check(getsockname(fresh, (struct sockaddr *)&fa, &l) == 0 && fa.sin_port == 0 && opt(fresh, SOL_SOCKET, SO_TYPE) == SOCK_STREAM, "the unbound socket is still unbound");
    check(opt(rp1, SOL_SOCKET, SO_REUSEPORT) == 1 && opt(rp2, SOL_SOCKET, SO_REUSEPORT) == 0, "SO_REUSEPORT as each had it");
    struct sockaddr_in g1, g2;
    socklen_t l1 = sizeof g1, l2 = sizeof g2;
    check(getsockname(rp1, (struct sockaddr *)&g1, &l1) == 0 && getsockname(rp2, (struct sockaddr *)&g2, &l2) == 0 && g1.sin_port == arp.sin_port && g2.sin_port == arp.sin_port, "both on the shared port");
    /* A client reaches one of the two. */
    c = socket(AF_INET, SOCK_STREAM, 0);
    check(connect(c, (struct sockaddr *)&arp, sizeof arp) == 0, "a client reaches the shared port");
    close(c);
    if (ping >= 0) {
        struct sockaddr_in gp;
        socklen_t lp = sizeof gp;
        check(getsockname(ping, (struct sockaddr *)&gp, &lp) == 0 && gp.sin_port == aping.sin_port && gp.sin_addr.s_addr == aping.sin_addr.s_addr, "the echo socket's address and identifier");
        struct icmphdr req = {.type = ICMP_ECHO, .un.echo.sequence = htons(7)};
        struct sockaddr_in to = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
        check(sendto(ping, &req, sizeof req, 0, (struct sockaddr *)&to, sizeof to) == sizeof req, "an echo request");
        struct icmphdr rep;
        check(recv(ping, &rep, sizeof rep, 0) == sizeof rep && rep.type == ICMP_ECHOREPLY && rep.un.echo.sequence == htons(7), "its echo reply");
    }
    pass();
}
