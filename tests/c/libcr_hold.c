/* cr_hold_ctrl's barrier, for tests/libcr.rs. The thread-context callback's continue (or
 * restart) code is slow (400 ms) and then takes a number from a counter; the main thread (a
 * signal-context callback, whose own code is quick) and a thread that never called cr_init
 * take theirs once they run normal code again after the checkpoint. Held at the barrier (BLCR's
 * default, CR_HOLD_BOTH), they can only come after the thread-context callback; not held
 * (CR_HOLD_NONE), they come before it.
 *   libcr_hold held    the defaults
 *   libcr_hold free    cr_hold_ctrl(CR_HOLD_SCOPE_THREAD, CR_HOLD_NONE) in the main thread and
 *                      cr_hold_ctrl(CR_HOLD_SCOPE_UNINIT, CR_HOLD_NONE)
 * The *_NO_CALLBACKS hooks record that they ran (in the thread without callbacks).
 * It prints what cr_hold_ctrl answered, "ready", then after each checkpoint
 * "round N (continue|restart): callback C main M other O hooks 0xH", and runs for 60 s. */
#include <libcr.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

static int counter;
static volatile int thread_done, main_done, other_done, signalled, restarted, hooks;

static void hook(cr_hook_event_t ev)
{
    __atomic_or_fetch(&hooks, 1 << ev, __ATOMIC_SEQ_CST);
}

static int take(void)
{
    return __atomic_add_fetch(&counter, 1, __ATOMIC_SEQ_CST);
}

static int thread_cb(void *arg)
{
    (void)arg;
    int rc = cr_checkpoint(CR_CHECKPOINT_READY);
    if (rc >= 0) {
        usleep(400000);
        thread_done = take();
    }
    return 0;
}

static int signal_cb(void *arg)
{
    (void)arg;
    int rc = cr_checkpoint(CR_CHECKPOINT_READY);
    if (rc >= 0) {
        restarted = rc > 0;
        __atomic_store_n(&signalled, 1, __ATOMIC_SEQ_CST);
    }
    return 0;
}

/* A thread that never calls cr_init: it notices the checkpoint once normal code runs again. */
static void *other(void *arg)
{
    (void)arg;
    for (;;) {
        while (!__atomic_load_n(&signalled, __ATOMIC_SEQ_CST) || other_done)
            usleep(1000);
        other_done = take();
    }
    return NULL;
}

int main(int argc, char **argv)
{
    const char *mode = argc > 1 ? argv[1] : "held";
    cr_init();
    printf("read: thread %d init %d uninit %d\n", cr_hold_ctrl(CR_HOLD_SCOPE_THREAD, CR_HOLD_READ), cr_hold_ctrl(CR_HOLD_SCOPE_INIT, CR_HOLD_READ),
           cr_hold_ctrl(CR_HOLD_SCOPE_UNINIT, CR_HOLD_READ));
    int bad = cr_hold_ctrl(CR_HOLD_SCOPE_INIT, CR_HOLD_DFLT);
    printf("DFLT for INIT: %d %s\n", bad, bad < 0 && errno == EINVAL ? "EINVAL" : "?");
    bad = cr_hold_ctrl(7, CR_HOLD_NONE);
    printf("scope 7: %d %s\n", bad, bad < 0 && errno == EINVAL ? "EINVAL" : "?");
    if (!strcmp(mode, "free")) {
        printf("set: thread %d", cr_hold_ctrl(CR_HOLD_SCOPE_THREAD, CR_HOLD_NONE));
        printf(" uninit %d\n", cr_hold_ctrl(CR_HOLD_SCOPE_UNINIT, CR_HOLD_NONE));
    }
    cr_register_hook(CR_HOOK_CONT_NO_CALLBACKS, hook);
    cr_register_hook(CR_HOOK_RSTRT_NO_CALLBACKS, hook);
    cr_register_callback(thread_cb, NULL, CR_THREAD_CONTEXT);
    cr_register_callback(signal_cb, NULL, CR_SIGNAL_CONTEXT);
    pthread_t t;
    pthread_create(&t, NULL, other, NULL);
    printf("ready\n");
    fflush(stdout);
    for (int round = 1, i = 0; i < 60000; i++) {
        usleep(1000);
        if (!__atomic_load_n(&signalled, __ATOMIC_SEQ_CST))
            continue;
        if (!main_done)
            main_done = take();
        if (!thread_done || !other_done)
            continue;
        printf("round %d (%s): callback %d main %d other %d hooks %#x\n", round++, restarted ? "restart" : "continue", thread_done, main_done, other_done,
               __atomic_exchange_n(&hooks, 0, __ATOMIC_SEQ_CST));
        fflush(stdout);
        thread_done = main_done = 0;
        __atomic_store_n(&signalled, 0, __ATOMIC_SEQ_CST);
        other_done = 0;
    }
    return 0;
}
