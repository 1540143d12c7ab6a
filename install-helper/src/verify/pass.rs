//! The single verification pass: one read of the package, front to back, feeding three
//! consumers at once.
//!
//! - this thread: the ar structure and the SHA-256 of the whole file ([`ar::scan_observed`]);
//! - a signature thread: the OpenPGP hash of `debian-binary ‖ control.tar.* ‖ data.tar.*`
//!   over `_gpgorigin` ([`signature::verify_detached`]), when the signature is known before
//!   the pass ([`prefetch_signature`]: debsigs appends `_gpgorigin` after the data, so for a
//!   regular file the member headers are hopped with a few positioned reads of 60 bytes and
//!   the signature read first);
//! - a content thread: the decompressed `data.tar` ([`content::check`]), started when the data
//!   member begins, once the control member parsed and the name and architecture passed the
//!   policy.
//!
//! Chunks go to the consumers over bounded channels (backpressure, bounded memory). The
//! verdicts are ranked in the documented order afterwards (structure, signature, control,
//! policy, content), so a package is refused with the same code as by separate passes.
//! The `_gpgorigin` read in the pass must be byte-identical to the one read ahead, so the
//! signature checked is the one in the copy.
//!
//! What is given up: the content thread decompresses `data.tar` before the signature over it
//! is known to be good (it can only be known at the end). Unsigned input is never decompressed
//! when that is known ahead: no `_gpgorigin` while the policy requires one, or a signature the
//! keys refuse before any data (unknown issuer, unusable key). A package with a trusted key's
//! id but a forged signature is decompressed (bounded by the unpacked-size cap) and refused
//! as `signature-invalid` after the pass; nothing of it is kept or installed.
//!
//! A non-regular input (a pipe, e.g. a package streamed while it is received) cannot have its
//! signature read ahead: a hash thread then computes the SHA-256 of the signed members as they
//! pass ([`signature::DataHash`]), and the signature, read last, is finished from that state
//! ([`signature::verify_prehashed`]) without reading the data again.
//!
//! Fallbacks (each a re-read of parts of the helper's own copy, `copy`): a pipe whose
//! signature is not a v4 SHA-256 one (the speculative hash does not fit it) has its signed
//! members read again after the pass, and a signature that names several candidate keys
//! re-reads them per extra candidate.

use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::time::SystemTime;

use super::ar::{self, GLOBAL_MAGIC, HEADER_LEN, MemberKind};
use super::content::{self, ContentReport};
use super::signature::{self, SignatureError};
use super::{
    HELPER_UNIT, ORIGIN_SIGNATURE_MEMBER, Policy, Ranges, TargetRoot, VerifiedPackage, VerifyError,
    bad_archive,
};

/// Chunks queued per consumer (each at most [`ar::DATA_CHUNK`]).
const QUEUE: usize = 8;

type Chunk = Arc<[u8]>;

/// What was learnt about `_gpgorigin` before the pass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Prefetch {
    /// The member's contents.
    Found(Vec<u8>),
    /// Every member header was read: there is none.
    Absent,
    /// Not a regular file, or its headers could not be hopped: decided after the pass.
    Unknown,
    /// Not to be verified (`iocomctl check` without a keyring): a present signature is not
    /// checked, a missing one still refused when the policy requires one.
    Skip,
}

/// Reads `_gpgorigin` ahead by hopping the member headers of the regular file `file` with
/// positioned reads (the data member is skipped, not read).
pub fn prefetch_signature(file: &File) -> Prefetch {
    let mut magic = [0u8; 8];
    if file.read_exact_at(&mut magic, 0).is_err() || &magic != GLOBAL_MAGIC {
        return Prefetch::Unknown;
    }
    let max = ar::Limits::default().max_extra;
    let mut offset = GLOBAL_MAGIC.len() as u64;
    for _ in 0..64 {
        let mut h = [0u8; HEADER_LEN];
        match file.read_at(&mut h, offset) {
            Ok(0) => return Prefetch::Absent,
            Ok(n) if n == HEADER_LEN => {}
            _ => {
                if file.read_exact_at(&mut h, offset).is_err() {
                    return Prefetch::Unknown;
                }
            }
        }
        let Ok((name, size)) = ar::parse_header(&h, offset) else {
            return Prefetch::Unknown;
        };
        let start = offset + HEADER_LEN as u64;
        if name == ORIGIN_SIGNATURE_MEMBER {
            let Some(len) = usize::try_from(size).ok().filter(|_| size <= max) else {
                return Prefetch::Unknown;
            };
            let mut sig = vec![0u8; len];
            return match file.read_exact_at(&mut sig, start) {
                Ok(()) => Prefetch::Found(sig),
                Err(_) => Prefetch::Unknown,
            };
        }
        offset = start.saturating_add(size).saturating_add(size % 2);
    }
    Prefetch::Unknown
}

/// A reader over chunks sent by the pass; end of file when the sender is gone.
struct ChanReader {
    rx: Receiver<Chunk>,
    cur: Chunk,
    pos: usize,
}

impl ChanReader {
    fn new(rx: Receiver<Chunk>) -> Self {
        ChanReader {
            rx,
            cur: Arc::from(&[][..]),
            pos: 0,
        }
    }
}

impl Read for ChanReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.pos >= self.cur.len() {
            match self.rx.recv() {
                Ok(c) => {
                    self.cur = c;
                    self.pos = 0;
                }
                Err(_) => return Ok(0),
            }
        }
        let n = buf.len().min(self.cur.len() - self.pos);
        buf[..n].copy_from_slice(&self.cur[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// Sends `c` to a consumer; a consumer that stopped (it decided) is dropped.
fn feed(tx: &mut Option<SyncSender<Chunk>>, c: &Chunk) {
    if tx.as_ref().is_some_and(|t| t.send(c.clone()).is_err()) {
        *tx = None;
    }
}

fn thread_died(path: &Path, what: &str) -> VerifyError {
    VerifyError::Io {
        path: path.to_owned(),
        source: io::Error::other(format!("internal: the {what} thread panicked")),
    }
}

fn signature_error(path: &Path, e: SignatureError) -> VerifyError {
    match e {
        SignatureError::Invalid(reason) => VerifyError::SignatureInvalid {
            path: path.to_owned(),
            reason,
        },
        SignatureError::Untrusted(reason) => VerifyError::UntrustedSigner {
            path: path.to_owned(),
            reason,
        },
        SignatureError::Io(source) => VerifyError::Io {
            path: path.to_owned(),
            source,
        },
    }
}

/// Verifies the package read once from `stream` (every check but the version order, see
/// [`super::check_order`]). `copy` is the file the stream's bytes are in once the pass is
/// done (the helper's copy, or the file itself): errors name it, and the fallbacks re-read it.
pub fn verify_stream<R: Read>(
    stream: R,
    prefetch: Prefetch,
    copy: &Path,
    policy: &Policy,
    host_arch: &str,
    target: Option<&TargetRoot>,
) -> Result<VerifiedPackage, VerifyError> {
    let path = copy;
    let now = SystemTime::now();
    let _span = tracing::info_span!("verify", path = %path.display()).entered();
    std::thread::scope(|s| {
        let (ranges_tx, ranges_rx) = mpsc::channel::<Vec<(u64, u64)>>();
        let mut sig_feed = None;
        let sig_thread = match &prefetch {
            Prefetch::Found(sig) => {
                let (tx, rx) = mpsc::sync_channel::<Chunk>(QUEUE);
                sig_feed = Some(tx);
                let keys = &policy.trusted_keys;
                Some(s.spawn(move || {
                    let mut first = Some(rx);
                    let mut ranges: Option<Vec<(u64, u64)>> = None;
                    let open = || -> io::Result<Box<dyn Read>> {
                        if let Some(rx) = first.take() {
                            return Ok(Box::new(ChanReader::new(rx)));
                        }
                        if ranges.is_none() {
                            ranges = Some(ranges_rx.recv().map_err(|_| {
                                io::Error::other("the package ended before its data member")
                            })?);
                        }
                        Ok(Box::new(Ranges::open(
                            path,
                            ranges.clone().unwrap_or_default(),
                        )?))
                    };
                    signature::verify_detached(sig, keys, open, now)
                }))
            }
            _ => {
                drop(ranges_rx);
                None
            }
        };
        // No signature ahead (a pipe): hash the signed members for it speculatively.
        let hash_thread =
            (prefetch == Prefetch::Unknown && !policy.trusted_keys.is_empty()).then(|| {
                let (tx, rx) = mpsc::sync_channel::<Chunk>(QUEUE);
                sig_feed = Some(tx);
                s.spawn(move || {
                    use sha2::Digest;
                    let mut h = signature::DataHash::new();
                    for c in rx {
                        h.update(&c);
                    }
                    h
                })
            });
        // Known before any data is decompressed that the signature check fails?
        let unsigned_for_sure = prefetch == Prefetch::Absent && policy.require_signature;
        let mut control = None;
        let mut content_feed: Option<SyncSender<Chunk>> = None;
        let mut content_thread = None;
        let mut observe = |name: &str, kind: MemberKind, bytes: &[u8]| {
            let chunk: Chunk = Arc::from(bytes);
            match kind {
                MemberKind::DebianBinary => feed(&mut sig_feed, &chunk),
                MemberKind::Control(c) => {
                    feed(&mut sig_feed, &chunk);
                    control = Some(super::control_from(path, name, c, bytes));
                }
                MemberKind::Data(c) if bytes.is_empty() => {
                    let refused_early =
                        unsigned_for_sure || sig_thread.as_ref().is_some_and(|h| h.is_finished());
                    let Some(Ok(info)) = &control else { return };
                    if refused_early
                        || !policy.name_allowed(&info.package)
                        || !policy.architecture_allowed(&info.architecture, host_arch)
                    {
                        return;
                    }
                    let (tx, rx) = mpsc::sync_channel::<Chunk>(QUEUE);
                    content_feed = Some(tx);
                    let (member, package, size) = (
                        name.to_owned(),
                        info.package.clone(),
                        info.installed_size_kib,
                    );
                    content_thread = Some(s.spawn(move || {
                        let rules = policy.content.rules_for(&package);
                        let data = ChanReader::new(rx);
                        content::check(&member, c, data, &package, &rules, size, target)
                    }));
                }
                MemberKind::Data(_) => {
                    feed(&mut sig_feed, &chunk);
                    feed(&mut content_feed, &chunk);
                }
                MemberKind::Extra => {}
            }
        };
        let scanned = ar::scan_observed(stream, &ar::Limits::default(), &mut observe);
        drop(sig_feed);
        drop(content_feed);
        if let Ok(a) = &scanned {
            let _ = ranges_tx.send(
                a.signed_members()
                    .iter()
                    .map(|m| (m.offset, m.size))
                    .collect(),
            );
        }
        drop(ranges_tx);
        let sig_result = sig_thread.map(|h| h.join());
        let data_hash = hash_thread.and_then(|h| h.join().ok());
        let content_result = content_thread.map(|h| h.join());
        let archive = scanned.map_err(|e| match e {
            ar::ArError::Io(source) => VerifyError::Io {
                path: path.to_owned(),
                source,
            },
            e => bad_archive(path, e.to_string()),
        })?;
        rank(
            path,
            &archive,
            &prefetch,
            Found {
                sig: sig_result,
                data_hash,
                control,
                content: content_result,
            },
            policy,
            host_arch,
            target,
            now,
        )
    })
}

type Joined<T> = Option<std::thread::Result<T>>;

/// What the consumers of the pass found (`None`: that consumer did not run).
struct Found {
    sig: Joined<Result<String, SignatureError>>,
    /// The speculative SHA-256 of the signed members (no signature was known ahead).
    data_hash: Option<signature::DataHash>,
    control: Option<Result<super::control::ControlInfo, VerifyError>>,
    content: Joined<Result<ContentReport, content::ContentError>>,
}

/// Steps 2–5 on what the pass found, in the documented order.
#[allow(clippy::too_many_arguments)]
fn rank(
    path: &Path,
    archive: &ar::DebArchive,
    prefetch: &Prefetch,
    Found {
        sig,
        data_hash,
        control,
        content,
    }: Found,
    policy: &Policy,
    host_arch: &str,
    target: Option<&TargetRoot>,
    now: SystemTime,
) -> Result<VerifiedPackage, VerifyError> {
    // 2. Origin signature.
    let changed = |what: &str| VerifyError::SignatureInvalid {
        path: path.to_owned(),
        reason: format!("the {ORIGIN_SIGNATURE_MEMBER} member {what} while the package was read"),
    };
    // Without a read-ahead: the signature finished from the speculative hash, if it fits.
    let prehashed = match (archive.extra(ORIGIN_SIGNATURE_MEMBER), &data_hash) {
        (Some(in_pass), Some(h)) if *prefetch == Prefetch::Unknown => {
            signature::verify_prehashed(in_pass, &policy.trusted_keys, h, now)
                .map_err(|e| signature_error(path, e))?
        }
        _ => None,
    };
    let signer = match (archive.extra(ORIGIN_SIGNATURE_MEMBER), prefetch) {
        (None, Prefetch::Found(_)) => return Err(changed("disappeared")),
        (None, _) if policy.require_signature => {
            return Err(VerifyError::SignatureMissing {
                path: path.to_owned(),
            });
        }
        (None, _) => String::new(),
        (Some(_), Prefetch::Skip) => String::new(),
        (Some(in_pass), Prefetch::Found(ahead)) if in_pass != ahead.as_slice() => {
            return Err(changed("changed"));
        }
        (Some(_), Prefetch::Found(_)) => sig
            .ok_or_else(|| thread_died(path, "signature"))?
            .map_err(|_| thread_died(path, "signature"))?
            .map_err(|e| signature_error(path, e))?,
        (Some(_), _) if prehashed.is_some() => prehashed.unwrap_or_default(),
        (Some(in_pass), _) => {
            // Fallback (no read-ahead, or a signature the speculative hash does not fit):
            // the signed members again, from the copy.
            let ranges: Vec<(u64, u64)> = archive
                .signed_members()
                .iter()
                .map(|m| (m.offset, m.size))
                .collect();
            signature::verify_detached(
                in_pass,
                &policy.trusted_keys,
                || Ranges::open(path, ranges.clone()),
                now,
            )
            .map_err(|e| signature_error(path, e))?
        }
    };

    // 3. Control file.
    let info = control.unwrap_or_else(|| Err(bad_archive(path, "no control member".into())))?;

    // 4. Policy: name and architecture (the version order is [`super::check_order`]).
    super::check_policy(&info, policy, host_arch, None)?;

    // 5. Content check (run in the pass; run here over the copy if it could not start).
    let report = match content {
        Some(joined) => joined.map_err(|_| thread_died(path, "content check"))?,
        None => {
            let dm = archive.data_member();
            let MemberKind::Data(c) = dm.kind else {
                return Err(bad_archive(path, "internal: data member kind".into()));
            };
            let data = Ranges::open(path, vec![(dm.offset, dm.size)]).map_err(|source| {
                VerifyError::Io {
                    path: path.to_owned(),
                    source,
                }
            })?;
            let rules = policy.content.rules_for(&info.package);
            content::check(
                &dm.name,
                c,
                data,
                &info.package,
                &rules,
                info.installed_size_kib,
                target,
            )
        }
    }
    .map_err(|e| match e {
        content::ContentError::Archive { .. } => bad_archive(path, e.to_string()),
        content::ContentError::Refused {
            kind,
            entry,
            reason,
        } => VerifyError::Content {
            package: info.package.clone(),
            kind,
            entry: format!("data.tar entry {entry}"),
            reason,
        },
    })?;
    let mut units = info.units;
    for u in report.units {
        if !units.contains(&u) {
            units.push(u);
        }
    }
    units.retain(|u| u != HELPER_UNIT);
    tracing::info!(
        package = %info.package,
        version = %info.version,
        sha256 = archive.sha256(),
        signer = %signer,
        units = ?units,
        "package verified"
    );
    Ok(VerifiedPackage {
        name: info.package,
        version: info.version.to_string(),
        architecture: info.architecture,
        sha256: archive.sha256().to_owned(),
        signer,
        installed_size_kib: info.installed_size_kib,
        units,
        control: info.fields,
    })
}
