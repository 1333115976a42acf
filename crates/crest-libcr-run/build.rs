//! Installed as `libcr_run.so.0`, BLCR's soname, which `cr_run` preloads by that name.
fn main() {
    println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,libcr_run.so.0");
}
