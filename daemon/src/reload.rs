//! SIGHUP: re-read the config file, apply what can change (operator rights, static
//! peers, publication settings, chain settings, the host resolver integration) and
//! name what needs a restart.

use metanet_proto::node::{Command, LocalId};
use metanet_proto::Address;

use crate::{chain, config, controller, dns, hostdns, journal, Daemon};

impl Daemon {
    /// SIGHUP: re-read the config file. Identity publication settings (hidden,
    /// endpoints, services) are applied and republished, new static peers connected.
    /// Settings that need a restart (ports, paths, TUN, bootstrap) are kept, with a
    /// warning if they changed. A broken file changes nothing.
    pub(crate) fn reload(&mut self) {
        journal::notify(&format!(
            "RELOADING=1\nMONOTONIC_USEC={}\nSTATUS=reloading the configuration",
            journal::monotonic_usec()
        ));
        self.reload_config();
        journal::notify(&format!("READY=1\nSTATUS={}", self.summary()));
    }

    /// [`Daemon::reload`]'s work: re-read the config file and apply what can change.
    pub(crate) fn reload_config(&mut self) {
        let (path, explicit) = self.opts.config.clone();
        let file = match config::File::load(&path, explicit) {
            Ok(mut f) => {
                f.hide_default(self.opts.hidden_flag);
                f
            }
            Err(e) => {
                tracing::warn!(error = %e, "reload refused: keeping the running configuration");
                return;
            }
        };
        let restart = self.needs_restart(&file);
        if !restart.is_empty() {
            tracing::warn!(
                keys = %restart.join(", "),
                "reload: changed keys take effect at the next restart"
            );
        }
        match file.access() {
            Ok(a) => {
                *self
                    .access
                    .write()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) = a
            }
            Err(e) => tracing::warn!(error = %e, "reload: operator rights unchanged"),
        }
        // Static peers that left the file are disconnected.
        for old in std::mem::replace(&mut self.opts.static_peers, file.peer.clone()) {
            let kept = file
                .peer
                .iter()
                .any(|p| p.address == old.address && p.identity == old.identity);
            let (Ok(address), Ok(local)) = (
                old.address.parse::<Address>(),
                self.local_named(old.identity.as_deref()),
            ) else {
                continue;
            };
            if !kept {
                let gone = self
                    .node
                    .handle_command(Command::RemovePeer { local, address });
                if gone.is_ok() {
                    tracing::info!(peer = %address, "reload: static peer removed from the config: disconnected");
                }
            }
        }
        self.reg.set_configs(file.identity.clone());
        self.apply_policies();
        let names = self.names.names();
        for name in names {
            if let Ok(local) = self.local_named(Some(&name)) {
                let hidden = self.reg.config_of(&name).hidden;
                self.node.post(Command::SetHidden { local, hidden });
            }
            self.publish(&name, true);
        }
        let known: Vec<(LocalId, Address)> = self
            .node
            .peers()
            .into_iter()
            .map(|p| (p.local, p.address))
            .collect();
        for p in file.peer.clone() {
            let Ok(address) = p.address.parse::<Address>() else {
                tracing::warn!(peer = %p.address, "reload: bad static peer address");
                continue;
            };
            let Ok(local) = self.local_named(p.identity.as_deref()) else {
                tracing::warn!(peer = %p.address, "reload: static peer names an unknown identity");
                continue;
            };
            if known.contains(&(local, address)) {
                continue;
            }
            let cmd = controller::LocalRequest::ConnectAt {
                address: address.into(),
                endpoint: p.endpoint,
                identity: p.identity,
            };
            if let Err(e) = self.local(cmd) {
                tracing::warn!(peer = %p.address, error = %e, "reload: static peer refused");
            }
        }
        self.reload_hostdns(&file);
        self.reload_chain(&file);
        tracing::info!(config = %path.display(), "configuration reloaded");
    }

    /// Chain settings the file changed: a new client (follower, writer, funding key)
    /// replaces the running one, which stops; names keep being served from the shared
    /// view meanwhile. A bad setting (unreadable key, bad URL) keeps the running client.
    /// Chain settings given as flags stay unless the file sets chain keys.
    pub(crate) fn reload_chain(&mut self, file: &config::File) {
        let new = match file.chain(None, None, None) {
            Ok(Some(c)) => c,
            Ok(None) => return,
            Err(e) => {
                tracing::warn!(error = %e, "reload: chain settings refused, keeping the running ones");
                return;
            }
        };
        let same = self.opts.chain.as_ref().is_some_and(|r| {
            (&new.rpc, new.contract, &new.key, new.confirmations)
                == (&r.rpc, r.contract, &r.key, r.confirmations)
        });
        if same {
            return;
        }
        match chain::ChainClient::spawn(new.clone(), &self.opts.state_dir, self.dns_names.clone()) {
            Ok(h) => {
                self.chain = Some(h);
                tracing::info!(rpc = %new.rpc, "reload: chain settings applied");
                self.opts.chain = Some(new);
            }
            Err(e) => {
                tracing::warn!(error = %e, "reload: chain settings refused, keeping the running ones");
            }
        }
    }

    /// The keys of `file` that differ from the running settings and apply only at a
    /// restart (everything a reload does not apply).
    pub(crate) fn needs_restart(&self, file: &config::File) -> Vec<&'static str> {
        let o = &self.opts;
        // Only keys the file sets: flags override the file, so a key the file leaves
        // out keeps its running value.
        let changed = |differs: bool, key: &'static str| differs.then_some(key);
        let bootstrap: Vec<libp2p::Multiaddr> = file
            .bootstrap
            .iter()
            .filter_map(|b| b.parse().ok())
            .collect();
        [
            changed(file.port.is_some_and(|p| p != o.port), "port"),
            changed(file.dht_port.is_some_and(|p| p != o.dht_port), "dht-port"),
            changed(file.tun.as_ref().is_some_and(|t| *t != o.tun), "tun"),
            changed(file.mtu.is_some_and(|m| Some(m) != o.mtu), "mtu"),
            changed(
                file.socket.as_ref().is_some_and(|p| *p != o.socket),
                "socket",
            ),
            changed(
                file.state_dir.as_ref().is_some_and(|p| *p != o.state_dir),
                "state-dir",
            ),
            changed(
                file.socket_buffer.is_some_and(|b| b != o.socket_buffer),
                "socket-buffer",
            ),
            changed(
                file.cipher
                    .is_some_and(|c| c.aes_256_gcm() != o.aes_256_gcm),
                "cipher",
            ),
            changed(
                bootstrap.iter().any(|b| !o.bootstrap.contains(b)),
                "bootstrap",
            ),
            changed(
                file.dns_listen.is_some_and(|a| Some(a) != o.dns_listen),
                "dns-listen",
            ),
            changed(
                file.metrics_listen()
                    .ok()
                    .flatten()
                    .is_some_and(|a| Some(a) != o.metrics_listen),
                "metrics-listen",
            ),
            changed(
                file.overlay_filter.is_some_and(|f| f != o.overlay_filter),
                "overlay-filter",
            ),
            changed(
                file.relay.is_some() && file.relay_limits() != o.relay,
                "relay",
            ),
            changed(
                file.relays()
                    .is_ok_and(|r| r.iter().any(|x| !o.relays.contains(x))),
                "relays",
            ),
            changed(
                file.keepalive.is_some_and(|k| {
                    (k != 0).then(|| std::time::Duration::from_secs(k)) != o.keepalive
                }),
                "keepalive",
            ),
        ]
        .into_iter()
        .flatten()
        .collect()
    }

    /// The host resolver integration's view of this daemon.
    pub(crate) fn hostdns_context(&self) -> hostdns::Context {
        hostdns::Context {
            tun: self.opts.tun.clone(),
            ifindex: self.tun.if_index().unwrap_or(0),
            listen: self.dns_view.0,
            serving: self.dns_view.1 == "serving",
            hosts_file: self.opts.hosts_file.clone(),
        }
    }

    /// Point the host's resolver at the DNS view (`dns-system`). Bounded: the tools it
    /// runs time out after a few seconds.
    pub(crate) fn start_hostdns(&mut self) {
        self.hostdns = hostdns::HostDns::start(self.opts.dns_system, self.hostdns_context());
        self.refresh_hosts();
    }

    /// With `dns-system = "hosts"`: bring the managed block up to date with the local
    /// identities, the peers and the chain's names (called every housekeeping tick,
    /// which debounces changes; the file is only written when its block changes).
    pub(crate) fn refresh_hosts(&mut self) {
        if self.hostdns.system() != config::DnsSystem::Hosts.name() {
            return;
        }
        let meta = |a: &Address| (format!("{a}.{}", dns::DOMAIN), a.ipv6());
        let mut entries = std::collections::BTreeSet::new();
        {
            for (_, local) in self.names.iter() {
                if let Some(id) = self.node.identity(local) {
                    entries.insert(meta(&id.address()));
                }
            }
            for p in self.node.peers() {
                entries.insert(meta(&p.address));
            }
        }
        let names = self
            .dns_names
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for (name, a) in names.iter() {
            entries.insert((format!("{name}.{}", dns::DOMAIN), a.ipv6()));
        }
        drop(names);
        self.hostdns.update_hosts(entries);
    }

    /// SIGHUP: a changed `dns-system` (unless the flag set it) or `hosts-file` undoes
    /// the running integration and applies the new one.
    pub(crate) fn reload_hostdns(&mut self, file: &config::File) {
        let system = match file.dns_system {
            Some(m) if !self.opts.dns_system_flag => m,
            _ if self.opts.dns_system_flag => self.opts.dns_system,
            _ => config::DnsSystem::default(),
        };
        let hosts_file = file
            .hosts_file
            .clone()
            .unwrap_or_else(|| config::DEFAULT_HOSTS_FILE.into());
        if system == self.opts.dns_system && hosts_file == self.opts.hosts_file {
            return;
        }
        tracing::info!(
            from = self.opts.dns_system.name(),
            to = system.name(),
            "reload: host resolver integration changed"
        );
        self.hostdns.stop();
        self.opts.dns_system = system;
        self.opts.hosts_file = hosts_file;
        self.start_hostdns();
    }
}
