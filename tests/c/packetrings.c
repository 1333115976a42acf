/* Packet sockets with their rings mapped, bound to lo for a protocol of their own (the local
 * EtherType of each mode's own, 0x88b5, 0x9000 and 0x9001, so that no other traffic reaches them):
 *  - one TPACKET_V2 with a receive and a transmit ring, mapped shared, read-write;
 *  - one TPACKET_V3 with a receive ring of two blocks (retired after 10 ms), mapped private.
 * After the restart each mapping is at its address, of its socket (the inode of the socket at
 * its descriptor), of the same length; the versions are the same; the rings are there (setting
 * them again says EBUSY); a frame put in the transmit ring is sent and arrives in both receive
 * rings, at their first frame and block.
 * With "pending": a packet is received and left unread before the checkpoint (frame 0 of the
 * V2 receive ring is TP_STATUS_USER), which the checkpoint must refuse.
 * With "consumed": a packet is received and read before the checkpoint (frame 0 handed back
 * to the kernel, which fills frame 1 next); after the restart the packet sent arrives in frame
 * 1 of the V2 receive ring (the V3 socket, bound to another protocol, gets neither).
 * With "forked": as "consumed", with a child that holds the same socket and maps its rings
 * (inherited by fork): the ring is brought to frame 1 once, not once per process.
 * With "fanout": as "consumed", the V2 socket in a fanout group, which the checkpoint must
 * refuse (the socket cannot be bound for the time its ring is brought to frame 1). */
#include <arpa/inet.h>
#include <errno.h>
#include <linux/if_packet.h>
#include <net/ethernet.h>
#include <net/if.h>
#include <poll.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>

#include "prog.h"

/* Each mode its own protocol: a run of one sends nothing the other receives. */
static int PROTO = 0x88b5;
static int V3_PROTO;
#define PAYLOAD "crest packet ring"

static int bound_socket(int version, int proto)
{
    int s = socket(AF_PACKET, SOCK_RAW, htons(proto));
    check(s >= 0, "socket(AF_PACKET)");
    check(setsockopt(s, SOL_PACKET, PACKET_VERSION, &version, sizeof version) == 0, "PACKET_VERSION");
    return s;
}

static void bind_lo(int s, int proto)
{
    struct sockaddr_ll a = {.sll_family = AF_PACKET, .sll_protocol = htons(proto), .sll_ifindex = (int)if_nametoindex("lo")};
    check(a.sll_ifindex > 0, "lo has an index");
    check(bind(s, (struct sockaddr *)&a, sizeof a) == 0, "bind to lo");
}

/* The mapping at addr is of the socket s, len bytes long. */
static int mapped_at(void *addr, size_t len, int s)
{
    struct stat st;
    char line[512];
    int found = 0;
    check(fstat(s, &st) == 0, "fstat socket");
    FILE *f = fopen("/proc/self/maps", "r");
    check(f != NULL, "open maps");
    while (fgets(line, sizeof line, f)) {
        unsigned long start, end;
        unsigned maj, min;
        unsigned long long ino;
        if (sscanf(line, "%lx-%lx %*s %*s %x:%x %llu", &start, &end, &maj, &min, &ino) != 5)
            continue;
        if (start == (unsigned long)addr)
            found = end - start == len && ino == st.st_ino && makedev(maj, min) == st.st_dev;
    }
    fclose(f);
    return found;
}

static int version_of(int s)
{
    int v = -1;
    socklen_t l = sizeof v;
    check(getsockopt(s, SOL_PACKET, PACKET_VERSION, &v, &l) == 0, "getsockopt PACKET_VERSION");
    return v;
}

static const unsigned char *payload_of(const unsigned char *frame, unsigned len)
{
    static const char want[] = PAYLOAD;
    if (len < ETH_HLEN + sizeof want - 1 || memcmp(frame + ETH_HLEN, want, sizeof want - 1) != 0)
        return NULL;
    return frame + ETH_HLEN;
}

int main(int argc, char **argv)
{
    int pending = argc > 1 && strcmp(argv[1], "pending") == 0;
    int forked = argc > 1 && strcmp(argv[1], "forked") == 0;
    int fanout = argc > 1 && strcmp(argv[1], "fanout") == 0;
    int consumed = forked || fanout || (argc > 1 && strcmp(argv[1], "consumed") == 0);
    if (pending)
        PROTO = 0x9000;
    if (consumed)
        PROTO = forked ? 0x9003 : fanout ? 0x9004 : 0x9001;
    V3_PROTO = consumed ? 0x9002 : PROTO;

    /* V2: receive ring of 4 frames, transmit ring of 4 frames, one page each way. */
    int v2 = bound_socket(TPACKET_V2, PROTO);
    struct tpacket_req req = {.tp_block_size = 4096, .tp_block_nr = 1, .tp_frame_size = 1024, .tp_frame_nr = 4};
    check(setsockopt(v2, SOL_PACKET, PACKET_RX_RING, &req, sizeof req) == 0, "V2 PACKET_RX_RING");
    check(setsockopt(v2, SOL_PACKET, PACKET_TX_RING, &req, sizeof req) == 0, "V2 PACKET_TX_RING");
    size_t v2len = 2 * 4096;
    unsigned char *v2map = mmap(NULL, v2len, PROT_READ | PROT_WRITE, MAP_SHARED, v2, 0);
    check(v2map != MAP_FAILED, "mmap V2 rings");
    bind_lo(v2, PROTO);
    if (fanout) {
        int f = 0x4242 | PACKET_FANOUT_HASH << 16;
        check(setsockopt(v2, SOL_PACKET, PACKET_FANOUT, &f, sizeof f) == 0, "PACKET_FANOUT");
    }

    /* V3: receive ring of two blocks of two pages. */
    int v3 = bound_socket(TPACKET_V3, V3_PROTO);
    struct tpacket_req3 req3 = {.tp_block_size = 8192, .tp_block_nr = 2, .tp_frame_size = 2048, .tp_frame_nr = 8, .tp_retire_blk_tov = 10};
    check(setsockopt(v3, SOL_PACKET, PACKET_RX_RING, &req3, sizeof req3) == 0, "V3 PACKET_RX_RING");
    size_t v3len = 2 * 8192;
    unsigned char *v3map = mmap(NULL, v3len, PROT_READ, MAP_PRIVATE, v3, 0);
    check(v3map != MAP_FAILED, "mmap V3 ring");
    bind_lo(v3, V3_PROTO);

    if (pending || consumed) {
        /* A packet received and not read: frame 0 of the V2 ring is the program's. */
        int tx = socket(AF_PACKET, SOCK_RAW, htons(PROTO));
        check(tx >= 0, "sending socket");
        struct sockaddr_ll to = {.sll_family = AF_PACKET, .sll_protocol = htons(PROTO), .sll_ifindex = (int)if_nametoindex("lo"), .sll_halen = ETH_ALEN};
        unsigned char pkt[64] = {0};
        pkt[12] = PROTO >> 8;
        pkt[13] = PROTO & 0xff;
        memcpy(pkt + ETH_HLEN, PAYLOAD, sizeof PAYLOAD - 1);
        check(sendto(tx, pkt, sizeof pkt, 0, (struct sockaddr *)&to, sizeof to) == (ssize_t)sizeof pkt, "sendto lo");
        close(tx);
        struct pollfd p = {.fd = v2, .events = POLLIN};
        check(poll(&p, 1, 5000) == 1, "the packet arrives in the receive ring");
        check(((struct tpacket2_hdr *)v2map)->tp_status & TP_STATUS_USER, "frame 0 is the program's");
        check(payload_of(v2map + ((struct tpacket2_hdr *)v2map)->tp_mac, ((struct tpacket2_hdr *)v2map)->tp_snaplen) != NULL, "frame 0 is the packet sent");
        if (consumed)
            __atomic_store_n(&((struct tpacket2_hdr *)v2map)->tp_status, TP_STATUS_KERNEL, __ATOMIC_RELEASE);
    }
    /* The frame of the V2 receive ring the program reads next. */
    int next = consumed ? 1 : 0;
    if (forked) {
        pid_t child = fork();
        check(child >= 0, "fork");
        if (child == 0) {
            /* Holds the socket and its mapping until the parent ends. */
            pid_t parent = getppid();
            while (getppid() == parent)
                usleep(20000);
            _exit(0);
        }
    }

    ready();
    wait_for_verify(NULL);

    check(mapped_at(v2map, v2len, v2), "the V2 rings are mapped at their address, of their socket, whole");
    check(mapped_at(v3map, v3len, v3), "the V3 ring is mapped at its address, of its socket, whole");
    check(version_of(v2) == TPACKET_V2 && version_of(v3) == TPACKET_V3, "the versions are the same");
    check(setsockopt(v2, SOL_PACKET, PACKET_RX_RING, &req, sizeof req) != 0 && errno == EBUSY, "the V2 receive ring is there (mapped)");
    check(setsockopt(v2, SOL_PACKET, PACKET_TX_RING, &req, sizeof req) != 0 && errno == EBUSY, "the V2 transmit ring is there (mapped)");
    check(setsockopt(v3, SOL_PACKET, PACKET_RX_RING, &req3, sizeof req3) != 0 && errno == EBUSY, "the V3 receive ring is there (mapped)");
    for (int i = 0; i < 4; i++) {
        check(((struct tpacket2_hdr *)(v2map + i * 1024))->tp_status == TP_STATUS_KERNEL, "the receive frames are the kernel's");
        check(((struct tpacket2_hdr *)(v2map + 4096 + i * 1024))->tp_status == TP_STATUS_AVAILABLE, "the transmit frames are free");
    }

    /* Send through the transmit ring: frame 0. */
    struct tpacket2_hdr *t = (struct tpacket2_hdr *)(v2map + 4096);
    unsigned char *data = (unsigned char *)t + TPACKET2_HDRLEN - sizeof(struct sockaddr_ll);
    memset(data, 0, 64);
    data[12] = PROTO >> 8;
    data[13] = PROTO & 0xff;
    memcpy(data + ETH_HLEN, PAYLOAD, sizeof PAYLOAD - 1);
    t->tp_len = 64;
    __atomic_store_n(&t->tp_status, TP_STATUS_SEND_REQUEST, __ATOMIC_RELEASE);
    check(send(v2, NULL, 0, 0) == 64, "sending the transmit ring's frame");

    /* It arrives in the frame of the V2 receive ring the program reads next. */
    struct pollfd p = {.fd = v2, .events = POLLIN};
    check(poll(&p, 1, 5000) == 1, "the V2 socket has a packet");
    struct tpacket2_hdr *r = (struct tpacket2_hdr *)(v2map + next * 1024);
    check(__atomic_load_n(&r->tp_status, __ATOMIC_ACQUIRE) & TP_STATUS_USER, "the V2 receive ring's next frame holds it");
    check(payload_of((unsigned char *)r + r->tp_mac, r->tp_snaplen) != NULL, "the V2 receive ring's next frame is the packet sent");
    r->tp_status = TP_STATUS_KERNEL;
    for (int i = 0; i < 4; i++)
        check(i == next || ((struct tpacket2_hdr *)(v2map + i * 1024))->tp_status == TP_STATUS_KERNEL, "it is in no other frame");
    if (consumed)
        pass();

    /* And in block 0 of the V3 ring, once the block is retired. */
    struct tpacket_block_desc *b = (struct tpacket_block_desc *)v3map;
    for (int n = 0; n < 500 && !(__atomic_load_n(&b->hdr.bh1.block_status, __ATOMIC_ACQUIRE) & TP_STATUS_USER); n++) {
        p.fd = v3;
        poll(&p, 1, 10);
    }
    check(b->hdr.bh1.block_status & TP_STATUS_USER, "block 0 of the V3 ring is given to the program");
    check(b->hdr.bh1.num_pkts >= 1, "block 0 of the V3 ring holds a packet");
    struct tpacket3_hdr *h = (struct tpacket3_hdr *)(v3map + b->hdr.bh1.offset_to_first_pkt);
    check(payload_of((unsigned char *)h + h->tp_mac, h->tp_snaplen) != NULL, "the V3 ring's first packet is the packet sent");
    pass();
}
