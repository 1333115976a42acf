/* The calls GASNet makes to libcr (BLCR-REFERENCE.md §6), in its order, with the values it
 * expects; any other value ends it with "gasnet: FAIL ...".
 *
 *   client_gasnet checkpoint IMAGE   checkpoint itself (CR_SCOPE_PROC, target 0,
 *                                    CR_CHKPT_ASYNC_ERR), wait looping on EINTR, then reap: the
 *                                    original goes on, the copy restarted from IMAGE sees
 *                                    CR_ERESTARTED
 *   client_gasnet restart IMAGE      restart IMAGE through cr_request_restart and wait for it:
 *                                    prints the PID cr_reap_restart returns */
#include <errno.h>
#include <fcntl.h>
#include <libcr.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

static void fail(const char *what, int rc)
{
    printf("gasnet: FAIL %s: rc %d errno %d (%s)\n", what, rc, errno, cr_strerror(errno));
    fflush(stdout);
    exit(1);
}

int main(int argc, char **argv)
{
    if (argc != 3)
        return 2;
    if (cr_init() < 0)
        fail("cr_init", -1);
    if (!strcmp(argv[1], "checkpoint")) {
        int fd = open(argv[2], O_WRONLY | O_CREAT | O_TRUNC, 0600);
        if (fd < 0)
            fail("open", fd);
        cr_checkpoint_args_t args;
        cr_initialize_checkpoint_args_t(&args);
        args.cr_scope = CR_SCOPE_PROC;
        args.cr_target = 0;
        args.cr_fd = fd;
        args.cr_flags = CR_CHKPT_ASYNC_ERR;
        cr_checkpoint_handle_t h;
        int rc = cr_request_checkpoint(&args, &h);
        if (rc < 0)
            fail("cr_request_checkpoint", rc);
        do {
            rc = cr_wait_checkpoint(&h, NULL);
        } while (rc < 0 && errno == EINTR);
        if (rc <= 0)
            fail("cr_wait_checkpoint", rc);
        char msg[256];
        int need = cr_log_checkpoint(&h, sizeof msg, msg);
        if (need < 0)
            fail("cr_log_checkpoint", need);
        rc = cr_reap_checkpoint(&h);
        close(fd);
        if (rc >= 0)
            printf("gasnet: checkpointed, reap %d, pid %d\n", rc, (int)getpid());
        else if (errno == CR_ERESTARTED)
            printf("gasnet: restarted, pid %d\n", (int)getpid());
        else
            fail("cr_reap_checkpoint", rc);
        fflush(stdout);
        for (int i = 0; i < 600; i++)
            usleep(100000);
        return 0;
    }
    if (!strcmp(argv[1], "restart")) {
        int fd = open(argv[2], O_RDONLY);
        if (fd < 0)
            fail("open", fd);
        cr_restart_args_t args;
        cr_initialize_restart_args_t(&args);
        args.cr_fd = fd;
        args.cr_flags = CR_RSTRT_ASYNC_ERR | CR_RSTRT_RESTORE_PID | CR_RSTRT_RESTORE_PGID;
        cr_restart_handle_t h;
        int rc = cr_request_restart(&args, &h);
        if (rc < 0)
            fail("cr_request_restart", rc);
        do {
            rc = cr_wait_restart(&h, NULL);
        } while (rc < 0 && errno == EINTR);
        if (rc <= 0)
            fail("cr_wait_restart", rc);
        char *msg = NULL;
        rc = cr_poll_restart_msg(&h, NULL, &msg);
        if (rc < 0) {
            printf("gasnet: restart failed: %s: %s\n", cr_strerror(errno), msg ? msg : "");
            fflush(stdout);
            free(msg);
            return 1;
        }
        free(msg);
        close(fd);
        printf("gasnet: restart reaped: %d\n", rc);
        fflush(stdout);
        /* For the test's sake, what ends under it is reaped: it adopts cr_restart's orphans. */
        prctl(PR_SET_CHILD_SUBREAPER, 1);
        for (int i = 0; i < 600; i++) {
            usleep(100000);
            while (waitpid(-1, NULL, WNOHANG) > 0)
                ;
        }
        return 0;
    }
    return 2;
}
