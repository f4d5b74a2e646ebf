//! The xlvs XDP programs.
//!
//! - `xlvs_director` runs on a director: it forwards VIP traffic to reals by
//!   NAT, direct routing or IP-in-IP, and rewrites NAT replies back.
//! - `xlvs_decap` runs on a real server in tunnel mode: it strips the outer
//!   IPv4 header of packets whose inner destination is a VIP.
//!
//! Stages live in their own modules and return either "keep going" or a final
//! XDP action; every pass and drop bumps its own counter.
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]
// The BPF target declares no atomic read-modify-write types, yet the BPF
// instruction set has an atomic add (`lock xadd`): the intrinsic reaches it.
#![cfg_attr(target_arch = "bpf", feature(core_intrinsics))]
#![cfg_attr(target_arch = "bpf", allow(internal_features))]

#[cfg(target_arch = "bpf")]
mod accounting;
#[cfg(target_arch = "bpf")]
mod connect;
#[cfg(target_arch = "bpf")]
mod decap;
#[cfg(target_arch = "bpf")]
mod director;
#[cfg(target_arch = "bpf")]
mod forward;
#[cfg(target_arch = "bpf")]
mod fragment;
#[cfg(target_arch = "bpf")]
mod icmp;
#[cfg(target_arch = "bpf")]
mod maps;
#[cfg(target_arch = "bpf")]
mod schedule;

#[cfg(target_arch = "bpf")]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // The verifier rejects any path that could reach here.
    loop {}
}

#[cfg(target_arch = "bpf")]
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";

/// Built for the host only so that `cargo check --workspace` works.
#[cfg(not(target_arch = "bpf"))]
fn main() {}
