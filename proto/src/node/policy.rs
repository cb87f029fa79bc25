//! Access policy of a local identity (docs/protocol.md §11): who may open a session
//! with it (`allow`, checked at the handshake before any peer state or responder DH
//! work) and which decrypted packets reach it (`rules`, Nebula-style inbound rules,
//! stateful: replies to flows it opened pass).
//!
//! Names and groups are the driver's business: it resolves them to addresses and hands
//! the node address sets. The default policy is open (v1 behaviour): every initiator
//! with a valid binding is admitted and every packet passes.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv6Addr;
use std::ops::RangeInclusive;

use core::time::Duration;

use crate::address::Address;
use crate::time::Instant;

/// Most addresses an allow list or a rule's source may hold.
pub const MAX_ADDRESSES: usize = 65_536;
/// Most rules one identity may have.
pub const MAX_RULES: usize = 256;
/// Most tracked flows for the whole node (replies to outbound flows pass).
pub const MAX_FLOWS: usize = 65_536;
/// How long a flow stays tracked after its last outbound packet.
pub const FLOW_IDLE: Duration = Duration::from_secs(180);

/// Who may connect to an identity and what may reach it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Policy {
    /// `None`: every initiator (open). `Some`: only these addresses; an initiation from
    /// any other is refused before the responder does its DH work.
    pub allow: Option<BTreeSet<Address>>,
    /// Inbound rules, first match decides; once there is one, what matches none is
    /// dropped (default deny). Empty: everything passes.
    pub rules: Vec<Rule>,
}

/// One inbound rule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rule {
    pub proto: Proto,
    /// Destination ports (TCP, UDP); `None`: any. Ignored for ICMPv6.
    pub ports: Option<RangeInclusive<u16>>,
    pub from: Source,
    pub action: Action,
}

/// The transport a rule matches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Proto {
    Any,
    Tcp,
    Udp,
    Icmp,
}

/// Whom a rule matches.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    Any,
    Addresses(BTreeSet<Address>),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    Allow,
    Deny,
}

/// Why a policy cannot be set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    #[error("an allow list or a rule names more than {MAX_ADDRESSES} addresses")]
    TooManyAddresses,
    #[error("more than {MAX_RULES} rules")]
    TooManyRules,
    #[error("a rule's port range is empty")]
    EmptyPorts,
}

impl Policy {
    /// Whether the limits hold.
    pub fn check(&self) -> Result<(), PolicyError> {
        if self.rules.len() > MAX_RULES {
            return Err(PolicyError::TooManyRules);
        }
        let too_many = |s: &BTreeSet<Address>| s.len() > MAX_ADDRESSES;
        if self.allow.as_ref().is_some_and(too_many)
            || self
                .rules
                .iter()
                .any(|r| matches!(&r.from, Source::Addresses(s) if too_many(s)))
        {
            return Err(PolicyError::TooManyAddresses);
        }
        if self
            .rules
            .iter()
            .any(|r| r.ports.as_ref().is_some_and(|p| p.is_empty()))
        {
            return Err(PolicyError::EmptyPorts);
        }
        Ok(())
    }

    /// Whether `initiator` may open a session (§11.1).
    pub fn admits(&self, initiator: &Address) -> bool {
        self.allow.as_ref().is_none_or(|a| a.contains(initiator))
    }

    /// The rule that decides an inbound packet from `peer` with `flow`: its index and
    /// action; `None` when no rule matches (dropped when there are rules at all).
    pub fn decide(&self, peer: &Address, flow: &Flow) -> Option<(usize, Action)> {
        self.rules.iter().enumerate().find_map(|(i, r)| {
            let proto = match r.proto {
                Proto::Any => true,
                Proto::Tcp => flow.proto == TCP,
                Proto::Udp => flow.proto == UDP,
                Proto::Icmp => flow.proto == ICMPV6,
            };
            let port = match (&r.ports, flow.proto) {
                (None, _) | (Some(_), ICMPV6) => true,
                (Some(p), TCP | UDP) => p.contains(&flow.dst_port),
                (Some(_), _) => false,
            };
            let from = match &r.from {
                Source::Any => true,
                Source::Addresses(s) => s.contains(peer),
            };
            (proto && port && from).then_some((i, r.action))
        })
    }
}

const TCP: u8 = 6;
const UDP: u8 = 17;
const ICMPV6: u8 = 58;
const ECHO_REQUEST: u8 = 128;
const ECHO_REPLY: u8 = 129;

/// The transport facts of a packet the rules look at: the upper-layer protocol right
/// after the fixed IPv6 header, its ports (for ICMPv6 echo the identifier as both),
/// and whether it is an ICMPv6 error (always an answer to a flow: it passes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Flow {
    pub proto: u8,
    pub src_port: u16,
    pub dst_port: u16,
    pub icmp_type: Option<u8>,
}

impl Flow {
    /// Read from an IPv6 packet (checked by the caller); `None` when too short.
    pub fn of(packet: &[u8]) -> Option<Flow> {
        let proto = *packet.get(6)?;
        let l4 = packet.get(40..)?;
        let u16_at = |at: usize| Some(u16::from_be_bytes([*l4.get(at)?, *l4.get(at + 1)?]));
        Some(match proto {
            TCP | UDP => Flow {
                proto,
                src_port: u16_at(0)?,
                dst_port: u16_at(2)?,
                icmp_type: None,
            },
            ICMPV6 => {
                let kind = *l4.first()?;
                let id = if matches!(kind, ECHO_REQUEST | ECHO_REPLY) {
                    u16_at(4)?
                } else {
                    0
                };
                Flow {
                    proto,
                    src_port: id,
                    dst_port: id,
                    icmp_type: Some(kind),
                }
            }
            other => Flow {
                proto: other,
                src_port: 0,
                dst_port: 0,
                icmp_type: None,
            },
        })
    }

    /// Whether this is an ICMPv6 error message (types below 128).
    pub fn is_icmp_error(&self) -> bool {
        self.icmp_type.is_some_and(|t| t < ECHO_REQUEST)
    }
}

/// A flow one of our identities opened: (our address, the peer's, protocol, our port,
/// its port).
type FlowKey = (Ipv6Addr, Ipv6Addr, u8, u16, u16);

/// The flows local identities opened, so that the replies pass the rules.
#[derive(Debug, Default)]
pub(crate) struct Flows {
    until: BTreeMap<FlowKey, Instant>,
    /// Outbound flows not tracked because the table was full of live ones.
    pub full: u64,
}

impl Flows {
    /// An outbound packet from `local` to `peer`.
    pub(crate) fn outbound(&mut self, now: Instant, local: Ipv6Addr, peer: Ipv6Addr, f: &Flow) {
        // An echo request's reply carries the same identifier; other ICMPv6 needs none.
        if f.proto == ICMPV6 && f.icmp_type != Some(ECHO_REQUEST) {
            return;
        }
        let key = (local, peer, f.proto, f.src_port, f.dst_port);
        if self.until.len() >= MAX_FLOWS && !self.until.contains_key(&key) {
            self.until.retain(|_, t| *t > now);
            if self.until.len() >= MAX_FLOWS {
                self.full += 1;
                return;
            }
        }
        self.until.insert(key, now + FLOW_IDLE);
    }

    /// Whether an inbound packet from `peer` to `local` answers a flow `local` opened.
    pub(crate) fn answers(&self, now: Instant, local: Ipv6Addr, peer: Ipv6Addr, f: &Flow) -> bool {
        let key = if f.proto == ICMPV6 {
            if f.icmp_type != Some(ECHO_REPLY) {
                return false;
            }
            (local, peer, f.proto, f.src_port, f.dst_port)
        } else {
            (local, peer, f.proto, f.dst_port, f.src_port)
        };
        self.until.get(&key).is_some_and(|t| *t > now)
    }

    /// Forget every flow of `local` (its policy changed, or it went).
    pub(crate) fn forget(&mut self, local: Ipv6Addr) {
        self.until.retain(|k, _| k.0 != local);
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.until.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(seed: u8) -> Address {
        crate::Identity::generate(&[seed; 64]).address()
    }

    fn tcp(src: u16, dst: u16) -> Flow {
        Flow {
            proto: TCP,
            src_port: src,
            dst_port: dst,
            icmp_type: None,
        }
    }

    #[test]
    fn open_by_default_and_allow_lists_admit_only_their_addresses() {
        let open = Policy::default();
        assert!(open.admits(&addr(1)));
        assert_eq!(open.decide(&addr(1), &tcp(1000, 80)), None);
        let closed = Policy {
            allow: Some([addr(1)].into()),
            rules: vec![],
        };
        assert!(closed.admits(&addr(1)));
        assert!(!closed.admits(&addr(2)));
    }

    #[test]
    fn the_first_matching_rule_decides() {
        let ops: BTreeSet<Address> = [addr(1)].into();
        let p = Policy {
            allow: None,
            rules: vec![
                Rule {
                    proto: Proto::Tcp,
                    ports: Some(22..=22),
                    from: Source::Addresses(ops),
                    action: Action::Allow,
                },
                Rule {
                    proto: Proto::Tcp,
                    ports: Some(80..=80),
                    from: Source::Any,
                    action: Action::Deny,
                },
                Rule {
                    proto: Proto::Icmp,
                    ports: None,
                    from: Source::Any,
                    action: Action::Allow,
                },
            ],
        };
        assert!(p.check().is_ok());
        assert_eq!(
            p.decide(&addr(1), &tcp(40000, 22)),
            Some((0, Action::Allow))
        );
        assert_eq!(p.decide(&addr(2), &tcp(40000, 22)), None);
        assert_eq!(p.decide(&addr(1), &tcp(40000, 80)), Some((1, Action::Deny)));
        let echo = Flow {
            proto: ICMPV6,
            src_port: 7,
            dst_port: 7,
            icmp_type: Some(ECHO_REQUEST),
        };
        assert_eq!(p.decide(&addr(2), &echo), Some((2, Action::Allow)));
        let udp = Flow {
            proto: UDP,
            src_port: 5,
            dst_port: 22,
            icmp_type: None,
        };
        assert_eq!(p.decide(&addr(1), &udp), None);
    }

    #[test]
    fn limits_are_checked() {
        let bad = Policy {
            allow: None,
            rules: vec![
                Rule {
                    proto: Proto::Any,
                    ports: None,
                    from: Source::Any,
                    action: Action::Allow,
                };
                MAX_RULES + 1
            ],
        };
        assert_eq!(bad.check(), Err(PolicyError::TooManyRules));
        #[allow(clippy::reversed_empty_ranges)]
        let empty = Policy {
            allow: None,
            rules: vec![Rule {
                proto: Proto::Tcp,
                ports: Some(9..=1),
                from: Source::Any,
                action: Action::Allow,
            }],
        };
        assert_eq!(empty.check(), Err(PolicyError::EmptyPorts));
    }

    #[test]
    fn flows_let_replies_in_until_they_go_idle() {
        let (me, peer): (Ipv6Addr, Ipv6Addr) =
            ("fd00::1".parse().unwrap(), "fd00::2".parse().unwrap());
        let mut flows = Flows::default();
        let t0 = Instant::ZERO;
        flows.outbound(t0, me, peer, &tcp(40000, 443));
        assert!(flows.answers(t0, me, peer, &tcp(443, 40000)));
        assert!(!flows.answers(t0, me, peer, &tcp(443, 40001)));
        assert!(!flows.answers(t0, me, peer, &tcp(40000, 443)));
        assert!(!flows.answers(t0 + FLOW_IDLE, me, peer, &tcp(443, 40000)));
        let echo = |t| Flow {
            proto: ICMPV6,
            src_port: 9,
            dst_port: 9,
            icmp_type: Some(t),
        };
        flows.outbound(t0, me, peer, &echo(ECHO_REQUEST));
        assert!(flows.answers(t0, me, peer, &echo(ECHO_REPLY)));
        assert!(!flows.answers(t0, me, peer, &echo(ECHO_REQUEST)));
        flows.forget(me);
        assert_eq!(flows.len(), 0);
    }

    #[test]
    fn flows_are_read_from_packets() {
        let mut p = vec![0u8; 40 + 20];
        p[0] = 0x60;
        p[6] = TCP;
        p[40..42].copy_from_slice(&1234u16.to_be_bytes());
        p[42..44].copy_from_slice(&22u16.to_be_bytes());
        assert_eq!(Flow::of(&p), Some(tcp(1234, 22)));
        p[6] = ICMPV6;
        p[40] = 1; // destination unreachable
        assert!(Flow::of(&p).unwrap().is_icmp_error());
        assert_eq!(Flow::of(&p[..39]), None);
    }
}
