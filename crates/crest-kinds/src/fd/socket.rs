//! Sockets. Saved and restored: sockets that are not connected: listening TCP sockets (the
//! connections waiting to be accepted from clients of the image: [`super::accept`]), unix (stream, seqpacket) listeners, bound UDP and ICMP
//! echo sockets with nothing waiting to be read, unix datagram sockets, and sockets not bound
//! yet; each comes back
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
//! process holding it), TCP connections waiting to be accepted from clients outside the image and UDP datagrams queued are
//! refused at checkpoint time with a description ("unix stream socket connected to
//! /run/x.sock"), or left out on request ([`super::unsupported`]). The one exception, as in
//! BLCR: standard input, output or error connected to a process that is not checkpointed (a
//! service whose output goes to a log collector) follows `cr_restart`'s own
//! ([`super::inherited`]).
//!
//! The datagrams queued on a unix datagram socket are saved with their senders' addresses and
//! sent to it again at restart ([`refill_datagrams`]; those from an abstract address a socket
//! of the image holds, by that socket once every process is restored: [`refill_deferred`]); descriptors in flight in unix socket
//! queues are read while the processes are frozen ([`collect_in_flight`]), saved as records of
//! their own inside the messages that carry them and sent again with them. A unix client whose
//! connection waits to be accepted by a listener of the image connects to it again
//! ([`pending_client`]).
//!
//! What a socket is comes from a copy of it (`pidfd_getfd`: domain, type, protocol, listening,
//! own and peer address, `TCP_INFO`); raw IP, packet and netlink sockets are saved by their
//! own modules ([`super::raw`], [`super::packet`], [`super::netlink`]); the other end and the queues of a unix socket, from the
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
    /// `SOCK_STREAM`, `SOCK_DGRAM` or `SOCK_SEQPACKET`.
    ty: u8,
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

/// What the kernel's socket diagnostics tell of every unix socket.
#[derive(Default)]
struct Diags {
    /// Socket inode -> what they tell of it.
    socks: HashMap<u64, UnixDiag>,
    /// Listener inode -> the inodes of the clients whose connections wait to be accepted on
    /// it, oldest first (0: a client that was closed).
    icons: HashMap<u64, Vec<u64>>,
    /// Abstract address (the bytes after `sun_family`) -> the inode of the socket bound to it.
    abstract_names: HashMap<Vec<u8>, u64>,
}

/// One message queued on a unix socket, read without taking it.
struct Peeked {
    data: Vec<u8>,
    sender: Vec<u8>,
    /// Copies of the descriptors in flight it carries, open in this process.
    fds: Vec<std::os::fd::OwnedFd>,
}

/// Unix socket inode -> what the kernel's socket diagnostics tell of it, and the queues of the
/// unix sockets that hold messages, read once while the processes are frozen.
#[derive(Default)]
pub struct UnixPeers {
    diags: Option<Diags>,
    /// Socket inode -> its queue, read once per checkpoint ([`collect_in_flight`]), or why it
    /// cannot be read.
    queues: HashMap<u64, Result<Vec<Peeked>, String>>,
    /// The inodes of the unix sockets the processes of the checkpoint hold.
    scope: std::collections::HashSet<u64>,
    /// Every TCP socket, as the diagnostics listed them when first asked in this checkpoint
    /// (the processes are frozen: the listeners' queues hold still).
    tcp: Option<Vec<super::accept::TcpDiag>>,
}

impl UnixPeers {
    /// Whether the abstract address `addr` (a whole `sockaddr_un`) is bound by a socket the
    /// processes of the checkpoint hold: at restart it is that socket's again.
    fn held_in_scope(&mut self, addr: &[u8]) -> bool {
        let ino = addr.get(2..).and_then(|name| self.diags().abstract_names.get(name).copied());
        ino.is_some_and(|i| self.scope.contains(&i))
    }

    /// Every TCP socket ([`super::accept`]), asked once per checkpoint.
    pub(super) fn tcp_sockets(&mut self) -> std::io::Result<&[super::accept::TcpDiag]> {
        if self.tcp.is_none() {
            self.tcp = Some(super::accept::tcp_sockets()?);
        }
        Ok(self.tcp.as_deref().unwrap_or_default())
    }

    fn diags(&mut self) -> &Diags {
        self.diags.get_or_insert_with(|| unix_peers().unwrap_or_default())
    }

    fn get(&mut self, ino: u64) -> Option<UnixDiag> {
        self.diags().socks.get(&ino).copied()
    }

    fn peer_of(&mut self, ino: u64) -> Option<u64> {
        self.get(ino).map(|d| d.peer).filter(|&p| p != 0)
    }

    /// Whether a socket other than its own peer is connected to unix socket `ino` (it is a
    /// datagram server, and that socket one of its clients).
    fn has_clients(&mut self, ino: u64) -> bool {
        let own = self.peer_of(ino).unwrap_or(0);
        self.diags().socks.iter().any(|(&k, d)| d.peer == ino && k != own)
    }

    /// The listener on which the connection of client `ino` waits to be accepted.
    fn listener_of(&mut self, ino: u64) -> Option<u64> {
        self.diags().icons.iter().find(|(_, c)| c.contains(&ino)).map(|(&l, _)| l)
    }
}

/// Whether the socket of `/proc` link `link` or its peer holds messages (a socket in flight
/// that does cannot be saved in flight: its messages may carry sockets in turn).
pub(super) fn holds_messages(peers: &mut UnixPeers, link: &str) -> bool {
    let Some(ino) = inode(link) else { return false };
    let Some(d) = peers.get(ino) else { return false };
    d.rqueue > 0 || (d.peer != 0 && peers.get(d.peer).is_some_and(|p| p.rqueue > 0))
}

/// Reads, while the processes are frozen, the queue of every unix socket of `all` that holds
/// messages, keeping copies of the descriptors in flight they carry; returns those copies as
/// descriptors of this process, so that they are known like the processes' own (a pipe whose
/// read end is in flight has both its ends in the image).
pub fn collect_in_flight(all: &[super::OpenFd], peers: &mut UnixPeers) -> Vec<super::OpenFd> {
    let me = std::process::id() as i32;
    let mut out = Vec::new();
    peers.scope.extend(all.iter().filter_map(|o| inode(&o.link)));
    for o in all {
        let Some(ino) = inode(&o.link) else { continue };
        // The diagnostics give a datagram socket's first message's length only, which is 0
        // for an empty one: those are always looked at.
        let Some(d) = peers.get(ino) else { continue };
        if peers.queues.contains_key(&ino) || (d.rqueue == 0 && i32::from(d.ty) == libc::SOCK_STREAM) {
            continue;
        }
        let Ok(pidfd) = crest_ptrace::sys::pidfd_open(o.pid) else { continue };
        let Ok(copy) = crest_ptrace::sys::pidfd_getfd(pidfd.as_raw_fd(), o.fd) else { continue };
        if crest_ptrace::sys::sock_opt_int(copy.as_raw_fd(), libc::SOL_SOCKET, libc::SO_DOMAIN).ok() != Some(libc::AF_UNIX)
            || crest_ptrace::sys::sock_opt_int(copy.as_raw_fd(), libc::SOL_SOCKET, libc::SO_ACCEPTCONN).ok() == Some(1)
        {
            continue;
        }
        let q = peek_all(copy.as_raw_fd(), i32::from(d.ty) != libc::SOCK_STREAM && d.shutdown & RCV_SHUTDOWN == 0);
        if let Ok(msgs) = &q {
            for f in msgs.iter().flat_map(|m| m.fds.iter()) {
                let fd = f.as_raw_fd();
                let (Ok(link), Ok(info)) = (crest_proc::readlink(me, &format!("fd/{fd}")), crest_proc::read(me, &format!("fdinfo/{fd}"))) else { continue };
                let Ok(info) = crest_proc::parse_fdinfo(&info) else { continue };
                out.push(super::OpenFd { pid: me, fd, link, info });
            }
        }
        peers.queues.insert(ino, q);
    }
    out
}

/// Every message queued on socket `fd`, read without taking it (with the peek offset `SO_PEEK_OFF` from 0, each peek returns what
/// follows the last; the offset is put back as it was), with the
/// descriptors in flight they carry. With `empty_messages` (a datagram or seqpacket socket not
/// shut down for reading), a message of no bytes is one; otherwise it is the end.
fn peek_all(fd: i32, empty_messages: bool) -> Result<Vec<Peeked>, String> {
    use crest_ptrace::sys::{peek_message_full, set_sock_opt_int, sock_opt_int};
    let was = sock_opt_int(fd, libc::SOL_SOCKET, libc::SO_PEEK_OFF).unwrap_or(-1);
    set_sock_opt_int(fd, libc::SOL_SOCKET, libc::SO_PEEK_OFF, 0).map_err(|e| format!("its queue cannot be read (SO_PEEK_OFF: {e})"))?;
    let mut out = Vec::new();
    let mut total = 0;
    let mut buf = vec![0u8; 256 << 10];
    let result = loop {
        match peek_message_full(fd, &mut buf) {
            Ok(m) if m.other_control => break Err("messages with credentials (SCM_CREDENTIALS) or other ancillary data are queued on it, and those are not saved yet".to_string()),
            Ok(m) if m.len == 0 && m.fds.is_empty() && !empty_messages => break Ok(()),
            Ok(_) if out.len() >= MAX_MESSAGES => break Err(format!("more than {MAX_MESSAGES} messages are queued on it")),
            Ok(m) if m.len > buf.len() => break Err(format!("a message of {} bytes is queued on it, larger than crest saves", m.len)),
            Ok(m) => {
                total += m.len;
                if total > MAX_QUEUED {
                    break Err(format!("more than {} MiB are queued on it", MAX_QUEUED >> 20));
                }
                out.push(Peeked { data: buf[..m.len].to_vec(), sender: m.sender, fds: m.fds });
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break Ok(()),
            Err(e) => break Err(format!("reading its queue: {e}")),
        }
    };
    let _ = set_sock_opt_int(fd, libc::SOL_SOCKET, libc::SO_PEEK_OFF, was);
    result.map(|()| out)
}

/// A unix socket's queue, as saved: each message with its sender and the records of the
/// descriptors in flight it carries. Read once per checkpoint ([`collect_in_flight`]) when
/// the socket held messages then; otherwise read now, and refused if it carries descriptors.
fn queue_of(cx: &mut DumpCx<'_>, ino: u64, copy: i32, pair_ends: Option<[(i32, bool); 2]>) -> Result<Vec<crest_image::QueuedMessage>, String> {
    let msgs: Vec<(Vec<u8>, Vec<u8>, Vec<i32>)> = match cx.unix_peers.queues.get(&ino) {
        Some(Ok(q)) => q.iter().map(|m| (m.data.clone(), m.sender.clone(), m.fds.iter().map(AsRawFd::as_raw_fd).collect())).collect(),
        Some(Err(e)) => return Err(e.clone()),
        None => {
            let empty_messages = cx.unix_peers.get(ino).is_some_and(|d| i32::from(d.ty) != libc::SOCK_STREAM && d.shutdown & RCV_SHUTDOWN == 0);
            let q = peek_all(copy, empty_messages)?;
            if q.iter().any(|m| !m.fds.is_empty()) {
                return Err("descriptors in flight (SCM_RIGHTS) were queued on it while it was being saved".to_string());
            }
            q.into_iter().map(|m| (m.data, m.sender, Vec::new())).collect()
        }
    };
    let own = crest_ptrace::sys::sock_addr(copy, false).unwrap_or_default();
    let mut out = Vec::with_capacity(msgs.len());
    for (data, sender, fds) in msgs {
        // A datagram is put back by a socket bound to its sender's address: that cannot be
        // done while a socket outside the image holds an abstract address. One the image
        // holds sends it again itself, once every process is restored, to a receiver that has
        // an address ([`refill_deferred`]). (A path's file is taken over at restart when the
        // sender's own socket is not bound yet.)
        let abstract_sender = sender.len() > 2 && sender[2] == 0 && sender != own;
        let deferrable = own.len() > 2 && fds.is_empty() && cx.unix_peers.held_in_scope(&sender);
        if abstract_sender && !deferrable && address_held(&sender) {
            return Err(format!(
                "a datagram from {} is queued on it, and a socket outside the checkpoint (or one not bound to it for good) holds that address, so it could not be sent again from that address at restart",
                addr_words(&sender).unwrap_or_else(|| "a named socket".into())
            ));
        }
        let mut recs = Vec::with_capacity(fds.len());
        for fd in fds {
            recs.push(super::dump_in_flight(cx, fd, pair_ends).map_err(|e| format!("descriptors in flight (SCM_RIGHTS) are queued on it: {e}"))?);
        }
        out.push(crest_image::QueuedMessage { data, sender, fds: recs });
    }
    Ok(out)
}

/// The type of socket `copy` (`SO_TYPE`), when there is a copy to ask.
fn ty_of(copy: Option<&std::os::fd::OwnedFd>) -> Option<i32> {
    crest_ptrace::sys::sock_opt_int(copy?.as_raw_fd(), libc::SOL_SOCKET, libc::SO_TYPE).ok()
}

/// With `--ext-unix-sk`: the record of a unix datagram socket of process `pid` (`copy`)
/// connected to a socket outside the image, made again at restore and connected to that
/// socket's address (`dest`), whatever holds it then. Refused, saying why, for another kind
/// of socket (a stream connection cannot be made again without its peer), a peer with no
/// address or whose file is gone, and datagrams waiting to be read (they are not saved).
fn external(pid: i32, copy: i32, d: &Described) -> Result<FdKind, String> {
    use crest_ptrace::sys::{sock_addr, sock_opt_int};
    let opt = |o| sock_opt_int(copy, libc::SOL_SOCKET, o).unwrap_or(-1);
    if opt(libc::SO_DOMAIN) != libc::AF_UNIX || opt(libc::SO_TYPE) != libc::SOCK_DGRAM {
        return Err("its other end is a socket outside the checkpoint, and only a datagram socket is connected again by address (--ext-unix-sk); a stream connection cannot be made again".to_string());
    }
    let dest = sock_addr(copy, true).map_err(|e| format!("reading its peer's address: {e}"))?;
    if dest.len() <= 2 {
        return Err("its other end, outside the checkpoint, has no address to connect to again".to_string());
    }
    if let Some(path) = unix_path(&dest) {
        use std::os::unix::fs::FileTypeExt;
        if !std::fs::symlink_metadata(format!("/proc/{pid}/root{path}")).is_ok_and(|m| m.file_type().is_socket()) {
            return Err(format!("its other end, outside the checkpoint, was bound to {path}, which is no longer its socket file, so it could not be connected again"));
        }
    }
    if crest_ptrace::sys::bytes_readable(copy).unwrap_or(1) != 0 {
        return Err("datagrams from its other end, outside the checkpoint, wait to be read on it, and those are not saved".to_string());
    }
    let mut addr = sock_addr(copy, false).unwrap_or_default();
    if addr.len() <= 2 {
        addr.clear();
    }
    let saved = super::sockopt::read(copy, libc::AF_UNIX, libc::SOCK_DGRAM, 0)?;
    Ok(bare(libc::AF_UNIX, libc::SOCK_DGRAM, 0, addr, saved, format!("{} (outside the checkpoint: connected again by its address)", d.what), dest))
}

/// The record of a socket with no peer, queue or file of its own to restore (a raw, packet or
/// netlink socket): its family, type, protocol, bound address, options as
/// [`super::sockopt::read`] gives them, description, and the address it is connected to
/// (`dest`, empty: none).
pub(super) fn bare(family: i32, ty: i32, protocol: i32, addr: Vec<u8>, (options, byte_options): super::sockopt::Saved, what: String, dest: Vec<u8>) -> FdKind {
    FdKind::Socket { family, ty, protocol, addr, listen: None, options, what, byte_options, ino: 0, peer: 0, unlinked: false, shutdown: 0, queue: Vec::new(), pending: false, file_attrs: None, dest }
}

/// Whether a unix datagram socket is bound to `addr` now (a datagram socket connecting to it
/// is not refused as having no one there).
fn address_held(addr: &[u8]) -> bool {
    let Ok(probe) = crest_ptrace::sys::socket(libc::AF_UNIX, libc::SOCK_DGRAM, 0) else { return true };
    !matches!(crest_ptrace::net::connect_raw(probe.as_raw_fd(), addr), Err(e) if matches!(e.raw_os_error(), Some(libc::ECONNREFUSED | libc::ENOENT)))
}

/// The messages of `queue` as a pair end saves them: their bytes, and the descriptors carried
/// by message `index`, of end `end`.
fn split_queue(queue: Vec<crest_image::QueuedMessage>, end: u8, passed: &mut Vec<(u8, u32, Vec<FdRecord>)>) -> Vec<Vec<u8>> {
    queue
        .into_iter()
        .enumerate()
        .map(|(i, m)| {
            if !m.fds.is_empty() {
                passed.push((end, i as u32, m.fds));
            }
            m.data
        })
        .collect()
}

const SOCK_DIAG_BY_FAMILY: u16 = 20;
const NLM_F_REQUEST: u16 = 1;
const NLM_F_DUMP: u16 = 0x300;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const UDIAG_SHOW_NAME: u32 = 1;
const UNIX_DIAG_NAME: u16 = 0;
const UDIAG_SHOW_PEER: u32 = 4;
const UDIAG_SHOW_RQLEN: u32 = 16;
const UNIX_DIAG_PEER: u16 = 2;
const UDIAG_SHOW_ICONS: u32 = 8;
const UNIX_DIAG_ICONS: u16 = 3;
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
pub(super) fn diag_dump(req: &[u8], mut each: impl FnMut(&[u8])) -> std::io::Result<()> {
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

/// Every unix socket of this network namespace with its peer and queues, and the connections
/// waiting on each listener.
fn unix_peers() -> std::io::Result<Diags> {
    let mut req = Vec::with_capacity(24);
    req.extend_from_slice(&[libc::AF_UNIX as u8, 0, 0, 0]); // family, protocol, padding
    req.extend_from_slice(&u32::MAX.to_ne_bytes()); // every state
    req.extend_from_slice(&0u32.to_ne_bytes()); // inode: all
    req.extend_from_slice(&(UDIAG_SHOW_NAME | UDIAG_SHOW_PEER | UDIAG_SHOW_RQLEN | UDIAG_SHOW_VFS | UDIAG_SHOW_ICONS).to_ne_bytes());
    req.extend_from_slice(&[0xff; 8]); // no cookie
    let mut out = Diags::default();
    diag_dump(&req, |msg| {
        // struct unix_diag_msg: family, type, state, pad, inode, cookie[2]; then attributes.
        let Some(ino) = u32_at(msg, 4) else { return };
        let mut d = UnixDiag { ty: msg.get(1).copied().unwrap_or(0), ..Default::default() };
        let mut icons = Vec::new();
        let mut name = None;
        for (ty, v) in diag_attrs(msg, 16) {
            match ty {
                UNIX_DIAG_PEER => d.peer = u64::from(u32_at(v, 0).unwrap_or(0)),
                UNIX_DIAG_RQLEN => {
                    d.rqueue = u32_at(v, 0).unwrap_or(0);
                    d.wqueue = u32_at(v, 4).unwrap_or(0);
                }
                UNIX_DIAG_SHUTDOWN => d.shutdown = v.first().copied().unwrap_or(0),
                UNIX_DIAG_VFS => d.vfs = Some((u64::from(u32_at(v, 0).unwrap_or(0)), u32_at(v, 4).unwrap_or(0))),
                UNIX_DIAG_ICONS => icons = v.chunks_exact(4).filter_map(|c| u32_at(c, 0)).map(u64::from).collect(),
                UNIX_DIAG_NAME if v.first() == Some(&0) => name = Some(v.to_vec()),
                _ => {}
            }
        }
        if ino == 0 {
            return;
        }
        if !icons.is_empty() {
            out.icons.insert(u64::from(ino), icons);
        }
        if let Some(n) = name {
            out.abstract_names.insert(n, u64::from(ino));
        }
        out.socks.insert(u64::from(ino), d);
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
        libc::AF_PACKET => {
            let ifindex = i32::from_ne_bytes(b.get(4..8)?.try_into().ok()?);
            (ifindex != 0).then(|| format!("on interface {ifindex}"))
        }
        libc::AF_NETLINK => {
            let port = u32::from_ne_bytes(b.get(4..8)?.try_into().ok()?);
            let groups = u32::from_ne_bytes(b.get(8..12)?.try_into().ok()?);
            (port != 0 || groups != 0).then(|| format!("port {port}{}", if groups != 0 { format!(" groups {groups:#x}") } else { String::new() }))
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
    // A netlink socket always has a peer address: the kernel's (0), when not connected.
    let peer_addr = sock_addr(copy, true).ok().filter(|a| family != libc::AF_NETLINK || a.get(4..12).is_some_and(|b| b.iter().any(|&x| x != 0)));
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
            let opt = |o| crest_ptrace::sys::sock_opt_int(c.as_raw_fd(), libc::SOL_SOCKET, o).unwrap_or(-1);
            let (family, ty, protocol) = (opt(libc::SO_DOMAIN), opt(libc::SO_TYPE), opt(libc::SO_PROTOCOL));
            let other = match family {
                libc::AF_PACKET => Some(super::packet::dump(c.as_raw_fd(), ino, &d)),
                libc::AF_NETLINK => Some(super::netlink::dump(c.as_raw_fd(), ino, &d)),
                libc::AF_INET | libc::AF_INET6 if ty == libc::SOCK_RAW => Some(super::raw::dump(cx.pid, c.as_raw_fd(), ino, family, protocol, &d)),
                _ => None,
            };
            match other {
                Some(Ok(kind)) => return Ok(kind),
                Some(Err(e)) => return super::unsupported::refuse(cx, fd, d.what, &e),
                None => {}
            }
            match unconnected(cx, c.as_raw_fd(), ino, &d) {
                Ok(Some(kind)) => return Ok(kind),
                Ok(None) => {}
                Err(e) => why = e,
            }
            let opt = |o| crest_ptrace::sys::sock_opt_int(c.as_raw_fd(), libc::SOL_SOCKET, o).unwrap_or(-1);
            let (family, ty, protocol) = (opt(libc::SO_DOMAIN), opt(libc::SO_TYPE), opt(libc::SO_PROTOCOL));
            let inet = matches!(family, libc::AF_INET | libc::AF_INET6);
            if inet && d.connected && (ty, protocol) == (libc::SOCK_STREAM, libc::IPPROTO_TCP) {
                match super::accept::pending_client(cx, c.as_raw_fd(), &d) {
                    Ok(Some(kind)) => return Ok(kind),
                    Ok(None) => {}
                    Err(e) => return super::unsupported::refuse(cx, fd, d.what, &e),
                }
            }
            if inet && d.connected && matches!((ty, protocol), (libc::SOCK_STREAM, libc::IPPROTO_TCP) | (libc::SOCK_DGRAM, libc::IPPROTO_UDP | libc::IPPROTO_UDPLITE)) {
                match super::tcp::dump(cx.pid, c, ino, family, ty, protocol, &d) {
                    Ok(kind) => return Ok(kind),
                    Err(e) => why = e,
                }
            }
        }
        if let Some(c) = &copy {
            match pending_client(cx, c.as_raw_fd(), ino, &d) {
                Ok(Some(kind)) => return Ok(kind),
                Ok(None) => {}
                Err(e) => why = e,
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
        let mut external_why = None;
        if let (None, Some(_), Some(c), true) = (&inside, peer, &copy, cx.external_unix) {
            match external(cx.pid, c.as_raw_fd(), &d) {
                Ok(kind) => return Ok(kind),
                Err(e) => external_why = Some(e),
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
                _ if external_why.is_some() => external_why.unwrap_or_default(),
                Some((pid, comm)) if ty_of(copy.as_ref()) == Some(libc::SOCK_DGRAM) => {
                    format!("its other end belongs to PID {pid} ({comm}), which is not in the checkpoint; give --ext-unix-sk to save it and connect it again to that socket's address at restart")
                }
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
        // So is a socket with descriptors in flight, which may be open files of the image's
        // objects (a pipe).
        if matches!(kind, FdKind::UnixPair { .. }) || matches!(kind, FdKind::Socket { ino, peer, queue, .. } if *ino != 0 || *peer != 0 || queue.iter().any(|m| !m.fds.is_empty())) {
            super::Sharing::Image
        } else {
            super::Sharing::File
        }
    }
    fn describe(&self, kind: &FdKind) -> String {
        match kind {
            FdKind::UnixPair { what, state: Some(s), .. } => {
                let fds: usize = s.passed.iter().map(|p| p.2.len()).sum();
                format!("{what}, {} and {} messages queued{}", s.queues[0].len(), s.queues[1].len(), if fds > 0 { format!(", {fds} descriptors in flight") } else { String::new() })
            }
            FdKind::Socket { what, queue, .. } if !queue.is_empty() => {
                let fds: usize = queue.iter().map(|m| m.fds.len()).sum();
                format!("{what}, {} datagrams queued{}", queue.len(), if fds > 0 { format!(", {fds} descriptors in flight") } else { String::new() })
            }
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
        let FdKind::Socket { family, ty, protocol, addr, listen, options, what, byte_options, ino, peer, unlinked, shutdown, queue, file_attrs, dest, .. } = &rec.kind else {
            return Err(super::wrong_kind(self, rec));
        };
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
        // An unnamed socket with datagrams to read is made as one end of a pair, whose other
        // end sends them and is closed (as their sender was).
        let (s, via) = if !queue.is_empty() && addr.is_empty() {
            let (a, b) = crest_ptrace::sys::socketpair(*family, *ty).map_err(|e| err("creating it", e))?;
            (a, Some(b))
        } else {
            let made = crest_ptrace::sys::socket(*family, *ty, *protocol).map_err(|e| {
                if e.raw_os_error() == Some(libc::EPERM) && (*ty == libc::SOCK_RAW || *family == libc::AF_PACKET) {
                    err("creating it (raw and packet sockets need CAP_NET_RAW)", e)
                } else {
                    err("creating it", e)
                }
            })?;
            (made, None)
        };
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
            if let (Some(path), Some((mode, uid, gid))) = (unix_path(addr), file_attrs) {
                // Its file as it was, not as cr_restart's umask and user make it.
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(*mode)).map_err(|e| err("giving its file its mode again", e))?;
                std::os::unix::fs::lchown(&path, Some(*uid), Some(*gid)).map_err(|e| err("giving its file its owner again", e))?;
            }
        }
        if let Some(backlog) = listen {
            crest_ptrace::sys::listen(s.as_raw_fd(), *backlog).map_err(|e| err("listening again", e))?;
        }
        if !dest.is_empty() {
            // A netlink or raw IP socket connected to a port and group, or a host.
            crest_ptrace::net::connect_raw(s.as_raw_fd(), dest).map_err(|e| err("connecting it again", e))?;
        }
        if !queue.is_empty() && !refilled_last(addr, *peer, queue) {
            refill_datagrams(s.as_raw_fd(), via.as_ref().map(AsRawFd::as_raw_fd), addr, queue, cx).map_err(|(step, e)| format!("fd {}: {what}: {step}: {e}", rec.fd))?;
        }
        drop(via);
        if let Some(a) = server.as_ref().or_else(|| cx.unix_names.get(peer).filter(|_| *peer == *ino)) {
            if matches!(*family, libc::AF_INET | libc::AF_INET6) {
                // A TCP client whose connection waited to be accepted: it waits in the
                // restored listener's queue again.
                let to = super::accept::connect_target(a, *family).unwrap_or_else(|| a.clone());
                crest_ptrace::net::connect_raw(s.as_raw_fd(), &to).map_err(|e| err("connecting it to its listener again", e))?;
            } else {
                crest_ptrace::net::connect_raw(s.as_raw_fd(), a).map_err(|e| err("connecting it to its server again", e))?;
            }
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

/// Makes room in the send buffer of socket `fd` for `n` bytes.
fn make_room(fd: i32, n: usize) {
    use crest_ptrace::sys::set_sock_opt_int;
    let room = i32::try_from(n * 2 + (256 << 10)).unwrap_or(i32::MAX);
    if set_sock_opt_int(fd, libc::SOL_SOCKET, libc::SO_SNDBUFFORCE, room).is_err() {
        let _ = set_sock_opt_int(fd, libc::SOL_SOCKET, libc::SO_SNDBUF, room);
    }
}

/// Puts the datagrams `queue` back in the queue of unix datagram socket `s`, bound to `addr`,
/// before it connects anywhere: each is sent to `addr` by a socket that has its sender's
/// address (a temporary socket bound to it for the time of the send; `s` itself when it sent
/// it to itself; an unbound one for an unnamed sender), with the descriptors in flight it
/// carries. An unnamed `s` is one end of a pair: the other end, `via`, sends them all (bound to
/// their sender's address first, if it had one).
fn refill_datagrams(s: i32, via: Option<i32>, addr: &[u8], queue: &[crest_image::QueuedMessage], cx: &mut super::PrepareCx) -> Result<(), (String, std::io::Error)> {
    use crest_ptrace::sys::send_message;
    let in_flight = |e: String| ("making a descriptor in flight again".to_string(), std::io::Error::other(e));
    let mut unnamed: Option<std::os::fd::OwnedFd> = None;
    let mut made: Vec<String> = Vec::new();
    let result = (|| {
        for m in queue {
            let files = m.fds.iter().map(|r| super::open_in_flight(r, cx)).collect::<Result<Vec<_>, _>>().map_err(in_flight)?;
            let raw: Vec<i32> = files.iter().map(AsRawFd::as_raw_fd).collect();
            let sending = |e| (format!("putting a datagram of {} bytes back in its queue", m.data.len()), e);
            if let Some(via) = via {
                if !m.sender.is_empty() && crest_ptrace::sys::sock_addr(via, false).is_ok_and(|a| a.len() <= 2) {
                    bind_sender(via, &m.sender, &mut made)?;
                }
                make_room(via, m.data.len());
                send_message(via, &m.data, &[], &raw).map_err(sending)?;
            } else if m.sender.is_empty() {
                if unnamed.is_none() {
                    unnamed = Some(crest_ptrace::sys::socket(libc::AF_UNIX, libc::SOCK_DGRAM, 0).map_err(|e| ("making a socket to send its datagrams".to_string(), e))?);
                }
                let u = unnamed.as_ref().expect("made above").as_raw_fd();
                make_room(u, m.data.len());
                send_message(u, &m.data, addr, &raw).map_err(sending)?;
            } else if m.sender == addr {
                make_room(s, m.data.len());
                send_message(s, &m.data, addr, &raw).map_err(sending)?;
            } else {
                let t = crest_ptrace::sys::socket(libc::AF_UNIX, libc::SOCK_DGRAM, 0).map_err(|e| ("making a socket to send its datagrams".to_string(), e))?;
                bind_sender(t.as_raw_fd(), &m.sender, &mut made)?;
                make_room(t.as_raw_fd(), m.data.len());
                send_message(t.as_raw_fd(), &m.data, addr, &raw).map_err(sending)?;
            }
        }
        Ok(())
    })();
    // The files the senders' binds made.
    for path in made {
        let _ = std::fs::remove_file(path);
    }
    result
}

/// Binds `fd` to the address `sender` of a datagram's sender, for the time of its send; the
/// file a bind to a path makes is added to `made`. A socket file of that name that nobody
/// receives on (left by the saved process) is replaced.
fn bind_sender(fd: i32, sender: &[u8], made: &mut Vec<String>) -> Result<(), (String, std::io::Error)> {
    let what = || format!("giving it the address of the datagram's sender, {}", addr_words(sender).unwrap_or_default());
    match super::sockopt::bind(fd, sender) {
        Err(e) if e.raw_os_error() == Some(libc::EADDRINUSE) => {
            let Some(path) = unix_path(sender) else { return Err((what(), e)) };
            let probe = crest_ptrace::sys::socket(libc::AF_UNIX, libc::SOCK_DGRAM, 0).map_err(|e| (what(), e))?;
            match crest_ptrace::net::connect_raw(probe.as_raw_fd(), sender) {
                Err(c) if c.raw_os_error() == Some(libc::ECONNREFUSED) => {
                    std::fs::remove_file(&path).map_err(|e| (what(), e))?;
                    super::sockopt::bind(fd, sender).map_err(|e| (what(), e))?;
                }
                _ => return Err((what(), e)),
            }
            made.push(path);
        }
        Err(e) => return Err((what(), e)),
        Ok(()) => made.extend(unix_path(sender)),
    }
    Ok(())
}

/// Whether the socket of record `kind` is bound with `SO_REUSEPORT` set though it was not: a
/// bound internet socket (it may share its port with others that had it).
fn reuseport_for_bind(kind: &FdKind) -> bool {
    let FdKind::Socket { family, addr, options, .. } = kind else { return false };
    matches!(*family, libc::AF_INET | libc::AF_INET6) && !addr.is_empty() && options.iter().any(|o| (o.0, o.1, o.2) == (libc::SOL_SOCKET, libc::SO_REUSEPORT, 0))
}

/// Whether the datagrams `queue` of an unconnected unix datagram socket bound to `addr` are
/// put back only once every process of the image is restored ([`refill_deferred`]): some came
/// from an abstract address, which a socket of the image may hold again by then (the sender
/// itself, still bound: wake-ups between the ranks of an MPI job), so that no socket can take
/// that address for the time of a send; the sender's own socket sends them then.
fn refilled_last(addr: &[u8], peer: u64, queue: &[crest_image::QueuedMessage]) -> bool {
    addr.len() > 2 && peer == 0 && queue.iter().all(|m| m.fds.is_empty()) && queue.iter().any(|m| m.sender.len() > 2 && m.sender[2] == 0 && m.sender != addr)
}

/// In `cr_restart`, once every process of the image is rebuilt and before any runs: puts
/// back the datagrams queued on the unix sockets whose queues wait for that
/// ([`refilled_last`]), oldest first, each sent to the socket's address by the restored socket
/// that holds its sender's address (a copy of it, `pidfd_getfd`), or by a socket bound to that
/// address for the time of the send when none does. `procs` holds each process's PID now and
/// its descriptor records.
pub fn refill_deferred(procs: &[(i32, &[FdRecord])]) -> Result<(), String> {
    let waiting: Vec<(i32, &FdRecord)> = procs
        .iter()
        .flat_map(|&(pid, recs)| recs.iter().map(move |r| (pid, r)))
        .filter(|(_, r)| matches!(&r.kind, FdKind::Socket { family: libc::AF_UNIX, addr, peer, queue, .. } if !queue.is_empty() && refilled_last(addr, *peer, queue)))
        .collect();
    if waiting.is_empty() {
        return Ok(());
    }
    // Address -> the restored socket bound to it (a path's too: it holds its file now).
    let mut holders: HashMap<&[u8], (i32, i32)> = HashMap::new();
    for &(pid, recs) in procs {
        for r in recs {
            if let FdKind::Socket { family: libc::AF_UNIX, addr, .. } = &r.kind {
                if addr.len() > 2 {
                    holders.entry(addr.as_slice()).or_insert((pid, r.fd));
                }
            }
        }
    }
    let mut copies: HashMap<(i32, i32), std::os::fd::OwnedFd> = HashMap::new();
    for (pid, r) in waiting {
        let FdKind::Socket { addr, queue, what, .. } = &r.kind else { continue };
        let err = |step: String, e: std::io::Error| format!("PID {pid} fd {}: {what}: {step}: {e}", r.fd);
        let mut unnamed: Option<std::os::fd::OwnedFd> = None;
        let mut made = Vec::new();
        let result = (|| -> Result<(), String> {
            for m in queue {
                let sending = |e| err(format!("putting a datagram of {} bytes back in its queue", m.data.len()), e);
                if let Some(&(hp, hfd)) = holders.get(m.sender.as_slice()) {
                    let c = match copies.entry((hp, hfd)) {
                        std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
                        std::collections::hash_map::Entry::Vacant(v) => {
                            let pidfd = crest_ptrace::sys::pidfd_open(hp).map_err(|e| err(format!("reaching PID {hp}, whose socket sent it"), e))?;
                            v.insert(crest_ptrace::sys::pidfd_getfd(pidfd.as_raw_fd(), hfd).map_err(|e| err(format!("taking a copy of fd {hfd} of PID {hp}, the socket that sent it"), e))?)
                        }
                    }
                    .as_raw_fd();
                    crest_ptrace::sys::send_message(c, &m.data, addr, &[]).map_err(sending)?;
                } else if m.sender.is_empty() {
                    if unnamed.is_none() {
                        unnamed = Some(crest_ptrace::sys::socket(libc::AF_UNIX, libc::SOCK_DGRAM, 0).map_err(|e| err("making a socket to send its datagrams".into(), e))?);
                    }
                    let u = unnamed.as_ref().expect("made above").as_raw_fd();
                    make_room(u, m.data.len());
                    crest_ptrace::sys::send_message(u, &m.data, addr, &[]).map_err(sending)?;
                } else {
                    let t = crest_ptrace::sys::socket(libc::AF_UNIX, libc::SOCK_DGRAM, 0).map_err(|e| err("making a socket to send its datagrams".into(), e))?;
                    bind_sender(t.as_raw_fd(), &m.sender, &mut made).map_err(|(step, e)| err(step, e))?;
                    make_room(t.as_raw_fd(), m.data.len());
                    crest_ptrace::sys::send_message(t.as_raw_fd(), &m.data, addr, &[]).map_err(sending)?;
                }
            }
            Ok(())
        })();
        for path in made {
            let _ = std::fs::remove_file(path);
        }
        result?;
    }
    Ok(())
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
    let mut queue = Vec::new();
    let mut file_attrs = None;
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
                Some(TCP_LISTEN) if word(24) > 0 => {
                    // Its clients, in the image, connect to it again at restart.
                    super::accept::check_listener(cx, copy, word(24))?;
                    server = ino;
                    Some(word(28) as i32)
                }
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
            if listening && diag.rqueue > 0 {
                // Connections waiting to be accepted: their clients, in the image, connect
                // again. One whose client was closed may hold what that client sent, which
                // the diagnostics do not show and only accepting it would read.
                let clients = cx.unix_peers.diags().icons.get(&ino).cloned().unwrap_or_default();
                if clients.len() != diag.rqueue as usize {
                    return Err(pending(diag.rqueue));
                }
                for c in clients {
                    if c == 0 {
                        return Err("a connection waiting to be accepted comes from a client since closed: what that client sent cannot be read without accepting it, so it is not saved".to_string());
                    } else if !cx.all.iter().any(|o| inode(&o.link) == Some(c)) {
                        return Err(match holder_of(c) {
                            Some((pid, comm)) => format!("a connection waiting to be accepted comes from PID {pid} ({comm}), which is not in the checkpoint"),
                            None => "a connection waiting to be accepted comes from a socket of no process of the checkpoint".to_string(),
                        });
                    }
                }
                server = ino;
            } else if ty == libc::SOCK_DGRAM {
                queue = queue_of(cx, ino, copy, None)?;
            } else if diag.rqueue > 0 {
                return Err("data is waiting to be read, and queued data is not saved yet".to_string());
            }
            if let Some(path) = unix_path(&addr).filter(|p| !p.starts_with('/')) {
                // Bound by a relative name: bound again by its full name.
                let cwd = crest_proc::readlink(cx.pid, "cwd").map_err(|e| format!("its address {path} is relative to a directory that cannot be read: {e}"))?;
                let full = format!("{cwd}/{path}");
                addr = (libc::AF_UNIX as u16).to_ne_bytes().iter().copied().chain(full.into_bytes()).chain([0]).collect();
            }
            if let (Some(path), Some(vfs)) = (unix_path(&addr), diag.vfs) {
                unlinked = !names_it(cx.pid, &path, vfs);
                if !unlinked {
                    use std::os::unix::fs::MetadataExt;
                    file_attrs = std::fs::symlink_metadata(format!("/proc/{}/root{path}", cx.pid)).ok().map(|m| (m.mode() & 0o7777, m.uid(), m.gid()));
                }
            }
            if !queue.is_empty() {
                // The datagrams are sent to it again at restore, to its address, before it
                // connects (a connected socket takes datagrams from its peer only); an unnamed
                // socket is made as one end of a pair whose other end sends them.
                if unlinked {
                    return Err("datagrams are waiting to be read on a socket whose file was removed, which is not saved yet".to_string());
                }
                if addr.is_empty() && (peer != 0 || queue.iter().any(|m| m.sender != queue[0].sender)) {
                    return Err("datagrams are waiting to be read on an unnamed socket that has another peer now, which is not saved yet".to_string());
                }
            }
            listening.then_some(diag.wqueue as i32)
        }
        _ => return Ok(None),
    };
    let (options, byte_options) = super::sockopt::read(copy, family, ty, protocol)?;
    Ok(Some(FdKind::Socket {
        family,
        ty,
        protocol,
        addr,
        listen,
        options,
        what: d.what.clone(),
        byte_options,
        ino: server,
        peer,
        unlinked,
        shutdown,
        queue,
        pending: false,
        file_attrs,
        dest: Vec::new(),
    }))
}

/// The record of a unix stream or seqpacket socket whose connection waits to be accepted by a
/// listener of the image (the listener's `ino`, in `peer`: it connects to it again at
/// restore), or `None` for another socket.
fn pending_client(cx: &mut DumpCx<'_>, copy: i32, ino: u64, d: &Described) -> Result<Option<FdKind>, String> {
    use crest_ptrace::sys::{sock_addr, sock_opt_int};
    let opt = |o| sock_opt_int(copy, libc::SOL_SOCKET, o).unwrap_or(-1);
    let (family, ty) = (opt(libc::SO_DOMAIN), opt(libc::SO_TYPE));
    if family != libc::AF_UNIX || !matches!(ty, libc::SOCK_STREAM | libc::SOCK_SEQPACKET) || !d.connected {
        return Ok(None);
    }
    let Some(diag) = cx.unix_peers.get(ino) else { return Ok(None) };
    // Its peer is the listener's new socket for it, which has no inode before it is accepted.
    if diag.peer != 0 {
        return Ok(None);
    }
    let Some(listener) = cx.unix_peers.listener_of(ino) else { return Ok(None) };
    if !cx.all.iter().any(|o| inode(&o.link) == Some(listener)) {
        return Err("its connection waits to be accepted by a listener outside the checkpoint".to_string());
    }
    // What it sent waits in the connection, still charged to it (its write queue).
    if diag.wqueue > 0 {
        return Err("it sent data on its connection, which waits to be accepted, and data queued on a connection not accepted yet is not saved".to_string());
    }
    let mut addr = sock_addr(copy, false).unwrap_or_default();
    if addr.len() <= 2 {
        addr.clear();
    }
    let (options, byte_options) = super::sockopt::read(copy, family, ty, 0)?;
    Ok(Some(FdKind::Socket {
        family,
        ty,
        protocol: 0,
        addr,
        listen: None,
        options,
        what: format!("{} (waiting to be accepted)", d.what),
        byte_options,
        ino: 0,
        peer: listener,
        unlinked: false,
        shutdown: diag.shutdown,
        queue: Vec::new(),
        pending: true,
        file_attrs: None,
        dest: Vec::new(),
    }))
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

/// The most messages saved for one socket.
const MAX_MESSAGES: usize = 1 << 20;

/// The most queued data saved for one socket.
const MAX_QUEUED: usize = 64 << 20;

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
        let ends = Some([(copy, end), (other.as_raw_fd(), !end)]);
        let mine = queue_of(cx, ino, copy, ends)?;
        let theirs = queue_of(cx, peer, other.as_raw_fd(), ends).map_err(|e| format!("its other end (fd {} of PID {}): {e}", o.fd, o.pid))?;
        let mut sd = |i: u64| cx.unix_peers.get(i).map_or(0, |d| d.shutdown);
        let (sd_mine, sd_theirs) = (sd(ino), sd(peer));
        let mut passed = Vec::new();
        Some(if end {
            let (theirs, mine) = (split_queue(theirs, 0, &mut passed), split_queue(mine, 1, &mut passed));
            crest_image::UnixPairState { queues: [theirs, mine], shutdown: [sd_theirs, sd_mine], passed }
        } else {
            let (mine, theirs) = (split_queue(mine, 0, &mut passed), split_queue(theirs, 1, &mut passed));
            crest_image::UnixPairState { queues: [mine, theirs], shutdown: [sd_mine, sd_theirs], passed }
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
    let mut passed = Vec::new();
    let mine = split_queue(queue_of(cx, ino, copy, None)?, 0, &mut passed);
    let state = Some(crest_image::UnixPairState { queues: [mine, Vec::new()], shutdown: [0, 0], passed });
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
    let end_fd = |cx: &super::PrepareCx, e: bool| cx.take((id, e)).expect("parked above");
    if let Some(st) = state {
        for (i, queue) in st.queues.iter().enumerate() {
            if queue.is_empty() {
                continue;
            }
            // What end i had to read is sent by the other end.
            let via = end_fd(cx, i == 0)?;
            let total: usize = queue.iter().map(Vec::len).sum();
            let room = i32::try_from(total * 2 + (256 << 10)).unwrap_or(i32::MAX);
            if set_sock_opt_int(via.as_raw_fd(), libc::SOL_SOCKET, libc::SO_SNDBUFFORCE, room).is_err() {
                let _ = set_sock_opt_int(via.as_raw_fd(), libc::SOL_SOCKET, libc::SO_SNDBUF, room);
            }
            for (k, m) in queue.iter().enumerate() {
                // The descriptors in flight it carries go with its first bytes.
                let carried = st.passed.iter().find(|p| usize::from(p.0) == i && p.1 as usize == k).map(|p| p.2.as_slice()).unwrap_or_default();
                let files = carried
                    .iter()
                    .map(|r| match &r.kind {
                        FdKind::Epoll { .. } => super::epoll::open_carried(r, cx, id),
                        _ => super::open_in_flight(r, cx),
                    })
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| format!("fd {}: {what}: a descriptor in flight: {e}", rec.fd))?;
                let raw: Vec<i32> = files.iter().map(AsRawFd::as_raw_fd).collect();
                let mut at = 0;
                while at < m.len() || (m.is_empty() && at == 0) {
                    let n = if at == 0 && !raw.is_empty() {
                        crest_ptrace::sys::send_message(via.as_raw_fd(), &m[at..], &[], &raw).map_err(|e| err("putting its queued data back with the descriptors in flight", e))?
                    } else {
                        send_nonblocking(via.as_raw_fd(), &m[at..]).map_err(|e| err("putting its queued data back", e))?
                    };
                    at += n.max(usize::from(m.is_empty()));
                }
            }
        }
        // Each end as it was: a stream end shut down carries the mirror of it to the other
        // end, which was saved too; a datagram end's is its own.
        for (i, &sd) in st.shutdown.iter().enumerate() {
            if let Some(how) = shutdown_how(sd) {
                shutdown(end_fd(cx, i == 1)?.as_raw_fd(), how).map_err(|e| err("shutting it down as it was", e))?;
            }
        }
    }
    let mine = end_fd(cx, *end)?;
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
pub(super) fn holder_of(ino: u64) -> Option<(i32, String)> {
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
