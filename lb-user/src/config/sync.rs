//! `[sync]`: connection sync between the directors of a VRRP pair (see
//! `crate::sync`).

use std::net::Ipv4Addr;

/// IPVS's sync daemon's group and port.
pub const DEFAULT_GROUP: Ipv4Addr = Ipv4Addr::new(224, 0, 0, 81);
pub const DEFAULT_PORT: u16 = 8848;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SyncConfig {
    /// Where sync messages are sent and received (the replies of synced NAT
    /// connections go out of the interface that holds their VIP).
    pub interface: String,
    /// The multicast group, used when there are no `peers`.
    pub group: Ipv4Addr,
    pub port: u16,
    /// Unicast destinations instead of the group.
    pub peers: Vec<Ipv4Addr>,
    /// Messages with another id are ignored (IPVS's syncid); the VRRP
    /// instance's VRID by default.
    pub id: u8,
}

/// `[sync]` as written.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct SyncSection {
    interface: Option<toml::Spanned<String>>,
    group: Option<toml::Spanned<String>>,
    port: Option<toml::Spanned<i64>>,
    #[serde(default)]
    peers: Vec<toml::Spanned<String>>,
    id: Option<toml::Spanned<i64>>,
}

/// Validates `[sync]`; `vrrp` gives the defaults of the interface, peers
/// and id (`interface`, `unicast_peers`, `vrid`), and sync needs it: only a
/// VRRP pair has a master to sync from.
pub(super) fn parse(
    at: &super::Locator<'_>,
    offset: usize,
    raw: &SyncSection,
    vrrp: Option<(&str, &[std::net::IpAddr], u8)>,
) -> Result<SyncConfig, super::ConfigError> {
    let Some((vrrp_interface, vrrp_peers, vrid)) = vrrp else {
        return Err(at.error(offset, "sync", "connection sync needs a [vrrp] section: only a VRRP pair has a master to sync from"));
    };
    let interface = raw.interface.as_ref().map_or_else(|| vrrp_interface.to_owned(), |i| i.get_ref().clone());
    if let Some(i) = raw.interface.as_ref().filter(|i| i.get_ref().is_empty() || i.get_ref().len() >= libc::IFNAMSIZ) {
        return Err(at.error(i.span().start, "sync.interface", format!("'{}' is not a valid interface name", i.get_ref())));
    }
    let group = match &raw.group {
        None => DEFAULT_GROUP,
        Some(g) => match g.get_ref().parse::<Ipv4Addr>() {
            Ok(a) if a.is_multicast() => a,
            _ => return Err(at.error(g.span().start, "sync.group", format!("'{}' is not an IPv4 multicast address", g.get_ref()))),
        },
    };
    let port = u16::try_from(at.ranged(raw.port.as_ref(), "sync.port", 1, 65535, u32::from(DEFAULT_PORT))?).unwrap_or(DEFAULT_PORT);
    let mut peers = Vec::new();
    for p in &raw.peers {
        let addr = p.get_ref().parse::<Ipv4Addr>().ok().filter(|a| !a.is_unspecified() && !a.is_multicast() && !a.is_broadcast());
        let Some(addr) = addr else {
            return Err(at.error(p.span().start, "sync.peers", format!("'{}' is not a unicast IPv4 address", p.get_ref())));
        };
        peers.push(addr);
    }
    if raw.peers.is_empty() {
        peers = vrrp_peers.iter().filter_map(|p| match p {
            std::net::IpAddr::V4(v4) => Some(*v4),
            std::net::IpAddr::V6(_) => None,
        }).collect();
        // Not to the group instead, silently: the operator chose unicast.
        if peers.is_empty() && !vrrp_peers.is_empty() {
            return Err(at.error(offset, "sync.peers", "the vrrp unicast_peers are IPv6, and connection sync is IPv4-only: list IPv4 sync.peers"));
        }
    }
    let id = u8::try_from(at.ranged(raw.id.as_ref(), "sync.id", 0, 255, u32::from(vrid))?).unwrap_or(vrid);
    Ok(SyncConfig { interface, group, port, peers, id })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{parse, render};

    const HEAD: &str = "[director]\ninterfaces = [\"e\"]\n[[virtual]]\naddress = \"10.0.0.1:80\"\n";
    const VRRP: &str = "[vrrp]\ninterface = \"eth1\"\nvrid = 51\nunicast_peers = [\"10.9.0.2\"]\n";

    #[test]
    fn defaults_come_from_the_vrrp_instance_and_round_trip() {
        let c = parse("t.toml", &format!("{HEAD}{VRRP}[sync]\n")).unwrap();
        let s = c.sync.clone().unwrap();
        assert_eq!(s, SyncConfig { interface: "eth1".into(), group: DEFAULT_GROUP, port: DEFAULT_PORT, peers: vec![Ipv4Addr::new(10, 9, 0, 2)], id: 51 });
        assert_eq!(parse("t.toml", &render(&c)).unwrap(), c);
        let c = parse("t.toml", &format!("{HEAD}{VRRP}[sync]\ninterface = \"eth2\"\ngroup = \"239.1.1.1\"\nport = 9000\npeers = [\"10.9.0.3\"]\nid = 7\n")).unwrap();
        let s = c.sync.clone().unwrap();
        assert_eq!((s.interface.as_str(), s.group, s.port, s.peers.as_slice(), s.id), ("eth2", Ipv4Addr::new(239, 1, 1, 1), 9000, &[Ipv4Addr::new(10, 9, 0, 3)][..], 7));
        assert_eq!(parse("t.toml", &render(&c)).unwrap(), c);
    }

    const VRRP6: &str = "[vrrp]\ninterface = \"eth1\"\nvrid = 51\naddresses = [\"2001:db8::1\"]\nunicast_peers = [\"fe80::2\"]\n";

    #[test]
    fn an_ipv6_vrrp_instance_lends_no_peers() {
        // Its IPv4 peers only: none here, so they must be listed.
        let c = parse("t.toml", &format!("{HEAD}{VRRP6}[sync]\npeers = [\"10.9.0.3\"]\n")).unwrap();
        assert_eq!(c.sync.unwrap().peers, [Ipv4Addr::new(10, 9, 0, 3)]);
        // Multicast VRRP over IPv6 leaves sync to its IPv4 group.
        let multicast = VRRP6.replace("unicast_peers = [\"fe80::2\"]\n", "");
        assert_eq!(parse("t.toml", &format!("{HEAD}{multicast}[sync]\n")).unwrap().sync.unwrap().peers, Vec::<Ipv4Addr>::new());
    }

    #[test]
    fn errors_name_the_key() {
        for (text, key, message) in [
            (format!("{HEAD}[sync]\n"), "sync", "needs a [vrrp] section"),
            (format!("{HEAD}{VRRP}[sync]\ngroup = \"10.0.0.1\"\n"), "sync.group", "not an IPv4 multicast address"),
            (format!("{HEAD}{VRRP}[sync]\nport = 0\n"), "sync.port", "out of range"),
            (format!("{HEAD}{VRRP}[sync]\npeers = [\"224.0.0.1\"]\n"), "sync.peers", "not a unicast"),
            (format!("{HEAD}{VRRP}[sync]\nid = 256\n"), "sync.id", "out of range"),
            (format!("{HEAD}{VRRP6}[sync]\n"), "sync.peers", "the vrrp unicast_peers are IPv6, and connection sync is IPv4-only"),
        ] {
            let e = parse("t.toml", &text).expect_err(&text);
            assert_eq!(e.key, key, "{e}");
            assert!(e.message.contains(message), "{e}");
        }
    }
}
