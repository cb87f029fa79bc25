//! The control requests answered at once (`controller::LocalRequest`): identities (new,
//! import, export, remove, rotate), connect at an endpoint, disconnect.

use std::net::SocketAddr;

use metanet_proto::control::{self as api, ErrorKind, PeerInfo, Reply};
use metanet_proto::identity::hex;
use metanet_proto::node::{self, Command, LocalId};
use metanet_proto::{Address, Identity};

use crate::{check_endpoint, controller, dht, err, link, normalize, state, sys, Daemon};

impl Daemon {
    /// Requests answered at once.
    pub(crate) fn local(&mut self, cmd: controller::LocalRequest) -> Result<Reply, api::Error> {
        use controller::LocalRequest as L;
        match cmd {
            L::Status => {
                // One snapshot: the counters and the peers are from the same moment.
                let snap = self
                    .node
                    .snapshot()
                    .map_err(|e| err(ErrorKind::Timeout, &e.to_string()))?;
                let counters = self
                    .counters(&snap)
                    .into_iter()
                    .map(|(k, _, v)| (k.to_owned(), v))
                    .collect();
                Ok(Reply::Status(api::Status {
                    version: env!("CARGO_PKG_VERSION").into(),
                    interface: self.opts.tun.clone(),
                    port: self.opts.port,
                    identities: self.identity_list(),
                    peer_count: Some(snap.peers.len() as u64),
                    peers_up: Some(snap.peers.iter().filter(|p| p.connected).count() as u64),
                    peers: self.status_peers(snap.peers),
                    counters,
                    dht: self.dht.as_ref().map(dht::Dht::status),
                    chain: self.chain_status(),
                    dns: Some(api::DnsStatus {
                        listen: self.dns_view.0.to_string(),
                        state: self.dns_view.1.clone(),
                        system: self.hostdns.system().into(),
                        system_state: self.hostdns.state(),
                    }),
                }))
            }
            L::Peers => Ok(Reply::Peers {
                peers: self.peer_infos(),
            }),
            L::PolicyShow => self.policy_show(),
            L::RelayStatus => {
                let snap = self
                    .node
                    .snapshot()
                    .map_err(|e| err(ErrorKind::Timeout, &e.to_string()))?;
                Ok(Reply::Relay(self.relay_info(snap)))
            }
            L::IdList => Ok(Reply::Identities {
                identities: self.identity_list(),
            }),
            L::IdShow { name } => {
                let local = self.local_named(name.as_deref())?;
                let name = self.name_of(local);
                self.identity_info(&name, local)
                    .map(Reply::Identity)
                    .ok_or_else(|| err(ErrorKind::NotFound, "no such identity"))
            }
            L::IdNew { name } => {
                let seed =
                    state::random64().map_err(|e| err(ErrorKind::Internal, &e.to_string()))?;
                self.add_identity(name, Identity::generate(&seed))
            }
            L::IdImport { name, secret_hex } => {
                let wallet = metanet_proto::keyfile::parse_hex32(secret_hex.trim(), "secret")
                    .map_err(|e| err(ErrorKind::BadRequest, &e.to_string()))?;
                let mut noise = [0u8; 32];
                noise.copy_from_slice(
                    &state::random64().map_err(|e| err(ErrorKind::Internal, &e.to_string()))?[..32],
                );
                let id = Identity::new(
                    metanet_proto::WalletKey::from_seed(&wallet),
                    metanet_proto::identity::NoiseKey::from_bytes(&noise),
                );
                self.add_identity(name, id)
            }
            L::IdExport { name } => {
                let local = self.local_named(Some(&name))?;
                let id = self
                    .node
                    .identity(local)
                    .ok_or_else(|| err(ErrorKind::NotFound, "no such identity"))?;
                Ok(Reply::Secret {
                    name,
                    secret_hex: hex(&id.wallet().seed()[..]),
                })
            }
            L::IdRotate { name } => self.rotate(name.as_deref()),
            L::IdRemove { name } => {
                let local = self.local_named(Some(&name))?;
                if self.attachments.holds(&name) {
                    self.detach(&name, false, crate::attach::Removal::IdentityRemoved)?;
                }
                if self.names.len() == 1 {
                    return Err(err(
                        ErrorKind::BadRequest,
                        "cannot remove the only identity",
                    ));
                }
                self.state
                    .remove(&name)
                    .map_err(|e| err(ErrorKind::Internal, &e.to_string()))?;
                let removed = self.node.remove_identity(local);
                if let Some(id) = removed {
                    let _ = self.tun.remove_address_v6(id.address().ipv6(), 128);
                    self.withdraw(&name, id.address());
                }
                self.names.remove(&name);
                self.forget_policy(&name);
                self.refilter();
                Ok(Reply::Done)
            }
            L::ConnectAt {
                address,
                endpoint,
                identity,
            } => {
                let address = self.target(&address)?;
                let local = self.local_named(identity.as_deref())?;
                check_endpoint(endpoint).map_err(|why| {
                    err(
                        ErrorKind::BadRequest,
                        &format!("endpoint {endpoint}: {why}"),
                    )
                })?;
                if self.is_own_endpoint(endpoint) {
                    return Err(err(
                        ErrorKind::BadRequest,
                        &format!("endpoint {endpoint} is this metanetd itself, not a peer"),
                    ));
                }
                self.node
                    .handle_command(Command::Connect {
                        local,
                        address,
                        endpoint: normalize(endpoint),
                    })
                    .map_err(|e| command_failed(&e))?;
                Ok(Reply::Connected(self.connecting(local, address, endpoint)))
            }
            L::Disconnect { address, identity } => {
                let (address, _) = self.target_unchecked(&address)?;
                let local = self.local_named(identity.as_deref())?;
                self.node
                    .handle_command(Command::RemovePeer { local, address })
                    .map_err(|e| command_failed(&e))?;
                Ok(Reply::Done)
            }
        }
    }

    /// `metanet id rotate`: a fresh Noise static key under the same wallet key (so the
    /// same address), saved atomically, the record republished with its new binding,
    /// and every peer of the identity handshaken again with it.
    pub(crate) fn rotate(&mut self, name: Option<&str>) -> Result<Reply, api::Error> {
        let local = self.local_named(name)?;
        let name = self.name_of(local);
        let internal = |e: &dyn std::fmt::Display| err(ErrorKind::Internal, &e.to_string());
        let seed = self
            .node
            .identity(local)
            .ok_or_else(|| err(ErrorKind::NotFound, "no such identity"))?
            .wallet()
            .seed();
        let mut noise = [0u8; 32];
        noise.copy_from_slice(&state::random64().map_err(|e| internal(&e))?[..32]);
        let id = Identity::new(
            metanet_proto::WalletKey::from_seed(&seed),
            metanet_proto::identity::NoiseKey::from_bytes(&noise),
        );
        self.state
            .write(&name, &id, true)
            .map_err(|e| internal(&e))?;
        let fresh = self.replace_identity(local, id)?;
        self.publish(&name, true);
        tracing::info!(identity = %name, "noise key rotated");
        self.identity_info(&name, fresh)
            .map(Reply::Identity)
            .ok_or_else(|| err(ErrorKind::NotFound, "no such identity"))
    }

    /// The node serves `new` in place of local identity `local` (same name): the old
    /// one's peers are dropped and connected again from the new one at their last
    /// endpoints. Returns the new identity's id.
    pub(crate) fn replace_identity(
        &mut self,
        local: LocalId,
        new: Identity,
    ) -> Result<LocalId, api::Error> {
        let peers: Vec<(Address, SocketAddr)> = self
            .node
            .peers()
            .into_iter()
            .filter(|p| p.local == local)
            .filter_map(|p| Some((p.address, p.endpoint?)))
            .collect();
        self.node.remove_identity(local);
        let fresh = self
            .node
            .add_identity(new)
            .map_err(|e| err(ErrorKind::Timeout, &e.to_string()))?;
        for (address, endpoint) in peers {
            self.node.post(Command::Connect {
                local: fresh,
                address,
                endpoint,
            });
        }
        self.names.replace(local, fresh);
        // The node holds the identity anew, with the open policy: give it its own.
        let name = self.name_of(fresh);
        self.forget_policy(&name);
        self.apply_policies();
        Ok(fresh)
    }

    pub(crate) fn add_identity(&mut self, name: String, id: Identity) -> Result<Reply, api::Error> {
        self.add_identity_at(name, id, true)
    }

    /// Add identity `name`; `on_host`: its address goes on the host's TUN (not for an
    /// identity made for an attachment, whose address lives in its namespace).
    pub(crate) fn add_identity_at(
        &mut self,
        name: String,
        id: Identity,
        on_host: bool,
    ) -> Result<Reply, api::Error> {
        if self.names.contains(&name) {
            return Err(err(
                ErrorKind::AlreadyExists,
                &format!("identity `{name}` already exists"),
            ));
        }
        self.state.write(&name, &id, false).map_err(|e| match e {
            state::Error::Exists(_) => err(ErrorKind::AlreadyExists, &e.to_string()),
            state::Error::BadName(_) => err(ErrorKind::BadRequest, &e.to_string()),
            other => err(ErrorKind::Internal, &other.to_string()),
        })?;
        let ipv6 = id.address().ipv6();
        if on_host {
            sys::add_deprecated_address(&self.opts.tun, ipv6)
                .map_err(|e| err(ErrorKind::Internal, &e.to_string()))?;
        }
        let local = self
            .node
            .add_identity(id)
            .map_err(|e| err(ErrorKind::Timeout, &e.to_string()))?;
        self.names.push(name.clone(), local);
        let hidden = self.reg.config_of(&name).hidden;
        for cmd in crate::paths_of(local, hidden, &self.opts.relays) {
            self.node.post(cmd);
        }
        self.refilter();
        self.publish(&name, true);
        self.apply_policies();
        self.identity_info(&name, local)
            .map(Reply::Identity)
            .ok_or_else(|| err(ErrorKind::Internal, "identity vanished"))
    }

    /// A peer just asked to connect to, before its session is up.
    pub(crate) fn connecting(
        &self,
        local: LocalId,
        address: Address,
        endpoint: SocketAddr,
    ) -> PeerInfo {
        PeerInfo {
            identity: self.name_of(local),
            address: address.to_string(),
            ipv6: address.ipv6(),
            endpoint: Some(endpoint),
            last_handshake: None,
            connected: false,
            rx_bytes: 0,
            tx_bytes: 0,
            rtt_us: None,
            cipher: None,
            pq: None,
            path: String::new(),
        }
    }

    /// Whether `endpoint` is this daemon's own UDP socket: our port on a loopback
    /// address or on an address of one of our interfaces.
    pub(crate) fn is_own_endpoint(&self, endpoint: SocketAddr) -> bool {
        let ip = normalize(endpoint).ip();
        // The addresses housekeeping listed (every 2 s): listing them per connect costs
        // more than the connect on a host with thousands of identities.
        endpoint.port() == self.opts.port && (ip.is_loopback() || self.own_ips.contains(&ip))
    }
}

/// The control error for a node command that did not run: each refusal its own kind.
pub(crate) fn command_failed(e: &link::CommandFailed) -> api::Error {
    use node::CommandError as C;
    let kind = match e {
        link::CommandFailed::Unanswered(_) => ErrorKind::Timeout,
        link::CommandFailed::Refused(c) => match c {
            C::UnknownLocal | C::UnknownPeer => ErrorKind::NotFound,
            C::TooManyPeers => ErrorKind::TooManyPeers,
            C::Denied => ErrorKind::Denied,
            C::SelfPeer | C::BadPolicy(_) | C::BadRoute(_) => ErrorKind::BadRequest,
            C::TooManyDenied | C::TooManyNetworkKeys => ErrorKind::Internal,
        },
    };
    err(kind, &e.to_string())
}
