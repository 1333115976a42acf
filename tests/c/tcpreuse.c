/* A server's TCP connection keeps its SO_REUSEADDR across a checkpoint that lets the process
 * run on: a listener with SO_REUSEADDR, a connection accepted from it (which inherits the
 * setting) and a client without it. After SIGUSR2 (a checkpoint with --run was taken): each
 * socket has its setting as before, the connection still carries data, and once the server
 * closes its side first (its end lingers in TIME_WAIT) and its listener, a new listener binds
 * the same port again, as a server restarted on its port does. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include "prog.h"

static int reuse_of(int fd)
{
    int v = -1;
    socklen_t n = sizeof v;
    check(getsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &v, &n) == 0, "getsockopt SO_REUSEADDR");
    return v;
}

int main(void)
{
    int one = 1;
    int l = socket(AF_INET, SOCK_STREAM, 0);
    check(l >= 0 && setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) == 0, "listener");
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t al = sizeof a;
    check(bind(l, (struct sockaddr *)&a, sizeof a) == 0 && listen(l, 4) == 0 && getsockname(l, (struct sockaddr *)&a, &al) == 0, "bind and listen");
    int c = socket(AF_INET, SOCK_STREAM, 0);
    check(c >= 0 && connect(c, (struct sockaddr *)&a, sizeof a) == 0, "connect");
    int s = accept(l, NULL, NULL);
    check(s >= 0, "accept");
    check(reuse_of(l) == 1 && reuse_of(s) == 1 && reuse_of(c) == 0, "SO_REUSEADDR as set, before");
    ready();
    wait_for_verify(NULL);
    check(reuse_of(l) == 1, "the listener keeps SO_REUSEADDR");
    check(reuse_of(s) == 1, "the accepted connection keeps SO_REUSEADDR");
    check(reuse_of(c) == 0, "the client keeps its SO_REUSEADDR off");
    char b = 0;
    check(write(c, "x", 1) == 1 && read(s, &b, 1) == 1 && b == 'x', "the connection carries data");
    /* The server closes first: its end lingers in TIME_WAIT on the listener's port. */
    close(s);
    check(read(c, &b, 1) == 0, "the client reads the server's end");
    close(c);
    close(l);
    int l2 = socket(AF_INET, SOCK_STREAM, 0);
    check(l2 >= 0 && setsockopt(l2, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) == 0, "a new listener");
    check(bind(l2, (struct sockaddr *)&a, sizeof a) == 0, "a new listener binds the port again while the old connection lingers");
    pass();
}
