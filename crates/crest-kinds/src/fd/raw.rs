//! Raw IP sockets (`socket(AF_INET or AF_INET6, SOCK_RAW, protocol)`): made again with their
//! protocol, bound to their address, connected to the host they were connected to, with their
//! options ([`super::sockopt`]: `IP_HDRINCL`, the ICMP and ICMPv6 filters, `IPV6_CHECKSUM`,
//! and those of every IP socket).
//!
//! Packets waiting to be read on one are not saved: a raw socket gets copies of the packets of
//! its protocol, best effort (the kernel drops them whenever its buffer is full); after the
//! restart the program sees them as lost on the way. Making one needs `CAP_NET_RAW`: without
//! it here, the checkpoint is refused, naming it.
use crest_image::FdKind;

use super::socket::Described;

/// The record of raw IP socket `copy`, or why it cannot be saved.
pub(super) fn dump(pid: i32, copy: i32, ino: u64, family: i32, protocol: i32, d: &Described) -> Result<FdKind, String> {
    use crest_ptrace::sys::sock_addr;
    super::packet::can_make(family, libc::SOCK_RAW, protocol)?;
    let mut addr = sock_addr(copy, false).map_err(|e| format!("reading its address: {e}"))?;
    if !bound(&addr) {
        addr.clear();
    }
    // A raw socket may be connected to a host, which it then sends to and hears from only
    // (getpeername does not tell, as a raw socket has no port: /proc/net/raw does).
    let dest = connected_to(pid, family, ino).map_err(|e| format!("reading the address it is connected to (/proc/{pid}/net/raw): {e}"))?.unwrap_or_default();
    let (options, byte_options) = super::sockopt::read(copy, family, libc::SOCK_RAW, protocol)?;
    Ok(super::socket::bare(family, libc::SOCK_RAW, protocol, addr, (options, byte_options), d.what.clone(), dest))
}

/// Whether raw IP address `addr` names a host (bound), not the wildcard address; its port is
/// the socket's protocol.
fn bound(addr: &[u8]) -> bool {
    match i32::from(u16::from_ne_bytes([addr.first().copied().unwrap_or(0), addr.get(1).copied().unwrap_or(0)])) {
        libc::AF_INET => addr.get(4..8).is_some_and(|ip| ip.iter().any(|&b| b != 0)),
        libc::AF_INET6 => addr.get(8..24).is_some_and(|ip| ip.iter().any(|&b| b != 0)),
        _ => false,
    }
}

/// The host raw IP socket `ino` (of process `pid`'s network namespace) is connected to, as a
/// raw `sockaddr`, from `/proc/PID/net/raw` or `raw6`; `None` when it is not connected.
fn connected_to(pid: i32, family: i32, ino: u64) -> std::io::Result<Option<Vec<u8>>> {
    let table = crest_proc::read(pid, if family == libc::AF_INET { "net/raw" } else { "net/raw6" }).map_err(|e| std::io::Error::other(e.to_string()))?;
    // sl local_address rem_address st tx_queue:rx_queue tr:when retrnsmt uid timeout inode ...
    for line in table.lines().skip(1) {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.get(9).and_then(|i| i.parse::<u64>().ok()) != Some(ino) {
            continue;
        }
        let Some(hex) = f.get(2).and_then(|r| r.split(':').next()) else { return Ok(None) };
        // Each 32-bit word of the address printed as a native integer.
        let words: Option<Vec<u32>> = (0..hex.len() / 8).map(|i| u32::from_str_radix(&hex[i * 8..i * 8 + 8], 16).ok()).collect();
        let ip: Vec<u8> = words.unwrap_or_default().iter().flat_map(|w| w.to_ne_bytes()).collect();
        if ip.iter().all(|&b| b == 0) {
            return Ok(None);
        }
        let mut a = if family == libc::AF_INET { vec![0u8; std::mem::size_of::<libc::sockaddr_in>()] } else { vec![0u8; std::mem::size_of::<libc::sockaddr_in6>()] };
        a[0..2].copy_from_slice(&(family as u16).to_ne_bytes());
        let at = if family == libc::AF_INET { 4 } else { 8 };
        if ip.len() != if family == libc::AF_INET { 4 } else { 16 } {
            return Ok(None);
        }
        a[at..at + ip.len()].copy_from_slice(&ip);
        return Ok(Some(a));
    }
    Ok(None)
}
