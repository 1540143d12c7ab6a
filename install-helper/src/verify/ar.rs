//! Streaming, strict reader of the `ar` container of a binary .deb.
//!
//! [`scan`] reads the archive once, front to back, with bounded memory: it hashes every byte
//! (SHA-256 of the whole file), checks the global header, every 60-byte member header and the
//! padding, and enforces the member order of deb(5):
//! `debian-binary` ("2.0\n"), `control.tar[.gz|.xz|.zst]`, `data.tar[.gz|.xz|.zst|.bz2]`, then
//! only members whose names start with `_` (e.g. `_gpgorigin`), each at most once. GNU ar's
//! trailing `/` in member names is tolerated. The data member is streamed (hashed, not kept);
//! the control member and the `_` members are kept in memory up to [`Limits`].
//!
//! [`scan_observed`] is the same pass with an observer that sees the contents of
//! `debian-binary`, the control member and the data member (in chunks, as they are read), so
//! the signature and the content check can consume them in the same pass.

use std::io::{self, Read};

use sha2::{Digest, Sha256};

/// The global header of an ar archive.
pub const GLOBAL_MAGIC: &[u8; 8] = b"!<arch>\n";
/// Length of a member header.
pub const HEADER_LEN: usize = 60;

/// Compression of a `control.tar*` or `data.tar*` member, from its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// Plain tar.
    None,
    /// `.gz`
    Gzip,
    /// `.xz`
    Xz,
    /// `.zst`
    Zstd,
    /// `.bz2` (data member only)
    Bzip2,
}

/// What a member is, by its name and position.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemberKind {
    /// `debian-binary`
    DebianBinary,
    /// `control.tar*`
    Control(Compression),
    /// `data.tar*`
    Data(Compression),
    /// A member whose name starts with `_`.
    Extra,
}

/// One member of the archive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// Name without padding and without GNU ar's trailing `/`.
    pub name: String,
    /// What it is.
    pub kind: MemberKind,
    /// File offset of the member's contents.
    pub offset: u64,
    /// Size of the contents in bytes.
    pub size: u64,
}

/// Size limits for members kept in memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest accepted (compressed) control member.
    pub max_control: u64,
    /// Largest accepted `_` member.
    pub max_extra: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_control: 16 << 20,
            max_extra: 1 << 20,
        }
    }
}

/// The result of a successful [`scan`]. It always has the three required members.
#[derive(Debug, Clone)]
pub struct DebArchive {
    members: Vec<Member>,
    control: Vec<u8>,
    extras: Vec<(String, Vec<u8>)>,
    sha256: String,
    len: u64,
}

impl DebArchive {
    /// All members in archive order: `debian-binary`, control, data, then the `_` members.
    pub fn members(&self) -> &[Member] {
        &self.members
    }

    /// The `control.tar*` member.
    pub fn control_member(&self) -> &Member {
        &self.members[1]
    }

    /// The `data.tar*` member.
    pub fn data_member(&self) -> &Member {
        &self.members[2]
    }

    /// The `debian-binary`, control and data members, i.e. what `_gpgorigin` signs.
    pub fn signed_members(&self) -> &[Member] {
        &self.members[..3]
    }

    /// Contents of the control member (still compressed).
    pub fn control(&self) -> &[u8] {
        &self.control
    }

    /// Contents of the `_` member called `name`.
    pub fn extra(&self, name: &str) -> Option<&[u8]> {
        self.extras
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, d)| d.as_slice())
    }

    /// SHA-256 of the whole file, lowercase hex.
    pub fn sha256(&self) -> &str {
        &self.sha256
    }

    /// Length of the whole file in bytes.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Always false: a valid archive has members.
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }
}

/// Why an archive was rejected.
#[derive(Debug, thiserror::Error)]
pub enum ArError {
    /// The file does not start with `!<arch>\n`.
    #[error("not an ar archive: bad global header")]
    BadMagic,
    /// The file ends inside a header, member or padding.
    #[error("archive truncated at offset {offset} (in {what})")]
    Truncated {
        /// Where the data ran out.
        offset: u64,
        /// What was being read.
        what: String,
    },
    /// A member header is malformed.
    #[error("bad member header at offset {offset}: {reason}")]
    BadHeader {
        /// Offset of the header.
        offset: u64,
        /// What is wrong.
        reason: String,
    },
    /// The padding byte after an odd-sized member is not `\n`.
    #[error("bad padding byte after member {name:?} at offset {offset}")]
    BadPadding {
        /// The member before the padding.
        name: String,
        /// Offset of the padding byte.
        offset: u64,
    },
    /// A member that is not allowed at this position.
    #[error("unexpected member {name:?} at position {position}, expected {expected}")]
    UnexpectedMember {
        /// Its name.
        name: String,
        /// 0-based index in the archive.
        position: usize,
        /// What was expected instead.
        expected: &'static str,
    },
    /// A required member is absent.
    #[error("missing member {0}")]
    MissingMember(&'static str),
    /// A member kept in memory is larger than its limit.
    #[error("member {name:?} is {size} bytes, more than the limit of {limit}")]
    TooLarge {
        /// Its name.
        name: String,
        /// Its size.
        size: u64,
        /// The limit.
        limit: u64,
    },
    /// `debian-binary` is not "2.0\n".
    #[error("debian-binary must contain \"2.0\\n\", found {0:?}")]
    BadDebianBinary(String),
    /// A read error other than running out of data.
    #[error("read error: {0}")]
    Io(#[source] io::Error),
}

/// A reader that hashes and counts everything read through it.
struct Hashing<R> {
    inner: R,
    hasher: Sha256,
    pos: u64,
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.pos += n as u64;
        Ok(n)
    }
}

/// Reads until `buf` is full or EOF; returns the number of bytes read.
fn read_full<R: Read>(r: &mut R, buf: &mut [u8]) -> Result<usize, ArError> {
    let mut filled = 0;
    while filled < buf.len() {
        match r.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(ArError::Io(e)),
        }
    }
    Ok(filled)
}

/// Parses one header; returns (name, size).
pub(crate) fn parse_header(h: &[u8; HEADER_LEN], offset: u64) -> Result<(String, u64), ArError> {
    let bad = |reason: String| ArError::BadHeader { offset, reason };
    if &h[58..60] != b"`\n" {
        return Err(bad("bad header terminator".into()));
    }
    let raw_name = std::str::from_utf8(&h[0..16])
        .map_err(|_| bad("member name is not ASCII".into()))?
        .trim_end_matches(' ');
    let name = raw_name.strip_suffix('/').unwrap_or(raw_name);
    if name.is_empty()
        || !name
            .bytes()
            .all(|b| b.is_ascii_graphic() && b != b'/' && b != b'`')
    {
        return Err(bad(format!("unsupported member name {raw_name:?}")));
    }
    let size_field = std::str::from_utf8(&h[48..58]).map_err(|_| bad("bad size field".into()))?;
    let digits = size_field.trim_end_matches(' ');
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad(format!("bad size field {size_field:?}")));
    }
    let size = digits
        .parse::<u64>()
        .map_err(|_| bad(format!("bad size field {size_field:?}")))?;
    Ok((name.to_owned(), size))
}

/// Classifies member `name` at `position`, enforcing the deb(5) order.
fn classify(name: &str, position: usize) -> Result<MemberKind, ArError> {
    let unexpected = |expected| ArError::UnexpectedMember {
        name: name.to_owned(),
        position,
        expected,
    };
    match position {
        0 if name == "debian-binary" => Ok(MemberKind::DebianBinary),
        0 => Err(unexpected("debian-binary")),
        1 => match name {
            "control.tar" => Ok(MemberKind::Control(Compression::None)),
            "control.tar.gz" => Ok(MemberKind::Control(Compression::Gzip)),
            "control.tar.xz" => Ok(MemberKind::Control(Compression::Xz)),
            "control.tar.zst" => Ok(MemberKind::Control(Compression::Zstd)),
            _ => Err(unexpected("control.tar[.gz|.xz|.zst]")),
        },
        2 => match name {
            "data.tar" => Ok(MemberKind::Data(Compression::None)),
            "data.tar.gz" => Ok(MemberKind::Data(Compression::Gzip)),
            "data.tar.xz" => Ok(MemberKind::Data(Compression::Xz)),
            "data.tar.zst" => Ok(MemberKind::Data(Compression::Zstd)),
            "data.tar.bz2" => Ok(MemberKind::Data(Compression::Bzip2)),
            _ => Err(unexpected("data.tar[.gz|.xz|.zst|.bz2]")),
        },
        _ if name.starts_with('_') => Ok(MemberKind::Extra),
        _ => Err(unexpected("a member whose name starts with '_' or the end")),
    }
}

/// Reads `size` bytes of member `name` into memory.
fn read_member<R: Read>(r: &mut Hashing<R>, name: &str, size: u64) -> Result<Vec<u8>, ArError> {
    let len = usize::try_from(size).map_err(|_| ArError::TooLarge {
        name: name.to_owned(),
        size,
        limit: usize::MAX as u64,
    })?;
    let mut buf = vec![0u8; len];
    let start = r.pos;
    if read_full(r, &mut buf)? < len {
        return Err(ArError::Truncated {
            offset: r.pos.max(start),
            what: format!("member {name:?}"),
        });
    }
    Ok(buf)
}

/// The control member found at the head of a .deb: its name, compression and bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeadControl<'a> {
    /// `control.tar*`.
    pub name: String,
    /// Its compression.
    pub compression: Compression,
    /// Its bytes.
    pub data: &'a [u8],
}

/// The control member from the first bytes of a .deb (`head`), with the same checks as
/// [`scan`] for what comes before it (global header, `debian-binary`, member order, control
/// size limit). `Ok(None)`: `head` ends before the control member does.
pub fn scan_head<'a>(head: &'a [u8], limits: &Limits) -> Result<Option<HeadControl<'a>>, ArError> {
    let Some(magic) = head.get(..GLOBAL_MAGIC.len()) else {
        return if GLOBAL_MAGIC.starts_with(head) {
            Ok(None)
        } else {
            Err(ArError::BadMagic)
        };
    };
    if magic != GLOBAL_MAGIC {
        return Err(ArError::BadMagic);
    }
    let mut pos = GLOBAL_MAGIC.len();
    for position in 0..2 {
        let Some(h) = head.get(pos..pos + HEADER_LEN) else {
            return Ok(None);
        };
        let mut header = [0u8; HEADER_LEN];
        header.copy_from_slice(h);
        let (name, size) = parse_header(&header, pos as u64)?;
        let kind = classify(&name, position)?;
        pos += HEADER_LEN;
        let len = usize::try_from(size).unwrap_or(usize::MAX);
        match kind {
            MemberKind::DebianBinary => {
                if size > 64 {
                    return Err(ArError::BadDebianBinary(format!("<{size} bytes>")));
                }
                let Some(data) = head.get(pos..pos + len) else {
                    return Ok(None);
                };
                if data != b"2.0\n" {
                    return Err(ArError::BadDebianBinary(
                        String::from_utf8_lossy(data).into_owned(),
                    ));
                }
                pos += len + len % 2;
            }
            MemberKind::Control(compression) => {
                if size > limits.max_control {
                    return Err(ArError::TooLarge {
                        name,
                        size,
                        limit: limits.max_control,
                    });
                }
                return Ok(head
                    .get(pos..pos.saturating_add(len))
                    .map(|data| HeadControl {
                        name,
                        compression,
                        data,
                    }));
            }
            MemberKind::Data(_) | MemberKind::Extra => {
                return Err(ArError::UnexpectedMember {
                    name,
                    position,
                    expected: "debian-binary, then control.tar[.gz|.xz|.zst]",
                });
            }
        }
    }
    Ok(None)
}
/// Size of the chunks the data member is read (and observed) in.
pub const DATA_CHUNK: usize = 256 << 10;

/// Reads and validates a whole .deb ar archive from `reader` (see the module documentation).
pub fn scan<R: Read>(reader: R, limits: &Limits) -> Result<DebArchive, ArError> {
    scan_observed(reader, limits, &mut |_, _, _| {})
}

/// [`scan`], calling `observe(name, kind, bytes)` with the contents of the signed members as
/// they are read: `debian-binary` and the control member once each (whole), the data member
/// once with an empty slice when it starts and then chunk by chunk (at most [`DATA_CHUNK`]).
/// A member is observed only after its header was accepted; `_` members are not observed.
pub fn scan_observed<R: Read>(
    reader: R,
    limits: &Limits,
    observe: &mut dyn FnMut(&str, MemberKind, &[u8]),
) -> Result<DebArchive, ArError> {
    let mut r = Hashing {
        inner: reader,
        hasher: Sha256::new(),
        pos: 0,
    };
    let mut magic = [0u8; 8];
    let n = read_full(&mut r, &mut magic)?;
    if n < magic.len() {
        return Err(if n > 0 && magic[..n] == GLOBAL_MAGIC[..n] {
            ArError::Truncated {
                offset: n as u64,
                what: "global header".into(),
            }
        } else {
            ArError::BadMagic
        });
    }
    if &magic != GLOBAL_MAGIC {
        return Err(ArError::BadMagic);
    }
    let mut members: Vec<Member> = Vec::new();
    let mut control = Vec::new();
    let mut extras: Vec<(String, Vec<u8>)> = Vec::new();
    loop {
        let header_offset = r.pos;
        let mut header = [0u8; HEADER_LEN];
        let got = read_full(&mut r, &mut header)?;
        if got == 0 {
            break;
        }
        if got < HEADER_LEN {
            return Err(ArError::Truncated {
                offset: r.pos,
                what: "member header".into(),
            });
        }
        let (name, size) = parse_header(&header, header_offset)?;
        let position = members.len();
        let kind = classify(&name, position)?;
        let offset = r.pos;
        match kind {
            MemberKind::DebianBinary => {
                if size > 64 {
                    return Err(ArError::BadDebianBinary(format!("<{size} bytes>")));
                }
                let data = read_member(&mut r, &name, size)?;
                if data != b"2.0\n" {
                    return Err(ArError::BadDebianBinary(
                        String::from_utf8_lossy(&data).into_owned(),
                    ));
                }
                observe(&name, kind, &data);
            }
            MemberKind::Control(_) => {
                if size > limits.max_control {
                    return Err(ArError::TooLarge {
                        name,
                        size,
                        limit: limits.max_control,
                    });
                }
                control = read_member(&mut r, &name, size)?;
                observe(&name, kind, &control);
            }
            MemberKind::Data(_) => {
                observe(&name, kind, &[]);
                let mut buf = vec![0u8; DATA_CHUNK];
                let mut left = size;
                while left > 0 {
                    let want = usize::try_from(left).map_or(DATA_CHUNK, |l| l.min(DATA_CHUNK));
                    let n = read_full(&mut r, &mut buf[..want])?;
                    if n == 0 {
                        return Err(ArError::Truncated {
                            offset: r.pos,
                            what: format!("member {name:?}"),
                        });
                    }
                    left -= n as u64;
                    observe(&name, kind, &buf[..n]);
                }
            }
            MemberKind::Extra => {
                if extras.iter().any(|(n, _)| *n == name) {
                    return Err(ArError::UnexpectedMember {
                        name,
                        position,
                        expected: "no duplicate '_' members",
                    });
                }
                if size > limits.max_extra {
                    return Err(ArError::TooLarge {
                        name,
                        size,
                        limit: limits.max_extra,
                    });
                }
                let data = read_member(&mut r, &name, size)?;
                extras.push((name.clone(), data));
            }
        }
        if size % 2 == 1 {
            let mut pad = [0u8; 1];
            if read_full(&mut r, &mut pad)? == 0 {
                return Err(ArError::Truncated {
                    offset: r.pos,
                    what: format!("padding after {name:?}"),
                });
            }
            if pad[0] != b'\n' {
                return Err(ArError::BadPadding {
                    name,
                    offset: r.pos - 1,
                });
            }
        }
        members.push(Member {
            name,
            kind,
            offset,
            size,
        });
    }
    match members.len() {
        0 => return Err(ArError::MissingMember("debian-binary")),
        1 => return Err(ArError::MissingMember("control.tar*")),
        2 => return Err(ArError::MissingMember("data.tar*")),
        _ => {}
    }
    let sha256 = r
        .hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    Ok(DebArchive {
        members,
        control,
        extras,
        sha256,
        len: r.pos,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(name: &str, data: &[u8]) -> Vec<u8> {
        let mut h = format!(
            "{name:<16}{:<12}{:<6}{:<6}{:<8}{:<10}`\n",
            0,
            0,
            0,
            100644,
            data.len()
        )
        .into_bytes();
        assert_eq!(h.len(), HEADER_LEN);
        h.extend_from_slice(data);
        if data.len() % 2 == 1 {
            h.push(b'\n');
        }
        h
    }

    fn deb(members: &[(&str, &[u8])]) -> Vec<u8> {
        let mut v = GLOBAL_MAGIC.to_vec();
        for (n, d) in members {
            v.extend(member(n, d));
        }
        v
    }

    fn good() -> Vec<u8> {
        deb(&[
            ("debian-binary", b"2.0\n"),
            ("control.tar.xz", b"ctl"),
            ("data.tar.gz/", b"data!"),
            ("_gpgorigin", b"sig"),
        ])
    }

    #[test]
    fn accepts_well_formed_archive() {
        let bytes = good();
        let a = scan(&bytes[..], &Limits::default()).unwrap();
        assert_eq!(a.members().len(), 4);
        assert_eq!(a.data_member().name, "data.tar.gz");
        assert_eq!(a.data_member().kind, MemberKind::Data(Compression::Gzip));
        let d = a.data_member();
        assert_eq!(&bytes[d.offset as usize..][..d.size as usize], b"data!");
        assert_eq!(a.control(), b"ctl");
        assert_eq!(a.extra("_gpgorigin"), Some(&b"sig"[..]));
        assert_eq!(a.len(), bytes.len() as u64);
        let want: String = Sha256::digest(&bytes)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(a.sha256(), want);
    }

    #[test]
    fn rejects_every_truncation() {
        let bytes = good();
        // Cutting right after the data member leaves a valid archive without `_gpgorigin`.
        let after_data = 8 + (60 + 4) + (60 + 4) + (60 + 6);
        assert_eq!(
            scan(&bytes[..after_data], &Limits::default())
                .unwrap()
                .members()
                .len(),
            3
        );
        for cut in (0..bytes.len()).filter(|&c| c != after_data) {
            let r = scan(&bytes[..cut], &Limits::default());
            assert!(r.is_err(), "accepted truncation at {cut}");
        }
    }

    #[test]
    fn rejects_bad_padding_and_order() {
        let mut bytes = good();
        // The padding byte after the 3-byte control member.
        let pad = 8 + 60 + 4 + 60 + 3;
        assert_eq!(bytes[pad], b'\n');
        bytes[pad] = b'x';
        assert!(matches!(
            scan(&bytes[..], &Limits::default()),
            Err(ArError::BadPadding { .. })
        ));
        let swapped = deb(&[
            ("debian-binary", b"2.0\n"),
            ("data.tar.xz", b"d"),
            ("control.tar.xz", b"c"),
        ]);
        assert!(matches!(
            scan(&swapped[..], &Limits::default()),
            Err(ArError::UnexpectedMember { position: 1, .. })
        ));
        let extra = deb(&[
            ("debian-binary", b"2.0\n"),
            ("control.tar.xz", b"c"),
            ("data.tar.xz", b"d"),
            ("evil", b"e"),
        ]);
        assert!(matches!(
            scan(&extra[..], &Limits::default()),
            Err(ArError::UnexpectedMember { position: 3, .. })
        ));
        let v3 = deb(&[("debian-binary", b"3.0\n")]);
        assert!(matches!(
            scan(&v3[..], &Limits::default()),
            Err(ArError::BadDebianBinary(_))
        ));
    }
}
