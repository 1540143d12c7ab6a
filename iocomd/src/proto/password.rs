//! IOCOM password hashes (transport spec §7.3) and the account check a listener applies to a
//! peer's authentication frame (§2.7).
//!
//! The hash is eosal's `osal_hash_password`: SHA-256 over the password plus its NUL, written as
//! `!` and 43 characters of a 6-bit alphabet. It is unsalted; we compute it only for compatibility
//! with existing account files, compare in constant time, and never keep clear passwords.

use sha2::{Digest, Sha256};

/// Length of a hash string.
pub const HASH_LEN: usize = 44;

fn sixbit(v: u8) -> char {
    let v = v & 63;
    let c = match v {
        0..=9 => b'0' + v,
        10..=35 => b'a' + (v - 10),
        36..=61 => b'A' + (v - 36),
        62 => b'_',
        _ => b'-',
    };
    char::from(c)
}

/// The IOCOM hash string of a clear-text password, e.g. `pass` →
/// `!WdjEE1b87DwXX81xJEtDpbQ_Y_ecFo6lPzSonKFoSz8`.
pub fn hash_password(password: &str) -> String {
    let mut h = Sha256::new();
    h.update(password.as_bytes());
    h.update([0u8]);
    let digest = h.finalize();
    let mut bytes: Vec<u8> = digest.iter().copied().collect();
    bytes.push(0);
    let mut out = String::with_capacity(HASH_LEN);
    out.push('!');
    for (i, g) in bytes.chunks(3).enumerate() {
        let (s0, s1, s2) = match g {
            [a, b, c] => (*a, *b, *c),
            _ => break,
        };
        out.push(sixbit(s0));
        out.push(sixbit((s0 >> 6) | (s1 << 2)));
        out.push(sixbit((s1 >> 4) | (s2 << 4)));
        if i < 10 {
            out.push(sixbit(s2 >> 2));
        }
    }
    out
}

/// Byte comparison whose time does not depend on where the inputs differ.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// eosal's pattern match: `*` matches any run of characters, `?` exactly one.
pub fn pattern_match(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    // Iterative matcher with single-star backtracking.
    let (mut pi, mut ti) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        match p.get(pi) {
            Some('*') => {
                star = Some((pi, ti));
                pi += 1;
            }
            Some(&c) if c == '?' || Some(&c) == t.get(ti) => {
                pi += 1;
                ti += 1;
            }
            _ => match star {
                Some((sp, st)) => {
                    pi = sp + 1;
                    ti = st + 1;
                    star = Some((sp, st + 1));
                }
                None => return false,
            },
        }
    }
    p.get(pi..).unwrap_or_default().iter().all(|&c| c == '*')
}

/// One account a listener accepts.
#[derive(Clone, PartialEq, Eq)]
pub struct Account {
    /// User name pattern matched against the peer's name with its device number, e.g. `gina*`.
    pub user: String,
    /// Network name pattern, `*` for any.
    pub network: String,
    /// The password hash ([`hash_password`]), or `*` to accept any password.
    pub password_hash: String,
    /// Administrator privileges (informational for the owner).
    pub admin: bool,
    /// The SHA-256 of the client certificate the account is bound to. Such an account is
    /// never matched by [`Accounts::authorize`] as it is: the transport first resolves it
    /// against the certificate the peer presented ([`Accounts::for_certificate`]).
    pub certificate_sha256: Option<[u8; 32]>,
}

impl std::fmt::Debug for Account {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Account")
            .field("user", &self.user)
            .field("network", &self.network)
            .field("admin", &self.admin)
            .field("certificate_bound", &self.certificate_sha256.is_some())
            .finish_non_exhaustive()
    }
}

/// Why a peer is not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthRejection {
    /// User or network name is empty.
    #[error("empty user or network name")]
    EmptyName,
    /// No account matches user and network.
    #[error("no account for user {user:?} in network {network:?}")]
    UnknownUser {
        /// The peer's account name (name + device number).
        user: String,
        /// The requested network.
        network: String,
    },
    /// The account is bound to a client certificate the peer did not present.
    #[error("user {user:?} must present its client certificate")]
    CertificateRequired {
        /// The peer's account name.
        user: String,
    },
    /// An account matched but the password did not.
    #[error("wrong password for user {user:?}")]
    WrongPassword {
        /// The peer's account name.
        user: String,
    },
}

/// A set of accounts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Accounts {
    /// The accounts, checked in order.
    pub accounts: Vec<Account>,
}

impl Accounts {
    /// The accounts for a peer that presented the client certificate with SHA-256 `presented`
    /// (`None`: no certificate): a certificate-bound account it matches needs no other check
    /// than its password hash (`*` when it has none); the other accounts are unchanged (a
    /// bound account whose certificate was not presented still refuses).
    pub fn for_certificate(&self, presented: Option<&[u8; 32]>) -> Accounts {
        let accounts = self
            .accounts
            .iter()
            .map(|a| match &a.certificate_sha256 {
                Some(want) if presented.is_some_and(|p| constant_time_eq(p, want)) => Account {
                    certificate_sha256: None,
                    ..a.clone()
                },
                // Others unchanged: a bound account not presented still refuses, and says so.
                _ => a.clone(),
            })
            .collect();
        Accounts { accounts }
    }

    /// Checks a peer: `user` is the account name (device name with number), `password_hash` the
    /// hash of the received password (empty if none was sent). Returns the matching account.
    pub fn authorize(
        &self,
        user: &str,
        network: &str,
        password_hash: &str,
    ) -> Result<&Account, AuthRejection> {
        if user.is_empty() || network.is_empty() {
            return Err(AuthRejection::EmptyName);
        }
        let mut matched = false;
        let mut needs_cert = false;
        for a in &self.accounts {
            if !pattern_match(&a.user, user) || !pattern_match(&a.network, network) {
                continue;
            }
            if a.certificate_sha256.is_some() {
                // Not resolved against a certificate: never by password alone.
                needs_cert = true;
                continue;
            }
            matched = true;
            if a.password_hash == "*"
                || constant_time_eq(a.password_hash.as_bytes(), password_hash.as_bytes())
            {
                return Ok(a);
            }
        }
        if matched {
            Err(AuthRejection::WrongPassword {
                user: user.to_owned(),
            })
        } else if needs_cert {
            Err(AuthRejection::CertificateRequired {
                user: user.to_owned(),
            })
        } else {
            Err(AuthRejection::UnknownUser {
                user: user.to_owned(),
                network: network.to_owned(),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_test_vector() {
        let h = hash_password("pass");
        assert_eq!(h, "!WdjEE1b87DwXX81xJEtDpbQ_Y_ecFo6lPzSonKFoSz8");
        assert_eq!(h.len(), HASH_LEN);
        assert_eq!(hash_password("").len(), HASH_LEN);
        assert_ne!(hash_password("pass"), hash_password("pass2"));
    }

    #[test]
    fn patterns() {
        assert!(pattern_match("gina*", "gina3"));
        assert!(pattern_match("*", ""));
        assert!(pattern_match("g?na3", "gina3"));
        assert!(pattern_match("*na*", "gina3"));
        assert!(pattern_match("a*b*c", "axxbyyc"));
        assert!(!pattern_match("gina", "gina3"));
        assert!(!pattern_match("g?na", "gna"));
        assert!(!pattern_match("a*b", "axxc"));
    }

    #[test]
    fn account_check() {
        let accts = Accounts {
            accounts: vec![
                Account {
                    user: "ctl".into(),
                    network: "iocafenet".into(),
                    password_hash: hash_password("secret"),
                    admin: true,
                    certificate_sha256: None,
                },
                Account {
                    user: "gina*".into(),
                    network: "*".into(),
                    password_hash: "*".into(),
                    admin: false,
                    certificate_sha256: None,
                },
            ],
        };
        let good = hash_password("secret");
        assert!(accts.authorize("ctl", "iocafenet", &good).unwrap().admin);
        assert_eq!(
            accts.authorize("ctl", "iocafenet", &hash_password("nope")),
            Err(AuthRejection::WrongPassword { user: "ctl".into() })
        );
        assert_eq!(
            accts.authorize("ctl", "iocafenet", ""),
            Err(AuthRejection::WrongPassword { user: "ctl".into() })
        );
        assert!(matches!(
            accts.authorize("ctl", "othernet", &good),
            Err(AuthRejection::UnknownUser { .. })
        ));
        assert!(accts.authorize("gina9001", "anynet", "").is_ok());
        assert_eq!(
            accts.authorize("", "iocafenet", &good),
            Err(AuthRejection::EmptyName)
        );
        assert!(!format!("{:?}", accts).contains(&good));
    }

    #[test]
    fn a_certificate_bound_account_needs_its_certificate() {
        let bound = |hash: &str| Account {
            user: "ops".into(),
            network: "*".into(),
            password_hash: hash.into(),
            admin: false,
            certificate_sha256: Some([7; 32]),
        };
        let accts = Accounts {
            accounts: vec![bound("*")],
        };
        let refused = Err(AuthRejection::CertificateRequired { user: "ops".into() });
        assert_eq!(
            accts.authorize("ops", "n", ""),
            refused,
            "never by password alone"
        );
        assert_eq!(
            accts.for_certificate(None).authorize("ops", "n", ""),
            refused
        );
        assert_eq!(
            accts
                .for_certificate(Some(&[8; 32]))
                .authorize("ops", "n", ""),
            refused
        );
        let with = accts.for_certificate(Some(&[7; 32]));
        assert!(
            with.authorize("ops", "n", "").is_ok(),
            "the certificate alone"
        );
        assert!(matches!(
            with.authorize("other", "n", ""),
            Err(AuthRejection::UnknownUser { .. })
        ));
        // Bound and with a password: both are needed.
        let both = Accounts {
            accounts: vec![bound(&hash_password("pw"))],
        };
        let with = both.for_certificate(Some(&[7; 32]));
        assert!(with.authorize("ops", "n", &hash_password("pw")).is_ok());
        assert_eq!(
            with.authorize("ops", "n", ""),
            Err(AuthRejection::WrongPassword { user: "ops".into() })
        );
        assert_eq!(
            both.for_certificate(None)
                .authorize("ops", "n", &hash_password("pw")),
            Err(AuthRejection::CertificateRequired { user: "ops".into() })
        );
    }
}
