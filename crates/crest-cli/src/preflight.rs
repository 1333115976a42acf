//! What `cr_restart` checks before it starts anything: that the files the image needs are
//! there and unchanged, and that the restarting user could have started the saved process.
//!
//! Files. A file the process had mapped must have the size and modification time it had at
//! the checkpoint (its pages are mapped again from it). A file the process had open must
//! still be there, still be the same file (same inode; not checked for a path moved with
//! `--relocate`, whose copy is a new inode), and not be shorter than at the checkpoint (the
//! process's offset and what it read or wrote would be gone); growing is allowed, as BLCR
//! allowed appends. The working directory must exist.
//!
//! Credentials. A restored process gets its saved uids, gids, supplementary groups (when the
//! restarter may set them) and capability sets. So that nobody gets the memory of a process
//! they could not have run, each saved real, effective, saved and file-system uid must be one
//! the restarting process has, unless it has `CAP_SETUID` (likewise gids and supplementary
//! groups with `CAP_SETGID`); the saved effective and permitted capabilities must be among the
//! restarter's permitted ones; and a set-user-ID or set-group-ID executable needs its owner
//! (or group), or the capability.
use std::collections::BTreeSet;
use std::os::unix::fs::MetadataExt;

use crest_image::{FdKind, Process, VmaBacking};

/// Why a restart is refused: BLCR exit code, failure class (`env`, `perm`) and the message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// Exit code (an errno, as BLCR).
    pub code: i32,
    /// BLCR failure class for `--run-on-fail-*`.
    pub class: &'static str,
    /// What is wrong and what to do.
    pub msg: String,
}

fn refuse(code: i32, msg: String) -> Refusal {
    Refusal { code, class: "env", msg }
}

const RELOCATE: &str = "put it back, or give its new place with --relocate OLD=NEW";

/// Checks that every descriptor of `p` that is to follow `cr_restart`'s own (standard input,
/// output or error that led outside the image, [`FdKind::Inherited`]) finds there an object of
/// the class it had: a terminal for a terminal, a pipe or FIFO for a pipe, a socket for a
/// socket. `image_fd` is the descriptor the image is read from, which is never handed over.
/// With `relaxed` (`--relaxed-stdio`), any open descriptor will do.
pub fn stdio(p: &Process, image_fd: Option<i32>, relaxed: bool) -> Result<(), Refusal> {
    for f in &p.fds {
        let FdKind::Inherited { what, class } = &f.kind else { continue };
        let mine = if image_fd == Some(f.fd) { None } else { crest_kinds::fd::class_of(f.fd) };
        let open = image_fd != Some(f.fd) && std::fs::metadata(format!("/proc/self/fd/{}", f.fd)).is_ok();
        if mine == Some(*class) || (relaxed && open) {
            continue;
        }
        let have = if image_fd == Some(f.fd) {
            "the image being read".to_string()
        } else {
            match std::fs::read_link(format!("/proc/self/fd/{}", f.fd)) {
                Ok(l) => match mine {
                    Some(c) => format!("{} ({})", c.name(), l.display()),
                    None => format!("{}", l.display()),
                },
                Err(_) => "closed".to_string(),
            }
        };
        return Err(refuse(
            libc::EBADF,
            format!(
                "descriptor {} of PID {} was {} ({what}) at the checkpoint, and the restored process would get cr_restart's own descriptor {}, which is {have}: run cr_restart with its descriptor {} on {}{}",
                f.fd,
                p.pid,
                class.name(),
                f.fd,
                f.fd,
                class.name(),
                if open { ", or give --relaxed-stdio to hand it over all the same" } else { "" }
            ),
        ));
    }
    Ok(())
}

/// Checks the files of `p` (whose paths are already relocated); `relocated(path)` says
/// whether a path was changed by `--relocate`.
pub fn files(p: &Process, relocated: &dyn Fn(&str) -> bool) -> Result<(), Refusal> {
    match std::fs::metadata(&p.cwd) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => return Err(refuse(libc::ENOTDIR, format!("the process's working directory {} is not a directory any more; {RELOCATE}", p.cwd))),
        Err(e) => return Err(refuse(e.raw_os_error().unwrap_or(libc::ENOENT), format!("the process's working directory {} cannot be used ({e}); {RELOCATE}", p.cwd))),
    }
    let mut seen = BTreeSet::new();
    for v in &p.vmas {
        let VmaBacking::File { path, size, mtime_ns, .. } = &v.backing else { continue };
        if !seen.insert(path.as_str()) {
            continue;
        }
        let md = match std::fs::metadata(path) {
            Ok(m) => m,
            Err(e) => return Err(refuse(e.raw_os_error().unwrap_or(libc::ENOENT), format!("{path}, which the process had mapped into memory, cannot be used ({e}); {RELOCATE}"))),
        };
        if !md.is_file() {
            return Err(refuse(libc::EINVAL, format!("{path}, which the process had mapped into memory, is not a regular file any more; {RELOCATE}")));
        }
        let mtime = md.mtime() * 1_000_000_000 + md.mtime_nsec();
        if md.size() != *size || mtime != *mtime_ns {
            return Err(refuse(
                libc::ESTALE,
                format!(
                    "{path}, which the process had mapped into memory, has changed since the checkpoint (size {size} then, {} now; modified {} then, {} now); the process cannot be restored with it: restore the file as it was",
                    md.size(),
                    when(*mtime_ns),
                    when(mtime)
                ),
            ));
        }
    }
    for f in &p.fds {
        match &f.kind {
            FdKind::Regular { path, size, ino, .. } => {
                let md = match std::fs::metadata(path) {
                    Ok(m) => m,
                    Err(e) => return Err(refuse(e.raw_os_error().unwrap_or(libc::ENOENT), format!("{path}, open as descriptor {}, cannot be used ({e}); {RELOCATE}", f.fd))),
                };
                if !md.is_file() {
                    return Err(refuse(libc::EINVAL, format!("{path}, open as descriptor {}, is not a regular file any more; {RELOCATE}", f.fd)));
                }
                if md.ino() != *ino && !relocated(path) {
                    return Err(refuse(
                        libc::ESTALE,
                        format!("{path}, open as descriptor {}, is another file now (inode {ino} then, {} now): it was replaced since the checkpoint; restore the original, or give a copy's place with --relocate OLD=NEW", f.fd, md.ino()),
                    ));
                }
                if md.size() < *size {
                    return Err(refuse(
                        libc::ESTALE,
                        format!(
                            "{path}, open as descriptor {}, was truncated since the checkpoint ({size} bytes then, {} now); the process cannot go on with it: restore the file as it was",
                            f.fd,
                            md.size()
                        ),
                    ));
                }
            }
            FdKind::Directory { path, .. } => match std::fs::metadata(path) {
                Ok(m) if m.is_dir() => {}
                Ok(_) => return Err(refuse(libc::ENOTDIR, format!("{path}, open as descriptor {}, is not a directory any more; {RELOCATE}", f.fd))),
                Err(e) => return Err(refuse(e.raw_os_error().unwrap_or(libc::ENOENT), format!("{path}, open as descriptor {}, cannot be used ({e}); {RELOCATE}", f.fd))),
            },
            _ => {}
        }
    }
    Ok(())
}

/// A modification time in nanoseconds since the epoch, for messages (UTC).
fn when(ns: i64) -> String {
    let secs = ns.div_euclid(1_000_000_000);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (proleptic Gregorian calendar).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}.{:09} UTC", rem / 3600, rem / 60 % 60, rem % 60, ns.rem_euclid(1_000_000_000))
}

/// The credentials of the restarting process.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Caller {
    /// Real, effective, saved, file-system uid.
    pub uid: [u32; 4],
    /// Real, effective, saved, file-system gid.
    pub gid: [u32; 4],
    /// Supplementary groups.
    pub groups: Vec<u32>,
    /// Permitted capabilities.
    pub cap_prm: u64,
}

const CAP_SETGID: u32 = 6;
const CAP_SETUID: u32 = 7;

impl Caller {
    /// The calling process's credentials, from `/proc/self/status`.
    pub fn current() -> std::io::Result<Caller> {
        let s = std::fs::read_to_string("/proc/self/status")?;
        let field = |k: &str| s.lines().find_map(|l| l.strip_prefix(k).and_then(|r| r.strip_prefix(':'))).unwrap_or("").trim().to_string();
        let ids = |k: &str| {
            let mut out = [0u32; 4];
            for (o, v) in out.iter_mut().zip(field(k).split_whitespace()) {
                *o = v.parse().unwrap_or(u32::MAX);
            }
            out
        };
        Ok(Caller {
            uid: ids("Uid"),
            gid: ids("Gid"),
            groups: field("Groups").split_whitespace().filter_map(|g| g.parse().ok()).collect(),
            cap_prm: u64::from_str_radix(&field("CapPrm"), 16).unwrap_or(0),
        })
    }

    fn has(&self, cap: u32) -> bool {
        self.cap_prm & (1 << cap) != 0
    }
}

/// Capability names, by number, for messages.
const CAP_NAMES: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
];

fn cap_names(mask: u64) -> String {
    (0..64).filter(|b| mask & (1 << b) != 0).map(|b| CAP_NAMES.get(b as usize).map_or_else(|| format!("capability {b}"), |n| n.to_string())).collect::<Vec<_>>().join(", ")
}

/// Refuses `p` if `me` could not have started it (see the module documentation). `exe` is the
/// executable's metadata now, if it can be read.
pub fn credentials(p: &Process, me: &Caller, exe: Option<&std::fs::Metadata>) -> Result<(), Refusal> {
    let what = "restart it as that user or as root";
    let mine: Vec<u32> = me.gid.iter().chain(&me.groups).copied().collect();
    // The process's credentials and those of each thread (threads may have their own).
    let threads = p.threads.iter().map(|t| &t.attrs.creds).filter(|c| c.uid != [0; 4] || c.gid != [0; 4] || c.cap_bnd != 0);
    for c in std::iter::once(&p.creds).chain(threads) {
        let foreign_uid = c.uid.iter().any(|u| !me.uid.contains(u));
        if foreign_uid && !me.has(CAP_SETUID) {
            return Err(refuse(
                libc::EPERM,
                format!("the image's process ran as uid {} (real, effective, saved, file system: {:?}); uid {} could not have started it: {what}", c.uid[1], c.uid, me.uid[1]),
            ));
        }
        let foreign_gid = c.gid.iter().any(|g| !me.gid.contains(g)) || c.groups.iter().any(|g| !mine.contains(g));
        if foreign_gid && !me.has(CAP_SETGID) {
            return Err(refuse(
                libc::EPERM,
                format!("the image's process ran with gid {} and groups {:?}; a process with gid {} and groups {:?} could not have started it: {what}", c.gid[1], c.groups, me.gid[1], me.groups),
            ));
        }
        let missing = (c.cap_eff | c.cap_prm) & !me.cap_prm;
        if missing != 0 {
            return Err(refuse(libc::EPERM, format!("the image's process had capabilities this restart does not have ({}): {what}", cap_names(missing))));
        }
    }
    if let (Some(md), false) = (exe, p.exe.is_empty()) {
        let mode = md.mode();
        if mode & libc::S_ISUID != 0 && !me.uid.contains(&md.uid()) && !me.has(CAP_SETUID) {
            return Err(refuse(libc::EPERM, format!("the image's executable {} is set-user-ID (owner uid {}); restarting it needs that user or CAP_SETUID: {what}", p.exe, md.uid())));
        }
        if mode & libc::S_ISGID != 0 && !mine.contains(&md.gid()) && !me.has(CAP_SETGID) {
            return Err(refuse(libc::EPERM, format!("the image's executable {} is set-group-ID (group {}); restarting it needs that group or CAP_SETGID: {what}", p.exe, md.gid())));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crest_image::Creds;

    fn process(uid: u32, gid: u32, groups: Vec<u32>, cap_eff: u64) -> Process {
        Process {
            pid: 1,
            ppid: 0,
            pgid: 1,
            sid: 1,
            exe: String::new(),
            cmdline: Vec::new(),
            creds: Creds { uid: [uid; 4], gid: [gid; 4], groups, cap_eff, ..Default::default() },
            cwd: "/".into(),
            root: "/".into(),
            umask: 0o022,
            personality: 0,
            rlimits: Vec::new(),
            mm: Default::default(),
            vmas: Vec::new(),
            fds: Vec::new(),
            sigactions: Vec::new(),
            shared_pending: Vec::new(),
            threads: Vec::new(),
            exit_status: None,
            dropped: Vec::new(),
            attrs: Default::default(),
        }
    }

    fn user(uid: u32, gid: u32, groups: Vec<u32>) -> Caller {
        Caller { uid: [uid; 4], gid: [gid; 4], groups, cap_prm: 0 }
    }

    #[test]
    fn own_process_is_allowed() {
        assert_eq!(credentials(&process(1000, 1000, vec![1000, 20], 0), &user(1000, 1000, vec![1000, 20, 30]), None), Ok(()));
    }

    #[test]
    fn root_may_restart_anything() {
        let root = Caller { uid: [0; 4], gid: [0; 4], groups: vec![0], cap_prm: (1 << 41) - 1 };
        assert_eq!(credentials(&process(1000, 1000, vec![1000, 20], 0), &root, None), Ok(()));
        assert_eq!(credentials(&process(0, 0, vec![0], (1 << 41) - 1), &root, None), Ok(()));
    }

    #[test]
    fn another_users_process_is_refused() {
        let r = credentials(&process(0, 0, vec![0], 0), &user(65534, 65534, vec![]), None).unwrap_err();
        assert_eq!((r.code, r.class), (libc::EPERM, "env"));
        assert!(r.msg.contains("ran as uid 0") && r.msg.contains("uid 65534 could not have started it"), "{}", r.msg);
        let mut setuid_like = process(1000, 1000, vec![], 0);
        setuid_like.creds.uid = [1000, 0, 0, 0];
        assert!(credentials(&setuid_like, &user(1000, 1000, vec![]), None).is_err(), "an effective uid 0 is not the user's");
    }

    #[test]
    fn foreign_groups_and_capabilities_are_refused() {
        let r = credentials(&process(1000, 1000, vec![1000, 27], 0), &user(1000, 1000, vec![1000]), None).unwrap_err();
        assert!(r.msg.contains("groups"), "{}", r.msg);
        let r = credentials(&process(1000, 1000, vec![], 1 << 13), &user(1000, 1000, vec![]), None).unwrap_err();
        assert!(r.msg.contains("CAP_NET_RAW"), "{}", r.msg);
    }

    #[test]
    fn set_user_id_executable_needs_its_owner() {
        use std::os::unix::fs::PermissionsExt;
        let f = std::env::temp_dir().join(format!("crest-preflight-suid-{}", std::process::id()));
        std::fs::write(&f, b"").expect("temp file");
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o4755)).expect("chmod");
        let md = std::fs::metadata(&f).expect("stat");
        let _ = std::fs::remove_file(&f);
        let other = md.uid().wrapping_add(1);
        let mut p = process(other, 1000, vec![], 0);
        p.exe = f.display().to_string();
        let r = credentials(&p, &user(other, 1000, vec![]), Some(&md)).unwrap_err();
        assert!(r.msg.contains("set-user-ID"), "{}", r.msg);
        p.creds.uid = [md.uid(); 4];
        assert_eq!(credentials(&p, &user(md.uid(), 1000, vec![]), Some(&md)), Ok(()), "its owner may");
    }

    #[test]
    fn dates_read_as_dates() {
        assert_eq!(when(0), "1970-01-01 00:00:00.000000000 UTC");
        assert_eq!(when(1_700_000_000_123_456_789), "2023-11-14 22:13:20.123456789 UTC");
    }
}
