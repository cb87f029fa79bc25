//! Access policy in the deterministic simulator (docs/protocol.md §11): an allow list
//! refuses strangers at the handshake, before the responder's DH work and before any
//! peer state; inbound rules pass what they allow, drop the rest, and let replies to
//! the identity's own flows in.

#![allow(clippy::unwrap_used)]

mod sim;

use std::net::Ipv6Addr;
use std::time::Duration;

use metanet_proto::ip;
use metanet_proto::node::{Action, Command, CommandError, Policy, Proto, Rule, Source};
use sim::{LinkConfig, Sim};

const A: &str = "198.18.0.1:51820";
const B: &str = "198.18.0.2:51820";
const C: &str = "198.18.0.3:51820";

/// An IPv6 packet carrying a transport header of `proto` with the given ports.
fn packet(src: Ipv6Addr, dst: Ipv6Addr, proto: u8, sport: u16, dport: u16) -> Vec<u8> {
    let mut l4 = vec![0u8; 20];
    l4[0..2].copy_from_slice(&sport.to_be_bytes());
    l4[2..4].copy_from_slice(&dport.to_be_bytes());
    let mut p = ip::build_ipv6(src, dst, &l4);
    p[6] = proto;
    p
}

fn set(sim: &mut Sim, h: usize, policy: Policy) {
    let (now, local) = (sim.now, sim.local(h));
    sim.hosts[h]
        .node
        .handle_command(now, Command::SetPolicy { local, policy })
        .unwrap();
}

#[test]
fn an_allow_list_refuses_strangers_before_any_peer_state() {
    let mut sim = Sim::new(41, LinkConfig::default());
    let (a, b, c) = (sim.add_host(A), sim.add_host(B), sim.add_host(C));
    let (ip_b, addr_a) = (sim.ip(b), sim.address(a));
    set(
        &mut sim,
        b,
        Policy {
            allow: Some([addr_a].into()),
            rules: vec![],
        },
    );
    sim.send(a, ip_b, b"from a");
    sim.run_for(Duration::from_secs(1));
    assert_eq!(sim.payloads(b), vec![b"from a".to_vec()]);
    for _ in 0..3 {
        sim.send(c, ip_b, b"from c");
        sim.run_for(Duration::from_secs(6));
    }
    assert_eq!(sim.payloads(b).len(), 1, "nothing from C");
    let stats = sim.hosts[b].node.stats().clone();
    assert!(stats.policy_refused >= 3, "{stats:?}");
    // No peer state for C on B, and C never got a response.
    let peers = sim.hosts[b].node.peers(sim.now);
    assert_eq!(peers.len(), 1, "{peers:?}");
    assert_eq!(peers[0].address, addr_a);
    assert!(sim.hosts[c]
        .node
        .peers(sim.now)
        .iter()
        .all(|p| !p.connected));
    let (_, counts) = sim.hosts[b].node.policy(sim.local(b)).unwrap();
    assert_eq!(counts.refused, stats.policy_refused);
}

#[test]
fn a_narrower_allow_list_drops_the_inbound_peers_it_no_longer_admits() {
    let mut sim = Sim::new(42, LinkConfig::default());
    let (a, b, c) = (sim.add_host(A), sim.add_host(B), sim.add_host(C));
    let ip_b = sim.ip(b);
    sim.send(a, ip_b, b"a");
    sim.send(c, ip_b, b"c");
    sim.run_for(Duration::from_secs(1));
    assert_eq!(sim.hosts[b].node.peers(sim.now).len(), 2);
    let addr_a = sim.address(a);
    set(
        &mut sim,
        b,
        Policy {
            allow: Some([addr_a].into()),
            rules: vec![],
        },
    );
    let peers = sim.hosts[b].node.peers(sim.now);
    assert_eq!(peers.len(), 1);
    assert_eq!(peers[0].address, addr_a);
    // Limits are checked.
    let too_many = Policy {
        allow: None,
        rules: vec![
            Rule {
                proto: Proto::Any,
                ports: None,
                from: Source::Any,
                action: Action::Allow,
            };
            metanet_proto::node::MAX_RULES + 1
        ],
    };
    let (now, local) = (sim.now, sim.local(b));
    assert!(matches!(
        sim.hosts[b].node.handle_command(
            now,
            Command::SetPolicy {
                local,
                policy: too_many
            }
        ),
        Err(CommandError::BadPolicy(_))
    ));
}

#[test]
fn inbound_rules_pass_what_they_allow_and_replies_to_own_flows() {
    const TCP: u8 = 6;
    const UDP: u8 = 17;
    let mut sim = Sim::new(43, LinkConfig::default());
    let (a, b, c) = (sim.add_host(A), sim.add_host(B), sim.add_host(C));
    let (ip_a, ip_b, ip_c) = (sim.ip(a), sim.ip(b), sim.ip(c));
    let addr_a = sim.address(a);
    set(
        &mut sim,
        b,
        Policy {
            allow: None,
            rules: vec![
                Rule {
                    proto: Proto::Tcp,
                    ports: Some(22..=22),
                    from: Source::Addresses([addr_a].into()),
                    action: Action::Allow,
                },
                Rule {
                    proto: Proto::Tcp,
                    ports: Some(23..=23),
                    from: Source::Any,
                    action: Action::Deny,
                },
            ],
        },
    );
    // A to B's port 22: allowed by rule 0.
    sim.send_raw(a, &packet(ip_a, ip_b, TCP, 40000, 22));
    sim.run_for(Duration::from_secs(1));
    assert_eq!(sim.hosts[b].delivered.len(), 1);
    // Port 80, port 23 (rule 1 denies), UDP 22, C to 22: dropped.
    sim.send_raw(a, &packet(ip_a, ip_b, TCP, 40000, 80));
    sim.send_raw(a, &packet(ip_a, ip_b, TCP, 40000, 23));
    sim.send_raw(a, &packet(ip_a, ip_b, UDP, 40000, 22));
    sim.send_raw(c, &packet(ip_c, ip_b, TCP, 40000, 22));
    sim.run_for(Duration::from_secs(1));
    assert_eq!(
        sim.hosts[b].delivered.len(),
        1,
        "only the allowed packet arrived"
    );
    let (_, counts) = sim.hosts[b].node.policy(sim.local(b)).unwrap();
    assert_eq!(counts.rule_hits, vec![1, 1]);
    assert_eq!(counts.default_dropped, 3);
    assert_eq!(sim.hosts[b].node.stats().rule_dropped, 4);
    // B opens a flow to C's port 443: C's replies come in, other ports of C do not.
    sim.send_raw(b, &packet(ip_b, ip_c, TCP, 5555, 443));
    sim.run_for(Duration::from_secs(1));
    sim.send_raw(c, &packet(ip_c, ip_b, TCP, 443, 5555));
    sim.send_raw(c, &packet(ip_c, ip_b, TCP, 444, 5555));
    sim.run_for(Duration::from_secs(1));
    assert_eq!(
        sim.hosts[b].delivered.len(),
        2,
        "the reply, not the other port"
    );
    // The flow goes idle: its replies no longer pass.
    sim.run_for(metanet_proto::node::FLOW_IDLE + Duration::from_secs(1));
    sim.send_raw(c, &packet(ip_c, ip_b, TCP, 443, 5555));
    sim.run_for(Duration::from_secs(1));
    assert_eq!(sim.hosts[b].delivered.len(), 2);
}
