//! The daemon with the real install helper on a private `dbus-daemon`, as on a device (the
//! helper owns `org.iocom.InstallHelper1`, is D-Bus activated and exits when idle): the early
//! refusal follows the policy of the instance that owns the name now — read again when the
//! name changes owner, without anything else calling the helper, and at the next push after
//! the instance exited (the next one may have a changed configuration).

mod daemon_support;

use daemon_support::bus::PrivateBus;
use daemon_support::{WAIT, build_package, helper_binary, push};
use futures_util::StreamExt;
use iocomd::config::{HelperConnection, Settings};
use iocomd::daemon::{self, Listener};
use iocomd::demo::DemoEnv;
use iocomd::helper_client::{BUS_NAME, HelperClient};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// An instance of the real helper on `bus` with `policy`, killed on drop.
struct Instance(Child);

/// The helper's arguments on `bus` with `policy`.
fn helper_args(bus: &str, env: &DemoEnv, policy: &Path) -> Vec<String> {
    let uid = nix::unistd::getuid().as_raw().to_string();
    let path = |p: &Path| p.to_string_lossy().into_owned();
    vec![
        "--bus-address".into(),
        bus.into(),
        "--root".into(),
        path(&env.dpkg_root),
        "--state-dir".into(),
        path(&env.helper_state),
        "--policy".into(),
        path(policy),
        "--allow-uid".into(),
        uid,
    ]
}

impl Instance {
    fn start(bus: &str, env: &DemoEnv, policy: &Path) -> Instance {
        let child = Command::new(helper_binary())
            .args(helper_args(bus, env, policy))
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        Instance(child)
    }

    fn stop(mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Waits until the helper's name has an owner (`owned`) or none.
async fn wait_owner(dbus: &zbus::fdo::DBusProxy<'_>, owned: bool) {
    let until = Instant::now() + WAIT;
    let name = zbus::names::BusName::try_from(BUS_NAME).unwrap();
    while dbus.name_has_owner(name.clone()).await.unwrap() != owned {
        assert!(Instant::now() < until, "{BUS_NAME} owned stays {}", !owned);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The demo's policy with only the demo's own packages allowed.
fn narrowed(env: &DemoEnv) -> String {
    let text = std::fs::read_to_string(&env.policy).unwrap();
    let narrowed = text.replace(
        "allowed_packages = [\"*\"]",
        "allowed_packages = [\"iocom-demo-*\"]",
    );
    assert_ne!(narrowed, text, "the demo policy allows every name");
    narrowed
}

/// The daemon on `bus` (its helper reached there), listening on 127.0.0.1:0.
async fn start_daemon(
    bus: &str,
    env: &DemoEnv,
) -> (
    std::net::SocketAddr,
    CancellationToken,
    tokio::task::JoinHandle<Result<(), daemon::DaemonError>>,
) {
    let mut settings = Settings::demo(&env.state_dir);
    settings.listen.clear();
    settings.helper = HelperConnection::Bus {
        address: bus.to_owned(),
    };
    let client = HelperClient::bus(bus).await.unwrap();
    let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = tcp.local_addr().unwrap();
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(daemon::run(
        vec![Listener { tcp, tls: None }],
        settings,
        Some(client),
        shutdown.clone(),
    ));
    (addr, shutdown, task)
}

async fn stop_daemon(
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<Result<(), daemon::DaemonError>>,
) {
    shutdown.cancel();
    tokio::time::timeout(WAIT, task)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}

/// A monitor of the bus seeing every `Status()` call to the helper.
async fn status_calls(bus: &str) -> (zbus::Connection, zbus::MessageStream) {
    let mon = zbus::connection::Builder::address(bus)
        .build()
        .await
        .unwrap();
    let stream = zbus::MessageStream::from(&mon);
    let rule = zbus::MatchRule::try_from(
        "type='method_call',interface='org.iocom.InstallHelper1',member='Status'",
    )
    .unwrap();
    zbus::fdo::MonitoringProxy::new(&mon)
        .await
        .unwrap()
        .become_monitor(&[rule], 0)
        .await
        .unwrap();
    (mon, stream)
}

fn refused_early(st: &iocomd::status::UpdateStatus) -> bool {
    st.code != "ok" && st.msg.contains("(refused from its first")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_helper_instance_with_another_policy_changes_the_early_refusal() {
    let bus = PrivateBus::start(None);
    let dir = tempfile::tempdir().unwrap();
    let env = iocomd::demo::prepare(&dir.path().join("state")).unwrap();
    let narrow = env.state_dir.join("narrow-policy.toml");
    std::fs::write(&narrow, narrowed(&env)).unwrap();

    let probe = zbus::connection::Builder::address(bus.address.as_str())
        .build()
        .await
        .unwrap();
    let dbus = zbus::fdo::DBusProxy::new(&probe).await.unwrap();
    let first = Instance::start(&bus.address, &env, &narrow);
    wait_owner(&dbus, true).await;

    let (addr, shutdown, task) = start_daemon(&bus.address, &env).await;

    let pkg = build_package(&env, "iocom-test-policy", "1.0", 2 << 20);
    let bytes = std::fs::read(&pkg).unwrap();
    let (_, st, _) = push(addr, bytes.clone()).await;
    assert!(refused_early(&st), "{st:?}");

    // The instance goes away; a new one with the demo's policy (every name) takes the name.
    let (_monitor, mut calls) = status_calls(&bus.address).await;
    first.stop();
    wait_owner(&dbus, false).await;
    let _second = Instance::start(&bus.address, &env, &env.policy);
    wait_owner(&dbus, true).await;
    // The daemon asks the new instance for its policy by itself, no push needed.
    let asked = tokio::time::timeout(WAIT, async {
        while let Some(m) = calls.next().await {
            let m = m.unwrap();
            let h = m.header();
            if h.message_type() == zbus::message::Type::MethodCall
                && h.member().is_some_and(|n| n.as_str() == "Status")
            {
                return true;
            }
        }
        false
    })
    .await;
    assert_eq!(asked, Ok(true), "the new instance was not asked its policy");
    let (_, st, _) = push(addr, bytes.clone()).await;
    assert_eq!(st.code, "ok", "{st:?}");
    assert_eq!(st.inst_ver, "1.0", "{st:?}");
    assert_eq!(
        daemon_support::installed_version(&env.dpkg_root, "iocom-test-policy").as_deref(),
        Some("1.0")
    );
    stop_daemon(shutdown, task).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_policy_changed_while_the_helper_was_idle_is_read_at_the_next_push() {
    let dir = tempfile::tempdir().unwrap();
    let env = iocomd::demo::prepare(&dir.path().join("state")).unwrap();
    // One policy file, as on a device; the helper is activated on demand and exits after 1 s
    // without a call.
    let policy = env.state_dir.join("device-policy.toml");
    std::fs::write(&policy, narrowed(&env)).unwrap();
    let program = helper_binary();
    let exec = |address: &str| {
        let mut args = helper_args(address, &env, &policy);
        args.extend(["--idle-exit".into(), "1".into()]);
        format!("{} {}", program.display(), args.join(" "))
    };
    let bus = PrivateBus::start(Some(&exec));
    let probe = zbus::connection::Builder::address(bus.address.as_str())
        .build()
        .await
        .unwrap();
    let dbus = zbus::fdo::DBusProxy::new(&probe).await.unwrap();
    // The daemon's first Status() activates the helper.
    let (addr, shutdown, task) = start_daemon(&bus.address, &env).await;
    let pkg = build_package(&env, "iocom-test-idle", "1.0", 2 << 20);
    let bytes = std::fs::read(&pkg).unwrap();
    let (_, st, _) = push(addr, bytes.clone()).await;
    assert!(refused_early(&st), "{st:?}");
    // The administrator widens the policy; the helper exits idle meanwhile.
    std::fs::write(&policy, std::fs::read_to_string(&env.policy).unwrap()).unwrap();
    wait_owner(&dbus, false).await;
    // Nothing runs the helper now: the next push must not be refused by the old policy.
    let (_, st, _) = push(addr, bytes).await;
    assert_eq!(st.code, "ok", "{st:?}");
    assert_eq!(
        daemon_support::installed_version(&env.dpkg_root, "iocom-test-idle").as_deref(),
        Some("1.0")
    );
    stop_daemon(shutdown, task).await;
}
