//! `cr_info`: what a checkpoint image holds, for people (default) or tools (`--json`). The
//! image is checked as `cr_restart` would check it; `--verify` also reads every page.
use crest_image::{FdKind, ImageFile, SpecialArea, VmaBacking};
use crest_kinds::memory::describe;

fn main() {
    let m = crest_cli::parse_args(crest_cli::commands::info());
    let path = m.get_one::<String>("file").expect("required");
    let file = crest_cli::open_image(path).unwrap_or_else(|msg| {
        eprintln!("cr_info: {msg}");
        std::process::exit(crest_cli::exits::USAGE)
    });
    let img = ImageFile::from_file(file).unwrap_or_else(|e| {
        eprintln!("cr_info: {path}: {e}");
        std::process::exit(crest_cli::image_error_code(&e))
    });
    let verified = m.get_flag("verify").then(|| {
        if let Err(e) = img.verify_pages(2) {
            eprintln!("cr_info: {path}: {e}");
            std::process::exit(crest_cli::image_error_code(&e));
        }
    });
    if m.get_flag("json") {
        match serde_json::to_string_pretty(&img.image) {
            Ok(s) => {
                let _ = std::io::Write::write_all(&mut std::io::stdout(), format!("{s}\n").as_bytes());
            }
            Err(e) => {
                eprintln!("cr_info: {path}: {e}");
                std::process::exit(1);
            }
        }
        return;
    }
    let mut out = String::new();
    describe_image(&mut out, path, &img);
    // A closed pipe (`cr_info ... | head`) is not an error worth a message.
    let _ = std::io::Write::write_all(&mut std::io::stdout(), out.as_bytes());
}

fn describe_image(o: &mut String, path: &str, img: &ImageFile) {
    use std::fmt::Write;
    let i = &img.image;
    let _ = writeln!(o, "image:    {path} ({} bytes, format {}.{}, written by {})", img.len, img.header.major, img.header.minor, i.tool);
    let _ = writeln!(o, "taken:    on {} (Linux {}), at {} (unix time), scope {}", i.host, i.kernel, i.time, i.scope);
    let (plain, stored) = (i.page_bytes(), i.stored_page_bytes());
    if stored == plain {
        let _ = writeln!(o, "pages:    {plain} bytes");
    } else {
        let _ = writeln!(o, "pages:    {plain} bytes, stored in {stored} (zstd, {:.2}x)", plain as f64 / stored.max(1) as f64);
    }
    for p in &i.processes {
        let cmd: Vec<String> = p.cmdline.split(|&b| b == 0).filter(|a| !a.is_empty()).map(|a| String::from_utf8_lossy(a).into_owned()).collect();
        if let Some(status) = p.exit_status {
            let how = if status & 0x7f == 0 { format!("exited with status {}", (status >> 8) & 0xff) } else { format!("killed by signal {}", status & 0x7f) };
            let _ = writeln!(o, "\nprocess {} (parent {}, group {}, session {}): a zombie, {how}", p.pid, p.ppid, p.pgid, p.sid);
            continue;
        }
        let _ = writeln!(o, "\nprocess {} (parent {}, group {}, session {}): {}", p.pid, p.ppid, p.pgid, p.sid, cmd.join(" "));
        let _ = writeln!(o, "  exe {}  cwd {}  uid {}  umask {:03o}", p.exe, p.cwd, p.creds.uid[0], p.umask);
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
                VmaBacking::File { offset, .. } => format!(" @{offset:#x}"),
                VmaBacking::Special(SpecialArea::Vdso) => String::new(),
                _ => String::new(),
            };
            let _ = writeln!(o, "    {:>14x}-{:<14x} {prot} {:>10} KiB, {:>10} KiB saved  {}{extra}", v.start, v.end, (v.end - v.start) >> 10, saved >> 10, describe(&v.backing));
        }
        let _ = writeln!(o, "  descriptors ({}):", p.fds.len());
        for f in &p.fds {
            let what = match &f.kind {
                FdKind::Regular { path, pos, .. } => format!("file {path} at offset {pos}"),
                FdKind::Directory { path, .. } => format!("directory {path}"),
                FdKind::CharDevice { path, .. } => format!("device {path}"),
                FdKind::EventFd { count, semaphore } => format!("eventfd, counter {count}{}", if *semaphore { ", semaphore" } else { "" }),
                FdKind::Pipe { id, write_end, data, .. } => {
                    format!("{} end of pipe {id}{}", if *write_end { "write" } else { "read" }, if data.is_empty() { String::new() } else { format!(", {} bytes buffered", data.len()) })
                }
                FdKind::Epoll { targets } => format!("epoll watching fds {:?}", targets.iter().map(|t| t.0).collect::<Vec<_>>()),
                FdKind::Fifo { path, data } => format!("FIFO {path}{}", if data.is_empty() { String::new() } else { format!(", {} bytes buffered", data.len()) }),
                FdKind::Memfd { name, size, pos, .. } => format!("memfd {name}, {size} bytes, at offset {pos}"),
                FdKind::Inherited { what } => format!("{what} (taken from cr_restart's own descriptor)"),
            };
            let _ = writeln!(o, "    {:>4}{} flags {:#o}: {what}", f.fd, if f.cloexec { " (cloexec)" } else { "" }, f.flags);
        }
        let _ = writeln!(o, "  signal actions: {}", p.sigactions.iter().map(|a| a.signo.to_string()).collect::<Vec<_>>().join(" "));
    }
    for obj in &i.ipc {
        let what = match &obj.kind {
            crest_image::IpcKind::Shm { size, removed } => format!("SysV shared memory, {size} bytes{}", if *removed { ", removed" } else { "" }),
            crest_image::IpcKind::Sem { values } => format!("SysV semaphore set, values {values:?}"),
        };
        let _ = writeln!(o, "\nipc {} (key {:#x}, mode {:o}, uid {}): {what}", obj.id, obj.key, obj.mode, obj.uid);
    }
}
