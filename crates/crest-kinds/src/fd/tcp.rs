//! Connected internet sockets: TCP connections and connected UDP (and UDP-Lite) sockets, IPv4 and IPv6.
//!
//! A TCP connection is read and rebuilt with the kernel's repair mode (`TCP_REPAIR`, which
//! needs `CAP_NET_ADMIN`). At checkpoint, crest takes a copy of the socket (`pidfd_getfd`) and
//! puts it in repair mode while its process is frozen, then reads its sequence numbers, both
//! queues (what was received and not read; what was sent and not acknowledged, and what was
//! not sent yet), the options agreed with the peer (MSS, window scaling, SACK, timestamps) and
//! the window. A socket in repair mode sends nothing, not even when it is closed: the
//! connection stays in repair mode until the process runs on (`--run`: repair mode is left,
//! and the peer never knew) or is killed (`--kill`: its sockets close silently, and the peer
//! sees no reset). Sockets stay in repair mode across the checkpoint through [`hold`]:
//! [`leave_repair`] or [`keep_repair`] end it. A connection in repair mode still takes its
//! peer's acknowledgments and data while its process is frozen (a loopback peer's delayed ACK
//! lands a few milliseconds later), so its state is read until two readings around the queues
//! agree ([`read_state`]).
//!
//! At restart the socket is made again in repair mode: bound to the same address (repair
//! mode lets it share the port of a listener or of a socket that is closing), its queues'
//! sequence numbers set, connected to its peer (in repair mode nothing is sent; the saved
//! segment size is given as `TCP_MAXSEG` for the time of the connect, which works out the size
//! it sends with before the peer's options can be set), its options,
//! queues and window put back (a window last updated beyond what was received in order is
//! counted from there: [`window_update_seq`]). Just before it leaves repair mode, once the network lock is
//! removed, a FIN it had received is received again and one it had sent is queued again.
//! Repair mode is left by `cr_restart` once every process of the image is rebuilt
//! ([`leave_repair_restored`]), so that the two ends of a connection between processes of the
//! image both exist before either sends anything: then each sends a window probe and the
//! connection goes on. Data not sent yet is restored as sent and not acknowledged: it is sent
//! again as a retransmission.
//!
//! A connection whose peer had closed its side (`CLOSE_WAIT`, `LAST_ACK`, `CLOSING`) gets the
//! peer's FIN again as a packet crest sends to it from the peer's address (a raw socket), so
//! that the program still reads end of file.
//!
//! A connected UDP socket is bound to its address and connected to its peer again; datagrams
//! queued on it are not saved (refused).
//!
//! With `--kill`, the connection's packets are dropped by a netfilter rule from before its
//! queues are read until `cr_restart` has it back ([`super::netlock`]): what the peer sends
//! meanwhile is neither acknowledged and lost nor answered with a reset (no socket holds the
//! port once the process is killed); the peer's kernel sends it again until it passes.
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::Mutex;

use crest_image::{FdKind, FdRecord, TcpState};

use super::socket::Described;

const TCP_REPAIR: i32 = 19;
const TCP_REPAIR_QUEUE: i32 = 20;
const TCP_QUEUE_SEQ: i32 = 21;
const TCP_REPAIR_OPTIONS: i32 = 22;
const TCP_TIMESTAMP: i32 = 24;
const TCP_REPAIR_WINDOW: i32 = 29;

const TCP_NO_QUEUE: i32 = 0;
const TCP_RECV_QUEUE: i32 = 1;
const TCP_SEND_QUEUE: i32 = 2;

const TCPOPT_MAXSEG: u32 = 2;
/// The largest segment size `TCP_MAXSEG` takes (the kernel's `MAX_TCP_WINDOW`).
const MAX_USER_MSS: u32 = 32767;
const TCPOPT_WINDOW: u32 = 3;
const TCPOPT_SACK_PERM: u32 = 4;
const TCPOPT_TIMESTAMP: u32 = 8;

const TCPI_OPT_TIMESTAMPS: u8 = 1;
const TCPI_OPT_SACK: u8 = 2;
const TCPI_OPT_WSCALE: u8 = 4;

const ESTABLISHED: u8 = 1;
const FIN_WAIT1: u8 = 4;
const FIN_WAIT2: u8 = 5;
const CLOSE_WAIT: u8 = 8;
const LAST_ACK: u8 = 9;
const CLOSING: u8 = 11;

/// Whether the connection had sent its FIN (its program shut down writing, or closed it).
fn fin_sent(state: u8) -> bool {
    matches!(state, FIN_WAIT1 | FIN_WAIT2 | LAST_ACK | CLOSING)
}

/// Whether the peer's FIN had been received.
fn fin_received(state: u8) -> bool {
    matches!(state, CLOSE_WAIT | LAST_ACK | CLOSING)
}

fn state_name(state: u8) -> String {
    match state {
        2 => "connecting (SYN_SENT)".into(),
        3 => "being accepted (SYN_RECV)".into(),
        6 => "TIME_WAIT".into(),
        7 => "closed".into(),
        s => format!("in TCP state {s}"),
    }
}

/// The most queued data saved for one connection.
const MAX_QUEUED: usize = 64 << 20;

/// Copies of the sockets put in repair mode by this checkpoint, each with its SO_REUSEADDR
/// setting from before (repair mode overrides it, and leaving repair mode clears it).
static REPAIRED: Mutex<Vec<(OwnedFd, bool)>> = Mutex::new(Vec::new());

fn held() -> std::sync::MutexGuard<'static, Vec<(OwnedFd, bool)>> {
    REPAIRED.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Keeps `copy`, a socket in repair mode whose SO_REUSEADDR was `reuse`, until
/// [`leave_repair`] or [`keep_repair`].
fn hold(copy: OwnedFd, reuse: bool) {
    held().push((copy, reuse));
}

/// Takes every socket this checkpoint put in repair mode out of it: the processes run on and
/// their connections go on (each sends a window probe), with their SO_REUSEADDR as it was: a
/// server's connection that lost it would, once closed and lingering in TIME_WAIT, keep the
/// server from binding its port again. Safe to call more than once.
pub fn leave_repair() {
    // The lock goes first, so that the window probe each sends on leaving repair mode passes.
    super::netlock::unlock();
    for (s, reuse) in held().drain(..) {
        let _ = set_queue(s.as_raw_fd(), TCP_NO_QUEUE);
        let _ = crest_ptrace::sys::set_sock_opt_int(s.as_raw_fd(), libc::IPPROTO_TCP, TCP_REPAIR, 0);
        if reuse {
            let _ = crest_ptrace::sys::set_sock_opt_int(s.as_raw_fd(), libc::SOL_SOCKET, libc::SO_REUSEADDR, 1);
        }
    }
}

/// Lets go of the sockets this checkpoint put in repair mode without taking them out of it:
/// their processes are about to be killed, and a socket closed in repair mode sends nothing
/// (no FIN, no reset), so the peer does not notice.
pub fn keep_repair() {
    held().clear();
    super::netlock::keep();
}

fn set_queue(fd: i32, q: i32) -> std::io::Result<()> {
    crest_ptrace::sys::set_sock_opt_int(fd, libc::IPPROTO_TCP, TCP_REPAIR_QUEUE, q)
}

/// The record of a connected TCP or UDP (UDP-Lite) socket (`copy` is a copy of it), or `Err(why)`.
pub(super) fn dump(pid: i32, copy: &OwnedFd, ino: u64, family: i32, ty: i32, protocol: i32, d: &Described) -> Result<FdKind, String> {
    use crest_ptrace::sys::sock_addr;
    let fd = copy.as_raw_fd();
    let local = sock_addr(fd, false).map_err(|e| format!("reading its address: {e}"))?;
    let peer = sock_addr(fd, true).map_err(|e| format!("reading its peer's address: {e}"))?;
    let (options, byte_options) = super::sockopt::read(fd, family, ty, protocol)?;
    if protocol != libc::IPPROTO_TCP {
        if crest_ptrace::sys::bytes_readable(fd).unwrap_or(1) != 0 {
            return Err("datagrams are waiting to be read, and queued datagrams are not saved yet".into());
        }
        let shutdown = super::socket::inet_shutdown(family, protocol, ino).unwrap_or(0);
        return Ok(FdKind::Inet { family, ty, protocol, local, peer, options, tcp: None, what: d.what.clone(), byte_options, shutdown });
    }
    let state = crest_ptrace::sys::sock_opt_bytes(fd, libc::IPPROTO_TCP, libc::TCP_INFO, 8).map_err(|e| format!("reading its TCP state: {e}"))?.first().copied().unwrap_or(0);
    if !matches!(state, ESTABLISHED | FIN_WAIT1 | FIN_WAIT2 | CLOSE_WAIT | LAST_ACK | CLOSING) {
        return Err(format!("a TCP connection {} is not saved", state_name(state)));
    }
    let reuse = crest_ptrace::sys::sock_opt_int(fd, libc::SOL_SOCKET, libc::SO_REUSEADDR).map_err(|e| format!("reading SO_REUSEADDR: {e}"))? != 0;
    if let Err(e) = crest_ptrace::sys::set_sock_opt_int(fd, libc::IPPROTO_TCP, TCP_REPAIR, 1) {
        return Err(if e.raw_os_error() == Some(libc::EPERM) {
            "saving a TCP connection needs repair mode (TCP_REPAIR), which needs CAP_NET_ADMIN".into()
        } else {
            format!("putting it in repair mode (TCP_REPAIR): {e}")
        });
    }
    let held = copy.try_clone().map_err(|e| format!("duplicating a descriptor: {e}"))?;
    hold(held, reuse);
    // Before its queues are read: what the peer sends from now on is neither taken (and lost
    // with a killed process) nor, once no socket holds the port, answered with a reset.
    super::netlock::lock(pid, &local, &peer, &d.what)?;
    let tcp = read_state(fd).map_err(|e| format!("reading its state in repair mode: {e}"))?;
    Ok(FdKind::Inet { family, ty, protocol, local, peer, options, tcp: Some(tcp), what: d.what.clone(), byte_options, shutdown: 0 })
}

/// What of a connection in repair mode may still move while its process is frozen: the peer
/// may still acknowledge what it sent (a delayed acknowledgment), send it data or open its
/// window, the kernel's timers may still retransmit. Read before and after the queues: the
/// state saved is one where both readings agree.
#[derive(PartialEq, Eq)]
struct Moving {
    info: Vec<u8>,
    window: Vec<u8>,
    outq: i32,
    unsent: i32,
    inq: i32,
    recv_seq: i32,
    send_seq: i32,
}

fn moving(fd: i32) -> Result<Moving, String> {
    use crest_ptrace::net::{ioctl_int, SIOCINQ, SIOCOUTQ, SIOCOUTQNSD};
    use crest_ptrace::sys::{sock_opt_bytes, sock_opt_int};
    let io = |what: &str, e: std::io::Error| format!("{what}: {e}");
    let seq = |q| -> Result<i32, String> {
        set_queue(fd, q).map_err(|e| io("TCP_REPAIR_QUEUE", e))?;
        sock_opt_int(fd, libc::IPPROTO_TCP, TCP_QUEUE_SEQ).map_err(|e| io("TCP_QUEUE_SEQ", e))
    };
    let m = Moving {
        info: sock_opt_bytes(fd, libc::IPPROTO_TCP, libc::TCP_INFO, 8).map_err(|e| io("TCP_INFO", e))?,
        window: sock_opt_bytes(fd, libc::IPPROTO_TCP, TCP_REPAIR_WINDOW, 20).map_err(|e| io("TCP_REPAIR_WINDOW", e))?,
        outq: ioctl_int(fd, SIOCOUTQ).map_err(|e| io("SIOCOUTQ", e))?,
        unsent: ioctl_int(fd, SIOCOUTQNSD).map_err(|e| io("SIOCOUTQNSD", e))?,
        inq: ioctl_int(fd, SIOCINQ).map_err(|e| io("SIOCINQ", e))?,
        recv_seq: seq(TCP_RECV_QUEUE)?,
        send_seq: seq(TCP_SEND_QUEUE)?,
    };
    set_queue(fd, TCP_NO_QUEUE).map_err(|e| io("TCP_REPAIR_QUEUE", e))?;
    Ok(m)
}

/// How long the state of a connection may keep moving before it is refused.
const SETTLE: std::time::Duration = std::time::Duration::from_secs(3);

/// Reads the state of connection `fd`, in repair mode: once it holds still (see [`Moving`]).
fn read_state(fd: i32) -> Result<TcpState, String> {
    let start = std::time::Instant::now();
    let mut pause = std::time::Duration::from_millis(2);
    loop {
        let before = moving(fd)?;
        let state = read_once(fd, &before);
        let after = moving(fd)?;
        match state {
            Ok(t) if before == after => return Ok(t),
            Err(e) if before == after => return Err(e),
            _ if start.elapsed() > SETTLE => return Err(format!("it kept changing for {} s while its process was frozen (its peer still sends or acknowledges)", SETTLE.as_secs())),
            _ => {
                std::thread::sleep(pause);
                pause = (pause * 2).min(std::time::Duration::from_millis(50));
            }
        }
    }
}

/// Reads the state of connection `fd` (in repair mode) whose moving parts are `m`.
fn read_once(fd: i32, m: &Moving) -> Result<TcpState, String> {
    use crest_ptrace::net::peek;
    use crest_ptrace::sys::sock_opt_int;
    let io = |what: &str, e: std::io::Error| format!("{what}: {e}");
    // struct tcp_info: state at 0, options at 5, the window scales at 6 (send: low 4 bits).
    let info = &m.info;
    let state = info.first().copied().unwrap_or(0);
    let options = info.get(5).copied().unwrap_or(0);
    let scales = info.get(6).copied().unwrap_or(0);
    let wscale = if options & TCPI_OPT_WSCALE != 0 { (scales & 0xf, scales >> 4) } else { (0, 0) };
    let mss = sock_opt_int(fd, libc::IPPROTO_TCP, libc::TCP_MAXSEG).map_err(|e| io("TCP_MAXSEG", e))? as u32;
    let timestamp = if options & TCPI_OPT_TIMESTAMPS != 0 { sock_opt_int(fd, libc::IPPROTO_TCP, TCP_TIMESTAMP).map_err(|e| io("TCP_TIMESTAMP", e))? as u32 } else { 0 };
    let w = &m.window;
    if w.len() < 20 {
        return Err("TCP_REPAIR_WINDOW: short answer".into());
    }
    let word = |i: usize| u32::from_ne_bytes([w[i * 4], w[i * 4 + 1], w[i * 4 + 2], w[i * 4 + 3]]);
    let window = [word(0), word(1), word(2), word(3), word(4)];
    let (mut outq, mut unsent, inq) = (m.outq as u32, m.unsent as u32, m.inq as u32);
    if fin_sent(state) {
        // The FIN counts in the queue's length and sequence numbers but holds no data.
        outq = outq.saturating_sub(1);
        unsent = unsent.saturating_sub(1);
    }
    if (outq as usize).saturating_add(inq as usize) > MAX_QUEUED {
        return Err(format!("more than {} MiB are queued on it", MAX_QUEUED >> 20));
    }
    let queue = |q: i32, len: u32| -> Result<Vec<u8>, String> {
        set_queue(fd, q).map_err(|e| io("TCP_REPAIR_QUEUE", e))?;
        let mut buf = vec![0u8; len as usize + 1];
        let n = if len == 0 { 0 } else { peek(fd, &mut buf).map_err(|e| io("reading a queue", e))? };
        if n != len as usize {
            return Err(format!("a queue holds {n} bytes where {len} were expected"));
        }
        buf.truncate(n);
        Ok(buf)
    };
    let recv = queue(TCP_RECV_QUEUE, inq);
    let send = recv.as_ref().map_err(Clone::clone).and_then(|_| queue(TCP_SEND_QUEUE, outq));
    let _ = set_queue(fd, TCP_NO_QUEUE);
    let (recv_queue, send_queue) = (recv?, send?);
    let (mut recv_seq, mut send_seq) = (m.recv_seq as u32, m.send_seq as u32);
    if fin_sent(state) {
        send_seq = send_seq.wrapping_sub(1);
    }
    if fin_received(state) {
        recv_seq = recv_seq.wrapping_sub(1);
    }
    Ok(TcpState { state, send_seq, recv_seq, send_queue, unsent, recv_queue, mss, options, wscale, timestamp, window })
}

/// Inside the husk (or `cr_restart`): makes the socket of `rec` again, bound and connected,
/// a TCP connection with its state and still in repair mode ([`leave_repair_restored`]).
pub(super) fn open(rec: &FdRecord) -> Result<OwnedFd, String> {
    use crest_ptrace::sys::set_sock_opt_int;
    let FdKind::Inet { family, ty, protocol, local, peer, options, tcp, what, byte_options, shutdown } = &rec.kind else { return Err(format!("fd {}: not an internet socket", rec.fd)) };
    let err = |step: &str, e: std::io::Error| format!("fd {}: {what}: {step}: {e}", rec.fd);
    let s = crest_ptrace::sys::socket(*family, *ty, *protocol).map_err(|e| err("creating it", e))?;
    let fd = s.as_raw_fd();
    super::sockopt::apply(fd, options, byte_options).map_err(|(step, e)| err(&step, e))?;
    let Some(t) = tcp else {
        let port = local.get(2..4).is_some_and(|p| p != [0, 0]);
        if port {
            super::sockopt::bind(fd, local).map_err(|e| err("binding it again", e))?;
        }
        crest_ptrace::net::connect_raw(fd, peer).map_err(|e| err("connecting it again", e))?;
        if let Some(how) = super::socket::shutdown_how(*shutdown) {
            crest_ptrace::sys::shutdown(fd, how).map_err(|e| err("shutting it down as it was", e))?;
        }
        super::sockopt::finish(fd, options, byte_options).map_err(|(step, e)| err(&step, e))?;
        super::set_status_flags(&s, rec.flags)?;
        return Ok(s);
    };
    // Repair mode also lets it share its port with a listener or a closing connection.
    set_sock_opt_int(fd, libc::IPPROTO_TCP, TCP_REPAIR, 1).map_err(|e| {
        if e.raw_os_error() == Some(libc::EPERM) {
            err("restoring a TCP connection needs repair mode (TCP_REPAIR), which needs CAP_NET_ADMIN", e)
        } else {
            err("putting it in repair mode", e)
        }
    })?;
    super::sockopt::bind(fd, local).map_err(|e| err("binding it again", e))?;
    rebuild(fd, peer, t).map_err(|(step, e)| err(step, e))?;
    super::sockopt::finish(fd, options, byte_options).map_err(|(step, e)| err(&step, e))?;
    super::set_status_flags(&s, rec.flags)?;
    Ok(s)
}

type Step = (&'static str, std::io::Error);

/// Puts connection `fd` (in repair mode, bound) back in state `t`, connected to `peer`.
fn rebuild(fd: i32, peer: &[u8], t: &TcpState) -> Result<(), Step> {
    use crest_ptrace::net::set_sock_opt_bytes;
    use crest_ptrace::sys::set_sock_opt_int;
    let tcp_int = |name, v: u32, step| set_sock_opt_int(fd, libc::IPPROTO_TCP, name, v as i32).map_err(|e| (step, e));
    let seq_step = "setting its sequence numbers";
    set_queue(fd, TCP_RECV_QUEUE).map_err(|e| (seq_step, e))?;
    tcp_int(TCP_QUEUE_SEQ, t.recv_seq.wrapping_sub(t.recv_queue.len() as u32), seq_step)?;
    set_queue(fd, TCP_SEND_QUEUE).map_err(|e| (seq_step, e))?;
    tcp_int(TCP_QUEUE_SEQ, t.send_seq.wrapping_sub(t.send_queue.len() as u32), seq_step)?;
    // The segment size the connection sends with is worked out at connect, from the largest
    // the peer takes, which is set in repair mode only after it: given for the time of the
    // connect as the program's own (`TCP_MAXSEG`), it is the size agreed, not the default of
    // 536 bytes (a connection over loopback would send in pieces of 524 bytes).
    // The kernel takes no more than 32767 there (a loopback connection agrees on 65495): the
    // size is then bounded by that, as it would be by half the peer's window, and not left at
    // the default.
    let clamp = t.mss >= 88 && set_sock_opt_int(fd, libc::IPPROTO_TCP, libc::TCP_MAXSEG, t.mss.min(MAX_USER_MSS) as i32).is_ok();
    crest_ptrace::net::connect_raw(fd, peer).map_err(|e| ("connecting it again (in repair mode, nothing is sent)", e))?;
    if clamp {
        tcp_int(libc::TCP_MAXSEG, 0, "setting its segment size")?;
    }
    // struct tcp_repair_opt { u32 code; u32 value; }
    let mut opts: Vec<u8> = Vec::new();
    let mut opt = |code: u32, value: u32| {
        opts.extend_from_slice(&code.to_ne_bytes());
        opts.extend_from_slice(&value.to_ne_bytes());
    };
    if t.options & TCPI_OPT_SACK != 0 {
        opt(TCPOPT_SACK_PERM, 0);
    }
    if t.options & TCPI_OPT_WSCALE != 0 {
        opt(TCPOPT_WINDOW, u32::from(t.wscale.0) | (u32::from(t.wscale.1) << 16));
    }
    if t.options & TCPI_OPT_TIMESTAMPS != 0 {
        opt(TCPOPT_TIMESTAMP, 0);
    }
    opt(TCPOPT_MAXSEG, t.mss);
    set_sock_opt_bytes(fd, libc::IPPROTO_TCP, TCP_REPAIR_OPTIONS, &opts).map_err(|e| ("setting the options agreed with its peer", e))?;
    if t.options & TCPI_OPT_TIMESTAMPS != 0 {
        tcp_int(TCP_TIMESTAMP, t.timestamp, "setting its timestamp clock")?;
    }
    // Queued data, written in repair mode: what was received goes to the receive queue, what
    // was to be sent to the send queue, as sent and not acknowledged.
    for (q, data, step) in [(TCP_RECV_QUEUE, &t.recv_queue, "putting back the data it had received"), (TCP_SEND_QUEUE, &t.send_queue, "putting back the data it had to send")] {
        if data.is_empty() {
            continue;
        }
        set_queue(fd, q).map_err(|e| (step, e))?;
        make_room(fd, q, data.len());
        write_queue(fd, data).map_err(|e| (step, e))?;
    }
    let mut w = t.window;
    if fin_received(t.state) {
        // The window is counted from before the FIN that is received again below.
        w[4] = w[4].wrapping_sub(1);
        w[3] = w[3].wrapping_add(1);
    }
    w[0] = window_update_seq(w[0], t.recv_seq, w[3]);
    let bytes: Vec<u8> = w.iter().flat_map(|v| v.to_ne_bytes()).collect();
    set_sock_opt_bytes(fd, libc::IPPROTO_TCP, TCP_REPAIR_WINDOW, &bytes).map_err(|e| ("setting its window", e))?;
    set_queue(fd, TCP_NO_QUEUE).map_err(|e| ("leaving the queues", e))?;
    Ok(())
}

/// Whether sequence number `a` comes after `b` (modulo 2^32, as TCP compares them).
fn seq_after(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) > 0
}

/// The sequence number of the segment that last updated the send window (`snd_wl1`), as the
/// rebuilt connection takes it: `wl1` as saved, unless it lies beyond the right edge of the
/// receive window counted from `rcv_nxt`, what was received in order (`rcv_wnd` ahead), which
/// the kernel refuses. A connection holds such a state when it took a window update from a
/// segment out of order and then closed its window because it ran out of receive memory (it
/// drops a segment and advertises a zero window from `rcv_nxt`: on loopback, with full
/// buffers), or, on kernels that do not move `snd_wl1` on their fast path, when it only
/// received for so long (2 GiB) that the old value looks ahead. Segments beyond `rcv_nxt` are
/// not saved (the peer sends them again), so the rebuilt connection counts its window as
/// taken at `rcv_nxt`: it takes window updates from the segments that come from there on.
fn window_update_seq(wl1: u32, rcv_nxt: u32, rcv_wnd: u32) -> u32 {
    if seq_after(wl1, rcv_nxt.wrapping_add(rcv_wnd)) {
        rcv_nxt
    } else {
        wl1
    }
}

/// The FINs of connection `fd` (rebuilt in state `t`, connected to `peer`, still in repair
/// mode): the peer's, received again as a packet from its address, then its own, queued
/// again. Done in `cr_restart` just before the connection leaves repair mode, once the
/// network lock (which would drop that packet) is removed.
fn fins_again(fd: i32, peer: &[u8], t: &TcpState) -> Result<(), Step> {
    if fin_received(t.state) {
        let local = crest_ptrace::sys::sock_addr(fd, false).map_err(|e| ("reading its address", e))?;
        // An IPv6 socket connected over IPv4 (addresses ::ffff:a.b.c.d) gets an IPv4 packet.
        let (from, to) = match (unmapped(peer), unmapped(&local)) {
            (Some(p), Some(l)) => (p, l),
            _ => (peer.to_vec(), local),
        };
        let ack = t.send_seq.wrapping_sub(t.send_queue.len() as u32);
        let packet =
            fin_packet(&from, &to, t.recv_seq, ack, (t.window[1] >> t.wscale.0).min(0xffff) as u16).ok_or(("receiving its peer's FIN again", std::io::Error::from_raw_os_error(libc::EAFNOSUPPORT)))?;
        crest_ptrace::net::send_ip_packet(&packet, &to).map_err(|e| ("receiving its peer's FIN again (a raw socket, which needs CAP_NET_RAW)", e))?;
    }
    if fin_sent(t.state) {
        set_queue(fd, TCP_SEND_QUEUE).map_err(|e| ("sending its FIN again", e))?;
        crest_ptrace::sys::shutdown(fd, libc::SHUT_WR).map_err(|e| ("sending its FIN again", e))?;
        set_queue(fd, TCP_NO_QUEUE).map_err(|e| ("leaving the queues", e))?;
    }
    Ok(())
}

/// Makes the buffer of queue `q` of `fd` large enough for `len` bytes: a queue larger than a
/// new socket's buffer (one that had grown with the connection) would not fit otherwise.
/// The buffer then keeps that size.
fn make_room(fd: i32, q: i32, len: usize) {
    use crest_ptrace::sys::{set_sock_opt_int, sock_opt_int};
    let (get, force) = if q == TCP_SEND_QUEUE { (libc::SO_SNDBUF, libc::SO_SNDBUFFORCE) } else { (libc::SO_RCVBUF, libc::SO_RCVBUFFORCE) };
    // The kernel counts the memory the data takes, about twice its length.
    let want = len.saturating_mul(2).saturating_add(256 << 10);
    if sock_opt_int(fd, libc::SOL_SOCKET, get).is_ok_and(|has| (has as usize) < want) {
        let v = i32::try_from(want / 2).unwrap_or(i32::MAX / 2);
        if set_sock_opt_int(fd, libc::SOL_SOCKET, force, v).is_err() {
            let _ = set_sock_opt_int(fd, libc::SOL_SOCKET, get, v);
        }
    }
}

/// Writes `data` into the queue chosen in repair mode; the kernel takes a large write in
/// one piece or fails it, so smaller pieces are tried.
fn write_queue(fd: i32, data: &[u8]) -> std::io::Result<()> {
    let mut at = 0;
    let mut chunk = data.len();
    while at < data.len() {
        let end = (at + chunk).min(data.len());
        match crest_ptrace::sys::send_nonblocking(fd, &data[at..end]) {
            Ok(0) => return Err(std::io::Error::from_raw_os_error(libc::EIO)),
            Ok(n) => at += n,
            Err(_) if chunk > 1024 => chunk /= 2,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// The IPv4 `sockaddr_in` of an IPv6 `sockaddr_in6` holding an IPv4-mapped address
/// (`::ffff:a.b.c.d`), with its port; `None` for any other address.
fn unmapped(addr: &[u8]) -> Option<Vec<u8>> {
    if i32::from(u16::from_ne_bytes([*addr.first()?, *addr.get(1)?])) != libc::AF_INET6 || addr.get(8..20)? != [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff] {
        return None;
    }
    let mut v4 = vec![0u8; std::mem::size_of::<libc::sockaddr_in>()];
    v4[0..2].copy_from_slice(&(libc::AF_INET as u16).to_ne_bytes());
    v4[2..4].copy_from_slice(addr.get(2..4)?);
    v4[4..8].copy_from_slice(addr.get(20..24)?);
    Some(v4)
}

/// The one's-complement sum of `b` (16-bit words, network order) added to `sum`.
fn csum_add(mut sum: u32, b: &[u8]) -> u32 {
    for c in b.chunks(2) {
        sum += u32::from(u16::from_be_bytes([c[0], c.get(1).copied().unwrap_or(0)]));
    }
    sum
}

fn csum_fold(mut sum: u32) -> u16 {
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// An IP packet carrying a TCP FIN (with ACK) from `from` to `to` (raw `sockaddr`s of one
/// family), with sequence number `seq` and acknowledging `ack`.
fn fin_packet(from: &[u8], to: &[u8], seq: u32, ack: u32, window: u16) -> Option<Vec<u8>> {
    let family = i32::from(u16::from_ne_bytes([*from.first()?, *from.get(1)?]));
    let mut tcp = Vec::with_capacity(20);
    tcp.extend_from_slice(from.get(2..4)?);
    tcp.extend_from_slice(to.get(2..4)?);
    tcp.extend_from_slice(&seq.to_be_bytes());
    tcp.extend_from_slice(&ack.to_be_bytes());
    tcp.push(5 << 4); // header length: 5 words
    tcp.push(0x11); // FIN | ACK
    tcp.extend_from_slice(&window.to_be_bytes());
    tcp.extend_from_slice(&[0, 0, 0, 0]); // checksum, urgent pointer
    let (src, dst) = match family {
        libc::AF_INET => (from.get(4..8)?, to.get(4..8)?),
        libc::AF_INET6 => (from.get(8..24)?, to.get(8..24)?),
        _ => return None,
    };
    // The checksum covers a pseudo-header of the addresses, protocol and length.
    let mut sum = csum_add(0, src);
    sum = csum_add(sum, dst);
    sum += libc::IPPROTO_TCP as u32 + tcp.len() as u32;
    sum = csum_add(sum, &tcp);
    tcp[16..18].copy_from_slice(&csum_fold(sum).to_be_bytes());
    let mut p = Vec::with_capacity(60);
    if family == libc::AF_INET {
        p.extend_from_slice(&[0x45, 0]);
        p.extend_from_slice(&((20 + tcp.len()) as u16).to_be_bytes());
        p.extend_from_slice(&[0, 0, 0x40, 0, 64, libc::IPPROTO_TCP as u8, 0, 0]); // id, don't fragment, TTL, protocol, checksum
        p.extend_from_slice(src);
        p.extend_from_slice(dst);
        let c = csum_fold(csum_add(0, &p));
        p[10..12].copy_from_slice(&c.to_be_bytes());
    } else {
        p.extend_from_slice(&[0x60, 0, 0, 0]);
        p.extend_from_slice(&(tcp.len() as u16).to_be_bytes());
        p.extend_from_slice(&[libc::IPPROTO_TCP as u8, 64]);
        p.extend_from_slice(src);
        p.extend_from_slice(dst);
    }
    p.extend_from_slice(&tcp);
    Some(p)
}

/// In `cr_restart`, once every process of the image is rebuilt and the network lock is
/// removed, before any connection leaves repair mode: the FINs of the TCP connections of
/// process `pid` (restored from `recs`) that had received or sent one ([`fins_again`]).
pub fn fins_restored(pid: i32, recs: &[FdRecord]) -> Result<(), String> {
    let conns: Vec<&FdRecord> = recs.iter().filter(|r| matches!(&r.kind, FdKind::Inet { tcp: Some(t), .. } if fin_received(t.state) || fin_sent(t.state))).collect();
    if conns.is_empty() {
        return Ok(());
    }
    let pidfd = crest_ptrace::sys::pidfd_open(pid).map_err(|e| format!("PID {pid}: {e}"))?;
    for r in conns {
        let FdKind::Inet { what, peer, tcp: Some(t), .. } = &r.kind else { continue };
        let err = |step: &str, e: std::io::Error| format!("fd {}: {what}: {step}: {e}", r.fd);
        let s = crest_ptrace::sys::pidfd_getfd(pidfd.as_raw_fd(), r.fd).map_err(|e| err("taking a copy of it", e))?;
        fins_again(s.as_raw_fd(), peer, t).map_err(|(step, e)| err(step, e))?;
    }
    Ok(())
}

/// In `cr_restart`, once every process of the image is rebuilt and before any runs: takes the
/// TCP connections of process `pid` (restored from `recs`) out of repair mode. Each sends a
/// window probe, and the connection goes on.
pub fn leave_repair_restored(pid: i32, recs: &[FdRecord]) -> Result<(), String> {
    use crest_ptrace::sys::set_sock_opt_int;
    let conns: Vec<&FdRecord> = recs.iter().filter(|r| matches!(r.kind, FdKind::Inet { tcp: Some(_), .. })).collect();
    if conns.is_empty() {
        return Ok(());
    }
    let pidfd = crest_ptrace::sys::pidfd_open(pid).map_err(|e| format!("PID {pid}: {e}"))?;
    for r in conns {
        let FdKind::Inet { options, what, .. } = &r.kind else { continue };
        let err = |step: &str, e: std::io::Error| format!("fd {}: {what}: {step}: {e}", r.fd);
        let s = crest_ptrace::sys::pidfd_getfd(pidfd.as_raw_fd(), r.fd).map_err(|e| err("taking a copy of it", e))?;
        set_sock_opt_int(s.as_raw_fd(), libc::IPPROTO_TCP, TCP_REPAIR, 0).map_err(|e| err("leaving repair mode", e))?;
        // Leaving repair mode clears SO_REUSEADDR.
        if let Some(&(level, name, value)) = options.iter().find(|o| (o.0, o.1) == (libc::SOL_SOCKET, libc::SO_REUSEADDR)) {
            set_sock_opt_int(s.as_raw_fd(), level, name, value).map_err(|e| err("setting SO_REUSEADDR again", e))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::window_update_seq;

    /// A window update taken beyond the right edge of the receive window is counted from what
    /// was received in order; one within it is kept, across the wrap of sequence numbers.
    #[test]
    fn window_update_beyond_the_receive_window_is_counted_from_rcv_nxt() {
        assert_eq!(window_update_seq(1000, 1000, 0), 1000);
        assert_eq!(window_update_seq(900, 1000, 0), 900);
        assert_eq!(window_update_seq(1500, 1000, 600), 1500);
        assert_eq!(window_update_seq(17370, 1000, 0), 1000);
        assert_eq!(window_update_seq(5, u32::MAX - 10, 0), u32::MAX - 10);
        assert_eq!(window_update_seq(5, u32::MAX - 10, 100), 5);
        // More than 2 GiB behind looks ahead.
        assert_eq!(window_update_seq(1000, 1000 + (1 << 31) + 1, 0), 1000 + (1 << 31) + 1);
    }
}
