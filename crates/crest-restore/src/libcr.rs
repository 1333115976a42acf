//! Restored processes that use libcr wait in their checkpoint callbacks for the outcome:
//! [`tell_restarted`] tells each one's libcr thread that it was restarted, and serves who asked
//! for the restart (`cr_get_restart_info()->requester`) and the image's name
//! (`cr_get_restart_info()->src`) on an abstract socket for a while. The protocol is
//! `crest_ptrace::libcr`; docs/architecture.md, "libcr", tells it whole.
use std::io::Write;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixListener};
use std::time::{Duration, Instant};

use crest_ptrace::libcr as proto;

/// Tells the processes `pids` that use libcr that they were restarted from `src` at the request
/// of `requester`.
pub fn tell_restarted(pids: &[i32], requester: i32, src: &str) {
    let members: Vec<(i32, i32)> = pids.iter().filter_map(|&p| Some((p, proto::libcr_thread(p)?))).collect();
    if members.is_empty() {
        return;
    }
    let me = std::process::id() as i32;
    // The name first, so that it is there when a restored process asks for it.
    if let Ok(listener) = SocketAddr::from_abstract_name(proto::restart_socket_name(me)).and_then(|a| UnixListener::bind_addr(&a)) {
        let line = proto::RestartInfo { requester, src: src.to_string() }.line();
        if listener.set_nonblocking(true).is_ok() {
            std::thread::spawn(move || {
                let until = Instant::now() + proto::RESTART_SOCKET_TIME;
                while Instant::now() < until {
                    match listener.accept() {
                        Ok((mut s, _)) => {
                            let _ = s.write_all(line.as_bytes());
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(10)),
                    }
                }
            });
        }
    }
    for (pid, tid) in members {
        let _ = proto::send(pid, tid, proto::Msg::Restarted, 0, 0);
    }
}
