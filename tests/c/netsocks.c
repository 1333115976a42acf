/* Raw IP, packet and netlink sockets (needs CAP_NET_RAW):
 *  - a raw ICMP socket bound to 127.0.0.1 and connected to it, with an ICMP filter (drops
 *    timestamp requests); a raw UDP socket with IP_HDRINCL and IP_TTL; a raw ICMPv6 socket
 *    with an ICMPv6 filter; a raw IPv6 socket of protocol 253 with IPV6_CHECKSUM;
 *  - a packet socket not bound, TPACKET_V2, PACKET_AUXDATA, a receive ring (not mapped) and a
 *    promiscuous membership on lo; a datagram packet socket bound to lo for IPv4 with
 *    PACKET_RESERVE, PACKET_ORIGDEV, a fanout group and a transmit ring;
 *  - a routing netlink socket bound to a port of its choosing in the IPv4 multicast routing group, a group
 *    above 32 and with NETLINK_EXT_ACK; a device-event netlink socket connected to its
 *    port; one not bound.
 * After restart each has its protocol, address, options and memberships; the ICMP socket
 * pings 127.0.0.1 and hears the reply; the routing socket asks for the links and gets them.
 *
 *   netsocks              the test above
 *   netsocks netfilter    also holds a netfilter netlink socket: the checkpoint is refused,
 *                         naming it (the kernel keeps its queue bindings by port id) */
#include <arpa/inet.h>
#include <errno.h>
#include <linux/icmp.h>
#include <linux/icmpv6.h>
#include <linux/if_packet.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <net/ethernet.h>
unsigned int if_nametoindex(const char *name); /* net/if.h clashes with linux/if.h */
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include "prog.h"

#ifndef SOL_NETLINK
#define SOL_NETLINK 270
#endif

static int icmp, udpraw, icmp6, raw6, pk1, pk2, nlr, nlu, nlx;
static struct sockaddr_ll pk2_addr;
static int fanout, lo, high_group;
static unsigned nl_port;
static struct sockaddr_nl nlu_peer;

static int iopt(int fd, int level, int name)
{
    int v = -12345;
    socklen_t l = sizeof v;
    check(getsockopt(fd, level, name, &v, &l) == 0, "getsockopt");
    return v;
}

static void set(int fd, int level, int name, int v, const char *what)
{
    check(setsockopt(fd, level, name, &v, sizeof v) == 0, what);
}

static int proto_of(int fd) { return iopt(fd, SOL_SOCKET, SO_PROTOCOL); }

static void setup(void)
{
    lo = if_nametoindex("lo");
    check(lo > 0, "lo");
    struct sockaddr_in a = {.sin_family = AF_INET};
    inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
    icmp = socket(AF_INET, SOCK_RAW, IPPROTO_ICMP);
    check(icmp >= 0 && bind(icmp, (struct sockaddr *)&a, sizeof a) == 0 && connect(icmp, (struct sockaddr *)&a, sizeof a) == 0, "raw ICMP socket");
    struct icmp_filter f = {.data = 1 << ICMP_TIMESTAMP};
    check(setsockopt(icmp, SOL_RAW, ICMP_FILTER, &f, sizeof f) == 0, "ICMP_FILTER");
    udpraw = socket(AF_INET, SOCK_RAW, IPPROTO_UDP);
    check(udpraw >= 0, "raw UDP socket");
    set(udpraw, IPPROTO_IP, IP_HDRINCL, 1, "IP_HDRINCL");
    set(udpraw, IPPROTO_IP, IP_TTL, 33, "IP_TTL");
    icmp6 = socket(AF_INET6, SOCK_RAW, IPPROTO_ICMPV6);
    check(icmp6 >= 0, "raw ICMPv6 socket");
    struct icmp6_filter f6;
    memset(&f6, 0, sizeof f6);
    f6.data[4] = 0xdeadbeef;
    check(setsockopt(icmp6, SOL_ICMPV6, ICMPV6_FILTER, &f6, sizeof f6) == 0, "ICMPV6_FILTER");
    raw6 = socket(AF_INET6, SOCK_RAW, 253);
    check(raw6 >= 0, "raw IPv6 socket");
    set(raw6, IPPROTO_IPV6, IPV6_CHECKSUM, 2, "IPV6_CHECKSUM");

    pk1 = socket(AF_PACKET, SOCK_RAW, 0);
    check(pk1 >= 0, "packet socket");
    set(pk1, SOL_PACKET, PACKET_VERSION, TPACKET_V2, "PACKET_VERSION");
    set(pk1, SOL_PACKET, PACKET_AUXDATA, 1, "PACKET_AUXDATA");
    struct tpacket_req ring = {.tp_block_size = 4096, .tp_block_nr = 2, .tp_frame_size = 1024, .tp_frame_nr = 8};
    check(setsockopt(pk1, SOL_PACKET, PACKET_RX_RING, &ring, sizeof ring) == 0, "PACKET_RX_RING");
    struct packet_mreq m = {.mr_ifindex = lo, .mr_type = PACKET_MR_PROMISC};
    check(setsockopt(pk1, SOL_PACKET, PACKET_ADD_MEMBERSHIP, &m, sizeof m) == 0, "PACKET_ADD_MEMBERSHIP");
    pk2 = socket(AF_PACKET, SOCK_DGRAM, htons(ETH_P_IP));
    check(pk2 >= 0, "datagram packet socket");
    set(pk2, SOL_PACKET, PACKET_RESERVE, 8, "PACKET_RESERVE");
    set(pk2, SOL_PACKET, PACKET_ORIGDEV, 1, "PACKET_ORIGDEV");
    struct sockaddr_ll ll = {.sll_family = AF_PACKET, .sll_protocol = htons(ETH_P_IP), .sll_ifindex = lo};
    check(bind(pk2, (struct sockaddr *)&ll, sizeof ll) == 0, "bind packet socket");
    socklen_t al = sizeof pk2_addr;
    check(getsockname(pk2, (struct sockaddr *)&pk2_addr, &al) == 0, "packet address");
    fanout = (getpid() & 0xffff) | (PACKET_FANOUT_HASH << 16);
    set(pk2, SOL_PACKET, PACKET_FANOUT, fanout, "PACKET_FANOUT");
    check(setsockopt(pk2, SOL_PACKET, PACKET_TX_RING, &ring, sizeof ring) == 0, "PACKET_TX_RING");

    nlr = socket(AF_NETLINK, SOCK_RAW, NETLINK_ROUTE);
    struct sockaddr_nl n = {.nl_family = AF_NETLINK, .nl_groups = RTMGRP_IPV4_MROUTE};
    check(nlr >= 0 && bind(nlr, (struct sockaddr *)&n, sizeof n) == 0, "routing netlink socket");
    al = sizeof n;
    check(getsockname(nlr, (struct sockaddr *)&n, &al) == 0 && n.nl_pid != 0, "netlink port");
    nl_port = n.nl_pid;
    high_group = 33;
    if (setsockopt(nlr, SOL_NETLINK, NETLINK_ADD_MEMBERSHIP, &high_group, sizeof high_group) != 0)
        high_group = 0;
    set(nlr, SOL_NETLINK, NETLINK_EXT_ACK, 1, "NETLINK_EXT_ACK");
    nlu = socket(AF_NETLINK, SOCK_RAW, NETLINK_KOBJECT_UEVENT);
    memset(&nlu_peer, 0, sizeof nlu_peer);
    nlu_peer.nl_family = AF_NETLINK;
    nlu_peer.nl_pid = nl_port;
    check(nlu >= 0 && connect(nlu, (struct sockaddr *)&nlu_peer, sizeof nlu_peer) == 0, "connected netlink socket");
    nlx = socket(AF_NETLINK, SOCK_DGRAM, NETLINK_ROUTE);
    check(nlx >= 0, "unbound netlink socket");
}

static int readable(int fd, int ms)
{
    struct pollfd p = {fd, POLLIN, 0};
    return poll(&p, 1, ms) == 1;
}

static unsigned short csum(const void *b, int n)
{
    const unsigned short *p = b;
    unsigned long s = 0;
    for (; n > 1; n -= 2)
        s += *p++;
    if (n)
        s += *(const unsigned char *)p;
    s = (s >> 16) + (s & 0xffff);
    s += s >> 16;
    return ~s;
}

static void verify(void)
{
    /* Raw IP. */
    check(proto_of(icmp) == IPPROTO_ICMP && proto_of(udpraw) == IPPROTO_UDP && proto_of(icmp6) == IPPROTO_ICMPV6 && proto_of(raw6) == 253, "raw sockets keep their protocols");
    struct sockaddr_in a;
    socklen_t al = sizeof a;
    check(getsockname(icmp, (struct sockaddr *)&a, &al) == 0 && a.sin_addr.s_addr == htonl(INADDR_LOOPBACK), "the ICMP socket is bound to 127.0.0.1");
    struct icmp_filter f;
    socklen_t fl = sizeof f;
    check(getsockopt(icmp, SOL_RAW, ICMP_FILTER, &f, &fl) == 0 && f.data == 1u << ICMP_TIMESTAMP, "ICMP_FILTER kept");
    check(iopt(udpraw, IPPROTO_IP, IP_HDRINCL) == 1 && iopt(udpraw, IPPROTO_IP, IP_TTL) == 33, "IP_HDRINCL and IP_TTL kept");
    struct icmp6_filter f6;
    fl = sizeof f6;
    check(getsockopt(icmp6, SOL_ICMPV6, ICMPV6_FILTER, &f6, &fl) == 0 && f6.data[4] == 0xdeadbeef && f6.data[0] == 0, "ICMPV6_FILTER kept");
    check(iopt(raw6, IPPROTO_IPV6, IPV6_CHECKSUM) == 2, "IPV6_CHECKSUM kept");
    /* A ping over the raw ICMP socket. */
    struct icmphdr echo = {.type = ICMP_ECHO, .un.echo.id = htons(getpid() & 0xffff), .un.echo.sequence = htons(7)};
    echo.checksum = csum(&echo, sizeof echo);
    /* send() without an address: the socket is connected (getpeername does not tell for raw
     * sockets). */
    check(send(icmp, &echo, sizeof echo, 0) == sizeof echo, "ping over the connected ICMP socket");
    int heard = 0;
    for (int i = 0; i < 20 && !heard && readable(icmp, 2000); i++) {
        unsigned char buf[256];
        int n = recv(icmp, buf, sizeof buf, 0);
        int ihl = (buf[0] & 0xf) * 4;
        struct icmphdr *r = (struct icmphdr *)(buf + ihl);
        heard = n >= ihl + 8 && r->type == ICMP_ECHOREPLY && r->un.echo.id == echo.un.echo.id && r->un.echo.sequence == htons(7);
    }
    check(heard, "the raw ICMP socket hears the echo reply");

    /* Packet. */
    check(iopt(pk1, SOL_PACKET, PACKET_VERSION) == TPACKET_V2 && iopt(pk1, SOL_PACKET, PACKET_AUXDATA) == 1, "PACKET_VERSION and PACKET_AUXDATA kept");
    struct packet_mreq m = {.mr_ifindex = lo, .mr_type = PACKET_MR_PROMISC};
    check(setsockopt(pk1, SOL_PACKET, PACKET_DROP_MEMBERSHIP, &m, sizeof m) == 0, "the promiscuous membership is kept");
    struct tpacket_req ring = {.tp_block_size = 4096, .tp_block_nr = 2, .tp_frame_size = 1024, .tp_frame_nr = 8};
    errno = 0;
    check(setsockopt(pk1, SOL_PACKET, PACKET_RX_RING, &ring, sizeof ring) != 0 && errno == EBUSY, "the receive ring is there again");
    struct sockaddr_ll ll;
    al = sizeof ll;
    check(getsockname(pk2, (struct sockaddr *)&ll, &al) == 0 && ll.sll_ifindex == pk2_addr.sll_ifindex && ll.sll_protocol == pk2_addr.sll_protocol, "the packet socket is bound to lo for IPv4");
    check(iopt(pk2, SOL_PACKET, PACKET_RESERVE) == 8 && iopt(pk2, SOL_PACKET, PACKET_ORIGDEV) == 1, "PACKET_RESERVE and PACKET_ORIGDEV kept");
    check(iopt(pk2, SOL_PACKET, PACKET_FANOUT) == fanout, "the fanout group is joined again");
    errno = 0;
    check(setsockopt(pk2, SOL_PACKET, PACKET_TX_RING, &ring, sizeof ring) != 0 && errno == EBUSY, "the transmit ring is there again");

    /* Netlink. */
    struct sockaddr_nl n;
    al = sizeof n;
    check(getsockname(nlr, (struct sockaddr *)&n, &al) == 0 && n.nl_pid == nl_port && (n.nl_groups & RTMGRP_IPV4_MROUTE), "the routing socket keeps its port and group");
    unsigned groups[4] = {0};
    socklen_t gl = sizeof groups;
    check(getsockopt(nlr, SOL_NETLINK, NETLINK_LIST_MEMBERSHIPS, groups, &gl) == 0, "NETLINK_LIST_MEMBERSHIPS");
    check(!high_group || (groups[1] & 1), "the group above 32 is joined again");
    check(iopt(nlr, SOL_NETLINK, NETLINK_EXT_ACK) == 1, "NETLINK_EXT_ACK kept");
    al = sizeof n;
    check(getpeername(nlu, (struct sockaddr *)&n, &al) == 0 && n.nl_pid == nl_port, "the event socket is connected to its port again");
    check(proto_of(nlu) == NETLINK_KOBJECT_UEVENT, "the event socket keeps its protocol");
    al = sizeof n;
    check(getsockname(nlx, (struct sockaddr *)&n, &al) == 0 && n.nl_pid == 0, "the unbound netlink socket is still unbound");
    struct {
        struct nlmsghdr h;
        struct ifinfomsg i;
    } req = {.h = {.nlmsg_len = sizeof req, .nlmsg_type = RTM_GETLINK, .nlmsg_flags = NLM_F_REQUEST | NLM_F_DUMP, .nlmsg_seq = 42}};
    struct sockaddr_nl k = {.nl_family = AF_NETLINK};
    check(sendto(nlr, &req, sizeof req, 0, (struct sockaddr *)&k, sizeof k) == sizeof req, "ask for the links");
    int links = 0;
    for (int done = 0; !done && readable(nlr, 2000);) {
        char buf[32768];
        int len = recv(nlr, buf, sizeof buf, 0);
        for (struct nlmsghdr *h = (struct nlmsghdr *)buf; NLMSG_OK(h, len); h = NLMSG_NEXT(h, len)) {
            if (h->nlmsg_type == NLMSG_DONE)
                done = 1;
            else if (h->nlmsg_type == RTM_NEWLINK && h->nlmsg_seq == 42)
                links++;
        }
    }
    check(links > 0, "the routing socket gets the links");
    pass();
}

int main(int argc, char **argv)
{
    if (argc > 1 && strcmp(argv[1], "netfilter") == 0) {
        int nf = socket(AF_NETLINK, SOCK_RAW, 12 /* NETLINK_NETFILTER */);
        struct sockaddr_nl n = {.nl_family = AF_NETLINK};
        check(nf >= 0 && bind(nf, (struct sockaddr *)&n, sizeof n) == 0, "netfilter netlink socket");
    }
    setup();
    ready();
    wait_for_verify(NULL);
    verify();
    return 0;
}
