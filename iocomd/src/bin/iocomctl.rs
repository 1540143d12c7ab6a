//! `iocomctl`: controller command line to push packages to IOCOM devices and show their status.
//! The work is done by [`iocomd::ctl`]; this file parses arguments and renders progress.

use clap::{Args, Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use iocomd::ctl::{
    self, ConnectOptions, Credentials, CtlError, DevicePath, DeviceReport, ManyResult, Progress,
    PushOptions, PushOutcome, SerialLine, StatusOptions, Target, Timeouts, TlsOptions, Transport,
};
use serde_json::{Value, json};
use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

const EXIT_TABLE: &str = "\
Exit status:
  0  installed and healthy (push), status read (status)
  1  internal error
  2  usage: bad arguments, device path, file, TLS or password file
  3  connection failed or dropped, wrong device, device not ready
  4  authentication refused (user/password), or not authorized for pushes
  5  device busy with another update
  6  transfer failed (CRC mismatch, interrupted, too large, no spool space)
  7  package refused (signature, policy, version, archive, dependencies)
  8  install failed or rolled back
  9  timed out waiting for the result
push-many exits with the worst (largest) status of its devices.
Logs: IOCOMCTL_LOG=debug (tracing filter syntax), on stderr.";

/// Push software packages to IOCOM devices and show their update status.
#[derive(Debug, Parser)]
#[command(
    name = "iocomctl",
    version,
    about = "Push software packages (.deb) to IOCOM devices running iocomd and show their update status",
    after_help = EXIT_TABLE
)]
struct Cli {
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
        /// The device, e.g. gina3.cafenet (name, number, network).
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
        /// Targets: DEVICE@HOST:PORT to connect, or DEVICE to wait for with --listen.
        #[arg(required = true)]
        targets: Vec<String>,
    },
    /// Show the installed version and the last update result of a device.
    #[command(after_help = EXIT_TABLE)]
    Status {
        #[command(flatten)]
        conn: ConnArgs,
        /// The device, e.g. gina3.cafenet.
        device: String,
    },
}

#[derive(Debug, Args)]
struct ConnArgs {
    /// Connect to the device at HOST:PORT (6368 plain, 6369 TLS).
    #[arg(long, value_name = "HOST:PORT", conflicts_with = "listen")]
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
            (Some(c), None, None) => Ok(Transport::Connect(c.clone())),
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
    bar: Option<ProgressBar>,
    tty: bool,
    last_tenth: u64,
}

impl Output {
    fn new(json: bool) -> Self {
        Self {
            json,
            bar: None,
            tty: std::io::stderr().is_terminal(),
            last_tenth: 0,
        }
    }

    fn event(&mut self, device: &str, p: &Progress) {
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
        Progress::Authenticated { .. } => "authenticated".into(),
        Progress::Started {
            total,
            ring,
            installed_version,
        } => format!(
            "sending {total} bytes (ring {ring} bytes, installed {})",
            installed_version.as_deref().unwrap_or("-")
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
        Ok(o) => format!(
            "{device}: installed and healthy: {} {} ({} bytes in {:.1} s, total {:.1} s)",
            o.report.package.as_deref().unwrap_or("package"),
            o.report
                .installed_version
                .as_deref()
                .or(o.report.version.as_deref())
                .unwrap_or(""),
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

async fn run(cmd: Cmd) -> Result<u8, CtlError> {
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
            let mut out = Output::new(conn.json);
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
                        transport: Transport::Connect(addr.to_owned()),
                    },
                    (None, Some(l), None) => Target {
                        device: device_arg(t)?,
                        transport: Transport::Listen(l),
                    },
                    (None, None, Some(c)) => Target {
                        device: device_arg(t)?,
                        transport: Transport::Connect(c.clone()),
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
                    Output::new(true).event(name, &p);
                } else if let Some(line) = describe(&p) {
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
            let name = opts.target.device.to_string();
            let r = ctl::status(&opts).await?;
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
    }
}

fn print_status(name: &str, r: &DeviceReport) {
    let s = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
    println!("device:            {name}");
    println!("package:           {}", s(&r.package));
    println!("installed version: {}", s(&r.installed_version));
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
    println!(
        "tod_err:           {}",
        r.tod_err.map_or_else(|| "-".into(), |n| n.to_string())
    );
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
    let filter = tracing_subscriber::EnvFilter::try_from_env("IOCOMCTL_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let json_mode = match &cli.cmd {
        Cmd::Push { conn, .. } | Cmd::PushMany { conn, .. } | Cmd::Status { conn, .. } => conn.json,
    };
    let device = match &cli.cmd {
        Cmd::Push { device, .. } | Cmd::Status { device, .. } => device.clone(),
        Cmd::PushMany { .. } => String::new(),
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
    match rt.block_on(run(cli.cmd)) {
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
