//! A DHT node that breaks the rules, for the registry tests: it joins the metanet DHT
//! and stores a forged peer record for a target address at the nodes closest to it (and
//! serves it from its own store), without any of the checks honest nodes apply.
//!
//! Usage: `mn-dht-forge --port N --bootstrap MULTIADDR --target-secret HEX
//!         --endpoint IP:PORT --forge stale|expired|wrong-key`
//!
//! - `stale`: signed by the target's real key, with `seq` 1 (older than anything the
//!   target publishes);
//! - `expired`: signed by the target's key with a huge `seq`, already expired;
//! - `wrong-key`: signed by another key, with a huge `seq`, under the target's key.
//!
//! Every forged record points at `--endpoint`. Runs until killed.

#![allow(clippy::print_stdout)]

use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use metanet_daemon::dht::{self, Dht, Request};
use metanet_proto::identity::{NoiseKey, WalletKey};
use metanet_proto::keyfile::parse_hex32;
use metanet_proto::record::PeerRecord;
use metanet_proto::Identity;

fn main() -> Result<(), String> {
    let mut args = std::env::args().skip(1);
    let (mut port, mut bootstrap, mut secret, mut endpoint, mut forge) =
        (None, None, None, None, None);
    while let Some(flag) = args.next() {
        let value = args.next().ok_or(format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--port" => port = Some(value.parse::<u16>().map_err(|e| e.to_string())?),
            "--bootstrap" => bootstrap = Some(value.parse().map_err(|e| format!("{e}"))?),
            "--target-secret" => {
                secret = Some(parse_hex32(&value, "secret").map_err(|e| e.to_string())?)
            }
            "--endpoint" => {
                endpoint = Some(value.parse::<SocketAddr>().map_err(|e| e.to_string())?)
            }
            "--forge" => forge = Some(value),
            other => return Err(format!("unknown flag {other}")),
        }
    }
    let need = |what: &str| format!("missing --{what}");
    let port = port.ok_or(need("port"))?;
    let bootstrap = bootstrap.ok_or(need("bootstrap"))?;
    let secret = secret.ok_or(need("target-secret"))?;
    let endpoint = endpoint.ok_or(need("endpoint"))?;
    let forge = forge.ok_or(need("forge"))?;

    let noise = random32()?;
    let target_id = || Identity::new(WalletKey::from_seed(&secret), NoiseKey::from_bytes(&noise));
    let target = target_id();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_err(|e| e.to_string())?
        .as_secs();
    let huge = now * 1000 * 1000;
    let (signer, seq, not_after) = match forge.as_str() {
        "stale" => (target_id(), 1, now + 3600),
        "expired" => (target_id(), huge, now - 60),
        "wrong-key" => (
            Identity::new(
                WalletKey::from_seed(&random32()?),
                NoiseKey::from_bytes(&random32()?),
            ),
            huge,
            now + 3600,
        ),
        other => return Err(format!("unknown --forge {other}")),
    };
    let value = PeerRecord::new(&signer, vec![endpoint], vec![], seq, not_after)
        .sign(&signer)
        .map_err(|e| e.to_string())?;
    let key = dht::record_key(&target.address().ipv6_prefix());

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    rt.block_on(async move {
        let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
        let keypair = libp2p::identity::Keypair::generate_ed25519();
        let handle = Dht::spawn(
            dht::Config {
                keypair,
                listen: vec![format!("/ip4/0.0.0.0/tcp/{port}")
                    .parse()
                    .map_err(|e| format!("{e}"))?],
                bootstrap: vec![bootstrap],
                client_only: false,
            },
            tx,
        )
        .map_err(|e| e.to_string())?;
        println!("forger {} up", handle.status().peer_id);
        // Keep injecting: the honest nodes must refuse it every time.
        loop {
            if handle.status().peers > 0 {
                handle.send(Request::PutUnchecked {
                    key: key.clone(),
                    value: value.clone(),
                });
                println!("injected {forge} record");
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    })
}

fn random32() -> Result<[u8; 32], String> {
    let mut b = [0u8; 32];
    getrandom::fill(&mut b).map_err(|e| e.to_string())?;
    Ok(b)
}
