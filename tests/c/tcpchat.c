/* Two processes that talk over TCP without pause, each checking every number it receives.
 *
 *   tcpchat server ADDR PORT STEPS   listens on ADDR:PORT (IPv4), takes one client;
 *   tcpchat client ADDR PORT STEPS   connects to ADDR:PORT.
 *
 * Each step, the server sends "N\n" and the client answers "N\n" with the same N; each side
 * checks that the number it reads is the next one, so a byte lost or repeated on the
 * connection (a checkpoint that took the two ends at different instants, a restart that let
 * one end run before the other was back) ends in FAIL. Each prints "step N" every 100 steps
 * and PASS after STEPS steps, then exits 0. Meant to run on two hosts (network namespaces
 * in the tests) checkpointed together by cr_coord. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include "prog.h"

static void send_line(int fd, long n)
{
    char b[32];
    int len = snprintf(b, sizeof b, "%ld\n", n);
    check(write(fd, b, len) == len, "writing a number");
}

static long read_line(FILE *in)
{
    char b[32];
    check(fgets(b, sizeof b, in) != NULL, "reading a number: the connection ended");
    return strtol(b, NULL, 10);
}

int main(int argc, char **argv)
{
    check(argc == 5, "usage: tcpchat server|client ADDR PORT STEPS");
    int server = !strcmp(argv[1], "server");
    long steps = atol(argv[4]);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(atoi(argv[3]))};
    check(inet_pton(AF_INET, argv[2], &a.sin_addr) == 1, "an IPv4 address");
    int fd;
    if (server) {
        int l = socket(AF_INET, SOCK_STREAM, 0), one = 1;
        check(l >= 0 && setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) == 0, "a listening socket");
        check(bind(l, (struct sockaddr *)&a, sizeof a) == 0 && listen(l, 1) == 0, "listening");
        printf("listening\n");
        fflush(stdout);
        fd = accept(l, NULL, NULL);
        check(fd >= 0, "accepting the client");
        close(l);
    } else {
        fd = socket(AF_INET, SOCK_STREAM, 0);
        int tries = 0;
        while (connect(fd, (struct sockaddr *)&a, sizeof a) != 0) {
            check(++tries < 200, "connecting to the server");
            usleep(20000);
        }
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    FILE *in = fdopen(dup(fd), "r");
    check(in != NULL, "fdopen");
    ready();
    for (long n = 0; n < steps; n++) {
        if (server) {
            send_line(fd, n);
            check(read_line(in) == n, "the client answered the number sent");
        } else {
            check(read_line(in) == n, "the server sent the next number");
            send_line(fd, n);
        }
        if (n % 100 == 0) {
            printf("step %ld\n", n);
            fflush(stdout);
        }
        usleep(2000);
    }
    pass();
}
