/* The calls Open MPI's crs/blcr component makes to libcr (BLCR-REFERENCE.md §6), in its order,
 * with the values it expects; any other value ends it with "ompi: FAIL ...".
 *
 *   client_ompi self DIR   checkpoint itself into DIR/ompi_blcr_context.PID (CR_SCOPE_PROC,
 *                          target 0) and poll; the original prints "ompi: continued", the copy
 *                          restarted from the image "ompi: restarted"
 *   client_ompi old DIR    the same through the older calls: cr_request_file, then cr_status
 *                          until idle
 *   client_ompi peer DIR   wait to be checkpointed by another process: the callbacks omit the
 *                          process (the requester is not itself) */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <libcr.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Older Open MPI used the deprecated cr_request_file, as "old" does. */
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"

#if CR_RELEASE_MAJOR <= 0 && CR_RELEASE_MINOR < 6
#error "cr_request_checkpoint needs BLCR 0.6 or later"
#endif

static cr_client_id_t client_id;
static cr_callback_id_t thread_id, signal_id;
static volatile int thread_rc = 12345, signal_rc = 12345, hooks;

static void fail(const char *what, long rc)
{
    printf("ompi: FAIL %s: rc %ld errno %d (%s)\n", what, rc, errno, cr_strerror(errno));
    fflush(stdout);
    exit(1);
}

static int ours(void)
{
    const struct cr_checkpoint_info *info = cr_get_checkpoint_info();
    return info && info->requester == getpid();
}

static int thread_callback(void *arg)
{
    (void)arg;
    thread_rc = ours() ? cr_checkpoint(0) : cr_checkpoint(CR_CHECKPOINT_OMIT);
    return 0;
}

static int signal_callback(void *arg)
{
    (void)arg;
    signal_rc = ours() ? cr_checkpoint(0) : cr_checkpoint(CR_CHECKPOINT_OMIT);
    return 0;
}

static void hook(cr_hook_event_t ev)
{
    hooks |= 1 << ev;
}

static void report(const char *how)
{
    printf("ompi: %s, thread callback %s, signal callback %s, hooks 0x%x\n", how, thread_rc == 0 ? "0" : thread_rc > 0 ? "restart" : "failed", signal_rc == 0 ? "0" : signal_rc > 0 ? "restart" : "failed", hooks);
    fflush(stdout);
}

int main(int argc, char **argv)
{
    if (argc != 3)
        return 2;
    client_id = cr_init();
    if (client_id < 0)
        fail("cr_init", client_id);
    thread_id = cr_register_callback(thread_callback, NULL, CR_THREAD_CONTEXT);
    if (thread_id < 0)
        fail("cr_register_callback thread", thread_id);
    signal_id = cr_register_callback(signal_callback, NULL, CR_SIGNAL_CONTEXT);
    if (signal_id < 0)
        fail("cr_register_callback signal", signal_id);
    /* Debug builds watch the continue and restart hooks. */
    if (cr_register_hook(CR_HOOK_CONT_SIGNAL_CONTEXT, hook) == CR_HOOK_FN_ERROR || cr_register_hook(CR_HOOK_RSTRT_SIGNAL_CONTEXT, hook) == CR_HOOK_FN_ERROR)
        fail("cr_register_hook", -1);
    /* Checkpoints disabled, then enabled again. */
    if (cr_enter_cs(client_id) != 0)
        fail("cr_enter_cs", -1);
    if (cr_leave_cs(client_id) != 0)
        fail("cr_leave_cs", -1);

    char path[4096];
    snprintf(path, sizeof path, "%s/ompi_blcr_context.%d", argv[2], (int)getpid());
    if (!strcmp(argv[1], "self")) {
        int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_LARGEFILE, 0600);
        if (fd < 0)
            fail("open", fd);
        cr_checkpoint_args_t args;
        cr_initialize_checkpoint_args_t(&args);
        args.cr_fd = fd;
        args.cr_scope = CR_SCOPE_PROC;
        args.cr_target = 0;
        args.cr_signal = 0;
        cr_checkpoint_handle_t h;
        int rc = cr_request_checkpoint(&args, &h);
        if (rc < 0)
            fail("cr_request_checkpoint", rc);
        int restarted = 0;
        for (;;) {
            rc = cr_poll_checkpoint(&h, NULL);
            if (rc < 0) {
                if (rc == CR_POLL_CHKPT_ERR_POST && errno == CR_ERESTARTED) {
                    restarted = 1;
                    break;
                }
                if (errno == EINTR)
                    continue;
                fail("cr_poll_checkpoint", rc);
            }
            if (rc == 0)
                continue;
            break;
        }
        close(fd);
        report(restarted ? "restarted" : "continued");
    } else if (!strcmp(argv[1], "old")) {
        cr_request_file(path);
        int st;
        while ((st = cr_status()) != CR_STATE_IDLE) {
            if (st < 0)
                fail("cr_status", st);
            usleep(10000);
        }
        report(thread_rc > 0 ? "restarted" : "continued");
    } else if (!strcmp(argv[1], "peer")) {
        printf("ompi: ready\n");
        fflush(stdout);
        for (int i = 0; i < 600 && thread_rc == 12345; i++)
            usleep(100000);
        printf("ompi: peer checkpoint, thread callback %s\n", thread_rc == -CR_EOMITTED ? "-CR_EOMITTED" : "unexpected");
        fflush(stdout);
    } else {
        return 2;
    }
    /* Finalize: the callbacks are disabled. */
    if (cr_replace_callback(thread_id, NULL, NULL, CR_THREAD_CONTEXT) != 0 || cr_replace_callback(signal_id, NULL, NULL, CR_SIGNAL_CONTEXT) != 0)
        fail("cr_replace_callback", -1);
    printf("ompi: finalized\n");
    fflush(stdout);
    return 0;
}
