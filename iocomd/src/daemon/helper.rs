//! The daemon's side of the install helper: spawning it as a child on a socketpair (demo),
//! and reading its JSON answers (`Finished` result, `Status()`).

use crate::helper_client::{HelperClient, HelperError};
use crate::status::UpdState;
use serde::Deserialize;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::path::Path;

/// A helper spawned as our child, serving D-Bus peer-to-peer on an inherited socket.
#[derive(Debug)]
pub struct SpawnedHelper {
    /// The D-Bus client.
    pub client: HelperClient,
    /// The helper process (it exits by itself once our end of the socket closes and its
    /// running transaction, if any, is finished).
    pub child: tokio::process::Child,
}

/// Spawns the helper with the child's end of a new socketpair as fd N and connects to it
/// peer-to-peer. `{fd}` in `args` is replaced by N (the configuration's convention, e.g.
/// `--p2p-fd {fd}`); without a `{fd}`, `--p2p-fd N` is put first.
#[allow(unsafe_code)]
pub async fn spawn_helper(program: &Path, args: &[String]) -> Result<SpawnedHelper, HelperError> {
    let spawn_err = |source| HelperError::Spawn {
        program: program.to_path_buf(),
        source,
    };
    let (ours, theirs) = UnixStream::pair().map_err(spawn_err)?;
    let fd = theirs.as_raw_fd();
    let mut cmd = tokio::process::Command::new(program);
    let n = fd.to_string();
    if !args.iter().any(|a| a.contains("{fd}")) {
        cmd.arg("--p2p-fd").arg(&n);
    }
    cmd.args(args.iter().map(|a| a.replace("{fd}", &n)));
    // SAFETY: the closure runs in the forked child before exec and only calls fcntl(2), which
    // is async-signal-safe. `fd` is open in the child (inherited from the parent, where
    // `theirs` lives until after spawn) and the borrow does not outlive the call.
    unsafe {
        cmd.pre_exec(move || {
            let borrowed = std::os::fd::BorrowedFd::borrow_raw(fd);
            nix::fcntl::fcntl(
                borrowed,
                nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::empty()),
            )
            .map(drop)
            .map_err(std::io::Error::from)
        });
    }
    let mut child = cmd.kill_on_drop(false).spawn().map_err(spawn_err)?;
    drop(theirs);
    let connect =
        tokio::time::timeout(crate::helper_client::SPAWN_TIMEOUT, HelperClient::p2p(ours)).await;
    match connect {
        Ok(Ok(client)) => Ok(SpawnedHelper { client, child }),
        Ok(Err(e)) => {
            let _ = child.start_kill();
            Err(e)
        }
        Err(_) => {
            let _ = child.start_kill();
            Err(HelperError::SpawnTimeout {
                program: program.to_path_buf(),
                timeout: crate::helper_client::SPAWN_TIMEOUT,
            })
        }
    }
}

/// The parts of the helper's transaction result (`Finished` JSON, `Status().last`) we use.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct TxSummary {
    /// Transaction id.
    #[serde(default)]
    pub txid: String,
    /// Package name, once known.
    #[serde(default)]
    pub package: Option<String>,
    /// Version that was to be installed.
    #[serde(default)]
    pub to: Option<String>,
    /// Result code string.
    #[serde(default)]
    pub code: String,
    /// Result code number.
    #[serde(default)]
    pub code_number: u16,
    /// Human message.
    #[serde(default)]
    pub message: String,
    /// Version installed afterwards.
    #[serde(default)]
    pub installed: Option<String>,
}

/// The running transaction in `Status()`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct CurrentTx {
    /// Transaction id.
    pub txid: String,
    /// Phase name.
    #[serde(default)]
    pub phase: String,
}

/// The parts of `Status()` we use.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct HelperStatus {
    /// The running transaction.
    #[serde(default)]
    pub current: Option<CurrentTx>,
    /// The last finished transaction.
    #[serde(default)]
    pub last: Option<TxSummary>,
}

/// Maps a helper progress phase onto `upd_state`.
pub fn phase_state(phase: &str) -> Option<UpdState> {
    Some(match phase {
        "staging" | "verify" | "lock" | "preflight" => UpdState::Verifying,
        "install" | "repair" => UpdState::Installing,
        "restart" | "health" => UpdState::HealthCheck,
        "rollback" => UpdState::RollingBack,
        _ => return None,
    })
}

/// Helper error code strings and numbers of D-Bus errors (`org.iocom.InstallHelper1.Error.X`,
/// message `"code: text"`): the code string from the message, and its number.
pub fn code_of_dbus_error(e: &HelperError) -> Option<(String, u16)> {
    let name = e.remote_error_name()?;
    if !name.starts_with("org.iocom.InstallHelper1.Error.") {
        return None;
    }
    let text = e.to_string();
    let code = text
        .split(": ")
        .find_map(|part| HELPER_CODES.iter().find(|(c, _)| part.starts_with(c)))?;
    Some((code.0.to_owned(), code.1))
}

/// The helper's stable codes (install-helper/src/error.rs).
pub const HELPER_CODES: &[(&str, u16)] = &[
    ("ok", 0),
    ("not-authorized", 1),
    ("bad-request", 2),
    ("busy", 3),
    ("bad-archive", 10),
    ("bad-control", 11),
    ("signature-missing", 20),
    ("signature-invalid", 21),
    ("untrusted-signer", 22),
    ("name-not-allowed", 30),
    ("wrong-architecture", 31),
    ("not-newer", 32),
    ("unmet-dependencies", 40),
    ("no-space", 41),
    ("dpkg-locked", 42),
    ("no-rollback-source", 43),
    ("dpkg-failed", 50),
    ("unhealthy-rolled-back", 60),
    ("rollback-failed", 61),
    ("io-error", 90),
    ("internal", 99),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_json_of_the_helper_parses() {
        let s: HelperStatus = serde_json::from_str(
            r#"{"current":null,"last":{"txid":"t1","time":1,"package":"p","from":null,"to":"1.0",
            "code":"ok","code_number":0,"message":"installed","sha256":null,"signer":null,
            "installed":"1.0","steps":[]},"packages":[],"systemd":false,"root":"/"}"#,
        )
        .unwrap();
        let last = s.last.unwrap();
        assert_eq!(
            (last.code.as_str(), last.installed.as_deref()),
            ("ok", Some("1.0"))
        );
        assert!(s.current.is_none());
        let busy: HelperStatus = serde_json::from_str(
            r#"{"current":{"txid":"t2","phase":"install","percent":3,"message":""}}"#,
        )
        .unwrap();
        assert_eq!(busy.current.unwrap().txid, "t2");
    }

    #[test]
    fn phases_map_to_states() {
        assert_eq!(phase_state("verify"), Some(UpdState::Verifying));
        assert_eq!(phase_state("health"), Some(UpdState::HealthCheck));
        assert_eq!(phase_state("rollback"), Some(UpdState::RollingBack));
        assert_eq!(phase_state("finished"), None);
    }
}
