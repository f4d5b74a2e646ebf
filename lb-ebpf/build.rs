//! `xlvs_mh_probe`, `xlvs_lblc_overloaded` and `xlvs_wlc_index` must stay global in the linked object: the verifier
//! checks a global function once on its own, and a static one once per call
//! site, 4093 times over (see `src/schedule.rs`). bpf-linker keeps only the
//! symbols it is told to export.
fn main() {
    println!("cargo:rustc-link-arg=--export=xlvs_mh_probe,xlvs_lblc_overloaded,xlvs_wlc_index");
    println!("cargo:rerun-if-changed=build.rs");
}
