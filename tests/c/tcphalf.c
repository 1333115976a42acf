/* A TCP connection that its peer, not checkpointed, has shut down for writing (the
 * checkpointed side is in CLOSE_WAIT), over IPv4 between an IPv4 server and an IPv6 client
 * socket (addresses ::ffff:127.0.0.1), or IPv6 on both sides with "6".
 *
 *   tcphalf server FILE [6]  listens on loopback, writes its port to FILE, takes one client,
 *                            sends it "welcome\n" and shuts down writing; waits for FILE.go,
 *                            then reads until end of file and exits 0 if it read the client's
 *                            bytes in order, then "after restart N\n" (N: their number).
 *   tcphalf client PORT GO [6]  connects (an IPv6 socket either way), reads "welcome\n" and
 *                            the end of file, writes until the queues are full (the server
 *                            does not read yet), says ready; on SIGUSR2 (after its restart)
 *                            reads end of file again, makes the file GO, writes "after restart
 *                            N\n" and closes. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include "prog.h"

static int server(const char *file, int six)
{
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof ss);
    socklen_t len;
    if (six) {
        struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;
        a->sin6_family = AF_INET6;
        a->sin6_addr = in6addr_loopback;
        len = sizeof *a;
    } else {
        struct sockaddr_in *a = (struct sockaddr_in *)&ss;
        a->sin_family = AF_INET;
        a->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        len = sizeof *a;
    }
    int l = socket(ss.ss_family, SOCK_STREAM, 0);
    check(l >= 0 && bind(l, (struct sockaddr *)&ss, len) == 0 && listen(l, 1) == 0, "listening");
    check(getsockname(l, (struct sockaddr *)&ss, &len) == 0, "the port");
    FILE *f = fopen(file, "w");
    check(f != NULL, "the port file");
    fprintf(f, "%d\n", ntohs(((struct sockaddr_in *)&ss)->sin_port));
    fclose(f);
    int c = accept(l, NULL, NULL);
    check(c >= 0 && write(c, "welcome\n", 8) == 8 && shutdown(c, SHUT_WR) == 0, "welcome, then the end");
    char go[4200];
    snprintf(go, sizeof go, "%s.go", file);
    while (access(go, F_OK) != 0)
        usleep(20 * 1000);
    static char all[64 << 20];
    size_t got = 0;
    for (;;) {
        ssize_t n = read(c, all + got, sizeof all - 1 - got);
        check(n >= 0, "reading the client (no reset)");
        if (n == 0)
            break;
        got += n;
    }
    all[got] = 0;
    char *tail = memmem(all, got, "after restart ", 14);
    check(tail != NULL, "the client's last line");
    long bulk = atol(tail + 14);
    printf("server read %zu bytes, the client says %ld before its last line\n", got, bulk);
    check(tail - all == bulk, "as many bytes as the client wrote before its last line");
    for (long i = 0; i < bulk; i++)
        check(all[i] == (char)(i * 7 % 251), "the client's bytes in order");
    pass();
    return 0;
}

int main(int argc, char **argv)
{
    if (argc < 3)
        return 2;
    int six = !strcmp(argv[argc - 1], "6");
    if (!strcmp(argv[1], "server"))
        return server(argv[2], six);
    if (argc < 4)
        return 2;
    struct sockaddr_in6 a = {.sin6_family = AF_INET6, .sin6_port = htons(atoi(argv[2]))};
    if (six)
        a.sin6_addr = in6addr_loopback;
    else
        inet_pton(AF_INET6, "::ffff:127.0.0.1", &a.sin6_addr);
    int c = socket(AF_INET6, SOCK_STREAM, 0);
    check(c >= 0 && connect(c, (struct sockaddr *)&a, sizeof a) == 0, "connecting");
    char b[16];
    size_t got = 0;
    while (got < 8) {
        ssize_t n = read(c, b + got, 8 - got);
        check(n > 0, "reading the welcome");
        got += n;
    }
    check(!memcmp(b, "welcome\n", 8), "the welcome");
    check(read(c, b, sizeof b) == 0, "then end of file");
    /* Bytes the server does not read yet: its receive queue full, and ours to send. */
    fcntl(c, F_SETFL, O_NONBLOCK);
    long bulk = 0;
    char chunk[4096];
    for (;;) {
        for (int i = 0; i < (int)sizeof chunk; i++)
            chunk[i] = (char)((bulk + i) * 7 % 251);
        ssize_t n = write(c, chunk, sizeof chunk);
        if (n < 0) {
            check(errno == EAGAIN, "filling the queues");
            /* Once the kernel has moved what it could, one byte more, or full. */
            usleep(100 * 1000);
            if (send(c, chunk, 1, MSG_DONTWAIT) != 1)
                break;
            bulk++;
            continue;
        }
        bulk += n;
    }
    printf("queued %ld bytes\n", bulk);
    ready();
    wait_for_verify(NULL);
    check(read(c, b, sizeof b) == 0, "end of file again after the restart");
    fcntl(c, F_SETFL, 0);
    FILE *g = fopen(argv[3], "w");
    check(g != NULL && fclose(g) == 0, "telling the server to read");
    char last[64];
    int n = snprintf(last, sizeof last, "after restart %ld\n", bulk);
    check(write(c, last, n) == n, "writing after the restart");
    close(c);
    pass();
}
