//! Parsers for the `/proc/PID` files crest reads from outside a process: `smaps` (mappings and
//! their VmFlags), `stat` (memory-layout fields), `status` (ids, signals, umask), `fdinfo/N`,
//! `pagemap` (which pages are present and whether they are anonymous), `auxv`, `task/`.
//!
//! Pure parsing plus plain file reads: no ptrace and no unsafe. Parsers take the file text so they
//! are tested on captured fixtures.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

use std::fs;
use std::os::unix::fs::FileExt;

/// A failure to read or understand a `/proc` file.
#[derive(Debug, thiserror::Error)]
pub enum ProcError {
    /// The file could not be read (the process may have exited).
    #[error("cannot read {path}: {err}")]
    Read {
        /// File.
        path: String,
        /// Error.
        err: std::io::Error,
    },
    /// The file's text is not what was expected.
    #[error("cannot parse {path}: {what}")]
    Parse {
        /// File.
        path: String,
        /// What was wrong.
        what: String,
    },
}

/// Reads `/proc/PID/NAME` as text.
pub fn read(pid: i32, name: &str) -> Result<String, ProcError> {
    read_path(&format!("/proc/{pid}/{name}"))
}

/// Reads `/proc/PID/NAME` as bytes.
pub fn read_bytes(pid: i32, name: &str) -> Result<Vec<u8>, ProcError> {
    let path = format!("/proc/{pid}/{name}");
    read_all(&path).map_err(|err| ProcError::Read { path, err })
}

/// Reads the file `path` (under `/proc` or `/sys`) as text.
pub fn read_path(path: &str) -> Result<String, ProcError> {
    let bytes = read_all(path).map_err(|err| ProcError::Read { path: path.into(), err })?;
    String::from_utf8(bytes).map_err(|_| ProcError::Read { path: path.into(), err: std::io::Error::new(std::io::ErrorKind::InvalidData, "not UTF-8") })
}

/// The first size a `/proc` file is read with: one page holds most of them whole.
const FIRST_READ: usize = 4096;

/// The whole contents of `path`, read in a loop until the end. Not `fs::read`: that asks the
/// file its size first (a `statx`, and a small probing read), and a `/proc` file's size is 0
/// anyway. Open, two reads for a file under a page (the second sees the end), close.
fn read_all(path: &str) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let mut f = fs::File::open(path)?;
    let mut buf = vec![0u8; FIRST_READ];
    let mut len = 0;
    loop {
        if len == buf.len() {
            buf.resize(buf.len() * 2, 0);
        }
        match f.read(&mut buf[len..]) {
            Ok(0) => break,
            Ok(n) => len += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    buf.truncate(len);
    Ok(buf)
}

/// Reads the target of the link `/proc/PID/NAME`.
pub fn readlink(pid: i32, name: &str) -> Result<String, ProcError> {
    let path = format!("/proc/{pid}/{name}");
    fs::read_link(&path).map(|p| p.to_string_lossy().into_owned()).map_err(|err| ProcError::Read { path, err })
}

/// One line of `/proc/PID/maps` plus its `VmFlags` from `smaps`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MapEntry {
    /// First address.
    pub start: u64,
    /// One past the end.
    pub end: u64,
    /// `r`, `w`, `x` as PROT_* bits.
    pub prot: u32,
    /// `s` (shared) rather than `p`.
    pub shared: bool,
    /// Offset into the file.
    pub offset: u64,
    /// Device (major << 8 | minor as the kernel's old encoding; `makedev` style).
    pub dev: u64,
    /// Inode.
    pub ino: u64,
    /// Path or pseudo-name (`[heap]`, `[stack]`, `[vdso]`, ...); empty for anonymous.
    pub name: String,
    /// Two-letter VmFlags (`gd`, `dc`, `wf`, ...).
    pub vmflags: Vec<String>,
}

impl MapEntry {
    /// Has VmFlag `f`.
    pub fn has(&self, f: &str) -> bool {
        self.vmflags.iter().any(|x| x == f)
    }
}

fn hex(s: &str, path: &str) -> Result<u64, ProcError> {
    u64::from_str_radix(s, 16).map_err(|_| ProcError::Parse { path: path.into(), what: format!("bad hex number {s:?}") })
}

/// Parses `smaps` text (or `maps` text, then without VmFlags).
pub fn parse_smaps(text: &str) -> Result<Vec<MapEntry>, ProcError> {
    let path = "smaps";
    let mut out: Vec<MapEntry> = Vec::new();
    for line in text.lines() {
        if let Some(flags) = line.strip_prefix("VmFlags:") {
            if let Some(last) = out.last_mut() {
                last.vmflags = flags.split_whitespace().map(str::to_string).collect();
            }
            continue;
        }
        let mut it = line.splitn(6, ' ');
        let range = it.next().unwrap_or("");
        let Some((a, b)) = range.split_once('-') else { continue };
        // Lines of smaps that are not mapping headers ("Rss:   4 kB") have no '-' range in hex.
        if a.is_empty() || !a.bytes().all(|c| c.is_ascii_hexdigit()) {
            continue;
        }
        let perms = it.next().unwrap_or("");
        let offset = it.next().unwrap_or("0");
        let dev = it.next().unwrap_or("0:0");
        let ino = it.next().unwrap_or("0");
        let name = it.next().unwrap_or("").trim_start().to_string();
        let (maj, min) = dev.split_once(':').unwrap_or(("0", "0"));
        let (maj, min) = (hex(maj, path)?, hex(min, path)?);
        let pb = perms.as_bytes();
        let mut prot = 0;
        if pb.first() == Some(&b'r') {
            prot |= 1;
        }
        if pb.get(1) == Some(&b'w') {
            prot |= 2;
        }
        if pb.get(2) == Some(&b'x') {
            prot |= 4;
        }
        out.push(MapEntry {
            start: hex(a, path)?,
            end: hex(b, path)?,
            prot,
            shared: pb.get(3) == Some(&b's'),
            offset: hex(offset, path)?,
            dev: makedev(maj, min),
            ino: ino.parse().map_err(|_| ProcError::Parse { path: path.into(), what: format!("bad inode {ino:?}") })?,
            name,
            vmflags: Vec::new(),
        });
    }
    Ok(out)
}

/// The bytes of the `Anonymous:` lines of `smaps` text, over every mapping: the process's
/// anonymous pages in memory (private ones, and file pages copied on write).
pub fn smaps_anonymous(text: &str) -> u64 {
    text.lines().filter_map(|l| l.strip_prefix("Anonymous:")).filter_map(|v| v.trim().strip_suffix("kB").and_then(|n| n.trim().parse::<u64>().ok())).map(|kb| kb * 1024).sum()
}

/// glibc's `makedev` encoding, as `stat.st_dev` uses.
pub fn makedev(maj: u64, min: u64) -> u64 {
    ((maj & 0xffff_f000) << 32) | ((maj & 0xfff) << 8) | ((min & 0xffff_ff00) << 12) | (min & 0xff)
}

/// The fields of `/proc/PID/stat` crest uses (numbered as in proc(5)).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stat {
    /// State letter.
    pub state: char,
    /// (4) ppid.
    pub ppid: i32,
    /// (5) pgrp.
    pub pgrp: i32,
    /// (6) session.
    pub session: i32,
    /// (38) exit_signal: the signal the parent gets when it ends (0: none).
    pub exit_signal: i32,
    /// (28) startstack.
    pub start_stack: u64,
    /// (26) startcode.
    pub start_code: u64,
    /// (27) endcode.
    pub end_code: u64,
    /// (45) start_data.
    pub start_data: u64,
    /// (46) end_data.
    pub end_data: u64,
    /// (47) start_brk.
    pub start_brk: u64,
    /// (48) arg_start.
    pub arg_start: u64,
    /// (49) arg_end.
    pub arg_end: u64,
    /// (50) env_start.
    pub env_start: u64,
    /// (51) env_end.
    pub env_end: u64,
    /// (20) num_threads.
    pub num_threads: u64,
    /// (10) minflt + (12) majflt: the page faults its threads took so far. A write by one of
    /// them to a page that is write-protected, or not yet there, is one (a write by another
    /// process, through `process_vm_writev` say, counts as that one's).
    pub faults: u64,
    /// (52) exit_code: the wait status of a zombie (0 while it runs).
    pub exit_code: i32,
    /// (22) starttime: when it started, in clock ticks after boot (tells a process from a
    /// later one with the same PID).
    pub start_time: u64,
}

/// Parses `/proc/PID/stat`.
pub fn parse_stat(text: &str) -> Result<Stat, ProcError> {
    let err = |what: &str| ProcError::Parse { path: "stat".into(), what: what.into() };
    let close = text.rfind(')').ok_or_else(|| err("no ')' after comm"))?;
    // Fields from (3) state on.
    let f: Vec<&str> = text[close + 1..].split_whitespace().collect();
    let n = |i: usize| -> Result<u64, ProcError> { f.get(i - 3).and_then(|s| s.parse::<i64>().ok()).map(|v| v as u64).ok_or_else(|| err(&format!("field {i}"))) };
    Ok(Stat {
        state: f.first().and_then(|s| s.chars().next()).ok_or_else(|| err("state"))?,
        ppid: n(4)? as i32,
        pgrp: n(5)? as i32,
        session: n(6)? as i32,
        num_threads: n(20)?,
        faults: n(10)?.wrapping_add(n(12)?),
        start_code: n(26)?,
        end_code: n(27)?,
        start_stack: n(28)?,
        exit_signal: n(38)? as i32,
        start_data: n(45)?,
        end_data: n(46)?,
        start_brk: n(47)?,
        arg_start: n(48)?,
        arg_end: n(49)?,
        env_start: n(50)?,
        env_end: n(51)?,
        exit_code: n(52).unwrap_or(0) as i32,
        start_time: n(22)?,
    })
}

/// `Key:\tvalue` lines of `/proc/PID/status`.
pub fn status_field<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    text.lines().find_map(|l| l.strip_prefix(key).and_then(|r| r.strip_prefix(':'))).map(str::trim)
}

/// Fields of `/proc/PID/fdinfo/N`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FdInfo {
    /// File position.
    pub pos: u64,
    /// Open flags (octal in the file), O_CLOEXEC included when set on the descriptor.
    pub flags: u32,
    /// Mount id.
    pub mnt_id: u64,
    /// Inode number.
    pub ino: u64,
    /// The whole text, for the lines specific to a kind of file (eventfd, epoll, ...).
    pub text: String,
}

/// Parses `fdinfo` text.
pub fn parse_fdinfo(text: &str) -> Result<FdInfo, ProcError> {
    let err = |what: &str| ProcError::Parse { path: "fdinfo".into(), what: what.into() };
    let mut fi = FdInfo { text: text.to_string(), ..FdInfo::default() };
    for l in text.lines() {
        let Some((k, v)) = l.split_once(':') else { continue };
        let v = v.trim();
        match k {
            "pos" => fi.pos = v.parse().map_err(|_| err("pos"))?,
            "flags" => fi.flags = u32::from_str_radix(v, 8).map_err(|_| err("flags"))?,
            "mnt_id" => fi.mnt_id = v.parse().map_err(|_| err("mnt_id"))?,
            "ino" => fi.ino = v.parse().map_err(|_| err("ino"))?,
            _ => {}
        }
    }
    Ok(fi)
}

/// Thread ids in `/proc/PID/task`, sorted, the leader first.
pub fn tasks(pid: i32) -> Result<Vec<i32>, ProcError> {
    let path = format!("/proc/{pid}/task");
    let mut v: Vec<i32> = fs::read_dir(&path).map_err(|err| ProcError::Read { path: path.clone(), err })?.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok()).collect();
    v.sort_unstable_by_key(|&t| (t != pid, t));
    Ok(v)
}

/// Children of every thread of `pid` (`/proc/PID/task/TID/children`), sorted.
pub fn children(pid: i32) -> Result<Vec<i32>, ProcError> {
    Ok(children_of(pid, &tasks(pid)?))
}

/// Children of the threads `tids` of `pid`, sorted: [`children`] when the caller knows every
/// thread already (a frozen process starts none), without listing `/proc/PID/task` again.
pub fn children_of(pid: i32, tids: &[i32]) -> Vec<i32> {
    let mut out = Vec::new();
    for tid in tids {
        // A thread that ended meanwhile has no children left.
        let Ok(text) = read(pid, &format!("task/{tid}/children")) else { continue };
        out.extend(text.split_whitespace().filter_map(|c| c.parse::<i32>().ok()));
    }
    out.sort_unstable();
    out.dedup();
    out
}

/// Every process in `/proc`, sorted.
pub fn all_pids() -> Result<Vec<i32>, ProcError> {
    let mut v: Vec<i32> = fs::read_dir("/proc").map_err(|err| ProcError::Read { path: "/proc".into(), err })?.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok()).collect();
    v.sort_unstable();
    Ok(v)
}

/// Open descriptor numbers in `/proc/PID/fd`, sorted.
pub fn fds(pid: i32) -> Result<Vec<i32>, ProcError> {
    let path = format!("/proc/{pid}/fd");
    let mut v: Vec<i32> = fs::read_dir(&path).map_err(|err| ProcError::Read { path: path.clone(), err })?.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok()).collect();
    v.sort_unstable();
    Ok(v)
}

/// Bits of a pagemap entry.
pub mod pagemap {
    /// Page present in RAM.
    pub const PRESENT: u64 = 1 << 63;
    /// Page swapped out.
    pub const SWAPPED: u64 = 1 << 62;
    /// File-backed page or shared anonymous page (not a private anonymous/COW copy).
    pub const FILE: u64 = 1 << 61;
    /// A guard region's page (`MADV_GUARD_INSTALL`, `PM_GUARD_REGION`), Linux 6.14.
    pub const GUARD: u64 = 1 << 58;
}

/// An open `/proc/PID/pagemap`.
pub struct Pagemap {
    file: fs::File,
    path: String,
    pid: i32,
}

impl Pagemap {
    /// Opens the pagemap of `pid`.
    pub fn open(pid: i32) -> Result<Self, ProcError> {
        let path = format!("/proc/{pid}/pagemap");
        let file = fs::File::open(&path).map_err(|err| ProcError::Read { path: path.clone(), err })?;
        Ok(Pagemap { file, path, pid })
    }

    /// The process it describes.
    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// The open file (for ioctls on it).
    pub fn file(&self) -> &fs::File {
        &self.file
    }

    /// Entries for the pages of `start..end` (one u64 per page), into `out`.
    pub fn entries(&self, start: u64, end: u64, out: &mut Vec<u64>) -> Result<(), ProcError> {
        let n = ((end - start) / 4096) as usize;
        let mut bytes = vec![0u8; n * 8];
        self.file.read_exact_at(&mut bytes, start / 4096 * 8).map_err(|err| ProcError::Read { path: self.path.clone(), err })?;
        out.clear();
        out.extend(bytes.chunks_exact(8).map(|c| u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]])));
        Ok(())
    }
}

/// `/proc/PID/limits`: (soft, hard) per resource, in resource-number order (the kernel lists
/// them so); `unlimited` is `u64::MAX`. Readable where `prlimit` on another user's process is
/// not (that needs `CAP_SYS_RESOURCE`).
pub fn parse_limits(text: &str) -> Result<Vec<(u64, u64)>, ProcError> {
    let bad = |what: String| ProcError::Parse { path: "limits".into(), what };
    let value = |v: &str| if v == "unlimited" { Ok(u64::MAX) } else { v.parse::<u64>().map_err(|_| bad(format!("limit {v:?}"))) };
    text.lines()
        .skip(1)
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            // Columns: name (25 wide, with spaces), soft, hard, units.
            let rest = l.get(26..).ok_or_else(|| bad(format!("short line {l:?}")))?;
            let mut f = rest.split_whitespace();
            let (soft, hard) = (f.next().unwrap_or(""), f.next().unwrap_or(""));
            Ok((value(soft)?, value(hard)?))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_in_resource_order() {
        let text = "Limit                     Soft Limit           Hard Limit           Units     \n\
Max cpu time              unlimited            unlimited            seconds   \n\
Max file size             unlimited            unlimited            bytes     \n\
Max data size             unlimited            unlimited            bytes     \n\
Max stack size            8388608              unlimited            bytes     \n\
Max core file size        0                    unlimited            bytes     \n\
Max resident set          unlimited            unlimited            bytes     \n\
Max processes             95595                95595                processes \n\
Max open files            1000                 2000                 files     \n";
        let l = parse_limits(text).expect("parses");
        assert_eq!(l.len(), 8);
        assert_eq!(l[0], (u64::MAX, u64::MAX));
        assert_eq!(l[3], (8388608, u64::MAX));
        assert_eq!(l[7], (1000, 2000));
    }

    const SMAPS: &str = "\
55d0c8a00000-55d0c8a02000 r--p 00000000 fe:00 1234                       /usr/bin/sleep
Size:                  8 kB
VmFlags: rd mr mw me sd
7ffd1e0f0000-7ffd1e111000 rw-p 00000000 00:00 0                          [stack]
Size:                132 kB
VmFlags: rd wr mr mw me gd ac
7f00aa000000-7f00aa001000 rw-s 00000000 00:01 99                         /dev/zero (deleted)
VmFlags: rd wr sh mr mw me ms sd
";

    #[test]
    fn smaps_anonymous_bytes_add_up() {
        let text = "00400000-00401000 r--p 00000000 fe:00 1 /bin/x\nAnonymous:             4 kB\nAnonHugePages:      2048 kB\n\
7ffd1e0f0000-7ffd1e111000 rw-p 00000000 00:00 0 [stack]\nAnonymous:            12 kB\n";
        assert_eq!(smaps_anonymous(text), 16 * 1024);
        assert_eq!(smaps_anonymous(SMAPS), 0);
    }

    #[test]
    fn smaps_parses_ranges_names_and_flags() {
        let m = parse_smaps(SMAPS).unwrap();
        assert_eq!(m.len(), 3);
        assert_eq!(m[0].start, 0x55d0c8a00000);
        assert_eq!(m[0].prot, 1);
        assert_eq!(m[0].name, "/usr/bin/sleep");
        assert_eq!(m[0].ino, 1234);
        assert_eq!(m[0].dev, makedev(0xfe, 0));
        assert!(m[1].has("gd"));
        assert_eq!(m[1].prot, 3);
        assert!(m[2].shared);
        assert_eq!(m[2].name, "/dev/zero (deleted)");
    }

    #[test]
    fn stat_parses_comm_with_spaces() {
        let mut s = String::from("42 (a b) c) S 1 42 42 0 -1 4194560");
        for i in 10..=52 {
            s.push_str(&format!(" {i}"));
        }
        let st = parse_stat(&s).unwrap();
        assert_eq!(st.state, 'S');
        assert_eq!(st.ppid, 1);
        assert_eq!(st.start_code, 26);
        assert_eq!(st.env_end, 51);
        assert_eq!(st.faults, 10 + 12);
        assert_eq!(st.start_time, 22);
    }

    #[test]
    fn fdinfo_parses_octal_flags() {
        let fi = parse_fdinfo("pos:\t10\nflags:\t02100002\nmnt_id:\t25\nino:\t77\n").unwrap();
        assert_eq!(fi.pos, 10);
        assert_eq!(fi.flags, 0o2100002);
        assert_eq!(fi.ino, 77);
    }

    #[test]
    fn reads_files_larger_than_the_first_read_whole() {
        let dir = std::env::temp_dir().join(format!("crest-proc-read-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let cleanup = Cleanup(dir.clone());
        for len in [0, 1, FIRST_READ - 1, FIRST_READ, FIRST_READ + 1, 3 * FIRST_READ + 7] {
            let path = dir.join(format!("f{len}"));
            let data: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            fs::write(&path, &data).unwrap();
            assert_eq!(read_all(path.to_str().unwrap()).unwrap(), data, "length {len}");
        }
        fs::write(dir.join("text"), "a\nb\n").unwrap();
        assert_eq!(read_path(dir.join("text").to_str().unwrap()).unwrap(), "a\nb\n");
        fs::write(dir.join("bad"), [0xff, 0xfe]).unwrap();
        assert!(read_path(dir.join("bad").to_str().unwrap()).is_err());
        assert!(matches!(read_path(dir.join("missing").to_str().unwrap()), Err(ProcError::Read { .. })));
        drop(cleanup);
    }

    /// Removes a directory even when the test fails.
    struct Cleanup(std::path::PathBuf);
    impl Drop for Cleanup {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn reads_large_proc_files_whole() {
        // smaps of this process is well over a page: read whole, it ends with a mapping's
        // VmFlags line as the kernel writes it.
        let me = std::process::id() as i32;
        let text = read(me, "smaps").unwrap();
        assert!(text.len() > FIRST_READ);
        assert!(text.trim_end().lines().last().unwrap().starts_with("VmFlags:"));
    }

    #[test]
    fn reads_own_process() {
        let me = std::process::id() as i32;
        let maps = parse_smaps(&read(me, "smaps").unwrap()).unwrap();
        assert!(maps.iter().any(|m| m.name == "[stack]"));
        let st = parse_stat(&read(me, "stat").unwrap()).unwrap();
        assert!(st.start_stack > 0);
        assert!(tasks(me).unwrap().contains(&me));
    }

    #[test]
    fn children_of_known_threads_are_those_listed() {
        let me = std::process::id() as i32;
        let mut kid = std::process::Command::new("sleep").arg("30").spawn().expect("sleep starts");
        let pid = kid.id() as i32;
        let listed = children(me).unwrap();
        let known = children_of(me, &tasks(me).unwrap());
        // No thread: no children; a thread that is not there: none either.
        let none = children_of(me, &[]);
        let gone = children_of(me, &[i32::MAX]);
        let _ = kid.kill();
        let _ = kid.wait();
        assert!(listed.contains(&pid), "{listed:?}");
        assert_eq!(listed, known);
        assert!(none.is_empty() && gone.is_empty());
    }
}
