//! `xlvs decap`: on a real server in tunnel mode, strip the outer IPv4 header
//! of IP-in-IP packets whose inner destination is a VIP, and hand the inner
//! packet to the stack (this kernel has no ipip device to do it).

use aya_ebpf::{
    bindings::xdp_action::{XDP_DROP, XDP_PASS},
    helpers::bpf_xdp_adjust_head,
    macros::xdp,
    programs::XdpContext,
};
use lb_common::{
    AF_INET, IPPROTO_IPIP, VipKey, counter,
    net::{ETH_HLEN, ETH_P_IP, EthHdr, IPV4_HLEN, Ipv4Hdr, ptr_at},
};

use crate::maps::{DECAP_VIPS, Frame, verdict};

#[xdp]
pub fn xlvs_decap(ctx: XdpContext) -> u32 {
    let frame = Frame(&ctx);
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
    // SAFETY: a plain helper call on our own context.
    if unsafe { bpf_xdp_adjust_head(ctx.ctx, IPV4_HLEN as i32) } != 0 {
        return verdict(counter::DROP_NO_HEADROOM, XDP_DROP);
    }
    let Some(eth) = ptr_at::<EthHdr>(&Frame(&ctx), 0) else {
        return verdict(counter::DROP_TRUNCATED, XDP_DROP);
    };
    // SAFETY: bounds checked by `ptr_at`.
    unsafe { *eth = eth_hdr };
    verdict(counter::DECAP, XDP_PASS)
}
