//! Trusted OpenPGP keys and verification of the `_gpgorigin` origin signature.
//!
//! `debsigs --sign=origin` stores a detached OpenPGP signature (binary here; armored is accepted
//! too) over `debian-binary ‖ control.tar.* ‖ data.tar.*` (member contents, no ar headers).
//!
//! rPGP checks the cryptography; this module adds what it leaves to the caller:
//! - keys are loaded only with at least one valid self-signature; the newest valid self-signature
//!   (primary) or binding signature (subkey, with a valid back-signature when signing-capable)
//!   gives the expiry and the key flags; third-party certifications are ignored;
//! - a signing key must, at the signature's creation time, exist, not be expired, not be revoked
//!   (a revocation without reason or "key compromised" counts at any time; "superseded"/"retired"
//!   from its creation time on) and be signing-capable;
//! - the signature must be of type binary, use a SHA-2/SHA-3 hash (not SHA-1, MD5, RIPEMD-160),
//!   have a creation time and not be expired now.
//!
//! Verdicts: unparsable or cryptographically wrong => [`SignatureError::Invalid`]; an issuer
//! that is not among the trusted keys, or a trusted key that was not valid for signing at the
//! signature time => [`SignatureError::Untrusted`].

use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use pgp::composed::{Deserializable, DetachedSignature, SignedPublicKey};
use pgp::crypto::hash::HashAlgorithm;
use pgp::packet::{RevocationCode, Signature, SignatureType, SubpacketData};
use pgp::types::{Fingerprint, KeyDetails, KeyId};

/// A problem with a trusted key file.
#[derive(Debug, thiserror::Error)]
#[error("trusted key {path}: {reason}")]
pub struct KeyError {
    /// The key file.
    pub path: PathBuf,
    /// What is wrong.
    pub reason: String,
}

/// Why a signature was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum SignatureError {
    /// Malformed, wrong type, expired, or not matching the signed bytes.
    #[error("{0}")]
    Invalid(String),
    /// Made by a key that is not trusted, or not valid for signing at signature time.
    #[error("{0}")]
    Untrusted(String),
    /// Reading the signed data failed.
    #[error("reading the signed data: {0}")]
    Io(#[source] io::Error),
}

/// A revocation of a key component.
#[derive(Debug, Clone, Copy)]
struct Revocation {
    at: u64,
    hard: bool,
}

/// The primary key or one subkey of a trusted certificate, with its evaluated state.
#[derive(Debug, Clone)]
struct Component {
    /// `None` for the primary key, else the index into `public_subkeys`.
    subkey: Option<usize>,
    fingerprint: Fingerprint,
    key_id: KeyId,
    created: u64,
    expires: Option<u64>,
    can_sign: bool,
    revoked: Option<Revocation>,
}

/// A trusted OpenPGP certificate.
#[derive(Debug, Clone)]
pub struct TrustedKey {
    key: SignedPublicKey,
    components: Vec<Component>,
    /// The file it was loaded from.
    pub source: PathBuf,
    /// Primary key fingerprint, uppercase hex.
    pub fingerprint: String,
}

fn hex_upper(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02X}")).collect()
}

fn created_secs(sig: &Signature) -> Option<u64> {
    sig.created().map(|t| u64::from(t.as_secs()))
}

fn expiry(created: u64, sig: &Signature) -> Option<u64> {
    sig.key_expiration_time()
        .map(|d| u64::from(d.as_secs()))
        .filter(|&d| d != 0)
        .map(|d| created + d)
}

fn has_key_flags(sig: &Signature) -> bool {
    sig.config().is_some_and(|c| {
        c.hashed_subpackets()
            .any(|p| matches!(p.data, SubpacketData::KeyFlags(_)))
    })
}

fn revocation(sig: &Signature) -> Option<Revocation> {
    let at = created_secs(sig)?;
    let soft = matches!(
        sig.revocation_reason_code(),
        Some(RevocationCode::KeySuperseded | RevocationCode::KeyRetired)
    );
    Some(Revocation { at, hard: !soft })
}

/// Keeps in `cur` the newest of the valid (`ok`) signatures seen so far.
fn keep_newest<'a>(cur: &mut Option<(u64, &'a Signature)>, sig: &'a Signature, ok: bool) {
    if let (true, Some(c)) = (ok, created_secs(sig))
        && cur.is_none_or(|(n, _)| c >= n)
    {
        *cur = Some((c, sig));
    }
}

fn issued_by(sig: &Signature, fp: &Fingerprint, id: &KeyId) -> bool {
    let (fps, ids) = (sig.issuer_fingerprint(), sig.issuer_key_id());
    (fps.is_empty() && ids.is_empty()) || fps.contains(&fp) || ids.contains(&id)
}

impl TrustedKey {
    /// Loads every certificate in `bytes` (binary or armored); `path` names them in errors.
    pub fn from_bytes(bytes: &[u8], path: &Path) -> Result<Vec<TrustedKey>, KeyError> {
        let err = |reason: String| KeyError {
            path: path.to_owned(),
            reason,
        };
        let (iter, _) = SignedPublicKey::from_reader_many(bytes)
            .map_err(|e| err(format!("not an OpenPGP public key: {e}")))?;
        let mut keys = Vec::new();
        for key in iter {
            let key = key.map_err(|e| err(format!("not an OpenPGP public key: {e}")))?;
            keys.push(TrustedKey::evaluate(key, path).map_err(err)?);
        }
        if keys.is_empty() {
            return Err(err("no public key found".into()));
        }
        Ok(keys)
    }

    /// Loads the certificates in the file at `path`.
    pub fn from_file(path: &Path) -> Result<Vec<TrustedKey>, KeyError> {
        let bytes = std::fs::read(path).map_err(|e| KeyError {
            path: path.to_owned(),
            reason: e.to_string(),
        })?;
        TrustedKey::from_bytes(&bytes, path)
    }

    fn evaluate(key: SignedPublicKey, path: &Path) -> Result<TrustedKey, String> {
        let primary = &key.primary_key;
        let pfp = primary.fingerprint();
        let pid = primary.legacy_key_id();
        let pcreated = u64::from(primary.created_at().as_secs());
        // Newest valid self-signature: user ID certifications and direct-key signatures.
        let mut newest: Option<(u64, &Signature)> = None;
        for user in &key.details.users {
            for sig in &user.signatures {
                if sig.typ() == Some(SignatureType::CertRevocation) || !issued_by(sig, &pfp, &pid) {
                    continue;
                }
                let ok = sig
                    .verify_certification(primary, pgp::types::Tag::UserId, &user.id)
                    .is_ok();
                keep_newest(&mut newest, sig, ok);
            }
        }
        for sig in &key.details.direct_signatures {
            if issued_by(sig, &pfp, &pid) {
                keep_newest(&mut newest, sig, sig.verify_key(primary).is_ok());
            }
        }
        let Some((_, selfsig)) = newest else {
            return Err(format!(
                "key {} has no valid self-signature",
                hex_upper(pfp.as_bytes())
            ));
        };
        let revoked = key
            .details
            .revocation_signatures
            .iter()
            .filter(|s| issued_by(s, &pfp, &pid) && s.verify_key(primary).is_ok())
            .filter_map(revocation)
            .min_by_key(|r| (!r.hard, r.at));
        let mut components = vec![Component {
            subkey: None,
            fingerprint: pfp.clone(),
            key_id: pid,
            created: pcreated,
            expires: expiry(pcreated, selfsig),
            can_sign: !has_key_flags(selfsig) || selfsig.key_flags().sign(),
            revoked,
        }];
        for (i, sub) in key.public_subkeys.iter().enumerate() {
            let screated = u64::from(sub.key.created_at().as_secs());
            let mut binding: Option<(u64, &Signature)> = None;
            let mut sub_revoked: Option<Revocation> = None;
            for sig in &sub.signatures {
                if sig.verify_subkey_binding(primary, &sub.key).is_err() {
                    continue;
                }
                if sig.typ() == Some(SignatureType::SubkeyRevocation) {
                    if let Some(r) = revocation(sig)
                        && sub_revoked.is_none_or(|o| (!r.hard, r.at) < (!o.hard, o.at))
                    {
                        sub_revoked = Some(r);
                    }
                    continue;
                }
                let sign = sig.key_flags().sign();
                let backsig_ok = !sign
                    || sig
                        .embedded_signature()
                        .is_some_and(|b| b.verify_primary_key_binding(&sub.key, primary).is_ok());
                keep_newest(&mut binding, sig, backsig_ok);
            }
            let Some((_, b)) = binding else {
                tracing::warn!(key = %path.display(), subkey = i, "ignoring subkey without a valid binding signature");
                continue;
            };
            components.push(Component {
                subkey: Some(i),
                fingerprint: sub.key.fingerprint(),
                key_id: sub.key.legacy_key_id(),
                created: screated,
                expires: expiry(screated, b),
                can_sign: b.key_flags().sign(),
                revoked: sub_revoked,
            });
        }
        Ok(TrustedKey {
            fingerprint: hex_upper(pfp.as_bytes()),
            key,
            components,
            source: path.to_owned(),
        })
    }

    /// Why component `c` may not have made a signature at `at` (Unix seconds), if it may not.
    fn unusable_at(&self, c: &Component, at: u64) -> Option<String> {
        let what = format!(
            "{} {} of trusted key {}",
            if c.subkey.is_some() { "subkey" } else { "key" },
            hex_upper(c.fingerprint.as_bytes()),
            self.fingerprint
        );
        // A revoked primary key invalidates its subkeys too.
        let primary_revoked = self.components.first().and_then(|p| p.revoked);
        for r in [c.revoked, primary_revoked].into_iter().flatten() {
            if r.hard || r.at <= at {
                return Some(format!("{what} is revoked (since {})", r.at));
            }
        }
        if at < c.created {
            return Some(format!("signature predates {what} (created {})", c.created));
        }
        for e in [c.expires, self.components.first().and_then(|p| p.expires)]
            .into_iter()
            .flatten()
        {
            if e <= at {
                return Some(format!(
                    "{what} expired at {e}, before the signature time {at}"
                ));
            }
        }
        if !c.can_sign {
            return Some(format!("{what} is not signing-capable"));
        }
        None
    }

    fn verify_with(&self, c: &Component, sig: &Signature, data: impl Read) -> Result<(), String> {
        let res = match c.subkey {
            None => sig.verify(&self.key.primary_key, data),
            Some(i) => match self.key.public_subkeys.get(i) {
                Some(sub) => sig.verify(&sub.key, data),
                None => return Err(format!("internal: no subkey {i}")),
            },
        };
        res.map_err(|e| e.to_string())
    }
}

/// A reader that remembers the first I/O error of its inner reader (rPGP swallows its type).
struct ErrCapture<'a, R> {
    inner: R,
    err: &'a mut Option<io::Error>,
}

impl<R: Read> Read for ErrCapture<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.inner.read(buf).inspect_err(|e| {
            if self.err.is_none() {
                *self.err = Some(io::Error::new(e.kind(), e.to_string()));
            }
        })
    }
}

/// Verifies the detached signature `sig_bytes` over the data produced by `open` (called once
/// per candidate key, normally once) against `keys`, at time `now` (for signature expiry).
/// Returns the primary key fingerprint (uppercase hex) of the trusted signer.
pub fn verify_detached<R: Read>(
    sig_bytes: &[u8],
    keys: &[TrustedKey],
    mut open: impl FnMut() -> io::Result<R>,
    now: SystemTime,
) -> Result<String, SignatureError> {
    let sig = parse(sig_bytes, now)?;
    verify_candidates(&sig, keys, |key, component| {
        let mut io_err = None;
        let reader = open().map_err(SignatureError::Io)?;
        let res = key.verify_with(
            component,
            &sig,
            ErrCapture {
                inner: reader,
                err: &mut io_err,
            },
        );
        match io_err {
            Some(e) => Err(SignatureError::Io(e)),
            None => Ok(res),
        }
    })
}

mod prehashed;
pub use prehashed::{DataHash, verify_prehashed};

/// Parses `sig_bytes` and makes the checks that need no key: one signature, of type binary,
/// with a strong hash, a creation time, not expired at `now`.
fn parse(sig_bytes: &[u8], now: SystemTime) -> Result<Signature, SignatureError> {
    use SignatureError::Invalid;
    let (iter, _) = DetachedSignature::from_reader_many(sig_bytes)
        .map_err(|e| Invalid(format!("not an OpenPGP signature: {e}")))?;
    let sigs = iter
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| Invalid(format!("not an OpenPGP signature: {e}")))?;
    let [sig] = sigs.as_slice() else {
        return Err(Invalid(format!(
            "expected exactly one signature, found {}",
            sigs.len()
        )));
    };
    let sig = &sig.signature;
    if sig.typ() != Some(SignatureType::Binary) {
        return Err(Invalid(format!(
            "signature type {:?}, expected binary",
            sig.typ()
        )));
    }
    // SHA-1, MD5 and RIPEMD-160 are collision-prone: gpg and debsig-verify reject them too.
    let strong = matches!(
        sig.hash_alg(),
        Some(
            HashAlgorithm::Sha224
                | HashAlgorithm::Sha256
                | HashAlgorithm::Sha384
                | HashAlgorithm::Sha512
                | HashAlgorithm::Sha3_256
                | HashAlgorithm::Sha3_512
        )
    );
    if !strong {
        return Err(Invalid(format!(
            "weak or unknown hash algorithm {:?} (SHA-2 or SHA-3 required)",
            sig.hash_alg()
        )));
    }
    let created =
        created_secs(sig).ok_or_else(|| Invalid("signature has no creation time".into()))?;
    let now_secs = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    if let Some(exp) = sig
        .signature_expiration_time()
        .map(|d| u64::from(d.as_secs()))
        && exp != 0
        && created + exp <= now_secs
    {
        return Err(Invalid(format!("signature expired at {}", created + exp)));
    }
    Ok(sig.clone())
}

/// Tries the trusted keys `sig` names with `check` (the cryptographic check of one key
/// component: `Ok(Err(why))` when it does not verify); the first that verifies is the
/// signer. A key that was not valid for signing at the signature's time is not tried.
fn verify_candidates(
    sig: &Signature,
    keys: &[TrustedKey],
    mut check: impl FnMut(&TrustedKey, &Component) -> Result<Result<(), String>, SignatureError>,
) -> Result<String, SignatureError> {
    use SignatureError::{Invalid, Untrusted};
    let created = created_secs(sig).unwrap_or(0);
    let (fps, ids) = (sig.issuer_fingerprint(), sig.issuer_key_id());
    let anonymous = fps.is_empty() && ids.is_empty();
    let candidates: Vec<(&TrustedKey, &Component)> = keys
        .iter()
        .flat_map(|k| k.components.iter().map(move |c| (k, c)))
        .filter(|(_, c)| anonymous || fps.contains(&&c.fingerprint) || ids.contains(&&c.key_id))
        .collect();
    if candidates.is_empty() {
        if anonymous {
            return Err(Invalid(
                "signature names no issuer and there are no trusted keys".into(),
            ));
        }
        let issuers: Vec<String> = fps
            .iter()
            .map(|f| hex_upper(f.as_bytes()))
            .chain(ids.iter().map(|i| hex_upper(i.as_ref())))
            .collect();
        return Err(Untrusted(format!(
            "signed by {}, which is not a trusted key",
            issuers.join("/")
        )));
    }
    let mut unusable = None;
    let mut invalid = None;
    for (key, component) in candidates {
        if let Some(why) = key.unusable_at(component, created) {
            unusable = Some(why);
            continue;
        }
        match check(key, component)? {
            Ok(()) => return Ok(key.fingerprint.clone()),
            Err(e) => {
                invalid = Some(format!(
                    "signature by {} does not verify over the package contents: {e}",
                    hex_upper(component.fingerprint.as_bytes())
                ))
            }
        }
    }
    match (invalid, unusable) {
        (Some(m), _) => Err(Invalid(m)),
        (None, Some(m)) => Err(Untrusted(m)),
        (None, None) => Err(Invalid("no candidate key".into())),
    }
}
