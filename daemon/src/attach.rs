//! Network namespaces attached to identities: a TUN per attachment inside its
//! namespace, owned by this daemon (docs/containers.md).
//!
//! `metanet attach` (or the CNI plugin) opens `/dev/net/tun` and a netlink socket
//! inside the namespace and passes both with the request (`SCM_RIGHTS`). Here the TUN
//! is attached as the namespace's interface (offloads on), given the identity's
//! overlay /128 and the `fd00::/8` route through that netlink socket, and handed to
//! the data plane, which reads it with the identity's source check and delivers
//! packets between local identities without UDP. The daemon needs `CAP_NET_ADMIN`
//! and nothing more.
//!
//! Attachments are saved (`attachments.json`) and survive a restart in one of two
//! ways: under systemd the descriptors go to the service manager's store
//! (`FDSTORE=1`) and come back at start (`LISTEN_FDS`), so the interface never goes
//! away; a daemon that may enter namespaces (root, outside systemd) opens them again
//! from the saved state. One that can do neither lists the attachment as `lost`.
//! Every housekeeping turn checks that each namespace still exists (its path still
//! names the same nsfs inode); an attachment whose namespace disappeared is removed.

use std::collections::BTreeMap;
use std::net::Ipv6Addr;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use metanet_proto::control::{self as api, AttachmentInfo, ErrorKind, Reply};
use metanet_proto::Identity;
use serde::{Deserialize, Serialize};

use crate::controller::AttachRequest;
use crate::{err, state, sys, Daemon};

/// The saved attachments, in the state directory.
const FILE: &str = "attachments.json";

/// Most attachments one daemon holds.
pub(crate) const MAX_ATTACHMENTS: usize = 1024;

/// What is saved of an attachment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Saved {
    pub identity: String,
    pub netns: String,
    /// The namespace's nsfs device and inode when it was attached.
    pub ns: (u64, u64),
    pub interface: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<String>,
    /// The identity goes with the attachment (made for it alone by the CNI plugin).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub ephemeral: bool,
}

/// An attachment as the daemon holds it.
#[derive(Debug)]
pub(crate) struct Attachment {
    pub saved: Saved,
    pub ip: Ipv6Addr,
    pub state: State,
}

#[derive(Debug)]
pub(crate) enum State {
    /// Read by the data plane in `slot`.
    Up {
        dev: Arc<sys::TunFd>,
        netlink: OwnedFd,
        slot: usize,
        /// The slot's occupant: notes and detaches name it, not just the slot.
        gen: u64,
    },
    /// The descriptors are gone (a restart without them); attach again.
    Lost,
    /// The interface failed (deleted inside the namespace).
    Broken(String),
}

impl State {
    fn name(&self) -> &'static str {
        match self {
            State::Up { .. } => "up",
            State::Lost => "lost",
            State::Broken(_) => "broken",
        }
    }
}

/// Why an attachment goes: what the log says, and whether an ephemeral identity
/// goes with it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Removal {
    /// Asked for (`detach`, CNI `DEL` or `GC`).
    Detached,
    /// Its namespace disappeared.
    NamespaceGone,
    /// A new attachment of the same identity takes its place: the identity stays.
    Replaced,
    /// Its identity is being removed (by the caller, not here).
    IdentityRemoved,
}

impl Removal {
    fn reason(self) -> &'static str {
        match self {
            Removal::Detached => "detached",
            Removal::NamespaceGone => "its namespace is gone",
            Removal::Replaced => "replaced",
            Removal::IdentityRemoved => "its identity is removed",
        }
    }

    /// Whether an ephemeral identity goes with the attachment here.
    fn takes_ephemeral_identity(self) -> bool {
        matches!(self, Removal::Detached | Removal::NamespaceGone)
    }
}

/// Every attachment, by identity name.
#[derive(Debug, Default)]
pub(crate) struct Attachments {
    pub by_identity: BTreeMap<String, Attachment>,
}

impl Attachments {
    /// The one on data-plane slot `slot` as occupant `gen`.
    pub(crate) fn by_slot(&mut self, slot: usize, gen: u64) -> Option<&mut Attachment> {
        self.by_identity
            .values_mut()
            .find(|a| matches!(a.state, State::Up { slot: s, gen: g, .. } if s == slot && g == gen))
    }

    /// The device that reaches local address `ip`, when an attachment holds it.
    pub(crate) fn device_for(&self, ip: Ipv6Addr) -> Option<Arc<sys::TunFd>> {
        self.by_identity.values().find_map(|a| match &a.state {
            State::Up { dev, .. } if a.ip == ip => Some(dev.clone()),
            _ => None,
        })
    }

    /// Whether identity `name` lives in a namespace (its address is not the host's).
    pub(crate) fn holds(&self, name: &str) -> bool {
        self.by_identity.contains_key(name)
    }
}

/// Read the saved attachments; a missing file is none, a bad one is logged and set
/// aside (renamed `.bad`), never fatal.
pub(crate) fn load(dir: &Path) -> Vec<Saved> {
    let path = dir.join(FILE);
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Vec::new(),
        Err(e) => {
            tracing::error!(path = %path.display(), error = %e, "cannot read saved attachments");
            return Vec::new();
        }
    };
    match serde_json::from_slice::<Vec<Saved>>(&bytes) {
        Ok(v) => v,
        Err(e) => {
            let bad = dir.join(format!("{FILE}.bad"));
            tracing::error!(path = %path.display(), error = %e, moved_to = %bad.display(), "saved attachments unreadable: set aside");
            let _ = std::fs::rename(&path, &bad);
            Vec::new()
        }
    }
}

/// The store names of an attachment's two descriptors.
fn fd_names(identity: &str) -> [String; 2] {
    [
        format!("attach-{identity}-tun"),
        format!("attach-{identity}-nl"),
    ]
}

/// Whether `name` is an interface name the kernel takes.
fn valid_interface(name: &str) -> bool {
    !name.is_empty()
        && name.len() < libc::IFNAMSIZ
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
}

impl Daemon {
    /// `attach`, `detach`, `attachments`.
    pub(crate) fn attachment_request(
        &mut self,
        req: AttachRequest,
        fds: Vec<OwnedFd>,
    ) -> Result<Reply, api::Error> {
        match req {
            AttachRequest::Attach {
                netns,
                identity,
                interface,
                container_id,
                network,
                ephemeral,
            } => {
                let saved = Saved {
                    identity,
                    ns: (0, 0),
                    interface: interface.unwrap_or_else(|| api::DEFAULT_INTERFACE.into()),
                    netns,
                    container_id,
                    network,
                    ephemeral,
                };
                self.attach(saved, fds).map(Reply::Attachment)
            }
            AttachRequest::Detach {
                identity,
                container_id,
                network,
                remove_identity,
            } => {
                let names: Vec<String> = match (identity, container_id) {
                    (Some(name), None) => vec![name],
                    (None, Some(c)) => self
                        .attachments
                        .by_identity
                        .values()
                        .filter(|a| a.saved.container_id.as_deref() == Some(&c))
                        .filter(|a| network.is_none() || a.saved.network == network)
                        .map(|a| a.saved.identity.clone())
                        .collect(),
                    _ => {
                        return Err(err(
                            ErrorKind::BadRequest,
                            "detach takes an identity or a container id (one of them)",
                        ))
                    }
                };
                for name in names {
                    self.detach(&name, remove_identity, Removal::Detached)?;
                }
                Ok(Reply::Done)
            }
            AttachRequest::List => Ok(Reply::Attachments {
                attachments: self.attachment_list(),
            }),
        }
    }

    /// Attach `saved.netns` to identity `saved.identity` with the two descriptors
    /// opened there (TUN, netlink). Nothing is left half-made on failure.
    fn attach(
        &mut self,
        mut saved: Saved,
        fds: Vec<OwnedFd>,
    ) -> Result<AttachmentInfo, api::Error> {
        let bad = |m: &str| err(ErrorKind::BadRequest, m);
        let [tun, netlink]: [OwnedFd; 2] = fds.try_into().map_err(|_| {
            bad(
                "attach needs two descriptors opened inside the namespace (an unattached \
                 /dev/net/tun, then a NETLINK_ROUTE socket): use `metanet attach` or metanet-cni",
            )
        })?;
        if !metanet_attach::valid_netns(&saved.netns) {
            return Err(bad("bad network namespace name"));
        }
        if !valid_interface(&saved.interface) {
            return Err(bad(&format!(
                "bad interface name {:?} (1 to 15 of a-z, A-Z, 0-9, '-', '_', '.')",
                saved.interface
            )));
        }
        let path = metanet_attach::resolve(&saved.netns);
        saved.netns = path.display().to_string();
        let ns = metanet_attach::namespace_id(&path).map_err(|e| {
            err(
                match e {
                    metanet_attach::Error::NotFound(_) => ErrorKind::NotFound,
                    _ => ErrorKind::BadRequest,
                },
                &e.to_string(),
            )
        })?;
        for fd in [&tun, &netlink] {
            let of = sys::namespace_of(fd.as_raw_fd())
                .map_err(|e| bad(&format!("cannot tell the descriptors' namespace: {e}")))?;
            if of != ns {
                return Err(bad(&format!(
                    "the descriptors were not opened inside {}",
                    saved.netns
                )));
            }
        }
        if metanet_attach::own_namespace().ok() == Some(ns) {
            return Err(bad(
                "that is the daemon's own network namespace: its identities are there already",
            ));
        }
        saved.ns = ns;
        if let Some(a) = self.attachments.by_identity.get(&saved.identity) {
            if a.saved.ns == ns && a.saved.interface == saved.interface {
                if matches!(a.state, State::Up { .. }) {
                    // The same attachment again: answered as it is.
                    return self
                        .attachment_info(&saved.identity)
                        .ok_or_else(|| err(ErrorKind::Internal, "attachment vanished"));
                }
                // Lost or broken: replaced by this one.
                self.detach(&saved.identity.clone(), false, Removal::Replaced)?;
            } else {
                return Err(err(
                    ErrorKind::AlreadyExists,
                    &format!(
                        "identity `{}` is attached to {} already: detach it first",
                        saved.identity, a.saved.netns
                    ),
                ));
            }
        }
        // One identity per namespace: the namespace's one `fd00::/8` route goes
        // through one interface, and that interface takes only its identity's source.
        if let Some(a) = self
            .attachments
            .by_identity
            .values()
            .find(|a| a.saved.ns == ns)
        {
            return Err(err(
                ErrorKind::AlreadyExists,
                &format!(
                    "{} is attached to identity `{}` already ({}): one identity per namespace; detach it first",
                    saved.netns, a.saved.identity, a.saved.interface
                ),
            ));
        }
        if self.attachments.by_identity.len() >= MAX_ATTACHMENTS {
            return Err(err(
                ErrorKind::Refused,
                &format!("this daemon holds {MAX_ATTACHMENTS} attachments already"),
            ));
        }
        if self.names.is_default_name(&saved.identity) {
            return Err(bad(
                "the default identity is the host's own: attach another identity (it is created when missing)",
            ));
        }
        let clash = sys::NetnsLink {
            sock: &netlink,
            name: &saved.interface,
        };
        if clash.index().is_ok() {
            return Err(err(
                ErrorKind::AlreadyExists,
                &format!(
                    "{} already has an interface named {}: pick another name (--interface)",
                    saved.netns, saved.interface
                ),
            ));
        }
        let created = !self.names.contains(&saved.identity);
        if created {
            let seed = state::random64().map_err(|e| err(ErrorKind::Internal, &e.to_string()))?;
            self.add_identity_at(saved.identity.clone(), Identity::generate(&seed), false)?;
        }
        match self.bring_up(&saved, tun, netlink, true) {
            Ok(()) => {}
            Err(e) => {
                if created {
                    let _ = self.local(crate::controller::LocalRequest::IdRemove {
                        name: saved.identity.clone(),
                    });
                }
                return Err(e);
            }
        }
        tracing::info!(identity = %saved.identity, netns = %saved.netns, interface = %saved.interface, "namespace attached");
        self.save_attachments();
        self.attachment_info(&saved.identity)
            .ok_or_else(|| err(ErrorKind::Internal, "attachment vanished"))
    }

    /// Attach the TUN, configure the interface, hand it to the data plane and record
    /// it; `store`: hand the descriptors to the service manager's store, when there is
    /// one (not when they came from it).
    fn bring_up(
        &mut self,
        saved: &Saved,
        tun: OwnedFd,
        netlink: OwnedFd,
        store: bool,
    ) -> Result<(), api::Error> {
        let internal = |what: &str, e: &dyn std::fmt::Display| {
            err(ErrorKind::Internal, &format!("{what}: {e}"))
        };
        let local = self.local_named(Some(&saved.identity))?;
        let ip = self
            .node
            .identity(local)
            .ok_or_else(|| err(ErrorKind::NotFound, "no such identity"))?
            .address()
            .ipv6();
        let dev = sys::TunFd::attach(tun, &saved.interface, !store).map_err(|e| {
            internal(
                &format!("cannot create {} in {}", saved.interface, saved.netns),
                &e,
            )
        })?;
        let link = sys::NetnsLink {
            sock: &netlink,
            name: dev.name(),
        };
        link.up(self.mtu)
            .and_then(|()| link.address_and_route(ip))
            .map_err(|e| {
                internal(
                    &format!("cannot configure {} in {}", saved.interface, saved.netns),
                    &e,
                )
            })?;
        let dev = Arc::new(dev);
        let (slot, gen) = self
            .node
            .attach(ip, dev.clone())
            .map_err(|e| err(ErrorKind::Timeout, &e.to_string()))?
            .ok_or_else(|| err(ErrorKind::Internal, "the data plane cannot poll the TUN"))?;
        // The address now lives in the namespace, not on the host's TUN.
        let _ = self.tun.remove_address_v6(ip, 128);
        let [tun_name, nl_name] = fd_names(&saved.identity);
        let kept = [(tun_name, dev.raw()), (nl_name, netlink.as_raw_fd())];
        for (name, fd) in kept.into_iter().filter(|_| store) {
            if let Err(e) = sys::notify_with_fds(&format!("FDSTORE=1\nFDNAME={name}"), &[fd]) {
                tracing::warn!(error = %e, "cannot keep an attachment's descriptor in the service manager's store");
            }
        }
        self.attachments.by_identity.insert(
            saved.identity.clone(),
            Attachment {
                saved: saved.clone(),
                ip,
                state: State::Up {
                    dev,
                    netlink,
                    slot,
                    gen,
                },
            },
        );
        Ok(())
    }

    /// Remove identity `name`'s attachment (if any): its interface goes with its TUN,
    /// its address comes back to the host (or the identity goes: `remove_identity`, or
    /// an ephemeral attachment's, unless the attachment is only being replaced).
    pub(crate) fn detach(
        &mut self,
        name: &str,
        remove_identity: bool,
        why: Removal,
    ) -> Result<(), api::Error> {
        // The identity goes only with an attachment: `detach --remove-identity` of an
        // identity that is not attached leaves it alone.
        let attached = self.attachments.holds(name);
        let remove_identity = remove_identity && attached
            || self
                .attachments
                .by_identity
                .get(name)
                .is_some_and(|a| a.saved.ephemeral && why.takes_ephemeral_identity());
        if let Some(a) = self.attachments.by_identity.remove(name) {
            if let State::Up { slot, gen, .. } = a.state {
                self.node.detach(slot, gen);
            }
            let [tun_name, nl_name] = fd_names(name);
            for n in [tun_name, nl_name] {
                let _ = sys::notify_with_fds(&format!("FDSTOREREMOVE=1\nFDNAME={n}"), &[]);
            }
            tracing::info!(identity = %name, netns = %a.saved.netns, reason = why.reason(), "attachment removed");
            self.save_attachments();
            if !remove_identity && self.names.contains(name) {
                if let Err(e) = sys::add_deprecated_address(&self.opts.tun, a.ip) {
                    tracing::warn!(identity = %name, error = %e, "cannot give the address back to the host's TUN");
                }
            }
        }
        if remove_identity && self.names.contains(name) && !self.names.is_default_name(name) {
            self.local(crate::controller::LocalRequest::IdRemove { name: name.into() })?;
        }
        Ok(())
    }

    pub(crate) fn save_attachments(&self) {
        let saved: Vec<&Saved> = self
            .attachments
            .by_identity
            .values()
            .map(|a| &a.saved)
            .collect();
        let bytes = serde_json::to_vec_pretty(&saved).unwrap_or_default();
        if let Err(e) = state::write_private(&self.state.root().join(FILE), &bytes) {
            tracing::error!(error = %e, "cannot save attachments");
        }
    }

    fn attachment_list(&self) -> Vec<AttachmentInfo> {
        let names: Vec<String> = self.attachments.by_identity.keys().cloned().collect();
        let stats = self.node.snapshot().map(|s| s.slots).unwrap_or_default();
        names
            .iter()
            .filter_map(|n| self.attachment_info_with(n, &stats))
            .collect()
    }

    fn attachment_info(&self, name: &str) -> Option<AttachmentInfo> {
        self.attachment_info_with(name, &[])
    }

    fn attachment_info_with(
        &self,
        name: &str,
        stats: &[(usize, crate::dataplane::SlotStats)],
    ) -> Option<AttachmentInfo> {
        let a = self.attachments.by_identity.get(name)?;
        let local = self.local_named(Some(name)).ok()?;
        let address = self.node.identity(local)?.address();
        let s = match a.state {
            State::Up { slot, .. } => stats
                .iter()
                .find(|(k, _)| *k == slot)
                .map(|(_, s)| *s)
                .unwrap_or_default(),
            _ => Default::default(),
        };
        let dns = self.dns_view.0;
        let reachable = self.dns_view.1 == "serving"
            && matches!(dns.ip(), std::net::IpAddr::V6(v6) if v6.octets()[0] == 0xfd);
        Some(AttachmentInfo {
            identity: name.into(),
            address: address.to_string(),
            ipv6: a.ip,
            netns: a.saved.netns.clone(),
            interface: a.saved.interface.clone(),
            mtu: self.mtu,
            state: match &a.state {
                State::Broken(why) => format!("broken: {why}"),
                // The interface checked now: deleted or set down inside the namespace.
                State::Up { dev, netlink, .. } => {
                    let link = sys::NetnsLink {
                        sock: netlink,
                        name: dev.name(),
                    };
                    match link.is_up() {
                        Ok(true) => "up".into(),
                        Ok(false) => format!("broken: {} is down", dev.name()),
                        Err(e) => format!("broken: {}: {e}", dev.name()),
                    }
                }
                s => s.name().into(),
            },
            container_id: a.saved.container_id.clone(),
            network: a.saved.network.clone(),
            dns: reachable.then_some(dns),
            tx_packets: s.tx_packets,
            rx_packets: s.rx_packets,
            spoofed: s.spoofed,
        })
    }

    /// At start: every saved attachment back, from the service manager's store
    /// (`stored`: its descriptors by name) or by entering the namespace again.
    pub(crate) fn restore_attachments(&mut self, mut stored: BTreeMap<String, OwnedFd>) {
        for saved in load(self.state.root()) {
            let name = saved.identity.clone();
            if !self.names.contains(&name) || self.names.is_default_name(&name) {
                tracing::warn!(identity = %name, "saved attachment for an identity that is gone: dropped");
                continue;
            }
            let path = PathBuf::from(&saved.netns);
            if metanet_attach::namespace_id(&path).ok() != Some(saved.ns) {
                tracing::info!(identity = %name, netns = %saved.netns, "saved attachment's namespace is gone: dropped");
                if saved.ephemeral {
                    let _ = self.local(crate::controller::LocalRequest::IdRemove { name });
                }
                continue;
            }
            let [tun_name, nl_name] = fd_names(&name);
            let fds = match (stored.remove(&tun_name), stored.remove(&nl_name)) {
                (Some(t), Some(n)) => Ok((t, n, "the service manager's store")),
                _ => metanet_attach::open_in(&path)
                    .map(|d| (d.tun, d.netlink, "the saved state"))
                    .map_err(|e| e.to_string()),
            };
            // Descriptors from the store stay there; fresh ones are stored.
            let restored =
                fds.map_err(|e| err(ErrorKind::Internal, &e))
                    .and_then(|(tun, nl, from)| {
                        let fresh = from == "the saved state";
                        self.bring_up(&saved, tun, nl, fresh).map(|()| from)
                    });
            match restored {
                Ok(from) => {
                    tracing::info!(identity = %name, netns = %saved.netns, from, "attachment restored")
                }
                Err(e) => {
                    tracing::warn!(identity = %name, netns = %saved.netns, error = %e.message, "attachment lost: attach it again");
                    // The store must not keep the interface alive for a lost attachment.
                    for n in fd_names(&name) {
                        let _ = sys::notify_with_fds(&format!("FDSTOREREMOVE=1\nFDNAME={n}"), &[]);
                    }
                    let ip = self
                        .local_named(Some(&name))
                        .ok()
                        .and_then(|l| self.node.identity(l))
                        .map(|id| id.address().ipv6());
                    if let Some(ip) = ip {
                        self.attachments.by_identity.insert(
                            name,
                            Attachment {
                                saved,
                                ip,
                                state: State::Lost,
                            },
                        );
                    }
                }
            }
        }
        for name in stored.keys() {
            tracing::debug!(name, "stored descriptor without an attachment: closed");
            let _ = sys::notify_with_fds(&format!("FDSTOREREMOVE=1\nFDNAME={name}"), &[]);
        }
        self.save_attachments();
    }

    /// Housekeeping: remove attachments whose namespace disappeared.
    pub(crate) fn check_attachments(&mut self) {
        let gone: Vec<String> = self
            .attachments
            .by_identity
            .values()
            .filter(|a| {
                metanet_attach::namespace_id(Path::new(&a.saved.netns)).ok() != Some(a.saved.ns)
            })
            .map(|a| a.saved.identity.clone())
            .collect();
        for name in gone {
            let _ = self.detach(&name, false, Removal::NamespaceGone);
        }
    }

    /// The data plane stopped reading an attachment's TUN after an error.
    pub(crate) fn attachment_failed(&mut self, slot: usize, gen: u64, e: &std::io::Error) {
        if let Some(a) = self.attachments.by_slot(slot, gen) {
            tracing::warn!(identity = %a.saved.identity, netns = %a.saved.netns, error = %e, "attachment's interface failed");
            a.state = State::Broken(e.to_string());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saved_attachments_round_trip_and_bad_files_are_set_aside() {
        let dir = std::env::temp_dir().join(format!("mn-attach-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        assert!(load(&dir).is_empty());
        let s = Saved {
            identity: "web".into(),
            netns: "/run/netns/web".into(),
            ns: (4, 4026532000),
            interface: "metanet0".into(),
            container_id: Some("abc".into()),
            network: None,
            ephemeral: false,
        };
        std::fs::write(
            dir.join(FILE),
            serde_json::to_vec(&vec![s.clone()]).unwrap(),
        )
        .unwrap();
        assert_eq!(load(&dir), vec![s]);
        std::fs::write(dir.join(FILE), b"{not json").unwrap();
        assert!(load(&dir).is_empty());
        assert!(dir.join(format!("{FILE}.bad")).exists());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn interface_names_follow_the_kernel() {
        assert!(valid_interface("metanet0"));
        assert!(valid_interface("eth1.2"));
        assert!(!valid_interface(""));
        assert!(!valid_interface("a-very-long-name0"));
        assert!(!valid_interface("a/b"));
        assert!(!valid_interface("a b"));
    }
}
