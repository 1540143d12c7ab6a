//! Debian version ordering cross-checked against the real `dpkg --compare-versions` on
//! hand-picked tricky pairs and on generated pairs (epochs, revisions, `~`, `+`, `.`, letters
//! vs digits, leading zeros).

use std::cmp::Ordering;
use std::process::{Command, Stdio};

use install_helper::verify::{Version, compare_versions};

/// What dpkg says: `lt`, `eq` or `gt`. Panics if dpkg complains about the syntax.
fn dpkg_order(a: &str, b: &str) -> Ordering {
    let run = |op: &str| {
        let out = Command::new("dpkg")
            .args(["--compare-versions", a, op, b])
            .stdin(Stdio::null())
            .output()
            .expect("run dpkg");
        assert!(
            out.stderr.is_empty(),
            "dpkg complained about {a:?} {op} {b:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        match out.status.code() {
            Some(0) => true,
            Some(1) => false,
            other => panic!("dpkg --compare-versions {a} {op} {b}: exit {other:?}"),
        }
    };
    if run("lt") {
        Ordering::Less
    } else if run("eq") {
        Ordering::Equal
    } else {
        Ordering::Greater
    }
}

/// A small deterministic PRNG (xorshift64*), so failures are reproducible.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len())]
    }
}

const PIECES: &[&str] = &[
    "0", "00", "1", "01", "2", "9", "10", "010", "99", "100", "a", "b", "z", "A", "Z", "~", "~~",
    "~a", ".", "+", "+b1", ".0", "rc", "alpha", "~rc1", "~beta2", "1a", "a1", "-",
];
const REV_PIECES: &[&str] = &[
    "0", "1", "2", "10", "01", "a", "b", "~", "~bpo1", ".", "+", "+deb12u1", "ubuntu1", "1.1",
];

fn gen_version(rng: &mut Rng) -> String {
    let mut v = String::new();
    match rng.below(6) {
        0 => v.push_str("1:"),
        1 => v.push_str(&format!("{}:", rng.below(3))),
        _ => {}
    }
    v.push_str(rng.pick(&["0", "1", "2", "10", "01", "1.0", "2.0"]));
    for _ in 0..rng.below(4) {
        v.push_str(rng.pick(PIECES));
    }
    // Upstream may contain '-' only when there is a revision.
    let has_rev = v.contains('-') || rng.below(2) == 0;
    if has_rev {
        v.push('-');
        v.push_str(rng.pick(&["0", "1", "2", "10", "a", "1a"]));
        for _ in 0..rng.below(3) {
            v.push_str(rng.pick(REV_PIECES));
        }
    }
    v
}

/// Makes small variations of `v` so generated pairs are often close (the interesting cases).
fn mutate(rng: &mut Rng, v: &str) -> String {
    let mut s = v.to_owned();
    match rng.below(6) {
        0 => s.push_str(rng.pick(&["~", "~1", "+", ".0", "a", "0"])),
        1 if s.len() > 1 && !s.ends_with(['-', ':']) => {
            s.pop();
        }
        2 => s = format!("1:{}", s.split_once(':').map_or(s.as_str(), |(_, r)| r)),
        3 => s = s.replacen('1', "01", 1),
        4 => s = s.replacen('.', "~", 1),
        _ => {}
    }
    s
}

fn check(pairs: &[(String, String)]) -> usize {
    let mut checked = 0;
    for (a, b) in pairs {
        if Version::parse(a).is_err() || Version::parse(b).is_err() {
            continue;
        }
        let ours = compare_versions(a, b).unwrap();
        assert_eq!(ours, dpkg_order(a, b), "compare_versions({a:?}, {b:?})");
        assert_eq!(
            compare_versions(b, a).unwrap(),
            ours.reverse(),
            "{b:?} vs {a:?}"
        );
        checked += 1;
    }
    checked
}

#[test]
fn tricky_pairs_match_dpkg() {
    let pairs: Vec<(String, String)> = [
        ("1.0", "1.0"),
        ("1.0", "1.0-0"),
        ("0:1.0", "1.0"),
        ("1.0~rc1", "1.0"),
        ("1.0~rc1", "1.0~rc1~"),
        ("1.0~~", "1.0~~a"),
        ("1.0~", "1.0"),
        ("1.0", "1.0a"),
        ("1.0a", "1.0+"),
        ("1.0+", "1.0."),
        ("1.0.", "1.0~"),
        ("1.0a", "1.0A"),
        ("1.0Z", "1.0a"),
        ("1.01", "1.1"),
        ("1.001", "1.1"),
        ("1.10", "1.9"),
        ("1.0-1", "1.0-1.1"),
        ("1.0-1", "1.0-1~bpo12+1"),
        ("1.0-1+deb12u1", "1.0-1"),
        ("1:0.1", "2.0"),
        ("2:0", "10:0"),
        ("10:0", "9:99"),
        ("1.0-a", "1.0-1"),
        ("1.2-3-4", "1.2-3"),
        ("1.2-3-4", "1.2-4"),
        ("0", "00"),
        ("1a1", "1a"),
        ("1a", "1aa"),
        ("1+b1", "1.1"),
        ("4.19.0-rc1", "4.19.0~rc1"),
        ("1:1.2.3-4ubuntu5", "1:1.2.3-4"),
        ("2.0-1", "2.0-1~"),
        ("1~", "1~~~"),
        ("9", "10"),
        ("0.0.9", "0.0.10"),
        ("1.0:1-2", "1:1.0:1-2"),
        ("3:1.0:1-2", "3:1.0:1"),
    ]
    .iter()
    .map(|(a, b)| (a.to_string(), b.to_string()))
    .collect();
    assert_eq!(
        check(&pairs),
        pairs.len() - 1,
        "one pair has no epoch and a colon"
    );
}

#[test]
fn generated_pairs_match_dpkg() {
    let mut rng = Rng(0x1234_5678_9abc_def1);
    let mut pairs = Vec::new();
    while pairs.len() < 600 {
        let a = gen_version(&mut rng);
        let b = if rng.below(3) == 0 {
            gen_version(&mut rng)
        } else {
            mutate(&mut rng, &a)
        };
        pairs.push((a, b));
    }
    let checked = check(&pairs);
    // Most generated strings are valid; make sure the test really checked hundreds of pairs.
    assert!(checked >= 400, "only {checked} valid pairs");
    let equal = pairs
        .iter()
        .filter(|(a, b)| compare_versions(a, b) == Ok(Ordering::Equal))
        .count();
    assert!(
        equal >= 10,
        "only {equal} equal pairs: generator too spread out"
    );
    eprintln!("checked {checked} generated pairs against dpkg, {equal} equal");
}

#[test]
fn dpkg_rejects_what_we_reject() {
    // Syntax errors dpkg reports as errors (exit 2) for `--compare-versions` operands.
    for bad in ["1.0-", ":1.0", "a:1.0", "1.0 1", "1_0"] {
        assert!(Version::parse(bad).is_err(), "{bad:?}");
        let out = Command::new("dpkg")
            .args(["--compare-versions", bad, "eq", "1"])
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(
            !out.stderr.is_empty(),
            "dpkg silently accepted {bad:?} (exit {:?})",
            out.status.code()
        );
    }
}
