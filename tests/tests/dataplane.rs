//! The batched data plane (daemon/src/batch.rs) under real traffic: the offload paths
//! are actually taken (TSO super-packets split, GRO merges, UDP GSO and GRO/recvmmsg),
//! and nothing is corrupted or reordered on the way: every packet size from 1 byte of
//! payload to the tunnel MTU, and TCP super-packets. Not timed: the assertions are on
//! counters and content. Real daemons in namespaces; skipped when not root.

#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use metanet_tests::{
    ping, root_or_skip, tcp_receiver, tcp_sender, transfer_intact, wait_for, Daemon, Pair, TempDir,
};

const PORT: u16 = 51820;
/// Default tunnel MTU on a 1500-byte veth (1500 - 124 overhead).
const MTU: usize = 1376;
/// Largest UDP payload in one IPv6 packet of `MTU` bytes.
const MAX_UDP: usize = MTU - 40 - 8;

/// These tests measure what arrives, and one of them floods at line rate: run them one
/// at a time, so that none starves another of CPU (2-core CI machines).
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A and B connected, A able to ping B; returns B's overlay IPv6 too.
fn connected(pair: &Pair, tmp: &TempDir) -> (Daemon, Daemon, String) {
    connected_with(pair, tmp, &[], &[])
}

/// [`connected`], with extra metanetd flags for A and for B.
fn connected_with(
    pair: &Pair,
    tmp: &TempDir,
    flags_a: &[&str],
    flags_b: &[&str],
) -> (Daemon, Daemon, String) {
    let none = Path::new("/dev/null");
    let a = Daemon::start_with(&pair.a, &tmp.0.join("a"), "mnda", none, flags_a);
    let b = Daemon::start_with(&pair.b, &tmp.0.join("b"), "mndb", none, flags_b);
    let (addr_b, ip_b) = b.identity();
    let r = a.connect(&addr_b, &format!("{}:{PORT}", pair.ip_b));
    assert!(r.get("error").is_none(), "connect failed: {r}");
    assert!(
        wait_for(Duration::from_secs(10), || ping(&pair.a, &ip_b)),
        "A cannot ping B"
    );
    (a, b, ip_b)
}

#[test]
fn tcp_takes_the_offload_paths() {
    if !root_or_skip("tcp_takes_the_offload_paths") {
        return;
    }
    let _serial = serial();
    let (pair, tmp) = (Pair::new(), TempDir::new());
    let (a, b, ip_b) = connected(&pair, &tmp);
    let (receiver, out) = tcp_receiver(&pair.b, &tmp, &ip_b);
    let sender = tcp_sender(&pair.a, &ip_b, 32, 0.0, &tmp.0.join("progress"));
    transfer_intact(sender, receiver, &out, 32);

    // Sender side: the kernel handed metanetd TCP super-packets (more packets than
    // reads), and their sealed segments left in GSO sends (more datagrams than calls).
    let (reads, packets_in) = (a.counter("tun_reads"), a.counter("tun_packets_in"));
    let (sends, datagrams_out) = (a.counter("udp_send_calls"), a.counter("udp_datagrams_out"));
    assert!(
        packets_in > reads + reads / 2,
        "no TSO super-packets split on A: {packets_in} packets in {reads} TUN reads"
    );
    assert!(
        datagrams_out > sends + sends / 2,
        "no GSO on A: {datagrams_out} datagrams in {sends} UDP sends"
    );
    // Receiver side: datagrams came in batches (recvmmsg, UDP GRO), and GRO merged
    // the opened segments into super-packets before the TUN write.
    let (calls, datagrams_in) = (b.counter("udp_recv_calls"), b.counter("udp_datagrams_in"));
    assert!(
        datagrams_in > calls + calls / 2,
        "no batched UDP receive on B: {datagrams_in} datagrams in {calls} calls"
    );
    assert!(
        b.counter("tun_merged_out") > 0,
        "no GRO-merged TUN writes on B"
    );
    for d in [&a, &b] {
        assert_eq!(d.counter("decrypt_failures"), 0);
        assert_eq!(d.counter("replayed_data"), 0);
    }
}

/// One UDP datagram of every payload size from 1 byte to the largest that fits the
/// tunnel MTU, in increasing size, each filled with a pattern that depends on its
/// size; the receiver checks that each arrives whole, unchanged and in order.
#[test]
fn every_packet_size_arrives_intact_and_in_order() {
    if !root_or_skip("every_packet_size_arrives_intact_and_in_order") {
        return;
    }
    let _serial = serial();
    let (pair, tmp) = (Pair::new(), TempDir::new());
    let (_a, _b, ip_b) = connected(&pair, &tmp);
    let report = tmp.0.join("udp-report");
    let ready = tmp.0.join("udp-ready");
    let receiver = format!(
        "import socket\n\
         s=socket.socket(socket.AF_INET6,socket.SOCK_DGRAM)\n\
         s.setsockopt(socket.SOL_SOCKET,socket.SO_RCVBUF,8<<20)\n\
         s.bind(('{ip_b}',5002))\ns.settimeout(5)\nopen('{ready}','w').close()\n\
         got=[]\n\
         try:\n  while len(got)<{MAX_UDP}:\n    got.append(s.recv(65536))\n\
         except socket.timeout:\n  pass\n\
         sizes=[len(d) for d in got]\n\
         bad=sum(d!=bytes((len(d)*7+i)%251 for i in range(len(d))) for d in got)\n\
         order=sum(1 for x,y in zip(sizes,sizes[1:]) if y<=x)\n\
         open('{report}','w').write('%d %d %d %d'%(len(sizes),len(set(sizes)),bad,order))\n",
        ready = ready.display(),
        report = report.display(),
    );
    let mut srv = pair
        .b
        .cmd(Path::new("timeout"))
        .args(["60", "python3", "-c", &receiver])
        .spawn()
        .unwrap();
    assert!(wait_for(Duration::from_secs(10), || ready.exists()));
    // Bursts of 32 back to back (so that the TUN reads and UDP sends batch them),
    // then a short pause, so that no socket buffer overflows.
    let sender = format!(
        "import socket,time\ns=socket.socket(socket.AF_INET6,socket.SOCK_DGRAM)\n\
         for n in range(1,{}):\n  \
         s.sendto(bytes((n*7+i)%251 for i in range(n)),('{ip_b}',5002))\n  \
         if n%32==0: time.sleep(0.005)\n",
        MAX_UDP + 1
    );
    let sent = pair
        .a
        .cmd(Path::new("timeout"))
        .args(["60", "python3", "-c", &sender])
        .output()
        .unwrap();
    assert!(
        sent.status.success(),
        "sender failed: {}",
        String::from_utf8_lossy(&sent.stderr)
    );
    let _ = srv.wait();
    let got = std::fs::read_to_string(&report).unwrap();
    let v: Vec<usize> = got.split_whitespace().map(|x| x.parse().unwrap()).collect();
    let (received, distinct, corrupted, out_of_order) = (v[0], v[1], v[2], v[3]);
    assert_eq!(corrupted, 0, "corrupted datagrams");
    assert_eq!(out_of_order, 0, "datagrams out of order");
    assert_eq!(distinct, received, "duplicated datagrams");
    assert_eq!(
        received, MAX_UDP,
        "datagrams lost: {received} of {MAX_UDP} sizes arrived"
    );
    // The largest size really filled the MTU: one byte more does not cross unfragmented.
    let too_big = pair.a.sh(&format!(
        "ping -6 -c 1 -W 2 -s {} -M do {ip_b}",
        MTU - 40 - 8 + 1
    ));
    assert!(
        !too_big.status.success(),
        "a packet above the MTU got through"
    );
}

/// ICMP echoes of many sizes, and then a TCP stream (super-packets on both sides),
/// through the same session: every echo reply matches, the stream's hash matches.
#[test]
fn mixed_icmp_and_tcp_super_packets_stay_intact() {
    if !root_or_skip("mixed_icmp_and_tcp_super_packets_stay_intact") {
        return;
    }
    let _serial = serial();
    let (pair, tmp) = (Pair::new(), TempDir::new());
    let (_a, _b, ip_b) = connected(&pair, &tmp);
    let (receiver, out) = tcp_receiver(&pair.b, &tmp, &ip_b);
    let sender = tcp_sender(&pair.a, &ip_b, 16, 0.0, &tmp.0.join("progress"));
    // While the stream runs: echoes from 0 bytes of payload to the MTU, each checked by
    // ping itself (a corrupted reply is reported and counted as lost).
    for size in [0, 1, 7, 64, 500, 1000, 1279, MTU - 48] {
        let out = pair
            .a
            .sh(&format!("ping -6 -c 3 -i 0.05 -W 2 -s {size} -M do {ip_b}"));
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && !text.contains("wrong data"),
            "echo of {size} bytes: {text}"
        );
    }
    transfer_intact(sender, receiver, &out, 16);
}

/// A UDP flood at line rate through the tunnel (iperf3 -u, B to A) must not starve
/// the control plane: `metanet status` keeps answering on both sides, and a new
/// handshake (A's second identity connecting to B) completes on the flooded socket.
#[test]
fn udp_flood_does_not_starve_status_or_handshakes() {
    if !root_or_skip("udp_flood_does_not_starve_status_or_handshakes") {
        return;
    }
    let _serial = serial();
    let (pair, tmp) = (Pair::new(), TempDir::new());
    let (a, b, _) = connected(&pair, &tmp);
    let (addr_b, _) = b.identity();
    let (_, ip_a) = a.identity();
    let out = a.cli(&["id", "new", "second"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut server = pair
        .a
        .cmd(Path::new("timeout"))
        .args(["30", "iperf3", "-s", "-1", "-B", &ip_a])
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    assert!(
        wait_for(Duration::from_secs(10), || pair
            .a
            .sh("ss -Hltn 'sport = :5201' | grep -q .")
            .status
            .success()),
        "iperf3 server did not listen"
    );
    let mut flood = pair
        .b
        .cmd(Path::new("timeout"))
        .args([
            "30", "iperf3", "-u", "-b", "0", "-l", "1372", "-t", "8", "-c", &ip_a,
        ])
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // The flood is on once A sees its datagrams pour in.
    let base = a.counter("udp_datagrams_in");
    assert!(
        wait_for(Duration::from_secs(10), || a.counter("udp_datagrams_in")
            > base + 1000),
        "the flood did not start"
    );
    let before = a.counter("udp_datagrams_in");
    // During the flood: status answers promptly on both sides, every time.
    for _ in 0..5 {
        for d in [&a, &b] {
            let start = std::time::Instant::now();
            let reply = d.request(r#"{"id":7,"method":"status"}"#);
            assert!(reply.is_some(), "status did not answer during the flood");
            assert!(
                start.elapsed() < Duration::from_secs(2),
                "status took {:?} during the flood",
                start.elapsed()
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    // A fresh handshake on the flooded socket.
    let line = format!(
        r#"{{"id":8,"method":"connect","params":{{"address":"{addr_b}","endpoint":"{}:{PORT}","identity":"second"}}}}"#,
        pair.ip_b
    );
    // Under the flood an initiation may be lost: the connect answers after a retry
    // (5 s each), within the daemon's connect wait.
    let r = a.request_within(&line, Duration::from_secs(25)).unwrap();
    assert!(r.get("error").is_none(), "second identity's connect: {r}");
    let connected_as_second = || {
        let v = a.request(r#"{"id":9,"method":"peers"}"#).unwrap();
        v["result"]["peers"].as_array().unwrap().iter().any(|p| {
            p["address"] == addr_b.as_str() && p["identity"] == "second" && p["connected"] == true
        })
    };
    assert!(
        wait_for(Duration::from_secs(5), connected_as_second),
        "no session for the second identity during the flood: {}",
        a.request(r#"{"id":9,"method":"peers"}"#).unwrap()
    );
    let flooded = a.counter("udp_datagrams_in") - before;
    let _ = flood.wait();
    let _ = server.wait();
    assert!(
        flooded > 10_000,
        "the flood did not arrive ({flooded} datagrams)"
    );
}

/// The data cipher the session of `d` with the peer at `address` uses, per `peers`.
fn session_cipher(d: &Daemon, address: &str) -> Option<String> {
    let v = d.request(r#"{"id":9,"method":"peers"}"#)?;
    v["result"]["peers"]
        .as_array()?
        .iter()
        .find(|p| p["address"] == address && p["connected"] == true)?["cipher"]
        .as_str()
        .map(str::to_owned)
}

/// AES-256-GCM where both daemons allow it, ChaCha20-Poly1305 where one does not, and a
/// TCP stream through either arrives intact, through the offload paths.
#[test]
fn both_data_ciphers_carry_a_tcp_stream_intact() {
    if !root_or_skip("both_data_ciphers_carry_a_tcp_stream_intact") {
        return;
    }
    let _serial = serial();
    for (cipher_b, expected) in [
        ("aes-256-gcm", "aes-256-gcm"),
        ("chacha20-poly1305", "chacha20-poly1305"),
    ] {
        let (pair, tmp) = (Pair::new(), TempDir::new());
        let (a, b, ip_b) = connected_with(
            &pair,
            &tmp,
            &["--cipher", "aes-256-gcm"],
            &["--cipher", cipher_b],
        );
        let ((addr_a, _), (addr_b, _)) = (a.identity(), b.identity());
        assert_eq!(session_cipher(&a, &addr_b).as_deref(), Some(expected));
        assert_eq!(session_cipher(&b, &addr_a).as_deref(), Some(expected));
        let (receiver, out) = tcp_receiver(&pair.b, &tmp, &ip_b);
        let sender = tcp_sender(&pair.a, &ip_b, 16, 0.0, &tmp.0.join("progress"));
        transfer_intact(sender, receiver, &out, 16);
        for d in [&a, &b] {
            assert_eq!(d.counter("decrypt_failures"), 0, "B: {cipher_b}");
        }
    }
}
