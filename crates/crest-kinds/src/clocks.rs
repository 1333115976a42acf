//! The clocks a process reads that count from boot, `CLOCK_MONOTONIC` and `CLOCK_BOOTTIME`:
//! saved as the processes saw them when frozen, and, when the restarting machine's clocks are
//! behind those values (it rebooted since, or it is another machine), given back to the
//! restored processes through a time namespace whose offsets make them go on from there.
//! A restart on the same boot leaves them on the machine's clocks: they see the time the image
//! waited pass, as after a suspend.
//!
//! The offsets of a time namespace are relative to the machine's clocks, and can be set only
//! before its first process exists: `cr_restart` makes the namespace for its children (which
//! it then creates) and writes the offsets, or, without the privilege (`CAP_SYS_ADMIN`), says
//! that the clocks will be behind. A process already in a time namespace (restored that way)
//! is checkpointed with its namespace's offsets added.

use crest_image::Clocks;

use crate::KindError;

/// The offsets `(monotonic, boottime)`, in nanoseconds, of the time namespace `pid` creates
/// its children in (its `/proc/PID/timens_offsets`; zeros in the machine's own).
fn offsets(pid: Option<i32>) -> (i64, i64) {
    let path = match pid {
        Some(p) => format!("/proc/{p}/timens_offsets"),
        None => "/proc/self/timens_offsets".into(),
    };
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let field = |name: &str| {
        text.lines().find_map(|l| {
            let mut w = l.split_whitespace();
            (w.next() == Some(name)).then(|| {
                let secs: i64 = w.next().and_then(|v| v.parse().ok()).unwrap_or(0);
                let nanos: i64 = w.next().and_then(|v| v.parse().ok()).unwrap_or(0);
                secs * 1_000_000_000 + nanos
            })
        })
    };
    (field("monotonic").unwrap_or(0), field("boottime").unwrap_or(0))
}

/// The machine's clocks now (`(monotonic, boottime)` in nanoseconds, as the initial time
/// namespace reads them), from the caller's own and its namespace's offsets.
fn machine_now() -> Result<(i64, i64), KindError> {
    let read = |c, name| crest_ptrace::sys::clock_now_ns(c).map(|n| n as i64).map_err(|e| KindError::io(format!("reading {name}"), e));
    let (m, b) = (read(libc::CLOCK_MONOTONIC, "CLOCK_MONOTONIC")?, read(libc::CLOCK_BOOTTIME, "CLOCK_BOOTTIME")?);
    let (om, ob) = offsets(None);
    Ok((m - om, b - ob))
}

/// The clocks of `pid` as it sees them now. Every process of `pids` must share its time
/// namespace, and create its children in it: otherwise the checkpoint is refused, naming it.
pub fn dump(pid: i32, pids: &[i32]) -> Result<Clocks, KindError> {
    let ns = |p: i32, which: &str| std::fs::read_link(format!("/proc/{p}/ns/{which}")).ok();
    let theirs = ns(pid, "time");
    for &p in pids {
        // A process whose namespaces cannot be read any more is ending (its namespaces are let
        // go before it becomes a zombie): it makes no difference.
        let differs = |which: &str| matches!((ns(p, which), &theirs), (Some(a), Some(b)) if &a != b);
        if differs("time") || differs("time_for_children") {
            return Err(KindError::Unsupported(format!("PID {p} is in another time namespace than PID {pid}, or makes one for its children: one image holds one view of the clocks")));
        }
    }
    let (m, b) = machine_now()?;
    let (om, ob) = offsets(Some(pid));
    Ok(Clocks { monotonic: m + om, boottime: b + ob })
}

/// Before the processes of an image are created (on the thread that creates them): when the
/// clocks `saved` are ahead of what the restored processes would read, makes the time namespace
/// they will be created in, with the offsets that make their clocks go on from `saved`. Returns
/// a note for the user when that was needed and could not be done, or was done.
pub fn restore(saved: &Clocks) -> Result<Option<String>, KindError> {
    // `/proc/self/timens_offsets` shows the namespace of the children; the caller's own
    // clocks tell the machine's only when the two are one.
    let ns = |which: &str| std::fs::read_link(format!("/proc/self/ns/{which}")).ok();
    if ns("time") != ns("time_for_children") {
        return Ok(Some("cr_restart's children are to be in another time namespace than its own: the restored processes' clocks are left as that namespace has them".into()));
    }
    let (m, b) = machine_now()?;
    let (om, ob) = offsets(None);
    // What the processes would read (the caller's view), against what they read before.
    let behind_m = saved.monotonic - (m + om);
    let behind_b = saved.boottime - (b + ob);
    if behind_m <= 0 && behind_b <= 0 {
        return Ok(None);
    }
    let (want_m, want_b) = (om.max(saved.monotonic - m), ob.max(saved.boottime - b));
    let secs = |v: i64| (v.div_euclid(1_000_000_000), v.rem_euclid(1_000_000_000));
    let behind =
        format!("this machine's CLOCK_MONOTONIC is {:.1} s behind the one the processes read at the checkpoint (it rebooted since, or is another machine)", behind_m.max(behind_b) as f64 / 1e9);
    if let Err(e) = crest_ptrace::sys::unshare_time_namespace() {
        return Ok(Some(format!("{behind}, and a time namespace to keep it going on cannot be made here ({e}: it needs CAP_SYS_ADMIN); the restored processes see it go back")));
    }
    let (ms, mn) = secs(want_m);
    let (bs, bn) = secs(want_b);
    std::fs::write("/proc/self/timens_offsets", format!("monotonic {ms} {mn}\nboottime {bs} {bn}\n"))
        .map_err(|e| KindError::io("setting the offsets of the restored processes' time namespace (/proc/self/timens_offsets)", e))?;
    Ok(Some(format!("{behind}: the restored processes run in a time namespace where it goes on from where it was")))
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_machine_clock_is_the_caller_s_without_offsets() {
        let (m, b) = super::machine_now().expect("clocks");
        assert!(m > 0 && b >= m, "monotonic {m} boottime {b}");
        let c = super::dump(std::process::id() as i32, &[std::process::id() as i32]).expect("own clocks");
        assert!(c.monotonic >= m && c.boottime >= c.monotonic);
    }
}
