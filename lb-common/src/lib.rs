//! Shared between the XDP data plane (`lb-ebpf`) and the controller (`lb-user`).
//!
//! Everything here is `no_std` so the kernel side compiles the very same
//! definitions and logic that host unit tests check: the map layouts, the
//! packet parser, the checksum arithmetic, the scheduler and the TCP state
//! machine.
#![cfg_attr(not(test), no_std)]

pub mod csum;
pub mod icmp;
pub mod maps;
pub mod net;
pub mod sched;
pub mod tcp_state;

pub use maps::*;
