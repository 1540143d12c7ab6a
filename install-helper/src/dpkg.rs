//! Running dpkg, dpkg-query, dpkg-repack and apt-get with fixed arguments and a
//! clean environment. The dpkg frontend lock is in [`crate::lock`] (re-exported here).
//!
//! Every child gets: an empty environment plus a fixed `PATH`, `LC_ALL=C`,
//! `DEBIAN_FRONTEND=noninteractive`, `HOME=/root` (the state dir for an unprivileged helper) and (while the helper holds the frontend lock)
//! `DPKG_FRONTEND_LOCKED=1`; stdin from `/dev/null`; stdout and stderr captured; a time limit.
//! dpkg always gets `--log=<Paths::dpkg_log>`, and `--root=<root>` for an isolated root.
//! Installs use `--force-confdef --force-confold --status-fd` (status lines read from a pipe),
//! never `--force-all`. With a [`Sandbox`] (isolated roots only), the dpkg runs that unpack
//! packages and run maintainer scripts (install, purge, configure) are confined to the package
//! root and the dpkg log ([`crate::sandbox`]).
//!
//! Dependency pre-flight: `apt-get install --simulate <file.deb>` with
//! `-o Dir::State::status=<admindir>/status` (the target root's dpkg database, so an isolated
//! root is checked against its own packages), empty package lists and source lists under
//! `<state>/apt/` (`Dir::State::Lists`, `Dir::Cache`, `Dir::Etc::SourceList=/dev/null`, ...)
//! and `Debug::NoLocking`. So only already installed packages satisfy dependencies — the helper
//! installs with `dpkg --install` and never downloads — and apt writes nothing into the root.
//! Exit 100 means unmet dependencies.

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

pub use crate::lock::{FrontendLock, LockError};
use crate::paths::{Paths, Settings};
use crate::sandbox::Sandbox;

/// dpkg runs under this `sh -c` wrapper: its status fd 3 is our stdout pipe and its own stdout
/// goes to stderr. (`--status-fd 1` would not do: dpkg marks the status fd close-on-exec, so
/// maintainer scripts would run with stdout closed and fail on their first `echo`; a
/// `--status-logger` runs with stdout closed.)
const STATUS_WRAPPER: &str = "exec 3>&1 1>&2; exec dpkg --status-fd 3 \"$@\"";

/// `PATH` given to every child.
pub const SAFE_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Failure to run a command at all (as opposed to a command that ran and failed).
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The program could not be started.
    #[error("cannot run {program}: {source}")]
    Spawn {
        /// Program name.
        program: String,
        /// Cause.
        source: std::io::Error,
    },
    /// The program exceeded its time limit and was killed.
    #[error("{program} did not finish within {limit:?} and was killed")]
    Timeout {
        /// Program name.
        program: String,
        /// The limit.
        limit: Duration,
    },
    /// Waiting for the program failed.
    #[error("waiting for {program}: {source}")]
    Wait {
        /// Program name.
        program: String,
        /// Cause.
        source: std::io::Error,
    },
}

/// Captured result of a finished command.
#[derive(Debug, Clone)]
pub struct Output {
    /// The command line, for logs and receipts.
    pub command: String,
    /// Exit status.
    pub status: ExitStatus,
    /// Captured stdout (dpkg status lines included, for installs).
    pub stdout: String,
    /// Captured stderr.
    pub stderr: String,
}

impl Output {
    /// True for exit status 0.
    pub fn success(&self) -> bool {
        self.status.success()
    }

    /// Exit code, if the process exited normally.
    pub fn code(&self) -> Option<i32> {
        self.status.code()
    }

    /// Command line plus both streams, for receipts.
    pub fn transcript(&self) -> String {
        format!(
            "$ {}\n[exit {}]\n{}{}",
            self.command,
            self.status
                .code()
                .map_or_else(|| "signal".to_string(), |c| c.to_string()),
            self.stdout,
            self.stderr
        )
    }
}

/// Runs commands against one dpkg database.
#[derive(Debug, Clone)]
pub struct Dpkg {
    paths: Paths,
    timeout: Duration,
    frontend_locked: bool,
    sandbox: Option<Sandbox>,
}

impl Dpkg {
    /// A runner for `paths` with a per-command time limit.
    pub fn new(paths: &Paths, timeout: Duration) -> Self {
        Dpkg {
            paths: paths.clone(),
            timeout,
            frontend_locked: false,
            sandbox: None,
        }
    }

    /// The runner for `settings`: its paths, command timeout and sandbox.
    pub fn for_settings(settings: &Settings) -> Self {
        let mut d = Dpkg::new(&settings.paths, settings.command_timeout);
        d.sandbox = settings.sandbox.clone();
        d
    }

    /// The same runner, telling dpkg the frontend lock is held by us (`DPKG_FRONTEND_LOCKED=1`).
    pub fn with_frontend_lock(&self, _lock: &FrontendLock) -> Self {
        let mut d = self.clone();
        d.frontend_locked = true;
        d
    }

    fn root_args(&self) -> Vec<String> {
        let mut a = Vec::new();
        if !self.paths.is_system_root() {
            a.push(format!("--root={}", self.paths.root.display()));
        }
        a
    }

    fn dpkg_args(&self) -> Vec<String> {
        let mut a = self.root_args();
        a.push(format!("--log={}", self.paths.dpkg_log.display()));
        a
    }

    /// `HOME` for children: `/root` as root (production); an unprivileged (demo) helper cannot
    /// read `/root/.dpkg.cfg`, and dpkg's warning about it would look like a damaged database.
    fn home(&self) -> std::path::PathBuf {
        if nix::unistd::geteuid().is_root() {
            "/root".into()
        } else {
            self.paths.state_dir.clone()
        }
    }

    /// `dpkg --install` of one package file.
    pub fn install(&self, deb: &Path, on_line: &mut dyn FnMut(&str)) -> Result<Output, RunError> {
        let mut a = self.dpkg_args();
        a.extend(["--force-confdef", "--force-confold", "--install"].map(String::from));
        a.push(deb.display().to_string());
        self.run_with_status(&a, on_line)
    }

    /// `dpkg --purge` of a package.
    pub fn purge(&self, package: &str) -> Result<Output, RunError> {
        let mut a = self.dpkg_args();
        a.extend(["--purge", package].map(String::from));
        self.run_with_status(&a, &mut |_| {})
    }

    /// `dpkg --configure -a` (repair an interrupted run).
    pub fn configure_pending(&self) -> Result<Output, RunError> {
        let mut a = self.dpkg_args();
        a.extend(["--force-confdef", "--force-confold", "--configure", "-a"].map(String::from));
        self.run_with_status(&a, &mut |_| {})
    }

    /// `dpkg --audit`: `Ok(None)` when clean, else its report.
    pub fn audit(&self) -> Result<Option<String>, RunError> {
        let mut a = self.root_args();
        a.push("--audit".into());
        let out = self.run("dpkg", &a, &mut |_| {})?;
        let report = format!("{}{}", out.stdout, out.stderr);
        if out.success() && report.trim().is_empty() {
            Ok(None)
        } else {
            Ok(Some(report))
        }
    }

    /// True when dpkg's own journal (`<admindir>/updates/`) has entries: dpkg was interrupted.
    pub fn interrupted(&self) -> bool {
        std::fs::read_dir(self.paths.dpkg_updates_dir())
            .map(|mut d| d.next().is_some())
            .unwrap_or(false)
    }

    /// The state of `package` in the dpkg database.
    pub fn query(&self, package: &str) -> Result<PackageState, RunError> {
        let a = vec![
            format!("--admindir={}", self.paths.admindir.display()),
            "--show".into(),
            "--showformat=${Status}\\t${Version}\\n".into(),
            package.to_string(),
        ];
        let out = self.run("dpkg-query", &a, &mut |_| {})?;
        Ok(PackageState::parse(&out.stdout))
    }

    /// `apt-get install --simulate <deb>` against this root's dpkg status, with no package lists
    /// (the helper never downloads: dependencies must already be installed).
    pub fn simulate(&self, deb: &Path) -> Result<Output, RunError> {
        let apt = self.paths.apt_dir();
        for sub in [
            "lists/partial",
            "cache/archives/partial",
            "etc/sources.list.d",
            "etc/preferences.d",
        ] {
            let _ = std::fs::create_dir_all(apt.join(sub));
        }
        let o = |k: &str, v: &Path| vec!["-o".to_string(), format!("{k}={}", v.display())];
        let mut a: Vec<String> = Vec::new();
        a.extend(o("Dir::State::status", &self.paths.admindir.join("status")));
        a.extend(o("Dir::State::Lists", &apt.join("lists")));
        a.extend(o(
            "Dir::State::extended_states",
            &apt.join("extended_states"),
        ));
        a.extend(o("Dir::Cache", &apt.join("cache")));
        a.extend(o("Dir::Etc::SourceList", Path::new("/dev/null")));
        a.extend(o("Dir::Etc::SourceParts", &apt.join("etc/sources.list.d")));
        a.extend(o("Dir::Etc::Preferences", Path::new("/dev/null")));
        a.extend(o(
            "Dir::Etc::PreferencesParts",
            &apt.join("etc/preferences.d"),
        ));
        a.extend(
            [
                "-o",
                "Debug::NoLocking=true",
                "-o",
                "APT::Get::List-Cleanup=false",
            ]
            .map(String::from),
        );
        a.extend(
            [
                "--simulate",
                "--no-install-recommends",
                "--quiet",
                "install",
            ]
            .map(String::from),
        );
        a.push(deb.display().to_string());
        self.run("apt-get", &a, &mut |_| {})
    }

    /// `dpkg-repack --tag=none <package>` (gzip -1) run in `out_dir`: rebuilds the installed version's
    /// package file from the files on disk and the dpkg database (a rollback source for a
    /// version the helper did not install itself, e.g. one installed by apt).
    pub fn repack(&self, package: &str, out_dir: &Path) -> Result<Output, RunError> {
        let mut a = self.root_args();
        // A local rollback copy: fast gzip instead of xz (which takes ~10 s for iocomd itself).
        a.extend(
            [
                "--tag=none",
                "--deb-option=-Zgzip",
                "--deb-option=-z1",
                package,
            ]
            .map(String::from),
        );
        self.run_in("dpkg-repack", &a, Some(out_dir), &mut |_| {})
    }

    /// `dpkg --print-architecture` of the host.
    pub fn host_architecture(timeout: Duration) -> Result<String, RunError> {
        let d = Dpkg::new(&Paths::production(), timeout);
        let out = d.run("dpkg", &["--print-architecture".to_string()], &mut |_| {})?;
        Ok(out.stdout.trim().to_string())
    }

    /// Runs dpkg with `args` plus `--status-fd` on our stdout (`on_line` sees status lines);
    /// dpkg's and the maintainer scripts' own output is captured as stderr.
    fn run_with_status(
        &self,
        args: &[String],
        on_line: &mut dyn FnMut(&str),
    ) -> Result<Output, RunError> {
        let mut a = vec![
            "-c".to_string(),
            STATUS_WRAPPER.to_string(),
            "dpkg".to_string(),
        ];
        a.extend(args.iter().cloned());
        let mut out = match &self.sandbox {
            Some(sb) => {
                // The log must exist to be bind-mounted writable.
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&self.paths.dpkg_log)
                    .map_err(|source| RunError::Spawn {
                        program: format!("dpkg (log {})", self.paths.dpkg_log.display()),
                        source,
                    })?;
                let writable = [self.paths.root.as_path(), self.paths.dpkg_log.as_path()];
                let (program, a) = sb.wrap(&writable, "sh", &a);
                self.run(&program, &a, on_line)?
            }
            None => self.run("sh", &a, on_line)?,
        };
        out.command = format!("dpkg --status-fd 3 {}", args.join(" "));
        Ok(out)
    }

    fn run(
        &self,
        program: &str,
        args: &[String],
        on_line: &mut dyn FnMut(&str),
    ) -> Result<Output, RunError> {
        self.run_in(program, args, None, on_line)
    }

    fn run_in(
        &self,
        program: &str,
        args: &[String],
        cwd: Option<&Path>,
        on_line: &mut dyn FnMut(&str),
    ) -> Result<Output, RunError> {
        let command = format!("{program} {}", args.join(" "));
        tracing::debug!(%command, "running");
        let mut cmd = Command::new(program);
        if let Some(dir) = cwd {
            cmd.current_dir(dir);
        }
        cmd.args(args)
            .env_clear()
            .env("PATH", SAFE_PATH)
            .env("LC_ALL", "C")
            .env("DEBIAN_FRONTEND", "noninteractive")
            .env("HOME", self.home())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if self.frontend_locked {
            cmd.env("DPKG_FRONTEND_LOCKED", "1");
        }
        let spawn_err = |source| RunError::Spawn {
            program: program.to_string(),
            source,
        };
        let mut child = cmd.spawn().map_err(spawn_err)?;
        let stderr = child.stderr.take();
        let err_thread = thread::spawn(move || {
            let mut s = String::new();
            if let Some(mut e) = stderr {
                let mut buf = Vec::new();
                let _ = e.read_to_end(&mut buf);
                s = String::from_utf8_lossy(&buf).into_owned();
            }
            s
        });
        let (tx, rx) = std::sync::mpsc::channel::<String>();
        let stdout = child.stdout.take();
        let out_thread = thread::spawn(move || {
            if let Some(o) = stdout {
                for line in BufReader::new(o).split(b'\n') {
                    let Ok(line) = line else { break };
                    if tx
                        .send(String::from_utf8_lossy(&line).into_owned())
                        .is_err()
                    {
                        break;
                    }
                }
            }
        });
        let deadline = Instant::now() + self.timeout;
        let mut stdout_text = String::new();
        let mut timed_out = false;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                timed_out = true;
                break;
            }
            match rx.recv_timeout(left) {
                Ok(line) => {
                    on_line(&line);
                    stdout_text.push_str(&line);
                    stdout_text.push('\n');
                }
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                    timed_out = true;
                    break;
                }
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
            }
        }
        if timed_out {
            let _ = child.kill();
            let _ = child.wait();
            return Err(RunError::Timeout {
                program: program.to_string(),
                limit: self.timeout,
            });
        }
        let _ = out_thread.join();
        let status = child.wait().map_err(|source| RunError::Wait {
            program: program.to_string(),
            source,
        })?;
        let stderr_text = err_thread.join().unwrap_or_default();
        Ok(Output {
            command,
            status,
            stdout: stdout_text,
            stderr: stderr_text,
        })
    }
}

/// A package's state in the dpkg database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackageState {
    /// dpkg's status word (`installed`, `half-configured`, `not-installed`, ...).
    pub status: String,
    /// The version recorded (empty when not installed).
    pub version: Option<String>,
}

impl PackageState {
    /// Parses `dpkg-query --showformat='${Status}\t${Version}\n'` output (empty: unknown).
    pub fn parse(text: &str) -> Self {
        let line = text.lines().next().unwrap_or("");
        let (status, version) = line.split_once('\t').unwrap_or((line, ""));
        let word = status.split_whitespace().last().unwrap_or("not-installed");
        let version = (!version.is_empty() && word != "not-installed" && word != "config-files")
            .then(|| version.to_string());
        PackageState {
            status: word.to_string(),
            version,
        }
    }

    /// True when fully installed and configured.
    pub fn is_installed(&self) -> bool {
        self.status == "installed"
    }

    /// The version, if fully installed.
    pub fn installed_version(&self) -> Option<&str> {
        if self.is_installed() {
            self.version.as_deref()
        } else {
            None
        }
    }
}

/// Extracts a progress message from a dpkg status line (`processing: unpack: pkg`,
/// `status: pkg: half-installed`), or `None` for ordinary output.
pub fn status_line(line: &str) -> Option<&str> {
    (line.starts_with("processing: ") || line.starts_with("status: ")).then_some(line)
}

/// How far dpkg is, in percent of its run, for a `--status-fd` line: unpacking, unpacked,
/// configuring, installed. The caller keeps progress from moving back (dpkg reports each
/// package of a run, and triggers after it).
pub fn status_percent(line: &str) -> u32 {
    let state = line.rsplit(": ").next().unwrap_or("");
    if line.starts_with("processing: unpack") || state == "half-installed" {
        20
    } else if state == "unpacked" {
        50
    } else if line.starts_with("processing: configure") || state == "half-configured" {
        70
    } else if state == "installed" || state == "triggers-pending" {
        100
    } else {
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn package_state_parses_dpkg_query_lines() {
        let s = PackageState::parse("install ok installed\t1.0-1\n");
        assert_eq!(s.installed_version(), Some("1.0-1"));
        let s = PackageState::parse("install ok half-configured\t2.0\n");
        assert!(!s.is_installed());
        assert_eq!(s.version.as_deref(), Some("2.0"));
        assert_eq!(s.installed_version(), None);
        let s = PackageState::parse("");
        assert_eq!(s.status, "not-installed");
        assert_eq!(s.version, None);
        let s = PackageState::parse("deinstall ok config-files\t1.0\n");
        assert_eq!(s.version, None);
    }

    #[test]
    fn status_lines_are_recognised() {
        assert!(status_line("processing: unpack: app").is_some());
        assert!(status_line("status: app: half-installed").is_some());
        assert!(status_line("Setting up app (1.0) ...").is_none());
        assert_eq!(status_percent("processing: unpack: app"), 20);
        assert_eq!(status_percent("status: app: unpacked"), 50);
        assert_eq!(status_percent("status: app: half-configured"), 70);
        assert_eq!(status_percent("status: app: installed"), 100);
        assert_eq!(status_percent("status: app: config-files"), 0);
    }

    #[test]
    fn run_gives_a_clean_environment_and_null_stdin() {
        let d = tempfile::tempdir().unwrap();
        let paths = Paths::isolated(d.path(), d.path(), d.path());
        let dp = Dpkg::new(&paths, Duration::from_secs(30));
        let out = dp
            .run(
                "sh",
                &["-c".into(), "env; cat; echo end".into()],
                &mut |_| {},
            )
            .unwrap();
        assert!(out.stdout.contains("DEBIAN_FRONTEND=noninteractive"));
        assert!(out.stdout.contains(&format!("PATH={SAFE_PATH}")));
        assert!(!out.stdout.contains("CARGO"), "{}", out.stdout);
        assert!(out.stdout.ends_with("end\n"));
    }

    #[test]
    fn run_kills_on_timeout() {
        let d = tempfile::tempdir().unwrap();
        let paths = Paths::isolated(d.path(), d.path(), d.path());
        let dp = Dpkg::new(&paths, Duration::from_millis(300));
        let e = dp.run("sleep", &["30".into()], &mut |_| {}).unwrap_err();
        assert!(matches!(e, RunError::Timeout { .. }), "{e}");
    }
}
