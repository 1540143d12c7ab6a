//! The `_gpgorigin` signature of a streamed package, finished from the SHA-256 of the signed
//! members taken while they passed: debsigs appends the signature after the data, so a pipe
//! has no signature to start from, and reading the data again would cost a second pass.

use std::time::SystemTime;

use pgp::crypto::hash::HashAlgorithm;
use pgp::packet::Signature;
use pgp::types::VerifyingKey;

use super::{SignatureError, TrustedKey, parse, verify_candidates};

/// The SHA-256 of `debian-binary ‖ control.tar.* ‖ data.tar.*`, hashed while the bytes
/// arrived, before the signature was known (a streamed package: debsigs appends it last).
pub type DataHash = sha2::Sha256;

/// [`verify_detached`] from `data`, the SHA-256 state over the signed bytes, without reading
/// them again. `Ok(None)`: this signature cannot be finished from it (not a v4 signature by
/// a v4 key with SHA-256, the algorithm gpg and debsigs use by default); the caller reads the
/// data instead. The checks and the verdicts are those of [`verify_detached`]; the signature
/// is finished as rPGP does it: the hashed part of the signature packet and the v4 trailer
/// appended, the left 16 bits compared, then the key's check of the digest.
pub fn verify_prehashed(
    sig_bytes: &[u8],
    keys: &[TrustedKey],
    data: &DataHash,
    now: SystemTime,
) -> Result<Option<String>, SignatureError> {
    use pgp::packet::SignatureVersion;
    use pgp::types::KeyVersion;
    let sig = parse(sig_bytes, now)?;
    let Some(config) = sig.config() else {
        return Ok(None);
    };
    if sig.version() != SignatureVersion::V4 || config.hash_alg != HashAlgorithm::Sha256 {
        return Ok(None);
    }
    let mut other_version = false;
    let r = verify_candidates(&sig, keys, |key, component| {
        let verifier: &dyn VerifyingKey = match component.subkey {
            None => &key.key.primary_key,
            Some(i) => match key.key.public_subkeys.get(i) {
                Some(sub) => &sub.key,
                None => return Ok(Err(format!("internal: no subkey {i}"))),
            },
        };
        if verifier.version() != KeyVersion::V4 {
            other_version = true;
            return Ok(Err("not a v4 key".into()));
        }
        Ok(finish_prehashed(&sig, config, verifier, data))
    });
    if other_version {
        return Ok(None);
    }
    r.map(Some)
}

/// The signature `sig` (v4, SHA-256) checked by `key` over the data hashed into `data`.
fn finish_prehashed(
    sig: &Signature,
    config: &pgp::packet::SignatureConfig,
    key: &dyn VerifyingKey,
    data: &DataHash,
) -> Result<(), String> {
    let mut hasher: Box<dyn sha2::digest::DynDigest + Send> = Box::new(data.clone());
    let len = config
        .hash_signature_data(&mut hasher)
        .map_err(|e| e.to_string())?;
    hasher.update(&config.trailer(len).map_err(|e| e.to_string())?);
    let hash = hasher.finalize();
    if sig.signed_hash_value().as_ref().map(|v| &v[..]) != hash.get(..2) {
        return Err("signature: invalid signed hash value".into());
    }
    let bytes = sig.signature().ok_or("no signature bytes")?;
    key.verify(config.hash_alg, &hash, bytes)
        .map_err(|e| e.to_string())
}
