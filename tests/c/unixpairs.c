/* Connected unix socket pairs whose two ends are in the checkpoint: a stream pair with bytes
 * queued both ways, a datagram pair with three datagrams queued (their boundaries matter), a
 * seqpacket pair one end of which was shut down for writing, a stream connection accepted
 * from a listener of the process, a stream pair shared with a forked child that writes
 * into it (the child is in the checkpoint too), and a stream and a seqpacket socket whose
 * other end was closed after sending (they read what was sent, then end of file). After restart everything queued is read back
 * in order with its boundaries, the shut-down end still reads end of file, and every pair
 * still carries new data both ways. */
#include <errno.h>
#include <stddef.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include "prog.h"

static int st[2], dg[2], sp[2], cl, ac, ch[2], orph[2], orphsp[2];

static void readback(int fd, const char *want, const char *what)
{
    char b[64] = {0};
    size_t n = strlen(want);
    check(read(fd, b, n) == (ssize_t)n && !memcmp(b, want, n), what);
}

static void both_ways(int a, int b, const char *what)
{
    check(write(a, "ab", 2) == 2 && write(b, "ba", 2) == 2, what);
    readback(b, "ab", what);
    readback(a, "ba", what);
}

int main(int argc, char **argv)
{
    if (argc < 2)
        return 2;
    check(socketpair(AF_UNIX, SOCK_STREAM, 0, st) == 0 && socketpair(AF_UNIX, SOCK_DGRAM, 0, dg) == 0 && socketpair(AF_UNIX, SOCK_SEQPACKET, 0, sp) == 0, "socketpairs");
    check(write(st[0], "to one", 6) == 6 && write(st[1], "to zero", 7) == 7, "stream data queued both ways");
    check(send(dg[0], "a", 1, 0) == 1 && send(dg[0], "bb", 2, 0) == 2 && send(dg[0], "ccc", 3, 0) == 3, "datagrams queued");
    check(send(sp[0], "last", 4, 0) == 4 && shutdown(sp[0], SHUT_WR) == 0, "a seqpacket end shut down after a message");

    struct sockaddr_un a = {.sun_family = AF_UNIX};
    snprintf(a.sun_path, sizeof a.sun_path, "%s/pairs.sock", argv[1]);
    int l = socket(AF_UNIX, SOCK_STREAM, 0);
    check(l >= 0 && bind(l, (struct sockaddr *)&a, sizeof a) == 0 && listen(l, 1) == 0, "a listener");
    cl = socket(AF_UNIX, SOCK_STREAM, 0);
    check(connect(cl, (struct sockaddr *)&a, sizeof a) == 0, "connecting");
    ac = accept(l, NULL, NULL);
    check(ac >= 0, "accepting");
    check(write(cl, "hello", 5) == 5, "data queued on the accepted connection");

    check(socketpair(AF_UNIX, SOCK_STREAM, 0, ch) == 0, "a pair for the child");
    pid_t c = fork();
    if (c == 0) {
        close(ch[0]);
        for (;;) {
            char b;
            if (read(ch[1], &b, 1) != 1)
                _exit(0);
            if (write(ch[1], &b, 1) != 1) /* echoes */
                _exit(1);
        }
    }
    close(ch[1]);
    check(write(ch[0], "e", 1) == 1, "to the child");
    readback(ch[0], "e", "the child echoes before");

    check(socketpair(AF_UNIX, SOCK_STREAM, 0, orph) == 0 && write(orph[1], "last words", 10) == 10 && close(orph[1]) == 0, "a stream end closed after sending");
    check(socketpair(AF_UNIX, SOCK_SEQPACKET, 0, orphsp) == 0 && send(orphsp[1], "one", 3, 0) == 3 && send(orphsp[1], "two", 3, 0) == 3 && close(orphsp[1]) == 0, "a seqpacket end closed after sending");
    signal(SIGPIPE, SIG_IGN);

    ready();
    wait_for_verify(NULL);

    readback(st[1], "to one", "stream data queued for end 1");
    readback(st[0], "to zero", "stream data queued for end 0");
    both_ways(st[0], st[1], "the stream pair carries new data");
    char b[8];
    check(recv(dg[1], b, sizeof b, 0) == 1 && recv(dg[1], b, sizeof b, 0) == 2 && recv(dg[1], b, sizeof b, 0) == 3 && b[2] == 'c', "three datagrams with their boundaries");
    both_ways(dg[0], dg[1], "the datagram pair carries new data");
    check(recv(sp[1], b, sizeof b, 0) == 4 && !memcmp(b, "last", 4), "the message sent before the shutdown");
    check(recv(sp[1], b, sizeof b, MSG_DONTWAIT) == 0, "then end of file: the other end was shut down for writing");
    check(send(sp[1], "x", 1, 0) == 1 && recv(sp[0], b, sizeof b, 0) == 1, "the other way still works");
    readback(ac, "hello", "data queued on the accepted connection");
    both_ways(cl, ac, "the accepted connection carries new data");
    readback(orph[0], "last words", "what the closed end had sent");
    check(read(orph[0], b, sizeof b) == 0, "then end of file");
    check(write(orph[0], "x", 1) < 0 && errno == EPIPE, "and no one to write to");
    check(recv(orphsp[0], b, sizeof b, 0) == 3 && !memcmp(b, "one", 3) && recv(orphsp[0], b, sizeof b, 0) == 3 && !memcmp(b, "two", 3), "the closed seqpacket end's messages");
    check(recv(orphsp[0], b, sizeof b, 0) == 0, "then end of file (seqpacket)");
    check(write(ch[0], "f", 1) == 1, "to the child after the restart");
    readback(ch[0], "f", "the child echoes after the restart");
    close(ch[0]);
    int s = 0;
    check(waitpid(c, &s, 0) == c && WIFEXITED(s) && WEXITSTATUS(s) == 0, "the child ends at end of file");
    pass();
}
