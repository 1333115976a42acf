/* A TCP connection whose peer is not checkpointed.
 *
 *   tcppeer server FILE [6]  listens on loopback (IPv6 with "6"), writes its port to FILE,
 *                            takes one client, sends it "welcome\n", then answers each line
 *                            "N\n" with "echo N\n" until the line "quit\n", answered "bye\n";
 *                            exits 0 if the connection never failed (no reset, no early end
 *                            of file), 1 otherwise.
 *   tcppeer client PORT [6]  connects, exchanges 5 lines, sends one more whose answer it does
 *                            not read, says ready; on SIGUSR2 (after its restart) reads that
 *                            answer, exchanges 20 more
 *                            lines on the same connection, says quit and checks the bye.
 * The client is checkpointed with --kill and restarted while the server waits: the server
 * must not notice. With "run" as the last word, the client exchanges a line each tick, so a
 * checkpoint with --run happens in the middle of the conversation. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include "prog.h"

static FILE *conn_in;
static int conn;
static int n_sent;

static void line(int fd, const char *s)
{
    size_t n = strlen(s);
    check(write(fd, s, n) == (ssize_t)n, "writing a line");
}

static void exchange(void)
{
    char b[64], want[64];
    snprintf(b, sizeof b, "%d\n", n_sent);
    line(conn, b);
    check(fgets(b, sizeof b, conn_in) != NULL, "reading the echo");
    snprintf(want, sizeof want, "echo %d\n", n_sent);
    check(!strcmp(b, want), "the echo of the line sent");
    n_sent++;
}

static void tick(long n)
{
    (void)n;
    exchange();
}

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
    check(l >= 0 && bind(l, (struct sockaddr *)&ss, len) == 0 && listen(l, 1) == 0, "server: listening");
    check(getsockname(l, (struct sockaddr *)&ss, &len) == 0, "server: its address");
    int port = ntohs(six ? ((struct sockaddr_in6 *)&ss)->sin6_port : ((struct sockaddr_in *)&ss)->sin_port);
    char tmp[4096];
    snprintf(tmp, sizeof tmp, "%s.tmp", file);
    FILE *f = fopen(tmp, "w");
    check(f && fprintf(f, "%d\n", port) > 0 && fclose(f) == 0 && rename(tmp, file) == 0, "server: writing its port");
    int c = accept(l, NULL, NULL);
    check(c >= 0, "server: accepting");
    line(c, "welcome\n");
    FILE *in = fdopen(c, "r");
    char b[64];
    int lines = 0;
    for (;;) {
        errno = 0;
        if (!fgets(b, sizeof b, in)) {
            printf("server: the connection ended after %d lines (%s)\n", lines, errno ? strerror(errno) : "end of file");
            return 1;
        }
        if (!strcmp(b, "quit\n")) {
            line(c, "bye\n");
            printf("server: %d lines, then quit\n", lines);
            return 0;
        }
        char out[80];
        snprintf(out, sizeof out, "echo %s", b);
        line(c, out);
        lines++;
    }
}

int main(int argc, char **argv)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (argc < 3)
        return 2;
    int six = argc > 3 && !strcmp(argv[3], "6");
    int run = argc > 3 && !strcmp(argv[argc - 1], "run");
    if (!strcmp(argv[1], "server"))
        return server(argv[2], six);
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof ss);
    socklen_t len;
    if (six) {
        struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;
        a->sin6_family = AF_INET6;
        a->sin6_addr = in6addr_loopback;
        a->sin6_port = htons(atoi(argv[2]));
        len = sizeof *a;
    } else {
        struct sockaddr_in *a = (struct sockaddr_in *)&ss;
        a->sin_family = AF_INET;
        a->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        a->sin_port = htons(atoi(argv[2]));
        len = sizeof *a;
    }
    conn = socket(ss.ss_family, SOCK_STREAM, 0);
    check(conn >= 0 && connect(conn, (struct sockaddr *)&ss, len) == 0, "client: connecting");
    conn_in = fdopen(dup(conn), "r");
    setvbuf(conn_in, NULL, _IONBF, 0);
    char b[64];
    check(fgets(b, sizeof b, conn_in) && !strcmp(b, "welcome\n"), "client: the welcome");
    for (int i = 0; i < 5; i++)
        exchange();
    /* Unless running on, the answer to this line stays unread until after the restart. */
    if (!run)
        line(conn, "pending\n");
    usleep(100 * 1000);
    ready();
    wait_for_verify(run ? tick : NULL);
    if (!run)
        check(fgets(b, sizeof b, conn_in) && !strcmp(b, "echo pending\n"), "client: the answer left unread");
    for (int i = 0; i < 20; i++)
        exchange();
    line(conn, "quit\n");
    check(fgets(b, sizeof b, conn_in) && !strcmp(b, "bye\n"), "client: the bye");
    printf("client: %d lines exchanged\n", n_sent);
    pass();
}
