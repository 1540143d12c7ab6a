//! A private `dbus-daemon` for tests that need a real bus (well-known names, activation,
//! NameOwnerChanged), with the helper optionally D-Bus activatable on it.

use iocomd::helper_client::BUS_NAME;
use std::process::{Child, Command, Stdio};

/// A private `dbus-daemon`, killed on drop.
pub struct PrivateBus {
    child: Child,
    pub address: String,
    _dir: tempfile::TempDir,
}

impl PrivateBus {
    /// A bus; with `exec`, the helper is activatable on it and `exec(address)` is its command.
    pub fn start(exec: Option<&dyn Fn(&str) -> String>) -> PrivateBus {
        let dir = tempfile::tempdir().unwrap();
        let address = format!("unix:path={}/bus", dir.path().display());
        let conf = dir.path().join("bus.conf");
        let mut servicedir = String::new();
        if let Some(exec) = exec {
            let services = dir.path().join("services");
            std::fs::create_dir_all(&services).unwrap();
            std::fs::write(
                services.join(format!("{BUS_NAME}.service")),
                format!(
                    "[D-BUS Service]\nName={BUS_NAME}\nExec={}\n",
                    exec(&address)
                ),
            )
            .unwrap();
            servicedir = format!("<servicedir>{}</servicedir>", services.display());
        }
        std::fs::write(
            &conf,
            format!(
                r#"<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>session</type>
  <listen>{address}</listen>
  <auth>EXTERNAL</auth>
  {servicedir}
  <policy context="default">
    <allow send_destination="*" eavesdrop="true"/>
    <allow eavesdrop="true"/>
    <allow own="*"/>
  </policy>
</busconfig>
"#
            ),
        )
        .unwrap();
        let mut child = Command::new("dbus-daemon")
            .arg(format!("--config-file={}", conf.display()))
            .args(["--nofork", "--print-address=1"])
            .stdout(Stdio::piped())
            .spawn()
            .expect("dbus-daemon is installed (scripts/install-deps)");
        let mut line = String::new();
        let stdout = child.stdout.take().unwrap();
        std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut line).unwrap();
        assert!(line.starts_with(&address), "{line:?}");
        PrivateBus {
            child,
            address: line.trim().to_owned(),
            _dir: dir,
        }
    }
}

impl Drop for PrivateBus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
