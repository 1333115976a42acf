//! `libcr_run.so.0`: what `cr_run` preloads into a program that does not link libcr. In BLCR
//! it installed the checkpoint signal's handler, without which a process could not be
//! checkpointed at all; crest checkpoints every process from outside, so the library only
//! carries BLCR's symbols, for programs linked with `-lcr_run -u cr_run_link_me`.

/// The symbol BLCR's link recipe names (`-u cr_run_link_me`).
#[no_mangle]
pub static cr_run_link_me: i32 = 0;

/// BLCR's checkpoint signal number, exported by each of its libraries.
#[no_mangle]
pub static cri_signum: i32 = 64;
