/* The calls MPICH's hydra proxy makes to libcr (BLCR-REFERENCE.md §6), in its order, with the
 * return values it expects; any other value ends it with "hydra: FAIL ...".
 *
 *   client_hydra checkpoint DIR N NEMESIS   start N ranks (NEMESIS RANK DIR), then on SIGUSR1
 *                                           checkpoint its own tree (itself omitted) into
 *                                           DIR/context-num0-PGID-0, stop the ranks and exit
 *   client_hydra restart DIR IMAGE N         write the ranks' env files, ask for the restart
 *                                           and do not wait for it (as hydra) */
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

static volatile sig_atomic_t go;
static volatile int cb_rc = 12345;

static void fail(const char *what, int rc)
{
    printf("hydra: FAIL %s: rc %d errno %d (%s)\n", what, rc, errno, cr_strerror(errno));
    fflush(stdout);
    exit(1);
}

/* The proxy itself is not checkpointed: its callback omits it. */
static int ckpoint_cb(void *arg)
{
    int rc = cr_checkpoint(CR_CHECKPOINT_OMIT);
    *(volatile int *)arg = rc;
    return 0;
}

static void on_usr1(int sig)
{
    (void)sig;
    go = 1;
}

int main(int argc, char **argv)
{
    if (argc < 4)
        return 2;
    const char *dir = argv[2];
    if (!strcmp(argv[1], "checkpoint") && argc == 5) {
        int n = atoi(argv[3]);
        signal(SIGUSR1, on_usr1);
        int id = cr_init();
        if (id < 0)
            fail("cr_init", id);
        int cb = cr_register_callback(ckpoint_cb, (void *)&cb_rc, CR_SIGNAL_CONTEXT);
        if (cb < 0)
            fail("cr_register_callback", cb);
        pid_t ranks[16];
        for (int i = 0; i < n && i < 16; i++) {
            ranks[i] = fork();
            if (ranks[i] == 0) {
                char rank[16];
                snprintf(rank, sizeof rank, "%d", i);
                execl(argv[4], argv[4], rank, dir, (char *)NULL);
                _exit(127);
            }
        }
        printf("hydra: proxy %d started %d ranks\n", (int)getpid(), n);
        fflush(stdout);
        while (!go)
            pause();
        char path[4096];
        snprintf(path, sizeof path, "%s/context-num0-%d-0", dir, (int)getpgrp());
        unlink(path);
        int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
        if (fd < 0)
            fail("open", fd);
        cr_checkpoint_args_t args;
        int rc = cr_initialize_checkpoint_args_t(&args);
        if (rc < 0)
            fail("cr_initialize_checkpoint_args_t", rc);
        args.cr_fd = fd;
        args.cr_scope = CR_SCOPE_TREE;
        /* cr_target left 0: the proxy's own tree. */
        cr_checkpoint_handle_t h;
        rc = cr_request_checkpoint(&args, &h);
        if (rc < 0)
            fail("cr_request_checkpoint", rc);
        for (;;) {
            rc = cr_poll_checkpoint(&h, NULL);
            if (rc < 0) {
                if (rc == CR_POLL_CHKPT_ERR_POST && errno == CR_ERESTARTED)
                    fail("cr_poll_checkpoint: restarted", rc);
                if (errno == EINTR)
                    continue;
                fail("cr_poll_checkpoint", rc);
            }
            if (rc == 0)
                fail("cr_poll_checkpoint returned 0", rc);
            break;
        }
        close(fd);
        if (cb_rc != -CR_EOMITTED)
            fail("cr_checkpoint(CR_CHECKPOINT_OMIT) in the callback", cb_rc);
        printf("hydra: checkpoint done (poll %d), callback got -CR_EOMITTED, image %s\n", rc, path);
        fflush(stdout);
        for (int i = 0; i < n && i < 16; i++) {
            kill(ranks[i], SIGKILL);
            waitpid(ranks[i], NULL, 0);
        }
        printf("hydra: ranks stopped\n");
        fflush(stdout);
        return 0;
    }
    if (!strcmp(argv[1], "restart") && argc == 5) {
        int n = atoi(argv[4]);
        for (int i = 0; i < n; i++) {
            char env[4096];
            snprintf(env, sizeof env, "%s/hydra-env-file-%d:%d", dir, (int)getpid(), i);
            FILE *f = fopen(env, "w");
            if (!f)
                fail("env file", -1);
            fprintf(f, "PMI_RANK=%d\n", i);
            fclose(f);
        }
        int fd = open(argv[3], O_RDONLY);
        if (fd < 0)
            fail("open image", fd);
        cr_restart_args_t args;
        int rc = cr_initialize_restart_args_t(&args);
        if (rc < 0)
            fail("cr_initialize_restart_args_t", rc);
        args.cr_fd = fd;
        args.cr_flags = CR_RSTRT_RESTORE_PID;
        cr_restart_handle_t h;
        rc = cr_request_restart(&args, &h);
        if (rc < 0)
            fail("cr_request_restart", rc);
        close(fd);
        printf("hydra: restart requested by %d\n", (int)getpid());
        fflush(stdout);
        /* hydra neither waits for nor reaps the restart: the ranks report on their own. (For
         * the test's sake, what ends under it is reaped: it adopts cr_restart's orphans.) */
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
