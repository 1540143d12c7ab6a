//! The `iocomctl` binary against in-test devices: JSON lines shape, exit statuses per error
//! class, password from the environment or a file, push-many summary, status output.

mod ctl_support;

use ctl_support::{Spec, Verdict, pki, random_bytes, start};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    fn json_lines(&self) -> Vec<Value> {
        self.stdout
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON: {l:?}: {e}")))
            .collect()
    }
}

async fn iocomctl(args: &[&str], env: &[(&str, &str)]) -> Run {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_iocomctl"));
    cmd.args(args)
        .env_remove("IOCOMCTL_PASSWORD")
        .kill_on_drop(true);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out: Output = tokio::time::timeout(Duration::from_secs(120), cmd.output())
        .await
        .expect("iocomctl finishes")
        .expect("iocomctl runs");
    Run {
        code: out.status.code().expect("exit status"),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn package(dir: &Path, n: usize) -> (PathBuf, Vec<u8>) {
    let data = random_bytes(n, 99);
    let path = dir.join("app_2.0_all.deb");
    std::fs::write(&path, &data).unwrap();
    (path, data)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_json_lines_and_exit_0() {
    let dir = tempfile::tempdir().unwrap();
    let (file, data) = package(dir.path(), 70_000);
    let dev = start(Spec::new("gina", 3)).await;
    let addr = dev.addr.to_string();
    let r = iocomctl(
        &[
            "push",
            "--json",
            "--connect",
            &addr,
            "gina3.cafenet",
            file.to_str().unwrap(),
        ],
        &[],
    )
    .await;
    assert_eq!(r.code, 0, "stderr: {}", r.stderr);
    let lines = r.json_lines();
    let events: Vec<&str> = lines.iter().map(|l| l["event"].as_str().unwrap()).collect();
    assert_eq!(
        events[..4],
        ["connected", "authenticated", "located", "started"],
        "{events:?}"
    );
    assert!(events.contains(&"transfer") && events.contains(&"transferred"));
    assert!(lines.iter().all(|l| l["device"] == "gina3.cafenet"));
    assert_eq!(lines[3]["total"], 70_000);
    assert_eq!(lines[3]["ring"], 4097);
    let last = lines.last().unwrap();
    assert_eq!(last["event"], "result");
    assert_eq!(last["ok"], true);
    assert_eq!(last["exit_code"], 0);
    assert_eq!(last["class"], "ok");
    assert_eq!(last["code"], "ok");
    assert_eq!(last["tod_err"], 6);
    assert_eq!(last["bytes"], 70_000);
    assert_eq!(last["installed_version"], "2.0");
    assert_eq!(
        last["crc"].as_u64(),
        Some(u64::from(iocomd::proto::crc::crc16(&data)))
    );
    assert!(dev.stop().await == data);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_package_exits_7_with_the_device_code_and_message() {
    let dir = tempfile::tempdir().unwrap();
    let (file, _) = package(dir.path(), 2_000);
    let dev = start(Spec {
        verdict: Verdict::Fail {
            code: "signature-invalid",
            number: 21,
            tod_err: 186,
        },
        ..Spec::new("gina", 3)
    })
    .await;
    let addr = dev.addr.to_string();
    let f = file.to_str().unwrap();
    let r = iocomctl(
        &["push", "--json", "--connect", &addr, "gina3.cafenet", f],
        &[],
    )
    .await;
    assert_eq!(r.code, 7, "stderr: {}", r.stderr);
    let last = r.json_lines().pop().unwrap();
    assert_eq!(last["ok"], false);
    assert_eq!(last["class"], "refused");
    assert_eq!(last["code"], "signature-invalid");
    assert_eq!(last["result"], 21);
    assert_eq!(last["tod_err"], 186);
    assert_eq!(last["message"], "scripted failure");
    // Human output names the device, the code and the message.
    let r = iocomctl(&["push", "--connect", &addr, "gina3.cafenet", f], &[]).await;
    assert_eq!(r.code, 7);
    assert!(r.stdout.is_empty(), "{}", r.stdout);
    for part in [
        "gina3.cafenet",
        "package refused",
        "signature-invalid",
        "scripted failure",
    ] {
        assert!(r.stderr.contains(part), "{part} missing in {}", r.stderr);
    }
    dev.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_and_connection_errors() {
    let dir = tempfile::tempdir().unwrap();
    let (file, _) = package(dir.path(), 10);
    let f = file.to_str().unwrap();
    let r = iocomctl(
        &["push", "--connect", "127.0.0.1:1", "gina0.cafenet", f],
        &[],
    )
    .await;
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains("mean \"automatic\""), "{}", r.stderr);
    let r = iocomctl(
        &["push", "--json", "--connect", "127.0.0.1:1", "gina9000", f],
        &[],
    )
    .await;
    assert_eq!(r.code, 2);
    let v = r.json_lines().pop().unwrap();
    assert_eq!(
        (v["class"].as_str(), v["exit_code"].as_u64()),
        (Some("usage"), Some(2))
    );
    assert_eq!(v["device"], "gina9000");
    assert_eq!(v["ok"], false);
    // Neither --connect nor --listen.
    let r = iocomctl(&["push", "gina3.cafenet", f], &[]).await;
    assert_eq!(r.code, 2);
    // --tls without --ca.
    let r = iocomctl(
        &[
            "push",
            "--tls",
            "--connect",
            "127.0.0.1:1",
            "gina3.cafenet",
            f,
        ],
        &[],
    )
    .await;
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains("--ca"), "{}", r.stderr);
    // Listening with TLS needs our certificate and key.
    let r = iocomctl(
        &[
            "push",
            "--tls",
            "--listen",
            "127.0.0.1:0",
            "gina3.cafenet",
            f,
        ],
        &[],
    )
    .await;
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains("--cert and --key"), "{}", r.stderr);
    // --password works but warns that it shows in ps (here the connection then fails).
    let r = iocomctl(
        &[
            "push",
            "--password",
            "pw",
            "--connect",
            "127.0.0.1:1",
            "gina3.cafenet",
            f,
        ],
        &[],
    )
    .await;
    assert_eq!(r.code, 3, "{}", r.stderr);
    assert!(
        r.stderr.contains("visible to other users in ps"),
        "{}",
        r.stderr
    );
    // Nothing listening.
    let free = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .to_string();
    let r = iocomctl(&["push", "--connect", &free, "gina3.cafenet", f], &[]).await;
    assert_eq!(r.code, 3, "{}", r.stderr);
    assert!(r.stderr.contains("cannot connect"), "{}", r.stderr);
    // Malformed addresses are usage errors, before anything connects.
    for bad in ["a b", "host:port", "host:0", "[::1", ""] {
        let r = iocomctl(&["status", "--connect", bad, "gina3.cafenet"], &[]).await;
        assert_eq!(r.code, 2, "{bad:?}: {}", r.stderr);
        assert!(r.stderr.contains("--connect"), "{}", r.stderr);
    }
    // No port: the default one (6368 plain) is used, not "invalid socket address".
    let r = iocomctl(
        &[
            "status",
            "--connect-timeout",
            "2",
            "--connect",
            "127.0.0.1",
            "nosuch7.testnet",
        ],
        &[],
    )
    .await;
    assert_eq!(r.code, 3, "{}", r.stderr);
    assert!(!r.stderr.contains("invalid socket address"), "{}", r.stderr);
    // The exit table is in --help.
    let r = iocomctl(&["push", "--help"], &[]).await;
    assert_eq!(r.code, 0);
    assert!(r.stdout.contains("9  timed out waiting for the result"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn password_from_env_or_file_over_tls() {
    let dir = tempfile::tempdir().unwrap();
    let (file, data) = package(dir.path(), 5_000);
    let (_pki, cert, key) = pki();
    let dev = start(Spec {
        password: Some("s3cret"),
        tls: Some((cert.clone(), key)),
        ..Spec::new("gina", 3)
    })
    .await;
    let addr = dev.addr.to_string();
    let (f, ca) = (file.to_str().unwrap(), cert.to_str().unwrap());
    let base = [
        "push",
        "--tls",
        "--ca",
        ca,
        "--server-name",
        "localhost",
        "--user",
        "ctl",
        "--connect",
    ];
    let wrong = dir.path().join("pw");
    std::fs::write(&wrong, "guess\n").unwrap();
    let mut args = base.to_vec();
    args.extend([
        addr.as_str(),
        "--password-file",
        wrong.to_str().unwrap(),
        "gina3.cafenet",
        f,
    ]);
    let r = iocomctl(&args, &[]).await;
    assert_eq!(r.code, 4, "{}", r.stderr);
    assert!(r.stderr.contains("authentication refused"), "{}", r.stderr);
    assert!(!r.stderr.contains("guess"), "the password is never printed");

    let mut args = base.to_vec();
    args.extend([addr.as_str(), "gina3.cafenet", f]);
    let r = iocomctl(&args, &[("IOCOMCTL_PASSWORD", "s3cret")]).await;
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stdout.contains("installed and healthy"), "{}", r.stdout);
    assert!(dev.stop().await == data);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_many_summary_and_worst_exit_status() {
    let dir = tempfile::tempdir().unwrap();
    let (file, _) = package(dir.path(), 8_000);
    let good = start(Spec::new("gina", 3)).await;
    let bad = start(Spec {
        verdict: Verdict::Fail {
            code: "unhealthy-rolled-back",
            number: 60,
            tod_err: 168,
        },
        ..Spec::new("gina", 4)
    })
    .await;
    let t1 = format!("gina3.cafenet@{}", good.addr);
    let t2 = format!("gina4.cafenet@{}", bad.addr);
    let f = file.to_str().unwrap();
    let r = iocomctl(&["push-many", f, &t1, &t2], &[]).await;
    assert_eq!(r.code, 8, "{}", r.stderr);
    assert!(
        r.stdout.contains("gina3.cafenet: installed and healthy"),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout.contains("gina4.cafenet: FAILED (exit 8)"),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout.contains("1 of 2 devices updated; exit status 8"),
        "{}",
        r.stdout
    );

    let r = iocomctl(&["push-many", "--json", f, &t1, &t2], &[]).await;
    assert_eq!(r.code, 8);
    let lines = r.json_lines();
    let summary = lines.last().unwrap();
    assert_eq!(summary["event"], "summary");
    assert_eq!(
        (summary["devices"].as_u64(), summary["failed"].as_u64()),
        (Some(2), Some(1))
    );
    let results: Vec<&Value> = lines.iter().filter(|l| l["event"] == "result").collect();
    assert_eq!(results.len(), 2);
    assert_eq!(results[0]["device"], "gina3.cafenet");
    assert_eq!(results[0]["ok"], true);
    assert_eq!(results[1]["class"], "install-failed");
    assert_eq!(results[1]["code"], "unhealthy-rolled-back");
    good.stop().await;
    bad.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fresh_device_shows_no_empty_version_and_quiet_shows_only_the_result() {
    let dir = tempfile::tempdir().unwrap();
    let (file, _) = package(dir.path(), 5_000);
    let dev = start(Spec {
        installed: "",
        ..Spec::new("gina", 3)
    })
    .await;
    let addr = dev.addr.to_string();
    let f = file.to_str().unwrap();
    let r = iocomctl(&["status", "--connect", &addr, "gina3.cafenet"], &[]).await;
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stdout.contains("installed version: none"), "{}", r.stdout);
    let r = iocomctl(&["push", "--connect", &addr, "gina3.cafenet", f], &[]).await;
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stderr.contains("installed: none)"), "{}", r.stderr);
    assert!(!r.stderr.contains("installed )"), "{}", r.stderr);
    // Progress in order: nothing "receiving" once the transfer is complete.
    let after = r
        .stderr
        .split("transfer complete")
        .nth(1)
        .unwrap_or_default();
    assert!(!after.contains("receiving"), "{}", r.stderr);
    assert!(r.stdout.contains("installed and healthy"), "{}", r.stdout);
    // -q: the result line only.
    let r = iocomctl(&["push", "-q", "--connect", &addr, "gina3.cafenet", f], &[]).await;
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(r.stderr, "", "quiet push printed progress");
    assert_eq!(r.stdout.lines().count(), 1, "{}", r.stdout);
    dev.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_human_and_json() {
    let dev = start(Spec::new("gina", 3)).await;
    let addr = dev.addr.to_string();
    let r = iocomctl(
        &["status", "--json", "--connect", &addr, "gina3.cafenet"],
        &[],
    )
    .await;
    assert_eq!(r.code, 0, "{}", r.stderr);
    let v = r.json_lines().pop().unwrap();
    assert_eq!(v["device"], "gina3.cafenet");
    assert_eq!(v["installed_version"], "1.0");
    assert_eq!(v["package"], "sample-app");
    assert_eq!(v["code"], "ok");
    assert_eq!(v["state"], "idle");
    assert_eq!(v["seq"], 5);
    // Every package the device manages: name, version, last result, when.
    assert_eq!(v["packages"][0]["name"], "sample-app");
    assert_eq!(v["packages"][0]["version"], "1.0");
    assert_eq!(v["packages"][0]["last_result"], "ok");
    assert_eq!(v["packages"][0]["last_time"], 1_700_000_000);
    assert_eq!(v["packages"][1]["name"], "sample-lib");
    let r = iocomctl(&["status", "--connect", &addr, "gina3.cafenet"], &[]).await;
    assert_eq!(r.code, 0);
    assert!(r.stdout.contains("installed version: 1.0"), "{}", r.stdout);
    assert!(
        r.stdout
            .lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>()
                == ["sample-lib", "0.5", "ok", "2020-09-13", "12:26:40", "UTC"]),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout
            .contains("last result:       ok (0) previous update"),
        "{}",
        r.stdout
    );
    dev.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hash_password_prints_a_config_entry_from_stdin() {
    use tokio::io::AsyncWriteExt;
    let run = |args: &'static [&'static str], input: &'static [u8]| async move {
        let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_iocomctl"))
            .args(args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(input).await.unwrap();
        drop(stdin);
        child.wait_with_output().await.unwrap()
    };
    let out = run(&["hash-password", "frank"], b"pass\n").await;
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "[accounts.frank]\npassword_hash = \"!WdjEE1b87DwXX81xJEtDpbQ_Y_ecFo6lPzSonKFoSz8\"\n"
    );
    let out = run(&["hash-password", "frank"], b"\n").await;
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("empty password"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_devices_status_and_push_lines_and_the_listen_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let (file, data) = package(dir.path(), 5_000);
    let plain = start(Spec {
        status_signals: false,
        ..Spec::new("gina", 3)
    })
    .await;
    let addr = plain.addr.to_string();
    // status: exit 0, marked as having no iocomd status.
    let r = iocomctl(&["status", "--connect", &addr, "gina3.cafenet"], &[]).await;
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stdout.contains("iocomd status:     none"), "{}", r.stdout);
    assert!(r.stdout.contains("tod_state:         0"), "{}", r.stdout);
    let r = iocomctl(&["status", "--json", "--connect", &addr, "gina"], &[]).await;
    let v = &r.json_lines()[0];
    assert_eq!(
        (v["iocomd"].as_bool(), v["device"].as_str()),
        (Some(false), Some("gina3.cafenet"))
    );
    // push --accept-tod-err: the success line says what is known, no empty package name.
    let f = file.to_str().unwrap();
    let r = iocomctl(
        &[
            "push",
            "--accept-tod-err",
            "--connect",
            &addr,
            "gina3.cafenet",
            f,
        ],
        &[],
    )
    .await;
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(
        r.stdout.contains("transferred 5000 bytes") && r.stdout.contains("tod_err 6"),
        "{}",
        r.stdout
    );
    assert!(!r.stdout.contains("healthy:  "), "{}", r.stdout);
    assert!(plain.stop().await == data);
    // --listen-timeout 1 with nobody connecting: about 1 s, not 31.
    let t0 = std::time::Instant::now();
    let r = iocomctl(
        &[
            "status",
            "--listen",
            "127.0.0.1:0",
            "--listen-timeout",
            "1",
            "gina3.cafenet",
        ],
        &[],
    )
    .await;
    assert_eq!(r.code, 9, "{}", r.stderr);
    assert!(t0.elapsed() < Duration::from_secs(10), "{:?}", t0.elapsed());
}
