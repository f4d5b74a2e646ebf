//! Builds the XDP programs (crate `lb-ebpf`) with the nightly toolchain so
//! that `xlvs` can embed them: the one binary is all a director needs.
fn main() -> anyhow::Result<()> {
    let manifest_dir = std::path::PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?);
    let ebpf_dir = manifest_dir.join("../lb-ebpf");
    let ebpf_dir = ebpf_dir.to_str().expect("a UTF-8 path");
    println!("cargo:rerun-if-changed={}", manifest_dir.join("../lb-common/src").display());
    aya_build::build_ebpf(
        [aya_build::Package { name: "lb-ebpf", root_dir: ebpf_dir, ..Default::default() }],
        aya_build::Toolchain::default(),
    )
}
