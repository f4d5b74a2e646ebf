//! Connection sync: the master streams its connections to the backup, so
//! that after a takeover established flows keep their real (and, in NAT,
//! their rewrite).
//!
//! IPVS's rules decide when: the data plane hands the controller a client
//! entry on its 3rd packet, every 50 packets after, and when TCP enters a
//! state a backup needs (`lb_common::sync_due`); the controller names its
//! service and real by address ([`wire`]) and sends it by UDP to a
//! multicast group or to the peers. The backup finds the same service and
//! real among its own and installs the entry, counted as IPVS's
//! `ip_vs_bind_dest()` would. A lost or late message costs one connection's
//! stickiness; a message naming what the backup does not have is skipped.
//!
//! Connections of both families are carried; the directors themselves talk
//! over IPv4 (the sync interface's address), as IPVS's sync daemon does by
//! default.

use std::{
    collections::HashMap,
    net::{Ipv4Addr, SocketAddr},
    sync::Arc,
};

use aya::maps::{MapData, RingBuf};
use lb_common::{CONN_F_INACTIVE, CONN_F_NOOUTPUT, CONN_F_REPLY, CONN_F_TEMPLATED, Conn, ConnKey, SyncEvent, tcp_state};
use tokio::{io::unix::AsyncFd, net::UdpSocket};
use tracing::{debug, warn};

use crate::{
    addr,
    config::sync::SyncConfig,
    dataplane::{Dataplane, Installed},
    timeouts::Timeouts,
};

pub mod wire;

const NS: u64 = 1_000_000_000;

/// Where each installed service and real is, by id and by address.
pub struct Directory<'a> {
    reals: HashMap<u32, &'a crate::config::Real>,
    services: &'a [Installed],
}

impl<'a> Directory<'a> {
    #[must_use]
    pub fn new(installed: &'a [Installed]) -> Self {
        let reals = installed.iter().flat_map(|s| s.real_ids.iter().copied().zip(&s.service.reals)).collect();
        Self { reals, services: installed }
    }

    /// The service a packet to `vip` of `protocol` belongs to, as the data
    /// plane finds it: the exact VIP first, then the longest range (of the
    /// VIP's family: `covers` compares families).
    fn service(&self, protocol: u8, vip: SocketAddr) -> Option<&'a Installed> {
        let candidates = self.services.iter().filter(|s| {
            let v = s.service.vip;
            s.service.protocol.number() == protocol && v.port == vip.port() && v.covers(vip.ip())
        });
        candidates.max_by_key(|s| s.service.vip.prefix_len)
    }
}

/// The key of a client's connection to a virtual service, as the data
/// plane records it.
fn client_key(client: SocketAddr, vip: SocketAddr, protocol: u8) -> ConnKey {
    let (saddr, family) = addr::to_map(client.ip());
    ConnKey {
        saddr,
        daddr: addr::to_map(vip.ip()).0,
        sport: client.port().to_be(),
        dport: vip.port().to_be(),
        proto: protocol,
        family,
        _pad: [0; 2],
    }
}

/// The key of a NAT connection's replies (real → client), as the data
/// plane records it next to the client's `key`.
fn reply_key(key: &ConnKey, real: SocketAddr) -> ConnKey {
    key.nat_reply(addr::to_map(real.ip()).0, real.port().to_be())
}

/// The sync entry of a client entry the data plane handed over, or `None`
/// when its real is no longer installed.
#[must_use]
pub fn to_entry(dp: &Dataplane, dir: &Directory<'_>, event: &SyncEvent, timeouts: &Timeouts, now: u64) -> Option<wire::Entry> {
    let real = dir.reals.get(&event.conn.real)?;
    entry_of(event, real, timeouts, now, |reply| dp.connection(reply).map(|r| r.peer_mac))
}

/// [`to_entry`] given the connection's real, with `reply_mac` reading the
/// client-side MAC from the NAT reply entry of a key. `None` when the
/// connection's family is neither or not its real's.
fn entry_of(
    event: &SyncEvent,
    real: &crate::config::Real,
    timeouts: &Timeouts,
    now: u64,
    reply_mac: impl FnOnce(&ConnKey) -> Option<[u8; 6]>,
) -> Option<wire::Entry> {
    let (key, conn) = (&event.key, &event.conn);
    let client = SocketAddr::new(addr::from_map(key.saddr, key.family)?, u16::from_be(key.sport));
    let virtual_addr = SocketAddr::new(addr::from_map(conn.vaddr, key.family)?, u16::from_be(conn.vport));
    let real = SocketAddr::new(real.addr, real.port);
    let endpoints = wire::Endpoints::new(client, virtual_addr, real)?;
    let timeout_ns = timeouts.ns(key.proto, conn.state);
    let left = timeout_ns.saturating_sub(now.saturating_sub(conn.last_seen_ns));
    let nat = conn.flags & CONN_F_NOOUTPUT == 0;
    let peer_mac = if nat { reply_mac(&reply_key(key, real)).unwrap_or([0; 6]) } else { [0; 6] };
    let mut flags = 0;
    if !nat {
        flags |= wire::F_NOOUTPUT;
    }
    if conn.flags & CONN_F_INACTIVE != 0 {
        flags |= wire::F_INACTIVE;
    }
    if conn.flags & CONN_F_TEMPLATED != 0 {
        flags |= wire::F_TEMPLATED;
    }
    Some(wire::Entry {
        protocol: key.proto,
        state: conn.state,
        flags,
        endpoints,
        timeout: u32::try_from(left.div_ceil(NS)).unwrap_or(u32::MAX),
        peer_mac,
    })
}

/// Why a synced entry was not installed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Skip {
    #[error("no such service here")]
    NoService,
    #[error("no such real in the service here")]
    NoReal,
    #[error("the connection table refused it")]
    Table,
}

/// The backup's interface towards clients, for NAT reply entries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Local {
    pub ifindex: u32,
    pub mac: [u8; 6],
}

/// What a synced connection becomes in the backup's table: the client's
/// entry, and for NAT the entry its replies are found by.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Placement {
    key: ConnKey,
    conn: Conn,
    reply: Option<(ConnKey, Conn)>,
}

/// Places a synced connection among the backup's own services and reals.
fn place(installed: &[Installed], entry: &wire::Entry, timeouts: &Timeouts, now: u64, local: Local) -> Result<Placement, Skip> {
    let (client, vip, real) = (entry.endpoints.client(), entry.endpoints.virtual_addr(), entry.endpoints.real());
    let service = Directory::new(installed).service(entry.protocol, vip).ok_or(Skip::NoService)?;
    let (real_config, real_id) = service
        .service
        .reals
        .iter()
        .zip(&service.real_ids)
        .find(|(r, _)| (r.addr, r.port) == (real.ip(), real.port()))
        .ok_or(Skip::NoReal)?;
    let key = client_key(client, vip, entry.protocol);
    let state = if usize::from(entry.state) < tcp_state::COUNT { entry.state } else { tcp_state::NONE };
    // Expire when the master would: `timeout` seconds from now.
    let full = timeouts.ns(entry.protocol, state);
    let last_seen_ns = now.saturating_sub(full.saturating_sub(u64::from(entry.timeout) * NS));
    let mut flags = if entry.flags & wire::F_INACTIVE != 0 { CONN_F_INACTIVE } else { 0 };
    if entry.flags & wire::F_NOOUTPUT != 0 {
        flags |= CONN_F_NOOUTPUT;
    }
    if entry.flags & wire::F_TEMPLATED != 0 {
        flags |= CONN_F_TEMPLATED;
    }
    let conn = Conn {
        last_seen_ns,
        real: *real_id,
        service: service.id,
        vaddr: key.daddr,
        vport: key.dport,
        state,
        flags,
        ..Conn::default()
    };
    let reply = (real_config.forward == crate::config::Forward::Nat).then(|| {
        let reply = Conn {
            flags: CONN_F_REPLY,
            ifindex: local.ifindex,
            peer_mac: entry.peer_mac,
            own_mac: local.mac,
            state: tcp_state::NONE,
            ..conn
        };
        (reply_key(&key, real), reply)
    });
    Ok(Placement { key, conn, reply })
}

/// Installs one synced connection in the backup's table (and, for NAT, the
/// entry its replies are found by), keeping the real counts exact: a new
/// entry is counted, one that moves between real or between active and
/// inactive is recounted.
///
/// # Errors
/// A [`Skip`] when the service, the real or room in the table is missing.
pub fn install(dp: &mut Dataplane, entry: &wire::Entry, timeouts: &Timeouts, now: u64, local: Local) -> Result<(), Skip> {
    let Placement { key, conn, reply } = place(dp.installed(), entry, timeouts, now, local)?;
    let inactive = conn.flags & CONN_F_INACTIVE != 0;
    let previous = dp.connection(&key);
    dp.put_connection(&key, &conn).map_err(|_| Skip::Table)?;
    let counters = dp.shared_counters();
    match previous {
        Some(old) if old.real == conn.real && (old.flags & CONN_F_INACTIVE != 0) == inactive => {}
        Some(old) => {
            counters.unbind(old.real, old.flags & CONN_F_INACTIVE != 0, 0, 0);
            counters.bind(conn.real, inactive);
        }
        None => counters.bind(conn.real, inactive),
    }
    if let Some((reply_key, reply)) = reply {
        dp.put_connection(&reply_key, &reply).map_err(|_| Skip::Table)?;
    }
    Ok(())
}

/// The sockets of sync: bound to the sync port on the sync interface, in
/// the group when there are no peers.
///
/// # Errors
/// When the socket cannot be made.
pub fn socket(config: &SyncConfig) -> std::io::Result<(UdpSocket, Vec<SocketAddr>)> {
    use socket2::{Domain, Protocol, Socket, Type};
    let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
    s.set_reuse_address(true)?;
    s.bind_device(Some(config.interface.as_bytes()))?;
    s.bind(&SocketAddr::from((Ipv4Addr::UNSPECIFIED, config.port)).into())?;
    let dests = if config.peers.is_empty() {
        let index = crate::ifindex(&config.interface).unwrap_or(0);
        s.join_multicast_v4_n(&config.group, &socket2::InterfaceIndexOrAddress::Index(index))?;
        s.set_multicast_loop_v4(false)?;
        s.set_multicast_ttl_v4(1)?;
        vec![SocketAddr::from((config.group, config.port))]
    } else {
        config.peers.iter().map(|p| SocketAddr::from((*p, config.port))).collect()
    };
    s.set_nonblocking(true)?;
    Ok((UdpSocket::from_std(s.into())?, dests))
}

/// The master's half: drains the data plane's ring, turns each event into
/// an entry with `translate`, and sends them in batches.
pub async fn send_forever(
    ring: RingBuf<MapData>,
    socket: Arc<UdpSocket>,
    dests: Vec<SocketAddr>,
    sync_id: u8,
    translate: impl Fn(&[SyncEvent]) -> Vec<wire::Entry>,
) {
    // SAFETY: the ring owns its fd for as long as the AsyncFd lives, and
    // nothing else closes it.
    let mut ring = match unsafe { AsyncFd::register_with_interest(ring, tokio::io::Interest::READABLE) } {
        Ok(fd) => fd,
        Err(e) => {
            warn!(error = %e.into_parts().1, "connection sync: cannot watch the event ring");
            return;
        }
    };
    loop {
        let Ok(mut guard) = ring.readable_mut().await else { return };
        let mut events = Vec::new();
        while let Some(item) = guard.get_inner_mut().next() {
            if item.len() >= std::mem::size_of::<SyncEvent>() {
                // SAFETY: the data plane writes whole `SyncEvent`s (plain
                // old data); read_unaligned makes no alignment assumption.
                events.push(unsafe { std::ptr::read_unaligned(item.as_ptr().cast::<SyncEvent>()) });
            }
        }
        guard.clear_ready();
        let entries = translate(&events);
        for message in wire::encode(sync_id, &entries) {
            for dest in &dests {
                if let Err(e) = socket.send_to(&message, dest).await {
                    debug!(%dest, error = %e, "connection sync: send failed");
                }
            }
        }
    }
}

/// The backup's half: receives messages and hands their entries to
/// `install` (which ignores them while this director is the master).
pub async fn receive_forever(socket: Arc<UdpSocket>, sync_id: u8, install: impl Fn(SocketAddr, Vec<wire::Entry>)) {
    let mut buf = vec![0u8; 65536];
    let mut last_complaint = None::<std::time::Instant>;
    loop {
        let Ok((len, from)) = socket.recv_from(&mut buf).await else { continue };
        match wire::decode(&buf[..len]) {
            Ok((id, entries)) if id == sync_id => install(from, entries),
            Ok(_) => {}
            Err(e) => {
                // Rate-limited: a flood of junk must not flood the log.
                if last_complaint.is_none_or(|t| t.elapsed().as_secs() >= 10) {
                    warn!(%from, error = %e, "connection sync: message dropped");
                    last_complaint = Some(std::time::Instant::now());
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use lb_common::{AF_INET, AF_INET6, IPPROTO_TCP, v4_addr, v6_addr};

    use super::*;

    const NOW: u64 = 10_000 * NS;
    const LOCAL: Local = Local { ifindex: 4, mac: [2, 0, 0, 0, 0, 0xdd] };

    /// Installed as the data plane would: service ids from 1, real ids from
    /// 10, in file order.
    fn installed(toml: &str) -> Vec<Installed> {
        let c = crate::config::parse("t.toml", &format!("[director]\ninterfaces = [\"e\"]\n{toml}")).unwrap();
        let mut next_real = 10;
        (1..)
            .zip(c.services)
            .map(|(id, service)| {
                let real_ids = service.reals.iter().map(|_| { next_real += 1; next_real - 1 }).collect();
                Installed { service, id, real_ids }
            })
            .collect()
    }

    fn sock(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    /// A client entry of the data plane's, as `connect.rs` records it.
    fn event(client: SocketAddr, vip: SocketAddr, real: u32, service: u32, flags: u8) -> SyncEvent {
        let key = client_key(client, vip, IPPROTO_TCP);
        let conn = Conn {
            last_seen_ns: NOW - 100 * NS,
            real,
            service,
            vaddr: key.daddr,
            vport: key.dport,
            state: tcp_state::ESTABLISHED,
            flags,
            pkts: 3,
            ..Conn::default()
        };
        SyncEvent { key, conn }
    }

    const NAT6: &str = "[[virtual]]\naddress = \"[2001:db8::100]:80\"\nforward = \"nat\"\n\
        [[virtual.real]]\naddress = \"[2001:db8:2::11]:8080\"\n[[virtual.real]]\naddress = \"[2001:db8:2::12]:8080\"\n";

    #[test]
    fn an_ipv6_nat_connection_goes_over_the_wire_and_is_installed_as_on_the_master() {
        let dir = installed(NAT6);
        let (client, vip) = (sock("[2001:db8:1::7]:40000"), sock("[2001:db8::100]:80"));
        let ev = event(client, vip, 11, 1, 0);
        let want_reply = ConnKey {
            saddr: v6_addr("2001:db8:2::12".parse::<std::net::Ipv6Addr>().unwrap().octets()),
            daddr: ev.key.saddr,
            sport: 8080u16.to_be(),
            dport: 40000u16.to_be(),
            proto: IPPROTO_TCP,
            family: AF_INET6,
            _pad: [0; 2],
        };
        let client_mac = [2, 0, 0, 0, 0, 0xcc];
        let timeouts = Timeouts::default();
        let real = Directory::new(&dir).reals[&11];
        let entry = entry_of(&ev, real, &timeouts, NOW, |reply| {
            assert_eq!(*reply, want_reply, "the master reads the MAC from the reply entry");
            Some(client_mac)
        })
        .unwrap();
        assert_eq!(
            entry,
            wire::Entry {
                protocol: IPPROTO_TCP,
                state: tcp_state::ESTABLISHED,
                flags: 0,
                endpoints: wire::Endpoints::new(client, vip, sock("[2001:db8:2::12]:8080")).unwrap(),
                timeout: 800,
                peer_mac: client_mac,
            }
        );
        let messages = wire::encode(51, &[entry]);
        let (_, got) = wire::decode(&messages[0]).unwrap();
        assert_eq!(got, [entry]);

        // The backup, later, with ids of its own.
        let mut backup = installed(&format!("[[virtual]]\naddress = \"10.0.0.1:80\"\n[[virtual.real]]\naddress = \"10.0.1.1\"\n{NAT6}"));
        backup[1].id = 5;
        backup[1].real_ids = vec![20, 21];
        let later = NOW + 7 * NS;
        let placed = place(&backup, &got[0], &timeouts, later, LOCAL).unwrap();
        assert_eq!(placed.key, ev.key, "the same client entry");
        let conn = Conn {
            last_seen_ns: later - 100 * NS,
            real: 21,
            service: 5,
            vaddr: ev.conn.vaddr,
            vport: ev.conn.vport,
            state: tcp_state::ESTABLISHED,
            flags: 0,
            ..Conn::default()
        };
        assert_eq!(placed.conn, conn);
        let reply = Conn { flags: CONN_F_REPLY, ifindex: LOCAL.ifindex, peer_mac: client_mac, own_mac: LOCAL.mac, state: tcp_state::NONE, ..conn };
        assert_eq!(placed.reply, Some((want_reply, reply)));
    }

    #[test]
    fn ipv6_entries_find_their_service_as_the_data_plane_would() {
        let dir = installed(
            "[[virtual]]\naddress = \"[2001:db8:100::/64]:80\"\n[[virtual.real]]\naddress = \"[2001:db8:2::1]\"\n\
             [[virtual]]\naddress = \"[2001:db8:100::/48]:80\"\n[[virtual.real]]\naddress = \"[2001:db8:2::2]\"\n\
             [[virtual]]\naddress = \"[2001:db8:100::5]:80\"\n[[virtual.real]]\naddress = \"[2001:db8:2::3]\"\n\
             [[virtual]]\naddress = \"10.0.0.1:80\"\n[[virtual.real]]\naddress = \"10.0.1.1\"\n",
        );
        let timeouts = Timeouts::default();
        let entry = |vip: &str, real: &str| wire::Entry {
            protocol: IPPROTO_TCP,
            state: tcp_state::ESTABLISHED,
            flags: wire::F_NOOUTPUT | wire::F_INACTIVE,
            endpoints: wire::Endpoints::new(sock("[2001:db8:1::7]:40000"), sock(vip), sock(real)).unwrap(),
            timeout: 10,
            peer_mac: [0; 6],
        };
        let service_of = |vip: &str, real: &str| place(&dir, &entry(vip, real), &timeouts, NOW, LOCAL).map(|p| (p.conn.service, p.conn.real));
        assert_eq!(service_of("[2001:db8:100::5]:80", "[2001:db8:2::3]:80"), Ok((3, 12)), "the exact VIP first");
        assert_eq!(service_of("[2001:db8:100::6]:80", "[2001:db8:2::1]:80"), Ok((1, 10)), "then the longest range");
        assert_eq!(service_of("[2001:db8:100:1::6]:80", "[2001:db8:2::2]:80"), Ok((2, 11)));
        assert_eq!(service_of("[2001:db8:100::6]:81", "[2001:db8:2::1]:81"), Err(Skip::NoService), "another port");
        assert_eq!(service_of("[2001:db8:200::6]:80", "[2001:db8:2::1]:80"), Err(Skip::NoService));
        assert_eq!(service_of("[::ffff:10.0.0.1]:80", "[::ffff:10.0.1.1]:80"), Err(Skip::NoService), "no family mixing");
        assert_eq!(service_of("[2001:db8:100::6]:80", "[2001:db8:2::2]:80"), Err(Skip::NoReal), "a real of another service");
        // Direct routing: no reply entry, the flags carried over.
        let placed = place(&dir, &entry("[2001:db8:100::6]:80", "[2001:db8:2::1]:80"), &timeouts, NOW, LOCAL).unwrap();
        assert_eq!(placed.reply, None);
        assert_eq!(placed.conn.flags, CONN_F_NOOUTPUT | CONN_F_INACTIVE);
        assert_eq!(placed.key.family, AF_INET6);
    }

    #[test]
    fn an_ipv4_connection_is_unchanged_and_families_do_not_mix() {
        let dir = installed("[[virtual]]\naddress = \"10.0.0.1:80\"\n[[virtual.real]]\naddress = \"10.0.1.1\"\nforward = \"dr\"\n");
        let timeouts = Timeouts::default();
        let real = Directory::new(&dir).reals[&10];
        let ev = event(sock("10.1.0.2:40000"), sock("10.0.0.1:80"), 10, 1, CONN_F_NOOUTPUT);
        let entry = entry_of(&ev, real, &timeouts, NOW, |_| panic!("DR has no reply entry")).unwrap();
        assert_eq!(entry.endpoints.real(), sock("10.0.1.1:80"));
        assert_eq!(entry.flags, wire::F_NOOUTPUT);
        let placed = place(&dir, &entry, &timeouts, NOW, LOCAL).unwrap();
        assert_eq!((placed.key, placed.key.family, placed.conn.vaddr), (ev.key, AF_INET, v4_addr([10, 0, 0, 1])));
        // A persistence template's connection stays one on the backup.
        let templated = event(sock("10.1.0.2:40001"), sock("10.0.0.1:80"), 10, 1, CONN_F_NOOUTPUT | CONN_F_TEMPLATED);
        let entry = entry_of(&templated, real, &timeouts, NOW, |_| None).unwrap();
        assert_eq!(entry.flags, wire::F_NOOUTPUT | wire::F_TEMPLATED);
        assert_eq!(place(&dir, &entry, &timeouts, NOW, LOCAL).unwrap().conn.flags & CONN_F_TEMPLATED, CONN_F_TEMPLATED);
        // A connection of another family than its real's, or of none, is not sent.
        let mut ev6 = event(sock("[2001:db8:1::7]:40000"), sock("[2001:db8::100]:80"), 10, 1, 0);
        assert_eq!(entry_of(&ev6, real, &timeouts, NOW, |_| None), None);
        ev6.key.family = 0;
        assert_eq!(entry_of(&ev6, real, &timeouts, NOW, |_| None), None);
    }
}
