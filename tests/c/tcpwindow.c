/* A TCP connection (both ends in this process, over loopback) whose receiving end took a
 * window update from a segment beyond what it had received, and then closed its window
 * because it ran out of receive memory: the kernel then holds a state (the sequence number of
 * the segment that last updated the send window, snd_wl1, beyond the right edge of the
 * receive window) that TCP_REPAIR_WINDOW refuses to set again. Loopback does it when a
 * receiver short of memory drops a segment and takes the next one out of order; here the
 * segment is a pure acknowledgment sent with a raw socket from the peer's address, then the
 * receive buffer is made as small as it goes and the peer sends until the window closes.
 * After restart the connection goes on both ways: every byte the peer wrote arrives in
 * order, and a reply goes back.
 *
 *   tcpwindow        (needs root: repair mode to read the sequence numbers, a raw socket) */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <linux/sock_diag.h>
#include <linux/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include "prog.h"

#ifndef TCP_REPAIR_WINDOW
#define TCP_REPAIR_WINDOW 29
#endif

struct repair_window {
    unsigned snd_wl1, snd_wnd, max_window, rcv_wnd, rcv_wup;
};

static int setint(int fd, int level, int name, int v) { return setsockopt(fd, level, name, &v, sizeof v); }

/* The receive and send sequence numbers and the window of `fd`, read in repair mode. Leaving
 * repair mode sends a window probe, which the peer answers: waits for that to pass. */
static void seqs(int fd, unsigned *rcv_nxt, unsigned *snd_nxt, struct repair_window *w)
{
    socklen_t l = sizeof *rcv_nxt;
    check(setint(fd, IPPROTO_TCP, TCP_REPAIR, 1) == 0, "repair mode (needs CAP_NET_ADMIN)");
    check(setint(fd, IPPROTO_TCP, TCP_REPAIR_QUEUE, TCP_RECV_QUEUE) == 0 && getsockopt(fd, IPPROTO_TCP, TCP_QUEUE_SEQ, rcv_nxt, &l) == 0, "receive sequence");
    check(setint(fd, IPPROTO_TCP, TCP_REPAIR_QUEUE, TCP_SEND_QUEUE) == 0 && getsockopt(fd, IPPROTO_TCP, TCP_QUEUE_SEQ, snd_nxt, &l) == 0, "send sequence");
    l = sizeof *w;
    check(getsockopt(fd, IPPROTO_TCP, TCP_REPAIR_WINDOW, w, &l) == 0, "window");
    check(setint(fd, IPPROTO_TCP, TCP_REPAIR_QUEUE, TCP_NO_QUEUE) == 0 && setint(fd, IPPROTO_TCP, TCP_REPAIR, 0) == 0, "leaving repair mode");
    usleep(50 * 1000);
}

static unsigned sum16(const unsigned char *b, size_t n, unsigned s)
{
    for (size_t i = 0; i + 1 < n; i += 2)
        s += (unsigned)b[i] << 8 | b[i + 1];
    if (n & 1)
        s += (unsigned)b[n - 1] << 8;
    return s;
}

static unsigned short fold(unsigned s)
{
    while (s >> 16)
        s = (s & 0xffff) + (s >> 16);
    return (unsigned short)~s;
}

/* Sends a pure ACK from `from` to `to` (IPv4) with sequence `seq`, acknowledging `ack`. */
static void inject_ack(struct sockaddr_in *from, struct sockaddr_in *to, unsigned seq, unsigned ack, unsigned short window)
{
    unsigned char p[40];
    memset(p, 0, sizeof p);
    p[0] = 0x45;
    p[3] = sizeof p;
    p[6] = 0x40;
    p[8] = 64;
    p[9] = IPPROTO_TCP;
    memcpy(p + 12, &from->sin_addr, 4);
    memcpy(p + 16, &to->sin_addr, 4);
    unsigned short c = fold(sum16(p, 20, 0));
    p[10] = c >> 8, p[11] = c & 0xff;
    unsigned char *t = p + 20;
    memcpy(t, &from->sin_port, 2);
    memcpy(t + 2, &to->sin_port, 2);
    unsigned nseq = htonl(seq), nack = htonl(ack);
    memcpy(t + 4, &nseq, 4);
    memcpy(t + 8, &nack, 4);
    t[12] = 5 << 4;
    t[13] = 0x10; /* ACK */
    t[14] = window >> 8, t[15] = window & 0xff;
    unsigned s = sum16(p + 12, 8, 0) + IPPROTO_TCP + 20;
    c = fold(sum16(t, 20, s));
    t[16] = c >> 8, t[17] = c & 0xff;
    int r = socket(AF_INET, SOCK_RAW, IPPROTO_RAW);
    check(r >= 0, "raw socket (needs CAP_NET_RAW)");
    check(sendto(r, p, sizeof p, 0, (struct sockaddr *)to, sizeof *to) == (ssize_t)sizeof p, "sending the acknowledgment");
    close(r);
}

static char byte_at(long i) { return (char)(i * 13 % 241); }

static int c = -1, s = -1;
static long sent;

static void send_piece(void)
{
    char piece[1000];
    for (int i = 0; i < (int)sizeof piece; i++)
        piece[i] = byte_at(sent + i);
    ssize_t n = send(c, piece, sizeof piece, MSG_DONTWAIT);
    check(n > 0 || errno == EAGAIN, "the client writes");
    if (n > 0)
        sent += n;
    usleep(5 * 1000);
}

static unsigned info(int fd, int snd_wnd)
{
    struct tcp_info ti;
    socklen_t l = sizeof ti;
    memset(&ti, 0, sizeof ti);
    check(getsockopt(fd, IPPROTO_TCP, TCP_INFO, &ti, &l) == 0, "TCP_INFO");
    return snd_wnd ? ti.tcpi_snd_wnd : ti.tcpi_snd_wscale;
}

/* One try on a new connection; whether the server's window closed with snd_wl1 ahead. */
static int attempt(void)
{
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)}, ca, sa;
    socklen_t len = sizeof a;
    int l = socket(AF_INET, SOCK_STREAM, 0);
    check(l >= 0 && bind(l, (struct sockaddr *)&a, len) == 0 && listen(l, 1) == 0 && getsockname(l, (struct sockaddr *)&a, &len) == 0, "listener");
    c = socket(AF_INET, SOCK_STREAM, 0);
    check(connect(c, (struct sockaddr *)&a, len) == 0, "connect");
    s = accept(l, NULL, NULL);
    check(s >= 0, "accept");
    close(l);
    check(setint(c, IPPROTO_TCP, TCP_NODELAY, 1) == 0, "TCP_NODELAY");
    len = sizeof ca;
    check(getsockname(c, (struct sockaddr *)&ca, &len) == 0 && getsockname(s, (struct sockaddr *)&sa, &len) == 0, "addresses");
    unsigned rcv_nxt, snd_nxt;
    struct repair_window w;
    seqs(s, &rcv_nxt, &snd_nxt, &w);
    unsigned room = w.rcv_wup + w.rcv_wnd - rcv_nxt;
    check(room > 16384, "an open receive window");
    sent = 0;

    /* The smallest receive buffer, filled in pieces until the memory it holds is over it. */
    check(setint(s, SOL_SOCKET, SO_RCVBUF, 1) == 0, "SO_RCVBUF");
    int rcvbuf = 0;
    socklen_t il = sizeof rcvbuf;
    check(getsockopt(s, SOL_SOCKET, SO_RCVBUF, &rcvbuf, &il) == 0, "SO_RCVBUF");
    for (int i = 0; i < 8; i++) {
        unsigned mem[SK_MEMINFO_VARS];
        il = sizeof mem;
        check(getsockopt(s, SOL_SOCKET, SO_MEMINFO, mem, &il) == 0, "SO_MEMINFO");
        if ((int)mem[SK_MEMINFO_RMEM_ALLOC] > rcvbuf)
            break;
        send_piece();
    }
    /* From the client's address: a segment a quarter of the window ahead updates the server's
     * send window (snd_wl1 moves there), with the window the client offered. */
    unsigned field = w.snd_wnd >> info(s, 0);
    inject_ack(&ca, &sa, rcv_nxt + (unsigned)sent + room / 4, snd_nxt, field > 0xffff ? 0xffff : (unsigned short)field);
    usleep(5 * 1000);
    /* The next pieces find no memory: the server drops one and closes its window. */
    for (int i = 0; i < 4 && info(c, 1) != 0; i++)
        send_piece();
    usleep(50 * 1000);
    if (info(c, 1) == 0)
        return 1;
    close(c);
    close(s);
    return 0;
}

int main(void)
{
    int tries = 0;
    while (!attempt())
        check(++tries < 20, "the server's window closes");

    ready();
    wait_for_verify(NULL);

    check(setint(s, SOL_SOCKET, SO_RCVBUF, 1 << 20) == 0, "SO_RCVBUF again");
    char b[4096];
    for (long at = 0; at < sent;) {
        long want = sent - at < (long)sizeof b ? sent - at : (long)sizeof b;
        ssize_t n = read(s, b, want);
        check(n > 0, "the server reads what the client wrote");
        for (ssize_t i = 0; i < n; i++)
            check(b[i] == byte_at(at + i), "the client's data in order");
        at += n;
    }
    check(write(s, "reply", 5) == 5, "the server writes");
    size_t got = 0;
    while (got < 5) {
        ssize_t n = read(c, b + got, 5 - got);
        check(n > 0, "the client reads the reply");
        got += n;
    }
    check(!memcmp(b, "reply", 5), "the reply");
    check(write(c, "more", 4) == 4 && read(s, b, 4) == 4 && !memcmp(b, "more", 4), "the client writes on");
    printf("sent %ld in %d tries\n", sent, tries + 1);
    pass();
}
