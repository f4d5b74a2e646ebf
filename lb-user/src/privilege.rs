//! Least privilege. Loading and attaching the XDP programs, opening the VRRP
//! raw socket and binding the metrics port need root's full set of
//! capabilities; running afterwards does not. Once everything is open the
//! director keeps only:
//!
//! - `CAP_NET_ADMIN`: VRRP adds and removes the VIPs over netlink, and the
//!   programs are detached from the interfaces when the director stops;
//! - `CAP_NET_RAW`: `ping` health checks open raw ICMP sockets, and the
//!   gratuitous ARPs of a takeover go out through packet sockets.
//!
//! Everything else goes, from the effective, permitted and inheritable sets
//! and from the bounding set, so that health-check and notify commands (run
//! as root) inherit no more. The maps need no capability: the director
//! reads and writes them through the file descriptors it already holds.

use caps::{CapSet, Capability, CapsHashSet};

/// What the director keeps.
pub const KEPT: [Capability; 2] = [Capability::CAP_NET_ADMIN, Capability::CAP_NET_RAW];

/// Drops every capability but [`KEPT`], for this thread and every thread or
/// process it starts from now on.
///
/// # Errors
/// When the kernel refuses a change (the director then runs on as it was).
pub fn drop_unneeded() -> Result<(), caps::errors::CapsError> {
    let kept: CapsHashSet = KEPT.into_iter().collect();
    // The bounding set first: dropping from it needs CAP_SETPCAP, which goes
    // with the rest below.
    for cap in caps::all() {
        if !kept.contains(&cap) && caps::has_cap(None, CapSet::Bounding, cap)? {
            caps::drop(None, CapSet::Bounding, cap)?;
        }
    }
    caps::clear(None, CapSet::Ambient)?;
    caps::clear(None, CapSet::Inheritable)?;
    let held = caps::read(None, CapSet::Permitted)?;
    let kept: CapsHashSet = held.intersection(&kept).copied().collect();
    caps::set(None, CapSet::Effective, &kept)?;
    caps::set(None, CapSet::Permitted, &kept)?;
    Ok(())
}

/// The capabilities in effect, for the log.
#[must_use]
pub fn effective() -> Vec<String> {
    let mut names: Vec<String> =
        caps::read(None, CapSet::Effective).map(|s| s.iter().map(ToString::to_string).collect()).unwrap_or_default();
    names.sort();
    names
}
