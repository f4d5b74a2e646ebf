//! The lab: a switch namespace with two bridges (`ext` and `int` segments),
//! a client, a director and three real servers, all in namespaces named
//! `<prefix>-<role>` with a per-run unique prefix.
//!
//! ```text
//!   client (eth0 10.1.0.2/24, gw 10.1.0.1)
//!      |
//!   [ext bridge]                       (switch ns)
//!      |
//!   director: ext 10.1.0.1/24, int 10.0.1.1/24, ip_forward=1
//!      |
//!   [int bridge]                       (switch ns)
//!      |            |            |
//!   real1 .11    real2 .12    real3 .13  (eth0 10.0.1.x/24, gw 10.0.1.1,
//!                                         VIPs .101 .102 on lo)
//! ```
//!
//! Every host is attached with a veth pair whose host end is named as asked
//! (`eth0`, `ext`, ...) and whose other end is a port of the segment's bridge
//! in the switch namespace. The veth pairs are created directly inside the
//! namespaces, so nothing appears in the root namespace.
//!
//! Transmit checksum offload is turned off on every host interface: a packet
//! sent with a partial checksum (CHECKSUM_PARTIAL) that an XDP program
//! bounces with XDP_TX/XDP_REDIRECT would reach the receiver with a bogus
//! checksum, something that cannot happen with a real NIC on the wire. GRO
//! is turned on for the bridge ports facing a director, which veth needs to
//! accept XDP_TX/XDP_REDIRECT frames.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::mpsc;
use std::time::Duration;

use anyhow::{Context, Result, bail};

use crate::netns::{Netns, Proc, unique_prefix};

pub const CLIENT_IP: &str = "10.1.0.2";
pub const DIRECTOR_EXT_IP: &str = "10.1.0.1";
pub const DIRECTOR_INT_IP: &str = "10.0.1.1";
pub const REAL_IPS: [&str; 3] = ["10.0.1.11", "10.0.1.12", "10.0.1.13"];
/// NAT virtual address (not configured on any interface).
pub const VIP_NAT: &str = "10.100.0.100";
/// DR virtual address (on the reals' `lo`).
pub const VIP_DR: &str = "10.100.0.101";
/// TUN (IPIP) virtual address (on the reals' `lo`).
pub const VIP_TUN: &str = "10.100.0.102";
/// The lab's IPv6 addresses ([`Topology::build_dual_stack`]), from the
/// documentation prefix: the client's segment 2001:db8:c1::/64, the reals'
/// 2001:db8:1::/64, the VIPs in 2001:db8:100::/64.
pub const CLIENT_IP6: &str = "2001:db8:c1::2";
pub const DIRECTOR_EXT_IP6: &str = "2001:db8:c1::1";
pub const DIRECTOR_INT_IP6: &str = "2001:db8:1::1";
pub const REAL_IPS6: [&str; 3] = ["2001:db8:1::11", "2001:db8:1::12", "2001:db8:1::13"];
pub const VIP6_NAT: &str = "2001:db8:100::100";
pub const VIP6_DR: &str = "2001:db8:100::101";
pub const VIP6_TUN: &str = "2001:db8:100::102";
/// Ports the real servers listen on.
pub const REAL_TCP_PORTS: [u16; 2] = [8080, 80];
pub const REAL_UDP_PORTS: [u16; 2] = [8080, 53];

/// The two L2 segments of the lab.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Segment {
    /// Client side, 10.1.0.0/24.
    Ext,
    /// Real server side, 10.0.1.0/24.
    Int,
}

impl Segment {
    /// Name of the segment's bridge in the switch namespace.
    pub fn bridge(self) -> &'static str {
        match self {
            Segment::Ext => "ext",
            Segment::Int => "int",
        }
    }
}

/// One host interface attached to a segment.
#[derive(Debug, Clone)]
pub struct Port {
    /// Namespace of the host.
    pub ns: String,
    /// Interface name inside the host namespace.
    pub ifname: String,
    /// Name of the peer (bridge port) in the switch namespace.
    pub port: String,
    pub segment: Segment,
    /// Address with prefix length, e.g. `10.1.0.2/24`.
    pub cidr: String,
}

/// A real server host.
#[derive(Debug)]
pub struct Real {
    /// `real1`, `real2`, ... — also what its realserver answers.
    pub name: String,
    /// Address on the int segment.
    pub ip: String,
    pub ns: Netns,
}

/// The whole lab. Dropping it stops the processes it started and deletes all
/// its namespaces (and with them every veth and bridge).
pub struct Topology {
    // Drop order matters: processes first (explicit Drop), then the host
    // namespaces, the switch last.
    procs: Vec<Proc>,
    prefix: String,
    client: Netns,
    director: Netns,
    reals: Vec<Real>,
    extra: Vec<Netns>,
    ports: Vec<Port>,
    switch: Netns,
    /// IPv6 addresses too ([`Topology::build_dual_stack`]).
    ipv6: bool,
}

impl std::fmt::Debug for Topology {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Topology")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

/// A namespace prepared as a lab host (IPv6 off so no stray
/// router/neighbour solicitations cross the data plane).
fn new_host(prefix: &str, role: &str) -> Result<Netns> {
    let ns = Netns::create(&format!("{prefix}-{role}"))?;
    ns.sysctl(&[
        "net.ipv6.conf.all.disable_ipv6=1",
        "net.ipv6.conf.default.disable_ipv6=1",
    ])?;
    Ok(ns)
}

impl Topology {
    /// Builds the complete lab (switch, client, director, real1..3) under a
    /// fresh unique prefix. Real servers are not started yet (see
    /// [`Topology::start_realservers`]).
    pub fn build() -> Result<Topology> {
        Self::build_with_prefix(&unique_prefix())
    }

    pub fn build_with_prefix(prefix: &str) -> Result<Topology> {
        // Guards are created one by one, so a failure half-way drops (and
        // deletes) whatever exists so far.
        let switch = Netns::create(&format!("{prefix}-sw"))?;
        switch.sysctl(&[
            "net.ipv6.conf.all.disable_ipv6=1",
            "net.ipv6.conf.default.disable_ipv6=1",
        ])?;
        for seg in [Segment::Ext, Segment::Int] {
            let br = seg.bridge();
            switch.ip(&[
                "link",
                "add",
                br,
                "type",
                "bridge",
                "stp_state",
                "0",
                "forward_delay",
                "0",
            ])?;
            switch.ip(&["link", "set", br, "up"])?;
        }
        let client = new_host(prefix, "client")?;
        let director = new_host(prefix, "dir")?;
        let mut topo = Topology {
            procs: Vec::new(),
            prefix: prefix.to_string(),
            client,
            director,
            reals: Vec::new(),
            extra: Vec::new(),
            ports: Vec::new(),
            switch,
            ipv6: false,
        };

        // Client.
        let client_name = topo.client.name().to_string();
        topo.connect(
            &client_name,
            Segment::Ext,
            "eth0",
            &format!("{CLIENT_IP}/24"),
        )?;
        topo.client
            .ip(&["route", "add", "default", "via", DIRECTOR_EXT_IP])?;

        // Director.
        let dir_name = topo.director.name().to_string();
        topo.setup_director(
            &dir_name,
            &format!("{DIRECTOR_EXT_IP}/24"),
            &format!("{DIRECTOR_INT_IP}/24"),
        )?;

        // Reals.
        for (i, ip) in REAL_IPS.iter().enumerate() {
            let name = format!("real{}", i + 1);
            let ns = new_host(prefix, &name)?;
            let ns_name = ns.name().to_string();
            topo.reals.push(Real {
                name,
                ip: ip.to_string(),
                ns,
            });
            topo.connect(&ns_name, Segment::Int, "eth0", &format!("{ip}/24"))?;
            let ns = &topo.reals[i].ns;
            ns.ip(&["route", "add", "default", "via", DIRECTOR_INT_IP])?;
            for vip in [VIP_DR, VIP_TUN] {
                ns.ip(&["addr", "add", &format!("{vip}/32"), "dev", "lo"])?;
            }
            ns.sysctl(&[
                "net.ipv4.conf.all.arp_ignore=1",
                "net.ipv4.conf.all.arp_announce=2",
                "net.ipv4.conf.eth0.arp_ignore=1",
                "net.ipv4.conf.eth0.arp_announce=2",
                "net.ipv4.conf.all.rp_filter=0",
                "net.ipv4.conf.default.rp_filter=0",
                "net.ipv4.conf.eth0.rp_filter=0",
            ])?;
        }
        Ok(topo)
    }

    /// The lab of [`Topology::build`] with IPv6 as well: every host has an
    /// IPv6 address next to its IPv4 one (no duplicate address detection,
    /// no router advertisements: all is static), the client and the reals
    /// route IPv6 through the director, which forwards it, and the reals
    /// hold the IPv6 DR and TUN VIPs on `lo` (Linux answers neighbour
    /// solicitations only for the interface's own addresses, so nothing
    /// like arp_ignore is needed). Realservers listen on both families.
    pub fn build_dual_stack() -> Result<Topology> {
        let mut topo = Self::build()?;
        topo.ipv6 = true;
        for br in [Segment::Ext.bridge(), Segment::Int.bridge()] {
            // Flood neighbour discovery's multicast: no MLD querier here.
            topo.switch.ip(&["link", "set", br, "type", "bridge", "mcast_snooping", "0"])?;
        }
        let client = topo.client.name().to_string();
        let director = topo.director.name().to_string();
        let hosts = [(client.as_str(), "eth0", CLIENT_IP6, Some(DIRECTOR_EXT_IP6))];
        let director_ifs = [(director.as_str(), "ext", DIRECTOR_EXT_IP6, None), (director.as_str(), "int", DIRECTOR_INT_IP6, None)];
        let reals: Vec<(String, &str)> = topo.reals.iter().map(|r| r.ns.name().to_string()).zip(REAL_IPS6).collect();
        let real_ifs: Vec<(&str, &str, &str, Option<&str>)> =
            reals.iter().map(|(ns, ip)| (ns.as_str(), "eth0", *ip, Some(DIRECTOR_INT_IP6))).collect();
        for (ns_name, ifname, ip, gateway) in hosts.into_iter().chain(director_ifs).chain(real_ifs) {
            topo.add_ipv6(ns_name, ifname, ip, gateway)?;
        }
        topo.director.sysctl(&["net.ipv6.conf.all.forwarding=1"])?;
        for real in &topo.reals {
            for vip in [VIP6_DR, VIP6_TUN] {
                real.ns.ip(&["-6", "addr", "add", &format!("{vip}/128"), "dev", "lo"])?;
            }
        }
        Ok(topo)
    }

    /// Turns IPv6 on for `ifname` of lab host `ns_name` as
    /// [`Topology::build_dual_stack`] has it: `ip`/64 without duplicate
    /// address detection, no router advertisements, and an IPv6 default
    /// route via `gateway` if given. The kernel still gives the interface
    /// a link-local address, which goes through DAD (about a second).
    pub fn add_ipv6(&self, ns_name: &str, ifname: &str, ip: &str, gateway: Option<&str>) -> Result<()> {
        let ns = self.ns(ns_name).context("a host of this lab")?;
        ns.sysctl(&[
            "net.ipv6.conf.all.disable_ipv6=0",
            "net.ipv6.conf.default.disable_ipv6=0",
            &format!("net.ipv6.conf.{ifname}.disable_ipv6=0"),
            &format!("net.ipv6.conf.{ifname}.accept_ra=0"),
            &format!("net.ipv6.conf.{ifname}.accept_dad=0"),
            "net.ipv6.conf.lo.disable_ipv6=0",
        ])?;
        ns.ip(&["-6", "addr", "add", &format!("{ip}/64"), "dev", ifname, "nodad"])?;
        if let Some(gw) = gateway {
            ns.ip(&["-6", "route", "add", "default", "via", gw])?;
        }
        Ok(())
    }

    /// Configures namespace `ns_name` (a host of this lab) as a director:
    /// interfaces `ext` and `int` on the two segments with the given
    /// addresses (`a.b.c.d/len`), forwarding on, rp_filter off, GRO on the
    /// facing bridge ports.
    pub fn setup_director(&mut self, ns_name: &str, ext_cidr: &str, int_cidr: &str) -> Result<()> {
        let ext_port = self.connect(ns_name, Segment::Ext, "ext", ext_cidr)?;
        let int_port = self.connect(ns_name, Segment::Int, "int", int_cidr)?;
        let ns = self.ns(ns_name).context("unknown namespace")?;
        ns.sysctl(&[
            "net.ipv4.ip_forward=1",
            "net.ipv4.conf.all.rp_filter=0",
            "net.ipv4.conf.default.rp_filter=0",
            "net.ipv4.conf.ext.rp_filter=0",
            "net.ipv4.conf.int.rp_filter=0",
        ])?;
        for port in [&ext_port, &int_port] {
            self.switch.exec(&["ethtool", "-K", port, "gro", "on"])?;
        }
        Ok(())
    }

    /// Adds a second director `role` (namespace `<prefix>-<role>`) on both
    /// segments, e.g. for active/backup tests.
    pub fn add_director(&mut self, role: &str, ext_cidr: &str, int_cidr: &str) -> Result<&Netns> {
        let name = self.add_host(role)?.name().to_string();
        self.setup_director(&name, ext_cidr, int_cidr)?;
        Ok(self.ns(&name).expect("just added"))
    }

    /// Adds an empty host namespace `<prefix>-<role>` (lo up, IPv6 off).
    /// Attach it with [`Topology::connect`].
    pub fn add_host(&mut self, role: &str) -> Result<&Netns> {
        let ns = new_host(&self.prefix, role)?;
        self.extra.push(ns);
        Ok(self.extra.last().expect("just pushed"))
    }

    /// Attaches host namespace `ns_name` to `segment` with a new interface
    /// `ifname` carrying `cidr`; returns the bridge port's name in the switch
    /// namespace.
    pub fn connect(
        &mut self,
        ns_name: &str,
        segment: Segment,
        ifname: &str,
        cidr: &str,
    ) -> Result<String> {
        if self.ns(ns_name).is_none() {
            bail!("{ns_name} is not a host of this lab");
        }
        let port = format!("p{}{}", self.ports.len(), ifname);
        let port: String = port.chars().take(15).collect();
        self.switch.ip(&[
            "link", "add", &port, "type", "veth", "peer", "name", ifname, "netns", ns_name,
        ])?;
        self.ports.push(Port {
            ns: ns_name.to_string(),
            ifname: ifname.to_string(),
            port: port.clone(),
            segment,
            cidr: cidr.to_string(),
        });
        self.switch
            .ip(&["link", "set", &port, "master", segment.bridge()])?;
        self.switch.ip(&["link", "set", &port, "up"])?;
        let ns = self.ns(ns_name).expect("checked above");
        ns.ip(&["addr", "add", cidr, "dev", ifname])?;
        ns.ip(&["link", "set", ifname, "up"])?;
        ns.exec(&["ethtool", "-K", ifname, "tx", "off"])?;
        Ok(port)
    }

    /// The namespace called `name`, if it belongs to this lab.
    pub fn ns(&self, name: &str) -> Option<&Netns> {
        std::iter::once(&self.switch)
            .chain(std::iter::once(&self.client))
            .chain(std::iter::once(&self.director))
            .chain(self.reals.iter().map(|r| &r.ns))
            .chain(self.extra.iter())
            .find(|n| n.name() == name)
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }
    pub fn switch(&self) -> &Netns {
        &self.switch
    }
    pub fn client(&self) -> &Netns {
        &self.client
    }
    pub fn director(&self) -> &Netns {
        &self.director
    }
    pub fn reals(&self) -> &[Real] {
        &self.reals
    }
    /// Hosts added with [`Topology::add_host`] / [`Topology::add_director`].
    pub fn extra_hosts(&self) -> &[Netns] {
        &self.extra
    }
    pub fn ports(&self) -> &[Port] {
        &self.ports
    }
    /// The bridge port (switch side) of `ifname` in namespace `ns_name`.
    pub fn port_of(&self, ns_name: &str, ifname: &str) -> Option<&Port> {
        self.ports
            .iter()
            .find(|p| p.ns == ns_name && p.ifname == ifname)
    }
    /// The director's client-facing interface.
    pub fn director_ext_if(&self) -> &str {
        "ext"
    }
    /// The director's real-facing interface.
    pub fn director_int_if(&self) -> &str {
        "int"
    }
    /// Both director interfaces, as `[director] interfaces` wants them.
    pub fn director_interfaces(&self) -> [&str; 2] {
        [self.director_ext_if(), self.director_int_if()]
    }
    /// The reals' interface (where `xlvs decap` attaches).
    pub fn real_if(&self) -> &str {
        "eth0"
    }

    /// Starts `realserver --name realN` in every real namespace (TCP 8080
    /// and 80, UDP 8080 and 53) and waits until each has bound its sockets.
    /// The processes belong to the topology and stop when it drops.
    pub fn start_realservers(&mut self) -> Result<()> {
        self.start_realservers_with(&[])
    }

    /// [`Topology::start_realservers`] with more `realserver` arguments for
    /// every real (e.g. `["--page", "/index.html=It Works!"]`).
    pub fn start_realservers_with(&mut self, extra: &[&str]) -> Result<()> {
        for i in 0..self.reals.len() {
            self.start_realserver(i, extra)?;
        }
        Ok(())
    }

    /// Starts the realserver of real `index` (0-based: real1 is 0) as
    /// [`Topology::start_realservers`] does, with `extra` arguments, and
    /// waits for it to be ready. Fails if it is already running.
    pub fn start_realserver(&mut self, index: usize, extra: &[&str]) -> Result<()> {
        let r = self.reals.get(index).context("no such real")?;
        let (ns_name, name) = (r.ns.name().to_string(), r.name.clone());
        let mut args: Vec<String> = Vec::new();
        // `[::]` takes IPv4 too (bindv6only is off).
        let any = if self.ipv6 { "[::]" } else { "0.0.0.0" };
        for p in REAL_TCP_PORTS {
            args.extend(["--tcp".into(), format!("{any}:{p}")]);
        }
        for p in REAL_UDP_PORTS {
            args.extend(["--udp".into(), format!("{any}:{p}")]);
        }
        args.extend(extra.iter().map(|s| s.to_string()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        self.start_server(&ns_name, &name, &args)
    }

    /// Stops (SIGTERM, by PID) the realserver of real `index` started by
    /// this topology; its listening sockets close, so connects are refused.
    pub fn stop_realserver(&mut self, index: usize) -> Result<()> {
        let r = self.reals.get(index).context("no such real")?;
        let (ns_name, name) = (r.ns.name().to_string(), r.name.clone());
        self.stop_server(&ns_name, &name)
    }

    /// Starts `realserver --name NAME ARGS...` in lab namespace `ns_name`
    /// (any host: a real or one added with [`Topology::add_host`]) and waits
    /// for its READY line. It belongs to the topology; at most one server
    /// of a name runs per namespace.
    pub fn start_server(&mut self, ns_name: &str, name: &str, args: &[&str]) -> Result<()> {
        let desc = server_desc(name, ns_name);
        if self.procs.iter().any(|p| p.desc() == desc) {
            bail!("{desc} is already running");
        }
        let ns = self.ns(ns_name).context("not a host of this lab")?;
        let bin = realserver_bin()?;
        let mut cmd = ns.command(&bin);
        cmd.args(["--name", name]).args(args);
        cmd.stdout(Stdio::piped());
        let mut proc = Proc::spawn(&desc, cmd)?;
        let stdout = proc
            .child_mut()
            .stdout
            .take()
            .context("realserver stdout")?;
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        self.procs.push(proc);
        match rx.recv_timeout(Duration::from_secs(10)) {
            Ok(line) if line.trim() == "READY" => Ok(()),
            Ok(line) => bail!("{desc} did not start (said {:?})", line.trim()),
            Err(_) => bail!("{desc} did not report READY within 10 s"),
        }
    }

    /// Stops the server [`Topology::start_server`] (or
    /// [`Topology::start_realservers`]) started as `name` in `ns_name`, and
    /// waits for it to exit.
    pub fn stop_server(&mut self, ns_name: &str, name: &str) -> Result<()> {
        let desc = server_desc(name, ns_name);
        let i = self
            .procs
            .iter()
            .position(|p| p.desc() == desc)
            .with_context(|| format!("{desc} is not running"))?;
        let mut proc = self.procs.remove(i);
        // A server paused with SIGSTOP would sit on SIGTERM until killed.
        if proc.try_wait()?.is_none() {
            // SAFETY: plain syscall on the PID of our unreaped child.
            unsafe { libc::kill(proc.pid() as libc::pid_t, libc::SIGCONT) };
        }
        proc.stop()?;
        Ok(())
    }

    /// Sends `signal` to the server [`Topology::start_server`] started as
    /// `name` in `ns_name` (by its PID, after checking it still runs):
    /// `SIGSTOP` makes it hang (the kernel still completes handshakes, but
    /// nothing answers), `SIGCONT` resumes it.
    pub fn signal_server(&mut self, ns_name: &str, name: &str, signal: libc::c_int) -> Result<()> {
        let desc = server_desc(name, ns_name);
        let proc = self
            .procs
            .iter_mut()
            .find(|p| p.desc() == desc)
            .with_context(|| format!("{desc} is not running"))?;
        proc.check_running()?;
        // SAFETY: plain syscall on the PID of our unreaped child.
        if unsafe { libc::kill(proc.pid() as libc::pid_t, signal) } != 0 {
            bail!("kill {desc}: {}", std::io::Error::last_os_error());
        }
        Ok(())
    }

    /// [`Topology::signal_server`] for the realserver of real `index`.
    pub fn signal_realserver(&mut self, index: usize, signal: libc::c_int) -> Result<()> {
        let r = self.reals.get(index).context("no such real")?;
        let (ns_name, name) = (r.ns.name().to_string(), r.name.clone());
        self.signal_server(&ns_name, &name, signal)
    }

    /// Adds host `<prefix>-<role>` on the int segment at `ip`, set up as
    /// the reals are: default route via the director, the DR and TUN VIPs
    /// on `lo`, ARP answered only for eth0's own address. Returns the
    /// namespace's name. Start a server in it with
    /// [`Topology::start_server`].
    pub fn add_real_host(&mut self, role: &str, ip: &str) -> Result<String> {
        let name = self.add_host(role)?.name().to_string();
        self.connect(&name, Segment::Int, "eth0", &format!("{ip}/24"))?;
        let ns = self.ns(&name).expect("just added");
        ns.ip(&["route", "add", "default", "via", DIRECTOR_INT_IP])?;
        for vip in [VIP_DR, VIP_TUN] {
            ns.ip(&["addr", "add", &format!("{vip}/32"), "dev", "lo"])?;
        }
        ns.sysctl(&[
            "net.ipv4.conf.all.arp_ignore=1",
            "net.ipv4.conf.all.arp_announce=2",
            "net.ipv4.conf.eth0.arp_ignore=1",
            "net.ipv4.conf.eth0.arp_announce=2",
            "net.ipv4.conf.all.rp_filter=0",
            "net.ipv4.conf.default.rp_filter=0",
            "net.ipv4.conf.eth0.rp_filter=0",
        ])?;
        Ok(name)
    }

    /// Keeps `proc` alive as long as the topology (it is stopped before the
    /// namespaces go away).
    pub fn adopt(&mut self, proc: Proc) {
        self.procs.push(proc);
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        // Stop in reverse start order, before the namespaces are deleted.
        while let Some(p) = self.procs.pop() {
            drop(p);
        }
    }
}

/// The description (and identity) of a realserver process of the lab.
fn server_desc(name: &str, ns_name: &str) -> String {
    format!("realserver {name} (in {ns_name})")
}

/// Finds the `realserver` binary: `$REALSERVER_BIN`, else next to the current
/// executable (target/<profile>/), else one level up (target/<profile>/deps
/// for test binaries).
pub fn realserver_bin() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("REALSERVER_BIN") {
        return Ok(PathBuf::from(p));
    }
    let exe = std::env::current_exe().context("current_exe")?;
    let mut dir = exe.parent();
    for _ in 0..2 {
        let Some(d) = dir else { break };
        let cand = d.join("realserver");
        if cand.is_file() {
            return Ok(cand);
        }
        dir = d.parent();
    }
    bail!(
        "realserver binary not found near {} (build it with `cargo build -p tests --bins`, or set REALSERVER_BIN)",
        exe.display()
    )
}
