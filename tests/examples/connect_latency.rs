//! Cold connect latency: the time from `metanet connect <address>` (no endpoint, nothing
//! cached) to the first pong, between real metanetd processes on one Ethernet segment
//! in network namespaces, peers found through the DHT. Needs root. Not part of
//! `cargo test`; the numbers are in docs/benchmarks.md ("Cold connect").
//!
//! ```sh
//! cargo run --release -p metanet-tests --example connect_latency -- [HOSTS] [MODE]
//! ```
//!
//! `HOSTS` (default 8) hosts join through host 0. Every unordered pair `i < j` of the
//! other hosts gives one sample, measured from `i` to `j`, so that `i` has never heard
//! of `j` before (no session, no cached record; `j` learns `i` only through the sample
//! itself, and `j → i` is never measured). `MODE` is `connect` (the default: run
//! `metanet connect <address>`, then one `ping -6 -c 1`), or `ipv6` (only the ping to
//! the overlay address: the packet itself triggers the lookup).

#![allow(clippy::unwrap_used, clippy::print_stdout, clippy::needless_range_loop)]

use std::time::{Duration, Instant};

use metanet_tests::{bin, root_or_skip, Daemon, DhtNet, Lan};

fn main() {
    if !root_or_skip("connect_latency") {
        return;
    }
    let mut args = std::env::args().skip(1);
    let hosts: usize = args.next().map_or(8, |a| a.parse().unwrap());
    let mode = args.next().unwrap_or_else(|| "connect".to_owned());
    assert!(hosts >= 3, "need at least 3 hosts");
    assert!(
        mode == "connect" || mode == "ipv6",
        "MODE is connect or ipv6"
    );

    let net = DhtNet::start(hosts, |_| String::new());
    // Every host must have published before the clock starts: wait until the bootstrap
    // host (never part of a sample) resolves each of them with its endpoint.
    for j in 1..hosts {
        assert!(
            net.resolves(0, j, &net.lan.ips[j], Duration::from_secs(30)),
            "host {j}'s record is not in the DHT"
        );
    }
    let (lan, daemons) = (&net.lan, &net.daemons);
    let ids: Vec<(String, String)> = daemons.iter().map(Daemon::identity).collect();

    let mut samples = Vec::new();
    let mut failed = 0;
    for i in 1..hosts {
        for j in i + 1..hosts {
            let (address, ipv6) = &ids[j];
            let start = Instant::now();
            let ok = if mode == "connect" {
                let out = std::process::Command::new("timeout")
                    .arg("30")
                    .arg(bin("metanet"))
                    .arg("--socket")
                    .arg(&daemons[i].socket)
                    .args(["connect", address])
                    .output()
                    .unwrap();
                out.status.success() && first_pong(lan, i, ipv6)
            } else {
                first_pong(lan, i, ipv6)
            };
            let ms = start.elapsed().as_secs_f64() * 1000.0;
            if ok {
                println!("sample {i}->{j} {ms:.1} ms");
                samples.push(ms);
            } else {
                println!("sample {i}->{j} failed after {ms:.1} ms");
                failed += 1;
            }
        }
    }
    samples.sort_by(f64::total_cmp);
    let pick = |q: f64| {
        let rank = ((q * samples.len() as f64).ceil() as usize).clamp(1, samples.len());
        samples[rank - 1]
    };
    if samples.is_empty() {
        println!("no successful sample ({failed} failed)");
        std::process::exit(1);
    }
    println!(
        "mode {mode} hosts {hosts} samples {} failed {failed}: min {:.1} ms, median {:.1} ms, p90 {:.1} ms, max {:.1} ms",
        samples.len(),
        samples[0],
        pick(0.5),
        pick(0.9),
        samples[samples.len() - 1],
    );
}

/// One echo request to `ipv6` from host `i`, waiting up to 10 s for its reply: the
/// first packet is queued in the daemon until the lookup and handshake finish.
fn first_pong(lan: &Lan, i: usize, ipv6: &str) -> bool {
    lan.hosts[i]
        .sh(&format!("ping -6 -n -c 1 -W 10 {ipv6}"))
        .status
        .success()
}
