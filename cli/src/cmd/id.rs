//! `metanet id new|list|show|rm|export|import`: local identities.
//!
//! With the daemon running, every request goes through its control socket so that the
//! daemon sees the change at once. Without it (no socket, or nobody listening) the
//! command reads and writes the state directory directly, with the same layout and the
//! same file rules as the daemon ([`crate::state`]). Key generation uses OS randomness.
//! Secrets are printed only by `export`, and never logged or echoed elsewhere.

use std::io::{Read, Write};
use std::path::PathBuf;

use anyhow::{Context as _, Result};
use clap::{ArgGroup, Subcommand};
use metanet_proto::control::{Command as Ctl, IdentityInfo};
use metanet_proto::identity::{self, NoiseKey, WalletKey};
use metanet_proto::{keyfile, Identity};
use zeroize::Zeroizing;

use super::{table, write_json, BadInput, Context};
use crate::client::{self, Client};
use crate::state::{self, Store};

/// Longest secret accepted from a file or stdin, in bytes.
const MAX_SECRET_INPUT: u64 = 1024;

/// Identity subcommands.
#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Create an identity from fresh OS randomness.
    New {
        /// Its name (1-64 of a-z, 0-9, `-`, `_`).
        #[arg(default_value = state::DEFAULT_NAME)]
        name: String,
    },
    /// List local identities; `*` marks the default.
    List,
    /// Show an identity's address, overlay IPv6 and public key.
    Show {
        /// Which identity (default: the default identity).
        name: Option<String>,
    },
    /// Remove an identity and its key. Export it first if you may want it back.
    Rm {
        /// Which identity.
        name: String,
    },
    /// Print an identity's wallet secret (hex) on stdout. Keep it secret.
    Export {
        /// Which identity (default: the default identity).
        name: Option<String>,
    },
    /// Revoke an identity's key on the chain, for good: its names and its address are
    /// refused by every metanet from then on. Needs a daemon with a chain configured.
    Revoke {
        /// Which identity (default: the default identity).
        name: Option<String>,
        /// Confirm: a revocation cannot be undone.
        #[arg(long)]
        yes: bool,
    },
    /// Give an identity a new Noise static key: same wallet key, same address. Its
    /// record is republished and its peers handshake again. Needs the daemon.
    ///
    /// With --wallet, a new wallet key as well, so a new address: a rotation claim on
    /// the chain (signed by the old key, accepted by the new one) hands the old address
    /// and every name it owns to the new address, and peers that look the old address
    /// up are told where it went. Needs the daemon with a `[chain]` section configured.
    Rotate {
        /// Which identity (default: the default identity).
        name: Option<String>,
        /// Rotate the wallet key too (a new address, recorded on chain).
        #[arg(long)]
        wallet: bool,
    },
    /// Create an identity from a wallet secret printed by `id export`.
    #[command(group(ArgGroup::new("secret").required(true).args(["secret_hex", "secret_file"])))]
    Import {
        /// Name for the imported identity.
        name: String,
        /// The secret as 64 hex digits (visible to other local users in the process list:
        /// prefer --secret-file).
        #[arg(long, value_name = "HEX")]
        secret_hex: Option<String>,
        /// A file holding the secret hex; `-` reads standard input.
        #[arg(long, value_name = "PATH")]
        secret_file: Option<PathBuf>,
    },
}

/// Run an identity subcommand.
pub(crate) fn run(ctx: &Context, command: Command, out: &mut dyn Write) -> Result<()> {
    match command {
        Command::New { name } => new(ctx, &name, out),
        Command::List => list(ctx, out),
        Command::Show { name } => show(ctx, name.as_deref(), out),
        Command::Rm { name } => rm(ctx, &name, out),
        Command::Export { name } => export(ctx, name.as_deref(), out),
        Command::Revoke { name, yes } => revoke(ctx, name, yes, out),
        Command::Rotate { name, wallet } => rotate(ctx, name, wallet, out),
        Command::Import {
            name,
            secret_hex,
            secret_file,
        } => {
            let secret = match (secret_hex, secret_file) {
                (Some(hex), _) => {
                    eprintln!(
                        "warning: a secret on the command line is visible to other local \
                         users; prefer `--secret-file -` and paste it on stdin"
                    );
                    Zeroizing::new(hex)
                }
                (None, Some(path)) => read_secret_input(&path)?,
                // clap's required group guarantees one of them.
                (None, None) => {
                    return Err(BadInput("give --secret-hex or --secret-file".into()).into())
                }
            };
            import(ctx, &name, &secret, out)
        }
    }
}

fn revoke(ctx: &Context, name: Option<String>, yes: bool, out: &mut dyn Write) -> Result<()> {
    if let Some(n) = &name {
        state::validate_name(n)?;
    }
    let shown = name.as_deref().unwrap_or("the default identity");
    if !yes {
        return Err(BadInput(format!(
            "revoking {shown} is permanent: its address and names will be refused everywhere; pass --yes to confirm"
        ))
        .into());
    }
    let (identity, address, block) = ctx
        .client()
        .with_timeout(super::name::WRITE_TIMEOUT)
        .revoke(name)?;
    if ctx.json {
        return write_json(
            out,
            &serde_json::json!({ "identity": identity, "address": address, "block": block }),
        );
    }
    writeln!(
        out,
        "revoked identity `{identity}` ({address}) in block {block}: create a new one with `metanet id new NAME`"
    )?;
    Ok(())
}

fn rotate(ctx: &Context, name: Option<String>, wallet: bool, out: &mut dyn Write) -> Result<()> {
    if let Some(n) = &name {
        state::validate_name(n)?;
    }
    if wallet {
        let r = ctx
            .client()
            .with_timeout(super::name::WRITE_TIMEOUT)
            .rotate_wallet(name)?;
        if ctx.json {
            return write_json(out, &r);
        }
        writeln!(
            out,
            "rotated the wallet key of `{}` in block {}: its address is now {} ({}); {} resolves as rotated to it",
            r.identity, r.block, r.address, r.ipv6, r.from
        )?;
        return Ok(());
    }
    let info = ctx
        .client()
        .identity(Ctl::IdRotate {
            name,
            wallet: false,
        })
        .context("id rotate needs a running metanetd (it republishes the record)")?;
    if ctx.json {
        return write_json(out, &info);
    }
    writeln!(
        out,
        "rotated the noise key of `{}` ({}): new noise key {}",
        info.name,
        info.address,
        info.noise_key.as_deref().unwrap_or("?")
    )?;
    Ok(())
}

fn new(ctx: &Context, name: &str, out: &mut dyn Write) -> Result<()> {
    state::validate_name(name)?;
    let info = either(
        ctx,
        |c| c.identity(Ctl::IdNew { name: name.into() }),
        |store| {
            let identity = generate()?;
            let path = store.create(name, &identity)?;
            note_offline(ctx, "wrote", &path);
            Ok(state::identity_info(
                name,
                &identity,
                store.default_name()? == name,
            ))
        },
    )?;
    print_created(ctx, "created", &info, out)
}

fn list(ctx: &Context, out: &mut dyn Write) -> Result<()> {
    let identities = either(ctx, Client::identities, |store| {
        let default = store.default_name()?;
        store
            .list()?
            .into_iter()
            .map(|name| {
                let identity = store.read(&name)?;
                Ok(state::identity_info(&name, &identity, name == default))
            })
            .collect()
    })?;
    if ctx.json {
        return write_json(out, &identities);
    }
    if identities.is_empty() {
        writeln!(out, "no identities: create one with `metanet id new`")?;
        return Ok(());
    }
    let rows: Vec<Vec<String>> = identities
        .iter()
        .map(|i| {
            vec![
                if i.default { "*" } else { " " }.into(),
                i.name.clone(),
                i.address.clone(),
                i.ipv6.to_string(),
            ]
        })
        .collect();
    write!(out, "{}", table(&[" ", "NAME", "ADDRESS", "IPV6"], &rows))?;
    Ok(())
}

fn show(ctx: &Context, name: Option<&str>, out: &mut dyn Write) -> Result<()> {
    if let Some(name) = name {
        state::validate_name(name)?;
    }
    let info = either(
        ctx,
        |c| {
            c.identity(Ctl::IdShow {
                name: name.map(str::to_owned),
            })
        },
        |store| {
            let default = store.default_name()?;
            let name = name.unwrap_or(&default);
            let identity = store.read(name)?;
            Ok(state::identity_info(name, &identity, name == default))
        },
    )?;
    if ctx.json {
        return write_json(out, &info);
    }
    write!(out, "{}", describe(&info))?;
    Ok(())
}

fn rm(ctx: &Context, name: &str, out: &mut dyn Write) -> Result<()> {
    state::validate_name(name)?;
    either(
        ctx,
        |c| c.done(Ctl::IdRemove { name: name.into() }),
        |store| {
            let path = store.remove(name)?;
            note_offline(ctx, "removed", &path);
            Ok(())
        },
    )?;
    if ctx.json {
        return write_json(out, &serde_json::json!({ "removed": name }));
    }
    writeln!(out, "removed identity `{name}`")?;
    Ok(())
}

fn export(ctx: &Context, name: Option<&str>, out: &mut dyn Write) -> Result<()> {
    if let Some(name) = name {
        state::validate_name(name)?;
    }
    let (name, secret) = either(
        ctx,
        |c| {
            let name = match name {
                Some(n) => n.to_owned(),
                None => c.identity(Ctl::IdShow { name: None })?.name,
            };
            let secret = c.export(&name)?;
            Ok((name, secret))
        },
        |store| {
            let name = match name {
                Some(n) => n.to_owned(),
                None => store.default_name()?,
            };
            let identity = store.read(&name)?;
            let secret = Zeroizing::new(identity::hex(&identity.wallet().seed()[..]));
            Ok((name, secret))
        },
    )?;
    eprintln!(
        "warning: this is the secret key of identity `{name}`: whoever holds it can act as \
         this identity. Keep it offline. It does not include the Noise key; \
         `metanet id import` makes a fresh one, which peers accept."
    );
    if ctx.json {
        let value = Zeroizing::new(serde_json::to_string_pretty(
            &serde_json::json!({ "name": name, "secret_hex": secret.as_str() }),
        )?);
        writeln!(out, "{}", value.as_str())?;
    } else {
        writeln!(out, "{}", secret.as_str())?;
    }
    Ok(())
}

fn import(ctx: &Context, name: &str, secret: &str, out: &mut dyn Write) -> Result<()> {
    state::validate_name(name)?;
    let seed = Zeroizing::new(keyfile::parse_hex32(secret.trim(), "secret").map_err(|_| {
        BadInput("bad secret: expected 64 hex digits, as printed by `metanet id export`".into())
    })?);
    let info = either(
        ctx,
        |c| {
            let secret_hex = Zeroizing::new(identity::hex(&seed[..]));
            c.identity(Ctl::IdImport {
                name: name.into(),
                secret_hex: secret_hex.to_string(),
            })
        },
        |store| {
            // Only the wallet seed travels; the Noise key is per installation and may rotate.
            let noise = Zeroizing::new(random::<32>()?);
            let identity = Identity::new(WalletKey::from_seed(&seed), NoiseKey::from_bytes(&noise));
            // Two names for one address would make two nodes claim the same overlay IPv6.
            for other in store.list()? {
                if store
                    .read(&other)
                    .is_ok_and(|o| o.address() == identity.address())
                {
                    anyhow::bail!(
                        "identity `{other}` already has address {}: use it, or remove it \
                         first with `metanet id rm {other}`",
                        identity.address()
                    );
                }
            }
            let path = store.create(name, &identity)?;
            note_offline(ctx, "wrote", &path);
            Ok(state::identity_info(
                name,
                &identity,
                store.default_name()? == name,
            ))
        },
    )?;
    print_created(ctx, "imported", &info, out)
}

/// Ask the daemon; if it is not running, use the state directory instead.
fn either<T>(
    ctx: &Context,
    online: impl FnOnce(&Client) -> Result<T, client::Error>,
    offline: impl FnOnce(&Store) -> Result<T>,
) -> Result<T> {
    match online(&ctx.client()) {
        Err(client::Error::NotRunning { .. }) => offline(&ctx.store()),
        other => Ok(other?),
    }
}

fn note_offline(ctx: &Context, verb: &str, path: &std::path::Path) {
    eprintln!(
        "note: metanetd is not running (no socket at {}); {verb} {} directly, the daemon \
         sees it when it starts",
        ctx.socket.display(),
        path.display()
    );
}

fn print_created(
    ctx: &Context,
    verb: &str,
    info: &IdentityInfo,
    out: &mut dyn Write,
) -> Result<()> {
    if ctx.json {
        return write_json(out, info);
    }
    writeln!(out, "{verb} identity `{}`", info.name)?;
    write!(out, "{}", describe(info))?;
    writeln!(
        out,
        "peers reach it with `metanet connect {} --endpoint THIS_HOST:PORT`",
        info.address
    )?;
    Ok(())
}

fn describe(info: &IdentityInfo) -> String {
    let mut s = format!(
        "name:        {}{}\naddress:     {}\nipv6:        {}\npublic key:  {}\n",
        info.name,
        if info.default { " (default)" } else { "" },
        info.address,
        info.ipv6,
        info.public_key,
    );
    if info.hidden {
        s.push_str(
            "endpoints:   none published (hidden IP): peers can reach it only through \
             relays, which metanet does not have yet\n",
        );
    } else if !info.endpoints.is_empty() {
        let list: Vec<String> = info.endpoints.iter().map(|e| e.to_string()).collect();
        s.push_str(&format!("endpoints:   {}\n", list.join(", ")));
    }
    for service in &info.services {
        s.push_str(&format!(
            "service:     {}\n",
            super::resolve::service(service)
        ));
    }
    s
}

/// A fresh identity from OS randomness.
fn generate() -> Result<Identity> {
    let seed = Zeroizing::new(random::<64>()?);
    Ok(Identity::generate(&seed))
}

fn random<const N: usize>() -> Result<[u8; N]> {
    let mut buf = [0u8; N];
    getrandom::fill(&mut buf).map_err(|e| anyhow::anyhow!("cannot get OS randomness: {e}"))?;
    Ok(buf)
}

fn read_secret_input(path: &std::path::Path) -> Result<Zeroizing<String>> {
    let mut text = Zeroizing::new(String::new());
    if path.as_os_str() == "-" {
        std::io::stdin()
            .take(MAX_SECRET_INPUT)
            .read_to_string(&mut text)
            .context("cannot read the secret from stdin")?;
    } else {
        std::fs::File::open(path)
            .and_then(|f| f.take(MAX_SECRET_INPUT).read_to_string(&mut text))
            .with_context(|| format!("cannot read the secret from {}", path.display()))?;
    }
    Ok(text)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::testutil::TempDir;

    fn ctx(dir: &TempDir, json: bool) -> Context {
        Context {
            socket: dir.path().join("no-daemon.sock"),
            state_dir: dir.path().join("state"),
            json,
        }
    }

    fn run_json(ctx: &Context, command: Command) -> serde_json::Value {
        let mut out = Vec::new();
        run(ctx, command, &mut out).unwrap();
        serde_json::from_slice(&out).unwrap()
    }

    #[test]
    fn offline_new_show_export_import_round_trip() {
        let dir = TempDir::new();
        let ctx = ctx(&dir, true);
        let created = run_json(
            &ctx,
            Command::New {
                name: "default".into(),
            },
        );
        let shown = run_json(&ctx, Command::Show { name: None });
        assert_eq!(created, shown);
        assert_eq!(shown["default"], true);
        let address = shown["address"].as_str().unwrap();
        assert!(address.starts_with("mn1"));
        assert!(shown["ipv6"].as_str().unwrap().starts_with("fd"));
        assert_eq!(shown["public_key"].as_str().unwrap().len(), 64);

        let exported = run_json(&ctx, Command::Export { name: None });
        let secret = exported["secret_hex"].as_str().unwrap();
        assert_eq!(secret.len(), 64);

        // The same wallet under a second name is refused; under its only name it is fine.
        let err = import(&ctx, "copy", secret, &mut Vec::new()).unwrap_err();
        assert!(err.to_string().contains("already has address"), "{err}");
        run_json(
            &ctx,
            Command::New {
                name: "copy".into(),
            },
        );
        run_json(
            &ctx,
            Command::Rm {
                name: "default".into(),
            },
        );
        let mut out = Vec::new();
        import(&ctx, "default", secret, &mut out).unwrap();
        let imported: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(imported["address"], shown["address"]);
        assert_eq!(imported["default"], true);

        let list = run_json(&ctx, Command::List);
        let names: Vec<&str> = list
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["copy", "default"]);
        run_json(
            &ctx,
            Command::Rm {
                name: "copy".into(),
            },
        );
        assert_eq!(run_json(&ctx, Command::List).as_array().unwrap().len(), 1);
    }

    #[test]
    fn bad_inputs_are_bad_input() {
        let dir = TempDir::new();
        let ctx = ctx(&dir, false);
        let mut out = Vec::new();
        let err = import(&ctx, "x", "abc", &mut out).unwrap_err();
        assert!(err.downcast_ref::<BadInput>().is_some(), "{err:#}");
        let err = run(
            &ctx,
            Command::New {
                name: "../x".into(),
            },
            &mut out,
        )
        .unwrap_err();
        assert!(matches!(
            err.downcast_ref::<state::Error>(),
            Some(state::Error::BadName(_))
        ));
        let err = run(
            &ctx,
            Command::Show {
                name: Some("nope".into()),
            },
            &mut out,
        )
        .unwrap_err();
        assert!(matches!(
            err.downcast_ref::<state::Error>(),
            Some(state::Error::NotFound { .. })
        ));
    }

    #[test]
    fn human_list_marks_default() {
        let dir = TempDir::new();
        let ctx = ctx(&dir, false);
        let mut out = Vec::new();
        run(&ctx, Command::List, &mut out).unwrap();
        assert!(String::from_utf8_lossy(&out).contains("metanet id new"));
        run(
            &ctx,
            Command::New {
                name: "default".into(),
            },
            &mut Vec::new(),
        )
        .unwrap();
        let mut out = Vec::new();
        run(&ctx, Command::List, &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.lines().nth(1).unwrap().starts_with("*  default  mn1"),
            "{text}"
        );
    }
}
