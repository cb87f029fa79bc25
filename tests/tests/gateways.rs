//! Gateways advertise the prefixes they serve in their signed records
//! (docs/protocol.md §4.2): a daemon configured with `routes` and `exit` publishes them,
//! and another daemon resolving it through the DHT sees them. Skipped when not root.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use metanet_tests::{resolve, root_or_skip, wait_for, DhtNet};

#[test]
fn a_gateway_record_carries_its_routes_and_exit_flag() {
    if !root_or_skip("a_gateway_record_carries_its_routes_and_exit_flag") {
        return;
    }
    let net = DhtNet::start(2, |i| {
        if i == 0 {
            "[[identity]]\nname = \"default\"\nroutes = [\"198.18.50.0/24\", \"2001:db8:50::/48\", \"::/0\"]\nexit = true\n".into()
        } else {
            String::new()
        }
    });
    let (gateway, _) = net.addr(0);
    let mut seen = serde_json::Value::Null;
    let ok = wait_for(Duration::from_secs(20), || {
        seen = resolve(&net.daemons[1], &gateway).unwrap_or_default();
        seen["routes"].as_array().is_some_and(|r| r.len() == 3)
    });
    assert!(ok, "no routes in the resolved record: {seen}");
    assert_eq!(seen["routes"][0], "198.18.50.0/24");
    assert_eq!(seen["routes"][2], "::/0");
    assert_eq!(seen["exit"], true);
    // A client's own record carries none.
    let (client, _) = net.addr(1);
    let own = resolve(&net.daemons[0], &client);
    assert!(
        own.as_ref()
            .is_none_or(|r| r.get("routes").is_none() && r.get("exit").is_none()),
        "{own:?}"
    );
}
