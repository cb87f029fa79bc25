//! `metanet chain deploy --rpc URL --key FILE`: deploy the `MetanetRegistry` contract
//! (docs/protocol.md §9.1) and print its address.
//!
//! This talks to the JSON-RPC node directly, not to metanetd: a registry is deployed
//! once, before any daemon is pointed at it with `--chain-contract`. The bytecode is
//! the committed artifact compiled into `metanet-chain`; the funding key pays the gas
//! and is read from a file that only its owner may read. The address alone goes to
//! stdout (so `contract=$(metanet chain deploy …)` works); what to do next goes to
//! stderr.

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context as _, Result};
use clap::Subcommand;
use metanet_chain::contract;
use metanet_chain::rpc::Client;
use metanet_chain::tx::FundingKey;
use serde::Serialize;

use super::{write_json, BadInput, Context};

/// How long the deployment may take to be mined.
const DEPLOY_TIMEOUT: Duration = Duration::from_secs(120);

/// Chain subcommands.
#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Deploy a new registry contract and print its address.
    Deploy {
        /// The JSON-RPC node, http://HOST:PORT.
        #[arg(long, value_name = "URL")]
        rpc: String,
        /// File with the funding key (64 hex digits of an EVM account key with ether
        /// for gas, mode 0600).
        #[arg(long, value_name = "FILE")]
        key: PathBuf,
        /// Blocks a name reveal must wait after its commit (front-running protection).
        #[arg(long, value_name = "BLOCKS", default_value_t = contract::DEFAULT_MIN_REVEAL_DELAY,
              value_parser = clap::value_parser!(u64).range(1..))]
        min_reveal_delay: u64,
        /// Blocks during which a commit can be revealed.
        #[arg(long, value_name = "BLOCKS", default_value_t = contract::DEFAULT_COMMIT_LIFETIME)]
        commit_lifetime: u64,
    },
}

/// What `chain deploy --json` prints.
#[derive(Debug, Serialize)]
struct Deployed {
    contract: String,
    chain_id: u64,
    rpc: String,
    min_reveal_delay: u64,
    commit_lifetime: u64,
}

/// Run a chain subcommand.
pub(crate) fn run(ctx: &Context, command: Command, out: &mut dyn Write) -> Result<()> {
    let Command::Deploy {
        rpc,
        key,
        min_reveal_delay,
        commit_lifetime,
    } = command;
    if commit_lifetime <= min_reveal_delay {
        return Err(BadInput(format!(
            "--commit-lifetime ({commit_lifetime}) must be above --min-reveal-delay ({min_reveal_delay})"
        ))
        .into());
    }
    let key = FundingKey::read(&key).map_err(|e| BadInput(e.to_string()))?;
    let client = Client::new(&rpc).map_err(|e| BadInput(e.to_string()))?;
    let address = contract::deploy(
        &client,
        &key,
        min_reveal_delay,
        commit_lifetime,
        DEPLOY_TIMEOUT,
    )
    .with_context(|| {
        format!(
            "deploying the registry through {rpc} failed: check that the node runs and that the funding account {} holds ether",
            key.address()
        )
    })?;
    let params = contract::read_params(&client, &address).with_context(|| {
        format!("the registry was deployed at {address} but cannot be read back")
    })?;
    if ctx.json {
        return write_json(
            out,
            &Deployed {
                contract: address.to_string(),
                chain_id: params.registry.chain_id,
                rpc,
                min_reveal_delay: params.min_reveal_delay,
                commit_lifetime: params.commit_lifetime,
            },
        );
    }
    writeln!(out, "{address}")?;
    eprintln!(
        "registry deployed on chain {}: start metanetd with --chain-rpc {rpc} --chain-contract {address} (and --chain-key FILE to register names)",
        params.registry.chain_id
    );
    Ok(())
}
