//! Packet sockets (`socket(AF_PACKET, SOCK_RAW or SOCK_DGRAM, protocol)`, and the old
//! `SOCK_PACKET`): made again with their protocol, bound to the interface they were bound to
//! (by its index) and the protocol they were bound with, with their options: `PACKET_VERSION`,
//! `PACKET_RESERVE`, `PACKET_AUXDATA`, `PACKET_ORIGDEV`, `PACKET_TIMESTAMP`, `PACKET_LOSS`,
//! `PACKET_VNET_HDR`, `PACKET_QDISC_BYPASS`, ...; their memberships (`PACKET_ADD_MEMBERSHIP`:
//! promiscuous, multicast, unicast addresses), the receive and transmit rings they asked for
//! (`PACKET_RX_RING`, `PACKET_TX_RING`, made again with the same geometry), and their fanout
//! group (joined again once bound). What is not saved is refused by name: a ring mapped into
//! the process (its mapping), a fanout group steered by a BPF program.
//!
//! The memberships, rings and fanout come from the kernel's socket diagnostics for packet
//! sockets. Packets waiting to be read are not saved: a packet socket gets copies of the
//! interface's frames, best effort (the kernel drops them whenever its buffer is full); after
//! the restart the program sees them as lost on the way. Making one needs `CAP_NET_RAW`:
//! without it here, the checkpoint is refused, naming it.
use crest_image::{ByteOption, FdKind};

use super::socket::{diag_dump, Described};

/// The old packet interface's socket type (`SOCK_PACKET`, device named by its address).
const SOCK_PACKET: i32 = 10;
const PACKET_ADD_MEMBERSHIP: i32 = 1;
const PACKET_RX_RING: i32 = 5;
const PACKET_TX_RING: i32 = 13;
const PACKET_FANOUT: i32 = 18;
/// Fanout modes steered by a BPF program (classic, extended), which cannot be read back.
const PACKET_FANOUT_CBPF: i32 = 6;
const PACKET_FANOUT_EBPF: i32 = 7;

const PACKET_SHOW_MCLIST: u32 = 2;
const PACKET_SHOW_RING_CFG: u32 = 4;
const PACKET_DIAG_MCLIST: u16 = 1;
const PACKET_DIAG_RX_RING: u16 = 2;
const PACKET_DIAG_TX_RING: u16 = 3;

/// Checks that this process can make a socket of this kind again (raw and packet sockets need
/// `CAP_NET_RAW`).
pub(super) fn can_make(family: i32, ty: i32, protocol: i32) -> Result<(), String> {
    match crest_ptrace::sys::socket(family, ty, protocol) {
        Err(e) if matches!(e.raw_os_error(), Some(libc::EPERM | libc::EACCES)) => {
            Err("making it again at restart needs CAP_NET_RAW, which this checkpoint does not have (checkpoint and restart as root, or with CAP_NET_RAW)".to_string())
        }
        _ => Ok(()),
    }
}

/// What the diagnostics tell of a packet socket: its protocol (the one it was made or bound
/// with, as `socket` takes it: network order), and its memberships and rings, as the options
/// that make them again.
fn diag(ino: u64) -> std::io::Result<Option<(i32, Vec<ByteOption>)>> {
    // struct packet_diag_req: family, protocol, pad, inode, what to show, cookie.
    let mut req = vec![libc::AF_PACKET as u8, 0, 0, 0];
    req.extend_from_slice(&(ino as u32).to_ne_bytes());
    req.extend_from_slice(&(PACKET_SHOW_MCLIST | PACKET_SHOW_RING_CFG).to_ne_bytes());
    req.extend_from_slice(&[0xff; 8]);
    let mut found = None;
    diag_dump(&req, |m| {
        // struct packet_diag_msg: family, type, num, inode at 4, cookie; attributes from 16.
        if m.get(4..8).map(|b| u64::from(u32::from_ne_bytes([b[0], b[1], b[2], b[3]]))) != Some(ino) {
            return;
        }
        let num = m.get(2..4).map_or(0, |b| u16::from_ne_bytes([b[0], b[1]]));
        let mut out: Vec<ByteOption> = Vec::new();
        let mut at = 16;
        while let (Some(len), Some(ty)) = (m.get(at..at + 2), m.get(at + 2..at + 4)) {
            let len = usize::from(u16::from_ne_bytes([len[0], len[1]]));
            let ty = u16::from_ne_bytes([ty[0], ty[1]]);
            let Some(v) = m.get(at + 4..at + len.max(4)) else { break };
            match ty {
                PACKET_DIAG_MCLIST => {
                    // struct packet_diag_mclist: index, count, type, alen, addr[32]: each
                    // added `count` times as a struct packet_mreq_max (index, type, alen, addr).
                    for mc in v.chunks_exact(44) {
                        let count = u32::from_ne_bytes([mc[4], mc[5], mc[6], mc[7]]);
                        let mut mreq = mc[0..4].to_vec();
                        mreq.extend_from_slice(&mc[8..44]);
                        for _ in 0..count.min(64) {
                            out.push((libc::SOL_PACKET, PACKET_ADD_MEMBERSHIP, mreq.clone()));
                        }
                    }
                }
                // struct packet_diag_ring is struct tpacket_req3, which every version takes.
                PACKET_DIAG_RX_RING => out.push((libc::SOL_PACKET, PACKET_RX_RING, v.to_vec())),
                PACKET_DIAG_TX_RING => out.push((libc::SOL_PACKET, PACKET_TX_RING, v.to_vec())),
                _ => {}
            }
            at += (len + 3) & !3;
            if len < 4 {
                break;
            }
        }
        found = Some((i32::from(num.to_be()), out));
    })?;
    Ok(found)
}

/// The record of packet socket `copy` (of inode `ino`), or why it cannot be saved.
pub(super) fn dump(copy: i32, ino: u64, d: &Described) -> Result<FdKind, String> {
    use crest_ptrace::sys::{sock_addr, sock_opt_int};
    let ty = sock_opt_int(copy, libc::SOL_SOCKET, libc::SO_TYPE).map_err(|e| format!("reading what it is: {e}"))?;
    // SO_PROTOCOL says 0 for a packet socket: the diagnostics tell.
    let (protocol, extra) = diag(ino)
        .map_err(|e| format!("reading its protocol, memberships and rings (socket diagnostics for packet sockets): {e}"))?
        .ok_or("the socket diagnostics for packet sockets do not list it, so its protocol, memberships and rings cannot be read")?;
    can_make(libc::AF_PACKET, ty, protocol)?;
    let mut addr = sock_addr(copy, false).map_err(|e| format!("reading its address: {e}"))?;
    // struct sockaddr_ll: family, protocol (network order, as given to socket()) at 2,
    // interface index at 4. Not bound: no interface, and the protocol it was made with.
    let ifindex = addr.get(4..8).map_or(0, |b| i32::from_ne_bytes([b[0], b[1], b[2], b[3]]));
    let bound_proto = addr.get(2..4).map_or(0, |b| u16::from_ne_bytes([b[0], b[1]]));
    if ty == SOCK_PACKET {
        // The old interface: its address names the device (sockaddr_pkt), which
        // getsockname gives back as it was bound.
        if addr.get(2..).is_none_or(|n| n.iter().all(|&b| b == 0)) {
            addr.clear();
        }
    } else if ifindex == 0 && i32::from(bound_proto) == protocol {
        addr.clear();
    } else {
        // getsockname gives the hardware address's length only; bind wants a whole
        // struct sockaddr_ll.
        addr.resize(addr.len().max(std::mem::size_of::<libc::sockaddr_ll>()), 0);
    }
    let (mut options, mut byte_options) = super::sockopt::read(copy, libc::AF_PACKET, ty, protocol)?;
    if let Some(&(_, _, fanout)) = options.iter().find(|o| (o.0, o.1) == (libc::SOL_PACKET, PACKET_FANOUT)) {
        if matches!((fanout >> 16) & 0xff, PACKET_FANOUT_CBPF | PACKET_FANOUT_EBPF) {
            return Err("it is in a fanout group steered by a BPF program (PACKET_FANOUT_CBPF or _EBPF), which the kernel cannot give back".to_string());
        }
        if fanout == 0 {
            options.retain(|o| (o.0, o.1) != (libc::SOL_PACKET, PACKET_FANOUT));
        }
    }
    byte_options.extend(extra);
    Ok(super::socket::bare(libc::AF_PACKET, ty, protocol, addr, (options, byte_options), d.what.clone(), Vec::new()))
}
