//! `libcr_omit.so.0`: what `cr_run --omit` preloads. A process that has it loaded is left out
//! of every checkpoint whose scope holds it (`cr_checkpoint` sees the library in its
//! `/proc/PID/maps`), as BLCR's libcr_omit answered every request with OMIT; a checkpoint
//! that names it alone finds nothing to checkpoint.

/// The symbol BLCR's link recipe names (`-u cr_omit_link_me`).
#[no_mangle]
pub static cr_omit_link_me: i32 = 0;

/// BLCR's checkpoint signal number, exported by each of its libraries.
#[no_mangle]
pub static cri_signum: i32 = 64;
