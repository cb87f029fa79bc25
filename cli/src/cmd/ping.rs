//! `metanet ping <address|name|ipv6> [-c N] [-W SECS]`: ICMPv6 echo to a peer's overlay
//! address, through the metanet interface like any application's traffic.
//!
//! The target is parsed first (a typo is exit code 2). Echo requests go out on an
//! unprivileged ICMPv6 datagram socket ("ping socket", allowed by
//! `net.ipv4.ping_group_range`); where that is refused, a raw ICMPv6 socket (root or
//! CAP_NET_RAW); where both are refused, the system `ping -6`. One request per second,
//! each waiting up to `-W` seconds for its reply. The command fails when no reply came.

use std::io::{self, Read, Write};
use std::net::{Ipv6Addr, SocketAddrV6};
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use serde::Serialize;
use socket2::{Domain, Protocol, Socket, Type};

use super::{parse_target, write_json, Context, Resolve};

/// Data bytes after the 8-byte ICMPv6 header, as `ping` sends.
const PAYLOAD_LEN: usize = 56;
/// Time between requests.
const INTERVAL: Duration = Duration::from_secs(1);
const ECHO_REQUEST: u8 = 128;
const ECHO_REPLY: u8 = 129;

/// Arguments of `ping`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// The peer's `mn1…` address, registered name or overlay IPv6.
    pub(crate) target: String,
    /// Number of echo requests to send.
    #[arg(
        short = 'c',
        long = "count",
        value_name = "N",
        default_value_t = 4,
        value_parser = clap::value_parser!(u16).range(1..)
    )]
    pub(crate) count: u16,
    /// Seconds to wait for each reply.
    #[arg(
        short = 'W',
        long = "timeout",
        value_name = "SECS",
        default_value_t = 5,
        value_parser = clap::value_parser!(u64).range(1..=3600)
    )]
    pub(crate) wait: u64,
}

/// The outcome of a ping run (the `--json` output).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct Summary {
    /// The target as given.
    pub(crate) target: String,
    /// The overlay IPv6 pinged.
    pub ipv6: Ipv6Addr,
    /// How the echo requests were sent: `icmp-datagram`, `icmp-raw` or `system-ping`.
    pub(crate) method: &'static str,
    /// Requests sent.
    pub(crate) transmitted: u32,
    /// Replies received.
    pub(crate) received: u32,
    /// Round-trip time of each reply, in milliseconds.
    pub(crate) rtt_ms: Vec<f64>,
    /// ICMPv6 errors received instead of replies (e.g. destination unreachable).
    pub(crate) errors: u32,
}

/// No echo reply came back.
#[derive(Debug, thiserror::Error)]
pub(crate) enum NoReply {
    #[error(
        "no reply from {target} ({ipv6}): check with `metanet peers` that a session with it \
         is up, and that the peer's endpoint is reachable"
    )]
    Silent { target: String, ipv6: Ipv6Addr },
    #[error(
        "{target} ({ipv6}) is unreachable: is there a session with it? check `metanet peers`, \
         and open one with `metanet connect ADDRESS --endpoint HOST:PORT`"
    )]
    Unreachable { target: String, ipv6: Ipv6Addr },
}

/// Run `ping`.
pub(crate) fn run(ctx: &Context, args: Args, out: &mut dyn Write) -> Result<()> {
    let target = parse_target(&args.target)?;
    let ip = match target.ipv6() {
        Some(ip) => ip,
        None => target.resolve(&ctx.client())?.ipv6(),
    };
    let wait = Duration::from_secs(args.wait);
    let summary = match Pinger::open(ip) {
        Ok(pinger) => {
            if !ctx.json {
                writeln!(
                    out,
                    "PING {} ({ip}): {PAYLOAD_LEN} data bytes",
                    args.target.trim()
                )?;
            }
            let mut summary = pinger.run(args.count, wait, &mut |line| {
                if !ctx.json {
                    writeln!(out, "{line}")?;
                }
                Ok(())
            })?;
            summary.target = args.target.trim().to_owned();
            summary
        }
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
            eprintln!(
                "note: ICMP sockets are not permitted for this user \
                 (net.ipv4.ping_group_range); using the system `ping`"
            );
            out.flush()?;
            system_ping(ctx, args.target.trim(), ip, args.count, args.wait)?
        }
        Err(e) if e.kind() == io::ErrorKind::NetworkUnreachable => return Err(no_route(ip)),
        Err(e) => bail!("cannot open an ICMPv6 socket: {e}"),
    };
    if ctx.json {
        write_json(out, &summary)?;
    } else if summary.method != "system-ping" {
        write!(out, "{}", render_summary(&summary))?;
    }
    if summary.received == 0 {
        let (target, ipv6) = (summary.target, ip);
        return Err(if summary.errors > 0 {
            NoReply::Unreachable { target, ipv6 }
        } else {
            NoReply::Silent { target, ipv6 }
        }
        .into());
    }
    Ok(())
}

/// An ICMPv6 echo socket connected to one destination.
#[derive(Debug)]
struct Pinger {
    socket: Socket,
    ip: Ipv6Addr,
    /// `None` for a datagram socket, whose identifier the kernel owns; our identifier
    /// for a raw socket, which sees every ICMPv6 packet and must filter.
    ident: Option<u16>,
    /// Random bytes that start every payload, so stray replies are not counted.
    tag: [u8; 8],
}

impl Pinger {
    fn open(ip: Ipv6Addr) -> io::Result<Self> {
        let mut tag = [0u8; 8];
        getrandom::fill(&mut tag).map_err(io::Error::other)?;
        let (socket, ident) = match Socket::new(Domain::IPV6, Type::DGRAM, Some(Protocol::ICMPV6)) {
            Ok(s) => (s, None),
            Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
                match Socket::new(Domain::IPV6, Type::RAW, Some(Protocol::ICMPV6)) {
                    Ok(s) => (s, Some(u16::from_be_bytes([tag[0], tag[1]]))),
                    // Report the first refusal: it is the one the user can change.
                    Err(raw) if raw.kind() == io::ErrorKind::PermissionDenied => return Err(e),
                    Err(raw) => return Err(raw),
                }
            }
            Err(e) => return Err(e),
        };
        // Connecting makes the kernel deliver only packets from `ip` to this socket.
        socket.connect(&SocketAddrV6::new(ip, 0, 0, 0).into())?;
        // Without this, ICMPv6 errors the kernel deems soft (metanetd's "address
        // unreachable" for a destination with no session) are dropped and each probe
        // waits out its timeout; with it, the next read fails at once with the reason.
        nix::sys::socket::setsockopt(&socket, nix::sys::socket::sockopt::Ipv6RecvErr, &true)
            .map_err(io::Error::from)?;
        Ok(Pinger {
            socket,
            ip,
            ident,
            tag,
        })
    }

    fn method(&self) -> &'static str {
        if self.ident.is_some() {
            "icmp-raw"
        } else {
            "icmp-datagram"
        }
    }

    /// Send `count` requests one `INTERVAL` apart, reporting each reply through `line`.
    fn run(
        &self,
        count: u16,
        wait: Duration,
        line: &mut dyn FnMut(String) -> io::Result<()>,
    ) -> Result<Summary> {
        let mut sent_at: Vec<Option<Instant>> = vec![None; usize::from(count) + 1];
        let mut received = vec![false; usize::from(count) + 1];
        let mut summary = Summary {
            target: String::new(),
            ipv6: self.ip,
            method: self.method(),
            transmitted: 0,
            received: 0,
            rtt_ms: Vec::new(),
            errors: 0,
        };
        let mut buf = [0u8; 2048];
        for seq in 1..=count {
            let start = Instant::now();
            match self.socket.send(&self.request(seq)) {
                Ok(_) => {
                    sent_at[usize::from(seq)] = Some(start);
                    summary.transmitted += 1;
                }
                Err(e) if e.kind() == io::ErrorKind::NetworkUnreachable => {
                    return Err(no_route(self.ip))
                }
                Err(e) => line(format!("icmp_seq={seq}: send failed: {e}"))?,
            }
            let deadline = start + wait;
            // Wait for this request's reply (taking any late ones on the way), then keep
            // to one request per interval.
            while !received[usize::from(seq)] && sent_at[usize::from(seq)].is_some() {
                let Some(left) = deadline.checked_duration_since(Instant::now()) else {
                    break;
                };
                if left.is_zero() {
                    break;
                }
                self.socket.set_read_timeout(Some(left))?;
                let n = match (&self.socket).read(&mut buf) {
                    Ok(n) => n,
                    Err(e)
                        if matches!(
                            e.kind(),
                            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                        ) =>
                    {
                        break
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    // ICMPv6 errors about our requests arrive as socket errors; this
                    // probe has its answer.
                    Err(e) => {
                        summary.errors += 1;
                        line(format!(
                            "from {}: icmp_seq={seq} {}",
                            self.ip,
                            describe_error(&e)
                        ))?;
                        break;
                    }
                };
                let Some(got) = self.parse_reply(&buf[..n], count) else {
                    continue;
                };
                let Some(sent) = sent_at[usize::from(got)] else {
                    continue;
                };
                if std::mem::replace(&mut received[usize::from(got)], true) {
                    continue; // duplicate
                }
                let rtt = sent.elapsed().as_secs_f64() * 1000.0;
                summary.received += 1;
                summary.rtt_ms.push(rtt);
                line(format!(
                    "{n} bytes from {}: icmp_seq={got} time={rtt:.2} ms",
                    self.ip
                ))?;
            }
            if seq < count {
                if let Some(rest) = (start + INTERVAL).checked_duration_since(Instant::now()) {
                    std::thread::sleep(rest);
                }
            }
        }
        Ok(summary)
    }

    fn request(&self, seq: u16) -> Vec<u8> {
        let mut p = Vec::with_capacity(8 + PAYLOAD_LEN);
        // Type, code, checksum (the kernel computes it for ICMPv6 sockets), identifier.
        p.extend_from_slice(&[ECHO_REQUEST, 0, 0, 0]);
        p.extend_from_slice(&self.ident.unwrap_or(0).to_be_bytes());
        p.extend_from_slice(&seq.to_be_bytes());
        p.extend_from_slice(&self.payload());
        p
    }

    fn payload(&self) -> [u8; PAYLOAD_LEN] {
        let mut payload = [0u8; PAYLOAD_LEN];
        payload[..8].copy_from_slice(&self.tag);
        for (i, b) in payload[8..].iter_mut().enumerate() {
            *b = i as u8;
        }
        payload
    }

    /// The sequence number of a valid echo reply to one of our requests.
    fn parse_reply(&self, packet: &[u8], count: u16) -> Option<u16> {
        let header = packet.get(..8)?;
        if header[0] != ECHO_REPLY || header[1] != 0 {
            return None;
        }
        if let Some(ident) = self.ident {
            if u16::from_be_bytes([header[4], header[5]]) != ident {
                return None;
            }
        }
        let seq = u16::from_be_bytes([header[6], header[7]]);
        (1..=count).contains(&seq).then_some(())?;
        (packet.get(8..)? == self.payload()).then_some(seq)
    }
}

fn no_route(ip: Ipv6Addr) -> anyhow::Error {
    anyhow::anyhow!(
        "no route to {ip}: is metanetd running with its interface up? check `metanet status`"
    )
}

/// An ICMPv6 error about an echo request, in `ping`'s words.
fn describe_error(e: &io::Error) -> String {
    match e.kind() {
        io::ErrorKind::HostUnreachable | io::ErrorKind::NetworkUnreachable => {
            "destination unreachable".into()
        }
        _ => format!("error: {e}"),
    }
}

/// Statistics lines after the replies, in `ping`'s form.
fn render_summary(s: &Summary) -> String {
    let loss = (s.received * 100)
        .checked_div(s.transmitted)
        .map_or(100, |r| 100u32.saturating_sub(r));
    let mut text = format!(
        "\n--- {} ping statistics ---\n{} packets transmitted, {} received, ",
        s.target, s.transmitted, s.received
    );
    if s.errors > 0 {
        text.push_str(&format!("+{} errors, ", s.errors));
    }
    text.push_str(&format!("{loss}% packet loss\n"));
    if !s.rtt_ms.is_empty() {
        let min = s.rtt_ms.iter().copied().fold(f64::INFINITY, f64::min);
        let max = s.rtt_ms.iter().copied().fold(0.0, f64::max);
        let avg = s.rtt_ms.iter().sum::<f64>() / s.rtt_ms.len() as f64;
        text.push_str(&format!(
            "rtt min/avg/max = {min:.2}/{avg:.2}/{max:.2} ms\n"
        ));
    }
    text
}

/// Run the system `ping -6`: its output goes straight to the terminal, or is parsed
/// into a [`Summary`] for `--json`.
fn system_ping(
    ctx: &Context,
    target: &str,
    ip: Ipv6Addr,
    count: u16,
    wait: u64,
) -> Result<Summary> {
    let mut cmd = std::process::Command::new("ping");
    cmd.args(["-6", "-c", &count.to_string(), "-W", &wait.to_string()])
        .arg(ip.to_string());
    let missing = |e: io::Error| {
        if e.kind() == io::ErrorKind::NotFound {
            anyhow::anyhow!(
                "cannot ping: ICMP sockets are not permitted for this user and there is no \
                 system `ping`: run as root, allow ping sockets with \
                 `sysctl net.ipv4.ping_group_range='0 2147483647'`, or install iputils-ping"
            )
        } else {
            anyhow::anyhow!("cannot run the system `ping`: {e}")
        }
    };
    let text = if ctx.json {
        let output = cmd
            .stdin(std::process::Stdio::null())
            .output()
            .map_err(missing)?;
        String::from_utf8_lossy(&output.stdout).into_owned()
    } else {
        let status = cmd.status().map_err(missing)?;
        // ping already printed everything; its exit status says whether a reply came.
        let received = u32::from(status.success());
        return Ok(Summary {
            target: target.into(),
            ipv6: ip,
            method: "system-ping",
            transmitted: u32::from(count),
            received,
            rtt_ms: Vec::new(),
            errors: 0,
        });
    };
    let mut summary = parse_system_ping(&text);
    summary.target = target.into();
    summary.ipv6 = ip;
    Ok(summary)
}

/// The counts and times in iputils `ping` output.
fn parse_system_ping(text: &str) -> Summary {
    let mut summary = Summary {
        target: String::new(),
        ipv6: Ipv6Addr::UNSPECIFIED,
        method: "system-ping",
        transmitted: 0,
        received: 0,
        rtt_ms: Vec::new(),
        errors: 0,
    };
    for line in text.lines() {
        if let Some(t) = line
            .split_once("time=")
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .and_then(|t| t.parse::<f64>().ok())
        {
            summary.rtt_ms.push(t);
        }
        if line.contains("packets transmitted") {
            let numbers: Vec<u32> = line
                .split(',')
                .filter_map(|part| part.split_whitespace().next()?.parse().ok())
                .collect();
            if let [tx, rx, ..] = numbers[..] {
                summary.transmitted = tx;
                summary.received = rx;
            }
        }
    }
    summary
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn parses_iputils_output() {
        let text = "PING fd00::1 (fd00::1) 56 data bytes\n\
            64 bytes from fd00::1: icmp_seq=1 ttl=64 time=0.045 ms\n\
            64 bytes from fd00::1: icmp_seq=2 ttl=64 time=1.50 ms\n\
            \n--- fd00::1 ping statistics ---\n\
            3 packets transmitted, 2 received, 33.3333% packet loss, time 2002ms\n\
            rtt min/avg/max/mdev = 0.045/0.772/1.500/0.727 ms\n";
        let s = parse_system_ping(text);
        assert_eq!((s.transmitted, s.received), (3, 2));
        assert_eq!(s.rtt_ms, [0.045, 1.5]);
    }

    #[test]
    fn summary_text() {
        let s = Summary {
            target: "x".into(),
            ipv6: Ipv6Addr::LOCALHOST,
            method: "icmp-raw",
            transmitted: 4,
            received: 3,
            rtt_ms: vec![1.0, 2.0, 3.0],
            errors: 0,
        };
        let text = render_summary(&s);
        assert!(text.contains("4 packets transmitted, 3 received, 25% packet loss"));
        assert!(text.contains("rtt min/avg/max = 1.00/2.00/3.00 ms"));
    }

    #[test]
    fn replies_are_filtered() {
        let p = Pinger {
            socket: Socket::new(Domain::IPV6, Type::DGRAM, Some(Protocol::UDP)).unwrap(),
            ip: Ipv6Addr::LOCALHOST,
            ident: Some(7),
            tag: [1; 8],
        };
        let mut reply = p.request(2);
        reply[0] = ECHO_REPLY;
        assert_eq!(p.parse_reply(&reply, 4), Some(2));
        assert_eq!(p.parse_reply(&reply, 1), None, "seq beyond count");
        assert_eq!(
            p.parse_reply(&p.request(2), 4),
            None,
            "a request is no reply"
        );
        let mut other = reply.clone();
        other[5] = 8;
        assert_eq!(p.parse_reply(&other, 4), None, "other identifier");
        let mut stray = reply.clone();
        stray[9] ^= 1;
        assert_eq!(p.parse_reply(&stray, 4), None, "other payload");
        assert_eq!(p.parse_reply(&reply[..7], 4), None, "truncated");
    }

    /// The echo engine against the loopback address, where the host allows ICMP sockets.
    #[test]
    fn echo_to_loopback() {
        let has_loopback6 = std::fs::read_to_string("/proc/net/if_inet6")
            .is_ok_and(|t| t.contains("00000000000000000000000000000001"));
        if !has_loopback6 {
            eprintln!("skipped: no IPv6 loopback address");
            return;
        }
        let pinger = match Pinger::open(Ipv6Addr::LOCALHOST) {
            Ok(p) => p,
            Err(e) => {
                eprintln!("skipped: no ICMPv6 socket allowed here ({e})");
                return;
            }
        };
        let mut lines = Vec::new();
        let summary = pinger
            .run(2, Duration::from_secs(2), &mut |l| {
                lines.push(l);
                Ok(())
            })
            .unwrap();
        assert_eq!((summary.transmitted, summary.received), (2, 2), "{lines:?}");
        assert!(lines[0].contains("icmp_seq=1"), "{lines:?}");
    }
}
