//! A local EVM node for tests: foundry's anvil (installed by `contracts/anvil.sh
//! install`) in a namespace, and the registry contract deployed on it with `metanet
//! chain deploy`. Used by the chain tests and by the NAT tests (names of hidden
//! identities).

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::Duration;

use crate::{bin, root_or_skip, spawn_silent, terminate, wait_for, Netns};

/// anvil's JSON-RPC port.
pub const RPC_PORT: u16 = 8545;
/// anvil's first development account: a published key that holds test ether only on
/// development nodes.
pub const DEV_KEY: &str = "ac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80";

/// The anvil binary, as `contracts/anvil.sh path` finds it (`METANET_ANVIL`, the one
/// `contracts/anvil.sh install` put under `contracts/node_modules`, or one on `PATH`).
pub fn anvil_binary() -> Option<PathBuf> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../contracts/anvil.sh");
    let out = Command::new(script).arg("path").output().ok()?;
    let path = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    (out.status.success() && path.is_file()).then_some(path)
}

/// Root and anvil, or a message saying why the test is skipped.
pub fn prerequisites(test: &str) -> Option<PathBuf> {
    if !root_or_skip(test) {
        return None;
    }
    let anvil = anvil_binary();
    if anvil.is_none() {
        eprintln!(
            "SKIP {test}: anvil is not installed (run contracts/anvil.sh install, or set METANET_ANVIL)"
        );
    }
    anvil
}

/// anvil in a namespace, on that host's address, mining a block every second (so that
/// the reveal delay passes without anyone sending transactions). Its state is kept in
/// a file, so a restart continues the same chain. Killed on drop.
#[derive(Debug)]
pub struct Anvil {
    bin: PathBuf,
    ns: String,
    ip: String,
    state: PathBuf,
    child: Option<Child>,
}

impl Anvil {
    pub fn start(bin: PathBuf, ns: &Netns, ip: &str, dir: &Path) -> Anvil {
        let mut a = Anvil {
            bin,
            ns: ns.name.clone(),
            ip: ip.to_owned(),
            state: dir.join("anvil-state.json"),
            child: None,
        };
        a.up();
        a
    }

    pub fn url(&self) -> String {
        format!("http://{}:{RPC_PORT}", self.ip)
    }

    pub fn up(&mut self) {
        assert!(self.child.is_none());
        let port = RPC_PORT.to_string();
        self.child = Some(spawn_silent(
            Command::new("ip")
                .args(["netns", "exec", &self.ns])
                .arg(&self.bin)
                .args(["--host", &self.ip, "--port", &port])
                .args(["--block-time", "1", "--silent", "--state"])
                .arg(&self.state),
        ));
        let listening = wait_for(Duration::from_secs(20), || {
            Command::new("ip")
                .args(["netns", "exec", &self.ns, "ss", "-ltnH"])
                .output()
                .is_ok_and(|o| {
                    String::from_utf8_lossy(&o.stdout).contains(&format!("{}:{RPC_PORT}", self.ip))
                })
        });
        assert!(listening, "anvil did not listen on {}", self.url());
    }

    /// SIGTERM (anvil writes its state file), bounded wait, then SIGKILL.
    pub fn down(&mut self) {
        if let Some(child) = self.child.take() {
            terminate(child, Duration::from_secs(10));
        }
    }
}

impl Drop for Anvil {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Write the development key to `dir/funding.key` (mode 0600) and deploy the registry
/// from `ns` with `metanet chain deploy`; returns the key file and the contract.
pub fn deploy(ns: &Netns, anvil: &Anvil, dir: &Path, extra: &[&str]) -> (PathBuf, String) {
    let key = dir.join("funding.key");
    std::fs::write(&key, format!("{DEV_KEY}\n")).unwrap();
    Command::new("chmod").arg("600").arg(&key).status().unwrap();
    let out = ns
        .cmd(Path::new("timeout"))
        .arg("60")
        .arg(bin("metanet"))
        .args(["chain", "deploy", "--rpc", &anvil.url(), "--key"])
        .arg(&key)
        .args(extra)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "deploy failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let contract = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    (key, contract)
}
