/* A libcr program whose checkpoint callback does what its argument says, for tests/libcr.rs:
 *   ready   answers READY          temp    CR_CHECKPOINT_TEMP_FAILURE
 *   perm    PERM_FAILURE           code    TEMP_FAILURE_CODE(7)
 *   omit    OMIT (prints what cr_checkpoint returned)
 *   hang    never answers          signal  a signal-context callback answers READY
 *   omittree  OMIT, after starting a child that runs this program in mode "ready" (and
 *             reaping it when it ends: "child ended")
 * It prints "ready", then what each callback saw, and runs for 60 s. */
#include <libcr.h>
#include <stdio.h>
#include <signal.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

static const char *mode;

static void outcome(const char *who, int rc)
{
    if (rc == 0)
        printf("%s: continuing\n", who);
    else if (rc > 0)
        printf("%s: restarted by %d\n", who, rc);
    else
        printf("%s: returned -%d (%s)\n", who, -rc, cr_strerror(-rc));
    fflush(stdout);
}

static int thread_cb(void *arg)
{
    (void)arg;
    int flags = CR_CHECKPOINT_READY;
    if (!strcmp(mode, "temp"))
        flags = CR_CHECKPOINT_TEMP_FAILURE;
    else if (!strcmp(mode, "perm"))
        flags = CR_CHECKPOINT_PERM_FAILURE;
    else if (!strcmp(mode, "code"))
        flags = CR_CHECKPOINT_TEMP_FAILURE_CODE(7);
    else if (!strcmp(mode, "omit") || !strcmp(mode, "omittree"))
        flags = CR_CHECKPOINT_OMIT;
    else if (!strcmp(mode, "hang")) {
        printf("thread: hanging\n");
        fflush(stdout);
        for (;;)
            pause();
    }
    outcome("thread", cr_checkpoint(flags));
    return 0;
}

static volatile int signal_rc = 12345;

static int signal_cb(void *arg)
{
    (void)arg;
    /* Async-signal-safe only: the result is printed by main. */
    signal_rc = cr_checkpoint(CR_CHECKPOINT_READY);
    return 0;
}

int main(int argc, char **argv)
{
    mode = argc > 1 ? argv[1] : "ready";
    pid_t child = -1;
    if (!strcmp(mode, "omittree")) {
        child = fork();
        if (child == 0) {
            /* Ends with its parent, whoever kills the parent. */
            prctl(PR_SET_PDEATHSIG, SIGKILL);
            execl("/proc/self/exe", argv[0], "ready", (char *)NULL);
            _exit(127);
        }
        printf("child %d\n", (int)child);
        fflush(stdout);
    }
    cr_init();
    if (!strcmp(mode, "signal"))
        cr_register_callback(signal_cb, NULL, CR_SIGNAL_CONTEXT);
    else
        cr_register_callback(thread_cb, NULL, CR_THREAD_CONTEXT);
    printf("ready\n");
    fflush(stdout);
    for (int i = 0; i < 600; i++) {
        usleep(100000);
        if (signal_rc != 12345) {
            outcome("signal", signal_rc);
            signal_rc = 12345;
        }
        if (child > 0 && waitpid(child, NULL, WNOHANG) == child) {
            printf("child ended\n");
            fflush(stdout);
            child = -1;
        }
    }
    return 0;
}
