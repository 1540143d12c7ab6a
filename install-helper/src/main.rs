//! `iocom-install-helper`: D-Bus activated privileged installer (thin entry point).

fn main() -> anyhow::Result<()> {
    anyhow::bail!("the install helper is not built yet")
}
