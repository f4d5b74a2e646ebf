//! `xlvs decap`: on a real server in tunnel mode, strip the outer header of
//! IP-in-IP (IPv4 in IPv4) and IPv6-in-IPv6 packets whose inner destination
//! is a VIP, and hand the inner packet to the stack (this kernel has no
//! ipip or ip6tnl device to do it).

use aya_ebpf::{
    bindings::xdp_action::{XDP_DROP, XDP_PASS},
    helpers::bpf_xdp_adjust_head,
    macros::xdp,
    programs::XdpContext,
};
use lb_common::{
    AF_INET, AF_INET6, IPPROTO_IPIP, IPPROTO_IPV6, VipKey, counter,
    net::{ETH_HLEN, ETH_P_IP, ETH_P_IPV6, EthHdr, IPV4_HLEN, IPV6_HLEN, Ipv4Hdr, Ipv6Hdr, ptr_at},
};

use crate::maps::{DECAP_VIPS, Frame, verdict};

#[xdp]
pub fn xlvs_decap(ctx: XdpContext) -> u32 {
    let frame = Frame(&ctx);
    let Some(eth) = ptr_at::<EthHdr>(&frame, 0) else {
        return XDP_PASS;
    };
    // SAFETY: bounds checked by `ptr_at`.
    if unsafe { (*eth).proto } == ETH_P_IPV6.to_be() {
        return decap6(&ctx);
    }
    decap4(&ctx)
}

#[inline(always)]
fn decap4(ctx: &XdpContext) -> u32 {
    let frame = Frame(ctx);
    let (Some(eth), Some(outer)) = (
        ptr_at::<EthHdr>(&frame, 0),
        ptr_at::<Ipv4Hdr>(&frame, ETH_HLEN),
    ) else {
        return XDP_PASS;
    };
    // SAFETY: bounds checked by `ptr_at`.
    let (eth_hdr, outer) = unsafe { (*eth, *outer) };
    // Only a plain 20-byte outer header: that is all the director sends.
    if eth_hdr.proto != ETH_P_IP.to_be() || outer.proto != IPPROTO_IPIP || outer.version_ihl != 0x45 {
        return XDP_PASS;
    }
    let Some(inner) = ptr_at::<Ipv4Hdr>(&frame, ETH_HLEN + IPV4_HLEN) else {
        return XDP_PASS;
    };
    // SAFETY: bounds checked by `ptr_at`.
    let inner_daddr = unsafe { (*inner).daddr };
    let vip = VipKey { addr: [inner_daddr, 0, 0, 0], family: AF_INET, _pad: [0; 3] };
    if DECAP_VIPS.get_ptr(&vip).is_none() {
        return XDP_PASS;
    }
    strip(ctx, eth_hdr, IPV4_HLEN)
}

/// The outer IPv6 header with next header 41 right behind it (no extension
/// headers: the director sends none), and an inner IPv6 packet for a VIP.
#[inline(always)]
fn decap6(ctx: &XdpContext) -> u32 {
    let frame = Frame(ctx);
    let (Some(eth), Some(outer), Some(inner)) = (
        ptr_at::<EthHdr>(&frame, 0),
        ptr_at::<Ipv6Hdr>(&frame, ETH_HLEN),
        ptr_at::<Ipv6Hdr>(&frame, ETH_HLEN + IPV6_HLEN),
    ) else {
        return XDP_PASS;
    };
    // SAFETY: bounds checked by `ptr_at`.
    let (eth_hdr, outer, inner) = unsafe { (*eth, *outer, *inner) };
    if outer.nexthdr != IPPROTO_IPV6 || u32::from_be(inner.vtc_flow) >> 28 != 6 {
        return XDP_PASS;
    }
    if DECAP_VIPS.get_ptr(&VipKey { addr: inner.daddr, family: AF_INET6, _pad: [0; 3] }).is_none() {
        return XDP_PASS;
    }
    strip(ctx, eth_hdr, IPV6_HLEN)
}

/// Drops the `len` bytes of outer header behind the Ethernet header, which
/// moves up with the EtherType the inner packet already has.
#[inline(always)]
fn strip(ctx: &XdpContext, eth_hdr: EthHdr, len: usize) -> u32 {
    // SAFETY: a plain helper call on our own context.
    if unsafe { bpf_xdp_adjust_head(ctx.ctx, len as i32) } != 0 {
        return verdict(counter::DROP_NO_HEADROOM, XDP_DROP);
    }
    let Some(eth) = ptr_at::<EthHdr>(&Frame(ctx), 0) else {
        return verdict(counter::DROP_TRUNCATED, XDP_DROP);
    };
    // SAFETY: bounds checked by `ptr_at`.
    unsafe { *eth = eth_hdr };
    verdict(counter::DECAP, XDP_PASS)
}
