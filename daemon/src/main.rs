//! `metanetd`: the metanet daemon. Runs in the foreground (as systemd expects).
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use metanet_daemon::{config, run, Options};

mod man;

/// metanet overlay VPN daemon.
///
/// metanetd holds this host's metanet identities, brings up the TUN interface with their
/// overlay IPv6 addresses and carries traffic to peers through end-to-end Noise tunnels
/// over UDP. It runs in the foreground and logs to stderr; metanet(1) controls it through
/// its control socket.
#[derive(Debug, Parser)]
#[command(
    name = "metanetd",
    version,
    about,
    after_help = "Flags override the config file; a flag's default applies when neither sets it.\n\n\
Environment:\n  METANET_LOG  log filter (default: info), e.g. debug or metanet_daemon=debug,libp2p=warn\n  \
NO_COLOR     no colours in the log\n\n\
Signals: SIGHUP reloads the config file (check it first with --check-config); SIGTERM stops."
)]
struct Args {
    /// Config file (TOML, strict) [default: /etc/metanet/metanetd.toml; a missing default file means defaults].
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Check the config file (FILE, else --config, else the default) and exit: 0 and
    /// `ok` when metanetd would start with it, 2 and the reason otherwise.
    #[arg(long, value_name = "FILE", num_args = 0..=1)]
    check_config: Option<Option<PathBuf>>,
    /// State directory (identity keys) [default: /var/lib/metanet].
    #[arg(long, value_name = "DIR")]
    state_dir: Option<PathBuf>,
    /// Control socket path [default: /run/metanet/metanetd.sock].
    #[arg(long, value_name = "PATH")]
    socket: Option<PathBuf>,
    /// UDP listen port, IPv4 and IPv6 [default: 51820].
    #[arg(long, value_name = "N")]
    port: Option<u16>,
    /// TUN interface name [default: metanet0].
    #[arg(long, value_name = "NAME")]
    tun: Option<String>,
    /// Tunnel MTU [default: the smallest underlay MTU minus 124, e.g. 1376].
    #[arg(long, value_name = "BYTES")]
    mtu: Option<u16>,
    /// Data cipher policy [default: auto: AES-256-GCM with peers that offer it when the
    /// CPU has AES instructions, else ChaCha20-Poly1305).
    #[arg(long, value_enum, value_name = "CIPHER")]
    cipher: Option<config::CipherPolicy>,
    /// Post-quantum hybrid handshake (ML-KEM-512 mixed into the Noise psk2) [default:
    /// auto: offer it, accept hybrid and classical; required: refuse classical
    /// handshakes both ways; off: classical only].
    #[arg(long, value_enum, value_name = "MODE")]
    pq: Option<config::PqPolicy>,
    /// DHT listen port, TCP, IPv4 and IPv6 [default: 51821].
    #[arg(long, value_name = "N")]
    dht_port: Option<u16>,
    /// A DHT node to join through (multiaddr, e.g. /ip4/198.18.0.1/tcp/51821, with an
    /// optional `/p2p/<peer id>`). Repeatable; adds to the config file's `bootstrap`.
    #[arg(long, value_name = "MULTIADDR")]
    bootstrap: Vec<libp2p::Multiaddr>,
    /// Where the `.meta` DNS view listens [default: the first identity's overlay IPv6,
    /// port 53].
    #[arg(long, value_name = "ADDR:PORT")]
    dns_listen: Option<std::net::SocketAddr>,
    /// Serve Prometheus metrics at http://ADDR:PORT/metrics [default: off]. No
    /// authentication: bind to loopback or an overlay address.
    #[arg(long, value_name = "ADDR:PORT", value_parser = config::parse_metrics_listen)]
    metrics_listen: Option<std::net::SocketAddr>,
    /// How the host's resolver is pointed at the `.meta` view [default: auto:
    /// systemd-resolved, else resolvconf, else the hosts file; off in a network
    /// namespace other than the host's].
    #[arg(long, value_enum, value_name = "SYSTEM")]
    dns_system: Option<config::DnsSystem>,
    /// JSON-RPC node of the chain registry (http://HOST:PORT): names and revocations.
    #[arg(long, value_name = "URL")]
    chain_rpc: Option<String>,
    /// The registry contract's address (0x…, from `metanet chain deploy`).
    #[arg(long, value_name = "ADDR")]
    chain_contract: Option<metanet_chain::EvmAddress>,
    /// Funding key file (64 hex digits of an EVM account key, mode 0600) that pays gas
    /// for `metanet name register|transfer` and `metanet id revoke`.
    #[arg(long, value_name = "FILE")]
    chain_key: Option<PathBuf>,
    /// Blocks behind the chain head to wait for before applying them [default: 0]; use
    /// a few on a public chain, where the head can be reorganised.
    #[arg(long, value_name = "N")]
    chain_confirmations: Option<u64>,
    /// Serve as a relay for NATed and hidden identities (config `relay = true`); run it
    /// where its UDP endpoint is public.
    #[arg(long)]
    relay: bool,
    /// A relay this daemon's identities reserve with and list in their records, as
    /// ADDRESS@HOST:PORT (repeatable; adds to the config file's `relays`).
    #[arg(long, value_name = "ADDRESS@HOST:PORT")]
    relay_via: Vec<metanet_proto::record::Relay>,
    /// Hide the default identity's endpoints: it publishes none, is reached through
    /// its relays only and never offers direct candidates (config `hidden = true`).
    #[arg(long)]
    hidden: bool,
    /// Seconds between keepalives on idle paths that cross a NAT; 0 turns them off
    /// [default: 25].
    #[arg(long, value_name = "SECS")]
    keepalive: Option<u64>,
    /// Relay: bytes per second one client may send through it; 0: no cap [default:
    /// 125000000].
    #[arg(long, value_name = "BYTES")]
    relay_rate: Option<u64>,
    /// Relay: peers one client may relay to at once [default: 64].
    #[arg(long, value_name = "N")]
    relay_sessions: Option<usize>,
    /// Write the man page metanetd.8 into DIR and exit (for packaging).
    #[arg(long, value_name = "DIR", hide = true)]
    generate_man: Option<PathBuf>,
}

/// `--check-config`: everything start-up checks about the configuration without
/// touching a device, a socket or the state directory.
fn check_config(path: &std::path::Path, explicit: bool, args: Args) -> ExitCode {
    let result = config::File::load(path, explicit)
        .map_err(|e| e.to_string())
        .and_then(|file| {
            file.chain(args.chain_rpc, args.chain_contract, args.chain_key)?;
            file.access()?;
            file.metrics_listen()?;
            Ok(())
        });
    match result {
        Ok(()) => {
            #[allow(clippy::print_stdout)]
            {
                println!("ok: {}", path.display());
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("metanetd: {e}");
            ExitCode::from(2)
        }
    }
}

/// `--generate-man DIR`: writes metanetd.8 and prints its path.
fn generate_man(dir: &std::path::Path) -> ExitCode {
    use clap::CommandFactory;
    match man::generate(Args::command(), dir) {
        Ok(path) => {
            #[allow(clippy::print_stdout)]
            {
                println!("{}", path.display());
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("metanetd: {e}");
            ExitCode::from(1)
        }
    }
}

fn main() -> ExitCode {
    use std::io::IsTerminal;
    let filter = || {
        tracing_subscriber::EnvFilter::try_from_env("METANET_LOG").unwrap_or_else(|_| "info".into())
    };
    if metanet_daemon::journal::stderr_is_journal() {
        // Under systemd: `<priority>` prefixes, the journal adds the time.
        tracing_subscriber::fmt()
            .event_format(metanet_daemon::journal::JournalFormat::new())
            .with_env_filter(filter())
            .with_writer(std::io::stderr)
            .init();
    } else {
        tracing_subscriber::fmt()
            .with_ansi(std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none())
            .with_env_filter(filter())
            .with_writer(std::io::stderr)
            .init();
    }
    let args = Args::parse();
    if let Some(dir) = &args.generate_man {
        return generate_man(dir);
    }
    let (path, explicit) = match (&args.check_config, &args.config) {
        (Some(Some(p)), _) | (_, Some(p)) => (p.clone(), true),
        _ => (PathBuf::from(config::DEFAULT_CONFIG), false),
    };
    if args.check_config.is_some() {
        return check_config(&path, explicit, args);
    }
    let mut file = match config::File::load(&path, explicit) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("metanetd: {e}");
            return ExitCode::from(2);
        }
    };
    if args.chain_confirmations.is_some() {
        file.chain_confirmations = args.chain_confirmations;
    }
    let chain = match file.chain(args.chain_rpc, args.chain_contract, args.chain_key) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("metanetd: {e}");
            return ExitCode::from(2);
        }
    };
    let access = match file.access() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("metanetd: {e}");
            return ExitCode::from(2);
        }
    };
    let metrics_listen = match file.metrics_listen() {
        Ok(file_value) => args.metrics_listen.or(file_value),
        Err(e) => {
            eprintln!("metanetd: {e}");
            return ExitCode::from(2);
        }
    };
    if args.relay {
        file.relay = Some(true);
    }
    if args.relay_rate.is_some() {
        file.relay_rate = args.relay_rate;
    }
    if args.relay_sessions.is_some() {
        file.relay_sessions = args.relay_sessions;
    }
    let mut relays = match file.relays() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("metanetd: {e}");
            return ExitCode::from(2);
        }
    };
    relays.extend(args.relay_via);
    file.hide_default(args.hidden);
    let keepalive = match args.keepalive.or(file.keepalive).unwrap_or(25) {
        0 => None,
        s => Some(std::time::Duration::from_secs(s)),
    };
    let opts = Options {
        relay: file.relay_limits(),
        hidden_flag: args.hidden,
        relays,
        keepalive,
        metrics_listen,
        overlay_filter: file.overlay_filter.unwrap_or(true),
        access,
        control_limits: Default::default(),
        state_dir: args
            .state_dir
            .or(file.state_dir)
            .unwrap_or_else(|| config::DEFAULT_STATE_DIR.into()),
        socket: args
            .socket
            .or(file.socket)
            .unwrap_or_else(|| config::DEFAULT_SOCKET.into()),
        port: args.port.or(file.port).unwrap_or(config::DEFAULT_PORT),
        tun: args
            .tun
            .or(file.tun)
            .unwrap_or_else(|| config::DEFAULT_TUN.into()),
        mtu: args.mtu.or(file.mtu),
        socket_buffer: file.socket_buffer.unwrap_or(config::DEFAULT_SOCKET_BUFFER),
        aes_256_gcm: args
            .cipher
            .or(file.cipher)
            .unwrap_or_default()
            .aes_256_gcm(),
        pq: args.pq.or(file.pq).unwrap_or_default().mode(),
        static_peers: file.peer,
        dht_port: args
            .dht_port
            .or(file.dht_port)
            .unwrap_or(config::DEFAULT_DHT_PORT),
        bootstrap: file
            .bootstrap
            .iter()
            .filter_map(|b| b.parse().ok())
            .chain(args.bootstrap)
            .collect(),
        identities: file.identity,
        dns_listen: args.dns_listen.or(file.dns_listen),
        dns_system_flag: args.dns_system.is_some(),
        dns_system: args.dns_system.or(file.dns_system).unwrap_or_default(),
        hosts_file: file
            .hosts_file
            .clone()
            .unwrap_or_else(|| config::DEFAULT_HOSTS_FILE.into()),
        config: (path, explicit),
        chain,
    };
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("metanetd: cannot start runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match rt.block_on(run(opts)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("metanetd: {e}");
            ExitCode::from(u8::try_from(e.exit_code()).unwrap_or(1))
        }
    }
}
