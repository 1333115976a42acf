/* SysV message queues and semaphore adjustments (SEM_UNDO). A private queue holds messages of
 * several types and sizes (an empty one, one of 6000 bytes); a keyed queue has its own mode
 * and byte limit and a message a child sent. A child holds SEM_UNDO adjustments of +1 and -3
 * on two semaphores of a set and of +32767 and -32768 (the extremes) on another set, the parent
 * -2 on a third semaphore of the first. After restart: the same ids, the messages in order with
 * their types and bytes, mode and limit, new messages go through, and when the child exits the
 * kernel applies its adjustments to the values. Prints "ipc MSG1 MSG2 SEM EDGE" for the test
 * to clean up after a failure. The same checks hold for the original after a checkpoint that
 * let it run on: the queues and adjustments were read without change. */
#include <errno.h>
#include <sys/prctl.h>
#include <sys/ipc.h>
#include <sys/msg.h>
#include <sys/sem.h>
#include <sys/wait.h>
#include "prog.h"

struct msg {
    long mtype;
    char text[8192];
};

static void send(int q, long type, const char *fill, size_t len)
{
    static struct msg m;
    m.mtype = type;
    for (size_t i = 0; i < len; i++)
        m.text[i] = fill[i % strlen(fill)];
    check(msgsnd(q, &m, len, IPC_NOWAIT) == 0, "msgsnd");
}

static void expect(int q, long type, const char *fill, size_t len, const char *what)
{
    static struct msg m;
    ssize_t n = msgrcv(q, &m, sizeof m.text, 0, IPC_NOWAIT);
    check(n >= 0, what);
    check(m.mtype == type && (size_t)n == len, what);
    for (size_t i = 0; i < len; i++)
        check(m.text[i] == fill[i % strlen(fill)], what);
}

static void semop1(int id, int num, int op, int flags)
{
    struct sembuf b = {(unsigned short)num, (short)op, (short)flags};
    check(semop(id, &b, 1) == 0, "semop");
}

int main(void)
{
    int q1 = msgget(IPC_PRIVATE, IPC_CREAT | 0600);
    key_t key = 0x43520000 | (getpid() & 0xffff);
    int q2 = msgget(key, IPC_CREAT | IPC_EXCL | 0640);
    int sem = semget(IPC_PRIVATE, 3, IPC_CREAT | 0600);
    int edge = semget(IPC_PRIVATE, 2, IPC_CREAT | 0600);
    check(q1 >= 0 && q2 >= 0 && sem >= 0 && edge >= 0, "msgget, semget");
    printf("ipc %d %d %d %d\n", q1, q2, sem, edge);
    fflush(stdout);
    struct msqid_ds ds;
    check(msgctl(q2, IPC_STAT, &ds) == 0, "IPC_STAT");
    ds.msg_qbytes = 12345;
    check(msgctl(q2, IPC_SET, &ds) == 0, "IPC_SET (limit)");
    unsigned short vals[3] = {5, 5, 5};
    check(semctl(sem, 0, SETALL, vals) == 0, "SETALL");

    send(q1, 7, "first", 5);
    send(q1, 3, "", 0);
    send(q1, 7, "0123456789abcdef", 6000);
    send(q1, 1000000, "last", 4);
    send(q2, 1, "taken", 5);

    int pipefd[2];
    check(pipe(pipefd) == 0, "pipe");
    pid_t c = fork();
    if (c == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        close(pipefd[0]);
        expect(q2, 1, "taken", 5, "the child takes the first message");
        send(q2, 2, "from the child", 14);
        semop1(sem, 0, -1, SEM_UNDO);
        semop1(sem, 1, 3, SEM_UNDO);
        /* The extremes: +32767, and -32768 (one more than any single operation can make). */
        check(semctl(edge, 0, SETVAL, 32767) == 0, "SETVAL 32767");
        semop1(edge, 0, -32767, SEM_UNDO);
        semop1(edge, 1, 32767, SEM_UNDO);
        semop1(edge, 1, -32767, 0);
        semop1(edge, 1, 1, SEM_UNDO);
        struct sigaction sa;
        memset(&sa, 0, sizeof sa);
        sa.sa_handler = on_usr2;
        sigaction(SIGUSR2, &sa, NULL);
        check(write(pipefd[1], "x", 1) == 1, "child ready");
        while (!verify_now)
            usleep(20 * 1000);
        _exit(0);
    }
    close(pipefd[1]);
    char x;
    check(read(pipefd[0], &x, 1) == 1, "the child set up");
    semop1(sem, 2, 2, SEM_UNDO);
    ready();
    wait_for_verify(NULL);

    check(msgctl(q1, IPC_STAT, &ds) == 0 && ds.msg_qnum == 4 && (ds.msg_perm.mode & 0777) == 0600, "the private queue: 4 messages, mode 0600");
    expect(q1, 7, "first", 5, "message 1 of the private queue");
    expect(q1, 3, "", 0, "the empty message");
    expect(q1, 7, "0123456789abcdef", 6000, "the 6000-byte message");
    expect(q1, 1000000, "last", 4, "the last message");
    struct msg m;
    check(msgrcv(q1, &m, sizeof m.text, 0, IPC_NOWAIT) == -1 && errno == ENOMSG, "nothing more in the private queue");
    check(msgctl(q2, IPC_STAT, &ds) == 0 && ds.msg_qbytes == 12345 && (ds.msg_perm.mode & 0777) == 0640 && ds.msg_perm.__key == key, "the keyed queue: key, mode 0640, limit 12345");
    check(msgget(key, 0) == q2, "the key names the same queue");
    expect(q2, 2, "from the child", 14, "the child's message");
    send(q2, 9, "new", 3);
    expect(q2, 9, "new", 3, "a new message goes through");

    unsigned short now[3];
    check(semctl(sem, 0, GETALL, now) == 0 && now[0] == 4 && now[1] == 8 && now[2] == 7, "semaphore values 4 8 7");
    check(semctl(edge, 0, GETVAL) == 0 && semctl(edge, 1, GETVAL) == 1, "semaphore values 0 1");
    kill(c, SIGUSR2);
    int st;
    check(waitpid(c, &st, 0) == c && WIFEXITED(st) && WEXITSTATUS(st) == 0, "the child exits");
    check(semctl(sem, 0, GETALL, now) == 0, "GETALL");
    char why[128];
    snprintf(why, sizeof why, "the child's adjustments applied at its exit: values %d %d %d, not 5 5 7", now[0], now[1], now[2]);
    check(now[0] == 5 && now[1] == 5 && now[2] == 7, why);
    /* +32767 brings 0 to 32767; -32768 brings 1 below 0, which the kernel makes 0. */
    snprintf(why, sizeof why, "the extreme adjustments applied: values %d %d, not 32767 0", semctl(edge, 0, GETVAL), semctl(edge, 1, GETVAL));
    check(semctl(edge, 0, GETVAL) == 32767 && semctl(edge, 1, GETVAL) == 0, why);
    /* The parent's own adjustment: undone by hand (its exit would do the same). */
    semop1(sem, 2, -2, SEM_UNDO);
    check(semctl(sem, 2, GETVAL) == 5, "the parent's semaphore back to 5");
    msgctl(q1, IPC_RMID, NULL);
    msgctl(q2, IPC_RMID, NULL);
    semctl(sem, 0, IPC_RMID);
    semctl(edge, 0, IPC_RMID);
    pass();
}
