//! Shared pieces of the DDI client tests: the in-process mock server ([`mock`]), a fake
//! [`Installer`] that records what it is given, and a harness running `ddi::run` on temp dirs.
#![allow(dead_code)]

pub mod artifact;
pub mod mock;

use mock::Mock;

use iocomd::config::{HawkbitAuth, HawkbitSettings};
use iocomd::ddi::{
    self, BoxFuture, Busy, DdiConfig, DdiStatus, InstallOutcome, Installer, PackageVersion,
    Reservation, SpooledFile,
};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;

/// What the fake installer was handed: (file name, content).
pub type Handed = Vec<(String, Vec<u8>)>;

/// Counts live reservations (the update slot).
#[derive(Debug)]
struct Slot(Arc<AtomicUsize>);
impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A fake installer: `busy` refuses reservations; `outcome` decides each install; `hold`
/// makes installs wait until `release` is notified.
#[derive(Debug, Default)]
pub struct FakeInstaller {
    pub busy: Mutex<Option<String>>,
    pub outcome: Mutex<Option<InstallOutcome>>,
    pub hold: Mutex<bool>,
    pub release: Arc<Notify>,
    pub installs: Mutex<Vec<Handed>>,
    pub versions: Mutex<Vec<PackageVersion>>,
    pub reserved: Arc<AtomicUsize>,
    pub started: Arc<Notify>,
}

impl FakeInstaller {
    pub fn installs(&self) -> Vec<Handed> {
        self.installs.lock().unwrap().clone()
    }
    pub fn live_reservations(&self) -> usize {
        self.reserved.load(Ordering::SeqCst)
    }
}

pub fn ok_outcome(installed: Vec<PackageVersion>) -> InstallOutcome {
    InstallOutcome {
        success: true,
        code: "ok".into(),
        number: 0,
        message: "installed; units healthy".into(),
        rolled_back: false,
        installed,
    }
}

impl Installer for FakeInstaller {
    fn reserve(&self, action: &str) -> BoxFuture<Result<Reservation, Busy>> {
        let r = match self.busy.lock().unwrap().clone() {
            Some(holder) => Err(Busy { holder }),
            None => {
                self.reserved.fetch_add(1, Ordering::SeqCst);
                Ok(Reservation::new(action, Slot(self.reserved.clone())))
            }
        };
        Box::pin(async move { r })
    }

    fn install(&self, r: Reservation, files: Vec<SpooledFile>) -> BoxFuture<InstallOutcome> {
        let handed: Handed = files
            .iter()
            .map(|f| (f.filename.clone(), std::fs::read(&f.path).unwrap()))
            .collect();
        self.installs.lock().unwrap().push(handed);
        for f in &files {
            let _ = std::fs::remove_file(&f.path);
        }
        let outcome = self
            .outcome
            .lock()
            .unwrap()
            .clone()
            .unwrap_or_else(|| ok_outcome(files.iter().map(|f| f.module.clone()).collect()));
        let hold = *self.hold.lock().unwrap();
        let release = self.release.clone();
        self.started.notify_one();
        Box::pin(async move {
            if hold {
                release.notified().await;
            }
            drop(r);
            outcome
        })
    }

    fn installed_versions(&self) -> Vec<PackageVersion> {
        self.versions.lock().unwrap().clone()
    }
}

/// Settings for a client of `server`, polling fast.
pub fn settings(server: &str) -> HawkbitSettings {
    HawkbitSettings {
        server: server.into(),
        tenant: "DEFAULT".into(),
        controller_id: "dev1".into(),
        auth: HawkbitAuth::None,
        ca: None,
        identity: None,
        attributes: BTreeMap::from([("hw_boardname".to_owned(), "gina".to_owned())]),
        version_package: None,
        poll_interval: Duration::from_millis(50),
        min_poll_interval: Duration::from_millis(50),
        progress_interval: Duration::from_millis(20),
        retry_min: Duration::from_millis(50),
        retry_max: Duration::from_millis(400),
        download_auth_other_hosts: false,
    }
}

/// A running client.
pub struct Client {
    pub status: watch::Receiver<DdiStatus>,
    pub stop: CancellationToken,
    pub task: tokio::task::JoinHandle<Result<(), ddi::DdiError>>,
}

impl Client {
    pub async fn shutdown(self) {
        self.stop.cancel();
        tokio::time::timeout(Duration::from_secs(30), self.task)
            .await
            .expect("client stops")
            .unwrap()
            .unwrap();
    }
}

/// Temp dirs of one device.
pub struct Device {
    pub dir: tempfile::TempDir,
}

impl Device {
    pub fn new() -> Self {
        Self {
            dir: tempfile::tempdir().unwrap(),
        }
    }
    pub fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }
    pub fn spool_dir(&self) -> PathBuf {
        self.dir.path().join("spool")
    }
    pub fn config(&self, h: HawkbitSettings) -> DdiConfig {
        DdiConfig {
            hawkbit: h,
            state_dir: self.state_dir(),
            spool_dir: self.spool_dir(),
            max_package_size: 64 << 20,
            min_free_space: 0,
        }
    }
    /// Files left in the spool.
    pub fn spool_files(&self) -> Vec<String> {
        std::fs::read_dir(self.spool_dir())
            .map(|d| {
                d.filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default()
    }
    pub fn start(&self, h: HawkbitSettings, installer: Arc<dyn Installer>) -> Client {
        let (tx, rx) = watch::channel(DdiStatus::default());
        let stop = CancellationToken::new();
        let task = tokio::spawn(ddi::run(self.config(h), installer, tx, stop.clone()));
        Client {
            status: rx,
            stop,
            task,
        }
    }
}

/// Polls `cond` every 20 ms for up to `secs` seconds; panics with `what` if it never holds.
pub async fn wait_for(secs: u64, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    while !cond() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub fn data(n: usize, seed: u8) -> Vec<u8> {
    (0..n)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

/// A device with a fresh state directory, polling `m`.
pub fn client(m: &Mock, fake: &Arc<FakeInstaller>) -> (Device, Client) {
    let dev = Device::new();
    let c = dev.start(settings(&m.url), fake.clone());
    (dev, c)
}

pub fn finals(m: &Mock, id: &str) -> Vec<(String, String)> {
    m.feedback(id)
        .iter()
        .map(Mock::exec)
        .filter(|(e, _)| e == "closed")
        .collect()
}
