//! `cr_info`: what a checkpoint image holds, for people (default) or tools (`--json`). The
//! image is checked as `cr_restart` would check it; `--verify` also reads every page run with the
//! image's own reader (`crest_image::codec`, as `cr_restart` does: checksums, decompression) and
//! ends with a line that says what it checked and that the image is good (or exits 22).
//!
//! Dates are local (`TZ`): readable in the text, ISO 8601 in `--json` (with `time_unix`).
//! In `--json` the command line and the environment are lists of strings; an argument or
//! variable that is not UTF-8 is `{"non_utf8_bytes": [...]}`. Paths are strings.
use crest_image::{ImageFile, SpecialArea, VmaBacking};
use crest_kinds::memory::describe;

fn main() {
    let m = crest_cli::parse_args(crest_cli::commands::info());
    let path = m.get_one::<String>("file").expect("required");
    let file = crest_cli::open_image(path).unwrap_or_else(|msg| {
        eprintln!("cr_info: {msg}");
        std::process::exit(crest_cli::exits::USAGE)
    });
    let img = ImageFile::from_file(file).unwrap_or_else(|e| {
        let mut first = [0u8; 8];
        let streamed = std::fs::File::open(path).and_then(|f| std::os::unix::fs::FileExt::read_exact_at(&f, &mut first, 0)).is_ok() && crest_image::stream::is_stream(&first);
        if streamed {
            eprintln!("cr_info: {path} is an image in the stream form (cr_checkpoint --stream): cr_restart reads it as it is (cr_restart --lazy {path}); cr_info reads image files");
            std::process::exit(crest_cli::image_error_code(&e));
        }
        eprintln!("cr_info: {path}: {e}");
        std::process::exit(crest_cli::image_error_code(&e))
    });
    // An incremental image: its parents, each checked to be there and unchanged.
    let chain = img.image.parent.as_ref().map(|_| {
        let top = crest_cli::open_image(path).map_err(crest_image::ImageError::Invalid).and_then(ImageFile::from_file);
        top.and_then(|t| crest_image::chain::Chain::open(t, path))
    });
    if let (true, Some(Err(e))) = (m.get_flag("verify"), &chain) {
        eprintln!("cr_info: {e}");
        eprintln!("cr_info: {path} is NOT a good image: it must not be restarted");
        std::process::exit(crest_cli::image_error_code(e));
    }
    if let Some(out) = m.get_one::<String>("merge") {
        merge(path, img, chain, std::path::Path::new(out));
    }
    let verified = m.get_flag("verify").then(|| match verify(&img, chain.as_ref()) {
        Ok(v) => v,
        Err(e) => {
            eprintln!("cr_info: {path}: {e}");
            eprintln!("cr_info: {path} is NOT a good image: it must not be restarted");
            std::process::exit(crest_cli::image_error_code(&e));
        }
    });
    let out = if m.get_flag("json") {
        let mut v = match serde_json::to_value(&img.image) {
            Ok(v) => v,
            Err(e) => {
                eprintln!("cr_info: {path}: {e}");
                std::process::exit(libc::EIO);
            }
        };
        for_people(&mut v, &img);
        match &chain {
            Some(Ok(c)) => v["chain"] = serde_json::json!(c.paths[1..]),
            Some(Err(e)) => v["chain_error"] = e.to_string().into(),
            None => {}
        }
        if let Some(ver) = &verified {
            v["verified"] = serde_json::json!({ "page_runs": ver.runs, "page_bytes": ver.bytes, "processes": ver.processes, "images": ver.images, "good": true });
        }
        format!("{}\n", serde_json::to_string_pretty(&v).unwrap_or_default())
    } else {
        let mut out = String::new();
        describe_image(&mut out, path, &img);
        match &chain {
            Some(Ok(c)) => {
                let own: u64 = img.runs().iter().map(|(_, r)| r.len).sum();
                out.push_str(&format!(
                    "\nincremental: {} of the {} of page data are in this image, the others in its parents; the chain of {} (every parent there and unchanged):\n",
                    crest_cli::human_bytes(own),
                    crest_cli::human_bytes(img.image.page_bytes()),
                    plural(c.images.len(), "image")
                ));
                for (i, p) in c.paths.iter().enumerate() {
                    out.push_str(&format!("  {i}: {p}\n"));
                }
            }
            Some(Err(e)) => out.push_str(&format!("\nincremental: the chain is broken: {e}\n")),
            None => {}
        }
        if let Some(ver) = &verified {
            out.push_str(&format!(
                "\nverified: the header, the section table, every metadata record and all {} of page data ({} in {}) of {}: every checksum matches and every compressed run decompresses to its length; the image is good\n",
                plural(ver.runs, "run"),
                crest_cli::human_bytes(ver.bytes),
                if ver.images > 1 { format!("the {} of its chain", plural(ver.images, "image")) } else { "the image".to_string() },
                plural(ver.processes, "process")
            ));
        }
        out
    };
    // A closed pipe (`cr_info ... | head`) is not an error worth a message.
    let _ = std::io::Write::write_all(&mut std::io::stdout(), out.as_bytes());
}

/// `--merge OUT`: the chain of `img` (at `path`) written as one standalone image OUT; exits.
fn merge(path: &str, img: ImageFile, chain: Option<Result<crest_image::chain::Chain, crest_image::ImageError>>, out: &std::path::Path) -> ! {
    let chain = match chain {
        Some(c) => c,
        None => Ok(crest_image::chain::Chain { images: vec![img], paths: vec![path.to_string()] }),
    };
    let merged = chain.and_then(|c| crest_image::chain::merge_into(&c, out).map(|_| c.images.len()));
    match merged {
        Ok(n) => {
            let size = std::fs::metadata(out).map(|m| m.len()).unwrap_or(0);
            println!(
                "merged {} into {} ({}), a standalone image",
                if n > 1 { format!("the chain of {} images of {path}", n) } else { format!("{path}, a standalone image already,") },
                out.display(),
                crest_cli::human_bytes(size)
            );
            std::process::exit(0)
        }
        Err(e) => {
            eprintln!("cr_info: {path}: {e}");
            eprintln!("cr_info: {} was not written", out.display());
            std::process::exit(crest_cli::image_error_code(&e))
        }
    }
}

/// `n thing(s)`.
fn plural(n: usize, thing: &str) -> String {
    match (n, thing.ends_with('s')) {
        (1, _) => format!("1 {thing}"),
        (_, true) => format!("{n} {thing}es"),
        _ => format!("{n} {thing}s"),
    }
}

/// What `--verify` checked.
struct Verified {
    runs: usize,
    bytes: u64,
    processes: usize,
    /// Images read: more than one for an incremental image and its parents.
    images: usize,
}

impl Verified {
    fn of(img: &ImageFile) -> Verified {
        let runs = img.runs();
        Verified { runs: runs.len(), bytes: runs.iter().map(|(_, r)| r.stored_len()).sum(), processes: img.image.processes.len(), images: 1 }
    }
}

/// Reads every page run of `img` and, for an incremental image, of every image of its chain
/// (which must be whole).
fn verify(img: &ImageFile, chain: Option<&Result<crest_image::chain::Chain, crest_image::ImageError>>) -> Result<Verified, crest_image::ImageError> {
    img.verify_pages(2)?;
    let mut v = Verified::of(img);
    match chain {
        None | Some(Err(_)) => {}
        Some(Ok(c)) => {
            for parent in &c.images[1..] {
                parent.verify_pages(2)?;
                let p = Verified::of(parent);
                v.runs += p.runs;
                v.bytes += p.bytes;
                v.images += 1;
            }
        }
    }
    Ok(v)
}

/// `time` as a readable local date: `2026-12-04 03:31:39 UTC`; ISO 8601 with `iso`.
fn date(time: u64, iso: bool) -> String {
    let Some(t) = i64::try_from(time).ok().and_then(crest_ptrace::sys::local_time) else { return format!("{time} (unix time)") };
    let off = t.offset.unsigned_abs();
    let sign = if t.offset < 0 { '-' } else { '+' };
    if iso {
        format!("{:04}-{:02}-{:02}T{:02}:{:02}:{:02}{sign}{:02}:{:02}", t.year, t.month, t.day, t.hour, t.minute, t.second, off / 3600, off / 60 % 60)
    } else {
        let zone = if t.zone.is_empty() { format!("{sign}{:02}{:02}", off / 3600, off / 60 % 60) } else { t.zone };
        format!("{:04}-{:02}-{:02} {:02}:{:02}:{:02} {zone}", t.year, t.month, t.day, t.hour, t.minute, t.second)
    }
}

/// NUL-separated strings, each as a JSON string, or where it is not UTF-8 as
/// `{"non_utf8_bytes": [...]}`.
fn strings(bytes: &[u8]) -> serde_json::Value {
    let mut parts: Vec<&[u8]> = bytes.split(|&b| b == 0).collect();
    if parts.last().is_some_and(|l| l.is_empty()) {
        parts.pop();
    }
    parts
        .into_iter()
        .map(|a| match std::str::from_utf8(a) {
            Ok(s) => serde_json::Value::String(s.to_string()),
            Err(_) => serde_json::json!({ "non_utf8_bytes": a }),
        })
        .collect()
}

/// The JSON of the image, with what people read as text: the time as an ISO 8601 date (and
/// `time_unix`), each process's command line and environment as lists of strings.
fn for_people(v: &mut serde_json::Value, img: &ImageFile) {
    v["time_unix"] = img.image.time.into();
    v["time"] = date(img.image.time, true).into();
    for (i, p) in img.image.processes.iter().enumerate() {
        let pv = &mut v["processes"][i];
        pv["cmdline"] = strings(&p.cmdline);
        pv["environment"] = environment(img, p).map_or(serde_json::Value::Null, |e| strings(&e));
    }
}

/// The environment strings of `p` (`mm.env_start..env_end`, as `/proc/PID/environ` shows
/// them), read from the saved pages; `None` for a zombie or when they were not saved.
fn environment(img: &ImageFile, p: &crest_image::Process) -> Option<Vec<u8>> {
    let (start, end) = (p.mm.env_start, p.mm.env_end);
    if p.exit_status.is_some() || end <= start || end - start > 1 << 20 {
        return None;
    }
    let vma = p.vmas.iter().find(|v| v.start <= start && end <= v.end)?;
    let mut out = vec![0u8; (end - start) as usize];
    let mut covered = 0;
    let mut reader = crest_image::codec::RunReader::new().ok()?;
    let mut data = Vec::new();
    for r in vma.pages.iter().filter(|r| r.vaddr < end && start < r.vaddr + r.len) {
        reader.read(&img.file, p.pid, r, &mut data).ok()?;
        let (from, to) = (start.max(r.vaddr), end.min(r.vaddr + r.len));
        out[(from - start) as usize..(to - start) as usize].copy_from_slice(data.get((from - r.vaddr) as usize..(to - r.vaddr) as usize)?);
        covered += to - from;
    }
    (covered > 0).then_some(out)
}

fn describe_image(o: &mut String, path: &str, img: &ImageFile) {
    use std::fmt::Write;
    let i = &img.image;
    let size = crest_cli::human_bytes;
    let _ = writeln!(o, "image:    {path} ({}, format {}.{}, written by {})", size(img.len), img.header.major, img.header.minor, i.tool);
    let _ = writeln!(o, "taken:    {} on {} (Linux {}), scope {}", date(i.time, false), i.host, i.kernel, i.scope);
    if let Some(l) = &i.network_lock {
        let _ = writeln!(
            o,
            "locked:   {} TCP connection(s) by the {} table inet {} on {}, until cr_restart removes it (to let them go instead: {} delete table inet {})",
            l.connections, l.tool, l.table, i.host, l.tool, l.table
        );
    }
    // Sections of kinds this crest does not know, skipped (those it must understand are refused).
    let skipped: Vec<String> = img
        .sections
        .iter()
        .filter(|s| matches!(s.kind, crest_image::SectionKind::Other(k) if !crest_image::marker_kinds::UNDERSTOOD.contains(&k)))
        .map(|s| format!("{} ({})", s.kind, size(s.len)))
        .collect();
    if !skipped.is_empty() {
        let _ = writeln!(o, "skipped:  sections this crest does not know: {}", skipped.join(", "));
    }
    let (plain, stored) = (i.page_bytes(), i.stored_page_bytes());
    if stored == plain {
        let _ = writeln!(o, "pages:    {}", size(plain));
    } else {
        let _ = writeln!(o, "pages:    {}, stored in {} (zstd, {:.2}x)", size(plain), size(stored), plain as f64 / stored.max(1) as f64);
    }
    // What a restart on another machine needs besides the image.
    let live: Vec<&crest_image::Process> = i.processes.iter().filter(|p| p.exit_status.is_none()).collect();
    let mut cpu: Vec<String> = live.iter().flat_map(|p| crest_restore::preflight::cpu_state_used(p)).collect();
    cpu.sort();
    cpu.dedup();
    let mut files: Vec<String> = live.iter().flat_map(|p| crest_restore::preflight::paths(p)).map(|(path, _)| path).filter(|path| !path.is_empty()).collect();
    files.sort();
    files.dedup();
    let _ = writeln!(
        o,
        "needs:    Linux {} or a kernel with the same vDSO layout; CPU state {}",
        i.kernel,
        if cpu.is_empty() { "x87 and SSE only".to_string() } else { format!("x87, SSE, {}", cpu.join(", ")) }
    );
    let _ = writeln!(
        o,
        "          {} file{} at the same paths, unchanged unless the image holds their contents (--save-all; --relocate moves them): {}",
        files.len(),
        if files.len() == 1 { "" } else { "s" },
        files.join(" ")
    );
    for p in &i.processes {
        let cmd: Vec<String> = p.cmdline.split(|&b| b == 0).filter(|a| !a.is_empty()).map(|a| String::from_utf8_lossy(a).into_owned()).collect();
        if let Some(status) = p.exit_status {
            let how = if status & 0x7f == 0 { format!("exited with status {}", (status >> 8) & 0xff) } else { format!("killed by signal {}", status & 0x7f) };
            let _ = writeln!(o, "\nprocess {} (parent {}, group {}, session {}): a zombie, {how}", p.pid, p.ppid, p.pgid, p.sid);
            continue;
        }
        let _ = writeln!(o, "\nprocess {} (parent {}, group {}, session {}): {}", p.pid, p.ppid, p.pgid, p.sid, cmd.join(" "));
        let deleted = if p.cwd_deleted.is_some() { " (deleted)" } else { "" };
        let _ = writeln!(o, "  exe {}  cwd {}{deleted}  uid {}  umask {:03o}", p.exe, p.cwd, p.creds.uid[0], p.umask);
        for t in &p.threads {
            let _ = writeln!(o, "  thread {} ({}): rip {:#x} rsp {:#x}, xsave {} bytes, blocked {:#x}, {} pending", t.tid, t.comm, t.regs.rip, t.regs.rsp, t.xsave.len(), t.sigmask, t.pending.len());
        }
        let _ = writeln!(o, "  mappings ({}):", p.vmas.len());
        for v in &p.vmas {
            let prot = format!(
                "{}{}{}{}",
                if v.prot & 1 != 0 { 'r' } else { '-' },
                if v.prot & 2 != 0 { 'w' } else { '-' },
                if v.prot & 4 != 0 { 'x' } else { '-' },
                if v.flags & crest_image::vma_flags::SHARED != 0 { 's' } else { 'p' }
            );
            let saved: u64 = v.pages.iter().map(|r| r.len).sum();
            let extra = match &v.backing {
                VmaBacking::File { offset, .. } | VmaBacking::Deleted { offset, .. } => format!(" @{offset:#x}"),
                VmaBacking::Special(SpecialArea::Vdso) => String::new(),
                VmaBacking::PacketRing { rx_head, .. } if *rx_head != 0 => format!(" (receive ring at frame {rx_head})"),
                _ => String::new(),
            };
            let inherited: u64 = v.inherited.iter().map(|r| r.1).sum();
            let shared = if inherited > 0 { format!(" (and {} KiB the parent's, shared)", inherited >> 10) } else { String::new() };
            let _ = writeln!(o, "    {:>14x}-{:<14x} {prot} {:>10} KiB, {:>10} KiB saved  {}{extra}{shared}", v.start, v.end, (v.end - v.start) >> 10, saved >> 10, describe(&v.backing));
        }
        let _ = writeln!(o, "  descriptors ({}):", p.fds.len());
        for f in &p.fds {
            let what = crest_kinds::fd::describe(&f.kind);
            let _ = writeln!(o, "    {:>4}{} flags {:#o}: {what}", f.fd, if f.cloexec { " (cloexec)" } else { "" }, f.flags);
        }
        if !p.dropped.is_empty() {
            let _ = writeln!(o, "  left out by --drop-unsupported ({}):", p.dropped.len());
            for d in &p.dropped {
                let _ = writeln!(o, "    {d}");
            }
        }
        if !p.attrs.semadj.is_empty() {
            let _ = writeln!(o, "  semaphore adjustments (SEM_UNDO): {}", p.attrs.semadj.iter().map(|(id, n, a)| format!("set {id} #{n} {a:+}")).collect::<Vec<_>>().join(", "));
        }
        let _ = writeln!(o, "  signal actions: {}", p.sigactions.iter().map(|a| a.signo.to_string()).collect::<Vec<_>>().join(" "));
        // What the image holds of every kind of per-process state, by the fields each restores.
        let _ = writeln!(o, "  state by kind:");
        for (kind, fields) in crest_kinds::process::summary(p) {
            let _ = writeln!(o, "    {kind}: {fields}");
        }
    }
    // The image-wide kinds (SysV IPC objects), each as its kind describes it.
    for line in crest_kinds::image::IMAGE_KINDS.iter().flat_map(|k| k.describe(i)) {
        let _ = writeln!(o, "\n{line}");
    }
}
