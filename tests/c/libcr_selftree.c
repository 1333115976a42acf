/* A program that checkpoints itself with a child that uses libcr too, for tests/libcr.rs
 * (the Yama ptrace_scope test runs it as an unprivileged user):
 *   libcr_selftree proc IMAGE   cr_request_checkpoint(CR_SCOPE_PROC, 0): itself
 *   libcr_selftree tree IMAGE   cr_request_checkpoint(CR_SCOPE_TREE, 0): itself and its child
 * The child registers a thread-context callback ("child: continuing" once checkpointed). The
 * parent prints "parent: checkpointed" or "parent: failed ...", then "child PID" and runs for
 * 60 s, reaping the child when it ends ("parent: child ended"). */
#include <errno.h>
#include <fcntl.h>
#include <libcr.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

static int child_cb(void *arg)
{
    (void)arg;
    int rc = cr_checkpoint(CR_CHECKPOINT_READY);
    printf(rc == 0 ? "child: continuing\n" : rc > 0 ? "child: restarted\n" : "child: failed\n");
    fflush(stdout);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: libcr_selftree proc|tree IMAGE\n");
        return 2;
    }
    int ready[2];
    if (pipe(ready) < 0)
        return 1;
    pid_t child = fork();
    if (child == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        close(ready[0]);
        cr_init();
        cr_register_callback(child_cb, NULL, CR_THREAD_CONTEXT);
        if (write(ready[1], "r", 1) != 1)
            _exit(1);
        close(ready[1]);
        for (int i = 0; i < 600; i++)
            usleep(100000);
        _exit(0);
    }
    close(ready[1]);
    char b;
    if (read(ready[0], &b, 1) != 1)
        return 1;
    close(ready[0]);
    if (cr_init() < 0) {
        perror("cr_init");
        return 1;
    }
    int fd = open(argv[2], O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) {
        perror(argv[2]);
        return 1;
    }
    cr_checkpoint_args_t args;
    cr_initialize_checkpoint_args_t(&args);
    args.cr_scope = !strcmp(argv[1], "tree") ? CR_SCOPE_TREE : CR_SCOPE_PROC;
    args.cr_fd = fd;
    cr_checkpoint_handle_t handle;
    if (cr_request_checkpoint(&args, &handle) < 0) {
        perror("cr_request_checkpoint");
        return 1;
    }
    int rc;
    char *msg = NULL;
    do {
        rc = cr_poll_checkpoint_msg(&handle, NULL, &msg);
    } while (rc < 0 && rc != CR_POLL_CHKPT_ERR_POST && errno == EINTR);
    if (rc > 0)
        printf("parent: checkpointed\n");
    else if (rc == CR_POLL_CHKPT_ERR_POST && errno == CR_ERESTARTED)
        printf("parent: restarted\n");
    else
        printf("parent: failed rc %d: %s: %s\n", rc, cr_strerror(errno), msg ? msg : "");
    close(fd);
    printf("child %d\n", (int)child);
    fflush(stdout);
    for (int i = 0; i < 600; i++) {
        usleep(100000);
        if (child > 0 && waitpid(child, NULL, WNOHANG) == child) {
            printf("parent: child ended\n");
            fflush(stdout);
            child = -1;
        }
    }
    return 0;
}
