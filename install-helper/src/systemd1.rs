//! The few members of systemd's D-Bus API (`org.freedesktop.systemd1`, see
//! `org.freedesktop.systemd1(5)`) the helper calls: reload, restart a unit, load a unit's
//! object, and the unit and service properties the health gate samples. Our own proxies on
//! the same zbus, instead of a crate generating the whole API (a long build for six calls).

use zbus::OwnedObjectPath;

/// `org.freedesktop.systemd1.Manager` on `/org/freedesktop/systemd1`.
#[zbus::proxy(
    interface = "org.freedesktop.systemd1.Manager",
    default_service = "org.freedesktop.systemd1",
    default_path = "/org/freedesktop/systemd1"
)]
pub trait Manager {
    /// `Reload()`: `systemctl daemon-reload`.
    fn reload(&self) -> zbus::Result<()>;

    /// `RestartUnit(s name, s mode) -> o job`.
    fn restart_unit(&self, name: &str, mode: &str) -> zbus::Result<OwnedObjectPath>;

    /// `LoadUnit(s name) -> o unit`: the unit's object, loading it if needed.
    fn load_unit(&self, name: &str) -> zbus::Result<OwnedObjectPath>;
}

/// `org.freedesktop.systemd1.Unit` on a unit's object path.
#[zbus::proxy(
    interface = "org.freedesktop.systemd1.Unit",
    default_service = "org.freedesktop.systemd1"
)]
pub trait Unit {
    /// `LoadState`: loaded, not-found, bad-setting, error, masked.
    #[zbus(property)]
    fn load_state(&self) -> zbus::Result<String>;

    /// `ActiveState`.
    #[zbus(property)]
    fn active_state(&self) -> zbus::Result<String>;

    /// `SubState`.
    #[zbus(property)]
    fn sub_state(&self) -> zbus::Result<String>;
}

/// `org.freedesktop.systemd1.Service` on a service unit's object path.
#[zbus::proxy(
    interface = "org.freedesktop.systemd1.Service",
    default_service = "org.freedesktop.systemd1"
)]
pub trait Service {
    /// `Type`: simple, exec, notify, forking, oneshot, dbus, idle.
    #[zbus(property, name = "Type")]
    fn service_type(&self) -> zbus::Result<String>;

    /// `Result`: success, exit-code, signal, timeout, watchdog, ...
    #[zbus(property)]
    fn result(&self) -> zbus::Result<String>;

    /// `MainPID`.
    #[zbus(property, name = "MainPID")]
    fn main_pid(&self) -> zbus::Result<u32>;

    /// `NRestarts`.
    #[zbus(property, name = "NRestarts")]
    fn n_restarts(&self) -> zbus::Result<u32>;
}
