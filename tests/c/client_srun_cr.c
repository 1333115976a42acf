/* The calls SLURM's srun_cr makes to libcr (BLCR-REFERENCE.md §6), in its order: it runs srun
 * under "cr_run --omit" (so srun is left out of every checkpoint), and its checkpoint callback
 * finds the image's directory in cr_get_checkpoint_info()->dest; it cannot let itself be
 * checkpointed without one (CR_CHECKPOINT_PERM_FAILURE). After a restart it reads
 * cr_get_restart_info()->src.
 *
 *   client_srun_cr CR_RUN SRUN [ARGS...] */
#include <errno.h>
#include <libcr.h>
#include <libgen.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

static cr_client_id_t cr_id;
static pid_t srun_pid;

static int cr_callback(void *unused)
{
    (void)unused;
    const struct cr_checkpoint_info *ck_info = cr_get_checkpoint_info();
    int rc;
    if (ck_info && ck_info->dest && ck_info->dest[0]) {
        char dest[4096];
        snprintf(dest, sizeof dest, "%s", ck_info->dest);
        printf("srun_cr: step images go to %s\n", dirname(dest));
        fflush(stdout);
        rc = cr_checkpoint(CR_CHECKPOINT_READY);
    } else {
        printf("srun_cr: no directory for the step images\n");
        fflush(stdout);
        rc = cr_checkpoint(CR_CHECKPOINT_PERM_FAILURE);
    }
    if (rc < 0) {
        printf("srun_cr: checkpoint failed: %s\n", cr_strerror(-rc));
    } else if (rc == 0) {
        printf("srun_cr: continuing\n");
    } else {
        const struct cr_restart_info *ri = cr_get_restart_info();
        printf("srun_cr: restarted from %s\n", ri && ri->src ? ri->src : "(none)");
    }
    fflush(stdout);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc < 3)
        return 2;
    cr_id = cr_init();
    if (cr_id < 0) {
        printf("srun_cr: FAIL cr_init: %s\n", cr_strerror(errno));
        return 1;
    }
    if (cr_register_callback(cr_callback, NULL, CR_THREAD_CONTEXT) < 0) {
        printf("srun_cr: FAIL cr_register_callback: %s\n", cr_strerror(errno));
        return 1;
    }
    /* No checkpoint while srun is being started. */
    if (cr_enter_cs(cr_id) != 0) {
        printf("srun_cr: FAIL cr_enter_cs\n");
        return 1;
    }
    srun_pid = fork();
    if (srun_pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        char *args[64];
        int n = 0;
        args[n++] = "cr_run";
        args[n++] = "--omit";
        for (int i = 2; i < argc && n < 63; i++)
            args[n++] = argv[i];
        args[n] = NULL;
        execv(argv[1], args);
        _exit(127);
    }
    if (cr_leave_cs(cr_id) != 0) {
        printf("srun_cr: FAIL cr_leave_cs\n");
        return 1;
    }
    printf("srun_cr: ready, pid %d, srun %d\n", (int)getpid(), (int)srun_pid);
    fflush(stdout);
    for (int i = 0; i < 600; i++) {
        usleep(100000);
        if (srun_pid > 0 && waitpid(srun_pid, NULL, WNOHANG) == srun_pid) {
            printf("srun_cr: srun ended\n");
            fflush(stdout);
            srun_pid = -1;
        }
    }
    return 0;
}
