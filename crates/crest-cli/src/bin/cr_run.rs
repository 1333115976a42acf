//! `cr_run [--omit|--run] [--] COMMAND [ARGS...]`: BLCR's cr_run. Runs COMMAND with
//! `libcr_run.so.0` (or `libcr_omit.so.0`) first in `LD_PRELOAD`, named by soname as BLCR
//! did, every earlier libcr_run or libcr_omit entry removed. crest checkpoints any process
//! without a preload; libcr_omit leaves the program out of checkpoints. A statically linked
//! program loads no preload library: cr_run says so, then runs it as it is.
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};

use crest_cli::last_given;

fn main() {
    let m = crest_cli::parse_args(crest_cli::commands::run());
    let omit = last_given(&m, &["omit", "run"]) == Some("omit");
    let words: Vec<&String> = m.get_many::<String>("command").expect("required").collect();
    let (prog, args) = words.split_first().expect("at least the command");
    let lib = if omit { "libcr_omit.so.0" } else { "libcr_run.so.0" };
    let earlier = std::env::var("LD_PRELOAD").unwrap_or_default();
    let kept = earlier.split([':', ' ']).filter(|e| !e.is_empty()).filter(|e| {
        let base = e.rsplit('/').next().unwrap_or(e);
        !base.starts_with("libcr_run.so") && !base.starts_with("libcr_omit.so")
    });
    let preload = std::iter::once(lib).chain(kept).collect::<Vec<_>>().join(":");
    if let Some(path) = find(prog) {
        if is_static(&path) {
            eprintln!("cr_run: {prog} is statically linked, so it loads no preload library and {lib} cannot reach it; it runs without it (crest checkpoints it all the same, without libcr callbacks)");
        }
    }
    let e = std::process::Command::new(prog).args(args).env("LD_PRELOAD", preload).exec();
    eprintln!("cr_run: cannot run {prog}: {e}");
    std::process::exit(127)
}

/// The file `prog` names: a path, or found on PATH.
fn find(prog: &str) -> Option<PathBuf> {
    if prog.contains('/') {
        return Some(PathBuf::from(prog));
    }
    std::env::split_paths(&std::env::var_os("PATH")?).map(|d| d.join(prog)).find(|p| p.is_file())
}

/// Whether `path` is an ELF executable without a program interpreter (statically linked).
fn is_static(path: &Path) -> bool {
    let Ok(data) = std::fs::read(path) else { return false };
    if data.len() < 64 || &data[..4] != b"\x7fELF" || data[4] != 2 {
        return false;
    }
    let u16_at = |o: usize| u16::from_le_bytes([data[o], data[o + 1]]) as usize;
    let phoff = u64::from_le_bytes(data[0x20..0x28].try_into().unwrap_or_default()) as usize;
    let (size, count) = (u16_at(0x36), u16_at(0x38));
    !(0..count).any(|i| {
        let at = phoff + i * size;
        data.get(at..at + 4).is_some_and(|t| u32::from_le_bytes(t.try_into().unwrap_or_default()) == 3)
    })
}
