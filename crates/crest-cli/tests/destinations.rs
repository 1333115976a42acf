//! What `cr_checkpoint -f` does with each kind of destination, as BLCR: a regular file is
//! replaced atomically; a FIFO, a socket or a character device is written into as a stream and
//! left in place; a symbolic link is followed and its target replaced in the target's
//! directory; a directory or a block device is refused before the process is touched. Scratch
//! devices are made with mknod in a temporary directory (never the real /dev/null or
//! /dev/full). Every test kills and reaps what it started, by PID.
mod common;

use std::io::Read;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use common::*;

fn ck() -> Command {
    Command::new(bin("cr_checkpoint"))
}

fn err(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn checkpoint(dest: &Path, pid: i32, extra: &[&str]) -> Output {
    ck().args(extra).arg("-f").arg(dest).arg(pid.to_string()).output().expect("cr_checkpoint")
}

fn verified(img: &Path) -> bool {
    Command::new(bin("cr_info")).arg("--verify").arg(img).stdout(Stdio::null()).status().is_ok_and(|s| s.success())
}

/// `mknod PATH KIND MAJOR MINOR`.
fn mknod(path: &Path, kind: &str, major: u32, minor: u32) {
    let st = Command::new("mknod").arg(path).arg(kind).arg(major.to_string()).arg(minor.to_string()).status().expect("mknod");
    assert!(st.success(), "mknod {}", path.display());
}

/// A process to checkpoint, started and waited for.
fn start_sleeper(d: &Dir, procs: &mut Procs) -> i32 {
    let prog = d.0.join("sleeper");
    gcc("tests/c/sleeper.c", &prog, &[]);
    let out = d.0.join("sleeper.out");
    let f = std::fs::File::create(&out).expect("out");
    let pid = procs.add(Command::new(&prog).stdout(f).stdin(Stdio::null()).spawn().expect("sleeper"));
    wait_for(&out, "ready", Duration::from_secs(20));
    pid
}

/// The image that arrived through a stream, checked with cr_info --verify.
fn stream_image_verifies(d: &Dir, bytes: &[u8]) {
    assert!(bytes.len() > 4096, "an image came through ({} bytes)", bytes.len());
    let copy = d.0.join("received");
    std::fs::write(&copy, bytes).expect("write");
    assert!(verified(&copy), "the image written into the stream is whole");
    std::fs::remove_file(&copy).expect("rm");
}

#[test]
fn character_devices_are_written_into_never_replaced() {
    if !is_root() {
        eprintln!("skipped: mknod needs root");
        return;
    }
    let d = Dir::new("dest-chardev");
    let mut procs = Procs::default();
    let pid = start_sleeper(&d, &mut procs);
    let null = d.0.join("null");
    let full = d.0.join("full");
    mknod(&null, "c", 1, 3);
    mknod(&full, "c", 1, 7);
    for mode in [&[][..], &["--backup"][..], &["--clobber"][..]] {
        let o = checkpoint(&null, pid, mode);
        assert!(o.status.success(), "{mode:?}: into a null device: {}", err(&o));
        let md = std::fs::symlink_metadata(&null).expect("still there");
        assert!(md.file_type().is_char_device() && md.rdev() == 0x103, "{mode:?}: the device is left as it was");
        let o = checkpoint(&full, pid, mode);
        assert_eq!(o.status.code(), Some(libc::ENOSPC), "{mode:?}: into a full device: {}", err(&o));
        assert!(err(&o).contains("no space left"), "{}", err(&o));
        let md = std::fs::symlink_metadata(&full).expect("still there");
        assert!(md.file_type().is_char_device() && md.rdev() == 0x107, "{mode:?}: a failed checkpoint leaves the device too");
        assert_untouched(pid, "after checkpoints into devices");
    }
    assert_eq!(names_in(&d.0), ["full", "null", "sleeper", "sleeper.out"], "no backup, no temporary file");
}

#[test]
fn block_devices_and_directories_are_refused_before_freezing() {
    if !is_root() {
        eprintln!("skipped: mknod needs root");
        return;
    }
    let d = Dir::new("dest-refused");
    let mut procs = Procs::default();
    let pid = start_sleeper(&d, &mut procs);
    let blk = d.0.join("blk");
    mknod(&blk, "b", 7, 0);
    let o = checkpoint(&blk, pid, &[]);
    assert_eq!(o.status.code(), Some(libc::EINVAL), "{}", err(&o));
    assert!(err(&o).contains("is a block device"), "{}", err(&o));
    assert!(std::fs::symlink_metadata(&blk).expect("there").file_type().is_block_device(), "left as it was");
    let sub = d.0.join("sub");
    std::fs::create_dir(&sub).expect("mkdir");
    let o = checkpoint(&sub, pid, &[]);
    assert_eq!(o.status.code(), Some(libc::EISDIR), "{}", err(&o));
    assert!(err(&o).contains("is a directory"), "{}", err(&o));
    assert_untouched(pid, "after refused destinations");
    assert_eq!(names_in(&d.0), ["blk", "sleeper", "sleeper.out", "sub"]);
}

#[test]
fn fifos_and_sockets_get_the_image_as_a_stream() {
    let d = Dir::new("dest-stream");
    let mut procs = Procs::default();
    let pid = start_sleeper(&d, &mut procs);

    // A FIFO with a reader: the image goes through it; the FIFO stays.
    let fifo = d.0.join("fifo");
    let st = Command::new("mkfifo").arg(&fifo).status().expect("mkfifo");
    assert!(st.success());
    let o = checkpoint(&fifo, pid, &[]);
    assert_eq!(o.status.code(), Some(libc::ENXIO), "no reader yet: {}", err(&o));
    assert!(err(&o).contains("no process has open for reading"), "{}", err(&o));
    let path = fifo.clone();
    let reader = std::thread::spawn(move || {
        let mut v = Vec::new();
        std::fs::File::open(&path).expect("open the FIFO").read_to_end(&mut v).expect("read");
        v
    });
    // The reader must have the FIFO open before cr_checkpoint opens it.
    let mut o = checkpoint(&fifo, pid, &[]);
    for _ in 0..100 {
        if o.status.code() != Some(libc::ENXIO) {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
        o = checkpoint(&fifo, pid, &[]);
    }
    assert!(o.status.success(), "into a FIFO: {}", err(&o));
    stream_image_verifies(&d, &reader.join().expect("reader"));
    assert!(std::fs::symlink_metadata(&fifo).expect("there").file_type().is_fifo(), "the FIFO is left as it was");

    // A listening socket: connected to, the image written into the connection.
    let sock = d.0.join("sock");
    let listener = std::os::unix::net::UnixListener::bind(&sock).expect("bind");
    let reader = std::thread::spawn(move || {
        let (mut c, _) = listener.accept().expect("accept");
        let mut v = Vec::new();
        c.read_to_end(&mut v).expect("read");
        v
    });
    let o = checkpoint(&sock, pid, &[]);
    assert!(o.status.success(), "into a socket: {}", err(&o));
    stream_image_verifies(&d, &reader.join().expect("reader"));
    assert!(std::fs::symlink_metadata(&sock).expect("there").file_type().is_socket(), "the socket is left as it was");
    assert_untouched(pid, "after checkpoints into streams");
    assert_eq!(names_in(&d.0), ["fifo", "sleeper", "sleeper.out", "sock"]);
}

#[test]
fn symbolic_links_are_followed_and_their_target_replaced() {
    let d = Dir::new("dest-symlink");
    let mut procs = Procs::default();
    let pid = start_sleeper(&d, &mut procs);
    let sub = d.0.join("sub");
    std::fs::create_dir(&sub).expect("mkdir");
    // A link to an existing file elsewhere; a link to a link; a dangling link.
    let real = sub.join("real");
    std::fs::write(&real, "old").expect("write");
    std::os::unix::fs::symlink("sub/real", d.0.join("link")).expect("symlink");
    std::os::unix::fs::symlink("link", d.0.join("link2")).expect("symlink");
    std::os::unix::fs::symlink("sub/new", d.0.join("dangling")).expect("symlink");
    for (name, target) in [("link", &real), ("link2", &real), ("dangling", &sub.join("new"))] {
        let link = d.0.join(name);
        let o = checkpoint(&link, pid, &[]);
        assert!(o.status.success(), "{name}: {}", err(&o));
        assert!(std::fs::symlink_metadata(&link).expect("there").file_type().is_symlink(), "{name}: the link is left as it was");
        assert!(verified(target), "{name}: its target holds the image");
        assert_eq!(std::fs::metadata(target).expect("target").permissions().mode() & 0o777, 0o400, "{name}: mode 0400");
    }
    assert_eq!(names_in(&sub), ["new", "real"], "the temporary file was made beside the target, and is gone");
    assert_eq!(names_in(&d.0), ["dangling", "link", "link2", "sleeper", "sleeper.out", "sub"]);
    assert_untouched(pid, "after checkpoints through links");
}
