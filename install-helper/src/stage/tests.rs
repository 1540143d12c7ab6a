//! Tests of taking a package: the copy, its limits, and the progress of the pass.

use super::*;
use std::io::Seek;
use std::os::unix::fs::PermissionsExt;

/// Reads `limit` bytes (all by default) and accepts.
struct ReadAll(Option<u64>);

impl Verifier for ReadAll {
    fn verify_stream(
        &self,
        stream: &mut dyn Read,
        _: Option<&File>,
        _: &Path,
    ) -> Result<Candidate, Refusal> {
        let mut sink = std::io::sink();
        let n = match self.0 {
            Some(l) => std::io::copy(&mut stream.take(l), &mut sink),
            None => std::io::copy(stream, &mut sink),
        };
        n.map_err(|e| Refusal::new(ErrorCode::IoError, e.to_string()))?;
        Ok(Candidate {
            name: "p".into(),
            version: "1".into(),
            architecture: "all".into(),
            sha256: String::new(),
            signer: String::new(),
            installed_size_kib: None,
            units: Vec::new(),
            control: Default::default(),
        })
    }

    fn check_order(&self, _: &Candidate, _: Option<&str>) -> Result<(), Refusal> {
        Ok(())
    }
}

fn stage(src: File, dir: &Path, txid: &str, max: u64, reserve: u64) -> Result<PathBuf, StageError> {
    let mut quiet = |_: Report| {};
    let t = take(
        src,
        dir,
        txid,
        (max, reserve),
        &ReadAll(None),
        watch(&mut quiet),
    )?;
    t.verdict.unwrap();
    Ok(t.path)
}

fn watch(report: &mut dyn FnMut(Report)) -> Watch<'_> {
    Watch {
        advisory_size: None,
        min_interval: Duration::ZERO,
        report,
    }
}

#[test]
fn a_verdict_must_cover_the_whole_copy() {
    let d = tempfile::tempdir().unwrap();
    let src_path = d.path().join("in.deb");
    std::fs::write(&src_path, vec![3u8; 10_000]).unwrap();
    let f = File::open(&src_path).unwrap();
    let mut quiet = |_: Report| {};
    let t = take(
        f,
        d.path(),
        "s",
        (1 << 20, 0),
        &ReadAll(Some(9_000)),
        watch(&mut quiet),
    )
    .unwrap();
    assert_eq!(t.verdict.unwrap_err().code, ErrorCode::Internal);
}

#[test]
fn copies_from_offset_zero_privately() {
    let d = tempfile::tempdir().unwrap();
    let src_path = d.path().join("in.deb");
    let data: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(&src_path, &data).unwrap();
    let mut f = File::open(&src_path).unwrap();
    f.seek(std::io::SeekFrom::Start(1234)).unwrap();
    let staging = d.path().join("staging");
    let p = stage(f, &staging, "t1", 1 << 20, 0).unwrap();
    assert_eq!(std::fs::read(&p).unwrap(), data);
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&p), 0o600);
    assert_eq!(mode(&staging), 0o700);
}

#[test]
fn refuses_too_large_and_no_space_leaving_nothing() {
    let d = tempfile::tempdir().unwrap();
    let src_path = d.path().join("in.deb");
    std::fs::write(&src_path, vec![1u8; 5000]).unwrap();
    let staging = d.path().join("staging");
    let e = stage(File::open(&src_path).unwrap(), &staging, "a", 4999, 0).unwrap_err();
    assert_eq!(e.code(), ErrorCode::BadRequest, "{e}");
    let e = stage(
        File::open(&src_path).unwrap(),
        &staging,
        "b",
        1 << 20,
        u64::MAX / 2,
    )
    .unwrap_err();
    assert_eq!(e.code(), ErrorCode::NoSpace, "{e}");
    assert_eq!(std::fs::read_dir(&staging).unwrap().count(), 0);
}

#[test]
fn pipes_are_read_sequentially_and_bounded() {
    let d = tempfile::tempdir().unwrap();
    let (r, w) = std::io::pipe().unwrap();
    let writer = std::thread::spawn(move || {
        let mut w = w;
        let _ = w.write_all(&[7u8; 100_000]);
    });
    let p = stage(
        File::from(std::os::fd::OwnedFd::from(r)),
        d.path(),
        "p",
        1 << 20,
        0,
    )
    .unwrap();
    writer.join().unwrap();
    assert_eq!(std::fs::read(&p).unwrap().len(), 100_000);
}

/// Takes `src` with every report recorded (no rate limit).
fn take_recorded(src: File, dir: &Path, advisory_size: Option<u64>) -> (Taken, Vec<Report>) {
    let mut seen = Vec::new();
    let mut record = |r: Report| seen.push(r);
    let t = take(
        src,
        dir,
        "m",
        (64 << 20, 0),
        &ReadAll(None),
        Watch {
            advisory_size,
            min_interval: Duration::ZERO,
            report: &mut record,
        },
    )
    .unwrap();
    (t, seen)
}

#[test]
fn the_pass_reports_the_share_of_bytes_copied_then_100() {
    let d = tempfile::tempdir().unwrap();
    let src_path = d.path().join("in.deb");
    std::fs::write(&src_path, vec![5u8; 4 << 20]).unwrap();
    let (t, seen) = take_recorded(File::open(&src_path).unwrap(), d.path(), Some(1));
    t.verdict.unwrap();
    let pcts: Vec<u32> = seen.iter().map(|r| r.percent).collect();
    // The file's own size is the total (the advisory size is ignored for a regular file);
    // 256 KiB reads of 4 MiB: 16 steps of about 6 %.
    assert!(seen.iter().all(|r| r.total == Total::Exact(4 << 20)));
    assert!(pcts.len() >= 15, "{pcts:?}");
    assert_eq!((pcts[0], pcts[pcts.len() - 1]), (0, 100), "{pcts:?}");
    assert!(pcts.windows(2).all(|w| w[0] < w[1]), "{pcts:?}");
    assert!(pcts[..pcts.len() - 1].iter().all(|&p| p < 100));
    assert_eq!(seen.last().unwrap().bytes, 4 << 20);
}

#[test]
fn a_pipe_is_measured_against_its_advisory_size() {
    let d = tempfile::tempdir().unwrap();
    let (r, w) = std::io::pipe().unwrap();
    let writer = std::thread::spawn(move || {
        let mut w = w;
        for _ in 0..8 {
            let _ = w.write_all(&[9u8; 128 << 10]);
        }
    });
    // The caller claimed half the real size: the percentage stops at 99 until the end.
    let (t, seen) = take_recorded(
        File::from(std::os::fd::OwnedFd::from(r)),
        &d.path().join("a"),
        Some(512 << 10),
    );
    writer.join().unwrap();
    t.verdict.unwrap();
    let pcts: Vec<u32> = seen.iter().map(|r| r.percent).collect();
    assert!(pcts.len() >= 3, "{pcts:?}");
    assert_eq!(pcts[pcts.len() - 2..], [99, 100], "{pcts:?}");
    assert!(pcts.windows(2).all(|w| w[0] < w[1]), "{pcts:?}");
    // Without a size a pipe has no percentage.
    let (r, w) = std::io::pipe().unwrap();
    drop(std::thread::spawn(move || {
        let mut w = w;
        let _ = w.write_all(&[9u8; 1000]);
    }));
    let (_, seen) = take_recorded(
        File::from(std::os::fd::OwnedFd::from(r)),
        &d.path().join("b"),
        None,
    );
    assert!(seen.is_empty(), "{seen:?}");
}

/// Reads the whole stream, then the copy: they must be the same bytes (the copy is written
/// on its own thread, and the end of the stream comes only once it holds every byte).
struct ReadThenCompare;

impl Verifier for ReadThenCompare {
    fn verify_stream(
        &self,
        stream: &mut dyn Read,
        _: Option<&File>,
        copy: &Path,
    ) -> Result<Candidate, Refusal> {
        let mut seen = Vec::new();
        stream.read_to_end(&mut seen).unwrap();
        let copied = std::fs::read(copy).unwrap();
        if copied != seen {
            return Err(Refusal::new(
                ErrorCode::Internal,
                format!("copy {} bytes, stream {} bytes", copied.len(), seen.len()),
            ));
        }
        ReadAll(Some(0)).verify_stream(&mut std::io::empty(), None, copy)
    }

    fn check_order(&self, _: &Candidate, _: Option<&str>) -> Result<(), Refusal> {
        Ok(())
    }
}

#[test]
fn at_the_end_of_the_stream_the_copy_holds_every_byte() {
    let d = tempfile::tempdir().unwrap();
    let src_path = d.path().join("in.deb");
    // Many more chunks than the writer's queue holds.
    let data: Vec<u8> = (0..(24u32 << 20)).map(|i| (i % 253) as u8).collect();
    std::fs::write(&src_path, &data).unwrap();
    let mut quiet = |_: Report| {};
    for (i, src) in [File::open(&src_path).unwrap(), pipe_of(data.clone())]
        .into_iter()
        .enumerate()
    {
        let t = take(
            src,
            &d.path().join("staging"),
            &format!("c{i}"),
            (64 << 20, 0),
            &ReadThenCompare,
            watch(&mut quiet),
        )
        .unwrap();
        t.verdict.unwrap();
        assert_eq!(std::fs::read(&t.path).unwrap(), data);
    }
}

/// The read end of a pipe a thread fills with `data`.
fn pipe_of(data: Vec<u8>) -> File {
    let (r, mut w) = std::io::pipe().unwrap();
    std::thread::spawn(move || {
        let _ = w.write_all(&data);
    });
    File::from(std::os::fd::OwnedFd::from(r))
}

/// Takes `data` streamed through a pipe (meta `stream-end`), confirmed as `complete <n>`.
fn take_streamed(data: Vec<u8>, dir: &Path, limits: (u64, u64)) -> Result<Taken, StageError> {
    let (r, mut w) = std::io::pipe().unwrap();
    let (end_r, mut end_w) = std::io::pipe().unwrap();
    let n = data.len();
    let writer = std::thread::spawn(move || {
        let _ = w.write_all(&data);
        drop(w);
        let _ = end_w.write_all(format!("complete {n}\n").as_bytes());
    });
    let mut quiet = |_: Report| {};
    let end = StreamEnd::with_wait(
        File::from(std::os::fd::OwnedFd::from(end_r)),
        Duration::from_secs(10),
    );
    let t = take_stream(
        File::from(std::os::fd::OwnedFd::from(r)),
        end,
        dir,
        "s",
        limits,
        &ReadAll(None),
        watch(&mut quiet),
    );
    writer.join().unwrap();
    t
}

#[test]
fn a_stream_keeps_the_reserve_free_instead_of_room_for_the_size_limit() {
    let d = tempfile::tempdir().unwrap();
    // A size limit no filesystem has room for: a stream is still taken (a plain pipe is not).
    let t = take_streamed(vec![9u8; 30 << 20], d.path(), (1 << 60, 0)).unwrap();
    t.verdict.unwrap();
    assert_eq!(std::fs::read(&t.path).unwrap().len(), 30 << 20);
    let (r, _w) = std::io::pipe().unwrap();
    let e = stage(
        File::from(std::os::fd::OwnedFd::from(r)),
        d.path(),
        "p",
        1 << 60,
        0,
    )
    .unwrap_err();
    assert_eq!(e.code(), ErrorCode::NoSpace, "{e}");
    // A reserve it cannot keep: refused, nothing kept; the limit still holds.
    let staging = d.path().join("staging");
    let e = take_streamed(vec![9u8; 1 << 20], &staging, (1 << 60, 1 << 60)).unwrap_err();
    assert_eq!(e.code(), ErrorCode::NoSpace, "{e}");
    let e = take_streamed(vec![9u8; 1 << 20], &staging, (1000, 0)).unwrap_err();
    assert!(matches!(e, StageError::TooLarge { limit: 1000 }), "{e}");
    assert_eq!(std::fs::read_dir(&staging).unwrap().count(), 0);
}
