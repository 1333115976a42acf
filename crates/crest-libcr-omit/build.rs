//! Installed as `libcr_omit.so.0`, BLCR's soname, which `cr_run` preloads by that name.
fn main() {
    println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,libcr_omit.so.0");
}
