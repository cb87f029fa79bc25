//! The daemon's use of the DHT registry (records: docs/protocol.md §4):
//! publishing a signed record per local identity, and resolving addresses and overlay
//! IPv6 destinations to verified records that become node peers.
//!
//! Resolution is asynchronous: whoever needs a record (a packet waiting in the node, a
//! `connect` or `resolve` request) becomes a [`LookupWaiter`] on the address prefix, one DHT
//! lookup runs per prefix, and its answer serves every waiter. Verified records are
//! cached until they expire; a peer that stays silent after a connect, or whose
//! handshake gives up, is looked up again so a moved peer is found at its new endpoint.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use metanet_proto::address::Ipv6Prefix;
use metanet_proto::control::{self as api, ErrorKind, RecordInfo, Reply};
use metanet_proto::handshake::Remote;
use metanet_proto::identity::hex;
use metanet_proto::node::{Command, LocalId};
use metanet_proto::record::{PeerRecord, MAX_ENDPOINTS};
use metanet_proto::{ip, Address};

use crate::config::IdentityConfig;
use crate::controller::{self, Routed};
use crate::dht::{LookupError, Output, Request};
use crate::{err, Daemon, ReplyTo};

/// Lifetime of a published record.
pub(crate) const RECORD_LIFETIME: u64 = 3600;
/// A record is signed anew when less than this much of its lifetime is left.
pub(crate) const RESIGN_BEFORE: u64 = 1800;
/// After a registry-driven connect, how long until a silent peer is looked up again.
const RECHECK_AFTER: Duration = Duration::from_secs(4);
/// How many times a silent peer is looked up again.
const RECHECKS: u32 = 4;
/// Longest packet kept to build an ICMPv6 error from when a lookup fails.
const KEEP_FOR_ICMP: usize = 1280;

/// Someone waiting for a lookup.
#[derive(Debug)]
pub(crate) enum LookupWaiter {
    /// The node queued packets for this destination; `packet` is the first, kept for
    /// an ICMPv6 error if the lookup fails.
    Packet {
        local: LocalId,
        ipv6: Ipv6Addr,
        packet: Vec<u8>,
    },
    /// `metanet connect <address>` without an endpoint.
    Connect {
        local: LocalId,
        address: Address,
        reply: ReplyTo,
    },
    /// `metanet resolve`.
    Resolve {
        address: Option<Address>,
        reply: ReplyTo,
    },
    /// A known peer went quiet: take a newer record if there is one.
    Refresh { local: LocalId, address: Address },
}

#[derive(Debug)]
struct Published {
    record: PeerRecord,
}

/// A peer to look up again if it is still not connected at `due`.
#[derive(Debug)]
struct Check {
    due: std::time::Instant,
    local: LocalId,
    address: Address,
    left: u32,
}

/// Publications state of the daemon.
#[derive(Debug, Default)]
pub(crate) struct Publications {
    cache: controller::RecordCache,
    waiters: HashMap<Ipv6Prefix, Vec<LookupWaiter>>,
    published: HashMap<String, Published>,
    last_seq: u64,
    endpoints: Vec<SocketAddr>,
    /// Our endpoints as peers and relays see them (published after the local ones).
    reflexive: Vec<SocketAddr>,
    checks: Vec<Check>,
    configs: Vec<IdentityConfig>,
}

impl Publications {
    /// Nothing published or cached yet.
    pub(crate) fn new(configs: Vec<IdentityConfig>) -> Self {
        Publications {
            configs,
            ..Default::default()
        }
    }

    /// New publication settings (config reload).
    pub(crate) fn set_configs(&mut self, configs: Vec<IdentityConfig>) {
        self.configs = configs;
    }

    /// Every configured identity's settings.
    pub(crate) fn configs(&self) -> &[IdentityConfig] {
        &self.configs
    }

    /// Publication settings of the identity `name` (defaults when not configured).
    pub(crate) fn config_of(&self, name: &str) -> IdentityConfig {
        self.configs
            .iter()
            .find(|c| c.name == name)
            .cloned()
            .unwrap_or_else(|| IdentityConfig {
                name: name.into(),
                ..IdentityConfig::default()
            })
    }

    /// The record published for `name`, if any.
    pub(crate) fn published(&self, name: &str) -> Option<&PeerRecord> {
        self.published.get(name).map(|p| &p.record)
    }

    /// A sequence number above every earlier one: Unix milliseconds, or one more than
    /// the last if the clock has not moved on (docs/protocol.md §4.4).
    fn next_seq(&mut self) -> u64 {
        let ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
            .unwrap_or(0);
        self.last_seq = ms.max(self.last_seq + 1);
        self.last_seq
    }
}

impl Daemon {
    /// A control request, carried out where [`controller::route`] sends it: registry
    /// and chain requests may answer later, the rest answer now.
    pub(crate) fn job(
        &mut self,
        cmd: api::Command,
        fds: Vec<std::os::fd::OwnedFd>,
        reply: ReplyTo,
    ) {
        match controller::route(cmd) {
            Routed::Attach(c) => {
                let result = self.attachment_request(c, fds);
                let _ = reply.send(result);
            }
            Routed::Local(c) => {
                let result = self.local(c);
                self.answer(result, reply);
            }
            Routed::Registry(c) => self.registry_job(c, reply),
            Routed::Chain(c) => self.chain_job(c, reply),
        }
    }

    /// Requests that look the registry up first.
    fn registry_job(&mut self, cmd: controller::RegistryRequest, reply: ReplyTo) {
        match cmd {
            controller::RegistryRequest::Resolve { target } => match self.lookup_target(&target) {
                Ok((prefix, address)) => self.resolve(prefix, address, reply),
                Err(e) => {
                    let _ = reply.send(Err(e));
                }
            },
            controller::RegistryRequest::Connect { address, identity } => {
                let target = self
                    .target(&address)
                    .and_then(|a| self.local_named(identity.as_deref()).map(|l| (a, l)));
                match target {
                    Ok((address, local)) => {
                        let waiter = LookupWaiter::Connect {
                            local,
                            address,
                            reply,
                        };
                        self.lookup(address.ipv6_prefix(), waiter, true);
                    }
                    Err(e) => {
                        let _ = reply.send(Err(e));
                    }
                }
            }
        }
    }

    fn resolve(&mut self, prefix: Ipv6Prefix, address: Option<Address>, reply: ReplyTo) {
        // Our own identities answer from what we publish.
        let own = self.names.iter().find_map(|(name, local)| {
            let address = self.node.identity(local)?.address();
            (address.ipv6_prefix() == prefix).then(|| name.to_owned())
        });
        if let Some(record) = own.and_then(|n| self.reg.published(&n).cloned()) {
            let _ = reply.send(Ok(Reply::Record(record_info(&record, "local"))));
            return;
        }
        self.lookup(prefix, LookupWaiter::Resolve { address, reply }, false);
    }

    /// Serve `waiter` from the cache when `use_cache` and a valid record is there, or
    /// join (or start) the DHT lookup for `prefix`.
    pub(crate) fn lookup(&mut self, prefix: Ipv6Prefix, waiter: LookupWaiter, use_cache: bool) {
        let now = crate::unix_now().as_secs();
        if let Some(c) = self.reg.cache.get(&prefix, now).filter(|_| use_cache) {
            let record = c.record.clone();
            let source = format!("cache (from {})", c.source);
            self.deliver(waiter, Ok((&record, &source)));
            return;
        }
        let Some(dht) = &self.dht else {
            self.deliver(waiter, Err(LookupError::NoPeers));
            return;
        };
        let list = self.reg.waiters.entry(prefix).or_default();
        if list.is_empty() {
            dht.send(Request::Lookup { prefix });
        }
        list.push(waiter);
    }

    /// The DHT answered.
    pub(crate) fn on_dht(&mut self, out: Output) {
        let (prefix, result) = match out {
            Output::Found { prefix, result } => (prefix, result),
            Output::Got { key, result } => return self.on_dht_value(key, result),
        };
        let waiters = self.reg.waiters.remove(&prefix).unwrap_or_default();
        match result {
            Ok(found) => {
                let source = found.source.to_string();
                tracing::debug!(peer = %found.record.address(), seq = found.record.seq, %source, "record resolved");
                for w in waiters {
                    self.deliver(w, Ok((&found.record, &source)));
                }
                self.reg.cache.insert(
                    prefix,
                    controller::Cached {
                        record: found.record,
                        source,
                    },
                    crate::unix_now().as_secs(),
                );
            }
            Err(e) => {
                tracing::debug!(prefix = %prefix.ipv6(), error = %e, "lookup failed");
                for w in waiters {
                    self.deliver(w, Err(e.clone()));
                }
            }
        }
    }

    fn deliver(&mut self, waiter: LookupWaiter, result: Result<(&PeerRecord, &str), LookupError>) {
        match waiter {
            LookupWaiter::Packet {
                local,
                ipv6,
                packet,
            } => {
                let added = result
                    .ok()
                    .filter(|(rec, _)| self.refused(&rec.address()).is_none())
                    .and_then(|(rec, _)| self.add_from_record(local, rec, true).ok());
                if added.is_none() {
                    let _ = self
                        .node
                        .handle_command(Command::LookupFailed { local, ipv6 });
                    self.unreachable(local, &packet);
                }
            }
            LookupWaiter::Connect {
                local,
                address,
                reply,
            } => {
                let result = match result {
                    Ok((rec, _)) if rec.address() != address => Err(err(
                        ErrorKind::NotFound,
                        &format!("no record for {address} in the registry"),
                    )),
                    Ok((rec, _)) => self.add_from_record(local, rec, true).map(|endpoint| {
                        Reply::Connected(self.connecting(local, address, endpoint))
                    }),
                    Err(e) => Err(err(
                        ErrorKind::NotFound,
                        &format!(
                            "cannot resolve {address}: {e}; if you know where it listens, use --endpoint HOST:PORT"
                        ),
                    )),
                };
                self.answer(result, reply);
            }
            LookupWaiter::Resolve { address, reply } => {
                let answer = match result {
                    Ok((rec, _)) if address.is_some_and(|a| a != rec.address()) => Err(err(
                        ErrorKind::NotFound,
                        "no record for that address in the registry (only one for another address with the same overlay IPv6)",
                    )),
                    Ok((rec, source)) => match self.refused(&rec.address()) {
                        Some(e) => Err(e),
                        None => Ok(Reply::Record(record_info(rec, source))),
                    },
                    Err(e) => Err(err(ErrorKind::NotFound, &format!("not resolved: {e}"))),
                };
                let _ = reply.send(answer);
            }
            LookupWaiter::Refresh { local, address } => {
                if let Ok((rec, _)) = result {
                    let known = self
                        .node
                        .peers()
                        .into_iter()
                        .find(|p| p.local == local && p.address == address);
                    let moved = known
                        .is_none_or(|p| p.endpoint.is_none_or(|e| !rec.endpoints.contains(&e)));
                    if rec.address() == address && moved {
                        tracing::info!(peer = %address, endpoints = ?rec.endpoints, "peer moved: new record");
                        let _ = self.add_from_record(local, rec, true);
                    }
                }
            }
        }
    }

    /// Our endpoints as others see them changed: republish every record.
    pub(crate) fn nat_changed(&mut self, reflexive: Vec<SocketAddr>) {
        let reflexive: Vec<SocketAddr> = reflexive.into_iter().map(crate::normalize).collect();
        if reflexive != self.reg.reflexive {
            self.reg.reflexive = reflexive;
            for name in self.names.names() {
                self.publish(&name, true);
            }
        }
    }

    /// Make `rec` a peer of `local` and start a handshake on every path its record
    /// gives: each endpoint that can be a peer's, and its first relay (docs/protocol.md
    /// §10.3). Returns where the peer is tried first.
    fn add_from_record(
        &mut self,
        local: LocalId,
        rec: &PeerRecord,
        connect: bool,
    ) -> Result<SocketAddr, api::Error> {
        // The endpoints that can be a peer's (a record may list ones that cannot).
        let usable: Vec<SocketAddr> = rec
            .endpoints
            .iter()
            .copied()
            .filter(|e| crate::check_endpoint(*e).is_ok() && !self.is_own_endpoint(*e))
            .map(crate::normalize)
            .collect();
        let relay = rec.relays.first().map(|r| metanet_proto::record::Relay {
            address: r.address,
            endpoint: crate::normalize(r.endpoint),
        });
        let Some(endpoint) = usable.first().copied().or(relay.map(|r| r.endpoint)) else {
            return Err(err(
                ErrorKind::Unreachable,
                &format!(
                    "{} publishes no endpoints (its IP is hidden) and no relay: nothing reaches it",
                    rec.address()
                ),
            ));
        };
        self.node
            .handle_command(Command::AddPeer {
                local,
                remote: Remote {
                    public_key: rec.public_key,
                    noise_key: rec.noise_key,
                },
                endpoint: usable.first().copied(),
                candidates: usable.iter().skip(1).copied().collect(),
                relay,
                connect,
            })
            .map_err(|e| crate::commands::command_failed(&e))?;
        self.reg.checks.push(Check {
            due: std::time::Instant::now() + RECHECK_AFTER,
            local,
            address: rec.address(),
            left: RECHECKS,
        });
        Ok(endpoint)
    }

    /// An ICMPv6 "address unreachable" for `packet`, sent back into the TUN.
    pub(crate) fn unreachable(&mut self, local: LocalId, packet: &[u8]) {
        let from = self
            .node
            .identity(local)
            .map(|i| i.address().ipv6())
            .unwrap_or(Ipv6Addr::UNSPECIFIED);
        if let Some(icmp) = ip::icmpv6_unreachable(packet, from, ip::UNREACH_ADDRESS) {
            self.tun_out.push(icmp);
        }
    }

    /// The node needs a peer for `ipv6`; `packet` is what it queued.
    pub(crate) fn lookup_needed(&mut self, local: LocalId, ipv6: Ipv6Addr, packet: &[u8]) {
        let Some(prefix) = Ipv6Prefix::from_ipv6(&ipv6) else {
            return;
        };
        let keep = packet.len().min(KEEP_FOR_ICMP);
        let waiter = LookupWaiter::Packet {
            local,
            ipv6,
            packet: packet[..keep].to_vec(),
        };
        self.lookup(prefix, waiter, true);
    }

    /// A handshake gave up: forget the cached record and look for a newer one.
    pub(crate) fn handshake_failed(&mut self, local: LocalId, address: Address) {
        if self.reg.cache.remove(&address.ipv6_prefix()) {
            self.lookup(
                address.ipv6_prefix(),
                LookupWaiter::Refresh { local, address },
                false,
            );
        }
    }

    /// Periodic work: notice endpoint changes, (re)publish, look again for silent peers.
    pub(crate) fn housekeeping(&mut self) {
        let ifs = if_addrs::get_if_addrs().unwrap_or_default();
        self.own_ips = ifs.iter().map(if_addrs::Interface::ip).collect();
        let endpoints = interface_endpoints(ifs, &self.opts.tun, self.opts.port);
        let changed = endpoints != self.reg.endpoints;
        if changed {
            tracing::info!(?endpoints, "underlay endpoints");
            self.node.post(Command::SetCandidates {
                candidates: endpoints.iter().copied().map(crate::normalize).collect(),
            });
            self.reg.endpoints = endpoints;
        }
        let names = self.names.names();
        for name in names {
            self.publish(&name, changed);
        }
        self.deny_revoked();
        self.adopt_rotations();
        let now = std::time::Instant::now();
        let due: Vec<Check> = {
            let (due, keep) = std::mem::take(&mut self.reg.checks)
                .into_iter()
                .partition(|c| c.due <= now);
            self.reg.checks = keep;
            due
        };
        if due.is_empty() {
            return;
        }
        let peers = self.node.peers();
        for c in due {
            let up = peers
                .iter()
                .any(|p| p.local == c.local && p.address == c.address && p.connected);
            if up || c.left == 0 {
                continue;
            }
            tracing::debug!(peer = %c.address, "peer silent after connect: looking it up again");
            self.reg.checks.push(Check {
                due: now + RECHECK_AFTER * 2,
                left: c.left - 1,
                ..c
            });
            self.lookup(
                c.address.ipv6_prefix(),
                LookupWaiter::Refresh {
                    local: c.local,
                    address: c.address,
                },
                false,
            );
        }
    }

    /// Sign and publish the record of identity `name` when it is new, its endpoints
    /// changed (`force`) or it nears expiry.
    pub(crate) fn publish(&mut self, name: &str, force: bool) {
        if self.dht.is_none() {
            return;
        }
        let Ok(local) = self.names.local(Some(name)) else {
            return;
        };
        let now = crate::unix_now().as_secs();
        let cfg = self.reg.config_of(name);
        let routes = cfg.prefixes();
        let exit = cfg.exit;
        let endpoints = if cfg.hidden {
            Vec::new()
        } else {
            let mut e = cfg.endpoints.unwrap_or_else(|| self.reg.endpoints.clone());
            // Local candidates first, then reflexive ones (docs/protocol.md §10.3).
            for r in &self.reg.reflexive {
                if !e.contains(r) && e.len() < metanet_proto::record::MAX_ENDPOINTS {
                    e.push(*r);
                }
            }
            e
        };
        let relays: Vec<metanet_proto::record::Relay> = self
            .opts
            .relays
            .iter()
            .take(metanet_proto::record::MAX_RELAYS)
            .copied()
            .collect();
        let fresh = self.reg.published.get(name).is_some_and(|p| {
            p.record.endpoints == endpoints
                && p.record.relays == relays
                && p.record.routes == routes
                && p.record.exit == exit
                && p.record.not_after > now + RESIGN_BEFORE
        });
        if fresh && !force {
            return;
        }
        let seq = self.reg.next_seq();
        let (Some(id), Some(dht)) = (self.node.identity(local), &self.dht) else {
            return;
        };
        let mut record = PeerRecord::new(id, endpoints, cfg.service, seq, now + RECORD_LIFETIME);
        record.relays = relays;
        record.routes = routes;
        record.exit = exit;
        match record.sign(id) {
            Ok(bytes) => {
                dht.send(Request::Publish {
                    prefix: id.address().ipv6_prefix(),
                    bytes,
                });
                tracing::info!(identity = %name, seq, endpoints = ?record.endpoints, "publishing record");
                self.reg
                    .published
                    .insert(name.to_owned(), Published { record });
            }
            Err(e) => tracing::warn!(identity = %name, error = %e, "cannot sign record"),
        }
    }

    /// Stop publishing identity `name` (removed).
    pub(crate) fn withdraw(&mut self, name: &str, address: Address) {
        self.reg.published.remove(name);
        if let Some(dht) = &self.dht {
            dht.send(Request::Withdraw {
                prefix: address.ipv6_prefix(),
            });
        }
    }
}

/// A record as the control API shows it.
pub(crate) fn record_info(rec: &PeerRecord, source: &str) -> RecordInfo {
    let address = rec.address();
    RecordInfo {
        address: address.to_string(),
        ipv6: address.ipv6(),
        public_key: hex(&rec.public_key.to_bytes()),
        noise_key: hex(&rec.noise_key.0),
        endpoints: rec.endpoints.clone(),
        services: rec.services.clone(),
        seq: rec.seq,
        not_after: rec.not_after,
        source: source.into(),
        routes: rec.routes.iter().map(ToString::to_string).collect(),
        exit: rec.exit,
    }
}

/// This host's underlay endpoints: every interface address but loopback, link-local and
/// the TUN's own, with the UDP port; IPv4 first, at most [`MAX_ENDPOINTS`].
pub(crate) fn interface_endpoints(
    ifs: Vec<if_addrs::Interface>,
    tun: &str,
    port: u16,
) -> Vec<SocketAddr> {
    let mut out: Vec<SocketAddr> = ifs
        .into_iter()
        .filter(|i| i.name != tun)
        .map(|i| i.ip())
        .filter(|ip| match ip {
            IpAddr::V4(v4) => !(v4.is_loopback() || v4.is_link_local() || v4.is_unspecified()),
            IpAddr::V6(v6) => {
                !(v6.is_loopback() || v6.is_unicast_link_local() || v6.is_unspecified())
            }
        })
        .map(|ip| SocketAddr::new(ip, port))
        .collect();
    out.sort_by_key(|a| (a.is_ipv6(), *a));
    out.dedup();
    out.truncate(MAX_ENDPOINTS);
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn endpoints_skip_loopback() {
        for e in interface_endpoints(if_addrs::get_if_addrs().unwrap(), "metanet-test-none", 1) {
            assert!(!e.ip().is_loopback());
        }
    }
}
