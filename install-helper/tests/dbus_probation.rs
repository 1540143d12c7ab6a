//! Time to healthy with probation, through the real service over a peer-to-peer connection
//! with a systemd stand-in: `Healthy` (provisional) as soon as the `Type=notify` unit passed
//! the short gate, then the settled `Finished` — `ok` after a quiet probation, and
//! `unhealthy-rolled-back` (receipt, `Result()`, `Status()`) when the new version crashes
//! during the probation.

mod common;
mod txn_support;

use std::collections::HashMap;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use install_api::{ErrorCode, InstallHelper1Proxy, TxResult};
use install_helper::auth::AuthConfig;
use install_helper::health::UnitSample;
use install_helper::service::{self, InstallHelper, Transport};
use install_helper::units::{Systemd, UnitError};
use txn_support::*;

const LONG: Duration = Duration::from_secs(120);

/// The unit runs the version installed in the root; 2.0 crashes 1 s after its start.
#[derive(Debug)]
struct Unit {
    root: PathBuf,
    pid: u32,
    restarts: u32,
    started: Instant,
}

struct StandIn(Arc<Mutex<Unit>>);

impl Systemd for StandIn {
    fn daemon_reload(&mut self) -> Result<(), UnitError> {
        Ok(())
    }
    fn restart(&mut self, _unit: &str) -> Result<(), UnitError> {
        let mut u = self.0.lock().unwrap();
        u.pid += 10;
        u.started = Instant::now();
        Ok(())
    }
    fn sample(&mut self, _unit: &str) -> Result<Option<UnitSample>, UnitError> {
        let mut u = self.0.lock().unwrap();
        let v =
            std::fs::read_to_string(u.root.join("usr/share/iocom-app/version")).unwrap_or_default();
        let crashed = v == "2.0" && u.started.elapsed() > Duration::from_secs(1);
        if crashed {
            // systemd restarts it (Restart=on-failure): a new PID and NRestarts + 1.
            u.restarts += 1;
            u.pid += 1;
            u.started = Instant::now();
        }
        Ok(Some(UnitSample {
            active_state: if crashed { "activating" } else { "active" }.into(),
            sub_state: if crashed { "auto-restart" } else { "running" }.into(),
            service_type: "notify".into(),
            result: if crashed { "exit-code" } else { "success" }.into(),
            main_pid: u.pid,
            n_restarts: u.restarts,
            exe: Some("/usr/bin/iocom-app".into()),
        }))
    }
}

fn app(version: &str, w: &World, signer: &Signer) -> PathBuf {
    let mut p = Pkg::new("iocom-app", version);
    p.files.push((
        "lib/systemd/system/iocom-app.service".into(),
        "[Service]\nType=notify\nExecStart=/usr/bin/iocom-app\n".into(),
    ));
    signer.sign(&p.build(&w.debs))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_crash_during_probation_rolls_back_after_a_provisional_success() {
    let w = World::new();
    let signer = Signer::new(w.tmp.path());
    let mut s = w.settings();
    s.ready_gate = Duration::from_millis(200);
    s.health_window = Duration::from_secs(5);
    s.probation = Duration::from_secs(3);
    s.start_timeout = Duration::from_secs(10);
    let unit = Arc::new(Mutex::new(Unit {
        root: w.root.clone(),
        pid: 100,
        restarts: 0,
        started: Instant::now(),
    }));
    let u2 = unit.clone();
    let helper = InstallHelper::new(
        s,
        Arc::new(signer.verifier().for_target(&w.settings().paths)),
        AuthConfig {
            allowed_uids: vec![nix::unistd::getuid().as_raw()],
            polkit: false,
        },
    )
    .with_systemd(Box::new(move || Box::new(StandIn(u2.clone()))));
    let (a, b) = UnixStream::pair().unwrap();
    let (server, conn) = tokio::join!(
        service::serve(helper, Transport::P2p(a)),
        zbus::connection::Builder::unix_stream(b).p2p().build()
    );
    let (_server, conn) = (server.unwrap(), conn.unwrap());
    let proxy = InstallHelper1Proxy::builder(&conn).build().await.unwrap();
    let mut healthy = proxy.receive_healthy().await.unwrap();
    let mut finished = proxy.receive_finished().await.unwrap();

    for (version, settled_code, installed) in [
        ("1.0", ErrorCode::Ok, "1.0"),
        ("2.0", ErrorCode::UnhealthyRolledBack, "1.0"),
    ] {
        let deb = app(version, &w, &signer);
        let file = std::fs::File::open(&deb).unwrap();
        let t0 = Instant::now();
        let txid = proxy
            .install(zbus::Fd::from(&file), HashMap::new())
            .await
            .unwrap();

        // Provisional success at the gate, well before the probation ends.
        let h = tokio::time::timeout(LONG, healthy.next())
            .await
            .unwrap()
            .unwrap();
        let a = h.args().unwrap();
        let at_gate = t0.elapsed();
        assert_eq!(a.txid, txid);
        let p: TxResult = serde_json::from_str(&a.result_json).unwrap();
        assert!(p.is_provisional(), "{p:#?}");
        assert_eq!(
            (p.code, p.installed.as_deref()),
            (ErrorCode::Ok, Some(version))
        );
        assert_eq!(p.probation_until, Some(a.probation_until));
        // While the probation runs the transaction is current, with its end.
        let st: serde_json::Value = serde_json::from_str(&proxy.status().await.unwrap()).unwrap();
        assert_eq!(st["current"]["txid"], txid.as_str());
        assert_eq!(st["current"]["probation_until"], a.probation_until);

        // Then the settled result.
        let f = tokio::time::timeout(LONG, finished.next())
            .await
            .unwrap()
            .unwrap();
        let fa = f.args().unwrap();
        assert_eq!(fa.txid, txid);
        let r: TxResult = serde_json::from_str(&fa.result_json).unwrap();
        assert!(r.settled, "{r:#?}");
        assert_eq!(r.code, settled_code, "{version}: {r:#?}");
        assert_eq!(fa.code, settled_code.as_str());
        assert_eq!(r.installed.as_deref(), Some(installed));
        assert_eq!(dpkg_status(&w.root, "iocom-app").unwrap().1, installed);
        let step = |name: &str| r.steps.iter().find(|s| s.name == name).map(|s| s.outcome);
        if settled_code == ErrorCode::Ok {
            assert!(
                t0.elapsed() >= at_gate + Duration::from_secs(2),
                "probation not watched"
            );
            assert_eq!(step("probation"), Some(install_api::StepOutcome::Done));
        } else {
            assert!(r.message.contains("during the probation"), "{}", r.message);
            assert!(
                r.message.contains("iocom-app 1.0 restored"),
                "{}",
                r.message
            );
            assert_eq!(step("probation"), Some(install_api::StepOutcome::Failed));
            assert_eq!(
                step("health-gate-after-rollback"),
                Some(install_api::StepOutcome::Done)
            );
        }
        // Receipt and status.json hold the settled result.
        let back: TxResult = serde_json::from_str(&proxy.result(&txid).await.unwrap()).unwrap();
        assert_eq!((back.code, back.settled), (settled_code, true));
        let st: serde_json::Value = serde_json::from_str(&proxy.status().await.unwrap()).unwrap();
        assert!(st["current"].is_null());
        assert_eq!(st["last"]["code"], settled_code.as_str());
        assert_eq!(st["last"]["settled"], true);
    }
    let restarts = unit.lock().unwrap().restarts;
    assert!(restarts >= 1, "the crash was not seen");
}
