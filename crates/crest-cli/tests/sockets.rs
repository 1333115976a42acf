//! Connected sockets: TCP connections restored in repair mode (both ends in the image, or a
//! peer that is not checkpointed and must not notice), IPv6, half-closed connections and
//! connected UDP sockets; what waits in unix socket queues (datagrams, descriptors in flight,
//! connections not accepted yet); and the refusals for what is not saved.
mod common;

use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::time::Duration;

use common::*;

/// Connections between sockets of one process, with data queued both ways, IPv6, a
/// half-closed connection and connected UDP sockets (tests/c/tcpconns.c).
#[test]
fn tcp_connections_inside_the_image() {
    run_c_as_root("restoring TCP connections needs CAP_NET_ADMIN (TCP_REPAIR)", "tcpconns", &[]);
}

/// A connection whose receiving end took a window update from a segment beyond what it had
/// received, then closed its window for lack of receive memory (tests/c/tcpwindow.c): the
/// saved `snd_wl1` lies beyond the receive window, which the kernel refuses to set again as
/// it is. It comes back, and the data goes on both ways.
#[test]
fn tcp_window_updated_out_of_order_then_closed() {
    run_c_as_root("restoring TCP connections needs CAP_NET_ADMIN (TCP_REPAIR), the test a raw socket", "tcpwindow", &[]);
}

/// A unix datagram socket connected to a socket outside the checkpoint (this test's) is
/// refused, naming `--ext-unix-sk`, and the process is left as it was; with the option it is
/// saved and connected again to the same address at restart, and what it sends then arrives
/// (tests/c/unixext.c).
#[test]
fn unix_datagram_socket_connected_outside_with_ext_unix_sk() {
    let d = Dir::new("unixext");
    let prog = d.0.join("unixext");
    gcc("tests/c/unixext.c", &prog, &[]);
    let path = d.0.join("outside.sock");
    let outside = std::os::unix::net::UnixDatagram::bind(&path).expect("binding the socket outside");
    outside.set_read_timeout(Some(Duration::from_secs(30))).expect("timeout");
    let arg = path.to_str().expect("utf8");

    // Refused without the option, the process running on.
    let out = d.0.join("refused.txt");
    let mut procs = Procs::default();
    let pid = procs.add(Command::new(&prog).arg(arg).stdout(std::fs::File::create(&out).expect("out")).stdin(Stdio::null()).spawn().expect("unixext"));
    wait_for(&out, "ready", Duration::from_secs(30));
    let mut buf = [0u8; 16];
    let n = outside.recv(&mut buf).expect("the first datagram");
    assert_eq!(&buf[..n], b"before");
    let img = d.0.join("refused.img");
    let ck = Command::new(bin("cr_checkpoint")).args(["--kill", "-f"]).arg(&img).arg(pid.to_string()).output().expect("cr_checkpoint runs");
    let err = String::from_utf8_lossy(&ck.stderr);
    assert!(!ck.status.success() && err.contains("--ext-unix-sk") && err.contains(&format!("PID {pid}")), "refused, naming the process and the option: {err}");
    assert!(!img.exists(), "no image is written");
    assert_untouched(pid, "after a refused checkpoint");
    let _ = Command::new("kill").arg("-USR2").arg(pid.to_string()).status();
    let st = wait_child(&mut procs.take(pid), Duration::from_secs(30));
    assert!(st.success() && std::fs::read_to_string(&out).unwrap_or_default().contains("PASS"), "the process checks itself after the refusal: {st:?}");
    let n = outside.recv(&mut buf).expect("its datagram after the refusal");
    assert_eq!(&buf[..n], b"after");

    // Saved with the option, connected again at restart.
    let (st, text) = round_trip_verify_with(&d, &prog, &[arg], "ready", Duration::from_secs(60), &["--ext-unix-sk"]);
    assert!(st.success() && text.contains("PASS"), "unixext after restart: {st:?}\n{}", text.lines().rev().take(5).collect::<Vec<_>>().join("\n"));
    let n = outside.recv(&mut buf).expect("the datagram sent before the checkpoint");
    assert_eq!(&buf[..n], b"before");
    let n = outside.recv(&mut buf).expect("the datagram sent after the restart");
    assert_eq!(&buf[..n], b"after", "what the restored socket sends reaches the socket outside");
}

/// Starts `tcppeer server` (IPv6 with `six`) and returns it with its port.
fn start_server(d: &Dir, prog: &Path, six: bool) -> (std::process::Child, String) {
    let port_file = d.0.join("port");
    let log = std::fs::File::create(d.0.join("server.txt")).expect("server log");
    let mut args = vec!["server".to_string(), port_file.to_str().expect("utf8").to_string()];
    if six {
        args.push("6".into());
    }
    let server = Command::new(prog).args(&args).stdin(Stdio::null()).stdout(log).spawn().expect("server");
    let port = wait_for(&port_file, "\n", Duration::from_secs(10)).trim().to_string();
    (server, port)
}

/// In a scratch directory of its own (`dir`), builds `tests/c/NAME.c` and starts `NAME server`
/// (on IPv6 with `six`), which is not checkpointed; its client, `NAME client PORT [DIR/FILE]
/// [6]`, is checkpointed with --kill and restarted, and must say PASS when told to check
/// itself. Returns the server's exit status and its log, or `None` (said with [`skip`]) where
/// TCP connections cannot be restored.
fn client_across_restart(dir: &str, name: &str, six: bool, file: Option<&str>) -> Option<(ExitStatus, String)> {
    if !is_root() {
        skip("restoring TCP connections needs CAP_NET_ADMIN (TCP_REPAIR)");
        return None;
    }
    let d = Dir::new(dir);
    let prog = d.0.join(name);
    gcc(&format!("tests/c/{name}.c"), &prog, &[]);
    let (mut server, port) = start_server(&d, &prog, six);
    let _reaper = Reaper(vec![server.id() as i32]);
    let file = file.map(|f| d.0.join(f));
    let mut args = vec!["client", port.as_str()];
    if let Some(f) = &file {
        args.push(f.to_str().expect("utf8"));
    }
    if six {
        args.push("6");
    }
    let (st, out) = round_trip_verify(&d, &prog, &args, "ready", Duration::from_secs(60));
    assert!(st.success() && out.contains("PASS"), "the client after restart: {st:?}\n{}", out.lines().rev().take(5).collect::<Vec<_>>().join("\n"));
    let sst = wait_child(&mut server, Duration::from_secs(20));
    let log = std::fs::read_to_string(d.0.join("server.txt")).unwrap_or_default();
    Some((sst, log))
}

/// The client of a connection to a server that is not checkpointed is checkpointed with
/// --kill and restarted: it reads what the server had sent, goes on with the same connection,
/// and the server sees neither a reset nor an end of file.
fn peer_outside(six: bool) {
    let Some((sst, log)) = client_across_restart(if six { "tcppeer6" } else { "tcppeer" }, "tcppeer", six, None) else { return };
    assert!(sst.success(), "the server noticed: {sst:?}: {log}");
    assert!(log.contains("26 lines, then quit"), "the server's view: {log}");
}

#[test]
fn tcp_peer_outside_does_not_notice() {
    peer_outside(false);
}

#[test]
fn tcp6_peer_outside_does_not_notice() {
    peer_outside(true);
}

/// A checkpoint with --run (the default) in the middle of a conversation: the client goes on,
/// and the server sees no error.
#[test]
fn tcp_conversation_goes_on_during_a_checkpoint() {
    if !is_root() {
        return skip("saving TCP connections needs CAP_NET_ADMIN (TCP_REPAIR)");
    }
    let d = Dir::new("tcprun");
    let prog = d.0.join("tcppeer");
    gcc("tests/c/tcppeer.c", &prog, &[]);
    let (mut server, port) = start_server(&d, &prog, false);
    let out = d.0.join("out.txt");
    let f = std::fs::File::create(&out).expect("output file");
    let mut client = Command::new(&prog).args(["client", &port, "run"]).stdin(Stdio::null()).stdout(f).spawn().expect("client");
    let _reaper = Reaper(vec![server.id() as i32, client.id() as i32]);
    wait_for(&out, "tick 3\n", Duration::from_secs(20));
    for round in 0..2 {
        let img = d.0.join(format!("img{round}"));
        let ck = Command::new(bin("cr_checkpoint")).arg("-f").arg(&img).arg(client.id().to_string()).output().expect("cr_checkpoint runs");
        assert!(ck.status.success(), "cr_checkpoint: {}", String::from_utf8_lossy(&ck.stderr));
        let ticks = std::fs::read_to_string(&out).unwrap_or_default().lines().filter(|l| l.starts_with("tick")).count();
        wait_for(&out, &format!("tick {}\n", ticks + 2), Duration::from_secs(20));
    }
    let _ = Command::new("kill").arg("-USR2").arg(client.id().to_string()).status();
    let st = wait_child(&mut client, Duration::from_secs(20));
    let text = std::fs::read_to_string(&out).unwrap_or_default();
    assert!(st.success() && text.contains("PASS"), "the client: {st:?}\n{}", text.lines().rev().take(5).collect::<Vec<_>>().join("\n"));
    let sst = wait_child(&mut server, Duration::from_secs(20));
    assert!(sst.success(), "the server noticed: {}", std::fs::read_to_string(d.0.join("server.txt")).unwrap_or_default());
}

/// A connection its peer (not checkpointed) had shut down for writing, with bytes the peer had
/// not read yet queued both in its receive queue and in the client's send queue: the client
/// restored in CLOSE_WAIT reads end of file again and can still write; the server gets every
/// byte in order and sees no reset.
fn peer_shut_down_writing(six: bool) {
    let Some((sst, log)) = client_across_restart(if six { "tcphalf6" } else { "tcphalf4v6" }, "tcphalf", six, Some("port.go")) else { return };
    assert!(sst.success() && log.contains("PASS"), "the server: {sst:?}: {log}");
}

/// Over IPv4 to an IPv6 socket (addresses ::ffff:127.0.0.1): the peer's FIN is sent to it again
/// as an IPv4 packet.
#[test]
fn tcp_close_wait_ipv4_on_ipv6_socket() {
    peer_shut_down_writing(false);
}

#[test]
fn tcp6_close_wait() {
    peer_shut_down_writing(true);
}

/// Datagrams queued on a unix datagram server (senders unnamed, named, abstract, itself) and on
/// a pair whose sender was closed; descriptors in flight on datagram, stream and seqpacket pairs
/// (pipe ends, a regular file at its offset, an eventfd, a socket, one also held by the
/// process); connections waiting on unix listeners, one of them from a client since closed; the
/// listener's file mode (tests/c/unixqueues.c).
#[test]
fn unix_socket_queues_and_waiting_connections() {
    let d = Dir::new("unixqueues");
    let prog = d.0.join("unixqueues");
    gcc("tests/c/unixqueues.c", &prog, &[]);
    let dir = d.0.to_str().expect("utf8").to_string();
    let (st, out) = round_trip_verify(&d, &prog, &[&dir], "ready", Duration::from_secs(60));
    assert!(st.success() && out.contains("PASS"), "unixqueues after restart: {st:?}\n{}", out.lines().rev().take(5).collect::<Vec<_>>().join("\n"));
}

/// An epoll set in flight that watches a file other than the sockets of the pair carrying it
/// (an eventfd) is tied to the descriptors of a process: the checkpoint is refused naming it,
/// no image is written, and the process runs on.
#[test]
fn epoll_set_in_flight_is_refused_by_name() {
    refused_queue("epoll", &["in flight", "epoll", "other than the sockets of the pair"]);
}

/// An epoll set in flight that watches the receiving end of the pair carrying it (CRIU's
/// scm05) comes back with it: received after restart, it reports the end readable with its
/// data, and the end is removed from it by its number (tests/c/unixqueues.c `epollpair`).
#[test]
fn epoll_set_in_flight_watching_its_pair_comes_back() {
    run_c_in("unixqueues-epollpair", "unixqueues", &["DIR", "epollpair"]);
}

/// An internet socket in flight (its dump may depend on the processes holding it) is refused.
#[test]
fn internet_socket_in_flight_is_refused() {
    refused_queue("inet", &["in flight", "socket other than a unix socket"]);
}

/// A connection waiting to be accepted whose client was closed may hold what the client sent,
/// which cannot be read without accepting it: refused.
#[test]
fn waiting_connection_of_a_closed_client_is_refused() {
    refused_queue("closed", &["waiting to be accepted", "client since closed"]);
}

/// Likewise a connection waiting to be accepted on which its client (in the image) sent data.
#[test]
fn waiting_connection_with_data_sent_is_refused() {
    refused_queue("sent", &["sent data on its connection", "waits to be accepted"]);
}

/// Starts `unixqueues DIR MODE`, checks that a checkpoint is refused with a message naming the
/// process and saying each of `expect`, that no image is written and the process runs on.
fn refused_queue(mode: &str, expect: &[&str]) {
    let d = Dir::new(&format!("unixqueues-{mode}"));
    let p = start_c(&d, "unixqueues", &["DIR", mode]);
    wait_for(&p.out, "ready", Duration::from_secs(30));
    assert_refused(&p, expect, &format!("{mode}: the message names the process and says {expect:?}"));
}

/// `cr_checkpoint --kill` of `p` is refused with EOPNOTSUPP (exit 95), its message naming the
/// process and holding each of `expect` (`says`: what it should say, for a failure); no image
/// is written and the process runs on.
fn assert_refused(p: &CProgram, expect: &[&str], says: &str) {
    let ck = Command::new(bin("cr_checkpoint")).args(["--kill", "-f"]).arg(&p.img).arg(p.pid.to_string()).output().expect("cr_checkpoint runs");
    let err = String::from_utf8_lossy(&ck.stderr);
    assert_eq!(ck.status.code(), Some(95), "exit status (EOPNOTSUPP); stderr: {err}");
    assert!(err.contains(&format!("PID {}", p.pid)) && expect.iter().all(|e| err.contains(e)), "{says}: {err}");
    assert!(!p.img.exists(), "no image is written");
    assert_untouched(p.pid, "after a refused checkpoint");
}

/// A checkpoint of `p` with `--run` is taken, and then, told with SIGUSR2, the process checks
/// itself and says PASS (`what`: the process, for a failure).
fn run_checkpoint_then_passes(mut p: CProgram, what: &str) {
    let ck = Command::new(bin("cr_checkpoint")).args(["--run", "-f"]).arg(&p.img).arg(p.pid.to_string()).output().expect("cr_checkpoint runs");
    assert!(ck.status.success(), "checkpoint: {}", String::from_utf8_lossy(&ck.stderr));
    let _ = Command::new("kill").arg("-USR2").arg(p.pid.to_string()).status();
    // Waited for in place: killed with the others should it not end.
    let i = p.procs.children.iter().position(|c| c.id() as i32 == p.pid).expect("a child of this test");
    let st = wait_child(&mut p.procs.children[i], Duration::from_secs(30));
    let text = std::fs::read_to_string(&p.out).unwrap_or_default();
    assert!(st.success() && text.contains("PASS"), "{what}: {st:?}\n{}", text.lines().rev().take(3).collect::<Vec<_>>().join("\n"));
}

/// Reading the queues does not take anything from them: after a checkpoint with --run the
/// process finds every datagram, descriptor in flight and waiting connection where it was.
#[test]
fn unix_socket_queues_are_left_in_place_by_a_checkpoint() {
    let d = Dir::new("unixqueues-run");
    let p = start_c(&d, "unixqueues", &["DIR"]);
    wait_for(&p.out, "ready", Duration::from_secs(30));
    run_checkpoint_then_passes(p, "the original after the checkpoint");
}

/// TCP connections waiting to be accepted, their clients in the image (IPv4, IPv6, IPv4 on an
/// IPv6 wildcard listener): after the restart they wait in their listeners' queues again, from
/// the same client addresses, and carry data both ways once accepted (tests/c/tcpwaiting.c).
#[test]
fn tcp_connections_waiting_to_be_accepted() {
    run_c("tcpwaiting", &[]);
}

/// A TCP connection waiting to be accepted on which its client sent data: that data sits in the
/// connection, which only accepting it would read: refused, naming it.
#[test]
fn tcp_waiting_connection_with_data_is_refused() {
    refused_tcp_waiting("data", &["waiting to be accepted", "bytes its client sent"]);
}

/// A TCP connection waiting to be accepted from a client outside the image (this test): the
/// client could not connect again after the restart: refused, naming the client.
#[test]
fn tcp_waiting_connection_from_outside_is_refused() {
    refused_tcp_waiting("outside", &["waiting to be accepted", "not in the checkpoint", &format!("PID {}", std::process::id())]);
}

/// Starts `tcpwaiting MODE` (a client of this test connects to it in mode `outside`), checks
/// that a checkpoint is refused with a message naming the process and saying each of `expect`,
/// that no image is written and the process runs on.
fn refused_tcp_waiting(mode: &str, expect: &[&str]) {
    let d = Dir::new(&format!("tcpwaiting-{mode}"));
    let p = start_c(&d, "tcpwaiting", &[mode]);
    let text = wait_for(&p.out, "ready", Duration::from_secs(30));
    let _client = (mode == "outside").then(|| {
        let port: u16 = text.lines().find_map(|l| l.strip_prefix("port ")).and_then(|p| p.trim().parse().ok()).expect("port line");
        let c = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
        std::thread::sleep(Duration::from_millis(100));
        c
    });
    assert_refused(&p, expect, &format!("{mode}: the message names the process and says {expect:?}"));
}

/// Raw IP sockets (ICMP bound and connected with its filter, UDP with IP_HDRINCL, ICMPv6 with
/// its filter, IPv6 with IPV6_CHECKSUM), packet sockets (rings, memberships, fanout, bound to
/// lo) and netlink sockets (port, groups above 32, connected, not bound) come back as they
/// were and work (tests/c/netsocks.c).
#[test]
fn raw_packet_and_netlink_sockets() {
    run_c_as_root("raw and packet sockets need CAP_NET_RAW", "netsocks", &[]);
}

/// Packet sockets with their rings mapped (TPACKET_V2 receive and transmit rings mapped
/// shared, a TPACKET_V3 receive ring mapped private, bound to lo) come back mapped at the same
/// addresses, with the same versions and rings, and a frame sent through the transmit ring
/// arrives in both receive rings (tests/c/packetrings.c).
#[test]
fn packet_sockets_with_mapped_rings() {
    run_c_as_root("packet sockets need CAP_NET_RAW", "packetrings", &[]);
}

/// A packet socket whose receive ring received a packet, read and handed back, before the
/// checkpoint: after the restart the kernel fills the ring's next frame, where the program
/// looks (tests/c/packetrings.c, "consumed").
#[test]
fn packet_ring_comes_back_at_its_receive_position() {
    if !is_root() {
        return skip("packet sockets need CAP_NET_RAW");
    }
    run_c_in("packetrings-consumed", "packetrings", &["consumed"]);
}

/// As above, the socket and its mapped rings shared with a child (by fork): the ring is brought
/// to its position once, not once per process (tests/c/packetrings.c, "forked").
#[test]
fn packet_ring_shared_with_a_child_comes_back_at_its_receive_position() {
    if !is_root() {
        return skip("packet sockets need CAP_NET_RAW");
    }
    run_c_in("packetrings-forked", "packetrings", &["forked"]);
}

/// A packet socket in a fanout group whose receive ring's kernel position is not its first
/// frame is refused, naming the fanout group: the socket cannot be bound for the time its new
/// ring is brought there.
#[test]
fn packet_ring_of_a_fanout_socket_past_its_first_frame_is_refused() {
    if !is_root() {
        return skip("packet sockets need CAP_NET_RAW");
    }
    let d = Dir::new("packetrings-fanout");
    let p = start_c(&d, "packetrings", &["fanout"]);
    wait_for(&p.out, "ready", Duration::from_secs(30));
    assert_refused(&p, &["fanout group", "frame 1"], "the message names the process, the fanout group and the frame");
}

/// A packet socket whose receive ring holds a packet the program has not read is refused,
/// naming the socket's rings, rather than restored without it.
#[test]
fn packet_ring_with_an_unread_frame_is_refused() {
    if !is_root() {
        return skip("packet sockets need CAP_NET_RAW");
    }
    let d = Dir::new("packetrings-pending");
    let p = start_c(&d, "packetrings", &["pending"]);
    wait_for(&p.out, "ready", Duration::from_secs(30));
    assert_refused(&p, &["rings of the packet socket", "not read yet", "a new ring would lose"], "the message names the process, the socket's rings and the unread packet");
}

/// A netlink socket of a protocol whose kernel side keeps state by port id (netfilter) is
/// refused, naming the protocol.
#[test]
fn netfilter_netlink_socket_is_refused() {
    if !is_root() {
        return skip("raw and packet sockets need CAP_NET_RAW");
    }
    let d = Dir::new("netsocks-netfilter");
    let p = start_c(&d, "netsocks", &["netfilter"]);
    wait_for(&p.out, "ready", Duration::from_secs(30));
    assert_refused(&p, &["NETLINK_NETFILTER"], "the message names the process and the protocol");
}

/// A checkpoint with --run takes a server's connection in and out of repair mode, which
/// clears SO_REUSEADDR: it is set back, so that the connection, once closed and lingering, does
/// not keep the server from binding its port again (tests/c/tcpreuse.c).
#[test]
fn tcp_connection_keeps_so_reuseaddr_after_a_checkpoint_with_run() {
    if !is_root() {
        return skip("saving TCP connections needs CAP_NET_ADMIN (TCP_REPAIR)");
    }
    let d = Dir::new("tcpreuse");
    let p = start_c(&d, "tcpreuse", &[]);
    wait_for(&p.out, "ready", Duration::from_secs(30));
    run_checkpoint_then_passes(p, "after the checkpoint with --run");
}
