//! The registry against a real EVM node: foundry's anvil from the npm registry
//! (`contracts/anvil.sh install`), started per test on 127.0.0.1 with a free port.
//! Each test deploys the committed contract, submits real transactions, and replays
//! the log with a [`Follower`]. Without anvil the tests print why and pass as skipped.

// Test helpers unwrap what the test itself built.
#![allow(clippy::unwrap_used)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use metanet_chain::claim::{self, Claim, Commitment, RegistryId, Salt};
use metanet_chain::contract;
use metanet_chain::eth;
use metanet_chain::follower::{Config, Follower};
use metanet_chain::registry::Ignored;
use metanet_chain::rpc::Client;
use metanet_chain::tx::FundingKey;
use metanet_chain::{EvmAddress, KeyStatus, Name, Outcome, Params, Resolution};
use metanet_proto::identity::Identity;
use serde_json::json;

/// anvil's first development account: a published test key that holds test ether only
/// on development nodes.
const DEV_KEY: &str = "ac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80";
const MIN_REVEAL_DELAY: u64 = 2;
const COMMIT_LIFETIME: u64 = 100;
const TIMEOUT: Duration = Duration::from_secs(20);

/// The anvil binary: `METANET_ANVIL`, the one `contracts/anvil.sh install` put under
/// `contracts/node_modules`, or one on `PATH`.
fn anvil_binary() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("METANET_ANVIL") {
        return Some(PathBuf::from(p));
    }
    let local = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../contracts/node_modules/@foundry-rs/anvil-linux-amd64/bin/anvil");
    if local.is_file() {
        return Some(local);
    }
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join("anvil"))
            .find(|p| p.is_file())
    })
}

/// One anvil process on 127.0.0.1, stopped on drop.
struct Anvil {
    bin: PathBuf,
    port: u16,
    state: PathBuf,
    child: Option<Child>,
    _dir: TempDir,
}

impl Anvil {
    /// Start anvil, or `None` (with a message) when it is not installed.
    fn start(test: &str) -> Option<Anvil> {
        let Some(bin) = anvil_binary() else {
            eprintln!(
                "skipping {test}: anvil is not installed (run contracts/anvil.sh install, or set METANET_ANVIL)"
            );
            return None;
        };
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let dir = TempDir::new(test);
        let mut a = Anvil {
            bin,
            port,
            state: dir.0.join("anvil-state.json"),
            child: None,
            _dir: dir,
        };
        a.up();
        Some(a)
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Start the process (again) with the state file, and wait until it answers.
    fn up(&mut self) {
        assert!(self.child.is_none());
        let child = Command::new(&self.bin)
            .args(["--host", "127.0.0.1", "--port", &self.port.to_string()])
            .args(["--silent", "--state"])
            .arg(&self.state)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        self.child = Some(child);
        let client = Client::with_timeout(&self.url(), Duration::from_secs(1)).unwrap();
        let start = Instant::now();
        while eth::chain_id(&client).is_err() {
            assert!(
                start.elapsed() < TIMEOUT,
                "anvil did not answer on {}",
                self.url()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stop the process gracefully (SIGTERM, so that it writes its state file).
    fn down(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let start = Instant::now();
        while child.try_wait().unwrap().is_none() {
            if start.elapsed() > TIMEOUT {
                let _ = child.kill();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Mine `n` empty blocks (anvil_mine).
    fn mine(&self, n: u64) {
        let c = Client::new(&self.url()).unwrap();
        c.call("anvil_mine", json!([format!("{n:#x}")])).unwrap();
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

/// A directory removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(test: &str) -> Self {
        let p = std::env::temp_dir().join(format!("metanet-chain-{test}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A deployed registry and what is needed to talk to it.
struct Net {
    anvil: Anvil,
    client: Client,
    key: FundingKey,
    params: Params,
}

impl Net {
    fn start(test: &str) -> Option<Net> {
        let anvil = Anvil::start(test)?;
        let client = Client::new(&anvil.url()).unwrap();
        let key = FundingKey::from_text(DEV_KEY).unwrap();
        let address =
            contract::deploy(&client, &key, MIN_REVEAL_DELAY, COMMIT_LIFETIME, TIMEOUT).unwrap();
        let params = contract::read_params(&client, &address).unwrap();
        Some(Net {
            anvil,
            client,
            key,
            params,
        })
    }

    fn registry(&self) -> RegistryId {
        self.params.registry
    }

    /// Sign and submit; returns the block the claim landed in.
    fn submit(&self, who: &Identity, claim: &Claim) -> u64 {
        self.submit_bytes(&claim::seal(who, &self.registry(), claim).unwrap())
    }

    fn submit_bytes(&self, bytes: &[u8]) -> u64 {
        contract::submit(
            &self.client,
            &self.key,
            &self.registry().contract,
            bytes,
            TIMEOUT,
        )
        .unwrap()
        .block_number
    }

    fn commit(&self, who: &Identity, name: &str, salt: &Salt) -> u64 {
        let commitment = Commitment::new(&Name::parse(name).unwrap(), &who.address(), salt);
        self.submit(who, &Claim::Commit { commitment })
    }

    fn reveal(&self, who: &Identity, name: &str, salt: &Salt) -> u64 {
        let name = Name::parse(name).unwrap();
        self.submit(
            who,
            &Claim::Reveal {
                name,
                salt: salt.clone(),
            },
        )
    }

    /// The whole commit–reveal flow for one name.
    fn register(&self, who: &Identity, name: &str) {
        let salt = Salt([name.len() as u8; 32]);
        self.commit(who, name, &salt);
        self.anvil.mine(MIN_REVEAL_DELAY);
        self.reveal(who, name, &salt);
    }

    fn follower(&self) -> Follower {
        Follower::new(
            Client::new(&self.anvil.url()).unwrap(),
            self.registry().contract,
            Config::default(),
        )
    }
}

fn id(seed: u8) -> Identity {
    Identity::generate(&[seed; 64])
}

fn resolve(f: &Follower, name: &str) -> Resolution {
    f.registry().unwrap().resolve(&Name::parse(name).unwrap())
}

#[test]
fn registered_name_resolves_to_its_owner() {
    let Some(net) = Net::start("register") else {
        return;
    };
    assert_eq!(net.params.min_reveal_delay, MIN_REVEAL_DELAY);
    assert_eq!(net.params.commit_lifetime, COMMIT_LIFETIME);
    let alice = id(1);
    net.register(&alice, "Alice");
    let mut f = net.follower();
    let p = f.poll().unwrap();
    assert_eq!(p.applied, 2);
    assert!(!f.status().is_stale());
    assert_eq!(resolve(&f, "alice"), Resolution::Owner(alice.address()));
    assert_eq!(resolve(&f, "ALICE"), Resolution::Owner(alice.address()));
    assert_eq!(resolve(&f, "bob"), Resolution::Unregistered);
    // The contract's counter agrees with the replayed log.
    let count = contract::count(&net.client, &net.registry().contract, eth::Block::Latest).unwrap();
    assert_eq!(count, 2);
    // A second round with nothing new applies nothing.
    assert_eq!(f.poll().unwrap().applied, 0);
}

#[test]
fn commit_reveal_race_goes_to_the_committed_claimant() {
    let Some(net) = Net::start("race") else {
        return;
    };
    let alice = id(1);
    let mallory = id(2);
    let alice_salt = Salt([1; 32]);
    let mallory_salt = Salt([2; 32]);
    net.commit(&alice, "alice", &alice_salt);
    net.anvil.mine(MIN_REVEAL_DELAY);
    // Mallory saw Alice's reveal in the mempool and gets a commit and a reveal mined
    // ahead of it; her commit is too recent, so her reveal is ignored.
    net.commit(&mallory, "alice", &mallory_salt);
    let reveal = |who: &Identity, salt: &Salt| {
        let c = Claim::Reveal {
            name: Name::parse("alice").unwrap(),
            salt: salt.clone(),
        };
        let bytes = claim::seal(who, &net.registry(), &c).unwrap();
        net.submit_bytes(&bytes);
        bytes
    };
    let early = reveal(&mallory, &mallory_salt);
    // Replaying Alice's salt under Mallory's key matches no commitment either.
    let stolen = reveal(&mallory, &alice_salt);
    let winner = reveal(&alice, &alice_salt);
    // Mallory's commit matures, but the name is taken.
    net.anvil.mine(MIN_REVEAL_DELAY);
    let late = reveal(&mallory, &mallory_salt);
    let mut f = net.follower();
    f.poll().unwrap();
    assert_eq!(resolve(&f, "alice"), Resolution::Owner(alice.address()));
    let why = |bytes: &[u8]| -> Vec<Ignored> {
        f.outcomes(bytes)
            .into_iter()
            .map(|(_, o)| match o {
                Outcome::Ignored(why) => why.clone(),
                Outcome::Applied(e) => panic!("applied: {e:?}"),
            })
            .collect()
    };
    // `late` is the same claim as `early`, submitted again.
    assert_eq!(late, early);
    assert!(matches!(
        why(&early)[..],
        [
            Ignored::RevealTooEarly { blocks: 1, .. },
            Ignored::NameTaken
        ]
    ));
    assert_eq!(why(&stolen), [Ignored::NoCommit]);
    assert!(matches!(
        f.outcomes(&winner)[..],
        [(_, Outcome::Applied(_))]
    ));
    assert_eq!(
        f.registry().unwrap().names_of(&mallory.address()).count(),
        0
    );
}

#[test]
fn transfer_moves_a_name_and_only_the_owner_can() {
    let Some(net) = Net::start("transfer") else {
        return;
    };
    let alice = id(1);
    let bob = id(2);
    let carol = id(3);
    net.register(&alice, "alice");
    let transfer = |who: &Identity, seq, to: &Identity| {
        net.submit(
            who,
            &Claim::Transfer {
                name: Name::parse("alice").unwrap(),
                seq,
                new_owner: to.address(),
            },
        )
    };
    // Carol does not own it: ignored.
    transfer(&carol, 0, &carol);
    let mut f = net.follower();
    f.poll().unwrap();
    assert_eq!(resolve(&f, "alice"), Resolution::Owner(alice.address()));
    transfer(&alice, 0, &bob);
    f.poll().unwrap();
    assert_eq!(resolve(&f, "alice"), Resolution::Owner(bob.address()));
    // Alice's old claim replayed by anyone is stale.
    transfer(&alice, 0, &carol);
    f.poll().unwrap();
    let r = f.registry().unwrap();
    assert_eq!(
        r.resolve(&Name::parse("alice").unwrap()),
        Resolution::Owner(bob.address())
    );
    assert_eq!(r.name(&Name::parse("alice").unwrap()).unwrap().seq, 1);
}

#[test]
fn sub_name_is_refused_to_a_non_owner_of_the_parent() {
    let Some(net) = Net::start("subname") else {
        return;
    };
    let game = id(1);
    let sony = id(2);
    net.register(&game, "game");
    net.register(&sony, "sony.game");
    let mut f = net.follower();
    f.poll().unwrap();
    assert_eq!(resolve(&f, "game"), Resolution::Owner(game.address()));
    assert_eq!(resolve(&f, "sony.game"), Resolution::Unregistered);
    // The owner of `game` creates it and hands it over.
    net.register(&game, "sony.game");
    net.submit(
        &game,
        &Claim::Transfer {
            name: Name::parse("sony.game").unwrap(),
            seq: 0,
            new_owner: sony.address(),
        },
    );
    f.poll().unwrap();
    assert_eq!(resolve(&f, "sony.game"), Resolution::Owner(sony.address()));
}

#[test]
fn revoked_key_is_reported_and_its_names_refused() {
    let Some(net) = Net::start("revoke") else {
        return;
    };
    let alice = id(1);
    let next = id(4);
    let bob = id(2);
    net.register(&alice, "alice");
    net.register(&bob, "bob");
    // Alice hands her address over to a new key, then Bob revokes his.
    let rotation = Claim::rotation(&next, &net.registry(), &alice.public_key()).unwrap();
    net.submit(&alice, &rotation);
    let revoked_in = net.submit(&bob, &Claim::Revocation);
    let mut f = net.follower();
    f.poll().unwrap();
    let r = f.registry().unwrap();
    assert_eq!(
        r.key_status(&bob.address()),
        KeyStatus::Revoked { block: revoked_in }
    );
    assert_eq!(
        resolve(&f, "bob"),
        Resolution::Revoked {
            owner: bob.address(),
            block: revoked_in
        }
    );
    assert!(matches!(
        r.key_status(&alice.address()),
        KeyStatus::Rotated { to, .. } if to == next.address()
    ));
    assert_eq!(resolve(&f, "alice"), Resolution::Owner(next.address()));
    assert_eq!(r.key_status(&next.address()), KeyStatus::Active);
}

#[test]
fn rpc_node_down_then_back_reports_stale_and_resumes() {
    let Some(mut net) = Net::start("down") else {
        return;
    };
    let alice = id(1);
    let bob = id(2);
    net.register(&alice, "alice");
    let mut f = net.follower();
    f.poll().unwrap();
    let cache = net.anvil._dir.0.join("chain-cache");
    f.save(&cache).unwrap();

    net.anvil.down();
    assert!(f.poll().is_err());
    let status = f.status().clone();
    assert!(status.is_stale());
    assert!(status
        .last_error
        .as_deref()
        .unwrap()
        .contains("unreachable"));
    assert!(status.stale_since.is_some());
    // Stale data is still served.
    assert_eq!(resolve(&f, "alice"), Resolution::Owner(alice.address()));
    // A restart while the node is down answers from the cache, marked stale.
    let (cached, used) = Follower::with_cache(
        Client::new(&net.anvil.url()).unwrap(),
        net.registry().contract,
        Config::default(),
        &cache,
    );
    assert!(used);
    assert!(cached.status().is_stale());
    assert_eq!(
        resolve(&cached, "alice"),
        Resolution::Owner(alice.address())
    );

    net.anvil.up();
    net.register(&bob, "bob");
    // The first call may meet a connection the old process closed; the next round
    // must succeed.
    let start = Instant::now();
    let progress = loop {
        match f.poll() {
            Ok(p) => break p,
            Err(e) => assert!(start.elapsed() < TIMEOUT, "follower did not resume: {e}"),
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(!progress.replayed);
    assert_eq!(progress.applied, 2);
    assert!(!f.status().is_stale());
    assert_eq!(f.status().last_error, None);
    assert_eq!(resolve(&f, "bob"), Resolution::Owner(bob.address()));
    assert_eq!(resolve(&f, "alice"), Resolution::Owner(alice.address()));
}

#[test]
fn foreign_contract_is_refused() {
    let Some(net) = Net::start("foreign") else {
        return;
    };
    // The funding account is not a contract at all.
    let err = contract::read_params(&net.client, &net.key.address()).unwrap_err();
    assert!(matches!(err, contract::Error::NotARegistry(_)), "{err}");
    let nobody: EvmAddress = "0x000000000000000000000000000000000000dead"
        .parse()
        .unwrap();
    let mut f = Follower::new(
        Client::new(&net.anvil.url()).unwrap(),
        nobody,
        Config::default(),
    );
    assert!(f.poll().is_err());
    assert!(f.registry().is_none());
    assert!(f.status().is_stale());
}

#[test]
fn reorganization_replays_the_log() {
    let Some(net) = Net::start("reorg") else {
        return;
    };
    let alice = id(1);
    let bob = id(2);
    let rpc = Client::new(&net.anvil.url()).unwrap();
    let snapshot = rpc.call("evm_snapshot", json!([])).unwrap();
    net.register(&alice, "alice");
    let mut f = net.follower();
    f.poll().unwrap();
    assert_eq!(resolve(&f, "alice"), Resolution::Owner(alice.address()));
    // The chain drops Alice's claims and grows a different branch past her blocks.
    assert_eq!(
        rpc.call("evm_revert", json!([snapshot])).unwrap(),
        json!(true)
    );
    net.register(&bob, "bob");
    net.anvil.mine(5);
    let p = f.poll().unwrap();
    assert!(p.replayed);
    assert_eq!(resolve(&f, "alice"), Resolution::Unregistered);
    assert_eq!(resolve(&f, "bob"), Resolution::Owner(bob.address()));
}

#[test]
fn broken_or_foreign_cache_is_ignored() {
    let Some(net) = Net::start("cache") else {
        return;
    };
    let alice = id(1);
    net.register(&alice, "alice");
    let mut f = net.follower();
    f.poll().unwrap();
    let dir = &net.anvil._dir.0;
    let path = dir.join("cache");
    f.save(&path).unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.starts_with("metanet-chain-cache 1\n"));
    let open = |path: &Path, contract| {
        Follower::with_cache(
            Client::new(&net.anvil.url()).unwrap(),
            contract,
            Config::default(),
            path,
        )
    };
    let (mut g, used) = open(&path, net.registry().contract);
    assert!(used);
    assert_eq!(resolve(&g, "alice"), Resolution::Owner(alice.address()));
    assert_eq!(g.poll().unwrap().applied, 0);
    // Another contract's cache, a truncated entry, a tampered claim: all discarded.
    let other: EvmAddress = "0x000000000000000000000000000000000000beef"
        .parse()
        .unwrap();
    assert!(!open(&path, other).1);
    let bad = dir.join("bad");
    std::fs::write(&bad, &text[..text.len() - 5]).unwrap();
    assert!(!open(&bad, net.registry().contract).1);
    std::fs::write(&bad, text.replace("entry 1 ", "entry 2 ")).unwrap();
    assert!(!open(&bad, net.registry().contract).1);
    assert!(!open(&dir.join("missing"), net.registry().contract).1);
}
