//! `iocomd`: the IOCOM device daemon (thin entry point; the work lives in the library).

use clap::Parser;
use std::path::PathBuf;

/// IOCOM device daemon: receives software packages and has them installed.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// Run a self-contained demo device on an embedded default configuration.
    #[arg(long)]
    demo: bool,
    /// Configuration file (default: merged fragments from /usr/lib, /run and /etc).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// State directory for the demo.
    #[arg(long, value_name = "DIR")]
    state_dir: Option<PathBuf>,
    /// Listen address for the demo.
    #[arg(long, value_name = "ADDR")]
    listen: Option<String>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    anyhow::bail!(
        "the daemon is not built yet (arguments: {args:?}); see the README for what works today"
    )
}
