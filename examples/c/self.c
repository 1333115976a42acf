/* A program that checkpoints itself: cr_request_checkpoint on its own PID, then polls. The
 * original sees the request done; the copy restarted from the image sees CR_ERESTARTED.
 *
 *   ./self IMAGE      # prints "checkpointed" and goes on
 *   cr_restart IMAGE  # prints "restarted"
 */
#include <errno.h>
#include <fcntl.h>
#include <libcr.h>
#include <stdio.h>
#include <unistd.h>

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: self IMAGE\n");
        return 2;
    }
    if (cr_init() < 0) {
        perror("cr_init");
        return 1;
    }
    int fd = open(argv[1], O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) {
        perror(argv[1]);
        return 1;
    }
    cr_checkpoint_args_t args;
    cr_initialize_checkpoint_args_t(&args);
    args.cr_scope = CR_SCOPE_PROC;
    args.cr_target = 0;
    args.cr_fd = fd;
    cr_checkpoint_handle_t handle;
    long counter = 41;
    if (cr_request_checkpoint(&args, &handle) < 0) {
        perror("cr_request_checkpoint");
        return 1;
    }
    int rc;
    do {
        rc = cr_poll_checkpoint(&handle, NULL);
    } while (rc < 0 && rc != CR_POLL_CHKPT_ERR_POST && errno == EINTR);
    counter++;
    if (rc == CR_POLL_CHKPT_ERR_POST && errno == CR_ERESTARTED) {
        printf("restarted: counter %ld (pid %d)\n", counter, getpid());
    } else if (rc > 0) {
        printf("checkpointed: counter %ld\n", counter);
    } else {
        printf("checkpoint failed: rc %d: %s\n", rc, cr_strerror(errno));
        return 1;
    }
    close(fd);
    fflush(stdout);
    return 0;
}
