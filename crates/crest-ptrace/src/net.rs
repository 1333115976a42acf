//! Socket calls the TCP and UDP kinds need beyond [`crate::sys`]: options set from bytes
//! (`TCP_REPAIR_OPTIONS`, `TCP_REPAIR_WINDOW`), queue sizes, peeks, `connect` and raw packets.
//! Thin wrappers, each a single system call.
#![allow(unsafe_code)]

/// `SIOCINQ`: bytes in the receive queue.
pub const SIOCINQ: libc::c_ulong = libc::FIONREAD;
/// `SIOCOUTQ`: bytes in the send queue, sent or not.
pub const SIOCOUTQ: libc::c_ulong = libc::TIOCOUTQ;
/// `SIOCOUTQNSD`: bytes in the send queue not sent yet.
pub const SIOCOUTQNSD: libc::c_ulong = 0x894B;

/// `setsockopt(fd, level, opt)` with `data` as the option's value.
pub fn set_sock_opt_bytes(fd: i32, level: i32, opt: i32, data: &[u8]) -> std::io::Result<()> {
    // SAFETY: data is a live slice and its length is passed; the kernel only reads it.
    if unsafe { libc::setsockopt(fd, level, opt, data.as_ptr().cast(), data.len() as libc::socklen_t) } == -1 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// `ioctl(fd, req, &int)` for the requests that write one `int` (`SIOCINQ`, `SIOCOUTQ`,
/// `SIOCOUTQNSD`).
pub fn ioctl_int(fd: i32, req: libc::c_ulong) -> std::io::Result<i32> {
    let mut n: libc::c_int = 0;
    // SAFETY: the requests this is used for write one int into n.
    if unsafe { libc::ioctl(fd, req, &mut n) } == -1 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(n)
}

/// `recv(fd, buf, MSG_PEEK | MSG_DONTWAIT)`: copies what is queued without taking it.
pub fn peek(fd: i32, buf: &mut [u8]) -> std::io::Result<usize> {
    // SAFETY: buf is a live, writable slice of buf.len() bytes.
    let n = unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), libc::MSG_PEEK | libc::MSG_DONTWAIT) };
    if n == -1 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(n as usize)
}

/// A `sockaddr_storage` holding the raw `sockaddr` bytes `addr`.
fn storage(addr: &[u8]) -> std::io::Result<libc::sockaddr_storage> {
    if addr.len() > std::mem::size_of::<libc::sockaddr_storage>() || addr.len() < 2 {
        return Err(std::io::Error::from_raw_os_error(libc::EINVAL));
    }
    // SAFETY: sockaddr_storage is plain data; all zeroes is a valid value.
    let mut ss: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    // SAFETY: addr.len() fits in ss, checked above; the regions do not overlap.
    unsafe { std::ptr::copy_nonoverlapping(addr.as_ptr(), (&mut ss as *mut libc::sockaddr_storage).cast::<u8>(), addr.len()) };
    Ok(ss)
}

/// `connect(fd, addr)`, with `addr` the raw `sockaddr` bytes (as [`crate::sys::sock_addr`]
/// returns them).
pub fn connect_raw(fd: i32, addr: &[u8]) -> std::io::Result<()> {
    let ss = storage(addr)?;
    // SAFETY: ss is live, aligned for any sockaddr, and holds addr.len() valid bytes.
    if unsafe { libc::connect(fd, (&ss as *const libc::sockaddr_storage).cast(), addr.len() as libc::socklen_t) } == -1 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Sends `packet`, a whole IP packet with its header, to `to` (raw `sockaddr` bytes) through a
/// raw socket of `to`'s family (`IPPROTO_RAW`: the header is the caller's).
pub fn send_ip_packet(packet: &[u8], to: &[u8]) -> std::io::Result<()> {
    let family = i32::from(u16::from_ne_bytes([to.first().copied().unwrap_or(0), to.get(1).copied().unwrap_or(0)]));
    // SAFETY: no pointers.
    let fd = unsafe { libc::socket(family, libc::SOCK_RAW | libc::SOCK_CLOEXEC, libc::IPPROTO_RAW) };
    if fd == -1 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `fd` was just returned by socket() and is owned by nothing else.
    let s = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    let ss = storage(to)?;
    let mut to_len = to.len();
    if family == libc::AF_INET6 {
        // The port of a raw IPv6 destination must be 0 (it would be taken for a protocol).
        to_len = std::mem::size_of::<libc::sockaddr_in6>().min(to.len());
    }
    let mut ss = ss;
    if family == libc::AF_INET6 {
        // SAFETY: ss holds a sockaddr_in6 (family checked), within its size.
        unsafe { (*(&mut ss as *mut libc::sockaddr_storage).cast::<libc::sockaddr_in6>()).sin6_port = 0 };
    }
    // SAFETY: packet is a live slice of its length; ss holds to_len valid bytes.
    let n = unsafe { libc::sendto(std::os::fd::AsRawFd::as_raw_fd(&s), packet.as_ptr().cast(), packet.len(), 0, (&ss as *const libc::sockaddr_storage).cast(), to_len as libc::socklen_t) };
    if n == -1 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// The classic BPF program attached to socket `fd` as its filter (`SO_GET_FILTER`), as its
/// `struct sock_filter` instructions (8 bytes each); empty when none is. An eBPF program
/// (`SO_ATTACH_BPF`) cannot be read back: the kernel answers `EACCES`.
pub fn socket_filter(fd: i32) -> std::io::Result<Vec<u8>> {
    // For SO_GET_FILTER the length is counted in instructions: 0 asks for the count.
    let mut count: libc::socklen_t = 0;
    // SAFETY: a null buffer with a length of 0: the kernel only writes count.
    if unsafe { libc::getsockopt(fd, libc::SOL_SOCKET, libc::SO_GET_FILTER, std::ptr::null_mut(), &mut count) } == -1 {
        return Err(std::io::Error::last_os_error());
    }
    let mut insns = vec![0u8; count as usize * std::mem::size_of::<libc::sock_filter>()];
    if count == 0 {
        return Ok(insns);
    }
    let mut got = count;
    // SAFETY: insns holds count instructions and got says so; the kernel writes at most that.
    if unsafe { libc::getsockopt(fd, libc::SOL_SOCKET, libc::SO_GET_FILTER, insns.as_mut_ptr().cast(), &mut got) } == -1 {
        return Err(std::io::Error::last_os_error());
    }
    insns.truncate(got as usize * std::mem::size_of::<libc::sock_filter>());
    Ok(insns)
}

/// Attaches the classic BPF program `insns` (`struct sock_filter` instructions, as
/// [`socket_filter`] reads them) to socket `fd` as its filter (`SO_ATTACH_FILTER`).
pub fn attach_socket_filter(fd: i32, insns: &[u8]) -> std::io::Result<()> {
    let size = std::mem::size_of::<libc::sock_filter>();
    if insns.is_empty() || !insns.len().is_multiple_of(size) || insns.len() / size > usize::from(u16::MAX) {
        return Err(std::io::Error::from_raw_os_error(libc::EINVAL));
    }
    // The kernel reads the program through a pointer: copy it into aligned instructions.
    let prog: Vec<libc::sock_filter> =
        insns.chunks_exact(size).map(|c| libc::sock_filter { code: u16::from_ne_bytes([c[0], c[1]]), jt: c[2], jf: c[3], k: u32::from_ne_bytes([c[4], c[5], c[6], c[7]]) }).collect();
    let fprog = libc::sock_fprog { len: prog.len() as u16, filter: prog.as_ptr().cast_mut() };
    // SAFETY: fprog points at prog, which lives until the call returns and holds fprog.len
    // instructions; the kernel copies them and only reads.
    if unsafe { libc::setsockopt(fd, libc::SOL_SOCKET, libc::SO_ATTACH_FILTER, (&fprog as *const libc::sock_fprog).cast(), std::mem::size_of::<libc::sock_fprog>() as libc::socklen_t) } == -1 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}
