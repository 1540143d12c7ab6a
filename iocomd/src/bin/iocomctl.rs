//! `iocomctl`: controller command line to push packages to IOCOM devices and show their status.
//! The work is done by [`iocomd::ctl`]; this file parses arguments and renders progress.

use clap::{Args, Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use iocomd::ctl::{
    self, ConnectOptions, Credentials, CtlError, DeviceEntry, DevicePath, DeviceReport,
    DevicesOptions, ManyResult, Progress, PushOptions, PushOutcome, SerialLine, StatusOptions,
    Target, Timeouts, TlsOptions, Transport, UpdState,
};
use serde_json::{Value, json};
use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

const EXIT_TABLE: &str = "\
Exit status:
  0  installed and healthy (push), status read (status), package passes (check)
  1  internal error
  2  usage: bad arguments, address, device path, file, TLS or password file
  3  connection failed, or dropped outside a transfer; wrong device, device not ready
  4  authentication refused (user/password), or not authorized for pushes
  5  device busy with another update
  6  transfer failed (CRC mismatch, interrupted or cut off, too large, no spool space)
  7  package refused (signature, policy, version, archive, dependencies)
  8  install failed or rolled back
  9  timed out waiting for the result
push-many exits with the worst (largest) status of its devices.
Logs: -v/-vv, or IOCOMCTL_LOG=debug (tracing filter syntax), on stderr.";

/// Push software packages to IOCOM devices and show their update status.
#[derive(Debug, Parser)]
#[command(
    name = "iocomctl",
    version,
    about = "Push software packages (.deb) to IOCOM devices running iocomd and show their update status",
    after_help = EXIT_TABLE
)]
struct Cli {
    /// Print only the result (and errors): no progress lines or bar.
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    quiet: bool,
    /// More log output on stderr: -v info, -vv debug, -vvv trace (IOCOMCTL_LOG overrides).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Push a .deb to one device and wait until it is installed and healthy.
    #[command(after_help = EXIT_TABLE)]
    Push {
        #[command(flatten)]
        conn: ConnArgs,
        /// The device: gina3.cafenet (name, number, network), gina9001.iocafenet (an
        /// automatic number as assigned), or the name alone when it is unique.
        device: String,
        /// The package file.
        file: PathBuf,
        /// Accept a device without iocomd's status signals when its tod_err says completed.
        #[arg(long)]
        accept_tod_err: bool,
    },
    /// Push a .deb to several devices concurrently, one connection each.
    #[command(after_help = EXIT_TABLE)]
    PushMany {
        #[command(flatten)]
        conn: ConnArgs,
        /// The package file.
        file: PathBuf,
        /// Targets: DEVICE@HOST[:PORT] to connect, or DEVICE with --listen ADDR or --connect
        /// HOST[:PORT] (devices behind one server share one connection).
        #[arg(required = true)]
        targets: Vec<String>,
    },
    /// Show the installed version and the last update result of a device (a plain IOCOM
    /// device: its tod_state/tod_err, marked as having no iocomd status).
    #[command(after_help = EXIT_TABLE)]
    Status {
        #[command(flatten)]
        conn: ConnArgs,
        /// The device, e.g. gina3.cafenet, gina9001.iocafenet or gina.
        device: String,
    },
    /// List the devices reachable at --connect ADDR (a device, or every device an IOCOM server
    /// such as frank advertises) or connecting up to --listen ADDR within --wait seconds.
    #[command(after_help = EXIT_TABLE)]
    Devices {
        #[command(flatten)]
        conn: ConnArgs,
        /// The network named in our authentication frame (default iocafenet).
        #[arg(long, value_name = "NAME")]
        network: Option<String>,
        /// With --listen: seconds to collect devices connecting up.
        #[arg(long, value_name = "SECS", default_value_t = 10)]
        wait: u64,
    },
    /// Verify a package locally before pushing it, as the device's install helper does:
    /// archive structure, control fields, content, and the origin signature against
    /// --keyring (like `rauc info`). Exit 0 when it passes, 7 when refused (the helper's code).
    #[command(after_help = EXIT_TABLE)]
    Check {
        /// The package file.
        file: PathBuf,
        /// OpenPGP keyring (certificates, armored or binary) the signer must be in; repeat
        /// for several. Without one a present signature is not checked.
        #[arg(long, value_name = "FILE")]
        keyring: Vec<PathBuf>,
        /// Apply a device's install policy file whole (names, signature, content rules).
        #[arg(long, value_name = "FILE")]
        policy: Option<PathBuf>,
        /// The device's architecture (default: accept the package's own).
        #[arg(long, value_name = "ARCH")]
        arch: Option<String>,
        /// One JSON object on stdout.
        #[arg(long)]
        json: bool,
    },
    /// Print the completion script for a shell (bash, zsh, fish, elvish, powershell) on
    /// stdout; `make docs` writes them all to target/docs/completions.
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Print the iocomd config entry of a controller account: the password (read from stdin,
    /// without echo on a terminal) as an IOCOM password hash.
    HashPassword {
        /// The controller's user name (prints only the password_hash line without it).
        user: Option<String>,
    },
}

#[derive(Debug, Args)]
struct ConnArgs {
    /// Connect to the device at HOST[:PORT] (default port 6368 plain, 6369 with --tls).
    #[arg(long, value_name = "HOST[:PORT]", conflicts_with = "listen")]
    connect: Option<String>,
    /// Listen at ADDR and wait for the device to connect up.
    #[arg(long, value_name = "ADDR", conflicts_with = "serial")]
    listen: Option<SocketAddr>,
    /// Talk to the device over a serial line, e.g. /dev/ttyUSB0,baud=115200 (default 115200
    /// 8N1; also parity=even|odd, stopbits=2). We are the serial server, for a device that is
    /// the serial client (iocomd's default); add side=client for a device that is the server.
    /// No TLS and no password on a serial line: the device must allow serial pushes.
    #[arg(
        long,
        value_name = "PORT[,baud=N]",
        conflicts_with = "connect",
        verbatim_doc_comment
    )]
    serial: Option<String>,
    /// With --listen: announce the listener by lighthouse UDP multicast (239.63.68.63:6368),
    /// so devices configured to connect to "*" find it. Devices still authenticate; nothing is
    /// pushed to a device that was not asked for.
    #[arg(long, requires = "listen")]
    announce: bool,
    /// Use TLS.
    #[arg(long)]
    tls: bool,
    /// PEM CA certificates to verify the device certificate (required with --tls --connect).
    #[arg(long, value_name = "FILE")]
    ca: Option<PathBuf>,
    /// PEM certificate: client identity, or server identity with --listen.
    #[arg(long, value_name = "FILE")]
    cert: Option<PathBuf>,
    /// PEM private key for --cert.
    #[arg(long, value_name = "FILE")]
    key: Option<PathBuf>,
    /// Name the device certificate must carry (default: the host of --connect).
    #[arg(long, value_name = "NAME")]
    server_name: Option<String>,
    /// User name for the device's account.
    #[arg(long, value_name = "NAME")]
    user: Option<String>,
    /// File holding the password (first line). The environment variable IOCOMCTL_PASSWORD
    /// is used otherwise.
    #[arg(long, value_name = "FILE")]
    password_file: Option<PathBuf>,
    /// Password on the command line (visible in ps: prefer --password-file).
    #[arg(long, value_name = "PASSWORD")]
    password: Option<String>,
    /// One JSON object per line on stdout: events, then the result.
    #[arg(long)]
    json: bool,
    /// Seconds to wait for the device's result after the transfer.
    #[arg(long, value_name = "SECS", default_value_t = 120)]
    timeout: u64,
    /// Seconds for connecting and authenticating.
    #[arg(long, value_name = "SECS", default_value_t = 15)]
    connect_timeout: u64,
    /// Seconds to wait for the device to connect up (--listen).
    #[arg(long, value_name = "SECS", default_value_t = 300)]
    listen_timeout: u64,
}

fn usage(msg: impl Into<String>) -> CtlError {
    CtlError::Usage(msg.into())
}

impl ConnArgs {
    fn options(&self) -> Result<ConnectOptions, CtlError> {
        let tls = if self.tls {
            Some(TlsOptions {
                ca: self.ca.clone(),
                cert: self.cert.clone(),
                key: self.key.clone(),
                server_name: self.server_name.clone(),
            })
        } else {
            if self.ca.is_some() || self.cert.is_some() || self.key.is_some() {
                return Err(usage("--ca, --cert and --key need --tls"));
            }
            None
        };
        let password = match (&self.password_file, &self.password) {
            (Some(_), Some(_)) => {
                return Err(usage("give either --password-file or --password"));
            }
            (Some(f), None) => {
                let text = std::fs::read_to_string(f)
                    .map_err(|e| usage(format!("{}: {e}", f.display())))?;
                Some(text.lines().next().unwrap_or_default().to_owned())
            }
            (None, Some(p)) => {
                eprintln!(
                    "iocomctl: warning: --password is visible to other users in ps; use --password-file or IOCOMCTL_PASSWORD"
                );
                Some(p.clone())
            }
            (None, None) => std::env::var("IOCOMCTL_PASSWORD").ok(),
        };
        let credentials = match (&self.user, password) {
            (None, None) => None,
            (user, password) => Some(Credentials {
                user: user.clone().unwrap_or_else(|| "iocomctl".into()),
                password: password.unwrap_or_default(),
            }),
        };
        if credentials.as_ref().is_some_and(|c| !c.password.is_empty()) && tls.is_none() {
            eprintln!(
                "iocomctl: warning: passwords are sent only inside TLS; without --tls none is sent"
            );
        }
        Ok(ConnectOptions {
            tls,
            credentials,
            announce: self.announce,
            timeouts: Timeouts {
                connect: Duration::from_secs(self.connect_timeout),
                listen: Duration::from_secs(self.listen_timeout),
                result: Duration::from_secs(self.timeout),
                ..Timeouts::default()
            },
        })
    }

    fn transport(&self) -> Result<Transport, CtlError> {
        match (&self.connect, self.listen, &self.serial) {
            (Some(c), None, None) => Ok(Transport::Connect(ctl::connect_address(c, self.tls)?)),
            (None, Some(l), None) => Ok(Transport::Listen(l)),
            (None, None, Some(s)) => Ok(Transport::Serial(SerialLine::parse(s)?)),
            _ => Err(usage(
                "give --connect HOST:PORT, --listen ADDR or --serial PORT[,baud=N]",
            )),
        }
    }
}

/// Renders progress for humans (bar on a terminal, lines otherwise) or as JSON lines.
struct Output {
    json: bool,
    quiet: bool,
    bar: Option<ProgressBar>,
    tty: bool,
    last_tenth: u64,
    /// The device state and percentage of the last line printed for it.
    last_device: Option<(UpdState, u8)>,
}

impl Output {
    fn new(json: bool, quiet: bool) -> Self {
        Self {
            json,
            quiet,
            bar: None,
            tty: std::io::stderr().is_terminal(),
            last_tenth: 0,
            last_device: None,
        }
    }

    fn event(&mut self, device: &str, p: &Progress) {
        if self.quiet && !self.json {
            return;
        }
        if self.json {
            let mut v = serde_json::to_value(p).unwrap_or(Value::Null);
            if let Value::Object(m) = &mut v {
                m.insert("device".into(), json!(device));
            }
            println!("{v}");
            return;
        }
        match p {
            Progress::Started { total, .. } if self.tty => {
                if let Some(line) = describe(p) {
                    eprintln!("{device}: {line}");
                }
                let bar = ProgressBar::new(*total);
                let style = ProgressStyle::with_template(
                    "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> ");
                bar.set_style(style);
                bar.set_message(device.to_owned());
                self.bar = Some(bar);
                return;
            }
            Progress::Transfer { bytes, total } => {
                if let Some(bar) = &self.bar {
                    bar.set_position(*bytes);
                } else if !self.tty && *total > 0 {
                    let tenth = bytes * 10 / total;
                    if tenth > self.last_tenth {
                        self.last_tenth = tenth;
                        eprintln!("{device}: sent {bytes} of {total} bytes");
                    }
                }
                return;
            }
            Progress::Transferred { .. } => {
                if let Some(bar) = self.bar.take() {
                    bar.finish_and_clear();
                }
            }
            Progress::Device { state, percent } => {
                if !device_line_due(self.last_device, *state, *percent) {
                    return;
                }
                self.last_device = Some((*state, percent.unwrap_or(0)));
            }
            _ => {}
        }
        if let Some(line) = describe(p) {
            match &self.bar {
                Some(bar) => bar.println(format!("{device}: {line}")),
                None => eprintln!("{device}: {line}"),
            }
        }
    }

    fn clear(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
    }
}

fn describe(p: &Progress) -> Option<String> {
    Some(match p {
        Progress::Connected { peer } => format!("connected to {peer}"),
        Progress::Authenticated { frame_size, .. } => {
            format!("authenticated (frames of up to {frame_size} bytes)")
        }
        Progress::Located { device, via } => match via {
            Some(v) => format!("found {device} through {v}"),
            None => format!("found {device}"),
        },
        Progress::Started {
            total,
            ring,
            installed_version,
        } => format!(
            "sending {total} bytes (ring {ring} bytes, installed: {})",
            nonempty(installed_version).unwrap_or("none")
        ),
        Progress::Transfer { .. } => return None,
        Progress::Transferred { bytes, crc } => {
            format!("transfer complete: {bytes} bytes, CRC {crc:#06x}; waiting for the device")
        }
        Progress::Reconnecting { reason } => {
            format!("connection lost while installing ({reason}); reconnecting")
        }
        Progress::Device { state, percent } => match percent {
            Some(p) => format!("device: {} {p}%", state.label()),
            None => format!("device: {}", state.label()),
        },
    })
}

/// Whether a device progress update gets a line of its own in text output: a new state, the
/// end, or at least 10 points more than the last line (the helper reports every percent of its
/// verifying pass; a handful of lines tell as much as dozens). JSON output gets every update.
fn device_line_due(last: Option<(UpdState, u8)>, state: UpdState, percent: Option<u8>) -> bool {
    let p = percent.unwrap_or(0);
    match last {
        None => true,
        Some((s, shown)) => s != state || p >= 100 || p >= shown.saturating_add(10),
    }
}

/// The text of a string signal, `None` when empty (an empty `inst_ver`: nothing installed).
fn nonempty(v: &Option<String>) -> Option<&str> {
    v.as_deref().filter(|s| !s.is_empty())
}

fn report_json(r: &DeviceReport) -> Value {
    serde_json::to_value(r).unwrap_or(Value::Null)
}

fn result_json(device: &str, r: &Result<PushOutcome, CtlError>) -> Value {
    match r {
        Ok(o) => json!({
            "event": "result", "device": device, "ok": true, "exit_code": 0, "class": "ok",
            "bytes": o.bytes, "crc": o.crc, "transfer_secs": o.transfer_secs,
            "total_secs": o.total_secs,
            "code": o.report.code, "result": o.report.result, "message": o.report.message,
            "tod_err": o.report.tod_err, "installed_version": o.report.installed_version,
            "report": report_json(&o.report),
        }),
        Err(e) => error_json(device, e),
    }
}

fn error_json(device: &str, e: &CtlError) -> Value {
    let r = e.report();
    json!({
        "event": "result", "device": device, "ok": false, "exit_code": e.exit_code(),
        "class": e.class_name(), "error": e.to_string(),
        "code": r.and_then(|r| r.code.clone()), "result": r.and_then(|r| r.result),
        "message": r.and_then(|r| r.message.clone()), "tod_err": r.and_then(|r| r.tod_err),
        "report": r.map(report_json),
    })
}

fn result_line(device: &str, r: &Result<PushOutcome, CtlError>) -> String {
    match r {
        Ok(o) if !o.report.iocomd => format!(
            "{}: transferred {} bytes in {:.1} s; the device reported completed (tod_err {}); it publishes no iocomd status, so the installed package is not known",
            o.device,
            o.bytes,
            o.transfer_secs,
            o.report.tod_err.unwrap_or(0)
        ),
        Ok(o) => format!(
            "{}: installed and healthy: {} {} ({} bytes in {:.1} s, total {:.1} s)",
            o.device,
            nonempty(&o.report.package).unwrap_or("package"),
            nonempty(&o.report.installed_version)
                .or(nonempty(&o.report.version))
                .unwrap_or("(version not published)"),
            o.bytes,
            o.transfer_secs,
            o.total_secs
        ),
        Err(e) => format!("{device}: FAILED (exit {}): {e}", e.exit_code()),
    }
}

fn device_arg(s: &str) -> Result<DevicePath, CtlError> {
    Ok(s.parse::<DevicePath>()?)
}

async fn run(cmd: Cmd, quiet: bool) -> Result<u8, CtlError> {
    match cmd {
        Cmd::Push {
            conn,
            device,
            file,
            accept_tod_err,
        } => {
            let target = Target {
                device: device_arg(&device)?,
                transport: conn.transport()?,
            };
            let mut opts = PushOptions::new(target, conn.options()?, file);
            opts.accept_tod_err_only = accept_tod_err;
            let name = opts.target.device.to_string();
            let mut out = Output::new(conn.json, quiet);
            let r = ctl::push(&opts, |p| out.event(&name, &p)).await;
            out.clear();
            let code = r.as_ref().map_or_else(CtlError::exit_code, |_| 0);
            if conn.json {
                println!("{}", result_json(&name, &r));
            } else {
                match &r {
                    Ok(_) => println!("{}", result_line(&name, &r)),
                    Err(_) => eprintln!("iocomctl: {}", result_line(&name, &r)),
                }
            }
            Ok(code)
        }
        Cmd::PushMany {
            conn,
            file,
            targets,
        } => {
            let opts = conn.options()?;
            let mut list = Vec::new();
            for t in &targets {
                if conn.serial.is_some() {
                    return Err(usage(
                        "push-many does not take --serial: a serial line reaches one device; use push",
                    ));
                }
                let target = match (t.split_once('@'), conn.listen, &conn.connect) {
                    (Some((d, addr)), None, None) => Target {
                        device: device_arg(d)?,
                        transport: Transport::Connect(ctl::connect_address(addr, conn.tls)?),
                    },
                    (None, Some(l), None) => Target {
                        device: device_arg(t)?,
                        transport: Transport::Listen(l),
                    },
                    (None, None, Some(c)) => Target {
                        device: device_arg(t)?,
                        transport: Transport::Connect(ctl::connect_address(c, conn.tls)?),
                    },
                    _ => {
                        return Err(usage(format!(
                            "target {t:?}: use DEVICE@HOST:PORT, or DEVICE with one --listen ADDR or --connect HOST:PORT"
                        )));
                    }
                };
                list.push(target);
            }
            let names: Vec<String> = list.iter().map(|t| t.device.to_string()).collect();
            let json_mode = conn.json;
            let results = ctl::push_many(&list, &opts, &file, |i, p| {
                let name = names.get(i).map_or("?", String::as_str);
                if json_mode {
                    Output::new(true, quiet).event(name, &p);
                } else if !quiet && let Some(line) = describe(&p) {
                    eprintln!("{name}: {line}");
                }
            })
            .await;
            Ok(summary(&results, json_mode))
        }
        Cmd::Status { conn, device } => {
            let opts = StatusOptions {
                target: Target {
                    device: device_arg(&device)?,
                    transport: conn.transport()?,
                },
                connect: conn.options()?,
            };
            let r = ctl::status(&opts).await?;
            let name = r
                .device
                .clone()
                .unwrap_or_else(|| opts.target.device.to_string());
            if conn.json {
                let mut v = report_json(&r);
                if let Value::Object(m) = &mut v {
                    m.insert("device".into(), json!(name));
                }
                println!("{v}");
            } else {
                print_status(&name, &r);
            }
            Ok(0)
        }
        Cmd::Devices {
            conn,
            network,
            wait,
        } => {
            let mut connect = conn.options()?;
            connect.timeouts.listen = Duration::from_secs(wait);
            let opts = DevicesOptions {
                transport: conn.transport()?,
                connect,
                network,
            };
            let list = ctl::devices(&opts).await?;
            if conn.json {
                for d in &list {
                    println!("{}", serde_json::to_value(d).unwrap_or(Value::Null));
                }
            } else {
                print_devices(&list, std::io::stdout().is_terminal());
            }
            Ok(0)
        }
        Cmd::Check {
            file,
            keyring,
            policy,
            arch,
            json,
        } => Ok(check(file, keyring, policy, arch, json)),
        Cmd::Completions { shell } => {
            use clap::CommandFactory;
            clap_complete::generate(
                shell,
                &mut Cli::command(),
                "iocomctl",
                &mut std::io::stdout(),
            );
            Ok(0)
        }
        Cmd::HashPassword { user } => {
            let password = read_password()?;
            println!("{}", ctl::account_config(user.as_deref(), &password)?);
            Ok(0)
        }
    }
}

/// `iocomctl check`: the helper's verification of a local file; prints what it found.
fn check(
    file: PathBuf,
    keyrings: Vec<PathBuf>,
    policy: Option<PathBuf>,
    architecture: Option<String>,
    json: bool,
) -> u8 {
    use install_helper::verify::check::{self as chk, CheckError, CheckOptions, SignatureCheck};
    let opts = CheckOptions {
        keyrings,
        policy,
        architecture,
    };
    match chk::check(&file, &opts) {
        Ok(c) => {
            let p = &c.package;
            let (sig, signer) = match &c.signature {
                SignatureCheck::Verified(fpr) => ("verified", Some(fpr.as_str())),
                SignatureCheck::NotChecked => ("present, not checked (no --keyring)", None),
                SignatureCheck::Unsigned => ("none", None),
            };
            if json {
                println!(
                    "{}",
                    json!({"ok": true, "exit_code": 0, "file": file, "package": p.name,
                           "version": p.version, "architecture": p.architecture,
                           "sha256": p.sha256, "signature": sig, "signer": signer,
                           "installed_size_kib": p.installed_size_kib, "units": p.units,
                           "control": p.control})
                );
            } else {
                println!("file:          {}", file.display());
                println!(
                    "package:       {} {} ({})",
                    p.name, p.version, p.architecture
                );
                println!("sha256:        {}", p.sha256);
                match signer {
                    Some(f) => println!("signature:     {sig}, signer {f}"),
                    None => println!("signature:     {sig}"),
                }
                if let Some(k) = p.installed_size_kib {
                    println!("installed:     {k} KiB");
                }
                if !p.units.is_empty() {
                    println!("units:         {}", p.units.join(" "));
                }
                println!("control:");
                for (k, v) in &p.control {
                    let first = v.lines().next().unwrap_or_default();
                    println!("  {k}: {first}");
                }
                println!("result:        passes (the device still judges the version order)");
            }
            0
        }
        Err(e) => {
            use install_helper::verify::VerifyError;
            // A file, keyring or policy that cannot be read is a usage error, like push's.
            let (code, exit, class, reason) = match &e {
                CheckError::Refused(VerifyError::Io { .. }) => (None, 2, "usage", e.to_string()),
                CheckError::Refused(v) => (Some(v.code().as_str()), 7, "refused", v.reason()),
                CheckError::Key(_) | CheckError::Policy(_) => (None, 2, "usage", e.to_string()),
            };
            if json {
                println!(
                    "{}",
                    json!({"ok": false, "exit_code": exit, "class": class, "file": file,
                           "code": code, "error": reason})
                );
            } else {
                match code {
                    Some(c) => eprintln!("iocomctl: {}: refused ({c}): {reason}", file.display()),
                    None => eprintln!("iocomctl: {reason}"),
                }
            }
            exit
        }
    }
}

/// Reads the password: a line from stdin, twice and without echo on a terminal.
fn read_password() -> Result<String, CtlError> {
    use std::io::BufRead;
    let stdin = std::io::stdin();
    let tty = stdin.is_terminal();
    let read = |prompt: &str| -> Result<String, CtlError> {
        if tty {
            eprint!("{prompt}");
        }
        let _echo = if tty { NoEcho::new() } else { None };
        let mut line = String::new();
        stdin
            .lock()
            .read_line(&mut line)
            .map_err(|e| CtlError::Usage(format!("cannot read the password: {e}")))?;
        if tty {
            eprintln!();
        }
        Ok(line.trim_end_matches(['\n', '\r']).to_owned())
    };
    let first = read("Password: ")?;
    if tty && read("Again: ")? != first {
        return Err(CtlError::Usage("the passwords differ".into()));
    }
    Ok(first)
}

/// Terminal echo off while it lives.
struct NoEcho(nix::sys::termios::Termios);

impl NoEcho {
    fn new() -> Option<Self> {
        use nix::sys::termios::{LocalFlags, SetArg, tcgetattr, tcsetattr};
        let stdin = std::io::stdin();
        let saved = tcgetattr(&stdin).ok()?;
        let mut t = saved.clone();
        t.local_flags.remove(LocalFlags::ECHO);
        tcsetattr(&stdin, SetArg::TCSANOW, &t).ok()?;
        Some(Self(saved))
    }
}

impl Drop for NoEcho {
    fn drop(&mut self) {
        let _ = nix::sys::termios::tcsetattr(
            std::io::stdin(),
            nix::sys::termios::SetArg::TCSANOW,
            &self.0,
        );
    }
}

fn print_devices(list: &[DeviceEntry], tty: bool) {
    let dash = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
    let rows: Vec<[String; 5]> = list
        .iter()
        .map(|d| {
            let state = if !d.info {
                "no info received".to_owned()
            } else if d.iocomd {
                format!(
                    "{} (last: {})",
                    d.state.map_or("-", |s| s.label()),
                    dash(&d.last_result)
                )
            } else {
                format!(
                    "no iocomd: tod_state {} tod_err {}",
                    d.tod_state.map_or_else(|| "-".into(), |v| v.to_string()),
                    d.tod_err.map_or_else(|| "-".into(), |v| v.to_string())
                )
            };
            [
                d.device.clone(),
                dash(&d.via),
                dash(&d.package),
                dash(&d.installed_version),
                state,
            ]
        })
        .collect();
    if !tty {
        // One tab-separated line per device for scripts that do not use --json.
        for r in &rows {
            println!("{}", r.join("\t"));
        }
        return;
    }
    let head = ["DEVICE", "VIA", "PACKAGE", "VERSION", "STATE"];
    let mut w = head.map(str::len);
    for r in &rows {
        for (i, c) in r.iter().enumerate() {
            if let Some(x) = w.get_mut(i) {
                *x = (*x).max(c.len());
            }
        }
    }
    let line = |cells: &[String]| {
        cells
            .iter()
            .zip(w)
            .map(|(c, n)| format!("{c:<n$}"))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_owned()
    };
    println!("{}", line(&head.map(String::from)));
    for r in &rows {
        println!("{}", line(r));
    }
    if rows.is_empty() {
        println!("(no devices)");
    }
}

fn print_status(name: &str, r: &DeviceReport) {
    let s = |v: &Option<String>| nonempty(v).unwrap_or("-").to_owned();
    println!("device:            {name}");
    if !r.iocomd {
        println!("iocomd status:     none (a plain IOCOM device: only its stream state is known)");
        println!(
            "tod_state:         {}",
            r.tod_state.map_or_else(|| "-".into(), |n| n.to_string())
        );
        println!(
            "tod_err:           {}",
            r.tod_err.map_or_else(|| "-".into(), |n| n.to_string())
        );
        return;
    }
    println!("package:           {}", s(&r.package));
    println!(
        "installed version: {}",
        nonempty(&r.installed_version).unwrap_or("none")
    );
    println!("last version:      {}", s(&r.version));
    println!(
        "state:             {}",
        r.state.map_or("-", |st| st.label())
    );
    println!(
        "last result:       {} ({}) {}",
        s(&r.code),
        r.result.map_or_else(|| "-".into(), |n| n.to_string()),
        s(&r.message)
    );
    println!(
        "results so far:    {}",
        r.seq.map_or_else(|| "-".into(), |n| n.to_string())
    );
    if let Some(f) = &r.fleet {
        println!("fleet:             {f}");
    }
    println!(
        "tod_err:           {}",
        r.tod_err.map_or_else(|| "-".into(), |n| n.to_string())
    );
    match &r.packages {
        None => println!("packages:          (not published by this iocomd)"),
        Some(list) if list.is_empty() => println!("packages:          none managed yet"),
        Some(list) => {
            println!("packages:");
            print_packages(list);
        }
    }
}

/// The managed packages as a table: name, version, last result, when (UTC).
fn print_packages(list: &[iocomd::status::PackageEntry]) {
    let rows: Vec<[String; 4]> = list
        .iter()
        .map(|p| {
            [
                p.name.clone(),
                p.version
                    .clone()
                    .unwrap_or_else(|| "(not installed)".into()),
                p.last_result.clone().unwrap_or_else(|| "-".into()),
                p.last_time.map_or_else(|| "-".into(), utc),
            ]
        })
        .collect();
    let head = ["NAME", "VERSION", "LAST RESULT", "WHEN"].map(String::from);
    let mut w = [0usize; 4];
    for r in std::iter::once(&head).chain(&rows) {
        for (x, c) in w.iter_mut().zip(r) {
            *x = (*x).max(c.len());
        }
    }
    for r in std::iter::once(&head).chain(&rows) {
        let cells: Vec<String> = r.iter().zip(w).map(|(c, n)| format!("{c:<n$}")).collect();
        println!("  {}", cells.join("  ").trim_end());
    }
}

/// Seconds since the epoch as `YYYY-MM-DD HH:MM:SS UTC`.
fn utc(secs: u64) -> String {
    format!("{} UTC", iocomd::civil::Civil::from_unix(secs).format(' '))
}

fn summary(results: &[ManyResult], json_mode: bool) -> u8 {
    let worst = ctl::worst_exit_code(results);
    if json_mode {
        let devices: Vec<Value> = results
            .iter()
            .map(|m| result_json(&m.device.to_string(), &m.result))
            .collect();
        for d in &devices {
            println!("{d}");
        }
        println!(
            "{}",
            json!({"event": "summary", "exit_code": worst, "ok": worst == 0,
                   "devices": results.len(),
                   "failed": results.iter().filter(|m| m.result.is_err()).count()})
        );
    } else {
        println!("summary:");
        for m in results {
            println!("  {}", result_line(&m.device.to_string(), &m.result));
        }
        let failed = results.iter().filter(|m| m.result.is_err()).count();
        println!(
            "{} of {} devices updated; exit status {worst}",
            results.len() - failed,
            results.len()
        );
    }
    worst
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    use tracing_subscriber::filter::{LevelFilter, Targets};
    let level = match (cli.quiet, cli.verbose) {
        (true, _) => LevelFilter::ERROR,
        (false, 0) => LevelFilter::WARN,
        (false, 1) => LevelFilter::INFO,
        (false, 2) => LevelFilter::DEBUG,
        (false, _) => LevelFilter::TRACE,
    };
    let filter = std::env::var("IOCOMCTL_LOG")
        .ok()
        .and_then(|v| iocomd::logging::parse_filter(&v).ok())
        .unwrap_or_else(|| Targets::new().with_default(level));
    let quiet = cli.quiet;
    {
        use tracing_subscriber::prelude::*;
        tracing_subscriber::registry()
            .with(filter)
            .with(tracing_subscriber::fmt::layer().with_writer(std::io::stderr))
            .init();
    }
    let json_mode = match &cli.cmd {
        Cmd::Push { conn, .. }
        | Cmd::PushMany { conn, .. }
        | Cmd::Status { conn, .. }
        | Cmd::Devices { conn, .. } => conn.json,
        Cmd::HashPassword { .. } | Cmd::Check { .. } | Cmd::Completions { .. } => false,
    };
    let device = match &cli.cmd {
        Cmd::Push { device, .. } | Cmd::Status { device, .. } => device.clone(),
        Cmd::PushMany { .. }
        | Cmd::Devices { .. }
        | Cmd::HashPassword { .. }
        | Cmd::Check { .. }
        | Cmd::Completions { .. } => String::new(),
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("iocomctl: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match rt.block_on(run(cli.cmd, quiet)) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            if json_mode {
                println!("{}", error_json(&device, &e));
            } else {
                eprintln!("iocomctl: {e}");
            }
            ExitCode::from(e.exit_code())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_lines_on_a_new_state_the_end_or_ten_points_more() {
        let v = UpdState::Verifying;
        let i = UpdState::Installing;
        assert!(device_line_due(None, v, Some(2)));
        assert!(!device_line_due(Some((v, 2)), v, Some(11)));
        assert!(device_line_due(Some((v, 2)), v, Some(12)));
        assert!(device_line_due(Some((v, 38)), i, Some(40)));
        assert!(device_line_due(Some((i, 95)), i, Some(100)));
        assert!(!device_line_due(Some((i, 95)), i, None));
        assert!(device_line_due(Some((i, 95)), UpdState::Idle, None));
    }
}
