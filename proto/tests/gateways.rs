//! Routes through a gateway in the deterministic simulator: a client sends IPv6 beyond
//! the overlay to the gateway it chose, the gateway hands it to its TUN and routes the
//! reply back; a gateway that does not advertise a prefix cannot be chosen for it, a
//! reply from an address outside the chosen route is dropped, and a gateway forwards
//! only what it serves, never between two of its clients.

#![allow(clippy::unwrap_used)]

mod sim;

use std::net::Ipv6Addr;
use std::time::Duration;

use metanet_proto::ip;
use metanet_proto::node::{Command, CommandError, Route, RouteError};
use metanet_proto::record::IpPrefix;
use sim::{LinkConfig, Sim};

const C: &str = "198.18.0.1:51820";
const G: &str = "198.18.0.2:51820";
const D: &str = "198.18.0.3:51820";

fn p(s: &str) -> IpPrefix {
    s.parse().unwrap()
}

fn delivered(sim: &Sim, h: usize) -> Vec<(Ipv6Addr, Ipv6Addr, Vec<u8>)> {
    sim.hosts[h]
        .delivered
        .iter()
        .map(|(_, b)| {
            let v = ip::Ipv6Packet::new_checked(&b[..]).unwrap();
            (v.src(), v.dst(), b[ip::IPV6_HEADER_LEN..].to_vec())
        })
        .collect()
}

#[test]
fn a_client_reaches_beyond_its_gateway_and_gets_the_reply() {
    let mut sim = Sim::new(71, LinkConfig::default());
    let (c, g, d) = (sim.add_host(C), sim.add_host(G), sim.add_host(D));
    let (ip_c, ag, ip_g) = (sim.ip(c), sim.address(g), sim.ip(g));
    let lan: Ipv6Addr = "2001:db8:50::10".parse().unwrap();
    let (now, lc, lg) = (sim.now, sim.local(c), sim.local(g));
    sim.hosts[g]
        .node
        .handle_command(
            now,
            Command::SetGateway {
                local: lg,
                served: vec![p("2001:db8:50::/48")],
                exit: false,
            },
        )
        .unwrap();
    // A route the gateway's record does not advertise is refused, even if asked for.
    let route = |prefix: &str| Route {
        prefix: p(prefix),
        gateway: ag,
        advertised: vec![p("2001:db8:50::/48")],
        exit: false,
    };
    assert_eq!(
        sim.hosts[c].node.handle_command(
            now,
            Command::SetRoutes {
                local: lc,
                routes: vec![route("2001:db8:60::/48")]
            }
        ),
        Err(CommandError::BadRoute(RouteError::NotAdvertised))
    );
    sim.hosts[c]
        .node
        .handle_command(
            now,
            Command::SetRoutes {
                local: lc,
                routes: vec![route("2001:db8:50::/48")],
            },
        )
        .unwrap();

    // Out: the client's packet to the LAN reaches the gateway's TUN as it was sent.
    let out = ip::build_ipv6(ip_c, lan, b"GET /");
    sim.send_raw(c, &out);
    sim.run_for(Duration::from_secs(1));
    assert_eq!(delivered(&sim, g), vec![(ip_c, lan, b"GET /".to_vec())]);
    // Back: the LAN host's reply, written to the gateway's TUN, reaches the client.
    sim.send_raw(g, &ip::build_ipv6(lan, ip_c, b"200 OK"));
    sim.run_for(Duration::from_secs(1));
    assert_eq!(delivered(&sim, c), vec![(lan, ip_c, b"200 OK".to_vec())]);

    // Nowhere to go: a destination no route covers is dropped and counted.
    sim.send_raw(
        c,
        &ip::build_ipv6(ip_c, "2001:db8:60::1".parse().unwrap(), b"x"),
    );
    assert_eq!(sim.hosts[c].node.stats().unrouted, 1);
    // The gateway forwards only what it serves: not 2001:db8:60::/48 (never an overlay
    // address either: `routes.rs` tests that; the client's node sends those straight
    // to their peer).
    sim.send(d, ip_g, b"d is a client of g too");
    sim.run_for(Duration::from_secs(1));
    let spoofed = sim.hosts[g].node.stats().spoofed;
    let before = delivered(&sim, g).len();
    // C now routes everything beyond the overlay to G (as if G were an exit, which it
    // is not): what G does not serve is dropped there.
    sim.hosts[c]
        .node
        .handle_command(
            now,
            Command::SetRoutes {
                local: lc,
                routes: vec![Route {
                    prefix: p("::/0"),
                    gateway: ag,
                    advertised: vec![],
                    exit: true,
                }],
            },
        )
        .unwrap();
    sim.send_raw(
        c,
        &ip::build_ipv6(ip_c, "2001:db8:60::1".parse().unwrap(), b"not served"),
    );
    sim.run_for(Duration::from_secs(1));
    assert_eq!(delivered(&sim, g).len(), before, "nothing more forwarded");
    assert!(sim.hosts[g].node.stats().spoofed > spoofed);

    // A reply from an address outside the route's prefix is dropped by the client.
    let got = delivered(&sim, c).len();
    let spoofed_c = sim.hosts[c].node.stats().spoofed;
    sim.hosts[c]
        .node
        .handle_command(
            now,
            Command::SetRoutes {
                local: lc,
                routes: vec![route("2001:db8:50::/48")],
            },
        )
        .unwrap();
    sim.hosts[g]
        .node
        .handle_command(
            now,
            Command::SetGateway {
                local: lg,
                served: vec![p("2001:db8:50::/48"), p("2001:db8:70::/48")],
                exit: false,
            },
        )
        .unwrap();
    sim.send_raw(
        g,
        &ip::build_ipv6("2001:db8:70::1".parse().unwrap(), ip_c, b"unasked"),
    );
    sim.run_for(Duration::from_secs(1));
    assert_eq!(delivered(&sim, c).len(), got);
    assert!(sim.hosts[c].node.stats().spoofed > spoofed_c);
}
