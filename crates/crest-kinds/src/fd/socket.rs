//! Sockets. Saved and restored: sockets that are not connected: listening TCP and unix
//! (stream, seqpacket) sockets with no connection waiting to be accepted, bound UDP, ICMP echo
//! and unix datagram sockets with nothing waiting to be read, and sockets not bound yet; each comes back
//! bound to its address (a unix socket's stale file replaced), listening with its backlog, with
//! its options ([`super::sockopt`]) and shut down as it was. A listener shared by several
//! processes (a pre-forking server) is one socket again.
//!
//! A unix datagram socket connected to a server that is not connected back (a client of a
//! datagram service) whose server is in the image comes back connected to it: both are made
//! by `cr_restart`, the server bound first. A unix socket whose file was removed or replaced
//! after it was bound (the diagnostics' inode of its file is no longer what its path names)
//! is bound to its address again and the file removed, what took its name left in place.
//!
//! Connected unix sockets whose two ends are in the image are made again as a pair with their
//! queued messages (a stream socket whose other end was closed, as a pair whose other end is
//! closed once it has sent what was queued); connected TCP and UDP sockets are restored by [`super::tcp`]. Other
//! connected sockets (a unix socket whose peer is outside the image: the message names the
//! process holding it), netlink, packet and raw sockets, queued connections and datagrams are
//! refused at checkpoint time with a description ("unix stream socket connected to
//! /run/x.sock"), or left out on request ([`super::unsupported`]). The one exception, as in
//! BLCR: standard input, output or error connected to a process that is not checkpointed (a
//! service whose output goes to a log collector) follows `cr_restart`'s own
//! ([`super::inherited`]).
//!
//! What a socket is comes from a copy of it (`pidfd_getfd`: domain, type, protocol, listening,
//! own and peer address, `TCP_INFO`); the other end and the queues of a unix socket, from the
//! kernel's socket diagnostics (`NETLINK_SOCK_DIAG`, asked once per checkpoint for every unix
//! socket).
use std::collections::HashMap;
use std::fs::Metadata;
use std::io::{Read, Write};
use std::os::fd::AsRawFd;

use crest_image::{FdKind, FdRecord, StdioClass};
use crest_proc::FdInfo;

use super::{DumpCx, FdHandler};
use crate::KindError;

/// The handler.
pub struct Socket;

/// The inode of a `socket:[N]` link.
pub(super) fn inode(link: &str) -> Option<u64> {
    link.strip_prefix("socket:[")?.strip_suffix(']')?.parse().ok()
}

/// What the kernel's socket diagnostics tell of a unix socket.
#[derive(Debug, Clone, Copy, Default)]
struct UnixDiag {
    /// The inode of its peer (0: none).
    peer: u64,
    /// Connections waiting to be accepted (listening) or datagrams and bytes queued.
    rqueue: u32,
    /// A listener's backlog.
    wqueue: u32,
    /// Shut down for receiving (1), sending (2).
    shutdown: u8,
    /// The inode and device (the kernel's encoding) of the file it is bound to, if it is
    /// bound to a path.
    vfs: Option<(u64, u32)>,
}

/// Unix socket inode -> what the kernel's socket diagnostics tell of it.
#[derive(Default)]
pub struct UnixPeers(Option<HashMap<u64, UnixDiag>>);

impl UnixPeers {
    fn get(&mut self, ino: u64) -> Option<UnixDiag> {
        if self.0.is_none() {
            self.0 = Some(unix_peers().unwrap_or_default());
        }
        self.0.as_ref()?.get(&ino).copied()
    }

    fn peer_of(&mut self, ino: u64) -> Option<u64> {
        self.get(ino).map(|d| d.peer).filter(|&p| p != 0)
    }

    /// Whether a socket other than its own peer is connected to unix socket `ino` (it is a
    /// datagram server, and that socket one of its clients).
    fn has_clients(&mut self, ino: u64) -> bool {
        let own = self.peer_of(ino).unwrap_or(0);
        self.0.as_ref().is_some_and(|m| m.iter().any(|(&k, d)| d.peer == ino && k != own))
    }
}

const SOCK_DIAG_BY_FAMILY: u16 = 20;
const NLM_F_REQUEST: u16 = 1;
const NLM_F_DUMP: u16 = 0x300;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const UDIAG_SHOW_PEER: u32 = 4;
const UDIAG_SHOW_RQLEN: u32 = 16;
const UNIX_DIAG_PEER: u16 = 2;
const UNIX_DIAG_RQLEN: u16 = 4;
const UNIX_DIAG_SHUTDOWN: u16 = 6;
const UDIAG_SHOW_VFS: u32 = 2;
const UNIX_DIAG_VFS: u16 = 1;
const INET_DIAG_SHUTDOWN: u16 = 8;

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

/// Sends the socket diagnostics request `req` (the `SOCK_DIAG_BY_FAMILY` dump request that
/// follows the netlink header) and hands each answer (what follows its netlink header) to
/// `each`.
fn diag_dump(req: &[u8], mut each: impl FnMut(&[u8])) -> std::io::Result<()> {
    let mut sock = std::fs::File::from(crest_ptrace::sys::sock_diag_socket()?);
    let mut msg = Vec::with_capacity(16 + req.len());
    msg.extend_from_slice(&(16 + req.len() as u32).to_ne_bytes());
    msg.extend_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
    msg.extend_from_slice(&(NLM_F_REQUEST | NLM_F_DUMP).to_ne_bytes());
    msg.extend_from_slice(&[0; 8]); // sequence, port
    msg.extend_from_slice(req);
    sock.write_all(&msg)?;
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let n = sock.read(&mut buf)?;
        if n == 0 {
            return Ok(());
        }
        let mut at = 0;
        while at + 16 <= n {
            let len = u32_at(&buf, at).unwrap_or(0) as usize;
            let ty = u16_at(&buf, at + 4).unwrap_or(0);
            if len < 16 || at + len > n {
                break;
            }
            match ty {
                NLMSG_DONE => return Ok(()),
                NLMSG_ERROR => return Err(std::io::Error::other("socket diagnostics refused the request")),
                _ => each(&buf[at + 16..at + len]),
            }
            at += (len + 3) & !3;
        }
    }
}

/// The attributes (type, value) of a diagnostics answer, from `at`.
fn diag_attrs(msg: &[u8], mut at: usize) -> impl Iterator<Item = (u16, &[u8])> {
    std::iter::from_fn(move || {
        let alen = u16_at(msg, at)? as usize;
        let aty = u16_at(msg, at + 2)?;
        let value = msg.get(at + 4..at + alen)?;
        at += (alen + 3) & !3;
        Some((aty, value))
    })
}

/// Every unix socket of this network namespace with its peer and queues.
fn unix_peers() -> std::io::Result<HashMap<u64, UnixDiag>> {
    let mut req = Vec::with_capacity(24);
    req.extend_from_slice(&[libc::AF_UNIX as u8, 0, 0, 0]); // family, protocol, padding
    req.extend_from_slice(&u32::MAX.to_ne_bytes()); // every state
    req.extend_from_slice(&0u32.to_ne_bytes()); // inode: all
    req.extend_from_slice(&(UDIAG_SHOW_PEER | UDIAG_SHOW_RQLEN | UDIAG_SHOW_VFS).to_ne_bytes());
    req.extend_from_slice(&[0xff; 8]); // no cookie
    let mut out = HashMap::new();
    diag_dump(&req, |msg| {
        // struct unix_diag_msg: family, type, state, pad, inode, cookie[2]; then attributes.
        let Some(ino) = u32_at(msg, 4) else { return };
        let mut d = UnixDiag::default();
        for (ty, v) in diag_attrs(msg, 16) {
            match ty {
                UNIX_DIAG_PEER => d.peer = u64::from(u32_at(v, 0).unwrap_or(0)),
                UNIX_DIAG_RQLEN => {
                    d.rqueue = u32_at(v, 0).unwrap_or(0);
                    d.wqueue = u32_at(v, 4).unwrap_or(0);
                }
                UNIX_DIAG_SHUTDOWN => d.shutdown = v.first().copied().unwrap_or(0),
                UNIX_DIAG_VFS => d.vfs = Some((u64::from(u32_at(v, 0).unwrap_or(0)), u32_at(v, 4).unwrap_or(0))),
                _ => {}
            }
        }
        out.insert(u64::from(ino), d);
    })?;
    Ok(out)
}

/// How the internet socket of inode `ino` (of this family and protocol) was shut down, from
/// the kernel's socket diagnostics; `None` when they cannot tell.
pub(super) fn inet_shutdown(family: i32, protocol: i32, ino: u64) -> Option<u8> {
    // struct inet_diag_req_v2: family, protocol, ext, pad, states, then a socket id that a
    // dump does not look at.
    let mut req = vec![family as u8, protocol as u8, 0, 0];
    req.extend_from_slice(&u32::MAX.to_ne_bytes());
    req.extend_from_slice(&[0; 48]);
    let mut found = None;
    diag_dump(&req, |msg| {
        // struct inet_diag_msg: the inode at 68; attributes from 72.
        if u32_at(msg, 68).map(u64::from) == Some(ino) {
            found = diag_attrs(msg, 72).find(|&(ty, _)| ty == INET_DIAG_SHUTDOWN).and_then(|(_, v)| v.first().copied()).or(Some(0));
        }
    })
    .ok()?;
    found
}

/// A socket address in words: `127.0.0.1:80`, `[::1]:80`, `/run/x.sock`, `@abstract`, or
/// `None` for an unnamed unix socket or an unbound one.
fn addr_words(b: &[u8]) -> Option<String> {
    let family = i32::from(u16_at(b, 0)?);
    match family {
        libc::AF_INET => {
            let port = u16::from_be_bytes(b.get(2..4)?.try_into().ok()?);
            let ip = std::net::Ipv4Addr::from(<[u8; 4]>::try_from(b.get(4..8)?).ok()?);
            Some(format!("{ip}:{port}"))
        }
        libc::AF_INET6 => {
            let port = u16::from_be_bytes(b.get(2..4)?.try_into().ok()?);
            let ip = std::net::Ipv6Addr::from(<[u8; 16]>::try_from(b.get(8..24)?).ok()?);
            Some(format!("[{ip}]:{port}"))
        }
        libc::AF_UNIX => {
            let path = b.get(2..)?;
            match path.first() {
                None => None,
                Some(0) => Some(format!("@{}", String::from_utf8_lossy(&path[1..]))),
                Some(_) => Some(String::from_utf8_lossy(path.split(|&c| c == 0).next().unwrap_or(path)).into_owned()),
            }
        }
        _ => None,
    }
}

/// What a socket is, read from a copy of it.
pub(super) struct Described {
    /// In words.
    pub what: String,
    /// Connected to a peer (not listening).
    pub connected: bool,
}

fn describe(copy: i32, ino: u64) -> Described {
    use crest_ptrace::sys::{sock_addr, sock_opt_int};
    let opt = |o| sock_opt_int(copy, libc::SOL_SOCKET, o).unwrap_or(-1);
    let (family, ty, proto, listening) = (opt(libc::SO_DOMAIN), opt(libc::SO_TYPE), opt(libc::SO_PROTOCOL), opt(libc::SO_ACCEPTCONN) == 1);
    let local = sock_addr(copy, false).ok().and_then(|a| addr_words(&a));
    let peer_addr = sock_addr(copy, true).ok();
    let connected = peer_addr.is_some();
    let peer = peer_addr.as_deref().and_then(addr_words);
    let type_word = match ty {
        libc::SOCK_STREAM => "stream",
        libc::SOCK_DGRAM => "datagram",
        libc::SOCK_SEQPACKET => "seqpacket",
        libc::SOCK_RAW => "raw",
        _ => "other",
    };
    let name = match family {
        libc::AF_INET | libc::AF_INET6 => {
            let v = if family == libc::AF_INET { "" } else { "6" };
            match (ty, proto) {
                (libc::SOCK_STREAM, libc::IPPROTO_TCP) => format!("TCP{v}"),
                (libc::SOCK_DGRAM, libc::IPPROTO_UDP) => format!("UDP{v}"),
                (libc::SOCK_DGRAM, libc::IPPROTO_UDPLITE) => format!("UDP-Lite{v}"),
                (libc::SOCK_DGRAM, libc::IPPROTO_ICMP | libc::IPPROTO_ICMPV6) => {
                    format!("ICMP{v} (ping)")
                }
                _ => format!("IPv{} {type_word} socket (protocol {proto})", if v.is_empty() { 4 } else { 6 }),
            }
        }
        libc::AF_UNIX => format!("unix {type_word} socket"),
        libc::AF_NETLINK => format!("netlink socket (protocol {proto})"),
        libc::AF_PACKET => "packet socket".to_string(),
        -1 => format!("socket:[{ino}]"),
        f => format!("socket of address family {f}"),
    };
    let mut what = name;
    if let Some(l) = &local {
        what.push(' ');
        what.push_str(l);
    }
    if listening {
        what.push_str(" listening");
    } else if let Some(p) = &peer {
        what.push_str(&format!(" connected to {p}"));
    } else if connected {
        what.push_str(" connected");
    } else if local.is_none() && family != libc::AF_UNIX {
        what.push_str(" not bound");
    }
    Described { what, connected: connected && !listening }
}

impl FdHandler for Socket {
    fn name(&self) -> &'static str {
        "socket"
    }
    fn claims(&self, link: &str, _md: &Metadata) -> bool {
        inode(link).is_some()
    }
    fn dump(&self, cx: &mut DumpCx<'_>, fd: i32, link: &str, _md: &Metadata, _info: &FdInfo) -> Result<FdKind, KindError> {
        let ino = inode(link).unwrap_or(0);
        let copy = cx.pidfd.as_ref().and_then(|p| crest_ptrace::sys::pidfd_getfd(p.as_raw_fd(), fd).ok());
        let mut d = copy.as_ref().map_or_else(|| Described { what: link.to_string(), connected: false }, |c| describe(c.as_raw_fd(), ino));
        let mut why = "connected sockets are not saved yet".to_string();
        if let Some(c) = &copy {
            match unconnected(cx, c.as_raw_fd(), ino, &d) {
                Ok(Some(kind)) => return Ok(kind),
                Ok(None) => {}
                Err(e) => why = e,
            }
            let opt = |o| crest_ptrace::sys::sock_opt_int(c.as_raw_fd(), libc::SOL_SOCKET, o).unwrap_or(-1);
            let (family, ty, protocol) = (opt(libc::SO_DOMAIN), opt(libc::SO_TYPE), opt(libc::SO_PROTOCOL));
            let inet = matches!(family, libc::AF_INET | libc::AF_INET6);
            if inet && d.connected && matches!((ty, protocol), (libc::SOCK_STREAM, libc::IPPROTO_TCP) | (libc::SOCK_DGRAM, libc::IPPROTO_UDP | libc::IPPROTO_UDPLITE)) {
                match super::tcp::dump(c, ino, family, ty, protocol, &d) {
                    Ok(kind) => return Ok(kind),
                    Err(e) => why = e,
                }
            }
            match family {
                libc::AF_NETLINK => why = "netlink sockets (a channel to the kernel: routing, audit, udev events...) are not saved".to_string(),
                libc::AF_PACKET => why = "packet sockets (raw access to a network interface) are not saved".to_string(),
                _ if inet && ty == libc::SOCK_RAW => why = "raw IP sockets are not saved".to_string(),
                _ => {}
            }
        }
        // The other end of a unix socket, when it is in the image too.
        let peer = cx.unix_peers.peer_of(ino);
        let inside = peer.and_then(|p| cx.all.iter().find(|o| inode(&o.link) == Some(p))).cloned();
        if let (Some(o), Some(c), Some(p)) = (&inside, &copy, peer) {
            match pair(cx, c.as_raw_fd(), ino, p, o, &d) {
                Ok(kind) => return Ok(kind),
                Err(e) => why = e,
            }
        }
        if let (None, Some(c), true) = (peer, &copy, d.connected) {
            match alone(cx, c.as_raw_fd(), ino, &d) {
                Ok(Some(kind)) => return Ok(kind),
                Ok(None) => {}
                Err(e) => why = e,
            }
        }
        if let Some(o) = &inside {
            d.what.push_str(&format!(" (its other end is fd {} of PID {})", o.fd, o.pid));
        } else if let Some(p) = peer {
            if !d.what.contains("connected") {
                d.what.push_str(" connected");
                d.connected = true;
            }
            why = match holder_of(p) {
                Some((pid, comm)) => format!("its other end belongs to PID {pid} ({comm}), which is not in the checkpoint, so the connection cannot be made again"),
                None => "its other end belongs to no process of the checkpoint, so the connection cannot be made again".to_string(),
            };
        }
        let outside = d.connected && inside.is_none() && !inet_peer_inside(cx, copy.as_ref().map(AsRawFd::as_raw_fd));
        super::inherited::outside(cx, fd, StdioClass::Socket, outside, d.what, &why)
    }
    fn restores(&self, kind: &FdKind) -> bool {
        matches!(kind, FdKind::Socket { .. } | FdKind::UnixPair { .. } | FdKind::Inet { .. })
    }
    fn sharing(&self, kind: &FdKind) -> super::Sharing {
        // A datagram socket and the server it is connected to are made by cr_restart, which
        // connects the one to the other, wherever they are.
        if matches!(kind, FdKind::UnixPair { .. }) || matches!(kind, FdKind::Socket { ino, peer, .. } if *ino != 0 || *peer != 0) {
            super::Sharing::Image
        } else {
            super::Sharing::File
        }
    }
    fn describe(&self, kind: &FdKind) -> String {
        match kind {
            FdKind::UnixPair { what, state: Some(s), .. } => format!("{what}, {} and {} messages queued", s.queues[0].len(), s.queues[1].len()),
            FdKind::Inet { what, tcp: Some(t), .. } => {
                format!("{what}, TCP state {}, {} bytes to send ({} not sent yet), {} bytes received and not read", t.state, t.send_queue.len(), t.unsent, t.recv_queue.len())
            }
            FdKind::Socket { what, .. } | FdKind::UnixPair { what, .. } | FdKind::Inet { what, .. } => what.clone(),
            _ => String::new(),
        }
    }
    fn open(&self, rec: &FdRecord, cx: &mut super::PrepareCx) -> Result<super::Opened, String> {
        if let FdKind::UnixPair { .. } = &rec.kind {
            return open_pair(rec, cx).map(super::Opened::Fd);
        }
        if let FdKind::Inet { .. } = &rec.kind {
            return super::tcp::open(rec).map(super::Opened::Fd);
        }
        let FdKind::Socket { family, ty, protocol, addr, listen, options, what, byte_options, ino, peer, unlinked, shutdown } = &rec.kind else { return Err(super::wrong_kind(self, rec)) };
        let err = |step: &str, e: std::io::Error| format!("fd {}: {what}: {step}: {e}", rec.fd);
        // A client waits for its server to be bound; a socket connected to itself connects
        // once bound.
        let server = match *peer {
            0 => None,
            p if p == *ino => None,
            p => match cx.unix_names.get(&p) {
                Some(a) => Some(a.clone()),
                None => return Ok(super::Opened::NotYet(Vec::new())),
            },
        };
        let s = crest_ptrace::sys::socket(*family, *ty, *protocol).map_err(|e| err("creating it", e))?;
        super::sockopt::apply(s.as_raw_fd(), options, byte_options).map_err(|(step, e)| err(&step, e))?;
        // A TCP listener shares its port with the connections accepted from it, which may be
        // restored before it (in repair mode, they may share any port): it binds with
        // SO_REUSEADDR, then gets its own setting back.
        let reuse = options.iter().find(|o| (o.0, o.1) == (libc::SOL_SOCKET, libc::SO_REUSEADDR)).map(|o| o.2);
        let tcp_listener = listen.is_some() && matches!(*family, libc::AF_INET | libc::AF_INET6) && *protocol == libc::IPPROTO_TCP;
        if tcp_listener && reuse == Some(0) {
            crest_ptrace::sys::set_sock_opt_int(s.as_raw_fd(), libc::SOL_SOCKET, libc::SO_REUSEADDR, 1).map_err(|e| err("setting SO_REUSEADDR", e))?;
        }
        // Sockets that shared a port through SO_REUSEPORT may since have cleared it on some of
        // them; bound in any order, each needs it at its bind. It is cleared again by
        // [`settle_restored`], once every socket of the image is bound.
        if reuseport_for_bind(&rec.kind) {
            crest_ptrace::sys::set_sock_opt_int(s.as_raw_fd(), libc::SOL_SOCKET, libc::SO_REUSEPORT, 1).map_err(|e| err("setting SO_REUSEPORT for the time of its bind", e))?;
        }
        if let (true, Some(path)) = (*unlinked, unix_path(addr)) {
            let name = bind_unlinked(s.as_raw_fd(), addr, &path, *ino, cx).map_err(|(step, e)| err(&step, e))?;
            if *ino != 0 {
                cx.unix_names.insert(*ino, name);
            }
        } else if !addr.is_empty() {
            if let Some(path) = unix_path(addr) {
                // The file the saved socket left behind: a socket file nobody listens on now.
                use std::os::unix::fs::FileTypeExt;
                if std::fs::symlink_metadata(&path).is_ok_and(|m| m.file_type().is_socket()) {
                    let _ = std::fs::remove_file(&path);
                }
            }
            if *ino != 0 {
                cx.unix_names.insert(*ino, addr.clone());
            }
            super::sockopt::bind(s.as_raw_fd(), addr).map_err(|e| {
                let reuse = options.iter().any(|o| (o.0, o.1, o.2) == (libc::SOL_SOCKET, libc::SO_REUSEADDR, 1));
                if e.raw_os_error() == Some(libc::EADDRINUSE) && !reuse && matches!(*family, libc::AF_INET | libc::AF_INET6) {
                    // As for any server restarted without SO_REUSEADDR.
                    err("binding it again (the connections it had on that port linger for a minute after it ended, and it did not set SO_REUSEADDR: try again shortly)", e)
                } else {
                    err("binding it again", e)
                }
            })?;
        }
        if let Some(backlog) = listen {
            crest_ptrace::sys::listen(s.as_raw_fd(), *backlog).map_err(|e| err("listening again", e))?;
        }
        if let Some(a) = server.as_ref().or_else(|| cx.unix_names.get(peer).filter(|_| *peer == *ino)) {
            crest_ptrace::net::connect_raw(s.as_raw_fd(), a).map_err(|e| err("connecting it to its server again", e))?;
        }
        if let Some(how) = shutdown_how(*shutdown) {
            // An unconnected internet socket answers ENOTCONN, but is shut down all the same.
            match crest_ptrace::sys::shutdown(s.as_raw_fd(), how) {
                Err(e) if e.raw_os_error() != Some(libc::ENOTCONN) => return Err(err("shutting it down as it was", e)),
                _ => {}
            }
        }
        if tcp_listener && reuse == Some(0) {
            crest_ptrace::sys::set_sock_opt_int(s.as_raw_fd(), libc::SOL_SOCKET, libc::SO_REUSEADDR, 0).map_err(|e| err("setting SO_REUSEADDR", e))?;
        }
        super::sockopt::finish(s.as_raw_fd(), options, byte_options).map_err(|(step, e)| err(&step, e))?;
        super::set_status_flags(&s, rec.flags)?;
        Ok(super::Opened::Fd(s))
    }
}

/// Whether the socket of record `kind` is bound with `SO_REUSEPORT` set though it was not: a
/// bound internet socket (it may share its port with others that had it).
fn reuseport_for_bind(kind: &FdKind) -> bool {
    let FdKind::Socket { family, addr, options, .. } = kind else { return false };
    matches!(*family, libc::AF_INET | libc::AF_INET6) && !addr.is_empty() && options.iter().any(|o| (o.0, o.1, o.2) == (libc::SOL_SOCKET, libc::SO_REUSEPORT, 0))
}

/// In `cr_restart`, once every process of the image is rebuilt and before any runs: clears
/// `SO_REUSEPORT` on the sockets of process `pid` (restored from `recs`) that were bound with
/// it set only for their bind.
pub fn settle_restored(pid: i32, recs: &[FdRecord]) -> Result<(), String> {
    let socks: Vec<&FdRecord> = recs.iter().filter(|r| reuseport_for_bind(&r.kind)).collect();
    if socks.is_empty() {
        return Ok(());
    }
    let pidfd = crest_ptrace::sys::pidfd_open(pid).map_err(|e| format!("PID {pid}: {e}"))?;
    for r in socks {
        let err = |step: &str, e: std::io::Error| format!("fd {}: {}: {step}: {e}", r.fd, Socket.describe(&r.kind));
        let s = crest_ptrace::sys::pidfd_getfd(pidfd.as_raw_fd(), r.fd).map_err(|e| err("taking a copy of it", e))?;
        crest_ptrace::sys::set_sock_opt_int(s.as_raw_fd(), libc::SOL_SOCKET, libc::SO_REUSEPORT, 0).map_err(|e| err("clearing SO_REUSEPORT again", e))?;
    }
    Ok(())
}

/// Binds unix socket `fd` to `addr`, whose file `path` had been removed (or replaced) when
/// it was saved, and removes the file again, so that the socket has its address and the file
/// system is as it was. What is at `path` now is moved aside for the time of the bind, and
/// directories that no longer exist are made for it and removed. A socket others connect to
/// (`ino` not 0) keeps its file under another name in the same directory until every object
/// of the image is made ([`super::PrepareCx::temporary`]); that name is returned, to connect to.
fn bind_unlinked(fd: i32, addr: &[u8], path: &str, ino: u64, cx: &mut super::PrepareCx) -> Result<Vec<u8>, (String, std::io::Error)> {
    use std::path::{Path, PathBuf};
    let p = Path::new(path);
    let dir = p.parent().unwrap_or(Path::new("/"));
    let mut made: Vec<PathBuf> = Vec::new();
    let mut missing: Vec<&Path> = dir.ancestors().take_while(|d| std::fs::symlink_metadata(d).is_err()).collect();
    missing.reverse();
    for d in missing {
        std::fs::create_dir(d).map_err(|e| (format!("making {} again for the time of its bind", d.display()), e))?;
        made.push(d.to_path_buf());
    }
    let aside = dir.join(format!(".crest-aside-{}-{ino}", std::process::id()));
    let moved = std::fs::symlink_metadata(p).is_ok();
    if moved {
        std::fs::rename(p, &aside).map_err(|e| (format!("moving {path}, which took its name, aside for the time of its bind"), e))?;
    }
    let bound = super::sockopt::bind(fd, addr).map_err(|e| ("binding it again".to_string(), e));
    let mut name = addr.to_vec();
    let kept = if bound.is_ok() && ino != 0 {
        // The clients connect through another name of the file.
        let other = dir.join(format!(".crest-{ino}"));
        let r = std::fs::rename(p, &other).map_err(|e| ("giving its file another name for its clients".to_string(), e));
        name = (libc::AF_UNIX as u16).to_ne_bytes().iter().copied().chain(other.as_os_str().as_encoded_bytes().iter().copied()).chain([0]).collect();
        r.map(|()| Some(other))
    } else {
        let _ = std::fs::remove_file(p);
        Ok(None)
    };
    if moved {
        std::fs::rename(&aside, p).map_err(|e| (format!("moving {path} back (it is at {} now)", aside.display()), e))?;
    }
    bound?;
    let kept = kept?;
    match kept {
        Some(other) => {
            cx.temporary.push(other);
            cx.temporary.extend(made.into_iter().rev());
        }
        None => {
            for d in made.iter().rev() {
                let _ = std::fs::remove_dir(d);
            }
        }
    }
    Ok(name)
}

/// The path of a unix socket address bound in the file system.
fn unix_path(addr: &[u8]) -> Option<String> {
    (i32::from(u16_at(addr, 0)?) == libc::AF_UNIX && addr.get(2).is_some_and(|&c| c != 0)).then(|| addr_words(addr)).flatten()
}

/// `TCP_LISTEN` and `TCP_CLOSE`, as `TCP_INFO` and the diagnostics report states.
const TCP_LISTEN: u8 = 10;
const TCP_CLOSE: u8 = 7;

/// The record of a socket that is not connected and has nothing queued, or `None` for a
/// socket that is connected (or of a kind not saved); `Err(why)` when it cannot be saved.
fn unconnected(cx: &mut DumpCx<'_>, copy: i32, ino: u64, d: &Described) -> Result<Option<FdKind>, String> {
    use crest_ptrace::sys::{sock_addr, sock_opt_bytes, sock_opt_int};
    let opt = |o| sock_opt_int(copy, libc::SOL_SOCKET, o);
    let (Ok(family), Ok(ty), Ok(protocol)) = (opt(libc::SO_DOMAIN), opt(libc::SO_TYPE), opt(libc::SO_PROTOCOL)) else { return Ok(None) };
    // A unix datagram socket may be connected one way, to a socket not connected back.
    if d.connected && (family, ty) != (libc::AF_UNIX, libc::SOCK_DGRAM) {
        return Ok(None);
    }
    let (mut peer, mut unlinked, mut shutdown, mut server) = (0, false, 0, 0);
    let mut addr = sock_addr(copy, false).unwrap_or_default();
    // Not bound: an internet address with port 0, a unix address with no name.
    let inet_port = |a: &[u8]| a.get(2..4).map(|p| u16::from_be_bytes([p[0], p[1]]));
    if addr.len() <= 2 || (matches!(family, libc::AF_INET | libc::AF_INET6) && inet_port(&addr) == Some(0)) {
        addr.clear();
    }
    let listen = match (family, ty) {
        (libc::AF_INET | libc::AF_INET6, libc::SOCK_STREAM) if protocol == libc::IPPROTO_TCP => {
            // struct tcp_info: state at 0; for a listener, unacked (24) is the number of
            // connections waiting to be accepted and sacked (28) the backlog.
            let info = sock_opt_bytes(copy, libc::IPPROTO_TCP, libc::TCP_INFO, 32).map_err(|e| format!("reading its TCP state: {e}"))?;
            let word = |at: usize| u32_at(&info, at).unwrap_or(0);
            match info.first().copied() {
                Some(TCP_LISTEN) if word(24) > 0 => return Err(pending(word(24))),
                Some(TCP_LISTEN) => Some(word(28) as i32),
                Some(TCP_CLOSE) => None,
                _ => return Err("a TCP socket in the middle of connecting or closing is not saved yet".to_string()),
            }
        }
        // UDP, UDP-Lite, and ICMP echo ("ping") sockets, whose port is the echo identifier.
        (libc::AF_INET | libc::AF_INET6, libc::SOCK_DGRAM) if matches!(protocol, libc::IPPROTO_UDP | libc::IPPROTO_UDPLITE | libc::IPPROTO_ICMP | libc::IPPROTO_ICMPV6) => {
            // FIONREAD is UDP's; an ICMP socket is peeked at (which would also take a pending
            // error, which a UDP socket may have and an echo socket does not report).
            let empty = if protocol != libc::IPPROTO_ICMP && protocol != libc::IPPROTO_ICMPV6 {
                crest_ptrace::sys::bytes_readable(copy).is_ok_and(|n| n == 0)
            } else {
                matches!(crest_ptrace::net::peek(copy, &mut [0u8; 1]), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
            };
            if !empty {
                return Err("datagrams are waiting to be read, and queued data is not saved yet".to_string());
            }
            shutdown = inet_shutdown(family, protocol, ino).unwrap_or(0);
            None
        }
        (libc::AF_UNIX, libc::SOCK_STREAM | libc::SOCK_SEQPACKET | libc::SOCK_DGRAM) => {
            let Some(diag) = cx.unix_peers.get(ino) else { return Ok(None) };
            if diag.peer != 0 {
                // Connected: a pair (its peer connected back to it) is saved by pair(), a
                // socket whose peer is outside the image is refused by the caller.
                let back = cx.unix_peers.peer_of(diag.peer);
                let itself = diag.peer == ino;
                if ty != libc::SOCK_DGRAM || (back == Some(ino) && !itself) || !cx.all.iter().any(|o| inode(&o.link) == Some(diag.peer)) {
                    return Ok(None);
                }
                if !itself && back.is_some_and(|b| cx.unix_peers.peer_of(b) == Some(diag.peer)) {
                    return Err("it is connected to a datagram socket that is one end of a connected pair, which is not saved".to_string());
                }
                peer = diag.peer;
            }
            // A server, or a socket connected to itself (its own client).
            if peer == ino || cx.unix_peers.has_clients(ino) {
                server = ino;
            }
            shutdown = diag.shutdown;
            let listening = sock_opt_int(copy, libc::SOL_SOCKET, libc::SO_ACCEPTCONN).unwrap_or(0) == 1;
            if diag.rqueue > 0 {
                return Err(if listening { pending(diag.rqueue) } else { "data is waiting to be read, and queued data is not saved yet".to_string() });
            }
            if let Some(path) = unix_path(&addr).filter(|p| !p.starts_with('/')) {
                // Bound by a relative name: bound again by its full name.
                let cwd = crest_proc::readlink(cx.pid, "cwd").map_err(|e| format!("its address {path} is relative to a directory that cannot be read: {e}"))?;
                let full = format!("{cwd}/{path}");
                addr = (libc::AF_UNIX as u16).to_ne_bytes().iter().copied().chain(full.into_bytes()).chain([0]).collect();
            }
            if let (Some(path), Some(vfs)) = (unix_path(&addr), diag.vfs) {
                unlinked = !names_it(cx.pid, &path, vfs);
            }
            listening.then_some(diag.wqueue as i32)
        }
        _ => return Ok(None),
    };
    let (options, byte_options) = super::sockopt::read(copy, family, ty, protocol)?;
    Ok(Some(FdKind::Socket { family, ty, protocol, addr, listen, options, what: d.what.clone(), byte_options, ino: server, peer, unlinked, shutdown }))
}

/// Whether `path`, seen from the root of process `pid`, is still the file a unix socket was
/// bound to: `vfs` is its inode and device as the socket diagnostics give them (the
/// kernel's device number: major above bit 20).
fn names_it(pid: i32, path: &str, vfs: (u64, u32)) -> bool {
    use std::os::unix::fs::MetadataExt;
    let Ok(m) = std::fs::symlink_metadata(format!("/proc/{pid}/root{path}")) else { return false };
    m.ino() == vfs.0 && libc::major(m.dev()) == vfs.1 >> 20 && libc::minor(m.dev()) == vfs.1 & 0xf_ffff
}

/// Why a listener with `n` connections waiting to be accepted is refused.
fn pending(n: u32) -> String {
    format!(
        "{n} connection{} waiting to be accepted, and the kernel cannot put a connection back in a listener's queue (checkpoint again once the program has accepted {})",
        if n == 1 { " is" } else { "s are" },
        if n == 1 { "it" } else { "them" }
    )
}

/// Whether an internet socket's peer is another socket of the image (a connection over
/// loopback between two checkpointed processes).
fn inet_peer_inside(cx: &DumpCx<'_>, copy: Option<i32>) -> bool {
    use crest_ptrace::sys::sock_addr;
    let Some(copy) = copy else { return false };
    let (Ok(me), Ok(peer)) = (sock_addr(copy, false), sock_addr(copy, true)) else { return false };
    if !matches!(i32::from(u16_at(&me, 0).unwrap_or(0)), libc::AF_INET | libc::AF_INET6) {
        return false;
    }
    cx.all.iter().filter(|o| inode(&o.link).is_some()).any(|o| {
        let Ok(pidfd) = crest_ptrace::sys::pidfd_open(o.pid) else { return false };
        let Ok(c) = crest_ptrace::sys::pidfd_getfd(pidfd.as_raw_fd(), o.fd) else { return false };
        sock_addr(c.as_raw_fd(), false).is_ok_and(|a| a == peer) && sock_addr(c.as_raw_fd(), true).is_ok_and(|a| a == me)
    })
}

/// `RCV_SHUTDOWN` and `SEND_SHUTDOWN`, as the diagnostics report them.
const RCV_SHUTDOWN: u8 = 1;
const SEND_SHUTDOWN: u8 = 2;

/// The `shutdown` call that leaves a socket shut down as `sd` (diagnostics bits) says.
pub(super) fn shutdown_how(sd: u8) -> Option<i32> {
    match (sd & RCV_SHUTDOWN != 0, sd & SEND_SHUTDOWN != 0) {
        (true, true) => Some(libc::SHUT_RDWR),
        (true, false) => Some(libc::SHUT_RD),
        (false, true) => Some(libc::SHUT_WR),
        (false, false) => None,
    }
}

/// The most queued data saved for one socket.
const MAX_QUEUED: usize = 64 << 20;

/// The messages (datagrams) or bytes queued for socket `fd` to read, taken without consuming
/// them: with the peek offset (`SO_PEEK_OFF`) from 0, each peek returns what follows the last;
/// the offset is put back as it was. Refused when descriptors are in flight.
fn peek_queue(fd: i32) -> Result<Vec<Vec<u8>>, String> {
    use crest_ptrace::sys::{peek_message, set_sock_opt_int, sock_opt_int};
    let was = sock_opt_int(fd, libc::SOL_SOCKET, libc::SO_PEEK_OFF).unwrap_or(-1);
    set_sock_opt_int(fd, libc::SOL_SOCKET, libc::SO_PEEK_OFF, 0).map_err(|e| format!("its queue cannot be read (SO_PEEK_OFF: {e})"))?;
    let mut out = Vec::new();
    let mut total = 0;
    let mut buf = vec![0u8; 256 << 10];
    let result = loop {
        match peek_message(fd, &mut buf) {
            Ok((_, true)) => break Err("descriptors in flight (SCM_RIGHTS) are queued on it, and those are not saved yet".to_string()),
            Ok((0, _)) => break Ok(()),
            Ok((n, _)) if n > buf.len() => break Err(format!("a datagram of {n} bytes is queued on it, larger than crest saves")),
            Ok((n, _)) => {
                total += n;
                if total > MAX_QUEUED {
                    break Err(format!("more than {} MiB are queued on it", MAX_QUEUED >> 20));
                }
                out.push(buf[..n].to_vec());
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break Ok(()),
            Err(e) => break Err(format!("reading its queue: {e}")),
        }
    };
    let _ = set_sock_opt_int(fd, libc::SOL_SOCKET, libc::SO_PEEK_OFF, was);
    result.map(|()| out)
}

/// The record of one end of a connected pair of unix sockets whose other end, `peer_fd` of
/// process `peer.pid`, is in the image too. The first end dumped carries the pair's state: the
/// data queued for each end and how each was shut down.
fn pair(cx: &mut DumpCx<'_>, copy: i32, ino: u64, peer: u64, o: &super::OpenFd, d: &Described) -> Result<FdKind, String> {
    use crest_ptrace::sys::sock_opt_int;
    let ty = sock_opt_int(copy, libc::SOL_SOCKET, libc::SO_TYPE).map_err(|e| format!("reading its type: {e}"))?;
    if cx.unix_peers.peer_of(peer) != Some(ino) || peer == ino {
        return Err("it is connected to a socket that is connected elsewhere, which is not saved".to_string());
    }
    let (id, end) = (ino.min(peer), ino > peer);
    let (options, byte_options) = super::sockopt::read(copy, libc::AF_UNIX, ty, 0)?;
    let state = if cx.seen.insert(crate::ObjId::unix_pair(id)) {
        let pidfd = crest_ptrace::sys::pidfd_open(o.pid).map_err(|e| format!("opening PID {}: {e}", o.pid))?;
        let other = crest_ptrace::sys::pidfd_getfd(pidfd.as_raw_fd(), o.fd).map_err(|e| format!("taking a copy of its other end: {e}"))?;
        let mine = peek_queue(copy)?;
        let theirs = peek_queue(other.as_raw_fd()).map_err(|e| format!("its other end (fd {} of PID {}): {e}", o.fd, o.pid))?;
        let mut sd = |i: u64| cx.unix_peers.get(i).map_or(0, |d| d.shutdown);
        let (sd_mine, sd_theirs) = (sd(ino), sd(peer));
        Some(if end {
            crest_image::UnixPairState { queues: [theirs, mine], shutdown: [sd_theirs, sd_mine] }
        } else {
            crest_image::UnixPairState { queues: [mine, theirs], shutdown: [sd_mine, sd_theirs] }
        })
    } else {
        None
    };
    Ok(FdKind::UnixPair { id, end, ty, options, state, what: d.what.clone(), byte_options, alone: false })
}

/// The record of a unix stream or seqpacket socket whose other end was closed (it still
/// reads what that end had sent, then end of file), or `None` for another socket.
fn alone(cx: &mut DumpCx<'_>, copy: i32, ino: u64, d: &Described) -> Result<Option<FdKind>, String> {
    use crest_ptrace::sys::sock_opt_int;
    let opt = |o| sock_opt_int(copy, libc::SOL_SOCKET, o).unwrap_or(-1);
    let (family, ty) = (opt(libc::SO_DOMAIN), opt(libc::SO_TYPE));
    let Some(diag) = cx.unix_peers.get(ino) else { return Ok(None) };
    // Its peer's close shut it down both ways.
    if family != libc::AF_UNIX || !matches!(ty, libc::SOCK_STREAM | libc::SOCK_SEQPACKET) || diag.peer != 0 || diag.shutdown != RCV_SHUTDOWN | SEND_SHUTDOWN {
        return Ok(None);
    }
    let (options, byte_options) = super::sockopt::read(copy, family, ty, 0)?;
    let mine = peek_queue(copy)?;
    let state = Some(crest_image::UnixPairState { queues: [mine, Vec::new()], shutdown: [0, 0] });
    Ok(Some(FdKind::UnixPair { id: ino, end: false, ty, options, state, what: format!("{} (its other end closed)", d.what), byte_options, alone: true }))
}

/// Restore of one end of a pair: the pair is made when its first end is opened, its queues
/// refilled (what each end had to read is sent through the other) and its ends shut down as
/// they were; both ends are parked for the descriptors that follow.
fn open_pair(rec: &FdRecord, cx: &mut super::PrepareCx) -> Result<std::os::fd::OwnedFd, String> {
    use crest_ptrace::sys::{send_nonblocking, set_sock_opt_int, shutdown};
    let FdKind::UnixPair { id, end, ty, options, state, what, byte_options, alone } = &rec.kind else { return Err(format!("fd {}: not a socket pair", rec.fd)) };
    let err = |step: &str, e: std::io::Error| format!("fd {}: {what}: {step}: {e}", rec.fd);
    let id = crate::ObjId::unix_pair(*id);
    if cx.take((id, false)).is_none() {
        let (a, b) = crest_ptrace::sys::socketpair(libc::AF_UNIX, *ty).map_err(|e| err("making the pair again", e))?;
        cx.park((id, false), a)?;
        cx.park((id, true), b)?;
    }
    let end_fd = |e: bool| cx.take((id, e)).expect("parked above");
    if let Some(st) = state {
        for (i, queue) in st.queues.iter().enumerate() {
            if queue.is_empty() {
                continue;
            }
            // What end i had to read is sent by the other end.
            let via = end_fd(i == 0)?;
            let total: usize = queue.iter().map(Vec::len).sum();
            let room = i32::try_from(total * 2 + (256 << 10)).unwrap_or(i32::MAX);
            if set_sock_opt_int(via.as_raw_fd(), libc::SOL_SOCKET, libc::SO_SNDBUFFORCE, room).is_err() {
                let _ = set_sock_opt_int(via.as_raw_fd(), libc::SOL_SOCKET, libc::SO_SNDBUF, room);
            }
            for m in queue {
                let mut at = 0;
                while at < m.len() || (m.is_empty() && at == 0) {
                    let n = send_nonblocking(via.as_raw_fd(), &m[at..]).map_err(|e| err("putting its queued data back", e))?;
                    at += n.max(usize::from(m.is_empty()));
                }
            }
        }
        // Each end as it was: a stream end shut down carries the mirror of it to the other
        // end, which was saved too; a datagram end's is its own.
        for (i, &sd) in st.shutdown.iter().enumerate() {
            if let Some(how) = shutdown_how(sd) {
                shutdown(end_fd(i == 1)?.as_raw_fd(), how).map_err(|e| err("shutting it down as it was", e))?;
            }
        }
    }
    let mine = end_fd(*end)?;
    if *alone {
        // Its other end had been closed: closing it now ends the stream after the data.
        cx.parked.remove(&(id, !*end));
    }
    super::sockopt::apply(mine.as_raw_fd(), options, byte_options).map_err(|(step, e)| err(&step, e))?;
    super::sockopt::finish(mine.as_raw_fd(), options, byte_options).map_err(|(step, e)| err(&step, e))?;
    super::set_status_flags(&mine, rec.flags)?;
    Ok(mine)
}

/// The process that holds the socket of inode `ino` (the other end of a connection), and its
/// name, for messages: the first found in `/proc`.
fn holder_of(ino: u64) -> Option<(i32, String)> {
    let want = format!("socket:[{ino}]");
    for pid in crest_proc::all_pids().ok()? {
        let Ok(fds) = crest_proc::fds(pid) else { continue };
        if fds.into_iter().any(|fd| crest_proc::readlink(pid, &format!("fd/{fd}")).is_ok_and(|l| l == want)) {
            let comm = crest_proc::read(pid, "comm").map(|c| c.trim().to_string()).unwrap_or_default();
            return Some((pid, comm));
        }
    }
    None
}
