/* Prints the layouts and constants of libcr.h, and what the library answers, for
 * tests/libcr.rs to compare with the Rust side. */
#include <libcr.h>
#include <stddef.h>
#include <stdio.h>

int main(void)
{
    printf("sizeof cr_checkpoint_args_t %zu\n", sizeof(cr_checkpoint_args_t));
    printf("sizeof cr_restart_args_t %zu\n", sizeof(cr_restart_args_t));
    printf("sizeof cr_checkpoint_info %zu\n", sizeof(struct cr_checkpoint_info));
    printf("sizeof cr_restart_info %zu\n", sizeof(struct cr_restart_info));
    printf("sizeof cr_rstrt_relocate %zu\n", sizeof(struct cr_rstrt_relocate));
    printf("offset cr_checkpoint_args_t.cr_flags %zu\n", offsetof(cr_checkpoint_args_t, cr_flags));
    printf("offset cr_restart_args_t.cr_relocate %zu\n", offsetof(cr_restart_args_t, cr_relocate));
    printf("offset cr_checkpoint_info.scope %zu\n", offsetof(struct cr_checkpoint_info, scope));
    printf("offset cr_restart_info.src %zu\n", offsetof(struct cr_restart_info, src));
    printf("CR_THREAD_CONTEXT %d\nCR_SIGNAL_CONTEXT %d\n", CR_THREAD_CONTEXT, CR_SIGNAL_CONTEXT);
    printf("CR_SIGNUM %d cri_signum %d\n", CR_SIGNUM, cri_signum);
    printf("CR_ETEMPFAIL %d\nCR_ERESTARTED %d\nCR_ENOINIT %d\nCR_MAX_ERRCODE %d\n", CR_ETEMPFAIL, CR_ERESTARTED, CR_ENOINIT, CR_MAX_ERRCODE);
    for (int e = CR_MIN_ERRCODE + 1; e < CR_MAX_ERRCODE; e++)
        printf("strerror %d %s\n", e, cr_strerror(e));
    /* Outside a callback, and before cr_init. */
    printf("checkpoint outside %d\n", cr_checkpoint(CR_CHECKPOINT_READY));
    printf("register before init %d\n", cr_register_callback(NULL, NULL, CR_THREAD_CONTEXT));
    cr_checkpoint_args_t a;
    int r = cr_initialize_checkpoint_args_t(&a);
    printf("init args %d scope %d target %d fd %d\n", r, (int)a.cr_scope, (int)a.cr_target, a.cr_fd);
    int first = cr_init();
    int second = cr_init();
    printf("cr_init %d %d\n", first, second);
    printf("first signal id %#x\n", cr_register_callback(NULL, NULL, CR_SIGNAL_CONTEXT));
    printf("first thread id %#x\n", cr_register_callback(NULL, NULL, CR_THREAD_CONTEXT));
    int tried = cr_tryenter_cs(0);
    int left = cr_leave_cs(0);
    printf("tryenter %d leave %d status %d\n", tried, left, cr_status());
    return 0;
}
