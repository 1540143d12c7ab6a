//! `iocomd`: the IOCOM device daemon (thin entry point; the work lives in the library).

use anyhow::{Context, bail};
use clap::Parser;
use iocomd::config::{self, HelperConnection, LogTarget, Settings};
use iocomd::daemon::{self, Listener};
use iocomd::helper_client::HelperClient;
use iocomd::paths::Paths;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Environment variable naming the helper executable for `--demo`.
const HELPER_ENV: &str = "IOCOMD_HELPER";
/// Helper executable name.
const HELPER_NAME: &str = "iocom-install-helper";

/// IOCOM device daemon: receives software packages and has them installed.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// Run a self-contained demo device (plain TCP on loopback, demo signing key, the helper
    /// as a child installing into a package root under the state directory).
    #[arg(long)]
    demo: bool,
    /// Configuration file (default: merged fragments from /usr/lib, /run and /etc).
    #[arg(long, value_name = "FILE", conflicts_with = "demo")]
    config: Option<PathBuf>,
    /// Check the configuration and exit (like `sshd -t`): prints the files read, the effective
    /// settings and the merged keys, or the error naming the file and the key (exit 1).
    #[arg(long, conflicts_with = "demo")]
    check_config: bool,
    /// Print the completion script for a shell (bash, zsh, fish, …) and exit.
    #[arg(long, value_name = "SHELL", exclusive = true)]
    completions: Option<clap_complete::Shell>,
    /// State directory for the demo.
    #[arg(
        long,
        value_name = "DIR",
        default_value = "iocomd-demo",
        requires = "demo"
    )]
    state_dir: PathBuf,
    /// Listen address for the demo.
    #[arg(
        long,
        value_name = "ADDR",
        default_value = "127.0.0.1:6368",
        requires = "demo"
    )]
    listen: SocketAddr,
    /// Install helper executable for the demo (default: $IOCOMD_HELPER, else
    /// iocom-install-helper next to this executable).
    #[arg(long, value_name = "FILE", requires = "demo")]
    helper: Option<PathBuf>,
    /// For the demo: a configuration file whose `[hawkbit]` section makes the demo device a
    /// hawkBit DDI device too (its other sections are ignored).
    #[arg(long, value_name = "FILE", requires = "demo")]
    hawkbit: Option<PathBuf>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if let Some(shell) = args.completions {
        use clap::CommandFactory;
        clap_complete::generate(
            shell,
            &mut Args::command(),
            "iocomd",
            &mut std::io::stdout(),
        );
        return Ok(());
    }
    if args.check_config {
        match config::check_config(&Paths::system(), args.config.as_deref()) {
            Ok(text) => print!("{text}"),
            Err(e) => {
                eprintln!("iocomd: the configuration is not valid: {e}");
                std::process::exit(1);
            }
        }
        return Ok(());
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    rt.block_on(async {
        if args.demo {
            demo(&args).await
        } else {
            production(args.config.as_deref()).await
        }
    })
}

fn shutdown_on_signals() -> anyhow::Result<CancellationToken> {
    use tokio::signal::unix::{SignalKind, signal};
    let token = CancellationToken::new();
    let mut term = signal(SignalKind::terminate()).context("SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("SIGINT handler")?;
    let t = token.clone();
    tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
            _ = int.recv() => tracing::info!("SIGINT: shutting down"),
        }
        t.cancel();
    });
    Ok(token)
}

fn helper_program(flag: Option<&Path>) -> anyhow::Result<PathBuf> {
    if let Some(p) = flag {
        return Ok(p.to_path_buf());
    }
    if let Some(p) = std::env::var_os(HELPER_ENV) {
        return Ok(PathBuf::from(p));
    }
    let exe = std::env::current_exe().context("locating the iocomd executable")?;
    let next = exe.with_file_name(HELPER_NAME);
    if next.is_file() {
        return Ok(next);
    }
    bail!(
        "the install helper {} was not found next to {}.\n\
         Build both first: `cargo build --release -p iocomd -p install-helper` (or run `scripts/demo`, \
         which builds both into target/demo), or name it with --helper FILE or ${HELPER_ENV}.",
        next.display(),
        exe.display()
    )
}

async fn demo(args: &Args) -> anyhow::Result<()> {
    let mut settings = Settings::demo(&args.state_dir);
    settings.log.target = LogTarget::Auto;
    iocomd::logging::init(&settings.log).context("setting up logging")?;
    let program = helper_program(args.helper.as_deref())?;
    let env = iocomd::demo::prepare(&args.state_dir).context("preparing the demo environment")?;
    // Settings::demo used the relative state dir; use the canonical one from now on.
    settings = Settings::demo(&env.state_dir);
    settings.log.target = LogTarget::Auto;
    if let Some(f) = &args.hawkbit {
        let text =
            std::fs::read_to_string(f).with_context(|| format!("reading {}", f.display()))?;
        let h = config::parse_hawkbit(f, &text, &settings)?;
        settings.hawkbit = Some(h.with_context(|| {
            format!("{}: no [hawkbit] section with enabled = true", f.display())
        })?);
    }
    let uid = nix::unistd::getuid().as_raw().to_string();
    let helper_args: Vec<String> = [
        "--root".as_ref(),
        env.dpkg_root.as_os_str(),
        "--state-dir".as_ref(),
        env.helper_state.as_os_str(),
        "--policy".as_ref(),
        env.policy.as_os_str(),
        "--allow-uid".as_ref(),
        uid.as_ref(),
    ]
    .iter()
    .map(|s| s.to_string_lossy().into_owned())
    .collect();
    settings.helper = HelperConnection::Spawn {
        program: program.clone(),
        args: helper_args.clone(),
    };
    let tcp = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("listening on {}", args.listen))?;
    let addr = tcp.local_addr().context("local address")?;
    let mut client = HelperClient::spawn(&program, &helper_args)
        .await
        .with_context(|| format!("starting the install helper {}", program.display()))?;
    let mut child = client
        .take_child()
        .context("the spawned install helper has no process")?;
    let device = settings.device_path();
    let ctl = std::env::current_exe()
        .map(|e| e.with_file_name("iocomctl"))
        .unwrap_or_else(|_| PathBuf::from("iocomctl"));
    println!("iocomd demo device {device} listening on {addr} (plain TCP, pushes allowed)");
    println!("  state directory: {}", env.state_dir.display());
    println!("  packages are installed into: {}", env.dpkg_root.display());
    println!("  sample package: {}", env.sample_package.display());
    let sample = iocomd::demo::SAMPLE_PACKAGE;
    match iocomd::demo::installed_version(&env, sample) {
        None => println!("Push the sample package:"),
        Some(v) => println!(
            "The sample {sample} {v} is installed already: pushing it again is refused as not \
             newer (exit 7). Push a newer version you built and signed (below), or start afresh \
             with another --state-dir. The sample:"
        ),
    }
    println!(
        "  {} push --connect {addr} {device} {}",
        ctl.display(),
        env.sample_package.display()
    );
    println!("Check what is installed:");
    println!("  dpkg --root {} -l 'iocom-*'", env.dpkg_root.display());
    println!("Sign your own package with the demo key (debsigs origin signature):");
    println!(
        "  GNUPGHOME={} debsigs --sign=origin --default-key={} your.deb",
        env.gnupghome.display(),
        env.key_fingerprint
    );
    let shutdown = shutdown_on_signals()?;
    let listeners = vec![Listener { tcp, tls: None }];
    let r = daemon::run(listeners, settings, Some(client), shutdown).await;
    // Our end of the helper's socket is closed now: it finishes what it runs and exits.
    match tokio::time::timeout(Duration::from_secs(30), child.wait()).await {
        Ok(_) => {}
        Err(_) => {
            tracing::warn!("the install helper did not exit; killing it");
            let _ = child.kill().await;
        }
    }
    r.context("iocomd")
}

async fn production(config_file: Option<&Path>) -> anyhow::Result<()> {
    let paths = Paths::system();
    let settings = match config_file {
        Some(f) => config::load_file(f, &paths),
        None => config::load(&paths),
    }
    .context("reading the configuration")?;
    iocomd::logging::init(&settings.log).context("setting up logging")?;
    let mut listeners = Vec::new();
    for l in &settings.listen {
        let tcp = tokio::net::TcpListener::bind(l.address)
            .await
            .with_context(|| format!("listening on {}", l.address))?;
        let tls = match &l.tls {
            Some(t) => Some(
                iocomd::net::tls::acceptor(
                    iocomd::net::tls::Identity {
                        cert: &t.cert,
                        key: &t.key,
                    },
                    t.client_ca.as_deref(),
                )
                .with_context(|| format!("TLS for {}", l.address))?,
            ),
            None => None,
        };
        listeners.push(Listener { tcp, tls });
    }
    let mut spawned = None;
    let helper = match &settings.helper {
        HelperConnection::Spawn { program, args } => match HelperClient::spawn(program, args).await
        {
            Ok(mut client) => {
                spawned = client.take_child();
                Some(client)
            }
            Err(e) => {
                tracing::error!(error = %e, "install helper unavailable");
                None
            }
        },
        how => match HelperClient::connect(how).await {
            Ok(c) => Some(c),
            Err(e) => {
                tracing::error!(error = %e, "install helper unavailable");
                None
            }
        },
    };
    let shutdown = shutdown_on_signals()?;
    let r = daemon::run(listeners, settings, helper, shutdown).await;
    if let Some(mut child) = spawned
        && tokio::time::timeout(Duration::from_secs(30), child.wait())
            .await
            .is_err()
    {
        let _ = child.kill().await;
    }
    r.context("iocomd")
}
