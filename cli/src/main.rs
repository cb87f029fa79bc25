//! `metanet`: manage metanet identities and sessions.
//!
//! Parses the command line, runs one subcommand (each in its own module under `cmd/`)
//! and turns its outcome into an exit code, here and nowhere else:
//!
//! | code | meaning |
//! | ---- | ------- |
//! | 0 | success |
//! | 1 | any other failure |
//! | 2 | usage error or bad input (malformed address, name, secret, endpoint) |
//! | 3 | metanetd is not running (no socket, or nobody listening on it) |
//! | 4 | permission denied (control socket or state directory) |
//! | 5 | not found (identity, peer, name) |
//! | 6 | refused (a revoked or rotated key, or a peer the node denies) |
//! | 7 | unreachable (no record or no handshake answer for the address) |
//! | 8 | timeout (the daemon or a request gave up waiting) |
//! | 9 | too many peers (the daemon's peer table is full) |
//!
//! A daemon error's code comes from its kind ([`ErrorKind::exit_code`]), the one
//! mapping of kinds to codes.
//!
//! The CLI talks to metanetd only through its control socket (`proto::control`); it
//! never links the daemon. Identity commands fall back to the state directory when
//! the daemon is not running.
#![forbid(unsafe_code)]

mod client;
mod cmd;
mod docgen;
mod state;
#[cfg(test)]
mod testutil;

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use metanet_proto::control::ErrorKind;

use crate::cmd::{BadInput, Context};

/// Manage metanet identities and sessions through metanetd.
///
/// metanet talks to a running metanetd over its control socket. Identity commands also
/// work without a daemon, on the state directory. Members of group metanet may read
/// state and manage sessions; commands that read or change keys or spend gas need root
/// or an operator configured in metanetd.toml.
#[derive(Debug, Parser)]
#[command(name = "metanet", version, propagate_version = true)]
struct Cli {
    /// metanetd's control socket.
    #[arg(long, global = true, value_name = "PATH", default_value = client::DEFAULT_SOCKET)]
    socket: PathBuf,
    /// State directory, used by identity commands when metanetd is not running.
    #[arg(long, global = true, value_name = "DIR", default_value = state::DEFAULT_DIR)]
    state_dir: PathBuf,
    /// Print JSON instead of text.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Manage local identities (works without a running daemon).
    #[command(subcommand)]
    Id(cmd::id::Command),
    /// Open a session with a peer.
    Connect(cmd::connect::Args),
    /// Forget a peer.
    Disconnect(cmd::disconnect::Args),
    /// Show the daemon's interface, identities and peers.
    Status,
    /// List peers: address, overlay IPv6, endpoint, last handshake, traffic, RTT.
    Peers,
    /// Send ICMPv6 echo requests to a peer's overlay address.
    Ping(cmd::ping::Args),
    /// Look up a peer's verified record in the registry (DHT): endpoints, services, keys.
    Resolve(cmd::resolve::Args),
    /// Names on the chain registry: register, transfer, show, list.
    #[command(subcommand)]
    Name(cmd::name::Command),
    /// Relays: `relay status` shows reservations and forwarded traffic (on a relay),
    /// the relays in use and this daemon's NAT as its peers see it.
    #[command(subcommand)]
    Relay(cmd::relay::Command),
    /// Groups (networks) on the chain registry: create, add, remove, admin, list,
    /// show, log.
    #[command(subcommand)]
    Group(cmd::group::Command),
    /// Access policies: `policy show` lists each identity's allow list and inbound
    /// rules (set in metanetd.toml) with what they refused and decided.
    #[command(subcommand)]
    Policy(cmd::policy::Command),
    /// Attach a network namespace (a container's) to an identity: it gets an interface
    /// of its own with only that identity's overlay address (the identity is created
    /// when missing).
    Attach(cmd::attach::AttachArgs),
    /// Remove a namespace's attachment (by identity or namespace).
    Detach(cmd::attach::DetachArgs),
    /// List attached namespaces: identity, address, namespace, interface, state.
    Attachments,
    /// The chain registry itself: deploy the contract.
    #[command(subcommand)]
    Chain(cmd::chain::Command),
    /// Print the shell completion script for SHELL on stdout.
    ///
    /// For example `metanet completion bash > /etc/bash_completion.d/metanet`, or
    /// `source <(metanet completion bash)` for this shell only. The Debian package
    /// installs the bash, zsh and fish scripts.
    Completion {
        /// The shell to complete for.
        #[arg(value_enum, value_name = "SHELL")]
        shell: clap_complete::Shell,
    },
    /// Write the man pages (metanet.1 and one per subcommand) into DIR (for packaging).
    #[command(hide = true)]
    GenerateMan {
        /// Directory to write into (created if missing).
        #[arg(value_name = "DIR")]
        dir: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // --help and --version are "errors" that exit 0; real usage errors exit 2.
            let _ = e.print();
            return ExitCode::from(u8::try_from(e.exit_code()).unwrap_or(2));
        }
    };
    let ctx = Context {
        socket: cli.socket,
        state_dir: cli.state_dir,
        json: cli.json,
    };
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let result = match cli.command {
        Command::Id(c) => cmd::id::run(&ctx, c, &mut out),
        Command::Connect(a) => cmd::connect::run(&ctx, a, &mut out),
        Command::Disconnect(a) => cmd::disconnect::run(&ctx, a, &mut out),
        Command::Status => cmd::status::run(&ctx, &mut out),
        Command::Peers => cmd::peers::run(&ctx, &mut out),
        Command::Ping(a) => cmd::ping::run(&ctx, a, &mut out),
        Command::Resolve(a) => cmd::resolve::run(&ctx, a, &mut out),
        Command::Name(c) => cmd::name::run(&ctx, c, &mut out),
        Command::Chain(c) => cmd::chain::run(&ctx, c, &mut out),
        Command::Relay(c) => cmd::relay::run(&ctx, c, &mut out),
        Command::Policy(c) => cmd::policy::run(&ctx, c, &mut out),
        Command::Group(c) => cmd::group::run(&ctx, c, &mut out),
        Command::Attach(a) => cmd::attach::attach(&ctx, a, &mut out),
        Command::Detach(a) => cmd::attach::detach(&ctx, a, &mut out),
        Command::Attachments => cmd::attach::attachments(&ctx, &mut out),
        Command::Completion { shell } => docgen::completion(shell, &mut out),
        Command::GenerateMan { dir } => docgen::generate_man(&dir).and_then(|pages| {
            for page in pages {
                writeln!(out, "{}", page.display())?;
            }
            Ok(())
        }),
    }
    .and_then(|()| Ok(out.flush()?));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        // A reader that went away (`metanet peers | head`) is not our failure.
        Err(e) if is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(exit_code(&e))
        }
    }
}

/// The exit code for a failure: the first cause in the chain that has a class wins.
fn exit_code(err: &anyhow::Error) -> u8 {
    const FAILURE: u8 = 1;
    const USAGE: u8 = 2;
    const NOT_RUNNING: u8 = 3;
    const DENIED: u8 = 4;
    const NOT_FOUND: u8 = 5;
    for cause in err.chain() {
        if cause.is::<BadInput>() {
            return USAGE;
        }
        if let Some(e) = cause.downcast_ref::<client::Error>() {
            return match e {
                client::Error::NotRunning { .. } => NOT_RUNNING,
                client::Error::PermissionDenied { .. } => DENIED,
                client::Error::Daemon(e) => e.kind.exit_code(),
                client::Error::Timeout { .. } => ErrorKind::Timeout.exit_code(),
                client::Error::Io { .. } | client::Error::Protocol { .. } => FAILURE,
            };
        }
        if let Some(metanet_attach::Error::Permission(_)) = cause.downcast_ref() {
            return DENIED;
        }
        if let Some(e) = cause.downcast_ref::<state::Error>() {
            return match e {
                state::Error::BadName(_) => USAGE,
                state::Error::NotFound { .. } => NOT_FOUND,
                state::Error::Io { source, .. }
                    if source.kind() == std::io::ErrorKind::PermissionDenied =>
                {
                    DENIED
                }
                _ => FAILURE,
            };
        }
    }
    FAILURE
}

fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("metanet").chain(args.iter().copied()))
    }

    #[test]
    fn clap_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn defaults() {
        let cli = parse(&["status"]).unwrap();
        assert_eq!(cli.socket, PathBuf::from("/run/metanet/metanetd.sock"));
        assert_eq!(cli.state_dir, PathBuf::from("/var/lib/metanet"));
        assert!(!cli.json);
    }

    #[test]
    fn global_flags_go_before_or_after_the_subcommand() {
        for args in [
            &["--json", "id", "show"][..],
            &["id", "show", "--json"],
            &["id", "--json", "show"],
        ] {
            let cli = parse(args).unwrap();
            assert!(cli.json, "{args:?}");
            assert!(matches!(
                cli.command,
                Command::Id(cmd::id::Command::Show { name: None })
            ));
        }
        let cli = parse(&["peers", "--socket", "/tmp/s", "--state-dir", "/tmp/d"]).unwrap();
        assert_eq!(cli.socket, PathBuf::from("/tmp/s"));
        assert_eq!(cli.state_dir, PathBuf::from("/tmp/d"));
    }

    #[test]
    fn subcommand_arguments() {
        let cli = parse(&[
            "connect",
            "mn1x",
            "--endpoint",
            "1.2.3.4:5",
            "--identity",
            "w",
        ])
        .unwrap();
        match cli.command {
            Command::Connect(a) => {
                assert_eq!(a.address, "mn1x");
                assert_eq!(a.endpoint.as_deref(), Some("1.2.3.4:5"));
                assert_eq!(a.identity.as_deref(), Some("w"));
            }
            other => panic!("{other:?}"),
        }
        match parse(&["ping", "fd00::1", "-c", "3", "-W", "2"])
            .unwrap()
            .command
        {
            Command::Ping(a) => assert_eq!((a.count, a.wait), (3, 2)),
            other => panic!("{other:?}"),
        }
        match parse(&["ping", "fd00::1"]).unwrap().command {
            Command::Ping(a) => assert_eq!((a.count, a.wait), (4, 5)),
            other => panic!("{other:?}"),
        }
        assert!(parse(&["ping", "fd00::1", "-c", "0"]).is_err());
        match parse(&["id", "new"]).unwrap().command {
            Command::Id(cmd::id::Command::New { name }) => assert_eq!(name, "default"),
            other => panic!("{other:?}"),
        }
        assert!(
            parse(&["id", "import", "x"]).is_err(),
            "a secret source is required"
        );
        assert!(parse(&[
            "id",
            "import",
            "x",
            "--secret-hex",
            "a",
            "--secret-file",
            "-"
        ])
        .is_err());
        assert!(parse(&["id", "import", "x", "--secret-file", "-"]).is_ok());
        assert!(parse(&["disconnect"]).is_err());
        match parse(&["name", "list", "--mine"]).unwrap().command {
            Command::Name(cmd::name::Command::List { mine }) => assert!(mine),
            other => panic!("{other:?}"),
        }
        match parse(&[
            "chain",
            "deploy",
            "--rpc",
            "http://127.0.0.1:8545",
            "--key",
            "k",
        ])
        .unwrap()
        .command
        {
            Command::Chain(cmd::chain::Command::Deploy {
                min_reveal_delay, ..
            }) => assert_eq!(min_reveal_delay, 3),
            other => panic!("{other:?}"),
        }
        assert!(parse(&["chain", "deploy", "--rpc", "http://x"]).is_err());
        match parse(&["id", "revoke", "--yes"]).unwrap().command {
            Command::Id(cmd::id::Command::Revoke { name, yes }) => {
                assert!(name.is_none() && yes)
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn completion_and_generate_man() {
        match parse(&["completion", "zsh"]).unwrap().command {
            Command::Completion { shell } => assert_eq!(shell, clap_complete::Shell::Zsh),
            other => panic!("{other:?}"),
        }
        assert_eq!(
            parse(&["completion", "tcsh"]).unwrap_err().exit_code(),
            2,
            "an unknown shell is a usage error"
        );
        assert!(parse(&["completion"]).is_err());
        match parse(&["generate-man", "/tmp/m"]).unwrap().command {
            Command::GenerateMan { dir } => assert_eq!(dir, PathBuf::from("/tmp/m")),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn usage_errors_exit_2_and_version_exits_0() {
        assert_eq!(parse(&["frobnicate"]).unwrap_err().exit_code(), 2);
        assert_eq!(parse(&["--version"]).unwrap_err().exit_code(), 0);
    }

    #[test]
    fn exit_codes() {
        use metanet_proto::control;
        let code = |e: anyhow::Error| exit_code(&e);
        assert_eq!(code(BadInput("x".into()).into()), 2);
        assert_eq!(
            code(anyhow::Error::new(BadInput("x".into())).context("while connecting")),
            2,
            "context does not hide the class"
        );
        assert_eq!(
            code(client::Error::NotRunning { path: "/x".into() }.into()),
            3
        );
        assert_eq!(
            code(client::Error::PermissionDenied { path: "/x".into() }.into()),
            4
        );
        let daemon = |kind| {
            client::Error::Daemon(control::Error {
                kind,
                message: String::new(),
            })
        };
        assert_eq!(code(daemon(ErrorKind::NotFound).into()), 5);
        assert_eq!(code(daemon(ErrorKind::BadRequest).into()), 2);
        assert_eq!(code(daemon(ErrorKind::Internal).into()), 1);
        assert_eq!(code(daemon(ErrorKind::Refused).into()), 6);
        assert_eq!(code(daemon(ErrorKind::Forbidden).into()), 4);
        assert_eq!(code(daemon(ErrorKind::Denied).into()), 6);
        assert_eq!(code(daemon(ErrorKind::Unreachable).into()), 7);
        assert_eq!(code(daemon(ErrorKind::Timeout).into()), 8);
        assert_eq!(code(daemon(ErrorKind::TooManyPeers).into()), 9);
        assert_eq!(code(state::Error::BadName("..".into()).into()), 2);
        assert_eq!(
            code(
                state::Error::NotFound {
                    name: "x".into(),
                    dir: "/d".into()
                }
                .into()
            ),
            5
        );
        assert_eq!(
            code(
                state::Error::Io {
                    action: "write",
                    path: "/d".into(),
                    source: std::io::Error::from(std::io::ErrorKind::PermissionDenied),
                }
                .into()
            ),
            4
        );
        assert_eq!(code(anyhow::anyhow!("other")), 1);
    }
}
