//! The normalized text of a configuration: every effective value written out,
//! so that what `xlvs check` prints (and `xlvs save` will) says exactly what
//! the director does, and parses back to the same [`Config`].

use std::{fmt::Write as _, time::Duration};

use lb_common::sched::Scheduler;

use super::{Check, CheckKind, Config, HttpMethod, Real, Service, VrrpConfig, dns_record_name};
use crate::view::sched_flag_names;

/// The configuration as TOML that [`super::parse`] reads back to an equal
/// [`Config`].
///
/// Services write every effective value (the forwarding method on each
/// real); a real's `[virtual.real.check]` holds only what differs from its
/// service's check. A real's check cannot drop a `port`, `receive`,
/// `virtualhost`, `send` or `expect` its service's check of the same type
/// sets, so such a [`Config`] (which no file parses to) loses that
/// difference.
#[must_use]
pub fn render(config: &Config) -> String {
    let mut out = String::new();
    let w = &mut out;
    line(w, "[director]");
    let interfaces: Vec<String> = config.interfaces.iter().map(|i| quote(i)).collect();
    line(w, &format!("interfaces = [{}]", interfaces.join(", ")));
    line(w, &format!("conn_table_size = {}", config.conn_table_size));
    line(w, &format!("cache_size = {}", config.cache_size));
    line(w, &format!("frag_table_size = {}", config.frag_table_size));
    line(w, &format!("timeout_tcp = {}", config.timeouts.tcp));
    line(w, &format!("timeout_tcpfin = {}", config.timeouts.tcpfin));
    line(w, &format!("timeout_udp = {}", config.timeouts.udp));
    line(w, &format!("autoreload = {}", config.autoreload));
    if let Some(metrics) = config.metrics {
        line(w, &format!("metrics = {}", quote(&metrics.to_string())));
    }
    if let Some(vrrp) = &config.vrrp {
        line(w, "");
        render_vrrp(w, vrrp);
    }
    if let Some(sync) = &config.sync {
        line(w, "");
        line(w, "[sync]");
        line(w, &format!("interface = {}", quote(&sync.interface)));
        line(w, &format!("group = {}", quote(&sync.group.to_string())));
        line(w, &format!("port = {}", sync.port));
        let peers: Vec<String> = sync.peers.iter().map(|p| quote(&p.to_string())).collect();
        line(w, &format!("peers = [{}]", peers.join(", ")));
        line(w, &format!("id = {}", sync.id));
    }
    for service in &config.services {
        line(w, "");
        render_service(w, service);
    }
    out
}

/// `[vrrp]` with every effective value; the addresses always listed (the
/// default ones too) in keepalived's `ADDR/LEN dev IFNAME`, the family
/// written out, and a comment naming the addresses of the other family,
/// which the adverts leave out.
fn render_vrrp(w: &mut String, v: &VrrpConfig) {
    line(w, "[vrrp]");
    line(w, &format!("interface = {}", quote(&v.interface)));
    line(w, &format!("vrid = {}", v.vrid));
    line(w, &format!("priority = {}", v.priority));
    line(w, &format!("advert_interval = {}", v.advert_interval.as_millis()));
    line(w, &format!("preempt = {}", v.preempt));
    line(w, &format!("preempt_delay = {}", seconds(v.preempt_delay)));
    let addresses: Vec<String> = v.addresses.iter().map(|a| quote(&a.to_string())).collect();
    line(w, &format!("addresses = [{}]", addresses.join(", ")));
    line(w, &format!("family = {}", quote(v.family.key())));
    let excluded: Vec<String> = v.excluded().map(ToString::to_string).collect();
    if !excluded.is_empty() {
        line(w, &format!("# not {} and so not advertised, only moved with the role: {}", v.family, excluded.join(", ")));
    }
    if !v.unicast_peers.is_empty() {
        let peers: Vec<String> = v.unicast_peers.iter().map(|p| quote(&p.to_string())).collect();
        line(w, &format!("unicast_peers = [{}]", peers.join(", ")));
    }
    line(w, &format!("garp_count = {}", v.garp_count));
    line(w, &format!("garp_delay = {}", seconds(v.garp_delay)));
    for (key, command) in [("notify_master", &v.notify_master), ("notify_backup", &v.notify_backup), ("notify_fault", &v.notify_fault)] {
        if let Some(c) = command {
            line(w, &format!("{key} = {}", quote(c)));
        }
    }
}

fn line(w: &mut String, text: &str) {
    w.push_str(text);
    w.push('\n');
}

fn render_service(w: &mut String, s: &Service) {
    line(w, "[[virtual]]");
    line(w, &format!("address = {}", quote(&s.vip.to_string())));
    line(w, &format!("protocol = {}", quote(&s.protocol.to_string())));
    line(w, &format!("scheduler = {}", quote(s.scheduler.name())));
    let flags = sched_flag_names(s.scheduler, s.sched_flags);
    if !flags.is_empty() {
        let flags: Vec<String> = flags.iter().map(|f| quote(f)).collect();
        line(w, &format!("scheduler_flags = [{}]", flags.join(", ")));
    }
    if let Some(p) = s.persistence {
        line(w, &format!("persistent = {}", p.timeout));
        // IPv4 keeps its dotted netmask; IPv6 is written as its prefix length.
        match p.netmask {
            std::net::IpAddr::V4(mask) => line(w, &format!("netmask = {}", quote(&mask.to_string()))),
            std::net::IpAddr::V6(_) => line(w, &format!("netmask = {}", p.prefix_len())),
        }
    }
    if matches!(s.scheduler, Scheduler::Lblc | Scheduler::Lblcr) {
        line(w, &format!("lblc_expire = {}", s.lblc_expire));
    }
    let h = &s.health;
    if !h.quiescent {
        line(w, "quiescent = false");
    }
    if let Some(f) = &h.fallback {
        line(w, &format!("fallback = {{ address = {}, forward = {} }}", quote(&crate::addr::Endpoint(f.addr, f.port).to_string()), quote(&f.forward.to_string())));
    }
    if h.quorum != 0 {
        line(w, &format!("quorum = {}", h.quorum));
    }
    for (key, command) in [("quorum_up", &h.quorum_up), ("quorum_down", &h.quorum_down), ("notify_up", &h.notify_up), ("notify_down", &h.notify_down)] {
        if let Some(c) = command {
            line(w, &format!("{key} = {}", quote(c)));
        }
    }
    // A check left at the default (type none) needs no table; one with
    // other timing still gets its table so that the reals inherit it.
    if s.check != Check::default() {
        line(w, "");
        line(w, "[virtual.check]");
        line(w, &format!("type = {}", quote(s.check.kind.name())));
        for (key, value) in timing_keys(&s.check).into_iter().chain(kind_keys(&s.check.kind)) {
            line(w, &format!("{key} = {value}"));
        }
    }
    for r in &s.reals {
        line(w, "");
        render_real(w, r, &s.check);
    }
}

fn render_real(w: &mut String, r: &Real, service_check: &Check) {
    line(w, "[[virtual.real]]");
    line(w, &format!("address = {}", quote(&crate::addr::Endpoint(r.addr, r.port).to_string())));
    line(w, &format!("forward = {}", quote(&r.forward.to_string())));
    line(w, &format!("weight = {}", r.weight));
    if r.u_threshold != 0 {
        line(w, &format!("u_threshold = {}", r.u_threshold));
    }
    if r.l_threshold != 0 {
        line(w, &format!("l_threshold = {}", r.l_threshold));
    }
    if r.check == *service_check {
        return;
    }
    let mut keys = Vec::new();
    let base_timing = timing_keys(service_check);
    keys.extend(timing_keys(&r.check).into_iter().filter(|k| !base_timing.contains(k)));
    if r.check.kind.name() == service_check.kind.name() {
        let base_kind = kind_keys(&service_check.kind);
        keys.extend(kind_keys(&r.check.kind).into_iter().filter(|k| !base_kind.contains(k)));
    } else {
        // Another type keeps none of the service's type keys: write them all.
        keys.insert(0, ("type", quote(r.check.kind.name())));
        keys.extend(kind_keys(&r.check.kind));
    }
    if keys.is_empty() {
        return;
    }
    line(w, "");
    line(w, "[virtual.real.check]");
    for (key, value) in keys {
        line(w, &format!("{key} = {value}"));
    }
}

/// The keys every check type has, as rendered values.
fn timing_keys(c: &Check) -> Vec<(&'static str, String)> {
    let mut keys = vec![
        ("check_interval", seconds(c.interval)),
        ("check_timeout", seconds(c.timeout)),
        ("failure_count", c.failure_count.to_string()),
        ("rise", c.rise.to_string()),
        ("warmup", seconds(c.warmup)),
    ];
    if let Some(port) = c.port {
        keys.push(("port", port.to_string()));
    }
    keys
}

/// The keys of one check type, as rendered values; optional ones only when
/// set.
fn kind_keys(kind: &CheckKind) -> Vec<(&'static str, String)> {
    let mut keys = Vec::new();
    match kind {
        CheckKind::None | CheckKind::Ping => {}
        CheckKind::Connect { send, expect } => {
            if let Some(s) = send {
                keys.push(("send", quote(s)));
            }
            if let Some(e) = expect {
                keys.push(("expect", quote(e)));
            }
        }
        CheckKind::Http(h) => {
            keys.push(("method", quote(match h.method {
                HttpMethod::Get => "GET",
                HttpMethod::Head => "HEAD",
            })));
            keys.push(("request", quote(&h.request)));
            if let Some(r) = &h.receive {
                keys.push(("receive", quote(r)));
            }
            if let Some(v) = &h.virtualhost {
                keys.push(("virtualhost", quote(v)));
            }
            let status: Vec<String> = h
                .status
                .iter()
                .map(|&(lo, hi)| if lo == hi { quote(&lo.to_string()) } else { quote(&format!("{lo}-{hi}")) })
                .collect();
            keys.push(("status", format!("[{}]", status.join(", "))));
        }
        CheckKind::External { command, dynamic_weight } => {
            keys.push(("command", quote(command)));
            keys.push(("dynamic_weight", dynamic_weight.to_string()));
        }
        CheckKind::Dns { name, record } => {
            keys.push(("name", quote(name)));
            keys.push(("record", dns_record_name(*record).map_or_else(|| record.to_string(), quote)));
        }
        CheckKind::Smtp { helo } => keys.push(("helo", quote(helo))),
    }
    keys
}

/// Seconds as TOML: an integer when whole, else a float to the microsecond
/// (the precision the parser keeps).
fn seconds(d: Duration) -> String {
    let micros = d.subsec_micros();
    if micros == 0 {
        return d.as_secs().to_string();
    }
    let fraction = format!("{micros:06}");
    format!("{}.{}", d.as_secs(), fraction.trim_end_matches('0'))
}

/// A TOML string. A pattern with backslashes and no quote reads better as a
/// literal string ('\d+' rather than "\\d+").
fn quote(s: &str) -> String {
    if s.contains('\\') && !s.contains('\'') && !s.chars().any(char::is_control) {
        return format!("'{s}'");
    }
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04X}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::super::{Config, parse};
    use super::*;

    const HEAD: &str = "[director]\ninterfaces = [\"veth-ext\", \"veth-int\"]\n";

    /// `parse(render(c)) == c`, and rendering is a fixed point.
    fn round_trip(text: &str) -> Config {
        let config = parse("t.toml", text).unwrap_or_else(|e| panic!("{e}\n{text}"));
        let rendered = render(&config);
        let again = parse("rendered.toml", &rendered).unwrap_or_else(|e| panic!("{e}\n{rendered}"));
        assert_eq!(again, config, "{rendered}");
        assert_eq!(render(&again), rendered);
        config
    }

    fn one_service(body: &str) -> String {
        format!("{HEAD}[[virtual]]\naddress = \"10.100.0.100:80\"\n{body}")
    }

    #[test]
    fn every_scheduler_flags_persistence_and_ranges_round_trip() {
        for s in Scheduler::ALL {
            round_trip(&one_service(&format!("scheduler = \"{s}\"\nscheduler_flags = [\"flag-3\"]\n[[virtual.real]]\naddress = \"10.0.1.1\"\n")));
        }
        round_trip(&one_service("scheduler = \"sh\"\nscheduler_flags = [\"sh-port\", \"sh-fallback\"]\n"));
        round_trip(&one_service("scheduler = \"mh\"\nscheduler_flags = [\"mh-fallback\", \"flag-2\"]\n"));
        round_trip(&one_service("scheduler = \"lblcr\"\nlblc_expire = 60\n"));
        round_trip(&one_service("persistent = true\n"));
        round_trip(&one_service("persistent = 600\nnetmask = \"255.255.0.0\"\n"));
        round_trip(&format!("{HEAD}[[virtual]]\naddress = \"10.50.0.0/16:80\"\nprotocol = \"udp\"\n[[virtual]]\naddress = \"10.50.1.0/24:80\"\n"));
        round_trip(&format!("{HEAD}conn_table_size = 4096\ncache_size = 2048\nfrag_table_size = 4096\ntimeout_tcp = 3600\ntimeout_tcpfin = 30\ntimeout_udp = 10\nautoreload = true\nmetrics = \"127.0.0.1:9108\"\n"));
        round_trip(&format!("{HEAD}metrics = \"[::1]:9108\"\n"));
        round_trip(HEAD);
    }

    #[test]
    fn vrrp_round_trips() {
        // The default addresses (the services' VIPs) are written out.
        let c = round_trip(&one_service("[vrrp]\ninterface = \"veth-int\"\nvrid = 51\n"));
        let text = render(&c);
        assert!(
            text.contains(concat!(
                "\n[vrrp]\ninterface = \"veth-int\"\nvrid = 51\npriority = 100\nadvert_interval = 1000\npreempt = true\n",
                "preempt_delay = 0\naddresses = [\"10.100.0.100/32 dev veth-int\"]\nfamily = \"ipv4\"\ngarp_count = 5\ngarp_delay = 5\n",
            )),
            "{text}"
        );
        round_trip(&format!(
            "{HEAD}[vrrp]\n{}",
            concat!(
                "interface = \"veth-ext\"\nvrid = 255\npriority = 255\nadvert_interval = 250\npreempt = false\npreempt_delay = 1.5\n",
                "addresses = [\"10.0.0.1\", \"10.0.0.2/24 dev eth9\"]\nunicast_peers = [\"10.0.0.8\", \"10.0.0.9\"]\n",
                "garp_count = 0\ngarp_delay = 0.25\nnotify_master = \"/bin/sh -c 'echo \\\"m\\\"'\"\nnotify_backup = \"b\"\nnotify_fault = \"f\"\n",
            )
        ));
        // IPv6: link-local peers, and an IPv4 address excluded; the family
        // and what it leaves out are written down.
        let c = round_trip(&format!(
            "{HEAD}[vrrp]\n{}",
            concat!(
                "interface = \"veth-ext\"\nvrid = 7\naddresses = [\"2001:db8::100/64\", \"10.0.0.1\", \"fe80::100 dev eth9\"]\n",
                "unicast_peers = [\"fe80::2\", \"2001:db8::3\"]\n",
            )
        ));
        let text = render(&c);
        assert!(
            text.contains(concat!(
                "addresses = [\"2001:db8::100/64 dev veth-ext\", \"10.0.0.1/32 dev veth-ext\", \"fe80::100/128 dev eth9\"]\n",
                "family = \"ipv6\"\n",
                "# not IPv6 and so not advertised, only moved with the role: 10.0.0.1/32 dev veth-ext\n",
                "unicast_peers = [\"fe80::2\", \"2001:db8::3\"]\n",
            )),
            "{text}"
        );
        // An explicit family against the first address survives the trip.
        let c = round_trip(&format!("{HEAD}[vrrp]\ninterface = \"e\"\nvrid = 7\nfamily = \"ipv4\"\naddresses = [\"2001:db8::100\", \"10.0.0.1\"]\n"));
        assert_eq!(c.vrrp.unwrap().family, crate::config::vrrp::Family::Ipv4);
    }

    #[test]
    fn reals_forwarding_weights_and_thresholds_round_trip() {
        let c = round_trip(&one_service(concat!(
            "forward = \"nat\"\n",
            "[[virtual.real]]\naddress = \"10.0.1.1:8080\"\nweight = 0\nu_threshold = 100\nl_threshold = 50\n",
            "[[virtual.real]]\naddress = \"10.0.1.2\"\nforward = \"dr\"\nweight = 65535\nu_threshold = 10\n",
            "[[virtual.real]]\naddress = \"10.0.1.3\"\nforward = \"tun\"\n",
        )));
        assert_eq!(c.services[0].reals.len(), 3);
    }

    #[test]
    fn every_check_type_with_all_its_keys_round_trips() {
        let checks = [
            "type = \"none\"\ncheck_interval = 3",
            "type = \"connect\"",
            "type = \"connect\"\nsend = \"PING\\r\\n\"\nexpect = '^\\+PONG'\nport = 6379",
            "type = \"connect\"\nsend = \"\"",
            concat!(
                "type = \"http\"\ncheck_interval = 0.5\ncheck_timeout = 2.25\nwarmup = 1.000001\nfailure_count = 3\nrise = 2\n",
                "port = 8080\nmethod = \"HEAD\"\nrequest = \"/health?full=1\"\nreceive = \"It \\\"Works\\\"!\"\n",
                "virtualhost = \"www.example.com\"\nstatus = [200, \"204\", \"300-399\"]",
            ),
            "type = \"https\"\nreceive = '\\d+ \"ok\"'\nstatus = [\"200-299\"]",
            "type = \"https\"\nreceive = \"it's\\\\d\"",
            "type = \"external\"\ncommand = \"/usr/local/bin/check --vip \\\"$1\\\"\"",
            "type = \"external\"\ncommand = \"check.sh\"\ndynamic_weight = true\nwarmup = 30",
            "type = \"ping\"\ncheck_timeout = 0.1",
            "type = \"dns\"",
            "type = \"dns\"\nname = \"example.com\"\nrecord = \"MX\"",
            "type = \"dns\"\nname = \"_sip._udp.example.com\"\nrecord = 99",
            "type = \"smtp\"\nhelo = \"lb.example.com\"",
        ];
        for check in checks {
            let text = one_service(&format!("[virtual.check]\n{check}\n[[virtual.real]]\naddress = \"10.0.1.1\"\n[[virtual.real]]\naddress = \"10.0.1.2\"\n"));
            round_trip(&text);
        }
    }

    #[test]
    fn real_overrides_round_trip_with_only_their_differences() {
        let c = round_trip(&one_service(concat!(
            "[virtual.check]\ntype = \"http\"\ncheck_interval = 2\nport = 8080\nreceive = \"OK\"\nvirtualhost = \"a.example\"\n",
            "[[virtual.real]]\naddress = \"10.0.1.1\"\n",
            "[[virtual.real]]\naddress = \"10.0.1.2\"\n[virtual.real.check]\nreceive = \"ready\"\ncheck_timeout = 1\nstatus = [200]\n",
            "[[virtual.real]]\naddress = \"10.0.1.3\"\n[virtual.real.check]\ntype = \"connect\"\nsend = \"x\"\n",
            "[[virtual.real]]\naddress = \"10.0.1.4\"\n[virtual.real.check]\ntype = \"https\"\n",
            "[[virtual.real]]\naddress = \"10.0.1.5\"\n[virtual.real.check]\ntype = \"none\"\n",
            "[[virtual.real]]\naddress = \"10.0.1.6\"\n[virtual.real.check]\ntype = \"http\"\n",
            "[[virtual.real]]\naddress = \"10.0.1.7\"\n[virtual.real.check]\ntype = \"external\"\ncommand = \"c\"\n",
        )));
        let text = render(&c);
        // The first real and the one naming the service's own type again
        // have no table; the others hold only what differs.
        assert_eq!(text.matches("[virtual.real.check]").count(), 5, "{text}");
        assert!(text.contains("[virtual.real.check]\ncheck_timeout = 1\nreceive = \"ready\"\nstatus = [\"200\"]\n"), "{text}");
        // A service without a check, a real with one.
        round_trip(&one_service("[[virtual.real]]\naddress = \"10.0.1.1\"\n[virtual.real.check]\ntype = \"ping\"\n"));
    }

    #[test]
    fn health_keys_round_trip() {
        round_trip(&one_service(concat!(
            "forward = \"nat\"\nquiescent = false\nfallback = \"127.0.0.1:8080\"\nquorum = 2\n",
            "quorum_up = \"/bin/echo up\"\nquorum_down = \"/bin/echo 'down'\"\nnotify_up = \"n-up\"\nnotify_down = \"n-down\"\n",
            "[[virtual.real]]\naddress = \"10.0.1.1:8080\"\nweight = 2\n",
        )));
        round_trip(&one_service("fallback = \"127.0.0.1 gate\"\n[[virtual.real]]\naddress = \"10.0.1.1\"\n"));
        round_trip(&one_service("fallback = { address = \"127.0.0.2:80\", forward = \"ipip\" }\n"));
    }

    #[test]
    fn durations_and_strings() {
        assert_eq!(seconds(Duration::from_secs(3)), "3");
        assert_eq!(seconds(Duration::from_millis(1500)), "1.5");
        assert_eq!(seconds(Duration::from_micros(1_000_001)), "1.000001");
        assert_eq!(seconds(Duration::ZERO), "0");
        assert_eq!(quote("plain"), "\"plain\"");
        assert_eq!(quote("say \"hi\""), "\"say \\\"hi\\\"\"");
        assert_eq!(quote("\\d+"), "'\\d+'");
        assert_eq!(quote("it's \\d"), "\"it's \\\\d\"");
        assert_eq!(quote("a\nb\u{1}"), "\"a\\nb\\u0001\"");
    }

    #[test]
    fn the_normalized_text() {
        let text = r#"
[director]
interfaces = ["eth0"]
autoreload = true

[[virtual]]
address = "192.168.0.100:80"
scheduler = "sh"
scheduler_flags = ["sh-port"]
persistent = true
fallback = "127.0.0.1:80 gate"
quorum = 1
notify_down = "logger -t xlvs down"

[virtual.check]
type = "http"
check_interval = 1
check_timeout = 2.5
request = "index.html"
receive = "It Works!"
virtualhost = "www.esempio.com"

[[virtual.real]]
address = "192.168.0.50"

[[virtual.real]]
address = "192.168.0.51"
weight = 3
u_threshold = 100

[virtual.real.check]
request = "/alt"

[[virtual]]
address = "10.0.0.53:53"
protocol = "udp"
scheduler = "lblc"
forward = "nat"

[[virtual.real]]
address = "10.0.1.53:5353"
"#;
        let expected = r#"[director]
interfaces = ["eth0"]
conn_table_size = 262144
cache_size = 65536
frag_table_size = 16384
timeout_tcp = 900
timeout_tcpfin = 120
timeout_udp = 300
autoreload = true

[[virtual]]
address = "192.168.0.100:80"
protocol = "tcp"
scheduler = "sh"
scheduler_flags = ["sh-port"]
persistent = 360
netmask = "255.255.255.255"
fallback = { address = "127.0.0.1:80", forward = "dr" }
quorum = 1
notify_down = "logger -t xlvs down"

[virtual.check]
type = "http"
check_interval = 1
check_timeout = 2.5
failure_count = 1
rise = 1
warmup = 0
method = "GET"
request = "/index.html"
receive = "It Works!"
virtualhost = "www.esempio.com"
status = ["200-299"]

[[virtual.real]]
address = "192.168.0.50:80"
forward = "dr"
weight = 1

[[virtual.real]]
address = "192.168.0.51:80"
forward = "dr"
weight = 3
u_threshold = 100

[virtual.real.check]
request = "/alt"

[[virtual]]
address = "10.0.0.53:53"
protocol = "udp"
scheduler = "lblc"
lblc_expire = 86400

[[virtual.real]]
address = "10.0.1.53:5353"
forward = "nat"
weight = 1
"#;
        let config = round_trip(text);
        assert_eq!(render(&config), expected);
    }

    #[test]
    fn ipv6_services_reals_ranges_and_prefixes_round_trip() {
        let text = format!(
            "{HEAD}[[virtual]]\naddress = \"[2001:db8::100]:80\"\npersistent = 600\nnetmask = 64\nforward = \"nat\"\nfallback = \"[2001:db8:2::1]:8080\"\n[[virtual.real]]\naddress = \"[2001:db8:1::11]:8080\"\n[[virtual.real]]\naddress = \"[2001:db8:1::12]\"\nforward = \"tun\"\n[[virtual]]\naddress = \"[2001:db8:100::/64]:443\"\n[[virtual.real]]\naddress = \"2001:db8:1::13\"\n"
        );
        let c = round_trip(&text);
        let rendered = render(&c);
        assert!(rendered.contains("address = \"[2001:db8::100]:80\""), "{rendered}");
        assert!(rendered.contains("netmask = 64\n"), "{rendered}");
        assert!(rendered.contains("address = \"[2001:db8:1::11]:8080\""), "{rendered}");
        assert!(rendered.contains("address = \"[2001:db8:100::/64]:443\""), "{rendered}");
        assert!(rendered.contains("[2001:db8:2::1]:8080"), "{rendered}");
        assert_eq!(c.services[0].persistence.unwrap().prefix_len(), 64);
        assert_eq!(c.services[0].reals[1].port, 80);
    }
}
