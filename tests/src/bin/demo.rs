//! `xlvs-demo`: builds the namespace lab, runs `xlvs run` with the demo
//! config (NAT, DR and TUN TCP services plus a NAT UDP service), sends
//! traffic through every virtual service, prints which real answered how
//! often and the `xlvs list -n` / `--stats` tables, then tears everything
//! down — also on Ctrl-C or failure.
//!
//! ```text
//! cargo build --release -p lb-user -p tests
//! sudo target/release/xlvs-demo [--requests 300] [--udp-queries 30]
//! ```

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::sync::atomic::Ordering;

use anyhow::{Context, Result, bail};
use tests::topology::Topology;
use tests::traffic::{self, STOP};
use tests::xlvs::{self, Forward, Xlvs};

extern "C" fn on_signal(_sig: libc::c_int) {
    // Only an atomic store: async-signal-safe.
    STOP.store(true, Ordering::SeqCst);
}

fn install_signal_handlers() {
    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        // SAFETY: the handler only stores to an atomic.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_signal as *const () as usize;
            libc::sigemptyset(&mut sa.sa_mask);
            sa.sa_flags = libc::SA_RESTART;
            libc::sigaction(sig, &sa, std::ptr::null_mut());
        }
    }
}

fn check_stop() -> Result<()> {
    if traffic::stopped() {
        bail!("interrupted");
    }
    Ok(())
}

struct Opts {
    requests: usize,
    udp_queries: usize,
    cleanup_stale: bool,
}

fn parse_opts() -> Result<Opts> {
    let mut o = Opts {
        requests: 300,
        udp_queries: 30,
        cleanup_stale: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut num = |name: &str| -> Result<usize> {
            let v = it.next().with_context(|| format!("{name} needs a value"))?;
            let n: usize = v
                .parse()
                .with_context(|| format!("bad number for {name}: {v:?}"))?;
            if n == 0 || n > 100_000 {
                bail!("{name} must be in 1..=100000");
            }
            Ok(n)
        };
        match a.as_str() {
            "--requests" => o.requests = num("--requests")?,
            "--udp-queries" => o.udp_queries = num("--udp-queries")?,
            "--cleanup-stale" => o.cleanup_stale = true,
            "-h" | "--help" => {
                println!(
                    "usage: xlvs-demo [--requests N] [--udp-queries N] [--cleanup-stale]\n\n\
                     Needs root. Uses XLVS_BIN (default target/release/xlvs).\n\
                     --cleanup-stale: only remove namespaces and /tmp files left by killed\n\
                     harness runs (xlvs-<pid>-<n>-*, pid no longer running), then exit."
                );
                std::process::exit(0);
            }
            other => bail!("unknown argument {other:?} (try --help)"),
        }
    }
    Ok(o)
}

fn print_table(title: &str, d: &BTreeMap<String, usize>) {
    let total: usize = d.values().sum();
    println!("\n{title}");
    println!("  {:<10} {:>7} {:>7}", "answered", "count", "share");
    for (name, n) in d {
        let share = if total > 0 {
            100.0 * *n as f64 / total as f64
        } else {
            0.0
        };
        let bar = "#".repeat((share / 2.5).round() as usize);
        println!("  {:<10} {:>7} {:>6.1}%  {bar}", name, n, share);
    }
    println!("  {:<10} {:>7}", "total", total);
}

fn run(o: &Opts) -> Result<bool> {
    if unsafe { libc::geteuid() } != 0 {
        bail!("xlvs-demo needs root (network namespaces and XDP)");
    }
    if o.cleanup_stale {
        for name in tests::netns::remove_stale_labs()? {
            println!("removed {name}");
        }
        return Ok(true);
    }
    let bin = xlvs::xlvs_bin();
    if !bin.is_file() {
        bail!(
            "xlvs binary not found at {} (cargo build --release -p lb-user, or set XLVS_BIN)",
            bin.display()
        );
    }

    println!("building the lab ...");
    let mut topo = Topology::build().context("building the topology")?;
    println!(
        "  namespaces: {}-{{sw,client,dir,real1,real2,real3}}",
        topo.prefix()
    );
    check_stop()?;
    topo.start_realservers()
        .context("starting the real servers")?;
    check_stop()?;
    let decaps = xlvs::decap_all(&topo).context("starting xlvs decap on the reals")?;
    check_stop()?;
    let config = xlvs::demo_config(&topo);
    println!(
        "starting `xlvs run` in {} with:\n\n{config}",
        topo.director().name()
    );
    let x = Xlvs::start(topo.director(), &config, &topo.director_interfaces())
        .context("starting xlvs run")?;
    check_stop()?;

    let client = topo.client();
    let mut ok = true;
    let tcp = [
        (Forward::Nat, xlvs::nat_tcp_addr(), ":8080"),
        (Forward::Dr, xlvs::dr_tcp_addr(), ":80"),
        (Forward::Tun, xlvs::tun_tcp_addr(), ":80"),
    ];
    for (fwd, addr, port) in &tcp {
        let d = traffic::distribution(client, addr, o.requests)?;
        check_stop()?;
        ok &= traffic::answered(&d) == o.requests;
        print_table(
            &format!(
                "{} ({}): {} HTTP requests, each on a new connection, to tcp {addr} -> reals{port}",
                fwd.config_name().to_uppercase(),
                fwd.list_name(),
                o.requests
            ),
            &d,
        );
    }
    let addr = xlvs::nat_udp_addr();
    let d = traffic::udp_distribution(client, &addr, o.udp_queries)?;
    check_stop()?;
    ok &= traffic::answered(&d) == o.udp_queries;
    print_table(
        &format!(
            "NAT (Masq): {} UDP queries to udp {addr} -> reals:53",
            o.udp_queries
        ),
        &d,
    );

    println!("\n$ xlvs list -n\n{}", x.list(&["-n"])?);
    println!("$ xlvs list -n --stats\n{}", x.list(&["-n", "--stats"])?);

    println!("tearing down ...");
    let status = x.stop()?;
    if !status.success() {
        eprintln!("warning: xlvs run exited with {status}");
    }
    drop(decaps);
    drop(topo);
    Ok(ok)
}

fn main() -> ExitCode {
    install_signal_handlers();
    let opts = match parse_opts() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("xlvs-demo: {e:#}");
            return ExitCode::from(2);
        }
    };
    // Every guard created in `run` is dropped before it returns (also on
    // error or unwinding), so the lab is gone by the time we exit.
    let result = std::panic::catch_unwind(|| run(&opts));
    match result {
        Ok(Ok(true)) => {
            println!("done.");
            ExitCode::SUCCESS
        }
        Ok(Ok(false)) => {
            eprintln!("xlvs-demo: some requests were not answered (see the `!` rows)");
            ExitCode::FAILURE
        }
        Ok(Err(e)) => {
            eprintln!("xlvs-demo: {e:#}");
            if traffic::stopped() {
                ExitCode::from(130)
            } else {
                ExitCode::FAILURE
            }
        }
        Err(_) => {
            eprintln!("xlvs-demo: panicked (lab torn down)");
            ExitCode::FAILURE
        }
    }
}
