/* cr_forward_checkpoint, for tests/libcr.rs: this program starts a child (this program in
 * mode "child") and registers a thread-context callback that forwards the checkpoint to it, so
 * that a checkpoint naming this process alone (--pid) takes the child too, in one image:
 *   pid    cr_forward_checkpoint(CR_SCOPE_PROC, child)
 *   tree   cr_forward_checkpoint(CR_SCOPE_TREE, 0): its own tree
 * The callback also checks what BLCR refuses: a scope that does not exist (EINVAL), a process
 * that does not exist (ESRCH), a second forward that overlaps the first (accepted), and a
 * forward after its cr_checkpoint (EINVAL); before any checkpoint, outside a callback, the
 * call gives CR_ENOTCB. The child has a callback of its own, run because the checkpoint was
 * forwarded to it. Each prints what it saw ("parent: ...", "child: ..."), then a tick every
 * 100 ms for 60 s; the parent reaps the child when it ends ("parent: child ended"). */
#include <libcr.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

static const char *mode;
static pid_t child = -1;

static const char *err(int rc)
{
    static char buf[64];
    if (rc == 0)
        return "0";
    snprintf(buf, sizeof buf, "-1 %s", errno == EINVAL ? "EINVAL" : errno == ESRCH ? "ESRCH" : errno == CR_ENOTCB ? "CR_ENOTCB" : strerror(errno));
    return buf;
}

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

static int parent_cb(void *arg)
{
    (void)arg;
    int rc = !strcmp(mode, "tree") ? cr_forward_checkpoint(CR_SCOPE_TREE, 0) : cr_forward_checkpoint(CR_SCOPE_PROC, child);
    printf("parent: forward %s\n", err(rc));
    printf("parent: forward again %s\n", err(cr_forward_checkpoint(CR_SCOPE_PROC, child)));
    printf("parent: bad scope %s\n", err(cr_forward_checkpoint((cr_scope_t)7, child)));
    printf("parent: no such process %s\n", err(cr_forward_checkpoint(CR_SCOPE_PROC, 4194303)));
    fflush(stdout);
    rc = cr_checkpoint(CR_CHECKPOINT_READY);
    if (rc == 0)
        printf("parent: after cr_checkpoint %s\n", err(cr_forward_checkpoint(CR_SCOPE_PROC, child)));
    outcome("parent", rc);
    return 0;
}

static int child_cb(void *arg)
{
    (void)arg;
    const struct cr_checkpoint_info *i = cr_get_checkpoint_info();
    printf("child: callback, scope %d target %d\n", i ? (int)i->scope : -1, i ? (int)i->target : -1);
    fflush(stdout);
    outcome("child", cr_checkpoint(CR_CHECKPOINT_READY));
    return 0;
}

int main(int argc, char **argv)
{
    mode = argc > 1 ? argv[1] : "pid";
    const char *who = !strcmp(mode, "child") ? "child" : "parent";
    if (strcmp(mode, "child")) {
        printf("outside a callback: forward %s\n", err(cr_forward_checkpoint(CR_SCOPE_PROC, 0)));
        child = fork();
        if (child == 0) {
            /* Ends with its parent, whoever kills the parent. */
            prctl(PR_SET_PDEATHSIG, SIGKILL);
            execl("/proc/self/exe", argv[0], "child", (char *)NULL);
            _exit(127);
        }
        printf("child %d\n", (int)child);
        fflush(stdout);
    }
    cr_init();
    cr_register_callback(!strcmp(mode, "child") ? child_cb : parent_cb, NULL, CR_THREAD_CONTEXT);
    printf("%s: ready\n", who);
    fflush(stdout);
    for (int i = 0; i < 600; i++) {
        usleep(100000);
        printf("%s: tick %d\n", who, i);
        if (child > 0 && waitpid(child, NULL, WNOHANG) == child) {
            printf("parent: child ended\n");
            child = -1;
        }
        fflush(stdout);
    }
    return 0;
}
