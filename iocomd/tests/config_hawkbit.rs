//! The `[hawkbit]` section: off by default, the shipped sample (uncommented) validates to the
//! documented values, and every bad value is refused naming the file and the key.

use iocomd::config::{self, ConfigError, HawkbitAuth, Settings};
use iocomd::paths::Paths;
use std::path::{Path, PathBuf};
use std::time::Duration;

const MINIMAL: &str = "[[endpoints.listen]]\ntransport = \"tcp\"\naddress = \"127.0.0.1:6368\"\n";

fn sample() -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../etc/iocomd/iocomd.toml"))
        .unwrap()
}

/// The commented `[hawkbit]` example of the sample, uncommented.
fn sample_hawkbit_block() -> String {
    let text = sample();
    let start = text
        .find("\n# [hawkbit]\n")
        .expect("sample has a [hawkbit] example")
        + 1;
    text[start..]
        .lines()
        .map(|l| l.strip_prefix("# ").unwrap_or(l))
        .collect::<Vec<_>>()
        .join("\n")
}

fn parse(text: &str) -> Result<Settings, ConfigError> {
    let root = tempfile::tempdir().unwrap();
    config::parse_str(
        Path::new("/etc/iocomd/conf.d/50-hawkbit.toml"),
        text,
        &Paths::rooted(root.path()),
    )
}

fn err(text: &str) -> String {
    parse(text).expect_err("should be refused").to_string()
}

#[test]
fn off_by_default_and_in_the_shipped_sample() {
    assert_eq!(parse(MINIMAL).unwrap().hawkbit, None);
    let root = tempfile::tempdir().unwrap();
    let s = config::load_file(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("../etc/iocomd/iocomd.toml"),
        &Paths::rooted(root.path()),
    )
    .unwrap();
    assert_eq!(s.hawkbit, None);
    // A section without enabled = true stays off, but is still checked.
    let off = format!("{MINIMAL}[hawkbit]\nserver = \"https://h.example\"\n");
    assert_eq!(parse(&off).unwrap().hawkbit, None);
    assert!(
        err(&format!(
            "{MINIMAL}[hawkbit]\nserver = \"ftp://h.example\"\n"
        ))
        .contains("hawkbit.server")
    );
}

#[test]
fn shipped_example_validates_to_the_documented_values() {
    let text = format!("{MINIMAL}{}", sample_hawkbit_block());
    let h = parse(&text).unwrap().hawkbit.expect("enabled");
    assert_eq!(h.server, "https://hawkbit.example.net");
    assert_eq!(h.tenant, "DEFAULT");
    assert_eq!(h.controller_id, "gina3");
    assert_eq!(
        h.auth,
        HawkbitAuth::TargetToken(PathBuf::from("/etc/iocomd/hawkbit-token"))
    );
    assert_eq!(
        h.ca.as_deref(),
        Some(Path::new("/etc/iocomd/tls/hawkbit-ca.crt"))
    );
    assert_eq!(
        h.identity,
        Some((
            PathBuf::from("/etc/iocomd/tls/device.crt"),
            PathBuf::from("/etc/iocomd/tls/device.key")
        ))
    );
    assert_eq!(h.poll_interval, Duration::from_secs(300));
    assert_eq!(h.min_poll_interval, Duration::from_secs(5));
    assert_eq!(h.progress_interval, Duration::from_secs(5));
    assert!(!h.download_auth_other_hosts);
    assert_eq!(h.version_package.as_deref(), Some("myapp"));
    assert_eq!(
        h.attributes.get("hw_boardname").map(String::as_str),
        Some("gina")
    );
    assert_eq!(
        h.attributes.get("hw_revision").map(String::as_str),
        Some("2")
    );
}

#[test]
fn defaults_controller_id_ca_and_relative_token_path() {
    let text = format!(
        "{MINIMAL}[device]\nname = \"gina\"\nnumber = 3\n[hawkbit]\nenabled = true\nserver = \"https://h.example/prefix/\"\ntoken_file = \"token\"\n"
    );
    let h = parse(&text).unwrap().hawkbit.unwrap();
    assert_eq!(h.server, "https://h.example/prefix");
    assert_eq!(h.controller_id, "gina3.iocafenet");
    assert_eq!(
        h.ca.as_deref(),
        Some(Path::new("/etc/ssl/certs/ca-certificates.crt"))
    );
    assert_eq!(
        h.auth,
        HawkbitAuth::TargetToken(PathBuf::from("/etc/iocomd/conf.d/token"))
    );
    let plain = format!(
        "{MINIMAL}[hawkbit]\nenabled = true\nserver = \"http://127.0.0.1:8080\"\nallow_plain_http = true\nauth = \"none\"\n"
    );
    let h = parse(&plain).unwrap().hawkbit.unwrap();
    assert_eq!((h.ca, h.auth), (None, HawkbitAuth::None));
}

#[test]
fn bad_values_name_the_file_and_key() {
    let on = |rest: &str| format!("{MINIMAL}[hawkbit]\nenabled = true\n{rest}\n");
    let cases = [
        (on("token_file = \"/t\""), "hawkbit.server: required"),
        (
            on("server = \"http://h.example\"\ntoken_file = \"/t\""),
            "allow_plain_http",
        ),
        (
            on("server = \"https://h.example?x=1\"\ntoken_file = \"/t\""),
            "no query",
        ),
        (
            on("server = \"https://h.example\""),
            "hawkbit.token_file: required",
        ),
        (
            on("server = \"https://h.example\"\nauth = \"none\"\ntoken_file = \"/t\""),
            "not used with auth",
        ),
        (
            on("server = \"https://h.example\"\ntoken_file = \"/t\"\ncontroller_id = \"a/b\""),
            "invalid controller id",
        ),
        (
            on("server = \"https://h.example\"\ntoken_file = \"/t\"\ntenant = \"\""),
            "invalid tenant",
        ),
        (
            on("server = \"https://h.example\"\ntoken_file = \"/t\"\ncert = \"/c\""),
            "hawkbit.key: required",
        ),
        (
            on(
                "server = \"http://h.example\"\nallow_plain_http = true\nauth = \"none\"\nca = \"/ca\"",
            ),
            "hawkbit.ca: only valid",
        ),
        (
            on("server = \"https://h.example\"\ntoken_file = \"/t\"\npoll_interval = 0"),
            "hawkbit.poll_interval: 0 is out of range",
        ),
        (
            on(
                "server = \"https://h.example\"\ntoken_file = \"/t\"\n[hawkbit.attributes]\nsw_version = \"1\"",
            ),
            "set by iocomd",
        ),
        (
            on(
                "server = \"https://h.example\"\ntoken_file = \"/t\"\nversion_package = \"Bad Name\"",
            ),
            "invalid package name",
        ),
        (
            on("server = \"https://h.example\"\ntoken_file = \"/t\"\npolling = 5"),
            "unknown field `polling`",
        ),
    ];
    for (text, want) in cases {
        let e = err(&text);
        assert!(e.contains(want), "{e:?} should contain {want:?}");
        assert!(
            e.starts_with("/etc/iocomd/conf.d/50-hawkbit.toml"),
            "names the file: {e}"
        );
    }
}
