//! `sys::take_inherited_fd` takes over only a descriptor passed down across exec, once.
use std::os::fd::{AsRawFd, IntoRawFd};

use crest_ptrace::sys;

#[test]
fn only_a_descriptor_left_open_across_exec_is_taken_and_only_once() {
    const VAR: &str = "CREST_TEST_INHERITED_FD";
    // A descriptor this program opened (close-on-exec, as Rust opens every file) is not taken.
    let (r, w) = sys::pipe2(libc::O_CLOEXEC).expect("pipe");
    std::env::set_var(VAR, r.as_raw_fd().to_string());
    assert!(sys::take_inherited_fd(VAR).is_none(), "a close-on-exec descriptor was taken over");
    assert!(std::env::var_os(VAR).is_none(), "the variable is removed");
    // One left open across exec is, once: its number's owner gives it up first, as a parent
    // that passed it down would have.
    sys::set_cloexec(r.as_raw_fd(), false).expect("clearing close-on-exec");
    let raw = r.into_raw_fd();
    std::env::set_var(VAR, raw.to_string());
    let taken = sys::take_inherited_fd(VAR).expect("the inherited descriptor is taken");
    assert_eq!(taken.as_raw_fd(), raw);
    assert!(sys::take_inherited_fd(VAR).is_none(), "taken twice");
    // Standard input, output and error, a number that is not open and no number at all are not.
    for v in ["2", "999999", "x"] {
        std::env::set_var(VAR, v);
        assert!(sys::take_inherited_fd(VAR).is_none(), "{v} was taken");
    }
    // Dropping it closes it.
    drop(taken);
    assert!(sys::cloexec(raw).is_err(), "descriptor {raw} is still open");
    drop(w);
}
