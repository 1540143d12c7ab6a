//! `iocom-install-helper`: the privileged, D-Bus activated installer (thin entry point).
//!
//! Parses flags, sets up logging (journald when `/run/systemd/journal/socket` exists, else
//! stderr), finishes or rolls back an interrupted transaction, then serves
//! `org.iocom.InstallHelper1` until the bus connection closes or SIGTERM/SIGINT arrives (a
//! running transaction is always completed first).

use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Parser;
use install_helper::auth::{self, AuthConfig};
use install_helper::dpkg::Dpkg;
use install_helper::paths::{Paths, Settings, SystemdMode};
use install_helper::recover;
use install_helper::sandbox::{self, Sandbox};
use install_helper::service::{self, InstallHelper, Transport};
use install_helper::txn::Env;
use install_helper::units::{Systemd, SystemdDbus};
use install_helper::verifier::PolicyVerifier;

const AFTER_HELP: &str = "\
Transports (default: the system bus, as D-Bus activation starts it; --system says so):
  --bus-address ADDR   a bus at ADDR (tests: a private dbus-daemon)
  --p2p-fd N           peer-to-peer D-Bus over the inherited Unix socket N (one end of a
                       socketpair; `iocomd --demo` spawns the helper this way)
  --p2p-socket PATH    peer-to-peer D-Bus over a connection to the listening socket PATH

Demo / isolated mode: --root DIR confines dpkg to the package root DIR (dpkg --root, with
dpkg's log in the state dir), and implies --no-systemd: unit restarts and the health gate are
skipped and reported as skipped. Use --state-dir and --policy to keep everything out of /var
and /etc. dpkg's installs, purges and repairs then run in a sandbox (user, mount, PID, network
namespaces; everything read-only but DIR and the log; no sockets), so a package's maintainer
scripts cannot change anything else, even when the helper runs as root; this needs user
namespaces.

Callers must be root or one of the --allow-uid users (default: root and the `iocomd` user)
on top of the bus policy; --polkit additionally requires polkit's
org.iocom.InstallHelper1.install (system bus only). D-Bus errors are named
org.iocom.InstallHelper1.Error.<CamelCaseCode> and their message starts with the stable code
(e.g. \"dpkg-locked: ...\").";

/// Privileged install helper for iocomd: verifies and installs Debian packages
/// transactionally (journal, dpkg, unit restarts, health gate, rollback).
#[derive(Debug, Parser)]
#[command(name = "iocom-install-helper", version, after_help = AFTER_HELP)]
struct Cli {
    /// Serve on the system bus (the default; accepted for explicitness in the unit file).
    #[arg(long, conflicts_with_all = ["bus_address", "p2p_fd", "p2p_socket"])]
    system: bool,
    /// Serve on the bus at this address instead of the system bus.
    #[arg(long, value_name = "ADDR", conflicts_with_all = ["p2p_fd", "p2p_socket"])]
    bus_address: Option<String>,
    /// Serve peer-to-peer on this inherited Unix socket fd.
    #[arg(long, value_name = "N", conflicts_with = "p2p_socket")]
    p2p_fd: Option<i32>,
    /// Serve peer-to-peer on a connection to this listening Unix socket.
    #[arg(long, value_name = "PATH")]
    p2p_socket: Option<PathBuf>,
    /// Isolated dpkg root (implies --no-systemd).
    #[arg(long, value_name = "DIR")]
    root: Option<PathBuf>,
    /// Helper state directory (staging, cache, journal, receipts, status).
    #[arg(long, value_name = "DIR")]
    state_dir: Option<PathBuf>,
    /// Install policy file.
    #[arg(long, value_name = "FILE")]
    policy: Option<PathBuf>,
    /// Do not talk to systemd: unit restarts and health gate are skipped (and reported so).
    #[arg(long)]
    no_systemd: bool,
    /// Caller uid allowed to use the helper (repeatable). Default: 0 and the `iocomd` user.
    #[arg(long = "allow-uid", value_name = "UID")]
    allow_uid: Vec<u32>,
    /// Also require polkit authorization (action org.iocom.InstallHelper1.install).
    #[arg(long)]
    polkit: bool,
    /// Seconds to wait for the dpkg frontend lock before failing with dpkg-locked.
    #[arg(long, value_name = "SECS", default_value_t = 120)]
    lock_timeout: u64,
    /// Seconds a restarted unit must stay healthy (the gate of units other than Type=notify).
    #[arg(long, value_name = "SECS", default_value_t = 10)]
    health_window: u64,
    /// Milliseconds a restarted Type=notify unit must be up (READY) and stable before the
    /// install is reported healthy (provisionally, while the probation runs).
    #[arg(long, value_name = "MS", default_value_t = 1000)]
    ready_gate_ms: u64,
    /// Seconds the units are watched after the gate; a crash or missed watchdog in it still
    /// rolls back (0: success is settled at the gate).
    #[arg(long, value_name = "SECS", default_value_t = 30)]
    probation: u64,
    /// Least milliseconds between two progress reports while the package is copied and
    /// verified.
    #[arg(long, value_name = "MS", default_value_t = 100)]
    progress_interval_ms: u64,
    /// Seconds a restarted unit may take to become active.
    #[arg(long, value_name = "SECS", default_value_t = 90)]
    start_timeout: u64,
    /// MiB that must remain free on the staging and root filesystems.
    #[arg(long, value_name = "MIB", default_value_t = 64)]
    space_reserve_mib: u64,
    /// Largest package accepted, MiB.
    #[arg(long, value_name = "MIB", default_value_t = 1024)]
    max_package_mib: u64,
    /// Exit after this many idle seconds (no call, no transaction); 0: never. For D-Bus
    /// activation, which starts the helper again on the next call.
    #[arg(long, value_name = "SECS", default_value_t = 0)]
    idle_exit: u64,
    /// Run start-up recovery, then exit.
    #[arg(long)]
    recover_only: bool,
}

fn init_logging() {
    use tracing_subscriber::filter::{LevelFilter, Targets};
    use tracing_subscriber::prelude::*;
    // RUST_LOG in its target syntax (`info`, `warn,iocom_install_helper=debug`); info if unset
    // or unparsable.
    let filter = std::env::var("RUST_LOG")
        .ok()
        .and_then(|v| v.parse::<Targets>().ok())
        .unwrap_or_else(|| Targets::new().with_default(LevelFilter::INFO));
    let journald = std::path::Path::new("/run/systemd/journal/socket")
        .exists()
        .then(|| tracing_journald::layer().ok())
        .flatten();
    let registry = tracing_subscriber::registry().with(filter);
    match journald {
        Some(layer) => registry.with(layer).init(),
        None => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .with_writer(std::io::stderr)
                    .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())),
            )
            .init(),
    }
}

/// Takes ownership of the inherited socket `fd` after checking that it is an open socket.
#[allow(unsafe_code)]
fn inherited_socket(fd: i32) -> anyhow::Result<UnixStream> {
    use std::os::fd::{FromRawFd, OwnedFd};
    if fd < 3 {
        bail!("--p2p-fd {fd}: not an inherited socket (0-2 are stdio)");
    }
    let target = std::fs::read_link(format!("/proc/self/fd/{fd}"))
        .with_context(|| format!("--p2p-fd {fd} is not open"))?;
    if !target.to_string_lossy().starts_with("socket:") {
        bail!("--p2p-fd {fd} is not a socket ({})", target.display());
    }
    // SAFETY: `fd` is open (checked above), is a socket, and nothing else in this process owns
    // it: it was inherited from the parent and this is called once, before any other fd use.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    // Not inherited by dpkg and maintainer scripts.
    nix::fcntl::fcntl(
        &owned,
        nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
    )
    .with_context(|| format!("--p2p-fd {fd}: setting close-on-exec"))?;
    Ok(UnixStream::from(owned))
}

fn settings(cli: &Cli, host_arch: String) -> Settings {
    let prod = Paths::production();
    let state = cli.state_dir.clone().unwrap_or(prod.state_dir.clone());
    let policy = cli.policy.clone().unwrap_or(prod.policy.clone());
    let (paths, systemd) = match &cli.root {
        Some(root) => (Paths::isolated(root, &state, &policy), SystemdMode::None),
        None => (
            Paths {
                state_dir: state,
                policy,
                ..prod
            },
            SystemdMode::SystemBus,
        ),
    };
    let systemd = if cli.no_systemd {
        SystemdMode::None
    } else {
        systemd
    };
    let mut s = Settings::new(paths, systemd, host_arch);
    s.lock_timeout = Duration::from_secs(cli.lock_timeout);
    s.health_window = Duration::from_secs(cli.health_window);
    s.ready_gate = Duration::from_millis(cli.ready_gate_ms);
    s.probation = Duration::from_secs(cli.probation);
    s.start_timeout = Duration::from_secs(cli.start_timeout);
    s.progress_interval = Duration::from_millis(cli.progress_interval_ms);
    s.space_reserve = cli.space_reserve_mib.saturating_mul(1024 * 1024);
    s.max_package_size = cli.max_package_mib.saturating_mul(1024 * 1024);
    s
}

fn run_recovery(settings: &Settings, rt: tokio::runtime::Handle) -> anyhow::Result<()> {
    let mut real;
    let mut systemd: Option<&mut dyn Systemd> = None;
    // systemd is only needed to finish a journaled transaction (restart + gate).
    if settings.systemd == SystemdMode::SystemBus && settings.paths.journal().exists() {
        real = SystemdDbus::connect(rt).context("connecting to systemd")?;
        systemd = Some(&mut real);
    }
    let mut progress = |phase: install_api::Phase, pct: u32, msg: &str| {
        tracing::info!(phase = phase.as_str(), pct, msg, "recovery");
    };
    let mut env = Env {
        settings,
        systemd,
        progress: &mut progress,
        healthy: None,
    };
    let r = recover::recover(&mut env).context("start-up recovery")?;
    tracing::info!(?r, "start-up recovery done");
    Ok(())
}

fn main() -> anyhow::Result<()> {
    // The sandbox launcher must start single-threaded (user namespaces), before any runtime.
    let mut args = std::env::args_os().skip(1);
    if args.next().is_some_and(|a| a == sandbox::SANDBOX_FLAG) {
        sandbox::exec_main(args.collect());
    }
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?
        .block_on(serve_main())
}

async fn serve_main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    init_logging();
    // Take the inherited fd first, before anything else could reuse its number.
    let p2p_stream = cli.p2p_fd.map(inherited_socket).transpose()?;
    let host_arch =
        Dpkg::host_architecture(Duration::from_secs(30)).context("dpkg --print-architecture")?;
    let mut settings = settings(&cli, host_arch);
    if cli.root.is_some() {
        let launcher = std::env::current_exe().context("locating the helper executable")?;
        settings.sandbox = Some(Sandbox { launcher });
    }
    install_helper::fsutil::ensure_private_dir(&settings.paths.state_dir)
        .with_context(|| format!("creating {}", settings.paths.state_dir.display()))?;
    let verifier = PolicyVerifier::load(&settings.paths.policy, &settings.host_arch)
        .with_context(|| format!("loading {}", settings.paths.policy.display()))?
        .for_target(&settings.paths);

    let rt = tokio::runtime::Handle::current();
    let rec_settings = settings.clone();
    tokio::task::spawn_blocking(move || run_recovery(&rec_settings, rt)).await??;
    if cli.recover_only {
        return Ok(());
    }

    let mut allowed = cli.allow_uid.clone();
    if allowed.is_empty() {
        allowed.push(0);
        allowed.extend(auth::uid_of("iocomd"));
    }
    let auth = AuthConfig {
        allowed_uids: allowed,
        polkit: cli.polkit,
    };
    let uids: Vec<String> = auth.allowed_uids.iter().map(u32::to_string).collect();
    tracing::info!(
        allowed_uids = %uids.join(","),
        polkit = auth.polkit,
        root = %settings.paths.root.display(),
        systemd = ?settings.systemd,
        "serving"
    );
    let helper = InstallHelper::new(settings, Arc::new(verifier), auth);
    let transport = if let Some(s) = p2p_stream {
        Transport::P2p(s)
    } else if let Some(path) = &cli.p2p_socket {
        Transport::P2p(
            UnixStream::connect(path)
                .with_context(|| format!("connecting to {}", path.display()))?,
        )
    } else if let Some(addr) = &cli.bus_address {
        Transport::Bus(addr.clone())
    } else {
        Transport::SystemBus
    };
    let conn = service::serve(helper.clone(), transport)
        .await
        .context("serving on D-Bus")?;

    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let idle_limit = Duration::from_secs(cli.idle_exit);
    let idle_helper = helper.clone();
    let idle = async move {
        loop {
            tokio::time::sleep(Duration::from_secs(1)).await;
            if !idle_limit.is_zero() && idle_helper.idle_for() >= idle_limit {
                return;
            }
        }
    };
    tokio::select! {
        _ = idle => tracing::info!("idle: exiting"),
        _ = conn.closed() => tracing::info!("connection closed"),
        _ = term.recv() => tracing::info!("SIGTERM"),
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT"),
    }
    // Never abandon a running transaction on purpose.
    while helper.busy() {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(())
}
