//! The install, as an administrator would do it: `make install` into a temporary DESTDIR with
//! PREFIX=/usr must put there exactly the files docs/admin-guide.md lists; the man pages and
//! completions must carry every visible option of every command; the installed commands must
//! check the machine and checkpoint and restart a running program; as root, an ordinary user
//! must restore a PID through a `cr_restart` given CAP_CHECKPOINT_RESTORE as the guide says,
//! without the restored process keeping it; `make uninstall` must remove every file again.
//! Everything started is killed by PID and waited for, and the tree is removed, even on failure.
mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;

/// The files the guide lists between its markers, relative to PREFIX.
fn guide_files() -> BTreeSet<String> {
    let guide = std::fs::read_to_string(root().join("docs/admin-guide.md")).expect("docs/admin-guide.md");
    let begin = guide.find("<!-- installed-files:begin -->").expect("the guide marks its file list");
    let end = guide.find("<!-- installed-files:end -->").expect("the guide ends its file list");
    guide[begin..end].lines().filter_map(|l| l.trim().strip_prefix("PREFIX/")).map(str::to_string).collect()
}

/// Every regular file under `dir`, relative to it.
fn files_under(dir: &Path) -> BTreeSet<String> {
    fn walk(base: &Path, d: &Path, out: &mut BTreeSet<String>) {
        for e in std::fs::read_dir(d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(base, &p, out);
            } else {
                out.insert(p.strip_prefix(base).expect("under base").to_string_lossy().into_owned());
            }
        }
    }
    let mut out = BTreeSet::new();
    walk(dir, dir, &mut out);
    out
}

/// `make TARGET` in the source tree, installing the binaries cargo built for this test.
fn make(target: &str, dest: &Path, gen: &Path) -> std::process::Output {
    let build_dir = Path::new(env!("CARGO_BIN_EXE_crest-gen")).parent().expect("bin dir").to_path_buf();
    Command::new("make")
        .arg("-s")
        .arg("-C")
        .arg(root())
        .arg(target)
        .arg("NO_BUILD=1")
        .arg("PREFIX=/usr")
        .arg(format!("DESTDIR={}", dest.display()))
        .arg(format!("BUILD_DIR={}", build_dir.display()))
        .arg(format!("GEN={}", gen.display()))
        .output()
        .expect("make runs")
}

#[test]
fn install_check_checkpoint_restart_uninstall() {
    let d = Dir::new("install");
    let dest = d.0.join("root");
    let out = make("install", &dest, &d.0.join("gen"));
    assert!(out.status.success(), "make install failed:\n{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    let usr = dest.join("usr");

    // Exactly the guide's list, both ways.
    let listed = guide_files();
    let installed = files_under(&usr);
    assert!(listed.len() >= 20, "the guide lists {} files", listed.len());
    let missing: Vec<_> = listed.difference(&installed).collect();
    let unlisted: Vec<_> = installed.difference(&listed).collect();
    assert!(missing.is_empty() && unlisted.is_empty(), "listed but not installed: {missing:?}\ninstalled but not in the guide: {unlisted:?}");

    // The man pages and completions come from the commands' own definitions.
    for cmd in crest_cli::commands::all() {
        let name = cmd.get_name().to_string();
        assert!(installed.contains(&format!("bin/{name}")), "{name} is installed");
        let read = |rel: String| std::fs::read_to_string(usr.join(&rel)).unwrap_or_else(|e| panic!("{rel}: {e}"));
        let man = read(format!("share/man/man1/{name}.1")).replace("\\-", "-");
        let bash = read(format!("share/bash-completion/completions/{name}"));
        let zsh = read(format!("share/zsh/site-functions/_{name}"));
        let fish = read(format!("share/fish/vendor_completions.d/{name}.fish"));
        assert!(man.contains(".SH \"EXIT STATUS\"") || man.contains(".SH EXIT STATUS"), "{name}.1 has an EXIT STATUS section");
        for arg in cmd.get_arguments() {
            if let Some(long) = arg.get_long() {
                let flag = format!("--{long}");
                let word = |s: &str| s.split(|c: char| !(c.is_alphanumeric() || c == '-')).any(|w| w == flag);
                assert!(man.contains(&flag), "{name}.1 documents {flag} (hidden ones under COMPATIBILITY)");
                // Completions offer what --help shows and works: not a refused or a hidden option.
                let offered = !arg.is_hide_set() && !crest_cli::commands::is_refused(arg);
                assert_eq!(word(&bash), offered, "bash completion of {name} offers {flag}: {offered}");
                assert_eq!(word(&zsh), offered, "zsh completion of {name} offers {flag}: {offered}");
                assert_eq!(fish.contains(&format!("-l {long} ")) || fish.contains(&format!("-l {long}\n")), offered, "fish completion of {name} offers {flag}: {offered}");
            }
        }
    }

    let bin = |n: &str| usr.join("bin").join(n);
    let check = Command::new(bin("cr_check")).output().expect("cr_check runs");
    let report = String::from_utf8_lossy(&check.stdout);
    assert!(check.status.success() && report.contains("\nready: "), "installed cr_check: {:?}\n{report}", check.status);
    let json = Command::new(bin("cr_check")).arg("--json").output().expect("cr_check --json runs");
    let v: serde_json::Value = serde_json::from_slice(&json.stdout).expect("cr_check --json prints JSON");
    assert_eq!(v["ready"], serde_json::Value::Bool(true), "{v}");
    assert!(v["checks"].as_array().is_some_and(|c| c.iter().any(|c| c["name"] == "ptrace" && c["status"] == "OK")), "{v}");

    round_trip_installed(&d, &bin);
    libcr_installed(&d, &usr, &dest);
    if is_root() {
        capability_instead_of_root(&d, &bin);
    } else {
        skip("the file-capability restart: needs root (to set the capability and become nobody)");
    }

    let out = make("uninstall", &dest, &d.0.join("gen"));
    assert!(out.status.success(), "make uninstall failed:\n{}", String::from_utf8_lossy(&out.stderr));
    let left = files_under(&usr);
    assert!(left.is_empty(), "make uninstall left {left:?}");
}

/// Checkpoints a counter with the installed cr_checkpoint and restarts it with the installed
/// cr_restart; it must finish its count, with its PID when run as root.
fn round_trip_installed(d: &Dir, bin: &dyn Fn(&str) -> PathBuf) {
    let prog = d.0.join("counter");
    gcc("demo/counter.c", &prog, &[]);
    let out = d.0.join("out.txt");
    let mut child = Command::new(&prog).arg("25").current_dir(&d.0).stdout(std::fs::File::create(&out).expect("out")).stdin(Stdio::null()).spawn().expect("counter");
    let pid = child.id() as i32;
    let mut reaper = Reaper(vec![pid]);
    wait_for(&out, "count 3,", Duration::from_secs(20));
    let img = d.0.join("img");
    let ck = Command::new(bin("cr_checkpoint")).arg("--kill").arg("-f").arg(&img).arg(pid.to_string()).output().expect("cr_checkpoint runs");
    assert!(ck.status.success(), "installed cr_checkpoint: {}", String::from_utf8_lossy(&ck.stderr));
    let _ = child.wait();
    let info = Command::new(bin("cr_info")).arg("--verify").arg(&img).output().expect("cr_info runs");
    assert!(info.status.success() && String::from_utf8_lossy(&info.stdout).contains(&format!("process {pid} ")), "installed cr_info: {}", String::from_utf8_lossy(&info.stderr));
    let mut rs = Command::new(bin("cr_restart"));
    if !is_root() {
        rs.arg("--no-restore-pid");
    }
    let mut rs = rs.arg(&img).stdin(Stdio::null()).stderr(Stdio::piped()).spawn().expect("cr_restart runs");
    reaper.0.push(rs.id() as i32);
    let st = wait_child(&mut rs, Duration::from_secs(30));
    let text = std::fs::read_to_string(&out).unwrap_or_default();
    assert!(st.success() && text.contains("count 25,"), "installed cr_restart: {st:?}\n{text}");
    if is_root() {
        assert!(text.lines().all(|l| l.starts_with(&format!("pid {pid}:"))), "the PID is restored:\n{text}");
    }
    reaper.0.clear();
}

/// The guide's "PID restore without root": nobody restores a PID through a cr_restart with
/// the file capability CAP_CHECKPOINT_RESTORE, and the restored process holds no capability;
/// cr_check installed beside that cr_restart says PIDs can be restored.
fn capability_instead_of_root(d: &Dir, bin: &dyn Fn(&str) -> PathBuf) {
    let work = d.0.join("nobody");
    std::fs::create_dir_all(&work).expect("dir");
    std::fs::set_permissions(&work, std::os::unix::fs::PermissionsExt::from_mode(0o777)).expect("chmod");
    let capable = work.join("cr_restart");
    std::fs::copy(bin("cr_restart"), &capable).expect("copy cr_restart");
    match Command::new("setcap").arg("cap_checkpoint_restore+ep").arg(&capable).output() {
        Ok(o) if o.status.success() => {}
        Ok(o) => return skip(&format!("the file-capability restart: setcap failed: {}", String::from_utf8_lossy(&o.stderr))),
        Err(e) => return skip(&format!("the file-capability restart: no setcap ({e})")),
    }
    if Command::new("setpriv").arg("--version").output().is_err() {
        return skip("the file-capability restart: no setpriv");
    }
    std::fs::copy(d.0.join("counter"), work.join("counter")).expect("copy counter");
    std::fs::copy(bin("cr_check"), work.join("cr_check")).expect("copy cr_check");
    // As nobody: start, checkpoint, restart with the saved PID, read the restored process's
    // capabilities, let it finish. Every PID is written to pids.txt for the reaper.
    let script = r#"
        exec 2>err.txt
        ./cr_check --json > check.json || exit 10
        ./counter 25 > out.txt & p=$!; echo $p >> pids.txt
        i=0; until grep -q 'count 3,' out.txt 2>/dev/null; do i=$((i+1)); [ $i -gt 200 ] && exit 11; sleep 0.05; done
        "$CK" --kill $p || exit 12
        wait $p
        ./cr_restart context.$p & r=$!; echo $r >> pids.txt
        i=0; c=; until [ -n "$c" ]; do c=$(tr -d ' ' < /proc/$r/task/$r/children 2>/dev/null); i=$((i+1)); [ $i -gt 200 ] && break; sleep 0.02; done
        echo "restored=$c saved=$p"
        [ -n "$c" ] && grep -E '^Cap(Prm|Eff|Amb)' /proc/$c/status
        wait $r; echo "status=$?"
    "#;
    let mut sh = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--", "sh", "-c", script])
        .env("CK", bin("cr_checkpoint"))
        .current_dir(&work)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .expect("setpriv runs");
    let mut reaper = Reaper(vec![sh.id() as i32]);
    let st = wait_child(&mut sh, Duration::from_secs(60));
    let mut text = String::new();
    let _ = std::io::Read::read_to_string(sh.stdout.as_mut().expect("piped"), &mut text);
    reaper.0.extend(std::fs::read_to_string(work.join("pids.txt")).unwrap_or_default().lines().filter_map(|l| l.trim().parse::<i32>().ok()));
    let err = std::fs::read_to_string(work.join("err.txt")).unwrap_or_default();
    let counted = std::fs::read_to_string(work.join("out.txt")).unwrap_or_default();
    assert!(st.success() && text.contains("status=0"), "as nobody with a capable cr_restart: {st:?}\n{text}\nstderr: {err}\n{counted}");
    let line = text.lines().find(|l| l.starts_with("restored=")).unwrap_or_default();
    let (restored, saved) = line.trim_start_matches("restored=").split_once(" saved=").unwrap_or_default();
    assert_eq!(restored, saved, "the saved PID is restored without root:\n{text}\nstderr: {err}");
    for set in ["CapPrm", "CapEff", "CapAmb"] {
        assert!(text.lines().any(|l| l.starts_with(set) && l.ends_with("0000000000000000")), "the restored process holds no {set}:\n{text}");
    }
    assert!(counted.contains("count 25,"), "the restored counter finished:\n{counted}");
    let check: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(work.join("check.json")).unwrap_or_default()).expect("cr_check --json");
    let pid_line = check["checks"].as_array().and_then(|c| c.iter().find(|c| c["name"] == "PID restore")).cloned().unwrap_or_default();
    assert!(pid_line["status"] == "OK" && check["pid_restore"] == true, "cr_check beside the capable cr_restart sees it: {pid_line}");
    reaper.0.clear();
}

/// A BLCR-aware program builds with `pkg-config --cflags --libs libcr` against the install
/// and runs with the installed libcr.so.0.
fn libcr_installed(d: &Dir, usr: &Path, dest: &Path) {
    let pc = |arg: &str| {
        Command::new("pkg-config")
            .arg(arg)
            .arg("libcr")
            .env("PKG_CONFIG_PATH", usr.join("lib/pkgconfig"))
            .env("PKG_CONFIG_SYSROOT_DIR", dest)
            .env("PKG_CONFIG_ALLOW_SYSTEM_CFLAGS", "1")
            .env("PKG_CONFIG_ALLOW_SYSTEM_LIBS", "1")
            .output()
    };
    let (Ok(cflags), Ok(libs)) = (pc("--cflags"), pc("--libs")) else { return skip("pkg-config libcr: no pkg-config here") };
    assert!(cflags.status.success() && libs.status.success(), "pkg-config libcr: {}", String::from_utf8_lossy(&cflags.stderr));
    let words = |o: &std::process::Output| String::from_utf8_lossy(&o.stdout).split_whitespace().map(str::to_string).collect::<Vec<_>>();
    let flags: Vec<String> = words(&cflags).into_iter().chain(words(&libs)).collect();
    let prog = d.0.join("abi");
    gcc("tests/c/libcr_abi.c", &prog, &flags.iter().map(String::as_str).collect::<Vec<_>>());
    let o = Command::new(&prog).env("LD_LIBRARY_PATH", usr.join("lib")).output().expect("runs");
    assert!(o.status.success() && String::from_utf8_lossy(&o.stdout).contains("CR_ERESTARTED 2363"), "a program built with pkg-config libcr: {}", String::from_utf8_lossy(&o.stderr));
}
