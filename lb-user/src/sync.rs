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

use std::{
    collections::HashMap,
    net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4},
    sync::Arc,
};

use aya::maps::{MapData, RingBuf};
use lb_common::{
    AF_INET, CONN_F_INACTIVE, CONN_F_NOOUTPUT, CONN_F_REPLY, Conn, ConnKey, SyncEvent, tcp_state, v4_addr,
};
use tokio::{io::unix::AsyncFd, net::UdpSocket};
use tracing::{debug, warn};

use crate::{
    config::sync::SyncConfig,
    dataplane::{Dataplane, Installed},
    timeouts::Timeouts,
};

pub mod wire;

const NS: u64 = 1_000_000_000;

fn v4(addr: [u32; 4]) -> Ipv4Addr {
    Ipv4Addr::from(addr[0].to_ne_bytes())
}

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
    /// plane finds it: the exact VIP first, then the longest range.
    fn service(&self, protocol: u8, vip: SocketAddrV4) -> Option<&'a Installed> {
        let candidates = self.services.iter().filter(|s| {
            let v = s.service.vip;
            s.service.protocol.number() == protocol
                && v.port == vip.port()
                && v.covers(IpAddr::V4(*vip.ip()))
        });
        candidates.max_by_key(|s| s.service.vip.prefix_len)
    }
}

/// The sync entry of a client entry the data plane handed over, or `None`
/// when its real is no longer installed.
#[must_use]
pub fn to_entry(dp: &Dataplane, dir: &Directory<'_>, event: &SyncEvent, timeouts: &Timeouts, now: u64) -> Option<wire::Entry> {
    let (key, conn) = (&event.key, &event.conn);
    let real = dir.reals.get(&conn.real)?;
    // The wire format names IPv4 addresses only.
    let IpAddr::V4(real_addr) = real.addr else { return None };
    if key.family != lb_common::AF_INET {
        return None;
    }
    let timeout_ns = timeouts.ns(key.proto, conn.state);
    let left = timeout_ns.saturating_sub(now.saturating_sub(conn.last_seen_ns));
    let nat = conn.flags & CONN_F_NOOUTPUT == 0;
    let peer_mac = if nat {
        let reply = ConnKey {
            saddr: v4_addr(real_addr.octets()),
            daddr: key.saddr,
            sport: real.port.to_be(),
            dport: key.sport,
            proto: key.proto,
            family: key.family,
            _pad: [0; 2],
        };
        dp.connection(&reply).map_or([0; 6], |r| r.peer_mac)
    } else {
        [0; 6]
    };
    let mut flags = 0;
    if !nat {
        flags |= wire::F_NOOUTPUT;
    }
    if conn.flags & CONN_F_INACTIVE != 0 {
        flags |= wire::F_INACTIVE;
    }
    Some(wire::Entry {
        protocol: key.proto,
        state: conn.state,
        flags,
        client: SocketAddrV4::new(v4(key.saddr), u16::from_be(key.sport)),
        virtual_addr: SocketAddrV4::new(v4(conn.vaddr), u16::from_be(conn.vport)),
        real: SocketAddrV4::new(real_addr, real.port),
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

/// Installs one synced connection in the backup's table (and, for NAT, the
/// entry its replies are found by), keeping the real counts exact: a new
/// entry is counted, one that moves between real or between active and
/// inactive is recounted.
///
/// # Errors
/// A [`Skip`] when the service, the real or room in the table is missing.
pub fn install(dp: &mut Dataplane, entry: &wire::Entry, timeouts: &Timeouts, now: u64, local: Local) -> Result<(), Skip> {
    let (service_id, real_id, real_forward_nat) = {
        let dir = Directory::new(dp.installed());
        let service = dir.service(entry.protocol, entry.virtual_addr).ok_or(Skip::NoService)?;
        let (real, id) = service
            .service
            .reals
            .iter()
            .zip(&service.real_ids)
            .find(|(r, _)| (r.addr, r.port) == (IpAddr::V4(*entry.real.ip()), entry.real.port()))
            .ok_or(Skip::NoReal)?;
        (service.id, *id, real.forward == crate::config::Forward::Nat)
    };
    let key = ConnKey {
        saddr: v4_addr(entry.client.ip().octets()),
        daddr: v4_addr(entry.virtual_addr.ip().octets()),
        sport: entry.client.port().to_be(),
        dport: entry.virtual_addr.port().to_be(),
        proto: entry.protocol,
        family: AF_INET,
        _pad: [0; 2],
    };
    let state = if usize::from(entry.state) < tcp_state::COUNT { entry.state } else { tcp_state::NONE };
    // Expire when the master would: `timeout` seconds from now.
    let full = timeouts.ns(entry.protocol, state);
    let last_seen_ns = now.saturating_sub(full.saturating_sub(u64::from(entry.timeout) * NS));
    let inactive = entry.flags & wire::F_INACTIVE != 0;
    let mut flags = if inactive { CONN_F_INACTIVE } else { 0 };
    if entry.flags & wire::F_NOOUTPUT != 0 {
        flags |= CONN_F_NOOUTPUT;
    }
    let conn = Conn {
        last_seen_ns,
        real: real_id,
        service: service_id,
        vaddr: key.daddr,
        vport: key.dport,
        state,
        flags,
        ..Conn::default()
    };
    let previous = dp.connection(&key);
    dp.put_connection(&key, &conn).map_err(|_| Skip::Table)?;
    let counters = dp.shared_counters();
    match previous {
        Some(old) if old.real == real_id && (old.flags & CONN_F_INACTIVE != 0) == inactive => {}
        Some(old) => {
            counters.unbind(old.real, old.flags & CONN_F_INACTIVE != 0, 0, 0);
            counters.bind(real_id, inactive);
        }
        None => counters.bind(real_id, inactive),
    }
    if real_forward_nat {
        let real = entry.real;
        let reply_key = ConnKey {
            saddr: v4_addr(real.ip().octets()),
            daddr: key.saddr,
            sport: real.port().to_be(),
            dport: key.sport,
            proto: key.proto,
            family: AF_INET,
            _pad: [0; 2],
        };
        let reply = Conn {
            flags: CONN_F_REPLY,
            ifindex: local.ifindex,
            peer_mac: entry.peer_mac,
            own_mac: local.mac,
            state: tcp_state::NONE,
            ..conn
        };
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
        for chunk in entries.chunks(wire::MAX_ENTRIES) {
            let message = wire::encode(sync_id, chunk);
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
