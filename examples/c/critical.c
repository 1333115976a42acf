/* A critical section: a checkpoint asked for while the program is inside one waits until it
 * leaves, so an image never holds a half-done update (here: two counters that must be equal).
 *
 *   ./critical & cr_checkpoint $!   # the callback always sees a == b
 */
#include <libcr.h>
#include <stdio.h>
#include <unistd.h>

static volatile long a, b;
static cr_client_id_t id;

static int check(void *arg)
{
    (void)arg;
    printf("callback: a=%ld b=%ld %s\n", a, b, a == b ? "consistent" : "INCONSISTENT");
    fflush(stdout);
    int rc = cr_checkpoint(CR_CHECKPOINT_READY);
    printf("%s\n", rc == 0 ? "continuing" : rc > 0 ? "restarted" : "failed");
    fflush(stdout);
    return 0;
}

int main(void)
{
    id = cr_init();
    cr_register_callback(check, NULL, CR_THREAD_CONTEXT);
    printf("ready\n");
    fflush(stdout);
    for (int i = 0; i < 100; i++) {
        if (cr_enter_cs(id) != 0) {
            perror("cr_enter_cs");
            return 1;
        }
        a++;
        usleep(100000); /* a checkpoint asked for now waits for cr_leave_cs */
        b++;
        cr_leave_cs(id);
        usleep(1000);
    }
    return 0;
}
