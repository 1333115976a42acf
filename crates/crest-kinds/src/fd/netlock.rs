//! The network lock of TCP connections: from the moment a checkpoint with `--kill` reads a
//! connection until `cr_restart` has it back, the connection's packets are dropped by a
//! netfilter rule, so that its peer outside the image never gets a reset (the kernel answers
//! a segment for a port no socket holds with one) and nothing it sends is acknowledged and
//! lost: its kernel keeps sending it again, and the restored socket takes it.
//!
//! The rules live in one nftables table of the `inet` family per checkpoint
//! (`crest_PID_MILLISECONDS`), made with the `nft` command in the network namespace of
//! `cr_checkpoint`, which is the processes' (others are refused before anything is read), with a chain on the input hook that drops the packets of each connection in
//! both directions (both addresses and ports: a peer on the same host sends through it too).
//! The checkpoint adds a connection's rule once the socket is in repair mode (which needs
//! `CAP_NET_ADMIN`, as the lock does: a checkpoint without it is refused for that) and before
//! it reads its queues. When the processes run on after the checkpoint (or it fails), the table is
//! removed before the sockets leave repair mode ([`unlock`]); with `--kill` it stays
//! ([`keep`]), and the image names it (`Image.network_lock`): `cr_restart` removes it once
//! every socket is rebuilt, just before they leave repair mode ([`remove`]). A restart that
//! fails before that leaves it, so that another restart can still take the connections up.
//!
//! Where `nft` cannot run, the checkpoint is refused, naming the connection and the option
//! `--network-lock=skip`, which takes it without a lock ([`Mode::Skip`]): the peer may then
//! see a reset if it sends while no process holds the connection.
use std::process::{Command, Stdio};
use std::sync::Mutex;

/// Whether the checkpoint running locks the TCP connections it reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// No lock: the processes run on after the checkpoint, and their sockets with them.
    #[default]
    Off,
    /// Lock each connection with nftables (`nft`); refuse a connection that cannot be locked.
    Nft,
    /// The processes end after the checkpoint, but the user asked for no lock
    /// (`--network-lock=skip`): each connection is listed in [`skipped`].
    Skip,
}

#[derive(Default)]
struct State {
    mode: Mode,
    /// The table's name, for this checkpoint.
    table: String,
    /// Whether the table was made.
    made: bool,
    /// The connections locked.
    connections: u32,
    /// The connections not locked ([`Mode::Skip`]), described.
    skipped: Vec<String>,
}

static STATE: Mutex<Option<State>> = Mutex::new(None);

fn state() -> std::sync::MutexGuard<'static, Option<State>> {
    STATE.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Before a checkpoint of the processes of `root`: how it locks the connections it reads.
/// Removes a lock a previous checkpoint of this process left unfinished.
pub fn arm(mode: Mode, root: i32) {
    unlock();
    let ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis()).unwrap_or(0);
    *state() = Some(State { mode, table: format!("crest_{root}_{ms}"), ..State::default() });
}

/// The lock made by the checkpoint running, for its image: None when nothing is locked.
pub fn installed() -> Option<crest_image::NetworkLock> {
    let g = state();
    let s = g.as_ref().filter(|s| s.made)?;
    Some(crest_image::NetworkLock { tool: "nft".into(), table: s.table.clone(), connections: s.connections })
}

/// The connections the checkpoint running read without a lock (`--network-lock=skip`).
pub fn skipped() -> Vec<String> {
    state().as_ref().map(|s| s.skipped.clone()).unwrap_or_default()
}

/// The processes run on (or the checkpoint failed): removes the lock, if any. Safe to call
/// more than once.
pub fn unlock() {
    let Some(s) = state().take() else { return };
    if s.made {
        let _ = run_nft(&format!("delete table inet {}\n", s.table));
    }
}

/// The processes are killed with their sockets in repair mode: the lock stays, for
/// `cr_restart` to remove.
pub fn keep() {
    state().take();
}

/// The address and port of a raw `sockaddr_in` or `sockaddr_in6` (an IPv4-mapped IPv6 address
/// as the IPv4 one, as its packets carry it), as nft writes them: (`ip` or `ip6`, address, port).
fn endpoint(addr: &[u8]) -> Option<(&'static str, String, u16)> {
    let family = i32::from(u16::from_ne_bytes([*addr.first()?, *addr.get(1)?]));
    let port = u16::from_be_bytes([*addr.get(2)?, *addr.get(3)?]);
    match family {
        libc::AF_INET => {
            let a: [u8; 4] = addr.get(4..8)?.try_into().ok()?;
            Some(("ip", std::net::Ipv4Addr::from(a).to_string(), port))
        }
        libc::AF_INET6 => {
            let a: [u8; 16] = addr.get(8..24)?.try_into().ok()?;
            let a = std::net::Ipv6Addr::from(a);
            Some(match a.to_ipv4_mapped() {
                Some(v4) => ("ip", v4.to_string(), port),
                None => ("ip6", a.to_string(), port),
            })
        }
        _ => None,
    }
}

/// At checkpoint, once connection `what` (of process `pid`, from `local` to `peer`) is put
/// in repair mode and before its queues are read: drops its packets from now on, as the
/// checkpoint asks. `Err(why)` names what to do.
pub(super) fn lock(pid: i32, local: &[u8], peer: &[u8], what: &str) -> Result<(), String> {
    let mut g = state();
    let Some(s) = g.as_mut() else { return Ok(()) };
    match s.mode {
        Mode::Off => return Ok(()),
        Mode::Skip => {
            s.skipped.push(format!("process {pid}: {what}"));
            return Ok(());
        }
        Mode::Nft => {}
    }
    let Some(both) = matches(local, peer) else {
        return Err("its addresses are of an unknown family, and its packets cannot be locked (give --network-lock=skip to go on without the lock)".into());
    };
    let t = &s.table;
    let mut script = String::new();
    if !s.made {
        script.push_str(&format!("add table inet {t}\nadd chain inet {t} lock {{ type filter hook input priority -150 ; policy accept ; }}\n"));
    }
    for m in both {
        script.push_str(&format!("add rule inet {t} lock {m} drop\n"));
    }
    run_nft(&script).map_err(|e| {
        format!("its packets could not be locked for the time of the checkpoint and until the restart: {e}; or give --network-lock=skip to go on without the lock (its peer may then see a reset)")
    })?;
    s.made = true;
    s.connections += 1;
    Ok(())
}

/// In `cr_restart`, once every socket of the image is rebuilt and before they leave repair
/// mode: removes `lock` (made in the network namespace the processes are restored in). A lock
/// already gone (removed by hand, or by an earlier restart of the same image) is no error.
pub fn remove(lock: &crest_image::NetworkLock) -> Result<(), String> {
    let table = &lock.table;
    if lock.tool != "nft" || !table.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return Err(format!("the image's TCP connections are locked by {} table {table:?}, which this crest cannot remove", lock.tool));
    }
    match run_nft(&format!("delete table inet {table}\n")) {
        Ok(()) => Ok(()),
        Err(e) if e.contains("No such file or directory") => Ok(()),
        Err(e) => Err(format!(
            "the image's TCP connections are locked (netfilter table inet {table}, made by cr_checkpoint --kill), and the lock could not be removed: {e}; their packets would stay dropped (install nftables, or run cr_restart where the checkpoint was taken)"
        )),
    }
}

/// The two matches, as nft writes them, of the packets of the connection from `local` to
/// `peer` (one for each direction).
fn matches(local: &[u8], peer: &[u8]) -> Option<[String; 2]> {
    let ((fam, la, lp), (pfam, pa, pp)) = (endpoint(local)?, endpoint(peer)?);
    let fam = if fam == pfam { fam } else { "ip6" };
    let m = |sa: &str, sp: u16, da: &str, dp: u16| format!("{fam} saddr {sa} tcp sport {sp} {fam} daddr {da} tcp dport {dp}");
    Some([m(&pa, pp, &la, lp), m(&la, lp, &pa, pp)])
}

/// In `cr_restart`, with the lock of the image itself ([`remove`]): removes every other lock a
/// checkpoint with `--kill` left on a connection the image restores. A later checkpoint of the
/// same processes locked the same connections; restarting from an earlier image, the user
/// leaves that one, and its lock would drop the restored connections' packets for good. Only
/// tables crest made (`crest_…`) are looked at; none is an error only when `nft` cannot tell.
pub fn remove_stale(connections: &[(&[u8], &[u8])]) -> Result<(), String> {
    let wanted: Vec<String> = connections.iter().filter_map(|(l, p)| matches(l, p)).flatten().collect();
    if wanted.is_empty() {
        return Ok(());
    }
    let Ok(out) = Command::new("nft").args(["list", "tables", "inet"]).stdin(Stdio::null()).stderr(Stdio::null()).output() else { return Ok(()) };
    let listing = String::from_utf8_lossy(&out.stdout);
    for table in listing.lines().filter_map(|l| l.trim().strip_prefix("table inet ")).filter(|t| t.starts_with("crest_") && t.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')) {
        let Ok(rules) = Command::new("nft").args(["list", "table", "inet", table]).stdin(Stdio::null()).stderr(Stdio::null()).output() else { continue };
        let rules = String::from_utf8_lossy(&rules.stdout);
        // nft lists a rule's matches in an order of its own: compared as sets of terms.
        if rules.lines().any(|l| l.trim().strip_suffix(" drop").is_some_and(|r| wanted.iter().any(|w| same_terms(r, w)))) {
            run_nft(&format!("delete table inet {table}\n")).map_err(|e| {
                format!("a checkpoint with --kill left a netfilter lock (table inet {table}) on connections this image restores, and it could not be removed: {e}; their packets would stay dropped")
            })?;
        }
    }
    Ok(())
}

/// Whether two nft matches hold the same terms (`ip saddr 1.2.3.4`, `tcp dport 80`, ...),
/// whatever their order.
fn same_terms(a: &str, b: &str) -> bool {
    let terms = |s: &str| {
        let w: Vec<&str> = s.split_whitespace().collect();
        let mut t: Vec<String> = w.chunks(3).map(|c| c.join(" ")).collect();
        t.sort();
        w.len().is_multiple_of(3).then_some(t)
    };
    terms(a).is_some_and(|x| Some(x) == terms(b))
}

/// Runs `nft -f -` with `script`.
fn run_nft(script: &str) -> Result<(), String> {
    let mut cmd = Command::new("nft");
    cmd.args(["-f", "-"]).stdin(Stdio::piped()).stdout(Stdio::null()).stderr(Stdio::piped());
    let mut child = cmd.spawn().map_err(|e| format!("nft (nftables) cannot run: {e}"))?;
    if let Some(mut input) = child.stdin.take() {
        use std::io::Write;
        input.write_all(script.as_bytes()).map_err(|e| format!("nft: writing its rules: {e}"))?;
    }
    let out = child.wait_with_output().map_err(|e| format!("nft: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        let err = String::from_utf8_lossy(&out.stderr);
        Err(format!("nft: {} ({})", err.lines().find(|l| l.starts_with("Error")).unwrap_or(err.trim()), out.status))
    }
}

#[cfg(test)]
mod tests {
    use super::endpoint;

    fn v4(a: [u8; 4], port: u16) -> Vec<u8> {
        let mut s = vec![0u8; 16];
        s[0..2].copy_from_slice(&(libc::AF_INET as u16).to_ne_bytes());
        s[2..4].copy_from_slice(&port.to_be_bytes());
        s[4..8].copy_from_slice(&a);
        s
    }

    /// nft lists a rule's terms in its own order; a lock left by another checkpoint is still
    /// recognised.
    #[test]
    fn rules_are_compared_term_by_term() {
        let [a, b] = super::matches(&v4([127, 0, 0, 1], 8880), &v4([127, 0, 0, 1], 35000)).expect("IPv4");
        assert_eq!(a, "ip saddr 127.0.0.1 tcp sport 35000 ip daddr 127.0.0.1 tcp dport 8880");
        assert!(super::same_terms("ip saddr 127.0.0.1 tcp sport 35000 tcp dport 8880 ip daddr 127.0.0.1", &a));
        assert!(!super::same_terms("ip saddr 127.0.0.1 tcp sport 35001 tcp dport 8880 ip daddr 127.0.0.1", &a));
        assert!(super::same_terms("ip saddr 127.0.0.1 tcp sport 8880 tcp dport 35000 ip daddr 127.0.0.1", &b));
        assert!(!super::same_terms("ip saddr 127.0.0.1 tcp sport 8880", &b));
    }

    #[test]
    fn endpoints_as_nft_writes_them() {
        assert_eq!(endpoint(&v4([127, 0, 0, 1], 5000)), Some(("ip", "127.0.0.1".into(), 5000)));
        let mut s6 = vec![0u8; 28];
        s6[0..2].copy_from_slice(&(libc::AF_INET6 as u16).to_ne_bytes());
        s6[2..4].copy_from_slice(&80u16.to_be_bytes());
        s6[23] = 1;
        assert_eq!(endpoint(&s6), Some(("ip6", "::1".into(), 80)));
        s6[18..20].copy_from_slice(&[0xff, 0xff]);
        s6[20..24].copy_from_slice(&[10, 0, 0, 2]);
        assert_eq!(endpoint(&s6), Some(("ip", "10.0.0.2".into(), 80)));
        assert_eq!(endpoint(&[0u8; 4]), None);
    }
}
