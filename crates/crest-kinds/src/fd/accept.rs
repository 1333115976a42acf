//! TCP connections waiting to be accepted: a listener's queue of connections the program has
//! not `accept`ed yet.
//!
//! The kernel cannot put a connection back in a listener's queue, and a connection in the
//! queue has no descriptor to read it by. What crest saves is the connection's client, when
//! the client is a socket of the image (a program that connects to itself, or a client and a
//! server checkpointed together): at restart the client connects to the restored listener
//! again, so that the connection waits in its queue as it did, and the program accepts it
//! when it gets to it. Saved so only when nothing was lost by it: the connection holds no
//! data the client had sent (that data sits in the queued connection, which only `accept`
//! would read) and the client had not shut it down, and connecting to the listener's address
//! from the client's address reaches the address the client had connected to.
//!
//! A listener with a connection from a client outside the image (another host, a process not
//! checkpointed) is refused with a message naming the client: the connection would be reset
//! when the program is killed, and the client could not be made to connect again.
//!
//! Which connections wait on which listener, and whether they hold data, comes from the
//! kernel's socket diagnostics (`NETLINK_SOCK_DIAG`, both internet families): a connection in
//! a listener's queue is an established socket on the listener's port that no file holds
//! (inode 0).
use std::net::Ipv6Addr;

use crest_image::FdKind;

use super::socket::{diag_dump, inode, Described};
use super::DumpCx;

/// `TCP_ESTABLISHED`, `TCP_CLOSE_WAIT` and `TCP_LISTEN`, as the diagnostics give states.
const ESTABLISHED: u8 = 1;
const CLOSE_WAIT: u8 = 8;
const LISTEN: u8 = 10;

/// One end of a TCP connection: an IPv6 address (an IPv4 one mapped) and a port.
type End = (Ipv6Addr, u16);

/// A TCP socket as the diagnostics list it.
#[derive(Debug, Clone, Copy)]
pub(super) struct TcpDiag {
    state: u8,
    local: End,
    remote: End,
    /// Bytes received and not read.
    rqueue: u32,
    /// The inode of its file (0: no file holds it).
    ino: u64,
}

/// Every TCP socket of this network namespace, both families.
pub(super) fn tcp_sockets() -> std::io::Result<Vec<TcpDiag>> {
    let mut out = Vec::new();
    for family in [libc::AF_INET, libc::AF_INET6] {
        // struct inet_diag_req_v2: family, protocol, ext, pad, states, then a socket id that a
        // dump does not look at.
        let mut req = vec![family as u8, libc::IPPROTO_TCP as u8, 0, 0];
        req.extend_from_slice(&u32::MAX.to_ne_bytes());
        req.extend_from_slice(&[0; 48]);
        diag_dump(&req, |m| {
            // struct inet_diag_msg: family, state, timer, retrans; the ports (network order)
            // at 4 and 6, the addresses at 8 and 24 (16 bytes each); rqueue at 56, inode at 68.
            let Some(b) = m.get(..72) else { return };
            let port = |at: usize| u16::from_be_bytes([b[at], b[at + 1]]);
            let ip = |at: usize| -> Ipv6Addr {
                if i32::from(b[0]) == libc::AF_INET {
                    std::net::Ipv4Addr::new(b[at], b[at + 1], b[at + 2], b[at + 3]).to_ipv6_mapped()
                } else {
                    Ipv6Addr::from(<[u8; 16]>::try_from(&b[at..at + 16]).unwrap_or_default())
                }
            };
            let word = |at: usize| u32::from_ne_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]);
            out.push(TcpDiag { state: b[1], local: (ip(8), port(4)), remote: (ip(24), port(6)), rqueue: word(56), ino: u64::from(word(68)) });
        })?;
    }
    Ok(out)
}

/// The end a raw `sockaddr_in` or `sockaddr_in6` names.
fn end_of(addr: &[u8]) -> Option<End> {
    let family = i32::from(u16::from_ne_bytes([*addr.first()?, *addr.get(1)?]));
    let port = u16::from_be_bytes([*addr.get(2)?, *addr.get(3)?]);
    match family {
        libc::AF_INET => Some((std::net::Ipv4Addr::from(<[u8; 4]>::try_from(addr.get(4..8)?).ok()?).to_ipv6_mapped(), port)),
        libc::AF_INET6 => Some((Ipv6Addr::from(<[u8; 16]>::try_from(addr.get(8..24)?).ok()?), port)),
        _ => None,
    }
}

/// Whether `ip` is a wildcard address (`0.0.0.0` or `::`).
fn wildcard(ip: &Ipv6Addr) -> bool {
    ip.is_unspecified() || ip.to_ipv4_mapped().is_some_and(|v4| v4.is_unspecified())
}

/// Whether a listener bound to `listener` takes connections to `to`.
fn listens_on(listener: &End, to: &End) -> bool {
    listener.1 == to.1 && (wildcard(&listener.0) || listener.0 == to.0)
}

fn words(e: &End) -> String {
    match e.0.to_ipv4_mapped() {
        Some(v4) => format!("{v4}:{}", e.1),
        None => format!("[{}]:{}", e.0, e.1),
    }
}

/// The connections waiting to be accepted by the listener bound to `addr` (the raw address
/// of socket `ino`).
fn queued_on(all: &[TcpDiag], addr: &End) -> Vec<TcpDiag> {
    all.iter().filter(|s| s.ino == 0 && matches!(s.state, ESTABLISHED | CLOSE_WAIT) && listens_on(addr, &s.local)).copied().collect()
}

/// Checks, for a TCP listener of the image (`copy` is a copy of it) with `n` connections
/// waiting to be accepted, that each comes from a client of the image that will connect to it
/// again at restart ([`pending_client`]); `Err(why)` names what cannot be saved.
pub(super) fn check_listener(cx: &mut DumpCx<'_>, copy: i32, n: u32) -> Result<(), String> {
    let addr = crest_ptrace::sys::sock_addr(copy, false).ok().and_then(|a| end_of(&a)).ok_or("its address cannot be read")?;
    let all = cx.unix_peers.tcp_sockets().map_err(|e| format!("{n} connection(s) wait to be accepted, and the socket diagnostics that tell where they come from cannot be read: {e}"))?.to_vec();
    let queued = queued_on(&all, &addr);
    let listeners = all.iter().filter(|s| s.state == LISTEN && s.local.1 == addr.1).count();
    if queued.len() != n as usize || listeners > 1 {
        return Err(format!(
            "{n} connection{} waiting to be accepted, and which of them wait on it cannot be told (several listeners share its port, or the queue moved); the kernel cannot put a connection back in a listener's queue (checkpoint again once the program has accepted {})",
            if n == 1 { " is" } else { "s are" },
            if n == 1 { "it" } else { "them" }
        ));
    }
    for q in queued {
        let from = words(&q.remote);
        if q.state == CLOSE_WAIT {
            return Err(format!("a connection waiting to be accepted comes from {from}, which has closed it since: what it sent cannot be read without accepting it, so it is not saved"));
        }
        if q.rqueue > 0 {
            return Err(format!(
                "a connection waiting to be accepted, from {from}, holds {} bytes its client sent, which cannot be read without accepting it (checkpoint again once the program has accepted it)",
                q.rqueue
            ));
        }
        let client = all.iter().find(|s| s.local == q.remote && s.remote == q.local && s.ino != 0);
        let inside = client.is_some_and(|c| cx.all.iter().any(|o| inode(&o.link) == Some(c.ino)));
        if !inside {
            let who = client.and_then(|c| super::socket::holder_of(c.ino)).map(|(pid, comm)| format!(" (PID {pid}, {comm})")).unwrap_or_default();
            return Err(format!("a connection waiting to be accepted comes from {from}{who}, which is not in the checkpoint: it could not connect again after the restart"));
        }
    }
    Ok(())
}

/// The record of a TCP client (`copy` is a copy of it) whose connection waits to be accepted
/// by a listener of the image: it connects to that listener again at restart. `None` for
/// any other socket.
pub(super) fn pending_client(cx: &mut DumpCx<'_>, copy: i32, d: &Described) -> Result<Option<FdKind>, String> {
    use crest_ptrace::sys::{sock_addr, sock_opt_int};
    let opt = |o| sock_opt_int(copy, libc::SOL_SOCKET, o).unwrap_or(-1);
    let (family, ty, protocol) = (opt(libc::SO_DOMAIN), opt(libc::SO_TYPE), opt(libc::SO_PROTOCOL));
    if !matches!(family, libc::AF_INET | libc::AF_INET6) || (ty, protocol) != (libc::SOCK_STREAM, libc::IPPROTO_TCP) || !d.connected {
        return Ok(None);
    }
    let (Ok(local_raw), Ok(peer_raw)) = (sock_addr(copy, false), sock_addr(copy, true)) else { return Ok(None) };
    let (Some(local), Some(peer)) = (end_of(&local_raw), end_of(&peer_raw)) else { return Ok(None) };
    let Ok(all) = cx.unix_peers.tcp_sockets().map(<[TcpDiag]>::to_vec) else { return Ok(None) };
    // Its other end, waiting in a listener's queue.
    if !all.iter().any(|s| s.ino == 0 && matches!(s.state, ESTABLISHED | CLOSE_WAIT) && s.local == peer && s.remote == local) {
        return Ok(None);
    }
    let Some(listener) = all.iter().find(|s| s.state == LISTEN && listens_on(&s.local, &peer) && cx.all.iter().any(|o| inode(&o.link) == Some(s.ino))) else { return Ok(None) };
    let state = crest_ptrace::sys::sock_opt_bytes(copy, libc::IPPROTO_TCP, libc::TCP_INFO, 8).map_err(|e| format!("reading its TCP state: {e}"))?.first().copied().unwrap_or(0);
    if state != ESTABLISHED {
        return Err("its connection waits to be accepted, and it has shut it down since, which is not saved (the connection would have to be accepted to be read)".to_string());
    }
    let queued = |req| crest_ptrace::net::ioctl_int(copy, req).unwrap_or(1);
    if queued(crest_ptrace::net::SIOCOUTQ) != 0 || queued(crest_ptrace::net::SIOCINQ) != 0 {
        return Err("its connection waits to be accepted with data in flight on it, which is not saved (checkpoint again once the program has accepted it)".to_string());
    }
    // At restart it connects to the listener's address: a wildcard one reaches its own
    // address (IPv4) or the loopback address (IPv6).
    let target = listen_addr(cx, listener.ino).and_then(|a| connect_target(&a, family)).and_then(|t| end_of(&t));
    let reached = target.map(|t| if wildcard(&t.0) { (if family == libc::AF_INET { local.0 } else { Ipv6Addr::LOCALHOST }, t.1) } else { t });
    if reached != Some(peer) {
        return Err(format!(
            "its connection to {} waits to be accepted by a listener on {}, and connecting to that listener again would not reach the same address, which is not saved",
            words(&peer),
            words(&listener.local)
        ));
    }
    let (options, byte_options) = super::sockopt::read(copy, family, ty, protocol)?;
    Ok(Some(FdKind::Socket {
        family,
        ty,
        protocol,
        addr: local_raw,
        listen: None,
        options,
        what: format!("{} (waiting to be accepted)", d.what),
        byte_options,
        ino: 0,
        peer: listener.ino,
        unlinked: false,
        shutdown: 0,
        queue: Vec::new(),
        pending: true,
        file_attrs: None,
        dest: Vec::new(),
    }))
}

/// The raw address of the socket of inode `ino`, a descriptor of the image.
fn listen_addr(cx: &DumpCx<'_>, ino: u64) -> Option<Vec<u8>> {
    use std::os::fd::AsRawFd;
    let o = cx.all.iter().find(|o| inode(&o.link) == Some(ino))?;
    let pidfd = crest_ptrace::sys::pidfd_open(o.pid).ok()?;
    let copy = crest_ptrace::sys::pidfd_getfd(pidfd.as_raw_fd(), o.fd).ok()?;
    crest_ptrace::sys::sock_addr(copy.as_raw_fd(), false).ok()
}

/// The address a TCP client of family `family` connects to, to reach the listener bound to
/// `listener` (a raw `sockaddr`): the same address, or the wildcard address of the client's
/// family with the listener's port when the listener is bound to a wildcard address or is of
/// the other family.
pub(super) fn connect_target(listener: &[u8], family: i32) -> Option<Vec<u8>> {
    let (ip, port) = end_of(listener)?;
    let same = i32::from(u16::from_ne_bytes([listener[0], listener[1]])) == family;
    if same && !wildcard(&ip) {
        return Some(listener.to_vec());
    }
    let v4 = ip.to_ipv4_mapped();
    if family == libc::AF_INET {
        let ip = if wildcard(&ip) { std::net::Ipv4Addr::UNSPECIFIED } else { v4? };
        let mut a = vec![0u8; std::mem::size_of::<libc::sockaddr_in>()];
        a[0..2].copy_from_slice(&(libc::AF_INET as u16).to_ne_bytes());
        a[2..4].copy_from_slice(&port.to_be_bytes());
        a[4..8].copy_from_slice(&ip.octets());
        Some(a)
    } else {
        let ip = if wildcard(&ip) { Ipv6Addr::UNSPECIFIED } else { ip };
        let mut a = vec![0u8; std::mem::size_of::<libc::sockaddr_in6>()];
        a[0..2].copy_from_slice(&(libc::AF_INET6 as u16).to_ne_bytes());
        a[2..4].copy_from_slice(&port.to_be_bytes());
        a[8..24].copy_from_slice(&ip.octets());
        Some(a)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v4(ip: [u8; 4], port: u16) -> Vec<u8> {
        let mut a = vec![0u8; 16];
        a[0..2].copy_from_slice(&(libc::AF_INET as u16).to_ne_bytes());
        a[2..4].copy_from_slice(&port.to_be_bytes());
        a[4..8].copy_from_slice(&ip);
        a
    }

    #[test]
    fn targets() {
        assert_eq!(connect_target(&v4([127, 0, 0, 1], 80), libc::AF_INET), Some(v4([127, 0, 0, 1], 80)));
        assert_eq!(connect_target(&v4([0, 0, 0, 0], 80), libc::AF_INET), Some(v4([0, 0, 0, 0], 80)));
        let t6 = connect_target(&v4([0, 0, 0, 0], 81), libc::AF_INET6).unwrap();
        assert_eq!(end_of(&t6), Some((Ipv6Addr::UNSPECIFIED, 81)));
        assert!(listens_on(&(Ipv6Addr::UNSPECIFIED, 81), &(std::net::Ipv4Addr::LOCALHOST.to_ipv6_mapped(), 81)));
        assert!(!listens_on(&(std::net::Ipv4Addr::LOCALHOST.to_ipv6_mapped(), 81), &(Ipv6Addr::LOCALHOST, 81)));
    }
}
