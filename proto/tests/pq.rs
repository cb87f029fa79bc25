//! The hybrid ML-KEM handshake in the deterministic simulator (docs/protocol.md §5.7):
//! two current ends handshake hybrid; an `off` end and an `auto` end, or an old node
//! that drops extended initiations and an `auto` end, talk classically; `required`
//! against `off` never connects; a flood of hybrid initiations is answered by cookies
//! before any ML-KEM work; a closed group's network key and the KEM work together.

#![allow(clippy::unwrap_used)]

mod sim;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::Duration;

use metanet_proto::address::Address;
use metanet_proto::handshake::{self, Extensions, Remote};
use metanet_proto::node::{Command, Config, NetworkKey};
use metanet_proto::pq::{Kem, PqMode};
use metanet_proto::wire;
use sim::{LinkConfig, Sim};

const A: &str = "198.18.0.1:51820";
const B: &str = "198.18.0.2:51820";
const C: &str = "198.18.0.3:51820";

fn host(sim: &mut Sim, addr: &str, pq: PqMode) -> usize {
    let id = sim.new_identity();
    sim.add_host_with(
        addr,
        vec![id],
        Config {
            pq,
            ..Config::default()
        },
    )
}

/// The KEM of `h`'s session with `peer`, if a session is up (`None` inside: classical).
fn session(sim: &Sim, h: usize, peer: Address) -> Option<Option<Kem>> {
    sim.hosts[h]
        .node
        .peers(sim.now)
        .into_iter()
        .find(|p| p.address == peer && p.connected)
        .map(|p| p.pq)
}

#[test]
fn two_current_ends_handshake_hybrid() {
    let mut sim = Sim::new(181, LinkConfig::default());
    let (a, b) = (
        host(&mut sim, A, PqMode::Auto),
        host(&mut sim, B, PqMode::Auto),
    );
    let (aa, ab, ip_b) = (sim.address(a), sim.address(b), sim.ip(b));
    let start = sim.now;
    sim.send(a, ip_b, b"hybrid");
    sim.run_for(Duration::from_secs(1));
    assert_eq!(sim.payloads(b), vec![b"hybrid".to_vec()]);
    assert_eq!(session(&sim, a, ab), Some(Some(Kem::MlKem512)));
    assert_eq!(session(&sim, b, aa), Some(Some(Kem::MlKem512)));
    assert_eq!(sim.hosts[b].node.stats().kem_encapsulations, 1);
    assert_eq!(sim.hosts[a].node.stats().kem_decapsulations, 1);
    // One hybrid initiation (1043 bytes) and one hybrid response (956), within the
    // 1200-byte rule.
    let init = wire::INIT_LEN + 3 + metanet_proto::pq::EK_LEN;
    assert_eq!(init, 1043);
    assert_eq!(
        sim.sent_times(A, wire::kind::INITIATION, Some(init), start)
            .len(),
        1
    );
    assert_eq!(
        sim.sent_times(
            B,
            wire::kind::RESPONSE,
            Some(wire::RESPONSE_HYBRID_LEN),
            start
        )
        .len(),
        1
    );
}

#[test]
fn an_off_end_and_an_auto_end_talk_classically_both_ways() {
    let mut sim = Sim::new(182, LinkConfig::default());
    let (a, b) = (
        host(&mut sim, A, PqMode::Off),
        host(&mut sim, B, PqMode::Auto),
    );
    let (aa, ab, ip_a) = (sim.address(a), sim.address(b), sim.ip(a));
    // `auto` initiates to `off`: the offer is answered classically at once.
    sim.send(b, ip_a, b"auto to off");
    sim.run_for(Duration::from_millis(500));
    assert_eq!(sim.payloads(a), vec![b"auto to off".to_vec()]);
    assert_eq!(session(&sim, a, ab), Some(None));
    assert_eq!(session(&sim, b, aa), Some(None));
    assert_eq!(sim.hosts[a].node.stats().kem_encapsulations, 0);
    // `off` initiates (classical, 240 bytes) to `auto`: accepted.
    let mut sim = Sim::new(183, LinkConfig::default());
    let (a, b) = (
        host(&mut sim, A, PqMode::Off),
        host(&mut sim, B, PqMode::Auto),
    );
    let (aa, ip_b2) = (sim.address(a), sim.ip(b));
    let start = sim.now;
    sim.send(a, ip_b2, b"off to auto");
    sim.run_for(Duration::from_millis(500));
    assert_eq!(sim.payloads(b), vec![b"off to auto".to_vec()]);
    assert_eq!(session(&sim, b, aa), Some(None));
    assert_eq!(
        sim.sent_times(A, wire::kind::INITIATION, None, start),
        sim.sent_times(A, wire::kind::INITIATION, Some(wire::INIT_LEN), start)
    );
}

#[test]
fn an_auto_end_falls_back_to_classical_for_an_old_node() {
    let mut sim = Sim::new(184, LinkConfig::default());
    let (a, b) = (
        host(&mut sim, A, PqMode::Auto),
        host(&mut sim, B, PqMode::Off),
    );
    // B stands for a node from before extended initiations: it drops them unread.
    sim.hosts[b].legacy = true;
    let (ab, ip_b) = (sim.address(b), sim.ip(b));
    let start = sim.now;
    sim.send(a, ip_b, b"to an old node");
    sim.run_for(Duration::from_secs(8));
    assert_eq!(sim.payloads(b), vec![b"to an old node".to_vec()]);
    assert_eq!(session(&sim, a, ab), Some(None));
    assert_eq!(
        sim.link_stats.legacy_dropped, 1,
        "one hybrid attempt, then classical"
    );
    // The next handshake (a rekey) starts classical: no second timeout.
    let hybrid = wire::INIT_LEN + 3 + metanet_proto::pq::EK_LEN;
    sim.run_for(Duration::from_secs(200));
    sim.send(a, ip_b, b"later");
    sim.run_for(Duration::from_secs(1));
    assert!(sim.payloads(b).contains(&b"later".to_vec()));
    assert_eq!(
        sim.sent_times(A, wire::kind::INITIATION, Some(hybrid), start)
            .len(),
        1
    );
}

#[test]
fn a_lost_first_offer_does_not_make_a_pair_classical_for_good() {
    let mut sim = Sim::new(188, LinkConfig::default());
    let (a, b) = (
        host(&mut sim, A, PqMode::Auto),
        host(&mut sim, B, PqMode::Auto),
    );
    // B is a current node, but A's first (hybrid) initiation to it is lost.
    sim.hosts[b].legacy = true;
    let (ab, ip_b) = (sim.address(b), sim.ip(b));
    sim.send(a, ip_b, b"first");
    sim.run_for(Duration::from_secs(8));
    assert_eq!(session(&sim, a, ab), Some(None), "classical after the loss");
    sim.hosts[b].legacy = false;
    // Traffic keeps the session up past the rekey time: the rekey offers hybrid again
    // (the classical session carries traffic meanwhile) and the pair goes hybrid.
    for _ in 0..30 {
        sim.send(a, ip_b, b"tick");
        sim.run_for(Duration::from_secs(5));
    }
    assert_eq!(session(&sim, a, ab), Some(Some(Kem::MlKem512)));
    assert_eq!(sim.payloads(b).len(), 31, "nothing lost across the rekeys");
}

#[test]
fn required_against_off_never_connects_in_either_direction() {
    let mut sim = Sim::new(185, LinkConfig::default());
    let (a, b) = (
        host(&mut sim, A, PqMode::Required),
        host(&mut sim, B, PqMode::Off),
    );
    let (ip_a, ip_b) = (sim.ip(a), sim.ip(b));
    sim.send(a, ip_b, b"required to off");
    sim.send(b, ip_a, b"off to required");
    sim.run_for(Duration::from_secs(20));
    assert!(sim.payloads(a).is_empty());
    assert!(sim.payloads(b).is_empty());
    let st = sim.hosts[a].node.stats();
    // As initiator A refuses B's classical responses, as responder B's classical
    // initiations; several retries of each.
    assert!(st.pq_refused >= 4, "{st:?}");
    assert!(sim.hosts[a]
        .node
        .peers(sim.now)
        .iter()
        .all(|p| !p.connected));
    assert!(sim.hosts[b]
        .node
        .peers(sim.now)
        .iter()
        .all(|p| !p.connected));
    // Against an `auto` end, `required` connects hybrid.
    let c = host(&mut sim, C, PqMode::Auto);
    let (ac, ip_c) = (sim.address(c), sim.ip(c));
    sim.send(a, ip_c, b"required to auto");
    sim.run_for(Duration::from_secs(1));
    assert_eq!(sim.payloads(c), vec![b"required to auto".to_vec()]);
    assert_eq!(session(&sim, a, ac), Some(Some(Kem::MlKem512)));
}

#[test]
fn a_flood_of_hybrid_initiations_is_answered_by_cookies_before_any_kem_work() {
    let mut sim = Sim::new(
        186,
        LinkConfig {
            latency: Duration::from_millis(2),
            ..LinkConfig::default()
        },
    );
    let a = host(&mut sim, A, PqMode::Auto);
    // B is always under load: an initiation needs a valid mac2.
    let id_b = sim.new_identity();
    let b = sim.add_host_with(
        B,
        vec![id_b],
        Config {
            load_threshold: 0,
            ..Config::default()
        },
    );
    let b_addr: SocketAddr = B.parse().unwrap();
    let target = {
        let id = sim.hosts[b].node.identity(sim.local(b)).unwrap();
        Remote {
            public_key: id.public_key(),
            noise_key: id.noise().public_key(),
        }
    };
    // Valid hybrid initiations (mac1 right: the attacker read B's record).
    let attacker = sim.new_identity();
    let inits: Vec<Vec<u8>> = (0..16u32)
        .map(|i| {
            let ts = sim.unix() + Duration::from_millis(u64::from(i));
            let kem_seed: [u8; 64] = sim.random_bytes();
            handshake::initiate_pq(
                &attacker,
                target,
                &[0; 32],
                i,
                ts,
                None,
                sim.random_bytes(),
                false,
                &Extensions::default(),
                PqMode::Auto,
                &kem_seed,
            )
            .unwrap()
            .1
        })
        .collect();
    assert!(inits.iter().all(|m| m.len() == 1043));
    let ip_b = sim.ip(b);
    for round in 0..200u32 {
        for k in 0..10u32 {
            let src: SocketAddr = format!("198.18.{}.{}:{}", 100 + k, 1 + round % 250, 2000 + k)
                .parse()
                .unwrap();
            sim.inject(src, b_addr, inits[((round * 10 + k) % 16) as usize].clone());
        }
        if round == 20 {
            sim.send(a, ip_b, b"legit");
        }
        sim.run_for(Duration::from_millis(10));
    }
    sim.run_for(Duration::from_secs(1));
    let st = sim.hosts[b].node.stats().clone();
    assert!(st.cookies_sent > 1000, "{st:?}");
    // Only the honest initiator's retry (with mac2) reached the DH and KEM work.
    assert_eq!(st.handshakes_processed, 1, "{st:?}");
    assert_eq!(st.kem_encapsulations, 1, "{st:?}");
    assert_eq!(sim.payloads(b), vec![b"legit".to_vec()]);
    assert_eq!(session(&sim, b, sim.address(a)), Some(Some(Kem::MlKem512)));
}

fn set_key(sim: &mut Sim, h: usize, key: [u8; 32], members: &[Address]) {
    let (now, local) = (sim.now, sim.local(h));
    let keys = vec![NetworkKey {
        group: "ops".into(),
        epoch: 1,
        key,
        members: members.iter().copied().collect::<BTreeSet<_>>(),
    }];
    sim.hosts[h]
        .node
        .handle_command(now, Command::SetNetworkKeys { local, keys })
        .unwrap();
}

#[test]
fn a_closed_groups_network_key_and_the_kem_together() {
    let mut sim = Sim::new(187, LinkConfig::default());
    let (a, b, c) = (
        host(&mut sim, A, PqMode::Auto),
        host(&mut sim, B, PqMode::Required),
        host(&mut sim, C, PqMode::Auto),
    );
    let (aa, ab, ac) = (sim.address(a), sim.address(b), sim.address(c));
    let ip_b = sim.ip(b);
    let members = [aa, ab, ac];
    set_key(&mut sim, a, [1; 32], &members);
    set_key(&mut sim, b, [1; 32], &members);
    // C names the group's epoch but holds another key: psk2 differs, no session.
    set_key(&mut sim, c, [9; 32], &members);
    sim.send(a, ip_b, b"member");
    sim.send(c, ip_b, b"wrong key");
    sim.run_for(Duration::from_secs(2));
    assert_eq!(sim.payloads(b), vec![b"member".to_vec()]);
    assert_eq!(session(&sim, b, aa), Some(Some(Kem::MlKem512)));
    assert_eq!(session(&sim, a, ab), Some(Some(Kem::MlKem512)));
    assert_eq!(session(&sim, b, ac), None);
    assert_eq!(sim.hosts[b].node.stats().epoch_refused, 0);
}
