//! Deleted and unusual paths, each a self-verifying program of `tests/c/` checkpointed with
//! --kill, restarted, and told to check itself: deleted directories (a working directory, open
//! ones, one whose parent is gone too), deleted FIFOs with their bytes, symbolic links open with
//! `O_PATH`, device nodes and files linked under another name, files of the processes' own
//! `/proc/PID`, and descriptors of the object behind a shared anonymous mapping.
mod common;

use common::*;

/// A deleted working directory that is also open, and an open directory deleted with its
/// parent, come back deleted, one directory for both, and leave nothing behind.
#[test]
fn deleted_directories_come_back_deleted() {
    run_c("ghostdirs", &["DIR"]);
}

/// A deleted FIFO keeps its bytes and its three opens, a deleted symbolic link its target, a
/// deleted /dev/null node its device (made with mknod, as root), a file unlinked but linked
/// elsewhere its inode and offset.
#[test]
fn deleted_fifos_links_and_nodes_come_back() {
    if is_root() {
        run_c("ghostnodes", &["DIR", "dev"]);
    } else {
        skip("making a device node again needs CAP_MKNOD; the rest is checked without it");
        run_c("ghostnodes", &["DIR"]);
    }
}

/// Files of /proc/PID of the process itself and of its child are theirs after the restart.
#[test]
fn own_proc_files_follow_the_new_pids() {
    run_c("procfiles", &[]);
}

/// Descriptors of shared anonymous memory (opened through /proc/self/map_files) keep their
/// contents, flags and offsets, and share pages with the mapping again.
#[test]
fn shared_memory_descriptors_come_back() {
    run_c_as_root("opening /proc/self/map_files and reading it at checkpoint needs CAP_SYS_ADMIN", "shmemfds", &[]);
}
