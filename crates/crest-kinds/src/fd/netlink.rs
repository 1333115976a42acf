//! Netlink sockets (`socket(AF_NETLINK, SOCK_RAW or SOCK_DGRAM, protocol)`) of the protocols
//! whose kernel side holds nothing of theirs but their port and groups: routing
//! (`NETLINK_ROUTE`), socket diagnostics (`NETLINK_SOCK_DIAG`) and device events
//! (`NETLINK_KOBJECT_UEVENT`). Each is made again bound to its port id (the one it chose, or
//! the kernel gave it), in its multicast groups (all of them, above 32 too), connected to the
//! port and group it was connected to, with its options (`NETLINK_PKTINFO`,
//! `NETLINK_NO_ENOBUFS`, `NETLINK_CAP_ACK`, `NETLINK_EXT_ACK`, ...).
//!
//! Refused, naming them: netlink sockets of the other protocols (the kernel keeps state for
//! them by port id, a netfilter queue binding or the audit daemon's registration, that a new
//! socket would not have), messages waiting to be read on one (what the kernel answered or
//! announced), and a dump the kernel is still sending to it. The queue and the dump come from
//! the kernel's socket diagnostics for netlink sockets.
use crest_image::FdKind;

use super::socket::{diag_dump, Described};

const NETLINK_ROUTE: i32 = 0;
const NETLINK_SOCK_DIAG: i32 = 4;
const NETLINK_KOBJECT_UEVENT: i32 = 15;

const SOL_NETLINK: i32 = 270;
const NETLINK_ADD_MEMBERSHIP: i32 = 1;
const NETLINK_LIST_MEMBERSHIPS: i32 = 9;

const NDIAG_SHOW_MEMINFO: u32 = 1;
const NDIAG_SHOW_FLAGS: u32 = 8;
const NETLINK_DIAG_MEMINFO: u16 = 0;
const NETLINK_DIAG_FLAGS: u16 = 4;
const NDIAG_FLAG_CB_RUNNING: u32 = 1;
/// Netlink's "every protocol" in a diagnostics request.
const NDIAG_PROTO_ALL: u8 = 255;

fn protocol_name(p: i32) -> String {
    let n = match p {
        1 => "NETLINK_UNUSED",
        2 => "NETLINK_USERSOCK",
        3 => "NETLINK_FIREWALL",
        5 => "NETLINK_NFLOG",
        6 => "NETLINK_XFRM",
        7 => "NETLINK_SELINUX",
        8 => "NETLINK_ISCSI",
        9 => "NETLINK_AUDIT",
        10 => "NETLINK_FIB_LOOKUP",
        11 => "NETLINK_CONNECTOR",
        12 => "NETLINK_NETFILTER",
        13 => "NETLINK_IP6_FW",
        14 => "NETLINK_DNRTMSG",
        16 => "NETLINK_GENERIC",
        18 => "NETLINK_SCSITRANSPORT",
        19 => "NETLINK_ECRYPTFS",
        20 => "NETLINK_RDMA",
        21 => "NETLINK_CRYPTO",
        22 => "NETLINK_SMC",
        _ => return format!("protocol {p}"),
    };
    n.to_string()
}

/// What the diagnostics tell of a netlink socket: bytes queued for it to read, and whether a
/// dump is still being sent to it.
fn diag(ino: u64) -> std::io::Result<Option<(u32, bool)>> {
    // struct netlink_diag_req: family, protocol, pad, inode, what to show, cookie.
    let mut req = vec![libc::AF_NETLINK as u8, NDIAG_PROTO_ALL, 0, 0];
    req.extend_from_slice(&(ino as u32).to_ne_bytes());
    req.extend_from_slice(&(NDIAG_SHOW_MEMINFO | NDIAG_SHOW_FLAGS).to_ne_bytes());
    req.extend_from_slice(&[0xff; 8]);
    let mut found = None;
    diag_dump(&req, |m| {
        // struct netlink_diag_msg: family, type, protocol, state, portid, dst_portid,
        // dst_group, inode at 16, cookie; attributes from 28.
        if m.get(16..20).map(|b| u64::from(u32::from_ne_bytes([b[0], b[1], b[2], b[3]]))) != Some(ino) {
            return;
        }
        let (mut rmem, mut running) = (0, false);
        let mut at = 28;
        while let (Some(len), Some(ty)) = (m.get(at..at + 2), m.get(at + 2..at + 4)) {
            let len = usize::from(u16::from_ne_bytes([len[0], len[1]]));
            let ty = u16::from_ne_bytes([ty[0], ty[1]]);
            let Some(v) = m.get(at + 4..at + len.max(4)) else { break };
            let word = v.get(0..4).map_or(0, |b| u32::from_ne_bytes([b[0], b[1], b[2], b[3]]));
            match ty {
                // SK_MEMINFO_RMEM_ALLOC first.
                NETLINK_DIAG_MEMINFO => rmem = word,
                NETLINK_DIAG_FLAGS => running = word & NDIAG_FLAG_CB_RUNNING != 0,
                _ => {}
            }
            if len < 4 {
                break;
            }
            at += (len + 3) & !3;
        }
        found = Some((rmem, running));
    })?;
    Ok(found)
}

/// The record of netlink socket `copy` (of inode `ino`), or why it cannot be saved.
pub(super) fn dump(copy: i32, ino: u64, d: &Described) -> Result<FdKind, String> {
    use crest_ptrace::sys::{sock_addr, sock_opt_bytes, sock_opt_int};
    let opt = |o| sock_opt_int(copy, libc::SOL_SOCKET, o).map_err(|e| format!("reading what it is: {e}"));
    let (ty, protocol) = (opt(libc::SO_TYPE)?, opt(libc::SO_PROTOCOL)?);
    if !matches!(protocol, NETLINK_ROUTE | NETLINK_SOCK_DIAG | NETLINK_KOBJECT_UEVENT) {
        return Err(format!(
            "netlink sockets of {} are not saved: the kernel may keep state for them by their port id (a queue binding, a registration) that a new socket would not have",
            protocol_name(protocol)
        ));
    }
    // struct sockaddr_nl: family, pad, port id at 4, groups (the first 32) at 8.
    let mut addr = sock_addr(copy, false).map_err(|e| format!("reading its address: {e}"))?;
    let port = addr.get(4..8).map_or(0, |b| u32::from_ne_bytes([b[0], b[1], b[2], b[3]]));
    let groups = sock_opt_bytes(copy, SOL_NETLINK, NETLINK_LIST_MEMBERSHIPS, 1024).unwrap_or_default();
    if port == 0 && groups.iter().all(|&b| b == 0) {
        // Not bound: nothing can reach it, and the diagnostics do not list it.
        addr.clear();
    } else {
        let (rmem, running) = diag(ino)
            .map_err(|e| format!("reading its queue (socket diagnostics for netlink sockets): {e}"))?
            .ok_or("the socket diagnostics for netlink sockets do not list it, so its queue cannot be read")?;
        if running {
            return Err("the kernel is still sending it the answer to a dump request, which is not saved (checkpoint again once the program has read it)".to_string());
        }
        if rmem > 0 {
            return Err(format!("messages are waiting to be read on it ({rmem} bytes of the kernel's buffers), and queued netlink messages are not saved"));
        }
    }
    let peer = sock_addr(copy, true).unwrap_or_default();
    let dest = if peer.get(4..12).is_some_and(|b| b.iter().any(|&x| x != 0)) { peer } else { Vec::new() };
    let (mut options, byte_options) = super::sockopt::read(copy, libc::AF_NETLINK, ty, protocol)?;
    // The groups above the first 32, which the bind does not take: joined once it is bound.
    for (w, word) in groups.chunks_exact(4).enumerate().skip(1) {
        let bits = u32::from_ne_bytes([word[0], word[1], word[2], word[3]]);
        for b in 0..32 {
            if bits & (1 << b) != 0 {
                options.push((SOL_NETLINK, NETLINK_ADD_MEMBERSHIP, (w * 32 + b + 1) as i32));
            }
        }
    }
    Ok(super::socket::bare(libc::AF_NETLINK, ty, protocol, addr, (options, byte_options), d.what.clone(), dest))
}
