//! The shared library is installed as `libcr.so.0`, BLCR's soname, which programs linked with
//! `-lcr` record and look for.
fn main() {
    println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,libcr.so.0");
}
