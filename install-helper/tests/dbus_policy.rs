//! The helper on a private `dbus-daemon` whose policy includes the SHIPPED bus policy file
//! (`systemd/dbus-1/system.d/org.iocom.InstallHelper1.conf`), adapted only in the user mapping:
//! the host has no `iocomd` user, so `user="iocomd"` is mapped to uid 65534 (`nobody`).
//! Callers of other uids are this test binary re-executed under `setpriv --reuid` (the
//! ignored test `as_client` is that entry point).
//!
//! Checked: root installs; uid 65534 passes the bus policy but is refused by the helper's own
//! uid check while not allowed (`not-authorized`), and installs once allowed; uid 1 is refused
//! by the bus policy (`AccessDenied`); a non-root uid may not own the name.

mod common;
mod txn_support;

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use futures_util::StreamExt;
use install_api::InstallHelper1Proxy;
use txn_support::*;

const LONG: Duration = Duration::from_secs(120);
const SHIPPED: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../systemd/dbus-1/system.d/org.iocom.InstallHelper1.conf"
);

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A private system-like bus.
struct Bus {
    _daemon: Killed,
    address: String,
}

fn start_bus(dir: &Path) -> Bus {
    start_bus_with(dir, &[])
}

fn start_bus_with(dir: &Path, extra_includes: &[&str]) -> Bus {
    let shipped = std::fs::read_to_string(SHIPPED).unwrap();
    assert_eq!(
        shipped.matches("user=\"iocomd\"").count(),
        1,
        "shipped policy changed shape"
    );
    let adapted = shipped.replace("user=\"iocomd\"", "user=\"65534\"");
    std::fs::write(dir.join("org.iocom.InstallHelper1.conf"), adapted).unwrap();
    // The default policy is the one of Debian's /usr/share/dbus-1/system.conf.
    let conf = format!(
        r#"<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path={dir}/bus.sock</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <deny own="*"/>
    <deny send_type="method_call"/>
    <allow send_type="signal"/>
    <allow send_requested_reply="true" send_type="method_return"/>
    <allow send_requested_reply="true" send_type="error"/>
    <allow receive_type="method_call"/>
    <allow receive_type="method_return"/>
    <allow receive_type="error"/>
    <allow receive_type="signal"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus.Introspectable"/>
  </policy>
  <include>{dir}/org.iocom.InstallHelper1.conf</include>
  {extra}
</busconfig>
"#,
        dir = dir.display(),
        extra = extra_includes
            .iter()
            .map(|i| format!("<include>{i}</include>"))
            .collect::<String>()
    );
    let conf_path = dir.join("bus.conf");
    std::fs::write(&conf_path, conf).unwrap();
    let mut child = Command::new("dbus-daemon")
        .arg(format!("--config-file={}", conf_path.display()))
        .args(["--nofork", "--print-address=1"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert!(line.starts_with("unix:path="), "dbus-daemon said {line:?}");
    Bus {
        _daemon: Killed(child),
        address: line.trim().to_string(),
    }
}

fn start_helper(bus: &Bus, w: &World, policy: &Path, uids: &[u32]) -> Killed {
    start_helper_with(bus, w, policy, uids, &[])
}

fn start_helper_with(bus: &Bus, w: &World, policy: &Path, uids: &[u32], extra: &[&str]) -> Killed {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_iocom-install-helper"));
    cmd.arg("--bus-address")
        .arg(&bus.address)
        .arg("--root")
        .arg(&w.root)
        .arg("--state-dir")
        .arg(&w.state)
        .arg("--policy")
        .arg(policy)
        .args(["--lock-timeout", "5", "--space-reserve-mib", "0"])
        .stdin(Stdio::null())
        .stderr(std::fs::File::create(w.tmp.path().join("helper.log")).unwrap());
    for u in uids {
        cmd.arg("--allow-uid").arg(u.to_string());
    }
    cmd.args(extra);
    Killed(cmd.spawn().unwrap())
}

/// Waits (on the NameOwnerChanged signal) until the helper owns its name.
async fn wait_for_helper(conn: &zbus::Connection) {
    wait_for_name(conn, "org.iocom.InstallHelper1").await
}

async fn wait_for_name(conn: &zbus::Connection, wanted: &str) {
    let dbus = zbus::fdo::DBusProxy::new(conn).await.unwrap();
    let mut changes = dbus.receive_name_owner_changed().await.unwrap();
    let name = zbus::names::BusName::try_from(wanted).unwrap();
    if dbus.name_has_owner(name.clone()).await.unwrap() {
        return;
    }
    let wait = async {
        while let Some(c) = changes.next().await {
            let a = c.args().unwrap();
            if a.name().as_str() == wanted && a.new_owner().is_some() {
                return;
            }
        }
    };
    tokio::time::timeout(LONG, wait)
        .await
        .expect("helper did not take its name");
}

/// Runs `as_client` as `uid`; returns its RESULT line.
fn client_as(uid: u32, bus: &Bus, method: &str, arg: &Path) -> String {
    let exe = std::env::current_exe().unwrap();
    let out = Command::new("setpriv")
        .arg(format!("--reuid={uid}"))
        .arg(format!("--regid={uid}"))
        .arg("--clear-groups")
        .arg(exe)
        .args([
            "--ignored",
            "--exact",
            "as_client",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("IOCOM_TEST_BUS", &bus.address)
        .env("IOCOM_TEST_METHOD", method)
        .env("IOCOM_TEST_ARG", arg)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    stdout
        .lines()
        .find_map(|l| l.find("RESULT ").map(|i| &l[i..]))
        .unwrap_or_else(|| {
            panic!(
                "no RESULT from client as {uid}: {stdout} {}",
                String::from_utf8_lossy(&out.stderr)
            )
        })
        .to_string()
}

/// Entry point of the client processes (run by `client_as` under another uid).
#[tokio::test]
#[ignore = "entry point for dbus_policy's other-uid clients; run by the tests themselves"]
async fn as_client() {
    let addr = std::env::var("IOCOM_TEST_BUS").expect("run by client_as");
    let method = std::env::var("IOCOM_TEST_METHOD").unwrap();
    let arg = PathBuf::from(std::env::var("IOCOM_TEST_ARG").unwrap());
    let conn = zbus::connection::Builder::address(addr.as_str())
        .build()
        .await
        .unwrap();
    let r: zbus::Result<String> = match method.as_str() {
        "install" => {
            let proxy = InstallHelper1Proxy::new(&conn).await.unwrap();
            let f = std::fs::File::open(&arg).unwrap();
            proxy.install(zbus::Fd::from(&f), HashMap::new()).await
        }
        "own" => conn
            .request_name("org.iocom.InstallHelper1")
            .await
            .map(|()| "owned".to_string()),
        other => panic!("unknown method {other}"),
    };
    match r {
        Ok(v) => println!("RESULT ok {v}"),
        Err(zbus::Error::MethodError(name, desc, _)) => {
            println!("RESULT err {name} {}", desc.unwrap_or_default())
        }
        Err(e) => println!("RESULT err other {e}"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn shipped_bus_policy_and_helper_uid_check_both_say_no() {
    let w = World::new();
    let signer = Signer::new(w.tmp.path());
    let v1 = signer.sign(&Pkg::new("iocom-app", "1.0").build(&w.debs));
    let v2 = signer.sign(&Pkg::new("iocom-app", "2.0").build(&w.debs));
    let busdir = w.tmp.path().join("bus");
    std::fs::create_dir_all(&busdir).unwrap();
    open_up(&busdir);
    for deb in [&v1, &v2] {
        open_up(deb);
    }
    let bus = start_bus(&busdir);
    let mut helper = start_helper(&bus, &w, &signer.policy, &[0]);
    let root = zbus::connection::Builder::address(bus.address.as_str())
        .build()
        .await
        .unwrap();
    wait_for_helper(&root).await;
    let proxy = InstallHelper1Proxy::new(&root).await.unwrap();
    let mut finished = proxy.receive_finished().await.unwrap();

    // Allowed caller: root installs v1.
    let f = std::fs::File::open(&v1).unwrap();
    let txid = proxy
        .install(zbus::Fd::from(&f), HashMap::new())
        .await
        .unwrap();
    let sig = tokio::time::timeout(LONG, finished.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (sig.args().unwrap().txid, sig.args().unwrap().code),
        (txid, "ok".to_string())
    );
    assert_eq!(
        dpkg_status(&w.root, "iocom-app"),
        Some(("installed".into(), "1.0".into()))
    );
    let before = tree_hash(&w.root);

    // uid 65534 (the bus policy's "iocomd") passes the bus policy; the helper refuses it.
    let r = client_as(65534, &bus, "install", &v2);
    assert!(r.starts_with("RESULT err org.iocom.InstallHelper1.Error.NotAuthorized not-authorized: caller uid 65534"), "{r}");
    // uid 1 is refused by the bus policy before reaching the helper.
    let r = client_as(1, &bus, "install", &v2);
    assert!(
        r.contains("org.freedesktop.DBus.Error.AccessDenied: Rejected send message"),
        "{r}"
    );
    // Only root may own the name.
    let r = client_as(65534, &bus, "own", Path::new("-"));
    assert!(
        r.contains("AccessDenied") && r.contains("not allowed to own"),
        "{r}"
    );
    assert_eq!(tree_hash(&w.root), before);
    assert_eq!(
        dpkg_status(&w.root, "iocom-app"),
        Some(("installed".into(), "1.0".into()))
    );

    // Once the helper allows uid 65534 (as it allows the real iocomd user), it can install.
    drop(helper);
    helper = start_helper(&bus, &w, &signer.policy, &[0, 65534]);
    wait_for_helper(&root).await;
    let r = client_as(65534, &bus, "install", &v2);
    let txid = r
        .strip_prefix("RESULT ok ")
        .unwrap_or_else(|| panic!("{r}"))
        .to_string();
    let wait = async {
        loop {
            let sig = finished.next().await.unwrap();
            if sig.args().unwrap().txid == txid {
                return sig.args().unwrap().code.clone();
            }
        }
    };
    assert_eq!(tokio::time::timeout(LONG, wait).await.unwrap(), "ok");
    assert_eq!(
        dpkg_status(&w.root, "iocom-app"),
        Some(("installed".into(), "2.0".into()))
    );
    drop(helper);
}

const SHIPPED_ACTION: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../systemd/polkit-1/actions/org.iocom.InstallHelper1.policy"
);
const SHIPPED_RULE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../systemd/polkit-1/rules.d/50-iocomd.rules"
);

/// polkitd on the private bus, seeing only the shipped action and `rules` (bind-mounted over
/// /usr/share/polkit-1/{actions,rules.d} in a private mount namespace; the host is untouched).
fn start_polkitd(bus: &Bus, dir: &Path, rules: &str) -> Killed {
    let actions = dir.join("actions");
    let rules_d = dir.join("rules.d");
    std::fs::create_dir_all(&actions).unwrap();
    std::fs::create_dir_all(&rules_d).unwrap();
    std::fs::copy(
        SHIPPED_ACTION,
        actions.join("org.iocom.InstallHelper1.policy"),
    )
    .unwrap();
    std::fs::write(rules_d.join("50-iocomd.rules"), rules).unwrap();
    open_up(&actions.join("org.iocom.InstallHelper1.policy"));
    open_up(&rules_d.join("50-iocomd.rules"));
    // polkitd (user polkitd) lists these directories.
    for d in [&actions, &rules_d] {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let script = "mount --bind \"$1\" /usr/share/polkit-1/actions && \
                  mount --bind \"$2\" /usr/share/polkit-1/rules.d && \
                  exec /usr/lib/polkit-1/polkitd --no-debug";
    let child = Command::new("unshare")
        .args([
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            script,
            "sh",
        ])
        .arg(&actions)
        .arg(&rules_d)
        .env("DBUS_SYSTEM_BUS_ADDRESS", &bus.address)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    Killed(child)
}

#[tokio::test(flavor = "multi_thread")]
async fn polkit_check_uses_the_shipped_action_and_rule() {
    let w = World::new();
    let signer = Signer::new(w.tmp.path());
    let v1 = signer.sign(&Pkg::new("iocom-app", "1.0").build(&w.debs));
    let busdir = w.tmp.path().join("bus");
    std::fs::create_dir_all(&busdir).unwrap();
    open_up(&busdir);
    open_up(&v1);
    let bus = start_bus_with(
        &busdir,
        &["/usr/share/dbus-1/system.d/org.freedesktop.PolicyKit1.conf"],
    );
    let root = zbus::connection::Builder::address(bus.address.as_str())
        .build()
        .await
        .unwrap();
    let shipped_rule = std::fs::read_to_string(SHIPPED_RULE).unwrap();
    assert_eq!(
        shipped_rule.matches("subject.user == \"iocomd\"").count(),
        1
    );

    // The shipped rule names the user "iocomd", which this host lacks: polkit says no.
    let pk = start_polkitd(&bus, &busdir.join("pk1"), &shipped_rule);
    wait_for_name(&root, "org.freedesktop.PolicyKit1").await;
    let helper = start_helper_with(&bus, &w, &signer.policy, &[0, 65534], &["--polkit"]);
    wait_for_helper(&root).await;
    let r = client_as(65534, &bus, "install", &v1);
    assert!(
        r.contains(
            "Error.NotAuthorized not-authorized: polkit denies org.iocom.InstallHelper1.install"
        ),
        "{r}"
    );
    assert_eq!(dpkg_status(&w.root, "iocom-app"), None);
    drop(helper);
    drop(pk);

    // The same rule mapped to uid 65534's name ("nobody"): polkit says yes.
    let mapped = shipped_rule.replace("subject.user == \"iocomd\"", "subject.user == \"nobody\"");
    let _pk = start_polkitd(&bus, &busdir.join("pk2"), &mapped);
    wait_for_name(&root, "org.freedesktop.PolicyKit1").await;
    let _helper = start_helper_with(&bus, &w, &signer.policy, &[0, 65534], &["--polkit"]);
    wait_for_helper(&root).await;
    let proxy = InstallHelper1Proxy::new(&root).await.unwrap();
    let mut finished = proxy.receive_finished().await.unwrap();
    let r = client_as(65534, &bus, "install", &v1);
    let txid = r
        .strip_prefix("RESULT ok ")
        .unwrap_or_else(|| panic!("{r}"))
        .to_string();
    let sig = tokio::time::timeout(LONG, finished.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (sig.args().unwrap().txid, sig.args().unwrap().code),
        (txid, "ok".to_string())
    );
    assert_eq!(
        dpkg_status(&w.root, "iocom-app"),
        Some(("installed".into(), "1.0".into()))
    );
}
