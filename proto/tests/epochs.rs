//! Closed groups' network keys in the deterministic simulator (docs/protocol.md §5.6,
//! §11.3): members handshake with the current epoch's key mixed into psk2; a removed
//! member, a member without the key, a stale epoch and a wrong key are refused, and
//! the previous epoch is accepted from current members only for the overlap.

#![allow(clippy::unwrap_used)]

mod sim;

use std::collections::BTreeSet;
use std::time::Duration;

use metanet_proto::address::Address;
use metanet_proto::node::{Command, NetworkKey, EPOCH_OVERLAP};
use sim::{LinkConfig, Sim};

const A: &str = "198.18.0.1:51820";
const B: &str = "198.18.0.2:51820";
const C: &str = "198.18.0.3:51820";

fn key(sim: &mut Sim, h: usize, epoch: u64, key: [u8; 32], members: &[Address]) {
    let (now, local) = (sim.now, sim.local(h));
    let keys = vec![NetworkKey {
        group: "ops".into(),
        epoch,
        key,
        members: members.iter().copied().collect::<BTreeSet<_>>(),
    }];
    sim.hosts[h]
        .node
        .handle_command(now, Command::SetNetworkKeys { local, keys })
        .unwrap();
}

fn connected(sim: &Sim, h: usize, peer: Address) -> bool {
    sim.hosts[h]
        .node
        .peers(sim.now)
        .iter()
        .any(|p| p.address == peer && p.connected)
}

#[test]
fn members_with_the_epoch_key_talk_and_a_removed_member_is_refused() {
    let mut sim = Sim::new(51, LinkConfig::default());
    let (a, b, c) = (sim.add_host(A), sim.add_host(B), sim.add_host(C));
    let (aa, ab, ac) = (sim.address(a), sim.address(b), sim.address(c));
    let (ip_a, ip_b) = (sim.ip(a), sim.ip(b));
    let k1 = [1u8; 32];
    for h in [a, b, c] {
        key(&mut sim, h, 1, k1, &[aa, ab, ac]);
    }
    sim.send(c, ip_b, b"c to b");
    sim.send(a, ip_b, b"a to b");
    sim.run_for(Duration::from_secs(1));
    assert_eq!(sim.payloads(b).len(), 2, "both members reach B");
    assert!(connected(&sim, b, ac));
    assert_eq!(sim.hosts[b].node.stats().epoch_refused, 0);
    // C's handshake named epoch 1 of "ops".
    let status = sim.hosts[b]
        .node
        .network_keys(sim.now, sim.local(b))
        .unwrap();
    assert_eq!(status[0].epoch, 1);
    assert_eq!(status[0].members, 3);

    // A removes C: epoch 2 without C. B's session with C goes at once; A's with B stays.
    let k2 = [2u8; 32];
    for h in [a, b] {
        key(&mut sim, h, 2, k2, &[aa, ab]);
    }
    assert!(!connected(&sim, b, ac), "C's session dropped on B");
    assert!(connected(&sim, b, aa));
    // C still holds epoch 1's key and names it: refused, however often it tries (its
    // daemon starts afresh, as it would once the dead session times out).
    let (now, local) = (sim.now, sim.local(c));
    sim.hosts[c]
        .node
        .handle_command(now, Command::RemovePeer { local, address: ab })
        .unwrap();
    for _ in 0..3 {
        sim.send(c, ip_b, b"c again");
        sim.run_for(Duration::from_secs(6));
    }
    assert_eq!(sim.payloads(b).len(), 2, "nothing more from C");
    assert!(sim.hosts[b].node.stats().epoch_refused >= 3);
    assert!(!connected(&sim, b, ac));
    assert!(!connected(&sim, c, ab));
    // The members rekey under epoch 2 and keep talking.
    sim.send(a, ip_b, b"a after");
    sim.send(b, ip_a, b"b after");
    sim.run_for(Duration::from_secs(1));
    assert_eq!(sim.payloads(b).len(), 3);
    assert_eq!(sim.payloads(a).len(), 1);
}

#[test]
fn a_member_without_the_key_or_with_a_wrong_key_gets_no_session() {
    let mut sim = Sim::new(52, LinkConfig::default());
    let (a, b, c) = (sim.add_host(A), sim.add_host(B), sim.add_host(C));
    let (aa, ab, ac) = (sim.address(a), sim.address(b), sim.address(c));
    let ip_b = sim.ip(b);
    key(&mut sim, b, 1, [7; 32], &[aa, ab, ac]);
    // A is a member in B's view but has no key: its classical initiation is refused.
    sim.send(a, ip_b, b"classical");
    sim.run_for(Duration::from_secs(1));
    assert!(sim.payloads(b).is_empty());
    assert_eq!(sim.hosts[b].node.stats().epoch_refused, 1);
    assert!(sim.hosts[b].node.peers(sim.now).is_empty(), "no peer state");
    // C names the right epoch with a wrong key: B answers (it cannot tell), but C
    // cannot read the response, so there is no session and nothing arrives.
    key(&mut sim, c, 1, [8; 32], &[aa, ab, ac]);
    sim.send(c, ip_b, b"wrong key");
    sim.run_for(Duration::from_secs(3));
    assert!(sim.payloads(b).is_empty());
    assert!(!connected(&sim, c, ab));
    assert!(sim.hosts[c].node.stats().handshake_failures >= 1);
}

#[test]
fn the_previous_epoch_is_accepted_only_for_the_overlap() {
    let mut sim = Sim::new(53, LinkConfig::default());
    let (a, b) = (sim.add_host(A), sim.add_host(B));
    let (aa, ab) = (sim.address(a), sim.address(b));
    let ip_b = sim.ip(b);
    key(&mut sim, a, 1, [1; 32], &[aa, ab]);
    key(&mut sim, b, 1, [1; 32], &[aa, ab]);
    // B applied the next commit, A not yet: A's epoch-1 initiation still works.
    key(&mut sim, b, 2, [2; 32], &[aa, ab]);
    sim.send(a, ip_b, b"behind");
    sim.run_for(Duration::from_secs(1));
    assert_eq!(sim.payloads(b).len(), 1);
    let status = sim.hosts[b]
        .node
        .network_keys(sim.now, sim.local(b))
        .unwrap();
    assert_eq!((status[0].epoch, status[0].previous), (2, Some(1)));
    // After the overlap the previous epoch is refused: A must catch up.
    let (now, local) = (sim.now, sim.local(a));
    sim.hosts[a]
        .node
        .handle_command(now, Command::RemovePeer { local, address: ab })
        .unwrap();
    sim.run_for(EPOCH_OVERLAP);
    sim.send(a, ip_b, b"too late");
    sim.run_for(Duration::from_secs(1));
    assert_eq!(sim.payloads(b).len(), 1);
    assert!(sim.hosts[b].node.stats().epoch_refused >= 1);
    // Once A catches up, its next retry uses epoch 2: what waited arrives too.
    key(&mut sim, a, 2, [2; 32], &[aa, ab]);
    sim.send(a, ip_b, b"caught up");
    sim.run_for(Duration::from_secs(6));
    assert_eq!(sim.payloads(b).len(), 3);
}

#[test]
fn strangers_are_left_to_the_allow_list() {
    // A closed group does not close the identity: a non-member without a key still
    // connects unless the allow list says otherwise.
    let mut sim = Sim::new(54, LinkConfig::default());
    let (a, b, c) = (sim.add_host(A), sim.add_host(B), sim.add_host(C));
    let (aa, ab) = (sim.address(a), sim.address(b));
    let ip_b = sim.ip(b);
    key(&mut sim, a, 1, [1; 32], &[aa, ab]);
    key(&mut sim, b, 1, [1; 32], &[aa, ab]);
    sim.send(c, ip_b, b"stranger");
    sim.run_for(Duration::from_secs(1));
    assert_eq!(sim.payloads(b).len(), 1);
    assert_eq!(sim.hosts[b].node.stats().epoch_refused, 0);
}
