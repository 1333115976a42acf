//! Socket options, for every kind of socket saved ([`super::socket`], [`super::tcp`]): which
//! are saved, how they are read from a copy of the socket at checkpoint and set again at
//! restart.
//!
//! Options that are an `int` are saved as `(level, name, value)`: those of `SOL_SOCKET`
//! (`SO_PRIORITY`, `SO_MARK`, `SO_RCVLOWAT`, `SO_PASSCRED`, ...), of IP and IPv6 (`IP_TOS`,
//! `IP_FREEBIND`, `IPV6_V6ONLY`, ...), of TCP (`TCP_NODELAY`, `TCP_CORK`, the keepalive
//! timers, ...), UDP (`UDP_CORK`) and UDP-Lite (its checksum coverage). The buffer sizes (`SO_SNDBUF`, `SO_RCVBUF`) are saved only
//! when the program set them (`SO_BUF_LOCK` says so): otherwise the kernel sizes them itself.
//! Others are saved as bytes ([`crest_image::ByteOption`]): `SO_LINGER`, `SO_BINDTODEVICE`,
//! `SO_RCVTIMEO`, `SO_SNDTIMEO`, `TCP_CONGESTION` (when not the default), and a classic BPF
//! filter (`SO_ATTACH_FILTER`, read back with `SO_GET_FILTER`); a socket with an eBPF filter
//! (`SO_ATTACH_BPF`), which cannot be read back, is refused, as is a UDP socket corked
//! (`UDP_CORK`) with data written and not sent yet.
//!
//! At restart an option already at its saved value on the new socket is left alone (setting
//! some, `SO_MARK` say, needs a privilege even to set their default); the others are set
//! before the socket is bound (`SO_BINDTODEVICE`, `IP_FREEBIND`, `SO_REUSEADDR` matter to
//! `bind`), the filter and its lock (`SO_LOCK_FILTER`) last, once queued data is back.
use std::os::fd::AsRawFd;

use crest_image::ByteOption;

/// `SO_BUF_LOCK` (Linux 5.14) and its bits.
const SO_BUF_LOCK: i32 = 72;
const SOCK_SNDBUF_LOCK: i32 = 1;
const SOCK_RCVBUF_LOCK: i32 = 2;
/// `SO_LOCK_FILTER`: the filter can no longer be changed.
const SO_LOCK_FILTER: i32 = 44;
/// `SO_TIMESTAMP`, `SO_TIMESTAMPNS` and `SO_TIMESTAMPING` in their original (`_OLD`) numbers.
const SO_TIMESTAMP_OLD: i32 = 29;
const SO_TIMESTAMPNS_OLD: i32 = 35;
const SO_TIMESTAMPING_OLD: i32 = 37;
const SO_ZEROCOPY: i32 = 60;
/// UDP-Lite's checksum coverage, sent and required.
const UDPLITE_SEND_CSCOV: i32 = 10;
const UDPLITE_RECV_CSCOV: i32 = 11;

/// `SOL_RAW`'s `ICMP_FILTER` (an IPv4 raw ICMP socket's filter, one 32-bit word).
const SOL_RAW: i32 = 255;
const ICMP_FILTER: i32 = 1;
/// `IPV6_CHECKSUM` and `IPV6_HDRINCL` of IPv6 raw sockets.
const IPV6_CHECKSUM: i32 = 7;
const IPV6_HDRINCL: i32 = 36;
/// `SOL_ICMPV6`'s `ICMPV6_FILTER` (an IPv6 raw ICMPv6 socket's filter, 32 bytes).
const SOL_ICMPV6: i32 = 58;
const ICMPV6_FILTER: i32 = 1;
/// A packet socket's fanout group, joined once it is bound.
const PACKET_FANOUT: i32 = 18;
/// Netlink's option level, and its multicast group membership, joined once it is bound.
const SOL_NETLINK: i32 = 270;
const NETLINK_ADD_MEMBERSHIP: i32 = 1;

/// Options set once the socket is bound ([`finish`]): a packet socket's fanout group needs
/// it bound, a netlink membership would bind it to a port of its own.
fn after_bind(level: i32, name: i32) -> bool {
    matches!((level, name), (libc::SOL_PACKET, PACKET_FANOUT) | (SOL_NETLINK, NETLINK_ADD_MEMBERSHIP))
}

/// The `int` options saved for a socket of this family, type and protocol, in the order they
/// are set again: IP's before `SO_PRIORITY` (`IP_TOS` sets the priority too), `SO_SNDBUF` and
/// `SO_RCVBUF` before `SO_BUF_LOCK` (setting them locks them).
fn int_options(family: i32, ty: i32, protocol: i32) -> Vec<(i32, i32)> {
    let mut o: Vec<(i32, i32)> = Vec::new();
    if matches!(family, libc::AF_INET | libc::AF_INET6) {
        o.extend(
            [
                libc::IP_FREEBIND,
                libc::IP_TRANSPARENT,
                libc::IP_BIND_ADDRESS_NO_PORT,
                libc::IP_TOS,
                libc::IP_TTL,
                libc::IP_MTU_DISCOVER,
                libc::IP_RECVERR,
                libc::IP_PKTINFO,
                libc::IP_RECVTOS,
                libc::IP_RECVTTL,
                libc::IP_RECVORIGDSTADDR,
            ]
            .map(|n| (libc::IPPROTO_IP, n)),
        );
        if ty != libc::SOCK_STREAM {
            o.extend([libc::IP_MULTICAST_TTL, libc::IP_MULTICAST_LOOP, libc::IP_MULTICAST_ALL].map(|n| (libc::IPPROTO_IP, n)));
        }
    }
    if ty == libc::SOCK_RAW && family == libc::AF_INET {
        o.push((libc::IPPROTO_IP, libc::IP_HDRINCL));
        if protocol == libc::IPPROTO_ICMP {
            o.push((SOL_RAW, ICMP_FILTER));
        }
    }
    if ty == libc::SOCK_RAW && family == libc::AF_INET6 {
        o.extend([(libc::IPPROTO_IPV6, IPV6_CHECKSUM), (libc::IPPROTO_IPV6, IPV6_HDRINCL)]);
    }
    if family == libc::AF_PACKET {
        // The version and the reserved room first: the rings (byte options, set after the
        // int ones) are sized by them.
        o.extend([10, 12, 8, 9, 14, 15, 17, 19, 20, 23, PACKET_FANOUT].map(|n| (libc::SOL_PACKET, n)));
    }
    if family == libc::AF_NETLINK {
        // NETLINK_PKTINFO, _BROADCAST_ERROR, _NO_ENOBUFS, _LISTEN_ALL_NSID, _CAP_ACK,
        // _EXT_ACK, _GET_STRICT_CHK.
        o.extend([3, 4, 5, 8, 10, 11, 12].map(|n| (SOL_NETLINK, n)));
    }
    if family == libc::AF_INET6 {
        o.extend(
            [
                libc::IPV6_V6ONLY,
                libc::IPV6_FREEBIND,
                libc::IPV6_TRANSPARENT,
                libc::IPV6_TCLASS,
                libc::IPV6_UNICAST_HOPS,
                libc::IPV6_MTU_DISCOVER,
                libc::IPV6_RECVERR,
                libc::IPV6_RECVPKTINFO,
                libc::IPV6_RECVTCLASS,
                libc::IPV6_DONTFRAG,
            ]
            .map(|n| (libc::IPPROTO_IPV6, n)),
        );
        if ty != libc::SOCK_STREAM {
            o.extend([libc::IPV6_MULTICAST_HOPS, libc::IPV6_MULTICAST_LOOP].map(|n| (libc::IPPROTO_IPV6, n)));
        }
    }
    // After IP_TOS, which sets the priority too.
    o.extend(
        [
            libc::SO_REUSEADDR,
            libc::SO_REUSEPORT,
            libc::SO_KEEPALIVE,
            libc::SO_BROADCAST,
            libc::SO_OOBINLINE,
            libc::SO_PASSCRED,
            libc::SO_PASSSEC,
            libc::SO_PRIORITY,
            libc::SO_RCVLOWAT,
            libc::SO_MARK,
            libc::SO_DONTROUTE,
            libc::SO_NO_CHECK,
            SO_TIMESTAMP_OLD,
            SO_TIMESTAMPNS_OLD,
            SO_TIMESTAMPING_OLD,
            libc::SO_RXQ_OVFL,
            libc::SO_SELECT_ERR_QUEUE,
            libc::SO_BUSY_POLL,
            SO_ZEROCOPY,
            libc::SO_SNDBUF,
            libc::SO_RCVBUF,
            SO_BUF_LOCK,
        ]
        .map(|n| (libc::SOL_SOCKET, n)),
    );
    if family == libc::AF_UNIX {
        o.push((libc::SOL_SOCKET, libc::SO_PEEK_OFF));
    }
    if ty == libc::SOCK_STREAM && protocol == libc::IPPROTO_TCP {
        o.extend(
            [
                libc::TCP_NODELAY,
                libc::TCP_CORK,
                libc::TCP_DEFER_ACCEPT,
                libc::TCP_KEEPIDLE,
                libc::TCP_KEEPINTVL,
                libc::TCP_KEEPCNT,
                libc::TCP_SYNCNT,
                libc::TCP_LINGER2,
                libc::TCP_USER_TIMEOUT,
                libc::TCP_THIN_LINEAR_TIMEOUTS,
                libc::TCP_NOTSENT_LOWAT,
                libc::TCP_FASTOPEN,
                libc::TCP_FASTOPEN_CONNECT,
            ]
            .map(|n| (libc::IPPROTO_TCP, n)),
        );
    }
    if ty == libc::SOCK_DGRAM && matches!(protocol, libc::IPPROTO_UDP | libc::IPPROTO_UDPLITE) {
        o.push((libc::IPPROTO_UDP, libc::UDP_CORK));
    }
    if protocol == libc::IPPROTO_UDPLITE {
        o.extend([UDPLITE_SEND_CSCOV, UDPLITE_RECV_CSCOV].map(|n| (libc::IPPROTO_UDPLITE, n)));
    }
    o
}

/// The options that are not an `int`, saved as bytes: (level, name, longest value).
fn byte_options(ty: i32, protocol: i32) -> Vec<(i32, i32, usize)> {
    let mut o = vec![
        (libc::SOL_SOCKET, libc::SO_LINGER, std::mem::size_of::<libc::linger>()),
        (libc::SOL_SOCKET, libc::SO_BINDTODEVICE, libc::IFNAMSIZ),
        (libc::SOL_SOCKET, libc::SO_RCVTIMEO, std::mem::size_of::<libc::timeval>()),
        (libc::SOL_SOCKET, libc::SO_SNDTIMEO, std::mem::size_of::<libc::timeval>()),
    ];
    if ty == libc::SOCK_STREAM && protocol == libc::IPPROTO_TCP {
        o.push((libc::IPPROTO_TCP, libc::TCP_CONGESTION, 16));
    }
    if ty == libc::SOCK_RAW && protocol == libc::IPPROTO_ICMPV6 {
        o.push((SOL_ICMPV6, ICMPV6_FILTER, 32));
    }
    o
}

/// A socket's options: `(level, name, value)` of those that are an `int`, and the others.
pub(super) type Saved = (Vec<(i32, i32, i32)>, Vec<ByteOption>);

/// The options of socket `copy` (of this family, type and protocol), or why they cannot be
/// saved.
pub(super) fn read(copy: i32, family: i32, ty: i32, protocol: i32) -> Result<Saved, String> {
    use crest_ptrace::sys::{sock_opt_bytes, sock_opt_int};
    if ty == libc::SOCK_DGRAM
        && matches!(protocol, libc::IPPROTO_UDP | libc::IPPROTO_UDPLITE)
        && sock_opt_int(copy, libc::IPPROTO_UDP, libc::UDP_CORK).is_ok_and(|v| v != 0)
        && crest_ptrace::net::ioctl_int(copy, crest_ptrace::net::SIOCOUTQ).is_ok_and(|n| n > 0)
    {
        return Err("it is corked (UDP_CORK) with data written and not sent yet, and that data is not saved".to_string());
    }
    let lock = sock_opt_int(copy, libc::SOL_SOCKET, SO_BUF_LOCK).unwrap_or(0);
    let ints = int_options(family, ty, protocol)
        .into_iter()
        .filter(|&(level, name)| match (level, name) {
            // Sizes the kernel chose are its to choose again.
            (libc::SOL_SOCKET, libc::SO_SNDBUF) => lock & SOCK_SNDBUF_LOCK != 0,
            (libc::SOL_SOCKET, libc::SO_RCVBUF) => lock & SOCK_RCVBUF_LOCK != 0,
            _ => true,
        })
        .filter_map(|(level, name)| Some((level, name, sock_opt_int(copy, level, name).ok()?)))
        .chain(sock_opt_int(copy, libc::SOL_SOCKET, SO_LOCK_FILTER).ok().filter(|&v| v != 0).map(|v| (libc::SOL_SOCKET, SO_LOCK_FILTER, v)))
        .collect();
    // What a new socket of the kind has is not saved: an image of sockets left at their
    // defaults needs no reader of format 4.1.
    let fresh = crest_ptrace::sys::socket(family, ty, protocol).ok();
    let mut bytes: Vec<ByteOption> = byte_options(ty, protocol)
        .into_iter()
        .filter_map(|(level, name, len)| {
            let v = sock_opt_bytes(copy, level, name, len).ok()?;
            let default = match &fresh {
                Some(f) => sock_opt_bytes(f.as_raw_fd(), level, name, len).ok(),
                None => None,
            };
            let unset = v.iter().all(|&b| b == 0) || default.as_ref() == Some(&v);
            (!unset).then_some((level, name, v))
        })
        .collect();
    match crest_ptrace::net::socket_filter(copy) {
        Ok(f) if f.is_empty() => {}
        Ok(f) => bytes.push((libc::SOL_SOCKET, libc::SO_ATTACH_FILTER, f)),
        Err(e) if e.raw_os_error() == Some(libc::EACCES) => return Err("an eBPF program is attached to it as its filter (SO_ATTACH_BPF), and the kernel cannot give an eBPF program back".to_string()),
        Err(e) => return Err(format!("reading its filter (SO_GET_FILTER): {e}")),
    }
    Ok((ints, bytes))
}

/// An option the restore could not set: which, and why.
pub(super) type Failed = (String, std::io::Error);

/// Sets the options of a new socket `fd`, before it is bound: each one not already at its
/// saved value; the filter and its lock are left to [`finish`].
pub(super) fn apply(fd: i32, ints: &[(i32, i32, i32)], bytes: &[ByteOption]) -> Result<(), Failed> {
    use crest_ptrace::sys::{set_sock_opt_int, sock_opt_int};
    for &(level, name, value) in ints {
        if (level, name) == (libc::SOL_SOCKET, SO_LOCK_FILTER) || after_bind(level, name) || sock_opt_int(fd, level, name).is_ok_and(|v| v == value) {
            continue;
        }
        let step = || format!("setting option {}", int_name(level, name, value));
        match (level, name) {
            (libc::SOL_SOCKET, libc::SO_SNDBUF | libc::SO_RCVBUF) => {
                // The kernel doubles what it is given and reports the double.
                let force = if name == libc::SO_SNDBUF { libc::SO_SNDBUFFORCE } else { libc::SO_RCVBUFFORCE };
                if set_sock_opt_int(fd, level, force, value / 2).is_err() {
                    set_sock_opt_int(fd, level, name, value / 2).map_err(|e| (step(), e))?;
                }
            }
            _ => set_sock_opt_int(fd, level, name, value).map_err(|e| (step(), e))?,
        }
    }
    for (level, name, value) in bytes {
        if (*level, *name) == (libc::SOL_SOCKET, libc::SO_ATTACH_FILTER) || crest_ptrace::sys::sock_opt_bytes(fd, *level, *name, value.len()).is_ok_and(|v| v == *value) {
            continue;
        }
        crest_ptrace::net::set_sock_opt_bytes(fd, *level, *name, value).map_err(|e| (format!("setting option {}", byte_name(*level, *name, value)), e))?;
    }
    Ok(())
}

/// Joins the groups a socket joins once bound (see [`after_bind`]), attaches the saved filter
/// to socket `fd` and locks it if it was: the last step of its restore, after its queued data
/// is back (the filter would judge that data too).
pub(super) fn finish(fd: i32, ints: &[(i32, i32, i32)], bytes: &[ByteOption]) -> Result<(), Failed> {
    for &(level, name, value) in ints.iter().filter(|o| after_bind(o.0, o.1)) {
        let what = if level == libc::SOL_PACKET { format!("joining its fanout group again (PACKET_FANOUT {value:#x})") } else { format!("joining its netlink multicast group {value} again") };
        crest_ptrace::sys::set_sock_opt_int(fd, level, name, value).map_err(|e| (what, e))?;
    }
    if let Some((_, _, prog)) = bytes.iter().find(|o| (o.0, o.1) == (libc::SOL_SOCKET, libc::SO_ATTACH_FILTER)) {
        crest_ptrace::net::attach_socket_filter(fd, prog).map_err(|e| (format!("attaching its filter ({} BPF instructions)", prog.len() / 8), e))?;
    }
    if let Some(&(level, name, value)) = ints.iter().find(|o| (o.0, o.1) == (libc::SOL_SOCKET, SO_LOCK_FILTER)) {
        crest_ptrace::sys::set_sock_opt_int(fd, level, name, value).map_err(|e| ("locking its filter (SO_LOCK_FILTER)".to_string(), e))?;
    }
    Ok(())
}

/// An `int` option in words, for messages.
fn int_name(level: i32, name: i32, value: i32) -> String {
    let n = match (level, name) {
        (libc::SOL_SOCKET, libc::SO_MARK) => "SO_MARK (needs CAP_NET_ADMIN)",
        (libc::SOL_SOCKET, libc::SO_PRIORITY) => "SO_PRIORITY (above 6 needs CAP_NET_ADMIN)",
        (libc::SOL_SOCKET, libc::SO_SNDBUF) => "SO_SNDBUF",
        (libc::SOL_SOCKET, libc::SO_RCVBUF) => "SO_RCVBUF",
        (libc::SOL_SOCKET, SO_BUF_LOCK) => "SO_BUF_LOCK",
        (libc::IPPROTO_IP, libc::IP_TRANSPARENT) | (libc::IPPROTO_IPV6, libc::IPV6_TRANSPARENT) => "IP_TRANSPARENT (needs CAP_NET_ADMIN)",
        (libc::IPPROTO_TCP, libc::TCP_CORK) => "TCP_CORK",
        (libc::IPPROTO_TCP, libc::TCP_NODELAY) => "TCP_NODELAY",
        _ => return format!("{level}:{name} to {value}"),
    };
    format!("{n} to {value}")
}

/// An option kept as bytes in words, for messages.
fn byte_name(level: i32, name: i32, value: &[u8]) -> String {
    let text = || String::from_utf8_lossy(value.split(|&b| b == 0).next().unwrap_or(value)).into_owned();
    match (level, name) {
        (libc::SOL_SOCKET, libc::SO_LINGER) => "SO_LINGER".to_string(),
        (libc::SOL_SOCKET, libc::SO_BINDTODEVICE) => format!("SO_BINDTODEVICE to {} (the interface must exist; setting it needs CAP_NET_RAW)", text()),
        (libc::SOL_SOCKET, libc::SO_RCVTIMEO) => "SO_RCVTIMEO".to_string(),
        (libc::SOL_SOCKET, libc::SO_SNDTIMEO) => "SO_SNDTIMEO".to_string(),
        (libc::IPPROTO_TCP, libc::TCP_CONGESTION) => format!("TCP_CONGESTION to {}", text()),
        _ => format!("{level}:{name}"),
    }
}

/// Binds internet or unix socket `fd` to `addr` again. An internet address that is no longer
/// one of this host's (or never was: the program had set `IP_FREEBIND` to bind it, then
/// cleared it) is bound with `IP_FREEBIND` set for the time of the call.
pub(super) fn bind(fd: i32, addr: &[u8]) -> std::io::Result<()> {
    use crest_ptrace::sys::{bind_raw, set_sock_opt_int, sock_opt_int};
    match bind_raw(fd, addr) {
        Err(e) if e.raw_os_error() == Some(libc::EADDRNOTAVAIL) && sock_opt_int(fd, libc::IPPROTO_IP, libc::IP_FREEBIND).is_ok_and(|v| v == 0) => {
            set_sock_opt_int(fd, libc::IPPROTO_IP, libc::IP_FREEBIND, 1)?;
            let r = bind_raw(fd, addr);
            set_sock_opt_int(fd, libc::IPPROTO_IP, libc::IP_FREEBIND, 0)?;
            r
        }
        r => r,
    }
}
