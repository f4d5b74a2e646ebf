//! Where the figures go: BENCHMARKS.md for people, results.json for tools,
//! both with the machine they were taken on.

use std::{fmt::Write as _, fs, path::Path};

use serde_json::{Value, json};

/// One benchmark's figures, in ns per packet.
pub struct Figures {
    pub name: &'static str,
    pub what: &'static str,
    /// The mean of each run.
    pub runs: Vec<f64>,
}

impl Figures {
    pub fn median(&self) -> f64 {
        let mut sorted = self.runs.clone();
        sorted.sort_by(f64::total_cmp);
        let mid = sorted.len() / 2;
        if sorted.len().is_multiple_of(2) {
            (sorted[mid - 1] + sorted[mid]) / 2.0
        } else {
            sorted[mid]
        }
    }
    pub fn min(&self) -> f64 {
        self.runs.iter().copied().fold(f64::INFINITY, f64::min)
    }
    pub fn max(&self) -> f64 {
        self.runs.iter().copied().fold(f64::NEG_INFINITY, f64::max)
    }
}

/// What the verifier processed for one program (`verified_insns`, as
/// `bpftool prog` shows it).
pub struct Verified {
    pub program: &'static str,
    /// `None` on kernels before 5.16, which do not report it.
    pub instructions: Option<u32>,
}

/// The kernel's limit on instructions processed for one program
/// (`BPF_COMPLEXITY_LIMIT_INSNS`).
pub const VERIFIER_LIMIT: u32 = 1_000_000;

/// What the figures were taken on.
pub struct Machine {
    pub cpus: usize,
    pub cpu_model: String,
    pub kernel: String,
    pub date: String,
}

impl Machine {
    pub fn probe() -> Self {
        let cpuinfo = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu_model = cpuinfo
            .lines()
            .find_map(|l| l.strip_prefix("model name").and_then(|r| r.split_once(':')))
            .map_or_else(|| "unknown".to_owned(), |(_, m)| m.trim().to_owned());
        let kernel = fs::read_to_string("/proc/sys/kernel/osrelease")
            .map_or_else(|_| "unknown".to_owned(), |s| s.trim().to_owned());
        Self {
            cpus: std::thread::available_parallelism().map_or(0, usize::from),
            cpu_model,
            kernel,
            date: today_utc(),
        }
    }
}

/// Today's date (UTC) as YYYY-MM-DD, from the days since 1970 (Howard
/// Hinnant's `civil_from_days`), to avoid a date crate for one line.
fn today_utc() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let z = (secs / 86_400) as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}")
}

pub struct Report<'a> {
    pub machine: &'a Machine,
    pub figures: &'a [Figures],
    pub verifier: &'a [Verified],
    /// The empty program's median: what every figure's net subtracts.
    pub baseline: f64,
    pub runs: usize,
    pub packets: usize,
    pub quick: bool,
    /// A quick run, or one with parts left out or shortened: BENCHMARKS.md
    /// is left alone.
    pub partial: bool,
    pub mpps: Option<&'a crate::mpps::Report>,
    pub http: Option<&'a crate::http::Report>,
    pub scale: Option<&'a crate::scale::Report>,
}

impl Report<'_> {
    pub fn json(&self) -> Value {
        let results: Vec<Value> = self
            .figures
            .iter()
            .map(|f| {
                json!({
                    "name": f.name,
                    "what": f.what,
                    "ns_per_packet": {
                        "median": f.median(),
                        "min": f.min(),
                        "max": f.max(),
                        "net": f.median() - self.baseline,
                        "runs": f.runs,
                    },
                })
            })
            .collect();
        json!({
            "machine": {
                "nproc": self.machine.cpus,
                "cpu_model": self.machine.cpu_model,
                "kernel": self.machine.kernel,
                "date": self.machine.date,
            },
            "method": "BPF_PROG_TEST_RUN, repeat=1 per call, kernel-reported duration; \
                       a run's figure is its mean; net = median - empty program's median",
            "quick": self.quick,
            "runs": self.runs,
            "packets_per_run": self.packets,
            "results": results,
            "verifier": {
                "limit": VERIFIER_LIMIT,
                "processed_instructions": self
                    .verifier
                    .iter()
                    .map(|v| json!({ "program": v.program, "instructions": v.instructions }))
                    .collect::<Vec<Value>>(),
            },
            "limits": {
                "max_reals_per_service": lb_common::MAX_REALS_PER_SERVICE,
            },
            "partial": self.partial,
            "veth_mpps": self.mpps.map(crate::sections::mpps_json),
            "http": self.http.map(crate::sections::http_json),
            "scale": self.scale.map(crate::sections::scale_json),
            "targets": crate::sections::targets(self)
                .iter()
                .map(|t| json!({ "target": t.target, "measured": t.measured, "verdict": t.verdict.as_str() }))
                .collect::<Vec<Value>>(),
        })
    }

    pub fn markdown(&self) -> String {
        let m = self.machine;
        let mut s = String::new();
        let _ = writeln!(
            s,
            "# Benchmarks\n\n\
             What xlvs costs: per packet in the kernel (`BPF_PROG_TEST_RUN`), in\n\
             packets per second through veth, in HTTP requests side by side with\n\
             nftables and HAProxy, and at scale. Regenerate with `cargo xtask bench`\n\
             (needs root); this file is written by the `bench` crate\n\
             (`bench/src/report.rs`, `bench/src/sections.rs`), do not edit it by hand.\n\n\
             | machine | |\n| --- | --- |\n\
             | CPUs (`nproc`) | {} |\n| CPU model | {} |\n| kernel (`uname -r`) | {} |\n\
             | date | {} |\n| command | `cargo xtask bench` |\n",
            m.cpus, m.cpu_model, m.kernel, m.date
        );
        crate::sections::targets_md(self, &mut s);
        if !self.figures.is_empty() {
            self.packet_sections(&mut s);
        }
        if let Some(m) = self.mpps {
            crate::sections::mpps_md(m, &mut s);
        }
        if let Some(h) = self.http {
            crate::sections::http_md(h, &mut s);
        }
        if let Some(sc) = self.scale {
            crate::sections::scale_md(sc, &mut s);
        }
        failover_md(&mut s);
        s.push_str(METHOD);
        if self.mpps.is_some() {
            s.push_str(crate::sections::MPPS_METHOD);
        }
        if self.http.is_some() {
            s.push_str(crate::sections::HTTP_METHOD);
        }
        if self.scale.is_some() {
            s.push_str(crate::sections::SCALE_METHOD);
        }
        s
    }

    fn packet_sections(&self, s: &mut String) {
        let _ = writeln!(
            s,
            "## Results\n\n\
             ns per packet; {} run(s) of {} packets each. *net* is the median minus the\n\
             empty program's median ({:.1} ns), i.e. the data plane's own work.\n\n\
             | path | median | min | max | net |\n| --- | ---: | ---: | ---: | ---: |",
            self.runs, self.packets, self.baseline
        );
        let (syns, paths): (Vec<&Figures>, Vec<&Figures>) = self
            .figures
            .iter()
            .partition(|f| f.name.starts_with("syn_"));
        for f in paths {
            let _ = writeln!(
                s,
                "| {} | {:.1} | {:.1} | {:.1} | {:.1} |",
                f.what,
                f.median(),
                f.min(),
                f.max(),
                f.median() - self.baseline
            );
        }
        self.syn_table(s, &syns);
        self.verifier_table(s);
    }

    /// New connections: one row per scheduler, one column per real count;
    /// each cell the median, and in brackets the net figure.
    fn syn_table(&self, s: &mut String, syns: &[&Figures]) {
        // syn_<scheduler>_<reals>, in the order they ran.
        let mut rows: Vec<&str> = Vec::new();
        let mut cols: Vec<u64> = Vec::new();
        let parsed: Vec<(&str, u64, &Figures)> = syns
            .iter()
            .filter_map(|f| {
                let (sched, n) = f.name.strip_prefix("syn_")?.rsplit_once('_')?;
                Some((sched, n.parse().ok()?, *f))
            })
            .collect();
        for &(sched, n, _) in &parsed {
            if !rows.contains(&sched) {
                rows.push(sched);
            }
            if !cols.contains(&n) {
                cols.push(n);
            }
        }
        let _ = write!(
            s,
            "\n## New connections, by scheduler\n\n\
             A NAT SYN of a new flow on every call: the scheduler's pick, the connection\n\
             entries, the rewrite. ns per packet, median of the runs (net in brackets).\n\n\
             | scheduler |"
        );
        for n in &cols {
            let _ = write!(s, " {n} reals |");
        }
        s.push_str("\n| --- |");
        for _ in &cols {
            s.push_str(" ---: |");
        }
        s.push('\n');
        for sched in rows {
            let _ = write!(s, "| {sched} |");
            for &n in &cols {
                match parsed.iter().find(|p| p.0 == sched && p.1 == n) {
                    Some((_, _, f)) => {
                        let _ = write!(
                            s,
                            " {:.1} ({:.1}) |",
                            f.median(),
                            f.median() - self.baseline
                        );
                    }
                    None => s.push_str(" |"),
                }
            }
            s.push('\n');
        }
    }

    fn verifier_table(&self, s: &mut String) {
        let _ = writeln!(
            s,
            "\n## Verifier: processed instructions per program\n\n\
             What the kernel's verifier processed to accept each program of the\n\
             director (`verified_insns`, read with `Xdp::info()` after loading; the\n\
             limit is 1,000,000 per program). A new connection runs the\n\
             director, then its scheduler's program by tail call, which picks the\n\
             real and finishes the connection (`xlvs_connect` finishes those whose\n\
             real a persistence template names); each program is verified on its own.\n\n\
             | program | processed instructions | of the limit |\n| --- | ---: | ---: |"
        );
        for v in self.verifier {
            match v.instructions {
                Some(n) => {
                    let _ = writeln!(
                        s,
                        "| `{}` | {n} | {:.1} % |",
                        v.program,
                        f64::from(n) * 100.0 / f64::from(VERIFIER_LIMIT)
                    );
                }
                None => {
                    let _ = writeln!(s, "| `{}` | not reported by this kernel | |", v.program);
                }
            }
        }
        let _ = writeln!(
            s,
            "\nLimit: **max reals per service = {}** (`MAX_REALS_PER_SERVICE`), verified\n\
             for every scheduler: each scheduler's loops are bounded by it and the\n\
             verifier accepts every program above with that bound; the new-connection\n\
             benchmarks run each scheduler with that many reals.",
            lb_common::MAX_REALS_PER_SERVICE
        );
    }

    /// Writes results.json, and BENCHMARKS.md unless this is a quick run.
    pub fn write(&self, workspace: &Path, target: &Path) -> std::io::Result<()> {
        let dir = target.join("bench");
        fs::create_dir_all(&dir)?;
        let json = serde_json::to_string_pretty(&self.json()).expect("JSON of plain values");
        fs::write(dir.join("results.json"), json + "\n")?;
        println!("wrote {}", dir.join("results.json").display());
        if self.partial {
            let path = dir.join("BENCHMARKS.partial.md");
            fs::write(&path, self.markdown())?;
            println!(
                "wrote {} (a partial run leaves BENCHMARKS.md alone)",
                path.display()
            );
        } else {
            fs::write(workspace.join("BENCHMARKS.md"), self.markdown())?;
            println!("wrote {}", workspace.join("BENCHMARKS.md").display());
        }
        Ok(())
    }
}

/// The takeover times the failover tests record (`tests/tests/failover.rs`
/// writes `target/bench/failover.json`), when they have run.
fn failover_md(s: &mut String) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/bench/failover.json");
    let Ok(text) = fs::read_to_string(&path) else { return };
    let Ok(v) = serde_json::from_str::<Value>(&text) else { return };
    let ms = |k: &str| v.get(k).and_then(Value::as_u64);
    let (Some(interval), Some(kill)) = (ms("advert_interval_ms"), ms("takeover_ms")) else { return };
    let _ = writeln!(
        s,
        "\n## Failover\n\n\
         Takeover by the backup director, from the master's failure to the first\n\
         connection the new master forwards (`cargo test --release -p tests --test\n\
         failover`), with `advert_interval = {interval}` ms. keepalived's default\n\
         (1 s adverts) takes about 3.6 s: 3 × 1 s + a skew of (256 − 100)/256 s.\n\n\
         | failure | takeover |\n| --- | ---: |\n\
         | master's `xlvs run` killed (SIGKILL) | {kill} ms |"
    );
    if let Some(link) = ms("link_down_takeover_ms") {
        let _ = writeln!(s, "| master's link down | {link} ms |");
    }
}

const METHOD: &str = "
## Method

### Per packet

- Every call to `BPF_PROG_TEST_RUN` runs one packet (`repeat = 1`). In repeat
  mode the kernel does not restore the packet between repeats, so a NAT
  rewrite or a tunnel header would send the second repeat down another path.
- The time per packet is the kernel's own measurement (the call's
  `duration`), which leaves out the syscall and the copies in and out, but
  includes the kernel's timer and the test-run loop around the program; the
  empty program (`r0 = XDP_PASS; exit`, same packet, same method) measures
  that part, and *net* subtracts it.
- The verdict and the output bytes of every call are checked against the
  packet built independently with etherparse, as the fixtures do.
- Established paths (NAT, DR, TUN, NAT reply, UDP NAT) send the same packet
  of an existing flow every time. *New connection* sends a SYN of a new
  flow on every call (each from a client address of its own, ports vary),
  so each one is scheduled and inserts its connection entries (two for
  NAT). The reals' weights are 1, 2, 3, 1, 2, 3... in scan order. dh, lblc
  and lblcr serve an address range and the SYNs go to 1024 destinations in
  it, so that their caches see both new and known destinations. Every SYN
  leaves a connection in SYN_RECV, which counts as active, so the
  count-based schedulers spread them. Which real each SYN must reach is
  worked out by the reference model (`lb_common::sched`), and the output
  is checked against the NAT rewrite to that real. Before each run the
  connection table is emptied (so it never fills), the connection counts
  are zeroed and the scheduler's state and caches start afresh.
- Each benchmark first does one untimed run of the same size, so that every
  timed run starts from the same state; for new connections that is a
  table that has been filled and emptied (a never-used one has measured
  faster than one in use, which is what a director runs on).
- The run-to-run spread (min, max) is the noise of this machine; a VM with
  few cores is noisy, so compare medians taken on the same machine.
";
