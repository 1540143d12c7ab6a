//! `iocomctl`: controller command line to push packages to IOCOM devices.

use clap::Parser;

/// Push software packages to IOCOM devices and show their status.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {}

fn main() -> anyhow::Result<()> {
    let _args = Args::parse();
    anyhow::bail!("iocomctl is not built yet")
}
