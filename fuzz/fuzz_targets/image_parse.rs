//! Any bytes given to the image parser are refused or accepted, never a panic, a hang or an
//! allocation sized by the input. Both the whole-file parser (framing and checksums first) and
//! the metadata decoder and validation behind the checksums are exercised.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = crest_image::ImageFile::check_bytes(data);
    let _ = crest_image::ImageFile::check_metadata(data, 4096..(1 << 30));
});
