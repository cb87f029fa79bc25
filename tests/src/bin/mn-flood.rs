//! A flooding attacker, for the load tests: sends metanet handshake-class datagrams to
//! one endpoint as fast as one process can, for a bounded time, then prints how many
//! it sent and the rate.
//!
//! Usage:
//! `RATE` is datagrams per second, 0 for as fast as it can.
//!
//! - `mn-flood DEST SECONDS RATE record ADDRESS`: record requests (§3.5) for `ADDRESS`,
//!   without cookies (each a fresh nonce);
//! - `mn-flood DEST SECONDS RATE init PUBLIC_KEY_HEX NOISE_KEY_HEX`: handshake initiations
//!   with a valid `mac1` for the identity with those keys (64 distinct ones, replayed
//!   in turn), from a throwaway identity.
//!
//! Sends only to `DEST`; the tests point it at daemons in their own namespaces.

#![allow(clippy::print_stdout)]

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use metanet_proto::handshake::{self, Remote};
use metanet_proto::identity::{NoisePublicKey, PublicKey};
use metanet_proto::keyfile::parse_hex32;
use metanet_proto::{wire, Address, Identity, UnixTime};

fn main() -> Result<(), String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = "usage: mn-flood DEST SECONDS RATE (record ADDRESS | init PUBLIC_KEY NOISE_KEY)";
    let (dest, secs, rate, kind) = match &args[..] {
        [d, s, r, k, ..] => (d, s, r, k.as_str()),
        _ => return Err(usage.into()),
    };
    let rate: u64 = rate.parse().map_err(|e| format!("RATE: {e}"))?;
    let dest: SocketAddr = dest.parse().map_err(|e| format!("DEST: {e}"))?;
    let secs: u64 = secs.parse().map_err(|e| format!("SECONDS: {e}"))?;
    let messages = match (kind, &args[4..]) {
        ("record", [address]) => {
            let target: Address = address.parse().map_err(|e| format!("ADDRESS: {e}"))?;
            (0..256u32)
                .map(|nonce| {
                    let mut b = vec![0u8; wire::RECORD_REQUEST_LEN];
                    wire::RecordRequestRepr {
                        nonce,
                        target: *target.as_bytes(),
                    }
                    .emit(&mut b);
                    b
                })
                .collect::<Vec<_>>()
        }
        ("init", [public, noise]) => {
            let public = parse_hex32(public, "PUBLIC_KEY").map_err(|e| e.to_string())?;
            let remote = Remote {
                public_key: PublicKey::from_bytes(&public)
                    .map_err(|e| format!("PUBLIC_KEY: {e}"))?,
                noise_key: NoisePublicKey(
                    parse_hex32(noise, "NOISE_KEY").map_err(|e| e.to_string())?,
                ),
            };
            let mut seed = [0u8; 64];
            getrandom::fill(&mut seed).map_err(|e| e.to_string())?;
            let me = Identity::generate(&seed);
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_err(|e| e.to_string())?;
            (0..64u32)
                .map(|i| {
                    let ts = UnixTime::from_nanos(now.as_nanos() as u64 + u64::from(i));
                    let mut s = [0u8; 32];
                    s[..4].copy_from_slice(&i.to_le_bytes());
                    handshake::initiate(&me, remote, &[0; 32], i + 1, ts, None, s)
                        .map(|(_, m)| m)
                        .map_err(|e| format!("initiation: {e:?}"))
                })
                .collect::<Result<Vec<_>, _>>()?
        }
        _ => return Err(usage.into()),
    };
    let sock = UdpSocket::bind(if dest.is_ipv4() {
        "0.0.0.0:0"
    } else {
        "[::]:0"
    })
    .map_err(|e| format!("bind: {e}"))?;
    let start = Instant::now();
    let limit = Duration::from_secs(secs);
    let mut sent = 0u64;
    while start.elapsed() < limit {
        if rate > 0 {
            // Paced: never ahead of `rate` per second since the start.
            let due = Duration::from_secs_f64(sent as f64 / rate as f64);
            if let Some(wait) = due.checked_sub(start.elapsed()) {
                std::thread::sleep(wait);
            }
        }
        for m in messages.iter().take(if rate > 0 { 16 } else { usize::MAX }) {
            // A full socket buffer or an ICMP error is the flood working; go on.
            if sock.send_to(m, dest).is_ok() {
                sent += 1;
            }
        }
    }
    let rate = sent as f64 / start.elapsed().as_secs_f64();
    println!("sent {sent} datagrams in {secs} s ({rate:.0}/s)");
    Ok(())
}
