//! Sockets. crest does not restore sockets yet, so a socket is refused at checkpoint time with
//! a description of what it is ("TCP 127.0.0.1:6379 listening", "unix stream socket connected
//! to /run/x.sock"), or left out on request ([`super::unsupported`]). The one exception, as in
//! BLCR: standard input, output or error connected to a process that is not checkpointed
//! (a service whose output goes to a log collector) follows `cr_restart`'s own
//! ([`super::inherited`]).
//!
//! What a socket is comes from a copy of it (`pidfd_getfd`: domain, type, protocol, listening,
//! own and peer address); the other end of a unix socket, from the kernel's socket diagnostics
//! (`NETLINK_SOCK_DIAG`, asked once per checkpoint for every unix socket).
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

/// Unix socket inode -> the inode of its peer, as the kernel's socket diagnostics tell them.
#[derive(Default)]
pub struct UnixPeers(Option<HashMap<u64, u64>>);

impl UnixPeers {
    fn peer_of(&mut self, ino: u64) -> Option<u64> {
        if self.0.is_none() {
            self.0 = Some(unix_peers().unwrap_or_default());
        }
        self.0.as_ref()?.get(&ino).copied().filter(|&p| p != 0)
    }
}

const SOCK_DIAG_BY_FAMILY: u16 = 20;
const NLM_F_REQUEST: u16 = 1;
const NLM_F_DUMP: u16 = 0x300;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const UDIAG_SHOW_PEER: u32 = 4;
const UNIX_DIAG_PEER: u16 = 2;

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

/// Every unix socket of this network namespace with its peer (0: none).
fn unix_peers() -> std::io::Result<HashMap<u64, u64>> {
    let mut sock = std::fs::File::from(crest_ptrace::sys::sock_diag_socket()?);
    let mut req = Vec::with_capacity(40);
    req.extend_from_slice(&40u32.to_ne_bytes());
    req.extend_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
    req.extend_from_slice(&(NLM_F_REQUEST | NLM_F_DUMP).to_ne_bytes());
    req.extend_from_slice(&[0; 8]); // sequence, port
    req.extend_from_slice(&[libc::AF_UNIX as u8, 0, 0, 0]); // family, protocol, padding
    req.extend_from_slice(&u32::MAX.to_ne_bytes()); // every state
    req.extend_from_slice(&0u32.to_ne_bytes()); // inode: all
    req.extend_from_slice(&UDIAG_SHOW_PEER.to_ne_bytes());
    req.extend_from_slice(&[0xff; 8]); // no cookie
    sock.write_all(&req)?;
    let mut out = HashMap::new();
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let n = sock.read(&mut buf)?;
        if n == 0 {
            return Ok(out);
        }
        let mut at = 0;
        while at + 16 <= n {
            let len = u32_at(&buf, at).unwrap_or(0) as usize;
            let ty = u16_at(&buf, at + 4).unwrap_or(0);
            if len < 16 || at + len > n {
                break;
            }
            match ty {
                NLMSG_DONE => return Ok(out),
                NLMSG_ERROR => return Err(std::io::Error::other("socket diagnostics refused the request")),
                _ => {}
            }
            let msg = &buf[at + 16..at + len];
            // struct unix_diag_msg: family, type, state, pad, inode, cookie[2]; then attributes.
            if let Some(ino) = u32_at(msg, 4) {
                let mut peer = 0;
                let mut a = 16;
                while a + 4 <= msg.len() {
                    let alen = u16_at(msg, a).unwrap_or(0) as usize;
                    let aty = u16_at(msg, a + 2).unwrap_or(0);
                    if alen < 4 {
                        break;
                    }
                    if aty == UNIX_DIAG_PEER {
                        peer = u32_at(msg, a + 4).unwrap_or(0);
                    }
                    a += (alen + 3) & !3;
                }
                out.insert(u64::from(ino), u64::from(peer));
            }
            at += (len + 3) & !3;
        }
    }
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
        // The other end of a unix socket, when it is in the image too.
        let peer = cx.unix_peers.peer_of(ino);
        let inside = peer.and_then(|p| cx.all.iter().find(|o| inode(&o.link) == Some(p)));
        if let Some(o) = inside {
            d.what.push_str(&format!(" (its other end is fd {} of PID {})", o.fd, o.pid));
        } else if peer.is_some() && !d.what.contains("connected") {
            d.what.push_str(" connected");
            d.connected = true;
        }
        let outside = d.connected && inside.is_none() && !inet_peer_inside(cx, copy.as_ref().map(AsRawFd::as_raw_fd));
        super::inherited::outside(cx, fd, StdioClass::Socket, outside, d.what, "sockets are not saved yet")
    }
    fn restores(&self, _kind: &FdKind) -> bool {
        false
    }
    fn open(&self, _rec: &FdRecord, _cx: &mut super::PrepareCx) -> Result<Option<std::os::fd::OwnedFd>, String> {
        Ok(None)
    }
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
