//! The helper's policy for the early refusal, kept current ([`PolicyRead`]).
//!
//! The policy of a helper on a bus ([`PolicyRead`]): read with its status when the link comes
//! up, again for every new instance that takes its bus name (D-Bus activation, a restart).
//! When the instance exits (idle), its policy may no longer be the one the next instance reads
//! (a changed configuration): the next push reads it again — activating the helper it is about
//! to need anyway — and its head waits for that policy instead of being refused by the old
//! one (a head that outgrows the wait is left to the helper). Without that, a policy widened
//! while the helper was idle would be refused early for ever, no `Install` ever starting the
//! instance that has it.

use super::Updates;
use crate::helper_client::{HelperClient, HelperError};
use std::sync::Arc;

/// Whether the policy held for the early refusal is the running helper instance's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PolicyRead {
    /// Read from the instance running (or none ran since).
    Current,
    /// The instance it was read from exited; the next one may have another.
    Gone,
    /// A new instance's policy is being read.
    Reading,
}

impl Updates {
    /// The helper's bus name changed owner (`None`: the instance went away). Whether to read
    /// the policy again (Current/Gone → Reading): for a new instance of the current link's
    /// helper, unless a read is on its way already. An instance that went away: Current →
    /// Gone.
    pub(crate) fn on_owner_changed(&mut self, h: &Arc<HelperClient>, owner: Option<&str>) -> bool {
        if !self.is_current(h) {
            return false;
        }
        match owner {
            Some(_) if self.policy_read == PolicyRead::Reading => false,
            Some(o) => {
                tracing::info!(
                    owner = o,
                    "a new install helper instance; reading its policy"
                );
                self.policy_read = PolicyRead::Reading;
                true
            }
            None => {
                tracing::debug!(
                    "the install helper exited; its policy is read again at the next push"
                );
                if self.policy_read == PolicyRead::Current {
                    self.policy_read = PolicyRead::Gone;
                }
                false
            }
        }
    }

    /// A push starts: Gone → Reading, the policy read again (off the loop; it starts the
    /// helper this push needs anyway).
    pub(super) fn read_policy_if_gone(&mut self) {
        if self.policy_read != PolicyRead::Gone {
            return;
        }
        let Some(h) = self.helper.clone() else {
            return;
        };
        self.policy_read = PolicyRead::Reading;
        tokio::spawn(crate::daemon::helper_link::read_policy(h, self.tx.clone()));
    }

    /// A new helper instance's status: its features, then its policy
    /// ([`Self::on_helper_policy`]).
    pub(crate) fn on_helper_instance(&mut self, r: Result<install_api::HelperStatus, HelperError>) {
        if let Ok(s) = &r {
            self.helper_streams = s.has(install_api::FEATURE_STREAM_END);
        }
        self.on_helper_policy(r.map(|s| s.policy));
    }

    /// Reading → Current: the policy of a new helper instance; the early refusal follows it
    /// from now on. When it cannot be read, the last one read stays.
    pub(crate) fn on_helper_policy(
        &mut self,
        r: Result<Option<install_api::PolicySummary>, HelperError>,
    ) {
        self.policy_read = PolicyRead::Current;
        match r {
            Ok(p) if p != self.policy => {
                tracing::info!(policy = ?p, "the install helper's policy changed");
                self.policy = p;
            }
            Ok(_) => tracing::debug!("the install helper's policy is unchanged"),
            Err(e) => tracing::warn!(error = %e, "cannot read the new helper instance's policy"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use install_api::PolicySummary;

    fn updates(dir: &std::path::Path) -> Updates {
        let (tx, rx) = tokio::sync::mpsc::channel(8);
        std::mem::forget(rx);
        Updates::new(crate::config::Settings::demo(dir), None, tx)
    }

    #[test]
    fn the_policy_of_a_new_helper_instance_replaces_the_one_read_before() {
        let d = tempfile::tempdir().unwrap();
        let mut u = updates(d.path());
        let policy = |glob: &str| PolicySummary {
            host_arch: "amd64".into(),
            allowed_packages: vec![glob.into()],
            architectures: None,
            allow_downgrade: false,
            allow_reinstall: false,
        };
        u.on_helper_status(Ok(install_api::HelperStatus {
            policy: Some(policy("iocom-*")),
            ..Default::default()
        }));
        assert_eq!(u.policy, Some(policy("iocom-*")));
        u.on_helper_policy(Ok(Some(policy("*"))));
        assert_eq!(u.policy, Some(policy("*")));
        // Not readable: the last one read stays.
        let gone = HelperError::Decode {
            method: "Status",
            message: "x".into(),
        };
        u.on_helper_policy(Err(gone));
        assert_eq!(u.policy, Some(policy("*")));
        // A helper without a policy summary: no early refusal.
        u.on_helper_policy(Ok(None));
        assert_eq!(u.policy, None);
    }

    /// A client of a peer-to-peer "helper" that serves nothing (calls to it fail).
    async fn bare_helper() -> (Arc<HelperClient>, zbus::Connection) {
        let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
        let server = zbus::connection::Builder::unix_stream(a)
            .server(zbus::Guid::generate())
            .p2p()
            .build();
        let (server, client) = tokio::join!(server, HelperClient::p2p(b));
        (Arc::new(client.unwrap()), server.unwrap())
    }

    #[tokio::test]
    async fn a_policy_whose_instance_exited_is_read_again_at_the_next_push() {
        let d = tempfile::tempdir().unwrap();
        let mut u = updates(d.path());
        let (h, _server) = bare_helper().await;
        let (other, _other_server) = bare_helper().await;
        u.set_helper(h.clone());
        let garbage = b"this is not an ar archive, decided at once".as_slice();
        assert_eq!(u.judge_head(garbage), Ok(true));
        // Another link's name changes are old news.
        assert!(!u.on_owner_changed(&other, Some(":1.9")));
        assert!(!u.on_owner_changed(&other, None));
        assert_eq!(u.policy_read, PolicyRead::Current);
        // The instance exits: its policy still judges, until the next push reads it again.
        assert!(!u.on_owner_changed(&h, None));
        assert_eq!(u.policy_read, PolicyRead::Gone);
        assert_eq!(u.judge_head(garbage), Ok(true));
        u.read_policy_if_gone();
        assert_eq!(u.policy_read, PolicyRead::Reading);
        // Meanwhile heads wait for the new policy; the activation it caused is not read twice.
        assert_eq!(u.judge_head(garbage), Ok(false));
        assert!(!u.on_owner_changed(&h, Some(":1.10")));
        u.read_policy_if_gone();
        u.on_helper_policy(Ok(None));
        assert_eq!(u.policy_read, PolicyRead::Current);
        assert_eq!(u.judge_head(garbage), Ok(true));
        // A new instance is read at once.
        assert!(u.on_owner_changed(&h, Some(":1.11")));
        assert_eq!(u.policy_read, PolicyRead::Reading);
        u.on_helper_policy(Err(HelperError::Decode {
            method: "Status",
            message: "x".into(),
        }));
        assert_eq!(u.policy_read, PolicyRead::Current);
    }
}
