//! Routes through gateways (IPv6 so far): which gateway a local identity sends a
//! non-overlay destination to, what a gateway identity forwards for its clients, and
//! the inner address checks both sides apply to what they decrypt.

use crate::address::Address;
use crate::record::IpPrefix;
use std::net::{IpAddr, Ipv6Addr};

/// Most routes one identity chooses.
pub const MAX_CHOSEN_ROUTES: usize = 64;

/// A route a local identity chooses: `prefix` through the gateway `gateway`, which
/// advertised `advertised` (and `exit`) in its verified record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Route {
    /// The destinations that go to the gateway.
    pub prefix: IpPrefix,
    /// The gateway's address.
    pub gateway: Address,
    /// The prefixes the gateway's record lists.
    pub advertised: Vec<IpPrefix>,
    /// Whether the gateway's record says it is an exit.
    pub exit: bool,
}

/// Why routes were refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    #[error("the gateway does not advertise this prefix (and is no exit)")]
    NotAdvertised,
    #[error("too many routes")]
    TooMany,
    #[error("routes inside the overlay (fd00::/8) go to peers, not gateways")]
    Overlay,
}

/// Whether `outer` covers all of `inner`.
fn covers(outer: &IpPrefix, inner: &IpPrefix) -> bool {
    outer.bits() <= inner.bits() && outer.contains(inner.addr())
}

fn is_overlay(ip: &Ipv6Addr) -> bool {
    ip.octets()[0] == crate::address::OVERLAY_FIRST_BYTE
}

/// What one local identity routes and serves.
#[derive(Debug, Default, Clone)]
pub(super) struct Routing {
    /// Client side: chosen routes, most specific first.
    via: Vec<(IpPrefix, Address)>,
    /// Gateway side: what it forwards to.
    served: Vec<IpPrefix>,
    exit: bool,
}

impl Routing {
    /// Replace the chosen routes, refusing any its gateway did not advertise.
    pub(super) fn set_routes(&mut self, routes: Vec<Route>) -> Result<(), RouteError> {
        if routes.len() > MAX_CHOSEN_ROUTES {
            return Err(RouteError::TooMany);
        }
        let mut via = Vec::with_capacity(routes.len());
        for r in routes {
            if let IpAddr::V6(a) = r.prefix.addr() {
                if r.prefix.bits() >= 8 && is_overlay(&a) {
                    return Err(RouteError::Overlay);
                }
            }
            if !r.exit && !r.advertised.iter().any(|a| covers(a, &r.prefix)) {
                return Err(RouteError::NotAdvertised);
            }
            via.push((r.prefix, r.gateway));
        }
        via.sort_by_key(|r| core::cmp::Reverse(r.0.bits()));
        self.via = via;
        Ok(())
    }

    /// Replace what this identity serves as a gateway.
    pub(super) fn set_served(&mut self, served: Vec<IpPrefix>, exit: bool) {
        self.served = served;
        self.exit = exit;
    }

    /// The gateway a non-overlay destination goes to (longest prefix).
    pub(super) fn gateway_for(&self, dst: &Ipv6Addr) -> Option<Address> {
        self.via
            .iter()
            .find(|(p, _)| p.contains(IpAddr::V6(*dst)))
            .map(|(_, g)| *g)
    }

    /// Whether this identity forwards to `dst` for its clients.
    pub(super) fn serves(&self, dst: &Ipv6Addr) -> bool {
        !is_overlay(dst) && (self.exit || self.served.iter().any(|p| p.contains(IpAddr::V6(*dst))))
    }

    /// Whether this identity is a gateway at all.
    pub(super) fn is_gateway(&self) -> bool {
        self.exit || !self.served.is_empty()
    }

    /// Whether a decrypted packet from peer `peer` (overlay `peer_ip`) to this identity
    /// (overlay `own`) with inner `src`, `dst` passes the routing checks: a reply from
    /// beyond a gateway only from the gateway this identity chose for `src`, and a
    /// client's packet to beyond this gateway only to what it serves.
    pub(super) fn inbound_ok(
        &self,
        peer: &Address,
        peer_ip: &Ipv6Addr,
        own: &Ipv6Addr,
        src: &Ipv6Addr,
        dst: &Ipv6Addr,
    ) -> bool {
        if src == peer_ip && dst == own {
            return true;
        }
        if dst == own && !is_overlay(src) {
            return self.gateway_for(src) == Some(*peer);
        }
        src == peer_ip && self.serves(dst)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn p(s: &str) -> IpPrefix {
        s.parse().unwrap()
    }

    #[test]
    fn routes_need_an_advertisement_and_the_longest_prefix_wins() {
        let g1 = Address::from_bytes([1; 20]);
        let g2 = Address::from_bytes([2; 20]);
        let mut r = Routing::default();
        let route = |prefix: &str, gateway, advertised: &[&str], exit| Route {
            prefix: p(prefix),
            gateway,
            advertised: advertised.iter().map(|a| p(a)).collect(),
            exit,
        };
        assert_eq!(
            r.set_routes(vec![route(
                "2001:db8:60::/48",
                g1,
                &["2001:db8:50::/48"],
                false
            )]),
            Err(RouteError::NotAdvertised)
        );
        assert_eq!(
            r.set_routes(vec![route("fd00::/8", g1, &[], true)]),
            Err(RouteError::Overlay)
        );
        r.set_routes(vec![
            route("::/0", g2, &[], true),
            route("2001:db8:50::/48", g1, &["2001:db8::/32"], false),
        ])
        .unwrap();
        assert_eq!(r.gateway_for(&"2001:db8:50::10".parse().unwrap()), Some(g1));
        assert_eq!(r.gateway_for(&"2001:db8:60::10".parse().unwrap()), Some(g2));
        let own: Ipv6Addr = "fd11::1".parse().unwrap();
        let g1_ip: Ipv6Addr = "fd01::1".parse().unwrap();
        // A reply from beyond g1 passes from g1 only.
        let lan: Ipv6Addr = "2001:db8:50::10".parse().unwrap();
        assert!(r.inbound_ok(&g1, &g1_ip, &own, &lan, &own));
        assert!(!r.inbound_ok(&g2, &g1_ip, &own, &lan, &own));
        // A client identity forwards nothing.
        assert!(!r.inbound_ok(&g1, &g1_ip, &own, &g1_ip, &lan));
        // A gateway forwards what it serves, never to the overlay.
        let mut gw = Routing::default();
        gw.set_served(vec![p("2001:db8:50::/48")], false);
        assert!(gw.inbound_ok(&g1, &g1_ip, &own, &g1_ip, &lan));
        assert!(!gw.inbound_ok(
            &g1,
            &g1_ip,
            &own,
            &g1_ip,
            &"2001:db8:60::1".parse().unwrap()
        ));
        assert!(!gw.inbound_ok(&g1, &g1_ip, &own, &g1_ip, &"fd22::1".parse().unwrap()));
        gw.set_served(vec![], true);
        assert!(gw.inbound_ok(
            &g1,
            &g1_ip,
            &own,
            &g1_ip,
            &"2001:db8:60::1".parse().unwrap()
        ));
        assert!(!gw.inbound_ok(&g1, &g1_ip, &own, &g1_ip, &"fd22::1".parse().unwrap()));
    }
}
