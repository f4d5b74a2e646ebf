//! ICMP fixtures, run in the kernel with BPF_PROG_TEST_RUN as the other
//! packet fixtures are: errors about a connection reach its real (NAT
//! rewrites the outer and the quoted header), a NAT real's errors go back
//! to the client from the VIP, everything else ICMP is the kernel's, and a
//! tunnel answers a DF packet it has no room for with "fragmentation
//! needed". Expected frames are built here, field by field, with checksums
//! computed from scratch.
//!
//! Needs root: `cargo test -p tests --test icmp -- --test-threads=1`.

mod support;

use etherparse::{EtherType, IpDscp, IpNumber, Ipv4Header};
use lb_common::{IPPROTO_UDP, Real, counter, csum};
use support::*;

/// A router between the director and the clients.
const ROUTER_IP: [u8; 4] = [192, 0, 2, 1];
const DEST_UNREACH: u8 = 3;
const TIME_EXCEEDED: u8 = 11;
const FRAG_NEEDED: u8 = 4;
const PORT_UNREACH: u8 = 3;

/// An ICMP message: type, code, the 4-byte field and the quoted bytes.
struct Icmp {
    kind: u8,
    code: u8,
    rest: [u8; 4],
    quote: Vec<u8>,
}

impl Icmp {
    fn bytes(&self) -> Vec<u8> {
        let mut out = vec![self.kind, self.code, 0, 0];
        out.extend_from_slice(&self.rest);
        out.extend_from_slice(&self.quote);
        let check = !csum::fold(csum::sum_be(&out, 0));
        out[2..4].copy_from_slice(&check.to_be_bytes());
        out
    }

    /// The message in an Ethernet + IPv4 frame.
    fn frame(&self, src: [u8; 4], dst: [u8; 4], ttl: u8, macs: ([u8; 6], [u8; 6])) -> Vec<u8> {
        self.frame_with(src, dst, macs, |ip| ip.time_to_live = ttl)
    }

    fn frame_with(&self, src: [u8; 4], dst: [u8; 4], macs: ([u8; 6], [u8; 6]), f: impl FnOnce(&mut Ipv4Header)) -> Vec<u8> {
        let body = self.bytes();
        let mut ip = Ipv4Header::new(0, 64, IpNumber::ICMP, src, dst).expect("an IPv4 header");
        f(&mut ip);
        ip.set_payload_len(body.len()).expect("fits IPv4");
        ip.header_checksum = ip.calc_header_checksum();
        let mut out = eth_header(macs.0, macs.1, EtherType::IPV4);
        ip.write(&mut out).expect("IPv4 serialises");
        out.extend_from_slice(&body);
        out
    }
}

/// What a router quotes: the IP header and the first 8 bytes after it.
fn quote_of(pkt: &Pkt) -> Vec<u8> {
    let mut ip = pkt.ip_bytes();
    ip.truncate(20 + pkt.options.len() + 8);
    ip
}

fn error(kind: u8, code: u8, quote: Vec<u8>) -> Icmp {
    Icmp { kind, code, rest: [0, 0, 0x05, 0xdc], quote }
}

/// The VIP's packet to the client on port 40000, as it left the director
/// (a NAT reply rewritten, or a DR/TUN real's own).
fn vip_to_client() -> Pkt {
    back_to_client(&from_real(REAL1, REAL_HTTP, 40000, ACK), HTTP)
}

/// Opens a connection from CLIENT:40000 to VIP:80 through `real`.
fn connected(real: Real) -> (Lb, u32) {
    let mut lb = Lb::new();
    let service = lb.add_service(VIP, HTTP, lb_common::IPPROTO_TCP);
    let id = lb.add_real(service, real);
    let (action, _) = lb.run(&Pkt::tcp(40000, HTTP, SYN).frame());
    assert!(action == XDP_TX || action == XDP_REDIRECT, "the SYN is forwarded: {}", action_name(action));
    (lb, id)
}

/// NAT: a router's "fragmentation needed" about the VIP's packet reaches
/// the real with the real in place of the VIP, outer and quoted, as the
/// real's own packet would have looked; checksums hold at every layer.
#[test]
fn nat_error_about_a_connection_reaches_its_real_rewritten() {
    let (lb, id) = connected(nat_real(REAL1, REAL_HTTP));
    let input = error(DEST_UNREACH, FRAG_NEEDED, quote_of(&vip_to_client()));
    let from_router = input.frame(ROUTER_IP, VIP, 60, (ROUTER_MAC, DIRECTOR_MAC));
    // The quote is the packet as the router saw it, a hop after the director.
    let as_the_real_sent_it = from_real(REAL1, REAL_HTTP, 40000, ACK).ttl(vip_to_client().ttl);
    let want = error(DEST_UNREACH, FRAG_NEEDED, quote_of(&as_the_real_sent_it))
        .frame(ROUTER_IP, REAL1, 59, (DIRECTOR_REAL_MAC, real_mac(REAL1)));
    lb.expect("frag needed to the NAT real", &from_router, XDP_TX, &want);
    lb.assert_counters(&[(counter::CONN_NEW, 1), (counter::ICMP_RELAYED, 1)], "relayed");
    assert_eq!(lb.real_stats(id).inpkts, 2, "counted for the real as IPVS counts it");

    let exceeded = error(TIME_EXCEEDED, 0, quote_of(&vip_to_client()));
    let want = error(TIME_EXCEEDED, 0, quote_of(&as_the_real_sent_it))
        .frame(ROUTER_IP, REAL1, 59, (DIRECTOR_REAL_MAC, real_mac(REAL1)));
    lb.expect("time exceeded", &exceeded.frame(ROUTER_IP, VIP, 60, (ROUTER_MAC, DIRECTOR_MAC)), XDP_TX, &want);
}

/// DR and TUN: the error goes to the real unchanged, by the connection's
/// method (the real holds the VIP and knows the quote as its own).
#[test]
fn dr_and_tun_relay_errors_unchanged() {
    let input = error(DEST_UNREACH, FRAG_NEEDED, quote_of(&vip_to_client()));
    let frame = input.frame(ROUTER_IP, VIP, 60, (ROUTER_MAC, DIRECTOR_MAC));

    let (lb, _) = connected(dr_real(REAL1, HTTP));
    let want = input.frame(ROUTER_IP, VIP, 60, (DIRECTOR_REAL_MAC, real_mac(REAL1)));
    lb.expect("DR", &frame, XDP_TX, &want);
    lb.assert_counters(&[(counter::CONN_NEW, 1), (counter::ICMP_RELAYED, 1)], "DR");

    let (lb, _) = connected(tun_real(REAL1, HTTP));
    let out = lb.run(&frame);
    assert_eq!(out.0, XDP_TX, "TUN: {}", action_name(out.0));
    assert_eq!(&out.1[..12], [real_mac(REAL1), DIRECTOR_REAL_MAC].concat(), "TUN: MACs");
    let (outer, inner) = Ipv4Header::from_slice(&out.1[14..]).expect("outer header");
    assert_eq!((outer.protocol, outer.source, outer.destination), (IpNumber::IPV4, DIRECTOR_IP, REAL1), "TUN: outer");
    assert_eq!(inner, &frame[14..], "TUN: the error, unchanged inside");
    assert_checksums(&out.1, "TUN");
}

/// NAT: a real's "port unreachable" about a client's datagram goes back to
/// the client from the VIP, quoting the datagram as the client sent it to
/// the VIP; only the quoted UDP checksum stays as the real saw it (IPVS
/// leaves it; it covers the real's address).
#[test]
fn nat_real_error_goes_back_to_the_client_from_the_vip() {
    let mut lb = Lb::new();
    let service = lb.add_service(VIP, DNS, IPPROTO_UDP);
    let id = lb.add_real(service, nat_real(REAL1, REAL_DNS));
    let query = Pkt::udp(40000, DNS);
    let to_real = nat_to(&query, REAL1, REAL_DNS);
    lb.expect("query", &query.frame(), XDP_TX, &to_real.frame());

    // The real's kernel quotes the whole datagram.
    let real_quote = to_real.ip_bytes();
    let unreachable = error(DEST_UNREACH, PORT_UNREACH, real_quote.clone());
    let from_the_real = unreachable.frame(REAL1, CLIENT, 64, (real_mac(REAL1), DIRECTOR_REAL_MAC));
    let mut client_quote = query.clone().ttl(to_real.ttl).ip_bytes();
    client_quote[26..28].copy_from_slice(&real_quote[26..28]);
    let want = error(DEST_UNREACH, PORT_UNREACH, client_quote).frame(VIP, CLIENT, 63, (DIRECTOR_MAC, ROUTER_MAC));
    lb.expect("port unreachable back to the client", &from_the_real, XDP_TX, &want);
    lb.assert_counters(&[(counter::CONN_NEW, 1), (counter::ICMP_RELAYED, 1)], "relayed back");
    assert_eq!(lb.real_stats(id).outpkts, 1, "counted as the real's outbound");
}

/// What is not an error about a tracked connection goes to the kernel
/// untouched, each counted as `pass_icmp`.
#[test]
fn other_icmp_passes_untouched() {
    let (lb, _) = connected(nat_real(REAL1, REAL_HTTP));
    let other_client = vip_to_client().to(CLIENT2, 40000);
    let mut ipip = quote_of(&vip_to_client());
    ipip[9] = 4;
    let cases = [
        ("echo to the VIP", icmp_echo(VIP)),
        (
            "an error about no connection",
            error(DEST_UNREACH, FRAG_NEEDED, quote_of(&other_client)).frame(ROUTER_IP, VIP, 60, (ROUTER_MAC, DIRECTOR_MAC)),
        ),
        (
            "an error quoting IP-in-IP",
            error(DEST_UNREACH, FRAG_NEEDED, ipip).frame(ROUTER_IP, VIP, 60, (ROUTER_MAC, DIRECTOR_MAC)),
        ),
        (
            "an error to someone else than the quote's sender",
            error(DEST_UNREACH, FRAG_NEEDED, quote_of(&vip_to_client())).frame(ROUTER_IP, NOT_A_VIP, 60, (ROUTER_MAC, DIRECTOR_MAC)),
        ),
        (
            "a redirect",
            error(5, 1, quote_of(&vip_to_client())).frame(ROUTER_IP, VIP, 60, (ROUTER_MAC, DIRECTOR_MAC)),
        ),
        (
            "a quote cut short of the ports",
            error(DEST_UNREACH, FRAG_NEEDED, quote_of(&vip_to_client())[..24].to_vec()).frame(ROUTER_IP, VIP, 60, (ROUTER_MAC, DIRECTOR_MAC)),
        ),
    ];
    for (what, frame) in &cases {
        lb.expect(what, frame, XDP_PASS, frame);
    }
    lb.assert_counters(&[(counter::CONN_NEW, 1), (counter::PASS_ICMP, cases.len() as u64)], "passed");
}

/// An error about a connection with a wrong ICMP checksum is dropped, as
/// IPVS drops it; nothing reaches the real.
#[test]
fn an_error_with_a_wrong_checksum_is_dropped() {
    let (lb, id) = connected(nat_real(REAL1, REAL_HTTP));
    let mut frame = error(DEST_UNREACH, FRAG_NEEDED, quote_of(&vip_to_client())).frame(ROUTER_IP, VIP, 60, (ROUTER_MAC, DIRECTOR_MAC));
    let last = frame.len() - 1;
    frame[last] ^= 0x10;
    let (action, _) = lb.run(&frame);
    assert_eq!(action, XDP_DROP, "{}", action_name(action));
    lb.assert_counters(&[(counter::CONN_NEW, 1), (counter::DROP_ICMP_CHECKSUM, 1)], "dropped");
    assert_eq!(lb.real_stats(id).inpkts, 1, "only the SYN reached the real");
}

/// TUN towards a 1400-byte path: a DF packet that would be 20 bytes too
/// big once encapsulated is answered, from the VIP, with "fragmentation
/// needed" and 1380; one that fits is tunnelled; one without DF, which
/// IPVS would fragment, is dropped and counted.
#[test]
fn tun_answers_a_df_packet_too_big_for_the_tunnel() {
    let (lb, id) = connected(Real { mtu: 1400, ..tun_real(REAL1, HTTP) });
    let sized = |ip_len: usize, df: bool| {
        Pkt::tcp(40000, HTTP, ACK | PSH).with(|p| {
            p.payload = vec![0x61; ip_len - 40];
            p.df = df;
            p.tos = 0x10;
        })
    };
    let fits = sized(1380, true);
    let want = fits.tunnelled(DIRECTOR_IP, REAL1, DIRECTOR_REAL_MAC, real_mac(REAL1));
    lb.expect("1380 bytes fit", &fits.frame(), XDP_TX, &want);

    let big = sized(1381, true);
    let frag_needed = Icmp { kind: DEST_UNREACH, code: FRAG_NEEDED, rest: [0, 0, 0x05, 0x64], quote: quote_of(&big) };
    let want = frag_needed.frame_with(VIP, CLIENT, (DIRECTOR_MAC, ROUTER_MAC), |ip| {
        ip.identification = 0;
        ip.dont_fragment = false;
        // The kernel's TOS for errors: the packet's TOS bits and "internetwork
        // control" precedence.
        ip.dscp = IpDscp::try_new((0x10 | 0xc0) >> 2).expect("DSCP");
    });
    let out = lb.expect("1381 bytes with DF", &big.frame(), XDP_TX, &want);
    assert_eq!(out.len(), 14 + 20 + 8 + 28, "the answer quotes the header and 8 bytes");

    let (action, _) = lb.run(&sized(1500, false).frame());
    assert_eq!(action, XDP_DROP, "no DF: {}", action_name(action));
    lb.assert_counters(
        &[(counter::CONN_NEW, 1), (counter::ICMP_FRAG_NEEDED_SENT, 1), (counter::DROP_TOO_BIG, 1)],
        "too big",
    );
    assert_eq!(lb.real_stats(id).inpkts, 4, "every packet counted for the real, as IPVS counts before its MTU check");
}

/// The answers keep to the kernel's ICMP rate: a burst of 50, then 1000 a
/// second; the packets held back are dropped and counted.
#[test]
fn frag_needed_answers_keep_to_the_icmp_rate() {
    let (lb, _) = connected(Real { mtu: 1400, ..tun_real(REAL1, HTTP) });
    let big = Pkt::tcp(40000, HTTP, ACK | PSH).with(|p| p.payload = vec![0x61; 1400]).frame();
    let tries = 300;
    let started = std::time::Instant::now();
    let answered = (0..tries).filter(|_| lb.run(&big).0 == XDP_TX).count() as u64;
    let ms = started.elapsed().as_millis() as u64;
    eprintln!("{answered} of {tries} answered in {ms} ms");
    assert!(answered >= 50, "a burst of 50 at first: {answered}");
    assert!(answered <= 50 + ms + 1, "1000 a second after the burst: {answered} in {ms} ms");
    lb.assert_counters(
        &[
            (counter::CONN_NEW, 1),
            (counter::ICMP_FRAG_NEEDED_SENT, answered),
            (counter::DROP_ICMP_RATELIMIT, tries - answered),
        ],
        "rate limited",
    );
}
