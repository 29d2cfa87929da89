//! Links the gateway with packed relative relocations (`DT_RELR`) on GNU/Linux.
//!
//! A position-independent executable carries one relocation per pointer in its read-only
//! data; the loader reads the whole table at start and it stays resident (2 MB of the
//! gateway's idle memory). Packed, the table is a few kilobytes and the binary keeps its
//! address-space layout randomisation. Needs GNU ld 2.38 or lld 15 and glibc 2.36 at run
//! time (Debian 12, Ubuntu 24.04).
fn main() {
    let os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    let env = std::env::var("CARGO_CFG_TARGET_ENV").unwrap_or_default();
    if os == "linux" && env == "gnu" {
        println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    }
    println!("cargo:rerun-if-changed=build.rs");
}
