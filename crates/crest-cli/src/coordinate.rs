//! The words `cr_coord` and the commands it runs on each host (`cr_checkpoint --coordinated`,
//! `cr_restart --coordinated`) exchange, one line each, on the commands' standard output and
//! input, so that any transport that carries those (ssh, srun, nsenter) joins them.
//!
//! A checkpoint part says `armed` once started (its destination open, nothing frozen) and
//! waits, so that parts started one after another still freeze together; `cr_coord` says `go`
//! once every part is armed. The part says `frozen` once its processes are frozen and waits;
//! `go` once every part is frozen. The part saves its processes, says `whole` and waits;
//! `go` once every image is whole: the part names its image, lets its processes go (or kills
//! them) and says `done frozen_ms=MS`. A restart part says `ready` once its processes are
//! restored, their TCP connections still in repair mode, and waits; on `go` it lets them run
//! and says `running PID`. Anything but `go` (`abort`, or the end of the input) calls the part
//! off: a checkpoint leaves its processes as they were and names no image; a restart kills
//! what it restored.

use std::io::{BufRead, Write};

/// The word that lets a waiting part go on.
pub const GO: &str = "go";
/// The word that calls a part off.
pub const ABORT: &str = "abort";

/// Tells `cr_coord` one line (on standard output, flushed).
pub fn tell(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// Waits for `cr_coord`'s word: `Ok` on [`GO`]; `Err` saying why on anything else or the
/// end of the input.
pub fn wait_go(step: &str) -> Result<(), String> {
    let mut line = String::new();
    match std::io::stdin().lock().read_line(&mut line) {
        Ok(0) => Err(format!("the coordinator went away while this part was {step}")),
        Ok(_) if line.trim() == GO => Ok(()),
        Ok(_) => Err(format!("called off by the coordinator while this part was {step} (another part failed)")),
        Err(e) => Err(format!("reading the coordinator's word while {step}: {e}")),
    }
}

/// One part of a coordinated job: `HOST:PID:IMAGE` at checkpoint, `HOST:IMAGE` at restart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Part {
    /// Where it runs, as the transport names it.
    pub host: String,
    /// The process (tree) to checkpoint; `None` at restart.
    pub pid: Option<i32>,
    /// The image, as a path on that host.
    pub image: String,
}

impl Part {
    /// Reads `HOST:PID:IMAGE` (`with_pid`) or `HOST:IMAGE`.
    pub fn parse(s: &str, with_pid: bool) -> Result<Part, String> {
        let form = if with_pid { "HOST:PID:IMAGE" } else { "HOST:IMAGE" };
        let bad = || format!("{s:?} is not a part: write {form}");
        let (host, rest) = s.split_once(':').ok_or_else(bad)?;
        if host.is_empty() || rest.is_empty() {
            return Err(bad());
        }
        if !with_pid {
            return Ok(Part { host: host.into(), pid: None, image: rest.into() });
        }
        let (pid, image) = rest.split_once(':').ok_or_else(bad)?;
        let pid = pid.parse::<i32>().ok().filter(|&p| p > 0).ok_or_else(|| format!("{s:?}: {pid:?} is not a PID"))?;
        if image.is_empty() {
            return Err(bad());
        }
        Ok(Part { host: host.into(), pid: Some(pid), image: image.into() })
    }
}

/// The command line that runs `program args` on `host` through `via` (words; `{host}` in any
/// of them replaced). Through ssh, which hands the remote shell one string, each word is quoted.
pub fn remote_command(via: &str, host: &str, program: &str, args: &[String]) -> Vec<String> {
    let mut words: Vec<String> = via.split_whitespace().map(|w| w.replace("{host}", host)).collect();
    let through_shell = words.first().is_some_and(|w| w == "ssh" || w.ends_with("/ssh"));
    let quote = |w: &str| if through_shell { shell_quote(w) } else { w.to_string() };
    words.push(quote(program));
    words.extend(args.iter().map(|a| quote(a)));
    words
}

/// `w` as one word for a POSIX shell.
fn shell_quote(w: &str) -> String {
    if !w.is_empty() && w.chars().all(|c| c.is_ascii_alphanumeric() || "-_./=:,@%+".contains(c)) {
        w.to_string()
    } else {
        format!("'{}'", w.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_are_read_with_and_without_a_pid() {
        assert_eq!(Part::parse("node1:42:/scratch/a.img", true), Ok(Part { host: "node1".into(), pid: Some(42), image: "/scratch/a.img".into() }));
        assert_eq!(Part::parse("node1:/x:y", false), Ok(Part { host: "node1".into(), pid: None, image: "/x:y".into() }));
        assert!(Part::parse("node1:/a.img", true).is_err());
        assert!(Part::parse(":1:a", true).is_err());
        assert!(Part::parse("n:-3:a", true).is_err());
        assert!(Part::parse("n:3:", true).is_err());
    }

    #[test]
    fn commands_through_ssh_are_quoted() {
        let args = vec!["-f".to_string(), "/tmp/my image".to_string()];
        assert_eq!(remote_command("ssh {host}", "n1", "cr_restart", &args), ["ssh", "n1", "cr_restart", "-f", "'/tmp/my image'"]);
        assert_eq!(remote_command("nsenter --net=/run/netns/{host}", "a", "cr_restart", &args), ["nsenter", "--net=/run/netns/a", "cr_restart", "-f", "/tmp/my image"]);
    }
}
