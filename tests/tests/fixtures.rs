//! Packet fixtures for the XDP data plane, run in the kernel with
//! BPF_PROG_TEST_RUN. Each test loads a fresh copy of the eBPF object (maps
//! are per instance), fills the maps with `lb_common` types, runs frames
//! built by etherparse and checks the verdict, the exact output bytes, the
//! checksums, and what the run left in COUNTERS, REAL_STATS and CONNS.
//!
//! Needs root: `cargo test -p tests --test fixtures -- --test-threads=1`.

mod support;

use etherparse::{EtherType, Ipv4Header};
use lb_common::{
    AF_INET, CONN_F_INACTIVE, CONN_F_NOOUTPUT, CONN_F_REPLY, CONN_F_TEMPLATED, Conn, ConnKey, IPPROTO_TCP, IPPROTO_UDP,
    MAX_REALS_PER_SERVICE, REAL_F_LOCAL, REAL_F_NEXTHOP, Real, RealConns, Stats, counter, tcp_state, v4_addr,
};
use support::*;

// ---------------------------------------------------------------- helpers

/// VIP:80/TCP with NAT reals REAL1, REAL2, REAL3 on port 8080, scanned in
/// that order. Returns the real ids.
fn nat_http(lb: &mut Lb) -> [u32; 3] {
    let service = lb.add_service(VIP, HTTP, IPPROTO_TCP);
    [REAL1, REAL2, REAL3].map(|addr| lb.add_real(service, nat_real(addr, REAL_HTTP)))
}

/// VIP:80/TCP with one real built by `real`. Returns the real id.
fn http_with(lb: &mut Lb, real: Real) -> u32 {
    let service = lb.add_service(VIP, HTTP, IPPROTO_TCP);
    lb.add_real(service, real)
}

/// VIP:53/UDP with one NAT real REAL1:5353.
fn nat_dns(lb: &mut Lb) -> u32 {
    let service = lb.add_service(VIP, DNS, IPPROTO_UDP);
    lb.add_real(service, nat_real(REAL1, REAL_DNS))
}

/// The CONNS key of a real's packets to the client.
fn reply_key(real: [u8; 4], rport: u16, client_port: u16, proto: u8) -> ConnKey {
    ConnKey {
        saddr: v4_addr(real),
        daddr: v4_addr(CLIENT),
        sport: port_be(rport),
        dport: port_be(client_port),
        proto,
        family: AF_INET,
        _pad: [0; 2],
    }
}

/// A client entry as the director should record it.
fn client_entry(real: u32, vport: u16, state: u8, flags: u8) -> Conn {
    Conn {
        real,
        service: 0,
        vaddr: v4_addr(VIP),
        vport: port_be(vport),
        state,
        flags,
        ..Conn::default()
    }
}

/// The reply entry a NAT flow gets: where replies go back to.
fn reply_entry(real: u32, vport: u16) -> Conn {
    Conn {
        flags: CONN_F_REPLY,
        ifindex: LO_IFINDEX,
        peer_mac: ROUTER_MAC,
        own_mac: DIRECTOR_MAC,
        ..client_entry(real, vport, tcp_state::NONE, 0)
    }
}

/// Reads a CONNS entry and compares it with `want`, ignoring the timestamp
/// (which must be set).
fn assert_conn(lb: &mut Lb, key: &ConnKey, want: Conn, what: &str) {
    let got = lb
        .conn(key)
        .unwrap_or_else(|| panic!("{what}: no CONNS entry for {key:?}"));
    assert!(got.last_seen_ns > 0, "{what}: last_seen_ns is set");
    assert_eq!(
        got,
        Conn {
            last_seen_ns: got.last_seen_ns,
            ..want
        },
        "{what}"
    );
}

fn assert_state(lb: &mut Lb, key: &ConnKey, state: u8, what: &str) {
    let got = lb
        .conn(key)
        .unwrap_or_else(|| panic!("{what}: no CONNS entry"))
        .state;
    let name = |s: u8| {
        tcp_state::NAMES
            .get(usize::from(s))
            .copied()
            .unwrap_or("out of range")
    };
    assert_eq!(
        got,
        state,
        "{what}: TCP state {} instead of {}",
        name(got),
        name(state)
    );
}

/// `frame` with `bytes` written at `offset`: malformed headers that
/// etherparse refuses to build.
fn patched(mut frame: Vec<u8>, offset: usize, bytes: &[u8]) -> Vec<u8> {
    frame[offset..offset + bytes.len()].copy_from_slice(bytes);
    frame
}

const ETH: usize = 14;

// ---------------------------------------------------------------- NAT, TCP

/// NAT SYN: scheduled to the first real of the scan order, rewritten to it,
/// and recorded under the client's tuple and the reply tuple.
#[test]
fn nat_syn_goes_to_the_first_real_and_records_both_directions() {
    let mut lb = Lb::new();
    let [r1, ..] = nat_http(&mut lb);
    let syn = Pkt::tcp(40000, HTTP, SYN);
    let input = syn.frame();
    lb.expect(
        "NAT SYN",
        &input,
        XDP_TX,
        &nat_to(&syn, REAL1, REAL_HTTP).frame(),
    );

    assert_conn(
        &mut lb,
        &syn.conn_key(),
        client_entry(r1, HTTP, tcp_state::SYN_RECV, 0),
        "client entry",
    );
    let rkey = reply_key(REAL1, REAL_HTTP, 40000, IPPROTO_TCP);
    assert_conn(&mut lb, &rkey, reply_entry(r1, HTTP), "reply entry");
    assert_eq!(lb.conn_count(), 2, "two CONNS entries per NAT flow");
    assert_eq!(lb.sched_cursor(0), 1, "rr cursor moves past the pick");
    // Bytes as ipvsadm counts them: the IP packet.
    let stats = Stats {
        conns: 1,
        inpkts: 1,
        inbytes: (input.len() - ETH) as u64,
        ..Stats::default()
    };
    assert_eq!(lb.real_stats(r1), stats, "REAL_STATS of the picked real");
    lb.assert_counters(&[(counter::CONN_NEW, 1)], "NAT SYN");
}

/// rr: successive new connections walk SERVICE_REALS from index 0 and wrap.
#[test]
fn nat_syns_round_robin_over_the_reals_in_scan_order() {
    let mut lb = Lb::new();
    let ids = nat_http(&mut lb);
    let order = [REAL1, REAL2, REAL3, REAL1];
    for (i, real) in order.into_iter().enumerate() {
        let syn = Pkt::tcp(40001 + i as u16, HTTP, SYN);
        let what = format!("SYN #{i} goes to {real:?}");
        lb.expect(
            &what,
            &syn.frame(),
            XDP_TX,
            &nat_to(&syn, real, REAL_HTTP).frame(),
        );
    }
    let conns: Vec<u64> = ids.iter().map(|&id| lb.real_stats(id).conns).collect();
    assert_eq!(conns, [2, 1, 1], "connections per real");
    lb.assert_counters(&[(counter::CONN_NEW, 4)], "four SYNs");
}

/// rr never picks a weight-0 (quiescent) real.
#[test]
fn rr_skips_quiescent_reals() {
    let mut lb = Lb::new();
    let service = lb.add_service(VIP, HTTP, IPPROTO_TCP);
    lb.add_real(service, nat_real(REAL1, REAL_HTTP));
    lb.add_real(
        service,
        Real {
            weight: 0,
            ..nat_real(REAL2, REAL_HTTP)
        },
    );
    lb.add_real(service, nat_real(REAL3, REAL_HTTP));
    for (i, real) in [REAL1, REAL3, REAL1].into_iter().enumerate() {
        let syn = Pkt::tcp(40001 + i as u16, HTTP, SYN);
        let what = format!("SYN #{i} skips the weight-0 real");
        lb.expect(
            &what,
            &syn.frame(),
            XDP_TX,
            &nat_to(&syn, real, REAL_HTTP).frame(),
        );
    }
}

/// NAT established: a later segment of a flow goes to the same real without
/// scheduling, and moves the state to ESTABLISHED.
#[test]
fn nat_established_segment_follows_its_connection() {
    let mut lb = Lb::new();
    let [r1, ..] = nat_http(&mut lb);
    let syn = Pkt::tcp(40000, HTTP, SYN);
    lb.expect(
        "SYN",
        &syn.frame(),
        XDP_TX,
        &nat_to(&syn, REAL1, REAL_HTTP).frame(),
    );
    let other = Pkt::tcp(40000, HTTP, SYN).from(CLIENT2, 40000);
    lb.expect(
        "another client's SYN",
        &other.frame(),
        XDP_TX,
        &nat_to(&other, REAL2, REAL_HTTP).frame(),
    );

    let data = Pkt::tcp(40000, HTTP, ACK | PSH);
    let input = data.frame();
    lb.expect(
        "established data",
        &input,
        XDP_TX,
        &nat_to(&data, REAL1, REAL_HTTP).frame(),
    );
    assert_state(
        &mut lb,
        &data.conn_key(),
        tcp_state::ESTABLISHED,
        "after the client's ACK",
    );
    assert_eq!(
        lb.sched_cursor(0),
        2,
        "an established packet does not schedule"
    );
    assert_eq!(lb.real_stats(r1).inpkts, 2, "inpkts of the first real");
    lb.assert_counters(&[(counter::CONN_NEW, 2)], "two flows, three packets");
}

/// NAT reply: the real's packet gets source VIP:80 back and leaves the way
/// the client's packets came in (XDP_TX: the reply entry's ifindex is the
/// ingress one).
#[test]
fn nat_reply_is_rewritten_back_to_the_vip() {
    let mut lb = Lb::new();
    let [r1, ..] = nat_http(&mut lb);
    let syn = Pkt::tcp(40000, HTTP, SYN);
    lb.expect(
        "SYN",
        &syn.frame(),
        XDP_TX,
        &nat_to(&syn, REAL1, REAL_HTTP).frame(),
    );

    let synack = from_real(REAL1, REAL_HTTP, 40000, SYN | ACK);
    let input = synack.frame();
    lb.expect(
        "SYN-ACK from the real",
        &input,
        XDP_TX,
        &back_to_client(&synack, HTTP).frame(),
    );
    assert_state(
        &mut lb,
        &syn.conn_key(),
        tcp_state::SYN_RECV,
        "after the SYN-ACK",
    );
    let stats = lb.real_stats(r1);
    assert_eq!(
        (stats.outpkts, stats.outbytes),
        (1, (input.len() - ETH) as u64),
        "outbound stats"
    );
    lb.assert_counters(&[(counter::CONN_NEW, 1)], "SYN and its reply");
}

/// NAT reply with a reply entry on another interface: XDP_REDIRECT, MACs
/// from the entry.
#[test]
fn nat_reply_is_redirected_when_the_client_came_in_elsewhere() {
    let mut lb = Lb::new();
    let [r1, ..] = nat_http(&mut lb);
    let peer = [0x02, 0, 0, 0, 0x07, 0x01];
    let own = [0x02, 0, 0, 0, 0x07, 0xd0];
    let rkey = reply_key(REAL1, REAL_HTTP, 40000, IPPROTO_TCP);
    let entry = Conn {
        ifindex: OTHER_IFINDEX,
        peer_mac: peer,
        own_mac: own,
        ..reply_entry(r1, HTTP)
    };
    lb.insert_conn(rkey, entry);

    let ack = from_real(REAL1, REAL_HTTP, 40000, ACK);
    let want = back_to_client(&ack, HTTP).macs(own, peer);
    lb.expect(
        "reply via another interface",
        &ack.frame(),
        XDP_REDIRECT,
        &want.frame(),
    );
}

/// NAT TCP states follow IPVS's table through a full close: SYN_RECV,
/// ESTABLISHED, CLOSE_WAIT on the client's FIN, TIME_WAIT on the real's.
#[test]
fn nat_tcp_states_follow_ipvs_through_a_close() {
    let mut lb = Lb::new();
    nat_http(&mut lb);
    let key = Pkt::tcp(40000, HTTP, SYN).conn_key();
    let steps: [(&str, Pkt, u8); 5] = [
        (
            "client SYN",
            Pkt::tcp(40000, HTTP, SYN),
            tcp_state::SYN_RECV,
        ),
        (
            "real SYN-ACK",
            from_real(REAL1, REAL_HTTP, 40000, SYN | ACK),
            tcp_state::SYN_RECV,
        ),
        (
            "client ACK",
            Pkt::tcp(40000, HTTP, ACK),
            tcp_state::ESTABLISHED,
        ),
        (
            "client FIN",
            Pkt::tcp(40000, HTTP, FIN | ACK),
            tcp_state::CLOSE_WAIT,
        ),
        (
            "real FIN",
            from_real(REAL1, REAL_HTTP, 40000, FIN | ACK),
            tcp_state::TIME_WAIT,
        ),
    ];
    for (what, pkt, state) in steps {
        let want = if pkt.src == CLIENT {
            nat_to(&pkt, REAL1, REAL_HTTP)
        } else {
            back_to_client(&pkt, HTTP)
        };
        lb.expect(what, &pkt.frame(), XDP_TX, &want.frame());
        assert_state(&mut lb, &key, state, what);
    }
}

/// Runs a client's NAT connection on `port` through IPVS's close, to
/// TIME_WAIT, with `real` answering.
fn close_to_time_wait(lb: &mut Lb, port: u16, real: [u8; 4]) {
    for pkt in [
        Pkt::tcp(port, HTTP, SYN),
        from_real(real, REAL_HTTP, port, SYN | ACK),
        Pkt::tcp(port, HTTP, ACK),
        Pkt::tcp(port, HTTP, FIN | ACK),
        from_real(real, REAL_HTTP, port, FIN | ACK),
    ] {
        assert_eq!(lb.run(&pkt.frame()).0, XDP_TX);
    }
    assert_state(lb, &Pkt::tcp(port, HTTP, SYN).conn_key(), tcp_state::TIME_WAIT, "closed");
}

/// A client that reuses its port while its old connection is in TIME_WAIT
/// opens a new one (IPVS's `conn_reuse_mode` 1, `is_new_conn_expected`):
/// the old entries go, their real's count drops, and the SYN is scheduled
/// afresh (rr: the next real). An established connection's SYN stays with
/// its real, and so does one a persistence template controls.
#[test]
fn a_syn_on_a_closed_connection_is_scheduled_afresh() {
    let mut lb = Lb::new();
    let [r1, r2, r3] = nat_http(&mut lb);
    let key = Pkt::tcp(40000, HTTP, SYN).conn_key();
    close_to_time_wait(&mut lb, 40000, REAL1);
    assert_eq!((lb.real_conns(r1).active, lb.real_conns(r1).inactive), (0, 1), "TIME_WAIT is inactive");

    let syn = Pkt::tcp(40000, HTTP, SYN);
    lb.expect("SYN on TIME_WAIT", &syn.frame(), XDP_TX, &nat_to(&syn, REAL2, REAL_HTTP).frame());
    assert_conn(&mut lb, &key, client_entry(r2, HTTP, tcp_state::SYN_RECV, 0), "the new connection");
    assert!(lb.conn(&reply_key(REAL1, REAL_HTTP, 40000, IPPROTO_TCP)).is_none(), "the old reply entry is gone");
    assert_conn(&mut lb, &reply_key(REAL2, REAL_HTTP, 40000, IPPROTO_TCP), reply_entry(r2, HTTP), "new reply entry");
    assert_eq!(lb.real_conns(r1), RealConns::default(), "the old real counts nothing");
    assert_eq!((lb.real_conns(r2).active, lb.real_conns(r2).inactive), (1, 0));

    // Established: a SYN (a retransmission, or a scan) keeps the real.
    let port = 40001;
    assert_eq!(lb.run(&Pkt::tcp(port, HTTP, SYN).frame()).0, XDP_TX);
    assert_eq!(lb.run(&Pkt::tcp(port, HTTP, ACK).frame()).0, XDP_TX);
    let again = Pkt::tcp(port, HTTP, SYN);
    lb.expect("SYN on ESTABLISHED", &again.frame(), XDP_TX, &nat_to(&again, REAL3, REAL_HTTP).frame());
    assert_eq!(lb.conn(&again.conn_key()).map(|c| c.real), Some(r3));
    lb.assert_counters(&[(counter::CONN_NEW, 3), (counter::CONN_RESCHEDULED, 1)], "reuse");

    // Under a template (a persistent service's connection): the SYN
    // reopens the old connection, on its real, as IPVS keeps a controlled
    // connection.
    let templated = Conn { flags: CONN_F_INACTIVE | CONN_F_TEMPLATED, last_seen_ns: 1, ..client_entry(r1, HTTP, tcp_state::TIME_WAIT, 0) };
    let key = Pkt::tcp(40002, HTTP, SYN).conn_key();
    lb.insert_conn(key, templated);
    let syn = Pkt::tcp(40002, HTTP, SYN);
    lb.expect("SYN on a templated TIME_WAIT", &syn.frame(), XDP_TX, &nat_to(&syn, REAL1, REAL_HTTP).frame());
    assert_state(&mut lb, &key, tcp_state::SYN_RECV, "reopened");
    lb.assert_counters(&[(counter::CONN_NEW, 3), (counter::CONN_RESCHEDULED, 1)], "templated");
}

/// NAT reply with TTL 1: left to the kernel untouched, like the inbound
/// side.
#[test]
fn nat_reply_with_ttl_1_passes_untouched() {
    let mut lb = Lb::new();
    nat_http(&mut lb);
    let syn = Pkt::tcp(40000, HTTP, SYN);
    lb.expect(
        "SYN",
        &syn.frame(),
        XDP_TX,
        &nat_to(&syn, REAL1, REAL_HTTP).frame(),
    );
    let synack = from_real(REAL1, REAL_HTTP, 40000, SYN | ACK).ttl(1).frame();
    lb.expect("SYN-ACK with TTL 1", &synack, XDP_PASS, &synack);
    lb.assert_counters(
        &[(counter::CONN_NEW, 1), (counter::PASS_TTL, 1)],
        "reply TTL 1",
    );
}

/// Incremental checksum updates agree with etherparse's full computation
/// over many flows: random clients, ports, TTLs, TOS and payload lengths
/// (odd lengths included), TCP and UDP, both directions.
#[test]
fn nat_checksums_hold_over_random_flows() {
    let mut lb = Lb::new();
    nat_http(&mut lb);
    nat_dns(&mut lb);
    // xorshift64: reproducible without a dependency.
    let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for i in 0..300 {
        let r = next().to_be_bytes();
        // Any unicast host (1..=100 in the first octet: no martian).
        let client = [r[0] % 100 + 1, r[1], r[2], r[3]];
        let sport = u16::from_be_bytes([r[4], r[5]]) | 1024;
        let payload: Vec<u8> = (0..r[6] % 97).map(|_| next() as u8).collect();
        let shape = |p: &mut Pkt| {
            p.ttl = r[7].max(2);
            p.tos = r[6] & 0xfc;
            p.id = u16::from_be_bytes([r[2], r[5]]);
            p.payload = payload.clone();
        };
        let what = format!("random flow #{i}");
        if i % 2 == 0 {
            let real = [REAL1, REAL2, REAL3][(i / 2) % 3];
            let syn = Pkt::tcp(sport, HTTP, SYN).from(client, sport).with(shape);
            lb.expect(
                &what,
                &syn.frame(),
                XDP_TX,
                &nat_to(&syn, real, REAL_HTTP).frame(),
            );
            let reply = from_real(real, REAL_HTTP, sport, SYN | ACK)
                .to(client, sport)
                .with(shape);
            lb.expect(
                &what,
                &reply.frame(),
                XDP_TX,
                &back_to_client(&reply, HTTP).frame(),
            );
        } else {
            let query = Pkt::udp(sport, DNS).from(client, sport).with(shape);
            lb.expect(
                &what,
                &query.frame(),
                XDP_TX,
                &nat_to(&query, REAL1, REAL_DNS).frame(),
            );
        }
    }
}

/// NAT with IP options (IHL 6): the ports and checksum are found past them.
#[test]
fn nat_rewrites_past_ip_options() {
    let mut lb = Lb::new();
    nat_http(&mut lb);
    // Router Alert, 4 bytes.
    let syn = Pkt::tcp(40000, HTTP, SYN).with(|p| p.options = vec![0x94, 0x04, 0x00, 0x00]);
    let input = syn.frame();
    assert_eq!(input[ETH] & 0x0f, 6, "IHL 6");
    lb.expect(
        "NAT SYN with IP options",
        &input,
        XDP_TX,
        &nat_to(&syn, REAL1, REAL_HTTP).frame(),
    );
}

/// A frame with Ethernet padding past the IP packet (a 60-byte minimum
/// frame) is rewritten with the padding left as it was.
#[test]
fn nat_keeps_ethernet_padding() {
    let mut lb = Lb::new();
    nat_http(&mut lb);
    let syn = Pkt::tcp(40000, HTTP, SYN);
    let pad = |mut f: Vec<u8>| {
        f.resize(60, 0);
        f
    };
    lb.expect(
        "padded SYN",
        &pad(syn.frame()),
        XDP_TX,
        &pad(nat_to(&syn, REAL1, REAL_HTTP).frame()),
    );
}

/// Byte counts are the IP packet's, as ipvsadm's: a padded minimum-size
/// frame counts its IPv4 total length (40), not the 46 bytes after the
/// Ethernet header (the kernel trims the padding before IPVS sees it).
#[test]
fn byte_counts_leave_out_ethernet_padding() {
    let mut lb = Lb::new();
    let [r1, ..] = nat_http(&mut lb);
    let syn = Pkt::tcp(40000, HTTP, SYN);
    let mut frame = syn.frame();
    frame.resize(60, 0);
    let (action, _) = lb.run(&frame);
    assert_eq!(action_name(action), "XDP_TX", "padded SYN");
    let ip_len = u64::from(syn.ip_header().total_len);
    assert_eq!(
        lb.real_stats(r1).inbytes,
        ip_len,
        "inbytes of a padded 60-byte frame"
    );
}

// ---------------------------------------------------------------- NAT, UDP

/// UDP NAT: destination rewritten, the UDP checksum updated; no TCP state.
#[test]
fn udp_nat_rewrites_and_updates_the_checksum() {
    let mut lb = Lb::new();
    let r1 = nat_dns(&mut lb);
    let query = Pkt::udp(33000, DNS);
    lb.expect(
        "UDP query",
        &query.frame(),
        XDP_TX,
        &nat_to(&query, REAL1, REAL_DNS).frame(),
    );
    assert_conn(
        &mut lb,
        &query.conn_key(),
        client_entry(r1, DNS, tcp_state::NONE, CONN_F_INACTIVE),
        "UDP client entry",
    );
    let rkey = reply_key(REAL1, REAL_DNS, 33000, IPPROTO_UDP);
    assert_conn(&mut lb, &rkey, reply_entry(r1, DNS), "UDP reply entry");
    lb.assert_counters(&[(counter::CONN_NEW, 1)], "UDP query");
}

/// UDP NAT with checksum 0 ("none"): it must stay 0 after the rewrite.
#[test]
fn udp_nat_zero_checksum_stays_zero() {
    let mut lb = Lb::new();
    nat_dns(&mut lb);
    let query = Pkt::udp(33000, DNS).with(|p| {
        p.l4 = L4::Udp {
            sport: 33000,
            dport: DNS,
            zero_checksum: true,
        }
    });
    let want = nat_to(&query, REAL1, REAL_DNS).frame();
    let out = lb.expect("UDP query without checksum", &query.frame(), XDP_TX, &want);
    assert_eq!(
        out[ETH + 20 + 6..ETH + 20 + 8],
        [0, 0],
        "UDP checksum field"
    );
}

/// UDP NAT reply: source back to VIP:53.
#[test]
fn udp_nat_reply_is_rewritten_back_to_the_vip() {
    let mut lb = Lb::new();
    nat_dns(&mut lb);
    let query = Pkt::udp(33000, DNS);
    lb.expect(
        "UDP query",
        &query.frame(),
        XDP_TX,
        &nat_to(&query, REAL1, REAL_DNS).frame(),
    );
    let answer = Pkt::udp(REAL_DNS, 33000)
        .from(REAL1, REAL_DNS)
        .to(CLIENT, 33000)
        .macs(real_mac(REAL1), DIRECTOR_REAL_MAC);
    lb.expect(
        "UDP answer",
        &answer.frame(),
        XDP_TX,
        &back_to_client(&answer, DNS).frame(),
    );
}

// ---------------------------------------------------------------- DR

/// DR: only the MAC addresses change; no reply entry, NOOUTPUT state.
#[test]
fn dr_changes_only_the_macs() {
    let mut lb = Lb::new();
    let r1 = http_with(&mut lb, dr_real(REAL1, HTTP));
    let syn = Pkt::tcp(40000, HTTP, SYN);
    let want = syn.clone().macs(DIRECTOR_REAL_MAC, real_mac(REAL1));
    lb.expect("DR SYN", &syn.frame(), XDP_TX, &want.frame());
    let entry = client_entry(r1, HTTP, tcp_state::SYN_RECV, CONN_F_NOOUTPUT);
    assert_conn(&mut lb, &syn.conn_key(), entry, "DR client entry");
    assert_eq!(lb.conn_count(), 1, "DR keeps no reply entry");
    lb.assert_counters(&[(counter::CONN_NEW, 1)], "DR SYN");
}

/// DR established: the director sees only the client's side, so a client
/// FIN means FIN_WAIT (IPVS's INPUT-ONLY table).
#[test]
fn dr_states_use_the_input_only_table() {
    let mut lb = Lb::new();
    http_with(&mut lb, dr_real(REAL1, HTTP));
    let key = Pkt::tcp(40000, HTTP, SYN).conn_key();
    for (flags, state) in [
        (SYN, tcp_state::SYN_RECV),
        (ACK, tcp_state::ESTABLISHED),
        (ACK | PSH, tcp_state::ESTABLISHED),
        (FIN | ACK, tcp_state::FIN_WAIT),
    ] {
        let pkt = Pkt::tcp(40000, HTTP, flags);
        let what = format!("DR segment with flags {flags:#04x}");
        lb.expect(
            &what,
            &pkt.frame(),
            XDP_TX,
            &pkt.clone().macs(DIRECTOR_REAL_MAC, real_mac(REAL1)).frame(),
        );
        assert_state(&mut lb, &key, state, &what);
    }
}

/// DR to a real behind another interface: XDP_REDIRECT.
#[test]
fn dr_to_another_interface_is_redirected() {
    let mut lb = Lb::new();
    http_with(
        &mut lb,
        Real {
            ifindex: OTHER_IFINDEX,
            ..dr_real(REAL1, HTTP)
        },
    );
    let syn = Pkt::tcp(40000, HTTP, SYN);
    let want = syn.clone().macs(DIRECTOR_REAL_MAC, real_mac(REAL1));
    lb.expect(
        "DR SYN via another interface",
        &syn.frame(),
        XDP_REDIRECT,
        &want.frame(),
    );
}

/// DR without a resolved next hop cannot be delivered: dropped.
#[test]
fn dr_without_next_hop_is_dropped() {
    let mut lb = Lb::new();
    http_with(
        &mut lb,
        Real {
            flags: 0,
            ..dr_real(REAL1, HTTP)
        },
    );
    let syn = Pkt::tcp(40000, HTTP, SYN).frame();
    lb.expect("DR SYN, no next hop", &syn, XDP_DROP, &syn);
    lb.assert_counters(
        &[(counter::CONN_NEW, 1), (counter::DROP_NO_NEXTHOP, 1)],
        "DR without next hop",
    );
}

/// A real that is the director itself (ldirectord's `fallback=127.0.0.1`,
/// IPVS's Local forwarding): every packet of its connection goes to the
/// kernel unchanged, whatever the method, and is counted for the real.
#[test]
fn a_local_real_gets_its_packets_through_the_kernel_unchanged() {
    // NAT still records its (unused) reply entry: IPVS binds the method
    // when the connection is made, and the sweeper removes both together.
    for (real, entries) in [(dr_real(REAL1, HTTP), 1), (nat_real(REAL1, REAL_HTTP), 2)] {
        let mut lb = Lb::new();
        let id = http_with(&mut lb, Real { flags: REAL_F_NEXTHOP | REAL_F_LOCAL, ..real });
        for flags in [SYN, ACK] {
            let pkt = Pkt::tcp(40000, HTTP, flags).frame();
            lb.expect("segment for a local real", &pkt, XDP_PASS, &pkt);
        }
        assert_eq!(lb.conn_count(), entries, "the connection is tracked");
        lb.assert_counters(&[(counter::CONN_NEW, 1), (counter::PASS_LOCAL, 2)], "local real");
        assert_eq!(lb.real_stats(id).inpkts, 2, "counted for the real");
    }
}

// ---------------------------------------------------------------- TUN

/// TUN: an outer IPv4 header towards the real, with the inner TOS, TTL, DF
/// and id, and Ethernet MACs of the real's hop.
#[test]
fn tun_encapsulates_in_ipip() {
    let mut lb = Lb::new();
    let r1 = http_with(&mut lb, tun_real(REAL1, HTTP));
    let syn = Pkt::tcp(40000, HTTP, SYN).with(|p| {
        p.tos = 0x28;
        p.id = 0xbeef;
        p.ttl = 57;
    });
    let input = syn.frame();
    let want = syn.tunnelled(DIRECTOR_IP, REAL1, DIRECTOR_REAL_MAC, real_mac(REAL1));
    let out = lb.expect("TUN SYN", &input, XDP_TX, &want);
    // What the comparison above implies, spelled out.
    let (outer, inner) = Ipv4Header::from_slice(&out[ETH..]).expect("outer header");
    assert_eq!(outer.protocol.0, 4, "IP-in-IP");
    assert_eq!(
        (outer.source, outer.destination),
        (DIRECTOR_IP, REAL1),
        "outer addresses"
    );
    assert_eq!(
        usize::from(outer.total_len),
        input.len() - ETH + 20,
        "outer total length"
    );
    let copied = (
        outer.dscp.value(),
        outer.time_to_live,
        outer.identification,
        outer.dont_fragment,
    );
    assert_eq!(
        copied,
        (0x28 >> 2, 57, 0xbeef, true),
        "DSCP, TTL, id, DF from the inner header"
    );
    assert_eq!(inner, &input[ETH..], "the inner packet, unchanged");
    assert_conn(
        &mut lb,
        &syn.conn_key(),
        client_entry(r1, HTTP, tcp_state::SYN_RECV, CONN_F_NOOUTPUT),
        "TUN entry",
    );
    lb.assert_counters(&[(counter::CONN_NEW, 1)], "TUN SYN");
}

/// TUN: a clear DF stays clear on the outer header; established packets and
/// inner IP options are tunnelled unchanged.
#[test]
fn tun_copies_a_clear_df_and_tunnels_established_packets() {
    let mut lb = Lb::new();
    http_with(
        &mut lb,
        Real {
            ifindex: OTHER_IFINDEX,
            ..tun_real(REAL1, HTTP)
        },
    );
    let no_df = |p: &mut Pkt| {
        p.df = false;
        p.options = vec![0x01, 0x01, 0x01, 0x00]; // NOP NOP NOP EOL
    };
    for (what, flags) in [("TUN SYN", SYN), ("TUN established", ACK | PSH)] {
        let pkt = Pkt::tcp(40000, HTTP, flags).with(no_df);
        let want = pkt.tunnelled(DIRECTOR_IP, REAL1, DIRECTOR_REAL_MAC, real_mac(REAL1));
        lb.expect(what, &pkt.frame(), XDP_REDIRECT, &want);
    }
}

// ---------------------------------------------------------------- not for us

/// Traffic that is not for a virtual service goes to the kernel untouched.
#[test]
fn non_vip_traffic_passes_untouched() {
    let mut lb = Lb::new();
    nat_http(&mut lb);
    let cases = [
        (
            "another address",
            Pkt::tcp(40000, HTTP, SYN).to(NOT_A_VIP, HTTP).frame(),
        ),
        ("another port on the VIP", Pkt::tcp(40000, 443, SYN).frame()),
        ("UDP to a TCP-only VIP:port", Pkt::udp(40000, HTTP).frame()),
        ("ICMP to the VIP", icmp_echo(VIP)),
    ];
    for (what, frame) in &cases {
        lb.expect(what, frame, XDP_PASS, frame);
    }
    lb.assert_counters(&[(counter::PASS_NOT_VIP, 3), (counter::PASS_ICMP, 1)], "non-VIP traffic");
    assert_eq!(lb.conn_count(), 0, "no connection recorded");
}

/// ARP is not IPv4: passed untouched.
#[test]
fn arp_passes_untouched() {
    let lb = Lb::new();
    let arp = arp_request();
    lb.expect("ARP who-has", &arp, XDP_PASS, &arp);
    lb.assert_counters(&[(counter::PASS_NOT_IP, 1)], "ARP");
}

/// IPv6 for no IPv6 service is the kernel's, untouched (tests/tests/ipv6.rs
/// has the IPv6 services).
#[test]
fn ipv6_for_no_service_passes_untouched() {
    let lb = Lb::new();
    let syn = ipv6_syn();
    lb.expect("IPv6 SYN", &syn, XDP_PASS, &syn);
    lb.assert_counters(&[(counter::PASS_NOT_VIP, 1)], "IPv6");
}

/// A TCP segment for a VIP with no connection that is not a SYN is the
/// kernel's to answer (IPVS schedules only on SYN). SYN+RST is impossible and
/// dropped (tests/tests/hostile.rs).
#[test]
fn tcp_without_connection_and_without_a_plain_syn_passes() {
    let mut lb = Lb::new();
    nat_http(&mut lb);
    for (what, flags) in [
        ("ACK", ACK),
        ("data", ACK | PSH),
        ("FIN", FIN | ACK),
    ] {
        let frame = Pkt::tcp(40000, HTTP, flags).frame();
        lb.expect(what, &frame, XDP_PASS, &frame);
    }
    lb.assert_counters(&[(counter::PASS_NOT_SYN, 3)], "segments without connection");
    assert_eq!(lb.conn_count(), 0, "no connection recorded");
}

// ---------------------------------------------------------------- malformed

/// Frames too short for the headers they announce are dropped as truncated.
#[test]
fn truncated_frames_are_dropped() {
    let mut lb = Lb::new();
    nat_http(&mut lb);
    let syn = Pkt::tcp(40000, HTTP, SYN).frame();
    let data = Pkt::tcp(40000, HTTP, ACK | PSH).frame();
    let cases = [
        (
            "Ethernet header alone",
            eth_header(ROUTER_MAC, DIRECTOR_MAC, EtherType::IPV4),
        ),
        ("half an IPv4 header", syn[..ETH + 10].to_vec()),
        (
            "IPv4 total length past the frame",
            data[..data.len() - 5].to_vec(),
        ),
        (
            "frame ends inside the TCP header",
            syn[..ETH + 20 + 10].to_vec(),
        ),
    ];
    for (what, frame) in &cases {
        lb.expect(what, frame, XDP_DROP, frame);
    }
    lb.assert_counters(&[(counter::DROP_TRUNCATED, 4)], "truncated frames");
}

/// Headers that cannot be valid are dropped as bad.
#[test]
fn malformed_headers_are_dropped() {
    let mut lb = Lb::new();
    nat_http(&mut lb);
    let syn = Pkt::tcp(40000, HTTP, SYN).frame();
    let cases = [
        ("IHL 4", patched(syn.clone(), ETH, &[0x44])),
        (
            "IP version 6 in an IPv4 frame",
            patched(syn.clone(), ETH, &[0x65]),
        ),
        (
            "total length shorter than the IP header",
            patched(syn.clone(), ETH + 2, &[0, 16]),
        ),
        (
            "TCP data offset 4",
            patched(syn.clone(), ETH + 20 + 12, &[0x40]),
        ),
    ];
    for (what, frame) in &cases {
        lb.expect(what, frame, XDP_DROP, frame);
    }
    lb.assert_counters(&[(counter::DROP_BAD_HEADER, 4)], "malformed headers");
}

/// An IPv4 total length that covers only part of the TCP header (the rest
/// of the header sits in the frame's Ethernet padding): lb_common's
/// `ParseError::BadHeader` lists "a total length shorter than the headers",
/// and the kernel trims the padding, so IPVS would never see these ports.
#[test]
fn total_length_short_of_the_l4_header_is_a_bad_header() {
    let mut lb = Lb::new();
    nat_http(&mut lb);
    let syn = Pkt::tcp(40000, HTTP, SYN);
    let mut ip = syn.ip_header();
    ip.total_len = 30;
    let mut frame = eth_header(ROUTER_MAC, DIRECTOR_MAC, EtherType::IPV4);
    ip.write(&mut frame).expect("IPv4 header serialises");
    frame.extend_from_slice(&syn.frame()[ETH + 20..]);
    frame.resize(60, 0);
    lb.expect("total length 30 with a TCP SYN", &frame, XDP_DROP, &frame);
    lb.assert_counters(&[(counter::DROP_BAD_HEADER, 1)], "short total length");
}

// ---------------------------------------------------------------- policy

/// No real with a weight: new connections are dropped, nothing recorded.
#[test]
fn all_reals_quiescent_drops_new_connections() {
    let mut lb = Lb::new();
    let service = lb.add_service(VIP, HTTP, IPPROTO_TCP);
    for addr in [REAL1, REAL2] {
        lb.add_real(
            service,
            Real {
                weight: 0,
                ..nat_real(addr, REAL_HTTP)
            },
        );
    }
    let syn = Pkt::tcp(40000, HTTP, SYN).frame();
    lb.expect("SYN with no available real", &syn, XDP_DROP, &syn);
    lb.assert_counters(&[(counter::DROP_NO_REAL, 1)], "no real");
    assert_eq!(lb.conn_count(), 0, "no connection recorded");
}

/// NAT with TTL 1: left to the kernel (which sends the ICMP time exceeded).
/// As in IPVS, the connection was scheduled before the transmit step.
#[test]
fn nat_with_ttl_1_passes_untouched() {
    let mut lb = Lb::new();
    nat_http(&mut lb);
    let syn = Pkt::tcp(40000, HTTP, SYN).ttl(1).frame();
    lb.expect("NAT SYN with TTL 1", &syn, XDP_PASS, &syn);
    lb.assert_counters(&[(counter::CONN_NEW, 1), (counter::PASS_TTL, 1)], "TTL 1");
}

/// NAT to a real whose next hop is not resolved yet: rewritten and passed,
/// MACs untouched. The kernel then routes it, resolves the neighbour and
/// decrements the TTL itself (`ip_forward`), so the data plane leaves the
/// TTL alone on this path: IPVS decrements once, not twice.
#[test]
fn nat_without_next_hop_is_rewritten_and_passed() {
    let mut lb = Lb::new();
    http_with(
        &mut lb,
        Real {
            flags: 0,
            ..nat_real(REAL1, REAL_HTTP)
        },
    );
    let syn = Pkt::tcp(40000, HTTP, SYN);
    let want = syn.clone().to(REAL1, REAL_HTTP);
    lb.expect(
        "NAT SYN, no next hop",
        &syn.frame(),
        XDP_PASS,
        &want.frame(),
    );
    lb.assert_counters(
        &[(counter::CONN_NEW, 1), (counter::PASS_NO_NEXTHOP, 1)],
        "NAT without next hop",
    );
}

/// TUN to a real whose next hop is not resolved: dropped and counted. The
/// kernel would discard an encapsulated packet whose source is the
/// director's own address as a martian, so passing it would only hide it.
#[test]
fn tun_without_next_hop_is_dropped() {
    let mut lb = Lb::new();
    http_with(
        &mut lb,
        Real {
            flags: 0,
            ..tun_real(REAL1, HTTP)
        },
    );
    let syn = Pkt::tcp(40000, HTTP, SYN).frame();
    lb.expect("TUN SYN, no next hop", &syn, XDP_DROP, &syn);
    lb.assert_counters(
        &[(counter::CONN_NEW, 1), (counter::DROP_NO_NEXTHOP, 1)],
        "TUN without next hop",
    );
}

/// A connection whose real now belongs to another service is stale: its
/// packets are dropped rather than sent to the wrong place.
#[test]
fn stale_real_drops_established_packets() {
    let mut lb = Lb::new();
    let [r1, ..] = nat_http(&mut lb);
    let syn = Pkt::tcp(40000, HTTP, SYN);
    lb.expect(
        "SYN",
        &syn.frame(),
        XDP_TX,
        &nat_to(&syn, REAL1, REAL_HTTP).frame(),
    );
    lb.set_real(
        r1,
        Real {
            service: 9,
            ..nat_real(REAL1, REAL_HTTP)
        },
    );
    let ack = Pkt::tcp(40000, HTTP, ACK).frame();
    lb.expect("ACK to a reused real slot", &ack, XDP_DROP, &ack);
    lb.assert_counters(
        &[(counter::CONN_NEW, 1), (counter::DROP_STALE_REAL, 1)],
        "stale real",
    );
}

/// The largest service the verifier allows: rr goes through all 256 reals
/// in order, then wraps to the first.
#[test]
fn rr_schedules_through_256_reals() {
    let mut lb = Lb::new();
    let service = lb.add_service(VIP, HTTP, IPPROTO_TCP);
    let addr = |i: usize| [10, 1, (i >> 8) as u8, i as u8];
    let ids: Vec<u32> = (0..MAX_REALS_PER_SERVICE)
        .map(|i| lb.add_real(service, dr_real(addr(i), HTTP)))
        .collect();
    for i in 0..=MAX_REALS_PER_SERVICE {
        let real = i % MAX_REALS_PER_SERVICE;
        let syn = Pkt::tcp(10000 + i as u16, HTTP, SYN);
        let want = syn.clone().macs(DIRECTOR_REAL_MAC, real_mac(addr(real)));
        lb.expect(
            &format!("SYN #{i} goes to real #{real}"),
            &syn.frame(),
            XDP_TX,
            &want.frame(),
        );
        assert_eq!(
            lb.conn(&syn.conn_key()).expect("an entry").real,
            ids[real],
            "SYN #{i}"
        );
    }
    assert_eq!(lb.sched_cursor(service), 1, "the cursor wrapped");
    lb.assert_counters(&[(counter::CONN_NEW, 257)], "257 SYNs");
}

// ---------------------------------------------------------------- decap

/// Decap: an IP-in-IP packet for a VIP loses its outer header; the Ethernet
/// header stays as it was.
#[test]
fn decap_strips_the_outer_header_for_a_vip() {
    let mut lb = Lb::new();
    lb.add_decap_vip(VIP);
    let inner = Pkt::tcp(40000, HTTP, SYN).with(|p| p.tos = 0x10);
    let input = inner.tunnelled(DIRECTOR_IP, REAL1, DIRECTOR_REAL_MAC, real_mac(REAL1));
    let mut want = eth_header(DIRECTOR_REAL_MAC, real_mac(REAL1), EtherType::IPV4);
    want.extend_from_slice(&inner.ip_bytes());
    lb.expect_decap("tunnelled SYN for a VIP", &input, XDP_PASS, &want);
    lb.assert_counters(&[(counter::DECAP, 1)], "decap");
}

/// Decap leaves alone tunnels for other addresses and plain packets.
#[test]
fn decap_leaves_other_packets_untouched() {
    let mut lb = Lb::new();
    lb.add_decap_vip(VIP);
    let cases = [
        (
            "tunnel for another address",
            Pkt::tcp(40000, HTTP, SYN).to(VIP2, HTTP).tunnelled(
                DIRECTOR_IP,
                REAL1,
                DIRECTOR_REAL_MAC,
                real_mac(REAL1),
            ),
        ),
        ("plain TCP to the VIP", Pkt::tcp(40000, HTTP, SYN).frame()),
        ("ARP", arp_request()),
    ];
    for (what, frame) in &cases {
        lb.expect_decap(what, frame, XDP_PASS, frame);
    }
    lb.assert_counters(&[], "nothing decapsulated");
}

/// What the director's TUN sends, decap turns back into the client's
/// original IP packet.
#[test]
fn decap_undoes_the_director_tunnel() {
    let mut director = Lb::new();
    http_with(&mut director, tun_real(REAL1, HTTP));
    let mut real = Lb::new();
    real.add_decap_vip(VIP);
    let syn = Pkt::tcp(40000, HTTP, SYN);
    let (action, tunnelled) = director.run(&syn.frame());
    assert_eq!(action_name(action), "XDP_TX", "director tunnels");
    let mut want = eth_header(DIRECTOR_REAL_MAC, real_mac(REAL1), EtherType::IPV4);
    want.extend_from_slice(&syn.ip_bytes());
    real.expect_decap(
        "decap of the director's output",
        &tunnelled,
        XDP_PASS,
        &want,
    );
}

// ---------------------------------------------------------------- stats

/// Forwarded packets are counted per real in REAL_STATS (COUNTERS has no
/// per-method forward counter): every method, both NAT directions, bytes of
/// the IP packet as it arrived.
#[test]
fn forwarded_packets_are_counted_per_real() {
    let mut lb = Lb::new();
    let [nat, ..] = nat_http(&mut lb);
    let dr_service = lb.add_service(VIP, 81, IPPROTO_TCP);
    let dr = lb.add_real(dr_service, dr_real(REAL2, 81));
    let tun_service = lb.add_service(VIP, 82, IPPROTO_TCP);
    let tun = lb.add_real(tun_service, tun_real(REAL3, 82));
    let sent = [
        (nat, Pkt::tcp(40000, HTTP, SYN)),
        (nat, from_real(REAL1, REAL_HTTP, 40000, SYN | ACK)),
        (dr, Pkt::tcp(40000, 81, SYN)),
        (tun, Pkt::tcp(40000, 82, SYN)),
    ];
    for (_, pkt) in &sent {
        let (action, _) = lb.run(&pkt.frame());
        assert_eq!(action_name(action), "XDP_TX", "{pkt:?}");
    }
    let ip_len = |i: usize| u64::from(sent[i].1.ip_header().total_len);
    let stat = |conns, inpkts, inbytes, outpkts, outbytes| Stats {
        conns,
        inpkts,
        inbytes,
        outpkts,
        outbytes,
    };
    assert_eq!(
        lb.real_stats(nat),
        stat(1, 1, ip_len(0), 1, ip_len(1)),
        "NAT real"
    );
    assert_eq!(lb.real_stats(dr), stat(1, 1, ip_len(2), 0, 0), "DR real");
    assert_eq!(
        lb.real_stats(tun),
        stat(1, 1, ip_len(3), 0, 0),
        "TUN real (inner bytes)"
    );
    lb.assert_counters(&[(counter::CONN_NEW, 3)], "three new connections");
}
