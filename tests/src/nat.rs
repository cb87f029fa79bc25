//! NAT routers in network namespaces: an "internet" (a bridge in its own namespace,
//! 198.18.0.0/24), public hosts on it, and routers with nftables masquerade in front of
//! private LANs (198.19.N.0/24). Routers drop unsolicited input, as real ones do;
//! endpoint-dependent mapping is `masquerade random`; address-dependent filtering is a
//! DNAT of the daemon's port plus a set of contacted peers. Everything lives in
//! namespaces the test created and goes with them on drop.

use std::process::Command;

use crate::{run, tag, veth, Netns};

/// How a router maps and filters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Nat {
    /// Endpoint-independent mapping, address-and-port-dependent filtering (Linux's
    /// plain masquerade: "easy").
    Easy,
    /// Endpoint-independent mapping, address-dependent filtering for `port`.
    AddressFiltering { port: u16 },
    /// Endpoint-dependent mapping (`masquerade random`: "hard", symmetric).
    Hard,
}

/// One router: its namespace, WAN address and LAN prefix (`198.19.N`).
#[derive(Debug)]
pub struct Router {
    pub ns: Netns,
    pub wan: String,
    pub lan: String,
    hosts: u32,
}

/// The internet bridge, its public hosts and the routers on it.
#[derive(Debug)]
pub struct Internet {
    pub tag: String,
    /// Hosts and routers, in creation order (dropped before the bridge).
    pub routers: Vec<Router>,
    pub hosts: Vec<Netns>,
    next: u32,
    links: u32,
    /// Declared last: dropped after everything attached to it.
    pub bridge: Netns,
}

impl Internet {
    pub fn new() -> Self {
        let t = tag();
        let bridge = Netns::new(format!("mnat-{t}-inet"));
        bridge.sh("ip link add br0 type bridge && ip link set br0 up");
        Internet {
            tag: t,
            routers: Vec::new(),
            hosts: Vec::new(),
            next: 1,
            links: 0,
            bridge,
        }
    }

    /// A veth from `ns` (named `dev` there) to the bridge.
    fn attach(&mut self, ns: &Netns, dev: &str) {
        self.links += 1;
        let port = format!("mn{}p{}", self.tag, self.links);
        veth(dev, &ns.name, &port, &self.bridge.name);
        self.bridge.sh(&format!(
            "ip link set {port} master br0 && ip link set {port} up"
        ));
    }

    /// A host on the internet itself; returns its index in `hosts` and its address.
    pub fn public_host(&mut self) -> (usize, String) {
        let ns = Netns::new(format!("mnat-{}-p{}", self.tag, self.hosts.len()));
        self.attach(&ns, "eth0");
        let ip = format!("198.18.0.{}", self.next);
        self.next += 1;
        ns.sh(&format!(
            "ip addr add {ip}/24 dev eth0 && ip link set eth0 up"
        ));
        self.hosts.push(ns);
        (self.hosts.len() - 1, ip)
    }

    /// A router of kind `nat` with its WAN on the internet; returns its index.
    pub fn router(&mut self, nat: Nat) -> usize {
        let i = self.routers.len();
        let ns = Netns::new(format!("mnat-{}-r{i}", self.tag));
        self.attach(&ns, "wan");
        let wan = format!("198.18.0.{}", 100 + i);
        let lan = format!("198.19.{}", i + 1);
        ns.sh(&format!(
            "ip addr add {wan}/24 dev wan && ip link set wan up && \
             ip link add lanbr type bridge && ip link set lanbr up && \
             ip addr add {lan}.1/24 dev lanbr && \
             sysctl -qw net.ipv4.ip_forward=1"
        ));
        let masquerade = match nat {
            Nat::Hard => "masquerade random",
            _ => "masquerade",
        };
        let (pre, fwd_dnat, seen_set, seen_rules) = match nat {
            Nat::AddressFiltering { port } => (
                format!("iifname \"wan\" udp dport {port} dnat to {lan}.2:{port}\n"),
                "iifname \"wan\" ip daddr . udp dport . ip saddr @seen accept\n".to_owned(),
                "set seen { type ipv4_addr . inet_service . ipv4_addr; flags dynamic,timeout; timeout 120s; }\n"
                    .to_owned(),
                "iifname \"lanbr\" oifname \"wan\" meta l4proto udp update @seen { ip saddr . udp sport . ip daddr }\n"
                    .to_owned(),
            ),
            _ => (String::new(), String::new(), String::new(), String::new()),
        };
        let rules = format!(
            "table ip mnat {{\n\
               chain pre {{ type nat hook prerouting priority dstnat; policy accept;\n{pre}}}\n\
               chain post {{ type nat hook postrouting priority srcnat; policy accept;\n\
                 oifname \"wan\" {masquerade}\n\
               }}\n\
             }}\n\
             table inet mfilter {{\n\
               {seen_set}\
               chain input {{ type filter hook input priority filter; policy drop;\n\
                 ct state established,related accept\n\
                 iifname {{ \"lo\", \"lanbr\" }} accept\n\
               }}\n\
               chain forward {{ type filter hook forward priority filter; policy drop;\n\
                 {seen_rules}\
                 ct state established,related accept\n\
                 {fwd_dnat}\
                 iifname \"lanbr\" oifname \"wan\" accept\n\
                 iifname \"lanbr\" oifname \"lanbr\" accept\n\
               }}\n\
             }}\n"
        );
        let path = std::env::temp_dir().join(format!("mnat-{}-r{i}.nft", self.tag));
        std::fs::write(&path, rules).unwrap();
        let out = ns.sh(&format!("nft -f {}", path.display()));
        let _ = std::fs::remove_file(&path);
        assert!(
            out.status.success(),
            "nft rules for router {i}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        self.routers.push(Router {
            ns,
            wan,
            lan,
            hosts: 0,
        });
        i
    }

    /// A host on router `r`'s LAN; returns the namespace and its address.
    pub fn host_behind(&mut self, r: usize) -> (Netns, String) {
        let router = &mut self.routers[r];
        router.hosts += 1;
        let k = router.hosts;
        let ns = Netns::new(format!("mnat-{}-r{r}h{k}", self.tag));
        let port = format!("mn{}r{r}h{k}", self.tag);
        veth("eth0", &ns.name, &port, &router.ns.name);
        router.ns.sh(&format!(
            "ip link set {port} master lanbr && ip link set {port} up"
        ));
        let ip = format!("{}.{}", router.lan, k + 1);
        ns.sh(&format!(
            "ip addr add {ip}/24 dev eth0 && ip link set eth0 up && ip route add default via {}.1",
            router.lan
        ));
        (ns, ip)
    }

    /// Put router `inner` behind router `outer`: its WAN leaves the internet and joins
    /// `outer`'s LAN (a NAT inside a NAT).
    pub fn nest(&mut self, inner: usize, outer: usize) {
        let (outer_ns, outer_lan) = {
            let o = &mut self.routers[outer];
            o.hosts += 1;
            (o.ns.name.clone(), (o.lan.clone(), o.hosts))
        };
        let r = &self.routers[inner];
        // Replace the WAN link by one into the outer router's LAN bridge.
        r.ns.sh("ip link del wan");
        let port = format!("mn{}n{inner}", self.tag);
        veth("wan", &r.ns.name, &port, &outer_ns);
        run(Command::new("ip").args([
            "-n", &outer_ns, "link", "set", &port, "master", "lanbr", "up",
        ]));
        let (lan, k) = outer_lan;
        let wan = format!("{lan}.{}", k + 1);
        r.ns.sh(&format!(
            "ip addr add {wan}/24 dev wan && ip link set wan up && ip route add default via {lan}.1"
        ));
        self.routers[inner].wan = wan;
    }
}

impl Default for Internet {
    fn default() -> Self {
        Self::new()
    }
}
