//! The xlvs controller: configuration, the data plane's maps, next-hop
//! resolution, the control socket and the ipvsadm-style views. The `xlvs`
//! binary is a thin command line over this library.

pub mod config;
pub mod control;
pub mod dataplane;
pub mod director;
pub mod edit;
pub mod effective;
pub mod health;
pub mod ldirectord;
pub mod listing;
pub mod metrics;
pub mod nexthop;
pub mod rate;
pub mod sweep;
pub mod timeouts;
pub mod view;

/// The XDP programs, built from `lb-ebpf` by build.rs and embedded so that
/// the one `xlvs` file is all a director needs.
#[must_use]
pub fn ebpf_object() -> &'static [u8] {
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/lb-ebpf"))
}
