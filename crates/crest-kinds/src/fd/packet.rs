//! Packet sockets (`socket(AF_PACKET, SOCK_RAW or SOCK_DGRAM, protocol)`, and the old
//! `SOCK_PACKET`): made again with their protocol, bound to the interface they were bound to
//! (by its index) and the protocol they were bound with, with their options: `PACKET_VERSION`,
//! `PACKET_RESERVE`, `PACKET_AUXDATA`, `PACKET_ORIGDEV`, `PACKET_TIMESTAMP`, `PACKET_LOSS`,
//! `PACKET_VNET_HDR`, `PACKET_QDISC_BYPASS`, ...; their memberships (`PACKET_ADD_MEMBERSHIP`:
//! promiscuous, multicast, unicast addresses), the receive and transmit rings they asked for
//! (`PACKET_RX_RING`, `PACKET_TX_RING`, made again with the same geometry), and their fanout
//! group (joined again once bound). What is not saved is refused by name: a fanout group
//! steered by a BPF program.
//!
//! The rings mapped into the process (`mmap` of the socket: the receive ring, then the
//! transmit ring) are a mapping of the socket ([`ring_mapping`], `VmaBacking::PacketRing`):
//! mapped again at restart from the restored socket, whose version and rings are set again
//! first. Their frames are memory the kernel shares with the program, and a new ring is empty
//! and starts at its first frame (or block): the checkpoint reads the frames' status words and
//! refuses, by name, rings a new one would not give back as they were (frames the program has
//! not read, packets in the V3 block being filled, frames queued for sending, a transmit
//! ring ever sent from, a V3 ring's next block other than the first). The frame a V1 or V2
//! receive ring is filled at next is saved and made again at restart ([`PacketRings`]).
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

const PACKET_SHOW_INFO: u32 = 1;
const PACKET_SHOW_MCLIST: u32 = 2;
const PACKET_SHOW_RING_CFG: u32 = 4;
const PACKET_DIAG_INFO: u16 = 0;
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

/// What the diagnostics tell of a packet socket.
struct Diag {
    /// Its protocol (the one it was made or bound with, as `socket` takes it: network order).
    protocol: i32,
    /// Its memberships and rings, as the options that make them again.
    options: Vec<ByteOption>,
    /// Its `PACKET_VERSION`.
    version: u32,
    /// The geometry of its receive and transmit rings (`struct tpacket_req3`), if it has them.
    rings: [Option<Ring>; 2],
}

/// The geometry of a ring, as `struct packet_diag_ring` (and `struct tpacket_req3`) give it.
#[derive(Debug, Clone, Copy)]
struct Ring {
    block_size: u64,
    block_nr: u64,
    frame_size: u64,
    frame_nr: u64,
}

impl Ring {
    fn parse(v: &[u8]) -> Option<Ring> {
        let u = |i: usize| v.get(i..i + 4).map(|b| u64::from(u32::from_ne_bytes([b[0], b[1], b[2], b[3]])));
        Some(Ring { block_size: u(0)?, block_nr: u(4)?, frame_size: u(8)?, frame_nr: u(12)? })
    }

    /// Its length in the mapping.
    fn len(&self) -> u64 {
        self.block_size * self.block_nr
    }

    /// Where frame `i` lies in it (frames do not cross blocks).
    fn frame(&self, i: u64) -> u64 {
        let per_block = (self.block_size / self.frame_size.max(1)).max(1);
        (i / per_block) * self.block_size + (i % per_block) * self.frame_size
    }
}

/// What the diagnostics tell of the packet socket of inode `ino`, if they list it.
fn diag(ino: u64) -> std::io::Result<Option<Diag>> {
    // struct packet_diag_req: family, protocol, pad, inode, what to show, cookie.
    let mut req = vec![libc::AF_PACKET as u8, 0, 0, 0];
    req.extend_from_slice(&(ino as u32).to_ne_bytes());
    req.extend_from_slice(&(PACKET_SHOW_INFO | PACKET_SHOW_MCLIST | PACKET_SHOW_RING_CFG).to_ne_bytes());
    req.extend_from_slice(&[0xff; 8]);
    let mut found = None;
    diag_dump(&req, |m| {
        // struct packet_diag_msg: family, type, num, inode at 4, cookie; attributes from 16.
        if m.get(4..8).map(|b| u64::from(u32::from_ne_bytes([b[0], b[1], b[2], b[3]]))) != Some(ino) {
            return;
        }
        let num = m.get(2..4).map_or(0, |b| u16::from_ne_bytes([b[0], b[1]]));
        let mut out: Vec<ByteOption> = Vec::new();
        let (mut version, mut rings) = (0, [None, None]);
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
                PACKET_DIAG_RX_RING => {
                    rings[0] = Ring::parse(v);
                    out.push((libc::SOL_PACKET, PACKET_RX_RING, v.to_vec()));
                }
                PACKET_DIAG_TX_RING => {
                    rings[1] = Ring::parse(v);
                    out.push((libc::SOL_PACKET, PACKET_TX_RING, v.to_vec()));
                }
                // struct packet_diag_info: index, version, ...
                PACKET_DIAG_INFO => version = v.get(4..8).map_or(0, |b| u32::from_ne_bytes([b[0], b[1], b[2], b[3]])),
                _ => {}
            }
            at += (len + 3) & !3;
            if len < 4 {
                break;
            }
        }
        found = Some(Diag { protocol: i32::from(num.to_be()), options: out, version, rings });
    })?;
    Ok(found)
}

/// The record of packet socket `copy` (of inode `ino`), or why it cannot be saved.
pub(super) fn dump(copy: i32, ino: u64, d: &Described) -> Result<FdKind, String> {
    use crest_ptrace::sys::{sock_addr, sock_opt_int};
    let ty = sock_opt_int(copy, libc::SOL_SOCKET, libc::SO_TYPE).map_err(|e| format!("reading what it is: {e}"))?;
    // SO_PROTOCOL says 0 for a packet socket: the diagnostics tell.
    let Diag { protocol, options: extra, .. } = diag(ino)
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

/// `TPACKET_V1`, `TPACKET_V2` (`PACKET_VERSION`); anything else is `TPACKET_V3`.
const TPACKET_V1: u32 = 0;
const TPACKET_V2: u32 = 1;
/// A frame's or block's status: given to the program (`TP_STATUS_USER`).
const TP_STATUS_USER: u32 = 1;

/// The backing of mapping `m` of process `pid`, a mapping of a socket (`socket:[N]`): the
/// rings of a packet socket the process holds at a descriptor, mapped whole. Refused, by
/// name, when it is not that, or when the rings hold what a new ring would lose: frames the
/// program has not read yet, frames queued for sending, or a kernel position in them that
/// cannot be made again (a transmit ring sent from, a V3 receive ring not at its first
/// block). The frame a V1 or V2 receive ring is filled at next is recorded (`rx_head`).
pub(crate) fn ring_mapping(pid: i32, m: &crest_proc::MapEntry) -> Result<crest_image::VmaBacking, crate::KindError> {
    use crate::KindError;
    let what = format!("pid {pid}: mapping {:#x}-{:#x} ({})", m.start, m.end, m.name);
    let refuse = |why: String| KindError::Unsupported(format!("{what}: {why}"));
    let d = diag(m.ino)
        .map_err(|e| KindError::io(format!("{what}: reading the rings of its socket (socket diagnostics for packet sockets)"), e))?
        .ok_or_else(|| refuse("it maps a socket that is not a packet socket, a kind of mapping crest cannot checkpoint".into()))?;
    let link = format!("socket:[{}]", m.ino);
    let fd = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map_err(|e| KindError::io(format!("{what}: listing the descriptors of the process"), e))?
        .filter_map(|e| {
            let e = e.ok()?;
            let n: i32 = e.file_name().to_str()?.parse().ok()?;
            (std::fs::read_link(e.path()).ok()?.as_os_str() == link.as_str()).then_some(n)
        })
        .min()
        .ok_or_else(|| refuse("no descriptor of the process holds its packet socket any more, so the socket and its rings cannot be made again".into()))?;
    let (rx, tx) = (d.rings[0].map_or(0, |r| r.len()), d.rings[1].map_or(0, |r| r.len()));
    if m.offset != 0 || m.end - m.start != rx + tx {
        return Err(refuse(format!(
            "it maps {} bytes at offset {:#x} of the rings of the packet socket at fd {fd} ({rx} bytes of receive ring, then {tx} of transmit ring): only the whole of them can be mapped again",
            m.end - m.start,
            m.offset
        )));
    }
    let mut bytes = vec![0u8; (m.end - m.start) as usize];
    crest_ptrace::mem::read_forced(pid, m.start, &mut bytes)?;
    let (rx_bytes, tx_bytes) = bytes.split_at(rx as usize);
    let state = match d.rings[0] {
        Some(r) => rx_state(d.version, &r, rx_bytes),
        None => Ok(0),
    };
    let why = state.as_ref().err().cloned().or_else(|| d.rings[1].and_then(|r| tx_state(d.version, &r, tx_bytes)));
    if let Some(why) = why {
        return Err(refuse(format!("the rings of the packet socket at fd {fd} (TPACKET_V{}): {why}, which a new ring would lose", d.version + 1)));
    }
    let rx_head = state.unwrap_or(0);
    if rx_head != 0 {
        // Restart binds the socket for the time it brings the new ring there, which a socket
        // in a fanout group cannot be.
        use std::os::fd::AsRawFd;
        let pidfd = crest_ptrace::sys::pidfd_open(pid).map_err(|e| KindError::io(format!("{what}: opening the process"), e))?;
        let copy = crest_ptrace::sys::pidfd_getfd(pidfd.as_raw_fd(), fd).map_err(|e| KindError::io(format!("{what}: taking a copy of fd {fd}"), e))?;
        if crest_ptrace::sys::sock_opt_int(copy.as_raw_fd(), libc::SOL_PACKET, PACKET_FANOUT).unwrap_or(0) != 0 {
            return Err(refuse(format!(
                "the packet socket at fd {fd} is in a fanout group and the kernel fills frame {rx_head} of its receive ring next: a new ring is brought there by binding the socket for the time of it, which a socket in a fanout group cannot be"
            )));
        }
    }
    Ok(crest_image::VmaBacking::PacketRing { fd, rx_head: rx_head as u32 })
}

fn u32_at(b: &[u8], at: u64) -> u32 {
    b.get(at as usize..at as usize + 4).map_or(0, |b| u32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
}

/// The frame of receive ring `r` (of bytes `b`) the kernel fills next (`TPACKET_V1`, `V2`;
/// 0 for `V3`), or why the ring cannot be made again: a frame (or block, `TPACKET_V3`) not
/// handed back to the kernel, a block being filled with packets, or (`V3`) the kernel's next
/// block not the first.
fn rx_state(version: u32, r: &Ring, b: &[u8]) -> Result<u64, String> {
    if version == TPACKET_V1 || version == TPACKET_V2 {
        // struct tpacket_hdr: status (long), len, snaplen, mac, net, sec, usec; struct
        // tpacket2_hdr: status, len, snaplen, mac, net, sec, nsec.
        let (mac, sec, sub) = if version == TPACKET_V1 { (16, 20, 24) } else { (12, 16, 20) };
        // The last frame the kernel filled: the latest time stamp among the frames it wrote.
        let mut last: Option<(u32, u32, u64)> = None;
        for i in 0..r.frame_nr {
            let f = r.frame(i);
            let status = u32_at(b, f);
            if status & TP_STATUS_USER != 0 {
                return Err(format!("frame {i} of its receive ring holds a packet the program has not read yet (TP_STATUS_USER)"));
            }
            if status != 0 {
                return Err(format!("frame {i} of its receive ring has the status {status:#x}, not TP_STATUS_KERNEL"));
            }
            let mac = b.get((f + mac) as usize..(f + mac) as usize + 2).map_or(0, |m| u16::from_ne_bytes([m[0], m[1]]));
            let t = (u32_at(b, f + sec), u32_at(b, f + sub));
            if mac != 0 && last.is_none_or(|l| t >= (l.0, l.1)) {
                last = Some((t.0, t.1, i));
            }
        }
        return Ok(last.map_or(0, |l| (l.2 + 1) % r.frame_nr.max(1)));
    }
    // struct tpacket_block_desc: version, offset_to_priv, then struct tpacket_hdr_v1:
    // block_status, num_pkts, offset_to_first_pkt, blk_len, seq_num (u64), ... The block the
    // kernel fills is the one it opened last: the highest sequence number.
    let mut active: Option<(u64, u64, u32)> = None;
    for i in 0..r.block_nr {
        let at = i * r.block_size;
        let (status, packets) = (u32_at(b, at + 8), u32_at(b, at + 12));
        let seq = u64::from(u32_at(b, at + 24)) | u64::from(u32_at(b, at + 28)) << 32;
        if status & TP_STATUS_USER != 0 {
            return Err(format!("block {i} of its receive ring holds {packets} packets the program has not read yet (TP_STATUS_USER)"));
        }
        if active.is_none_or(|a| seq > a.0) {
            active = Some((seq, i, packets));
        }
    }
    match active {
        Some((_, i, packets)) if packets != 0 => Err(format!("block {i} of its receive ring, which the kernel is filling, holds {packets} packets the program has not been given yet")),
        Some((_, i, _)) if i != 0 => Err(format!("the kernel fills block {i} of its receive ring next, where the program waits for the next packets; a new ring starts at block 0")),
        _ => Ok(0),
    }
}

/// Why transmit ring `r` (of bytes `b`) cannot be made again as a new one, if it cannot: a
/// frame queued for sending, being sent or refused as malformed, or any frame ever filled
/// (the kernel's next frame to send is read nowhere, and a new ring starts at frame 0).
fn tx_state(version: u32, r: &Ring, b: &[u8]) -> Option<String> {
    // The frame's length: struct tpacket_hdr at 8, tpacket2_hdr at 4, tpacket3_hdr at 16.
    let len = match version {
        TPACKET_V1 => 8,
        TPACKET_V2 => 4,
        _ => 16,
    };
    for i in 0..r.frame_nr {
        let f = r.frame(i);
        match u32_at(b, f) {
            0 => {}
            1 => return Some(format!("frame {i} of its transmit ring is queued for sending (TP_STATUS_SEND_REQUEST)")),
            2 => return Some(format!("frame {i} of its transmit ring is being sent (TP_STATUS_SENDING)")),
            4 => return Some(format!("frame {i} of its transmit ring was refused as malformed (TP_STATUS_WRONG_FORMAT), which the program has not seen yet")),
            s => return Some(format!("frame {i} of its transmit ring has the status {s:#x}, not TP_STATUS_AVAILABLE")),
        }
        if u32_at(b, f + len) != 0 {
            return Some(format!("its transmit ring has been sent from (frame {i} was filled), and the kernel's next frame to send in it cannot be read back"));
        }
    }
    None
}

/// The EtherType of the frames that bring a new receive ring to its saved position (the second
/// local experimental one), sent on `lo` only, to the socket bound there for the time of it.
const ADVANCE_PROTO: u16 = 0x88b6;

/// Brings the receive rings of the restored packet sockets to the frame their kernel filled
/// next at the checkpoint ([`crest_image::VmaBacking::PacketRing`] `rx_head`), once the
/// memory kind has mapped them: a new ring starts at frame 0, where the program would not look.
/// The socket is bound to `lo` for a protocol of crest's own, sent that many frames from
/// another socket on `lo`, each handed back to the kernel as it arrives (through a shared
/// mapping of the rings made in the process for the time of it), then bound again as it was.
pub struct PacketRings;

impl crate::process::ProcessKind for PacketRings {
    fn name(&self) -> &'static str {
        "packet rings"
    }
    fn fields(&self) -> &'static [&'static str] {
        // The mappings of packet sockets' rings.
        &["vmas"]
    }
    fn stage(&self) -> crate::process::Stage {
        crate::process::Stage::Traced
    }
    fn after(&self) -> &'static [&'static str] {
        // The rings are mapped by the memory kind.
        &["memory"]
    }
    fn restore(&self, cx: &mut crate::process::FillCx<'_, '_>) -> Result<(), crate::KindError> {
        for v in &cx.p.vmas {
            if let crest_image::VmaBacking::PacketRing { fd, rx_head } = v.backing {
                if rx_head != 0 {
                    advance(cx, v, fd, rx_head)?;
                }
            }
        }
        Ok(())
    }
}

/// `struct sockaddr_ll` for `protocol` (host order) on interface `ifindex`.
fn sockaddr_ll(protocol: u16, ifindex: i32) -> Vec<u8> {
    let mut a = (libc::AF_PACKET as u16).to_ne_bytes().to_vec();
    a.extend_from_slice(&protocol.to_be_bytes());
    a.extend_from_slice(&ifindex.to_ne_bytes());
    a.resize(std::mem::size_of::<libc::sockaddr_ll>(), 0);
    a
}

fn advance(cx: &mut crate::process::FillCx<'_, '_>, v: &crest_image::Vma, fd: i32, head: u32) -> Result<(), crate::KindError> {
    use std::io::Write;
    use std::os::fd::AsRawFd;

    use crate::KindError;
    use crest_ptrace::sys::{bind_raw, sock_addr, sock_opt_int};
    let what = format!("pid {}: rings of the packet socket at fd {fd} ({:#x}-{:#x}): bringing the receive ring to frame {head}", cx.p.pid, v.start, v.end);
    let io = |step: &str, e: std::io::Error| KindError::io(format!("{what}: {step}"), e);
    let pidfd = crest_ptrace::sys::pidfd_open(cx.pid).map_err(|e| io("opening the process", e))?;
    let sock = crest_ptrace::sys::pidfd_getfd(pidfd.as_raw_fd(), fd).map_err(|e| io("taking a copy of the socket", e))?;
    let s = sock.as_raw_fd();
    let ino = std::fs::metadata(format!("/proc/self/fd/{s}")).map_err(|e| io("reading the socket's inode", e))?;
    let d = diag(std::os::unix::fs::MetadataExt::ino(&ino)).map_err(|e| io("reading its rings (socket diagnostics for packet sockets)", e))?;
    let Some((version, ring)) = d.and_then(|d| Some((d.version, d.rings[0]?))) else {
        return Err(KindError::Mismatch(format!("{what}: the restored socket has no receive ring")));
    };
    if u64::from(head) >= ring.frame_nr {
        return Err(KindError::Mismatch(format!("{what}: the ring has {} frames", ring.frame_nr)));
    }
    // Another process of the image that maps the same socket may have brought it there
    // already, or be at it (processes are filled side by side): one at a time, where the
    // kernel is now is read as the checkpoint reads it.
    static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let mut now = vec![0u8; ring.len() as usize];
    crest_ptrace::mem::read_forced(cx.pid, v.start, &mut now)?;
    match rx_state(version, &ring, &now) {
        Ok(0) => {}
        Ok(at) if at == u64::from(head) => return Ok(()),
        Ok(at) => return Err(KindError::Mismatch(format!("{what}: the new ring is at frame {at} already"))),
        Err(why) => return Err(KindError::Mismatch(format!("{what}: the new ring is not empty: {why}"))),
    }
    if sock_opt_int(s, libc::SOL_PACKET, PACKET_FANOUT).unwrap_or(0) != 0 {
        return Err(KindError::Unsupported(format!("{what}: it is in a fanout group, where a socket cannot be bound for the time of it")));
    }
    let mut bound = sock_addr(s, false).map_err(|e| io("reading its address", e))?;
    bound.resize(bound.len().max(std::mem::size_of::<libc::sockaddr_ll>()), 0);
    let lo: i32 = std::fs::read_to_string("/sys/class/net/lo/ifindex").ok().and_then(|t| t.trim().parse().ok()).unwrap_or(1);
    let on_lo = sockaddr_ll(ADVANCE_PROTO, lo);
    bind_raw(s, &on_lo).map_err(|e| io("binding it to lo for the time of it", e))?;
    let sender = crest_ptrace::sys::socket(libc::AF_PACKET, libc::SOCK_RAW, 0).map_err(|e| io("making a packet socket to send from", e))?;
    bind_raw(sender.as_raw_fd(), &on_lo).map_err(|e| io("binding the sending socket to lo", e))?;
    let mut sender = std::fs::File::from(sender);
    // A shared, writable mapping of the rings in the process, for the time of it: the frames
    // are handed back through it (the process's own may be private or read-only).
    let len = v.end - v.start;
    let at = (cx.free_range)(len).ok_or_else(|| KindError::Mismatch(format!("{what}: no free address range of {len:#x} bytes in the process")))?;
    const MAP_FIXED_NOREPLACE: u64 = 0x10_0000;
    let mapped = cx.remote.call(
        &format!("{what}: mapping the rings for the time of it"),
        libc::SYS_mmap,
        &[at, len, (libc::PROT_READ | libc::PROT_WRITE) as u64, libc::MAP_SHARED as u64 | MAP_FIXED_NOREPLACE, fd as u64, 0],
    )?;
    let mut frame = [0u8; 60];
    frame[12..14].copy_from_slice(&ADVANCE_PROTO.to_be_bytes());
    let mut done = Ok(());
    for i in 0..u64::from(head) {
        let f = mapped + ring.frame(i);
        if let Err(e) = sender.write_all(&frame) {
            done = Err(io(&format!("sending frame {i} on lo"), e));
            break;
        }
        let t = std::time::Instant::now();
        let mut status = [0u8; 4];
        while crest_ptrace::mem::read_forced(cx.pid, f, &mut status).is_ok() && u32::from_ne_bytes(status) & TP_STATUS_USER == 0 && t.elapsed() < std::time::Duration::from_secs(2) {
            std::thread::sleep(std::time::Duration::from_micros(200));
        }
        if u32::from_ne_bytes(status) & TP_STATUS_USER == 0 {
            done = Err(KindError::Mismatch(format!("{what}: frame {i} sent on lo did not arrive in it within 2 s")));
            break;
        }
        if let Err(e) = crest_ptrace::mem::write(cx.pid, f, &0u32.to_ne_bytes()) {
            done = Err(e.into());
            break;
        }
    }
    cx.remote.call(&format!("{what}: unmapping the rings mapped for the time of it"), libc::SYS_munmap, &[mapped, len])?;
    done?;
    bind_raw(s, &bound).map_err(|e| io("binding it again as it was", e))
}

#[cfg(test)]
mod tests {
    use super::*;

    const V2_RING: Ring = Ring { block_size: 4096, block_nr: 1, frame_size: 1024, frame_nr: 4 };

    /// Writes frame `i` of a V2 receive ring as the kernel fills it: status, mac, time stamp.
    fn filled(b: &mut [u8], i: u64, status: u32, sec: u32) {
        let f = V2_RING.frame(i) as usize;
        b[f..f + 4].copy_from_slice(&status.to_ne_bytes());
        b[f + 12..f + 14].copy_from_slice(&66u16.to_ne_bytes());
        b[f + 16..f + 20].copy_from_slice(&sec.to_ne_bytes());
    }

    #[test]
    fn a_fresh_receive_ring_starts_where_a_new_one_does() {
        assert_eq!(rx_state(TPACKET_V2, &V2_RING, &[0; 4096]), Ok(0));
    }

    #[test]
    fn an_unread_frame_is_named() {
        let mut b = vec![0; 4096];
        filled(&mut b, 1, TP_STATUS_USER, 5);
        assert!(rx_state(TPACKET_V2, &V2_RING, &b).is_err_and(|w| w.contains("frame 1") && w.contains("TP_STATUS_USER")));
    }

    #[test]
    fn the_kernel_position_is_after_the_last_frame_filled() {
        let mut b = vec![0; 4096];
        filled(&mut b, 0, 0, 5);
        filled(&mut b, 1, 0, 6);
        assert_eq!(rx_state(TPACKET_V2, &V2_RING, &b), Ok(2));
        // A whole turn of the ring: the kernel is back at frame 0.
        filled(&mut b, 2, 0, 7);
        filled(&mut b, 3, 0, 8);
        assert_eq!(rx_state(TPACKET_V2, &V2_RING, &b), Ok(0));
        // And on: frame 0 filled last.
        filled(&mut b, 0, 0, 9);
        assert_eq!(rx_state(TPACKET_V2, &V2_RING, &b), Ok(1));
    }

    #[test]
    fn a_v3_ring_refuses_packets_in_the_block_being_filled_and_another_block_next() {
        let r = Ring { block_size: 8192, block_nr: 2, frame_size: 2048, frame_nr: 8 };
        let mut b = vec![0; 16384];
        b[24..32].copy_from_slice(&1u64.to_ne_bytes());
        assert_eq!(rx_state(2, &r, &b), Ok(0));
        b[12..16].copy_from_slice(&3u32.to_ne_bytes());
        assert!(rx_state(2, &r, &b).is_err_and(|w| w.contains("holds 3 packets")));
        b[12..16].copy_from_slice(&0u32.to_ne_bytes());
        b[8192 + 24..8192 + 32].copy_from_slice(&2u64.to_ne_bytes());
        assert!(rx_state(2, &r, &b).is_err_and(|w| w.contains("block 1")));
    }

    #[test]
    fn a_transmit_ring_sent_from_or_with_frames_queued_is_named() {
        let mut b = vec![0; 4096];
        assert_eq!(tx_state(TPACKET_V2, &V2_RING, &b), None);
        b[1024..1028].copy_from_slice(&1u32.to_ne_bytes());
        assert!(tx_state(TPACKET_V2, &V2_RING, &b).is_some_and(|w| w.contains("TP_STATUS_SEND_REQUEST")));
        b[1024..1028].copy_from_slice(&0u32.to_ne_bytes());
        b[1028..1032].copy_from_slice(&60u32.to_ne_bytes());
        assert!(tx_state(TPACKET_V2, &V2_RING, &b).is_some_and(|w| w.contains("sent from")));
    }
}
