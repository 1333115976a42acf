/* fanotify: a group (notification class, non-blocking, unlimited queue) with an inode mark on a
 * file of DIR and a mount mark on DIR's mount with an ignored mask that survives modification.
 * After restart fdinfo shows the same group flags, event flags and marks (the mount's id may
 * differ), and a write to the file is reported with the file's event descriptor.
 * With "content DIR": a group of the content class, which a checkpoint refuses. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdint.h>
#include <sys/fanotify.h>
#include <sys/stat.h>
#include "prog.h"

static int group;
static char file[4096];

/* The fanotify lines of fdinfo, mount ids blanked. */
static void marks(char *out, size_t len)
{
    char path[64], line[1024];
    snprintf(path, sizeof path, "/proc/self/fdinfo/%d", group);
    FILE *f = fopen(path, "r");
    check(f != NULL, "fdinfo");
    out[0] = 0;
    while (fgets(line, sizeof line, f)) {
        if (strncmp(line, "fanotify ", 9) != 0)
            continue;
        char *m = strstr(line, "mnt_id:");
        if (m) {
            char *end = strchr(m, ' ');
            memmove(m + 7, end, strlen(end) + 1);
        }
        strncat(out, line, len - strlen(out) - 1);
    }
    fclose(f);
}

int main(int argc, char **argv)
{
    check(argc > 2, "usage: fanotifies MODE DIR");
    snprintf(file, sizeof file, "%s/marked", argv[2]);
    int fd = open(file, O_CREAT | O_WRONLY, 0600);
    check(fd >= 0, "a file to mark");
    close(fd);
    unsigned class = strcmp(argv[1], "content") == 0 ? FAN_CLASS_CONTENT : FAN_CLASS_NOTIF;
    group = fanotify_init(class | FAN_NONBLOCK | FAN_UNLIMITED_QUEUE, O_RDONLY | O_LARGEFILE);
    check(group >= 0, "fanotify_init");
    check(fanotify_mark(group, FAN_MARK_ADD, FAN_MODIFY | FAN_CLOSE_WRITE, AT_FDCWD, file) == 0, "an inode mark");
    check(fanotify_mark(group, FAN_MARK_ADD | FAN_MARK_MOUNT, FAN_OPEN | FAN_ONDIR, AT_FDCWD, argv[2]) == 0, "a mount mark");
    check(fanotify_mark(group, FAN_MARK_ADD | FAN_MARK_MOUNT | FAN_MARK_IGNORED_MASK | FAN_MARK_IGNORED_SURV_MODIFY, FAN_ACCESS, AT_FDCWD, argv[2]) == 0, "an ignored mask");
    static char before[8192], after[8192];
    marks(before, sizeof before);
    struct stat st;
    check(stat(file, &st) == 0, "stat");
    ready();
    wait_for_verify(NULL);

    marks(after, sizeof after);
    if (strcmp(before, after) != 0)
        printf("before:\n%safter:\n%s", before, after);
    check(strcmp(before, after) == 0, "fdinfo shows the same group and marks");
    check(fcntl(group, F_GETFL) & O_NONBLOCK, "the group is non-blocking");
    char buf[8192];
    while (read(group, buf, sizeof buf) > 0) {} /* what came before */
    fd = open(file, O_WRONLY);
    check(fd >= 0 && write(fd, "x", 1) == 1, "a write to the marked file");
    close(fd);
    int modified = 0;
    ssize_t n;
    while ((n = read(group, buf, sizeof buf)) > 0) {
        struct fanotify_event_metadata *e = (void *)buf;
        for (; FAN_EVENT_OK(e, n); e = FAN_EVENT_NEXT(e, n)) {
            struct stat es;
            if (e->fd >= 0) {
                if ((e->mask & FAN_MODIFY) && fstat(e->fd, &es) == 0 && es.st_ino == st.st_ino && es.st_dev == st.st_dev)
                    modified = 1;
                close(e->fd);
            }
        }
    }
    check(modified, "the write is reported on the marked file");
    unlink(file);
    pass();
}
