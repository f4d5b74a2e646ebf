//! The Prometheus endpoint: a [`Snapshot`] in the text exposition format
//! 0.0.4, served at `GET /metrics`.
//!
//! The text is written here rather than through the `prometheus-client`
//! crate: that crate keeps long-lived metric objects in a registry and
//! writes OpenMetrics text, whereas each scrape here turns one snapshot,
//! whose label sets come and go with the configuration, into a few lines
//! per family; mirroring the snapshot into a registry on every scrape would
//! be more code than the format itself.

use std::{collections::BTreeMap, convert::Infallible, fmt::Write as _, sync::Arc, time::Duration};

use http_body_util::Full;
use hyper::{
    Method, Request, Response, StatusCode,
    body::Bytes,
    header::{ALLOW, CONTENT_TYPE as CONTENT_TYPE_HEADER},
    server::conn::http1,
    service::service_fn,
};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;

use crate::view::{RealView, ServiceView, Snapshot};

/// The `Content-Type` of the text exposition format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";
/// The path Prometheus scrapes.
pub const PATH: &str = "/metrics";
/// A client that has not sent its request headers by then is dropped, so
/// idle connections cannot pile up.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// The name under which the director adds the table's evictions to the
/// snapshot's counters (they are the controller's, not a packet reason).
pub const EVICTED: &str = "conn_evicted";

/// What the endpoint serves: the metrics text, or why there is none.
pub type Source = Arc<dyn Fn() -> Result<String, String> + Send + Sync>;

/// One metric family: its samples, each a label block and a value.
struct Family {
    name: &'static str,
    kind: &'static str,
    help: &'static str,
    samples: Vec<(String, String)>,
}

impl Family {
    const fn new(name: &'static str, kind: &'static str, help: &'static str) -> Self {
        Self { name, kind, help, samples: Vec::new() }
    }

    fn push(&mut self, labels: &[(&str, &str)], value: String) {
        self.samples.push((label_block(labels), value));
    }

    /// HELP, TYPE and the samples; nothing for a family without samples.
    fn write(&self, out: &mut String) {
        if self.samples.is_empty() {
            return;
        }
        let _ = writeln!(out, "# HELP {} {}", self.name, escape_help(self.help));
        let _ = writeln!(out, "# TYPE {} {}", self.name, self.kind);
        for (labels, value) in &self.samples {
            let _ = writeln!(out, "{}{labels} {value}", self.name);
        }
    }
}

/// `{a="x",b="y"}`, with the values escaped as the format requires.
fn label_block(labels: &[(&str, &str)]) -> String {
    if labels.is_empty() {
        return String::new();
    }
    let mut block = String::from("{");
    for (i, (name, value)) in labels.iter().enumerate() {
        if i > 0 {
            block.push(',');
        }
        let _ = write!(block, "{name}=\"{}\"", escape_label(value));
    }
    block.push('}');
    block
}

/// A label value: backslash, double quote and line feed escaped.
fn escape_label(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// A HELP text: backslash and line feed escaped.
fn escape_help(text: &str) -> String {
    text.replace('\\', "\\\\").replace('\n', "\\n")
}

/// A float as the format spells it (`NaN`, `+Inf`, `-Inf`).
fn float(v: f64) -> String {
    if v.is_nan() {
        "NaN".to_owned()
    } else if v.is_infinite() {
        (if v > 0.0 { "+Inf" } else { "-Inf" }).to_owned()
    } else {
        v.to_string()
    }
}

/// The VRRP instance as Prometheus text: its state (one sample per state,
/// 1 for the current one), priority, the master and the family, the
/// addresses (whether advertised or only moved, as excluded ones),
/// transitions, adverts and drops. Addresses are written bare, IPv6 ones
/// too (`fe80::1`), as keepalived writes them.
#[must_use]
pub fn render_vrrp(status: &crate::vrrp::Status) -> String {
    let vrid = status.vrid.to_string();
    let master = status.master.map_or_else(String::new, |m| m.to_string());
    let id = [("interface", status.interface.as_str()), ("vrid", vrid.as_str())];
    let mut state = Family::new("xlvs_vrrp_state", "gauge", "1 for the VRRP instance's current state.");
    for name in ["init", "backup", "master", "fault"] {
        let current = status.state.name().eq_ignore_ascii_case(name);
        state.push(&[id[0], id[1], ("state", name)], u64::from(current).to_string());
    }
    let mut priority = Family::new("xlvs_vrrp_priority", "gauge", "The instance's VRRP priority.");
    priority.push(&id, status.priority.to_string());
    let mut is_master = Family::new("xlvs_vrrp_master_info", "gauge", "The current master's address and the instance's family, as labels.");
    is_master.push(&[id[0], id[1], ("family", status.family.key()), ("master", master.as_str())], "1".to_owned());
    let mut addresses = Family::new(
        "xlvs_vrrp_address_info",
        "gauge",
        "The instance's addresses: advertised (of its family) or not (excluded: moved with the role only).",
    );
    for (list, advertised) in [(&status.addresses, "true"), (&status.excluded, "false")] {
        for a in list {
            addresses.push(&[id[0], id[1], ("address", a.as_str()), ("advertised", advertised)], "1".to_owned());
        }
    }
    let mut transitions = Family::new("xlvs_vrrp_transitions_total", "counter", "Entries into backup, master or fault.");
    transitions.push(&id, status.transitions.to_string());
    let mut adverts = Family::new("xlvs_vrrp_adverts_total", "counter", "Adverts sent and accepted.");
    adverts.push(&[id[0], id[1], ("direction", "sent")], status.adverts_sent.to_string());
    adverts.push(&[id[0], id[1], ("direction", "received")], status.adverts_received.to_string());
    let mut drops = Family::new("xlvs_vrrp_dropped_total", "counter", "Adverts dropped, by reason.");
    for (reason, n) in status.drops.iter() {
        let reason = format!("{reason:?}");
        drops.push(&[id[0], id[1], ("reason", reason.as_str())], n.to_string());
    }
    let mut out = String::new();
    for family in [&state, &priority, &is_master, &addresses, &transitions, &adverts, &drops] {
        family.write(&mut out);
    }
    out
}

/// The snapshot as Prometheus text: per service, per real, and the data
/// plane's reason counters. Services and reals come in `xlvs list` order.
#[must_use]
pub fn render(snapshot: &Snapshot) -> String {
    let mut svc_conns = Family::new(
        "xlvs_service_connections_total",
        "counter",
        "Connections scheduled for the virtual service (ipvsadm --stats Conns).",
    );
    let mut svc_packets = Family::new(
        "xlvs_service_packets_total",
        "counter",
        "Packets of the virtual service: in from clients, out from reals (out only passes the director with nat).",
    );
    let mut svc_bytes = Family::new("xlvs_service_bytes_total", "counter", "Bytes of the virtual service, in and out.");
    let mut real_conns =
        Family::new("xlvs_real_connections_total", "counter", "Connections scheduled to the real server.");
    let mut real_packets =
        Family::new("xlvs_real_packets_total", "counter", "Packets to (in) and from (out) the real server.");
    let mut real_bytes =
        Family::new("xlvs_real_bytes_total", "counter", "Bytes to (in) and from (out) the real server.");
    let mut active =
        Family::new("xlvs_real_active_connections", "gauge", "Established connections of the real (ActiveConn).");
    let mut inactive = Family::new(
        "xlvs_real_inactive_connections",
        "gauge",
        "Connections of the real in any other state (InActConn).",
    );
    let mut weight =
        Family::new("xlvs_real_weight", "gauge", "The real's weight in the data plane (0: no new connections).");
    let mut up = Family::new("xlvs_real_up", "gauge", "1 when the real's health checks pass, 0 when they fail.");
    let mut latency =
        Family::new("xlvs_real_check_latency_seconds", "gauge", "How long the real's last health check took.");

    let mut services: Vec<&ServiceView> = snapshot.services.iter().collect();
    services.sort_by_key(|s| (s.protocol.clone(), s.address.addr, s.address.port, s.address.prefix_len));
    for service in services {
        let vip = service.address.to_string();
        let svc = [("protocol", service.protocol.as_str()), ("vip", vip.as_str())];
        let st = &service.stats;
        svc_conns.push(&svc, st.conns.to_string());
        for (direction, packets, bytes) in [("in", st.inpkts, st.inbytes), ("out", st.outpkts, st.outbytes)] {
            svc_packets.push(&[svc[0], svc[1], ("direction", direction)], packets.to_string());
            svc_bytes.push(&[svc[0], svc[1], ("direction", direction)], bytes.to_string());
        }
        let mut reals: Vec<&RealView> = service.reals.iter().collect();
        reals.sort_by_key(|r| (r.address.ip(), r.address.port()));
        for real in reals {
            let address = real.address.to_string();
            let labels = [svc[0], svc[1], ("real", address.as_str())];
            let st = &real.stats;
            // A real its checks took out of the service has no counters in
            // the data plane; only its health is known.
            if real.in_service {
                real_conns.push(&labels, st.conns.to_string());
                for (direction, packets, bytes) in [("in", st.inpkts, st.inbytes), ("out", st.outpkts, st.outbytes)] {
                    let with = [labels[0], labels[1], labels[2], ("direction", direction)];
                    real_packets.push(&with, packets.to_string());
                    real_bytes.push(&with, bytes.to_string());
                }
                active.push(&labels, real.active.to_string());
                inactive.push(&labels, real.inactive.to_string());
                weight.push(&labels, real.weight.to_string());
            }
            if let Some(health) = &real.health {
                up.push(&labels, u8::from(health.up).to_string());
                if let Some(ms) = health.last_latency_ms {
                    latency.push(&labels, float(ms / 1000.0));
                }
            }
        }
    }

    let mut reasons = Family::new(
        "xlvs_xdp_packets_total",
        "counter",
        "Packets the XDP program counted, by reason (see lb-common's counter module).",
    );
    let mut evicted = Family::new(
        "xlvs_conn_evictions_total",
        "counter",
        "Connections the full connection table evicted (least recently used first), found and uncounted by the sweeper.",
    );
    for (reason, value) in &snapshot.counters {
        if reason == EVICTED {
            evicted.push(&[], value.to_string());
        } else {
            reasons.push(&[("reason", reason)], value.to_string());
        }
    }
    // The data plane counts reasons, not actions: every pass_* reason ends
    // in XDP_PASS and every drop_* reason in XDP_DROP, but forwarded
    // packets are counted per real only, so XDP_TX and XDP_REDIRECT cannot
    // be told apart and are left out.
    let mut actions = Family::new(
        "xlvs_xdp_actions_total",
        "counter",
        "Packets the XDP program passed to the kernel or dropped (the sums of the pass_* and drop_* reasons).",
    );
    if !snapshot.counters.is_empty() {
        let sum = |prefix: &str| -> u64 {
            snapshot.counters.iter().filter(|(n, _)| n.starts_with(prefix)).map(|(_, v)| *v).sum()
        };
        let derived: BTreeMap<&str, u64> = [("drop", sum("drop_")), ("pass", sum("pass_"))].into();
        for (action, value) in derived {
            actions.push(&[("action", action)], value.to_string());
        }
    }

    let mut out = String::new();
    for family in [
        &evicted,
        &svc_conns,
        &svc_packets,
        &svc_bytes,
        &real_conns,
        &real_packets,
        &real_bytes,
        &active,
        &inactive,
        &weight,
        &up,
        &latency,
        &reasons,
        &actions,
    ] {
        family.write(&mut out);
    }
    out
}

/// Answers `GET /metrics` (and HEAD) on `listener` with what `source`
/// returns, over HTTP/1.1, until the task is dropped. Any other path is 404,
/// any other method 405, and an error from `source` a 500 with its text.
pub async fn serve(listener: TcpListener, source: Arc<dyn Fn() -> Result<String, String> + Send + Sync>) {
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of file descriptors and the like: wait instead of spinning.
                tracing::warn!(error = %e, "metrics endpoint: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let source = source.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request: Request<hyper::body::Incoming>| {
                let response = respond(request.method(), request.uri().path(), source.as_ref());
                async move { Ok::<_, Infallible>(response) }
            });
            let mut builder = http1::Builder::new();
            builder.timer(TokioTimer::new()).header_read_timeout(HEADER_TIMEOUT);
            if let Err(e) = builder.serve_connection(TokioIo::new(stream), service).await {
                tracing::debug!(error = %e, "metrics endpoint: connection ended");
            }
        });
    }
}

fn respond(
    method: &Method,
    path: &str,
    source: &(dyn Fn() -> Result<String, String> + Send + Sync),
) -> Response<Full<Bytes>> {
    let reply = |status: StatusCode, content_type: &str, body: String| {
        let mut response = Response::new(Full::new(Bytes::from(body)));
        *response.status_mut() = status;
        if let Ok(value) = content_type.parse() {
            response.headers_mut().insert(CONTENT_TYPE_HEADER, value);
        }
        response
    };
    if path != PATH {
        return reply(
            StatusCode::NOT_FOUND,
            "text/plain; charset=utf-8",
            "not found: metrics are at /metrics\n".into(),
        );
    }
    if method != Method::GET && method != Method::HEAD {
        let mut response =
            reply(StatusCode::METHOD_NOT_ALLOWED, "text/plain; charset=utf-8", "only GET and HEAD\n".into());
        response.headers_mut().insert(ALLOW, hyper::header::HeaderValue::from_static("GET, HEAD"));
        return response;
    }
    match source() {
        Ok(text) => reply(StatusCode::OK, CONTENT_TYPE, text),
        Err(e) => reply(StatusCode::INTERNAL_SERVER_ERROR, "text/plain; charset=utf-8", format!("{e}\n")),
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read as _, Write as _};

    use super::*;
    use crate::view::{RateView, RealHealth, StatsView};

    fn real(address: &str, weight: u32, active: u64, inactive: u64, conns: u64) -> RealView {
        RealView {
            address: address.parse().unwrap(),
            forward: "nat".into(),
            weight,
            active,
            inactive,
            persistent_conns: 0,
            u_threshold: 0,
            l_threshold: 0,
            overloaded: false,
            stats: StatsView {
                conns,
                inpkts: conns * 6,
                outpkts: conns * 5,
                inbytes: conns * 400,
                outbytes: conns * 600,
            },
            rate: RateView::default(),
            health: None,
            in_service: true,
        }
    }

    fn snapshot() -> Snapshot {
        let mut a = real("10.0.1.12:8080", 2, 1, 0, 1);
        a.health = Some(RealHealth {
            up: true,
            check: "http".into(),
            checks: 10,
            failures: 0,
            last_latency_ms: Some(1.5),
            last_error: None,
            fallback: false,
        });
        let mut b = real("10.0.1.11:8080", 0, 0, 3, 3);
        b.health = Some(RealHealth {
            up: false,
            check: "connect".into(),
            checks: 10,
            failures: 4,
            last_latency_ms: None,
            last_error: Some("refused".into()),
            fallback: false,
        });
        let service = |protocol: &str, address: &str, reals: Vec<RealView>| ServiceView {
            protocol: protocol.into(),
            address: address.parse().unwrap(),
            scheduler: "rr".into(),
            scheduler_flags: Vec::new(),
            persistent: None,
            netmask: None,
            stats: reals.iter().fold(StatsView::default(), |acc, r| acc + r.stats),
            reals,
            rate: RateView::default(),
        };
        Snapshot {
            conn_table_size: 4096,
            services: vec![
                service("udp", "10.100.0.100:53", vec![real("10.0.1.13:53", 1, 0, 2, 2)]),
                service("tcp", "10.50.0.0/16:80", vec![a, b]),
            ],
            counters: [
                ("pass_not_ip", 7),
                ("pass_not_vip", 3),
                ("drop_no_real", 2),
                ("drop_truncated", 1),
                ("conn_new", 6),
            ]
            .into_iter()
            .map(|(n, v)| (n.to_owned(), v))
            .collect(),
        }
    }

    const EXPECTED: &str = r#"# HELP xlvs_service_connections_total Connections scheduled for the virtual service (ipvsadm --stats Conns).
# TYPE xlvs_service_connections_total counter
xlvs_service_connections_total{protocol="tcp",vip="10.50.0.0/16:80"} 4
xlvs_service_connections_total{protocol="udp",vip="10.100.0.100:53"} 2
# HELP xlvs_service_packets_total Packets of the virtual service: in from clients, out from reals (out only passes the director with nat).
# TYPE xlvs_service_packets_total counter
xlvs_service_packets_total{protocol="tcp",vip="10.50.0.0/16:80",direction="in"} 24
xlvs_service_packets_total{protocol="tcp",vip="10.50.0.0/16:80",direction="out"} 20
xlvs_service_packets_total{protocol="udp",vip="10.100.0.100:53",direction="in"} 12
xlvs_service_packets_total{protocol="udp",vip="10.100.0.100:53",direction="out"} 10
# HELP xlvs_service_bytes_total Bytes of the virtual service, in and out.
# TYPE xlvs_service_bytes_total counter
xlvs_service_bytes_total{protocol="tcp",vip="10.50.0.0/16:80",direction="in"} 1600
xlvs_service_bytes_total{protocol="tcp",vip="10.50.0.0/16:80",direction="out"} 2400
xlvs_service_bytes_total{protocol="udp",vip="10.100.0.100:53",direction="in"} 800
xlvs_service_bytes_total{protocol="udp",vip="10.100.0.100:53",direction="out"} 1200
# HELP xlvs_real_connections_total Connections scheduled to the real server.
# TYPE xlvs_real_connections_total counter
xlvs_real_connections_total{protocol="tcp",vip="10.50.0.0/16:80",real="10.0.1.11:8080"} 3
xlvs_real_connections_total{protocol="tcp",vip="10.50.0.0/16:80",real="10.0.1.12:8080"} 1
xlvs_real_connections_total{protocol="udp",vip="10.100.0.100:53",real="10.0.1.13:53"} 2
# HELP xlvs_real_packets_total Packets to (in) and from (out) the real server.
# TYPE xlvs_real_packets_total counter
xlvs_real_packets_total{protocol="tcp",vip="10.50.0.0/16:80",real="10.0.1.11:8080",direction="in"} 18
xlvs_real_packets_total{protocol="tcp",vip="10.50.0.0/16:80",real="10.0.1.11:8080",direction="out"} 15
xlvs_real_packets_total{protocol="tcp",vip="10.50.0.0/16:80",real="10.0.1.12:8080",direction="in"} 6
xlvs_real_packets_total{protocol="tcp",vip="10.50.0.0/16:80",real="10.0.1.12:8080",direction="out"} 5
xlvs_real_packets_total{protocol="udp",vip="10.100.0.100:53",real="10.0.1.13:53",direction="in"} 12
xlvs_real_packets_total{protocol="udp",vip="10.100.0.100:53",real="10.0.1.13:53",direction="out"} 10
# HELP xlvs_real_bytes_total Bytes to (in) and from (out) the real server.
# TYPE xlvs_real_bytes_total counter
xlvs_real_bytes_total{protocol="tcp",vip="10.50.0.0/16:80",real="10.0.1.11:8080",direction="in"} 1200
xlvs_real_bytes_total{protocol="tcp",vip="10.50.0.0/16:80",real="10.0.1.11:8080",direction="out"} 1800
xlvs_real_bytes_total{protocol="tcp",vip="10.50.0.0/16:80",real="10.0.1.12:8080",direction="in"} 400
xlvs_real_bytes_total{protocol="tcp",vip="10.50.0.0/16:80",real="10.0.1.12:8080",direction="out"} 600
xlvs_real_bytes_total{protocol="udp",vip="10.100.0.100:53",real="10.0.1.13:53",direction="in"} 800
xlvs_real_bytes_total{protocol="udp",vip="10.100.0.100:53",real="10.0.1.13:53",direction="out"} 1200
# HELP xlvs_real_active_connections Established connections of the real (ActiveConn).
# TYPE xlvs_real_active_connections gauge
xlvs_real_active_connections{protocol="tcp",vip="10.50.0.0/16:80",real="10.0.1.11:8080"} 0
xlvs_real_active_connections{protocol="tcp",vip="10.50.0.0/16:80",real="10.0.1.12:8080"} 1
xlvs_real_active_connections{protocol="udp",vip="10.100.0.100:53",real="10.0.1.13:53"} 0
# HELP xlvs_real_inactive_connections Connections of the real in any other state (InActConn).
# TYPE xlvs_real_inactive_connections gauge
xlvs_real_inactive_connections{protocol="tcp",vip="10.50.0.0/16:80",real="10.0.1.11:8080"} 3
xlvs_real_inactive_connections{protocol="tcp",vip="10.50.0.0/16:80",real="10.0.1.12:8080"} 0
xlvs_real_inactive_connections{protocol="udp",vip="10.100.0.100:53",real="10.0.1.13:53"} 2
# HELP xlvs_real_weight The real's weight in the data plane (0: no new connections).
# TYPE xlvs_real_weight gauge
xlvs_real_weight{protocol="tcp",vip="10.50.0.0/16:80",real="10.0.1.11:8080"} 0
xlvs_real_weight{protocol="tcp",vip="10.50.0.0/16:80",real="10.0.1.12:8080"} 2
xlvs_real_weight{protocol="udp",vip="10.100.0.100:53",real="10.0.1.13:53"} 1
# HELP xlvs_real_up 1 when the real's health checks pass, 0 when they fail.
# TYPE xlvs_real_up gauge
xlvs_real_up{protocol="tcp",vip="10.50.0.0/16:80",real="10.0.1.11:8080"} 0
xlvs_real_up{protocol="tcp",vip="10.50.0.0/16:80",real="10.0.1.12:8080"} 1
# HELP xlvs_real_check_latency_seconds How long the real's last health check took.
# TYPE xlvs_real_check_latency_seconds gauge
xlvs_real_check_latency_seconds{protocol="tcp",vip="10.50.0.0/16:80",real="10.0.1.12:8080"} 0.0015
# HELP xlvs_xdp_packets_total Packets the XDP program counted, by reason (see lb-common's counter module).
# TYPE xlvs_xdp_packets_total counter
xlvs_xdp_packets_total{reason="conn_new"} 6
xlvs_xdp_packets_total{reason="drop_no_real"} 2
xlvs_xdp_packets_total{reason="drop_truncated"} 1
xlvs_xdp_packets_total{reason="pass_not_ip"} 7
xlvs_xdp_packets_total{reason="pass_not_vip"} 3
# HELP xlvs_xdp_actions_total Packets the XDP program passed to the kernel or dropped (the sums of the pass_* and drop_* reasons).
# TYPE xlvs_xdp_actions_total counter
xlvs_xdp_actions_total{action="drop"} 3
xlvs_xdp_actions_total{action="pass"} 10
"#;

    #[test]
    fn text_for_a_fixed_snapshot() {
        assert_eq!(render(&snapshot()), EXPECTED);
    }

    #[test]
    fn label_values_and_help_are_escaped() {
        assert_eq!(label_block(&[("a", "x\\y\"z\nw"), ("b", "")]), r#"{a="x\\y\"z\nw",b=""}"#);
        assert_eq!(escape_help("a\\b\nc\"d"), r#"a\\b\nc"d"#);
        assert_eq!(
            [float(f64::NAN), float(f64::INFINITY), float(f64::NEG_INFINITY), float(0.25)],
            ["NaN", "+Inf", "-Inf", "0.25"]
        );
        // A snapshot with nothing in it is an empty exposition.
        assert_eq!(render(&Snapshot::default()), "");
    }

    /// Sends `request` to `addr` and reads the whole answer (the server
    /// closes after `Connection: close`).
    fn exchange(addr: std::net::SocketAddr, request: &str) -> String {
        let mut stream = std::net::TcpStream::connect(addr).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        stream.write_all(request.as_bytes()).unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).unwrap();
        answer
    }

    #[tokio::test]
    async fn serves_metrics_over_http() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let fail = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let source: Source = {
            let fail = fail.clone();
            Arc::new(move || {
                if fail.load(std::sync::atomic::Ordering::Relaxed) {
                    Err("the data plane is gone".into())
                } else {
                    Ok(render(&snapshot()))
                }
            })
        };
        let server = tokio::spawn(serve(listener, source));
        let answers = tokio::task::spawn_blocking(move || {
            let get =
                |path: &str| exchange(addr, &format!("GET {path} HTTP/1.1\r\nHost: xlvs\r\nConnection: close\r\n\r\n"));
            let ok = get("/metrics");
            let missing = get("/");
            let post = exchange(
                addr,
                "POST /metrics HTTP/1.1\r\nHost: xlvs\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            );
            fail.store(true, std::sync::atomic::Ordering::Relaxed);
            let failed = get("/metrics");
            [ok, missing, post, failed]
        })
        .await
        .unwrap();
        server.abort();

        let [ok, missing, post, failed] = answers;
        let (head, body) = ok.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
        assert!(head.to_ascii_lowercase().contains("content-type: text/plain; version=0.0.4; charset=utf-8"), "{head}");
        assert_eq!(body, EXPECTED);
        assert!(missing.starts_with("HTTP/1.1 404 Not Found\r\n"), "{missing}");
        assert!(post.starts_with("HTTP/1.1 405 Method Not Allowed\r\n"), "{post}");
        assert!(post.to_ascii_lowercase().contains("allow: get, head"), "{post}");
        assert!(failed.starts_with("HTTP/1.1 500 Internal Server Error\r\n"), "{failed}");
        assert!(failed.ends_with("the data plane is gone\n"), "{failed}");
    }

    #[test]
    fn vrrp_ipv6_instance_family_and_addresses() {
        use crate::vrrp::{Drops, Family as AddressFamily, Status, machine::State};
        let ll: std::net::IpAddr = "fe80::1".parse().unwrap();
        let status = Status {
            interface: "eth0".into(),
            vrid: 51,
            family: AddressFamily::Ipv6,
            state: State::Backup,
            priority: 100,
            primary: Some(ll),
            master: Some("fe80::2".parse().unwrap()),
            advert_interval_ms: 1000,
            master_advert_interval_ms: 1000,
            preempt: true,
            transitions: 1,
            adverts_sent: 0,
            adverts_received: 4,
            drops: Drops { ttl: 2, ..Drops::default() },
            addresses: vec!["2001:db8::100/64 dev eth0".into()],
            excluded: vec!["10.0.0.100/32 dev eth0".into()],
            unicast_peers: vec![],
        };
        let text = render_vrrp(&status);
        for line in [
            "xlvs_vrrp_state{interface=\"eth0\",vrid=\"51\",state=\"backup\"} 1\n",
            "xlvs_vrrp_master_info{interface=\"eth0\",vrid=\"51\",family=\"ipv6\",master=\"fe80::2\"} 1\n",
            "xlvs_vrrp_address_info{interface=\"eth0\",vrid=\"51\",address=\"2001:db8::100/64 dev eth0\",advertised=\"true\"} 1\n",
            "xlvs_vrrp_address_info{interface=\"eth0\",vrid=\"51\",address=\"10.0.0.100/32 dev eth0\",advertised=\"false\"} 1\n",
            "xlvs_vrrp_dropped_total{interface=\"eth0\",vrid=\"51\",reason=\"Ttl\"} 2\n",
        ] {
            assert!(text.contains(line), "{line}\n{text}");
        }
    }
}
