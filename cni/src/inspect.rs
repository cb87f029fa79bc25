//! What `CHECK` looks at inside the container's namespace: the interface, its IPv6
//! address and the overlay route, read from `/proc/thread-self/net` by a thread that
//! entered the namespace (no netlink needed to read).
//!
//! `dev` lists the interfaces; `if_inet6` lines are `ADDR-HEX IFINDEX PREFIXLEN SCOPE
//! FLAGS IFNAME`; `ipv6_route` lines are `DST-HEX DST-LEN SRC-HEX SRC-LEN NEXT-HOP METRIC
//! REFCNT USE FLAGS IFNAME`, numbers in hex.

use std::net::Ipv6Addr;

const PROC_NET: &str = "/proc/thread-self/net";

/// The overlay prefix the route must cover: `fd00::/8`.
const OVERLAY: (Ipv6Addr, u8) = (Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 0), 8);

/// One line of `if_inet6`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Address {
    pub(crate) ip: Ipv6Addr,
    pub(crate) prefix: u8,
    pub(crate) ifname: String,
}

/// One line of `ipv6_route`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Route {
    pub(crate) dst: Ipv6Addr,
    pub(crate) prefix: u8,
    pub(crate) ifname: String,
}

fn hex_ip(s: &str) -> Option<Ipv6Addr> {
    (s.len() == 32)
        .then(|| u128::from_str_radix(s, 16).ok())
        .flatten()
        .map(Ipv6Addr::from)
}

fn hex_u8(s: &str) -> Option<u8> {
    u8::from_str_radix(s, 16).ok()
}

/// The interface names of `/proc/net/dev` (two header lines, then `NAME: counters`).
pub(crate) fn parse_dev(text: &str) -> Vec<String> {
    text.lines()
        .skip(2)
        .filter_map(|l| l.split_once(':'))
        .map(|(name, _)| name.trim().to_owned())
        .collect()
}

/// The lines of `if_inet6` that parse; others are skipped.
pub(crate) fn parse_if_inet6(text: &str) -> Vec<Address> {
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            match f.as_slice() {
                [addr, _index, prefix, _scope, _flags, ifname] => Some(Address {
                    ip: hex_ip(addr)?,
                    prefix: hex_u8(prefix)?,
                    ifname: (*ifname).to_owned(),
                }),
                _ => None,
            }
        })
        .collect()
}

/// The lines of `ipv6_route` that parse; others are skipped.
pub(crate) fn parse_ipv6_route(text: &str) -> Vec<Route> {
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            match f.as_slice() {
                [dst, prefix, _src, _src_len, _hop, _metric, _refcnt, _use, _flags, ifname] => {
                    Some(Route {
                        dst: hex_ip(dst)?,
                        prefix: hex_u8(prefix)?,
                        ifname: (*ifname).to_owned(),
                    })
                }
                _ => None,
            }
        })
        .collect()
}

/// Judge the namespace from the three files' text: `ifname` exists, holds `ipv6/128`
/// and carries the `fd00::/8` route. The error says what is missing.
pub(crate) fn judge(
    dev: &str,
    if_inet6: &str,
    ipv6_route: &str,
    ifname: &str,
    ipv6: Ipv6Addr,
) -> Result<(), String> {
    if !parse_dev(dev).iter().any(|n| n == ifname) {
        return Err(format!("no interface {ifname} in the namespace"));
    }
    if !parse_if_inet6(if_inet6)
        .iter()
        .any(|a| a.ifname == ifname && a.ip == ipv6 && a.prefix == 128)
    {
        return Err(format!("{ifname} does not hold {ipv6}/128"));
    }
    if !parse_ipv6_route(ipv6_route)
        .iter()
        .any(|r| r.ifname == ifname && (r.dst, r.prefix) == OVERLAY)
    {
        return Err(format!("no route to fd00::/8 through {ifname}"));
    }
    Ok(())
}

/// [`judge`] this thread's namespace.
pub(crate) fn check_here(ifname: &str, ipv6: Ipv6Addr) -> Result<(), String> {
    let read = |file: &str| {
        let path = format!("{PROC_NET}/{file}");
        std::fs::read_to_string(&path).map_err(|e| format!("cannot read {path}: {e}"))
    };
    judge(
        &read("dev")?,
        &read("if_inet6")?,
        &read("ipv6_route")?,
        ifname,
        ipv6,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEV: &str = "\
Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed
    lo:       0       0    0    0    0     0          0         0        0       0    0    0    0     0       0          0
metanet0:    1200      10    0    0    0     0          0         0     1400      12    0    0    0     0       0          0
  eth0:       0       0    0    0    0     0          0         0        0       0    0    0    0     0       0          0
";

    const IF_INET6: &str = "\
00000000000000000000000000000001 01 80 10 80       lo
fd123456000000000000000000000001 05 80 00 80 metanet0
fe80000000000000a8bbccfffedd0003 03 40 20 80     eth0
";

    const ROUTES: &str = "\
fd000000000000000000000000000000 08 00000000000000000000000000000000 00 00000000000000000000000000000000 00000400 00000001 00000000 00000001 metanet0
fd123456000000000000000000000001 80 00000000000000000000000000000000 00 00000000000000000000000000000000 00000000 00000002 00000000 80200001 metanet0
fe800000000000000000000000000000 40 00000000000000000000000000000000 00 00000000000000000000000000000000 00000100 00000001 00000000 00000001     eth0
";

    fn ip() -> Ipv6Addr {
        "fd12:3456::1".parse().unwrap()
    }

    #[test]
    fn parses_proc_files() {
        assert_eq!(parse_dev(DEV), ["lo", "metanet0", "eth0"]);
        let addrs = parse_if_inet6(IF_INET6);
        assert_eq!(addrs.len(), 3);
        assert_eq!(
            addrs[1],
            Address {
                ip: ip(),
                prefix: 128,
                ifname: "metanet0".into()
            }
        );
        assert_eq!(addrs[2].prefix, 64);
        let routes = parse_ipv6_route(ROUTES);
        assert_eq!(routes.len(), 3);
        assert_eq!(
            routes[0],
            Route {
                dst: "fd00::".parse().unwrap(),
                prefix: 8,
                ifname: "metanet0".into()
            }
        );
        assert!(parse_if_inet6("garbage\nzz 01 80 00 80 x\n").is_empty());
    }

    #[test]
    fn judges_what_is_missing() {
        assert_eq!(judge(DEV, IF_INET6, ROUTES, "metanet0", ip()), Ok(()));
        let err = judge(DEV, IF_INET6, ROUTES, "metanet1", ip()).unwrap_err();
        assert!(err.contains("no interface metanet1"), "{err}");
        let err = judge(
            DEV,
            IF_INET6,
            ROUTES,
            "metanet0",
            "fd12:3456::2".parse().unwrap(),
        )
        .unwrap_err();
        assert!(err.contains("does not hold fd12:3456::2/128"), "{err}");
        let err = judge(DEV, IF_INET6, "", "metanet0", ip()).unwrap_err();
        assert!(err.contains("no route to fd00::/8"), "{err}");
        // The route through another interface does not count.
        let elsewhere = ROUTES.replacen("00000001 metanet0", "00000001     eth0", 1);
        assert!(judge(DEV, IF_INET6, &elsewhere, "metanet0", ip()).is_err());
    }

    #[test]
    fn reads_this_threads_namespace() {
        // Loopback exists in every namespace; it holds ::1, not our address.
        let err = check_here("lo", ip()).unwrap_err();
        assert!(
            err.contains("does not hold") || err.contains("cannot read"),
            "{err}"
        );
    }
}
