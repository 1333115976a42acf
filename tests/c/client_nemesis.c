/* The calls MPICH's nemesis channel makes to libcr (BLCR-REFERENCE.md §6), in its order: one
 * rank, started by client_hydra as NEMESIS RANK DIR. After a restart it finds its env file by
 * the requester's PID (the hydra proxy that asked for the restart). */
#include <errno.h>
#include <libcr.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int rank;
static const char *dir;

static int ckpt_cb(void *arg)
{
    (void)arg;
    int rc = cr_checkpoint(0);
    if (rc < 0) {
        printf("nemesis %d: FAIL cr_checkpoint %d\n", rank, rc);
    } else if (rc > 0) {
        const struct cr_restart_info *ri = cr_get_restart_info();
        if (!ri) {
            printf("nemesis %d: FAIL cr_get_restart_info\n", rank);
        } else {
            char path[4096], line[256] = "";
            snprintf(path, sizeof path, "%s/hydra-env-file-%d:%d", dir, (int)ri->requester, rank);
            FILE *f = fopen(path, "r");
            if (f) {
                if (!fgets(line, sizeof line, f))
                    line[0] = 0;
                fclose(f);
            }
            line[strcspn(line, "\n")] = 0;
            printf("nemesis %d: restarted, requester %d, env %s\n", rank, (int)ri->requester, f ? line : "MISSING");
        }
    } else {
        printf("nemesis %d: continuing\n", rank);
    }
    fflush(stdout);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc != 3)
        return 2;
    rank = atoi(argv[1]);
    dir = argv[2];
    int id = cr_init();
    if (id < 0 && errno == ENOSYS) {
        printf("nemesis %d: FAIL cr_init\n", rank);
        return 1;
    }
    if (cr_register_callback(ckpt_cb, NULL, CR_THREAD_CONTEXT) < 0) {
        printf("nemesis %d: FAIL cr_register_callback\n", rank);
        return 1;
    }
    printf("nemesis %d: ready\n", rank);
    fflush(stdout);
    for (int i = 0; i < 600; i++)
        usleep(100000);
    return 0;
}
