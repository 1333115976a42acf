//! Claims: which process a checkpoint is working on, visible to every other checkpoint for the
//! whole of it.
//!
//! A checkpoint does not hold its processes traced all the time: during a pre-copy they run
//! free (`TracerPid` 0) while their pages are saved and their writes tracked, and after a
//! snapshot they run while the copy is saved. A second checkpoint started then must not go
//! ahead: its own pre-copy cannot register the memory the first one tracks (one userfaultfd per
//! range), and its scans would disturb the first one's. So before a process is frozen for the
//! first time, the checkpoint takes an exclusive `flock` on a file named after it (its PID and
//! start time) in a world-writable directory, and holds it until [`release_all`]: the first of
//! `/run/lock`, `/dev/shm` and `/tmp` that is in memory (tmpfs), else the first of them there
//! is. A file is made and removed for every process of every checkpoint: on a disk file system
//! that costs more than the rest of the freeze (ext4 looks for a free inode that was not
//! freed recently; a tree of 256 processes frees 256 each time). A second checkpoint that finds the lock taken is refused
//! with [`DumpError::Claimed`], naming the holder (found in `/proc/locks`).
//!
//! The kernel drops a `flock` when its holder dies, even by SIGKILL: a claim never outlives its
//! checkpoint, and the file such a checkpoint leaves behind is taken and removed by the next.
//! A file is only trusted once locked and still under its name (the classic race with a
//! holder removing it is checked for). A lock held by a process that could not checkpoint the
//! target (neither root nor the target's owner) is not honoured, so that no one can block the
//! checkpoints of others' processes by holding such files.
use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::PathBuf;
use std::sync::Mutex;

use crate::DumpError;

/// The claims this process holds, by PID: the locked file and its path.
static HELD: Mutex<Option<HashMap<i32, (File, PathBuf)>>> = Mutex::new(None);

/// Directories tried for the claim files, in order: the first in memory, else the first that
/// exists, is used by everyone ([`dir`]).
const DIRS: [&str; 3] = ["/run/lock", "/dev/shm", "/tmp"];

pub(crate) fn dir() -> Option<&'static str> {
    static DIR: std::sync::OnceLock<Option<&'static str>> = std::sync::OnceLock::new();
    *DIR.get_or_init(|| {
        let usable = |d: &&str| std::fs::metadata(d).is_ok_and(|m| m.is_dir() && m.permissions().mode() & 0o1777 == 0o1777);
        let in_memory = |d: &&str| File::open(d).ok().and_then(|f| crest_ptrace::sys::fs_type(&f).ok()) == Some(libc::TMPFS_MAGIC);
        DIRS.into_iter().filter(usable).find(in_memory).or_else(|| DIRS.into_iter().find(usable))
    })
}

/// The start time of `pid` (field 22 of `/proc/PID/stat`), which tells a process from a later
/// one with the same PID.
pub(crate) fn start_time(pid: i32) -> Option<u64> {
    let stat = crest_proc::read(pid, "stat").ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// The path of the claim file of `pid`.
pub fn path_of(pid: i32) -> Option<PathBuf> {
    Some(PathBuf::from(dir()?).join(format!("crest-checkpoint-{pid}-{}.lock", start_time(pid)?)))
}

/// Claims `pid` for this checkpoint; nothing when it holds the claim already. Fails with
/// [`DumpError::Claimed`] when another checkpoint holds it, and with [`DumpError::NoProcess`]
/// when `pid` is gone. Where no claim file can be made (no such directory, a file of another
/// user that cannot be opened), the checkpoint goes on unclaimed: ptrace still keeps two
/// checkpoints from freezing one process at once.
pub fn claim(pid: i32) -> Result<(), DumpError> {
    claim_seen(pid, None)
}

/// [`claim`], with the `/proc/PID/stat` of `pid` just read by the caller (who freezes it
/// next): its start time is taken from there rather than read again.
pub(crate) fn claim_seen(pid: i32, seen: Option<&crest_proc::Stat>) -> Result<(), DumpError> {
    // The table is not held while the file is made: processes are claimed on several threads.
    if HELD.lock().unwrap_or_else(|p| p.into_inner()).as_ref().is_some_and(|h| h.contains_key(&pid)) {
        return Ok(());
    }
    let path = match seen {
        Some(st) => dir().map(|d| PathBuf::from(d).join(format!("crest-checkpoint-{pid}-{}.lock", st.start_time))),
        None => path_of(pid),
    };
    let Some(path) = path else {
        // Seen by the caller: whether it ended since, the freeze tells.
        return if seen.is_none() && crest_proc::read(pid, "stat").is_err() { Err(DumpError::NoProcess(pid)) } else { Ok(()) };
    };
    for _ in 0..100 {
        let file = match OpenOptions::new().read(true).write(true).create(true).mode(0o644).custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC).open(&path) {
            Ok(f) => f,
            // Another user's file (a sticky directory): it can still be locked read-only.
            Err(_) => match OpenOptions::new().read(true).custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC).open(&path) {
                Ok(f) => f,
                Err(_) => return Ok(()),
            },
        };
        // Readable by all, whatever the umask: every checkpoint must be able to lock it.
        let _ = file.set_permissions(std::fs::Permissions::from_mode(0o644));
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                let by = holder(&file);
                if by.is_some_and(|by| !may_claim(by, pid)) {
                    return Ok(());
                }
                return Err(DumpError::Claimed { pid, by });
            }
            Err(std::fs::TryLockError::Error(_)) => return Ok(()),
        }
        // Locked; but the holder before may have removed the file meanwhile (and someone else
        // made a new one under the name): only the file under the name counts.
        let same = match (file.metadata(), std::fs::symlink_metadata(&path)) {
            (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
            _ => false,
        };
        if same {
            HELD.lock().unwrap_or_else(|p| p.into_inner()).get_or_insert_with(HashMap::new).insert(pid, (file, path));
            return Ok(());
        }
    }
    Ok(())
}

/// Gives up every claim of this process, removing the files.
pub fn release_all() {
    let mut held = HELD.lock().unwrap_or_else(|p| p.into_inner());
    for (_, (file, path)) in held.take().unwrap_or_default() {
        // Removed while still locked, so that no one locks a file that is no longer the claim.
        let _ = std::fs::remove_file(&path);
        drop(file);
    }
}

/// The process holding the `flock` of `file`, from `/proc/locks`.
fn holder(file: &File) -> Option<i32> {
    let m = file.metadata().ok()?;
    let dev = m.dev();
    let want = format!("{:02x}:{:02x}:{}", libc::major(dev), libc::minor(dev), m.ino());
    let locks = std::fs::read_to_string("/proc/locks").ok()?;
    for l in locks.lines() {
        // "1: FLOCK  ADVISORY  WRITE 1234 00:1a:5678 0 EOF"
        let f: Vec<&str> = l.split_whitespace().collect();
        if f.get(1) == Some(&"FLOCK") && f.get(5) == Some(&want.as_str()) {
            return f.get(4)?.parse().ok().filter(|&p: &i32| p > 0);
        }
    }
    None
}

/// Whether `by` could checkpoint `pid` itself: root, or running as the owner of `pid`.
fn may_claim(by: i32, pid: i32) -> bool {
    let uid = |p: i32, i: usize| -> Option<u32> { crest_proc::status_field(&crest_proc::read(p, "status").ok()?, "Uid")?.split_whitespace().nth(i)?.parse().ok() };
    match (uid(by, 1), uid(pid, 0)) {
        (Some(0), _) => true,
        (Some(a), Some(b)) => a == b,
        // One of them is gone or unreadable: honour the lock.
        _ => true,
    }
}
