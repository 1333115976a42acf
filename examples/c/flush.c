/* A program that keeps its output in a buffer and writes it out in a checkpoint callback, so
 * that an image never holds lines the file does not. The callback says afterwards whether
 * the program goes on after the checkpoint or was restarted from it.
 *
 *   cc -o flush flush.c $(pkg-config --cflags --libs libcr)
 *   ./flush & cr_checkpoint $!     # prints "continuing" after the checkpoint
 *   cr_restart context.PID         # prints "restarted by PID from .../context.PID"
 */
#include <libcr.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

static char buffer[1 << 16];
static size_t used;

static int flush_on_checkpoint(void *arg)
{
    (void)arg;
    fwrite(buffer, 1, used, stdout);
    used = 0;
    const struct cr_checkpoint_info *info = cr_get_checkpoint_info();
    printf("callback: flushed, checkpoint to %s\n", info && info->dest[0] ? info->dest : "(not a file)");
    fflush(stdout);
    int rc = cr_checkpoint(CR_CHECKPOINT_READY);
    if (rc < 0) {
        printf("checkpoint failed: %s\n", cr_strerror(-rc));
    } else if (rc == 0) {
        printf("continuing\n");
    } else {
        const struct cr_restart_info *ri = cr_get_restart_info();
        printf("restarted by %d from %s\n", ri ? ri->requester : -1, ri ? ri->src : "?");
    }
    fflush(stdout);
    return 0;
}

int main(void)
{
    if (cr_init() < 0) {
        perror("cr_init");
        return 1;
    }
    if (cr_register_callback(flush_on_checkpoint, NULL, CR_THREAD_CONTEXT) < 0) {
        perror("cr_register_callback");
        return 1;
    }
    printf("ready\n");
    fflush(stdout);
    for (int i = 0; i < 600; i++) {
        char line[64];
        int n = snprintf(line, sizeof line, "tick %d\n", i);
        if (used + n < sizeof buffer) {
            memcpy(buffer + used, line, n);
            used += n;
        }
        usleep(50000);
    }
    return 0;
}
