/* A unix datagram socket connected to a socket outside the checkpoint, bound at PATH (the
 * test holds it): saved with --ext-unix-sk and connected again to PATH at restart. It sends
 * "before" when ready and "after" once restarted; its peer's address is the same.
 *
 *   unixext PATH */
#include <sys/socket.h>
#include <sys/un.h>
#include "prog.h"

int main(int argc, char **argv)
{
    check(argc == 2, "usage: unixext PATH");
    struct sockaddr_un a = {.sun_family = AF_UNIX};
    snprintf(a.sun_path, sizeof a.sun_path, "%s", argv[1]);
    int s = socket(AF_UNIX, SOCK_DGRAM, 0);
    check(s >= 0 && connect(s, (struct sockaddr *)&a, sizeof a) == 0, "connecting to the socket outside");
    check(send(s, "before", 6, 0) == 6, "sending before the checkpoint");

    ready();
    wait_for_verify(NULL);

    struct sockaddr_un p;
    socklen_t l = sizeof p;
    memset(&p, 0, sizeof p);
    check(getpeername(s, (struct sockaddr *)&p, &l) == 0 && !strcmp(p.sun_path, argv[1]), "connected to the same address");
    check(send(s, "after", 5, 0) == 5, "sending after the restart");
    pass();
}
