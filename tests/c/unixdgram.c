/* Unix datagram servers and their clients, and socket names since removed. In DIR/gone/: a
 * server with a client, then a second server bound to the same name (the first one's file
 * removed in between) with a client in a forked child, then the directory removed. In DIR: a
 * server whose file was replaced by a regular file, with a client; a listener whose file was
 * removed; a datagram socket bound in DIR and connected to itself. After restart every client
 * reaches its server, each server still reports its
 * address, and the file system is as it was: no DIR/gone, the regular file still there with its
 * contents, no socket file left. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include "prog.h"

static struct sockaddr_un name(const char *dir, const char *file)
{
    struct sockaddr_un a = {.sun_family = AF_UNIX};
    snprintf(a.sun_path, sizeof a.sun_path, "%s/%s", dir, file);
    return a;
}

static int bound(int type, struct sockaddr_un *a)
{
    int s = socket(AF_UNIX, type, 0);
    check(s >= 0 && bind(s, (struct sockaddr *)a, sizeof *a) == 0, "binding a unix socket");
    return s;
}

static int client_of(struct sockaddr_un *a)
{
    int s = socket(AF_UNIX, SOCK_DGRAM, 0);
    check(s >= 0 && connect(s, (struct sockaddr *)a, sizeof *a) == 0, "connecting a client");
    return s;
}

static void reaches(int client, int server, const char *msg, const char *what)
{
    char b[32] = {0};
    check(send(client, msg, strlen(msg), 0) == (ssize_t)strlen(msg), what);
    check(recv(server, b, sizeof b, 0) == (ssize_t)strlen(msg) && !strcmp(b, msg), what);
}

static void named(int s, struct sockaddr_un *a, const char *what)
{
    struct sockaddr_un got;
    socklen_t l = sizeof got;
    check(getsockname(s, (struct sockaddr *)&got, &l) == 0 && !strcmp(got.sun_path, a->sun_path), what);
}

int main(int argc, char **argv)
{
    if (argc < 2)
        return 2;
    char gone[4096];
    snprintf(gone, sizeof gone, "%s/gone", argv[1]);
    check(mkdir(gone, 0755) == 0, "a directory");
    struct sockaddr_un g = name(gone, "srv");
    int s1 = bound(SOCK_DGRAM, &g);
    int c1 = client_of(&g);
    check(unlink(g.sun_path) == 0, "removing the first server's file");
    int s2 = bound(SOCK_DGRAM, &g);
    int ctl[2];
    check(pipe(ctl) == 0, "a pipe");
    pid_t child = fork();
    if (child == 0) {
        /* A client in another process: sends once it reads a byte, then ends. */
        int c = client_of(&g);
        char b;
        close(ctl[1]);
        if (read(ctl[0], &b, 1) != 1)
            _exit(3);
        _exit(send(c, "from the child", 14, 0) == 14 ? 0 : 1);
    }
    close(ctl[0]);
    usleep(100 * 1000);
    check(unlink(g.sun_path) == 0 && rmdir(gone) == 0, "removing the second server's file and the directory");

    struct sockaddr_un r = name(argv[1], "replaced");
    int s3 = bound(SOCK_DGRAM, &r);
    int c3 = client_of(&r);
    check(unlink(r.sun_path) == 0, "removing the third server's file");
    int f = open(r.sun_path, O_CREAT | O_WRONLY, 0600);
    check(f >= 0 && write(f, "a file", 6) == 6 && close(f) == 0, "a regular file in its place");

    struct sockaddr_un me = name(argv[1], "itself");
    int self = bound(SOCK_DGRAM, &me);
    check(connect(self, (struct sockaddr *)&me, sizeof me) == 0, "a socket connected to itself");

    struct sockaddr_un ln = name(argv[1], "listener");
    int l = bound(SOCK_STREAM, &ln);
    check(listen(l, 4) == 0 && unlink(ln.sun_path) == 0, "a listener whose file is removed");

    ready();
    wait_for_verify(NULL);

    reaches(c1, s1, "one", "the first client reaches the first server");
    check(write(ctl[1], "g", 1) == 1, "waking the child");
    char b[32] = {0};
    check(recv(s2, b, sizeof b, 0) == 14 && !strcmp(b, "from the child"), "the child's client reaches the second server");
    int st = 0;
    check(waitpid(child, &st, 0) == child && WIFEXITED(st) && WEXITSTATUS(st) == 0, "the child sent");
    reaches(c3, s3, "three", "the third client reaches its server");
    reaches(self, self, "me", "the socket connected to itself reaches itself");
    named(self, &me, "its address");
    named(s1, &g, "the first server's address");
    named(s2, &g, "the second server's address");
    named(s3, &r, "the third server's address");
    named(l, &ln, "the listener's address");
    struct stat sb;
    check(stat(gone, &sb) != 0 && errno == ENOENT, "the removed directory is still gone");
    char c[16] = {0};
    f = open(r.sun_path, O_RDONLY);
    check(f >= 0 && read(f, c, sizeof c) == 6 && !strcmp(c, "a file"), "the regular file is still there");
    check(stat(ln.sun_path, &sb) != 0 && errno == ENOENT, "the listener's file is still gone");
    DIR *d = opendir(argv[1]);
    check(d != NULL, "listing the directory");
    for (struct dirent *e; (e = readdir(d));)
        check(strncmp(e->d_name, ".crest", 6) != 0, "nothing of the restore is left in the directory");
    closedir(d);
    pass();
}
