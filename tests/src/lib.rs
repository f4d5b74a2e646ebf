//! Lab harness for xlvs: network namespaces, a bridged test topology, a
//! backend (`realserver`), traffic generators and a driver for the `xlvs`
//! binary. Used by the end-to-end tests (`tests/e2e.rs`) and the `xlvs-demo`
//! binary.
//!
//! Everything it creates is named with a per-run prefix (`xlvs-<pid>-<n>`),
//! lives inside network namespaces it created itself, and is torn down by
//! `Drop` guards — also when a test fails or panics. Processes are only ever
//! killed by the PID the harness got when it spawned them.
//!
//! Needs root (CAP_NET_ADMIN, CAP_SYS_ADMIN, CAP_BPF), `ip`, `nsenter`,
//! `sysctl` and `ethtool`.

pub mod netns;
pub mod pair;
pub mod topology;
pub mod traffic;
pub mod xlvs;

pub use netns::{Netns, Proc};
pub use topology::{Segment, Topology};
