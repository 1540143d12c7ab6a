//! The demo sandbox: a signed package whose postinst escapes dpkg's chroot (a static binary
//! built in the test) and then tries to overwrite and delete files outside the state dir,
//! create a file there, write through a hard link and a symlink it plants in the package
//! root, remount `/` read-write, connect to a Unix socket and kill a process, changes none of
//! it — as root through the real transaction, and as an unprivileged user through the
//! helper's launcher with the same dpkg command. A control run without the sandbox shows the
//! same package does change them.

mod common;
mod txn_support;

use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use install_api::ErrorCode;
use install_helper::sandbox::Sandbox;
use install_helper::stage;
use install_helper::txn;
use txn_support::*;

const ESCAPE_C: &str = r#"
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>
static void say(const char *what, int r) { printf("escape: %s -> %d\n", what, r); }
static int put(const char *path, int flags) {
    int fd = open(path, O_WRONLY | flags, 0644);
    if (fd < 0) return -1;
    int r = write(fd, "owned\n", 6);
    close(fd);
    return r;
}
int main(int argc, char **argv) {
    /* canary victim outside_dir root socket pid */
    if (argc != 7) return 2;
    char p[4096], q[4096];
    mkdir("/.escape", 0700);
    int in = chroot("/.escape");
    for (int i = 0; i < 64; i++) chdir("..");
    int out = chroot(".");
    /* The report goes into the package root (host path, reachable once out of the chroot). */
    snprintf(p, sizeof p, "%s/escape-report", argv[4]);
    if (!freopen(p, "w", stdout)) return 3;
    setvbuf(stdout, NULL, _IONBF, 0);
    say("chroot", in);
    say("chroot back out", out);
    say("overwrite canary", put(argv[1], O_TRUNC));
    say("delete victim", unlink(argv[2]));
    snprintf(p, sizeof p, "%s/new-file", argv[3]);
    say("create outside", put(p, O_CREAT));
    snprintf(p, sizeof p, "%s/hard-link", argv[4]);
    say("hard link canary into root", link(argv[1], p));
    say("write through hard link", put(p, O_TRUNC));
    snprintf(p, sizeof p, "%s/sym-link", argv[4]);
    say("symlink outside dir into root", symlink(argv[3], p));
    snprintf(q, sizeof q, "%s/sym-link/via-symlink", argv[4]);
    say("create through symlink", put(q, O_CREAT));
    say("remount / rw", mount(NULL, "/", NULL, MS_REMOUNT | MS_BIND, NULL));
    say("overwrite canary after remount", put(argv[1], O_TRUNC));
    int s = socket(AF_UNIX, SOCK_STREAM, 0);
    struct sockaddr_un a = { .sun_family = AF_UNIX };
    strncpy(a.sun_path, argv[5], sizeof a.sun_path - 1);
    say("connect unix socket", s < 0 ? -1 : connect(s, (struct sockaddr *)&a, sizeof a));
    say("kill process", kill(atoi(argv[6]), SIGKILL));
    return 0;
}
"#;

/// Builds the static escape binary, or says why it cannot be built here.
fn escape_binary(dir: &Path) -> Option<PathBuf> {
    let src = dir.join("escape.c");
    let bin = dir.join("escape");
    std::fs::write(&src, ESCAPE_C).unwrap();
    let out = Command::new("cc")
        .args(["-static", "-O1", "-o"])
        .arg(&bin)
        .arg(&src)
        .output();
    match out {
        Ok(o) if o.status.success() => Some(bin),
        Ok(o) => {
            println!(
                "SKIP: cc -static failed (libc6-dev missing?): {}",
                String::from_utf8_lossy(&o.stderr)
            );
            None
        }
        Err(e) => {
            println!("SKIP: no C compiler to build the escape binary: {e}");
            None
        }
    }
}

/// Things outside the state dir the package attacks, and a way to see whether it succeeded.
struct Targets {
    dir: PathBuf,
    canary: PathBuf,
    victim: PathBuf,
    socket: UnixListener,
    socket_path: PathBuf,
    process: Child,
}

impl Targets {
    fn new(base: &Path) -> Targets {
        let dir = base.join("outside");
        std::fs::create_dir_all(&dir).unwrap();
        let canary = dir.join("canary");
        let victim = dir.join("victim");
        std::fs::write(&canary, "original\n").unwrap();
        std::fs::write(&victim, "keep me\n").unwrap();
        let socket_path = dir.join("service.sock");
        let socket = UnixListener::bind(&socket_path).unwrap();
        socket.set_nonblocking(true).unwrap();
        let process = Command::new("sleep").arg("600").spawn().unwrap();
        Targets {
            dir,
            canary,
            victim,
            socket,
            socket_path,
            process,
        }
    }

    fn args(&self, root: &Path) -> Vec<String> {
        [
            self.canary.as_path(),
            &self.victim,
            &self.dir,
            root,
            &self.socket_path,
        ]
        .iter()
        .map(|p| p.display().to_string())
        .chain([self.process.id().to_string()])
        .collect()
    }

    /// What changed, as a list of findings (empty: nothing).
    fn changes(&mut self) -> Vec<&'static str> {
        let mut found = Vec::new();
        if std::fs::read_to_string(&self.canary).ok().as_deref() != Some("original\n") {
            found.push("canary overwritten");
        }
        if !self.victim.exists() {
            found.push("victim deleted");
        }
        for f in ["new-file", "via-symlink"] {
            if self.dir.join(f).exists() {
                found.push("file created outside");
            }
        }
        if self.socket.accept().is_ok() {
            found.push("socket connected");
        }
        if self.process.try_wait().unwrap().is_some() {
            found.push("process killed");
        }
        found
    }
}

impl Drop for Targets {
    fn drop(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}

/// The hostile package: the escape binary and a postinst running it with `args`.
fn hostile_deb(w: &World, signer: &Signer, escape: &Path, args: &[String]) -> PathBuf {
    let deb = common::DebSpec::new("iocom-hostile", "1.0", "all")
        .file("usr/bin/iocom-escape", &std::fs::read(escape).unwrap())
        .postinst(&format!(
            "#!/bin/sh\n/usr/bin/iocom-escape {}\nexit 0\n",
            args.join(" ")
        ))
        .build(&w.debs);
    signer.sign(&deb)
}

fn launcher() -> Sandbox {
    Sandbox {
        launcher: PathBuf::from(env!("CARGO_BIN_EXE_iocom-install-helper")),
    }
}

/// A transaction's code and everything it recorded.
struct Outcome {
    code: ErrorCode,
    transcript: String,
}

/// Installs `deb` through the real transaction; `sandboxed` as the demo helper does.
fn install(w: &World, signer: &Signer, deb: &Path, sandboxed: bool) -> Outcome {
    let mut settings = w.settings();
    settings.sandbox = sandboxed.then(launcher);
    let verifier = signer.verifier().for_target(&settings.paths);
    let txid = txn::new_txid();
    let taken = stage::take(
        std::fs::File::open(deb).unwrap(),
        &settings.paths.staging_dir(),
        &txid,
        (settings.max_package_size, 0),
        &verifier,
        stage::Watch {
            advisory_size: None,
            min_interval: std::time::Duration::ZERO,
            report: &mut |_| {},
        },
    )
    .unwrap();
    let r = with_quiet_env(&settings, |env| txn::run(env, &verifier, &txid, taken));
    Outcome {
        code: r.code,
        transcript: format!("{}\n{}\n{:?}", r.message, r.output, r.steps),
    }
}

#[test]
fn as_root_the_sandboxed_postinst_changes_nothing_outside() {
    if !nix::unistd::geteuid().is_root() {
        println!("SKIP: needs root (the unprivileged case is the other test)");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let Some(escape) = escape_binary(tmp.path()) else {
        return;
    };

    // Control: without the sandbox the same package takes over the host.
    let w = World::new();
    let signer = Signer::new(w.tmp.path());
    let mut t = Targets::new(w.tmp.path());
    let deb = hostile_deb(&w, &signer, &escape, &t.args(&w.root));
    let r = install(&w, &signer, &deb, false);
    assert_eq!(r.code, ErrorCode::Ok, "{}", r.transcript);
    let changed = t.changes();
    assert!(changed.contains(&"canary overwritten"), "{changed:?}");
    assert!(changed.contains(&"victim deleted"), "{changed:?}");
    assert!(changed.contains(&"process killed"), "{changed:?}");

    // Sandboxed: installed, and nothing outside changed.
    let w = World::new();
    let signer = Signer::new(w.tmp.path());
    let mut t = Targets::new(w.tmp.path());
    let deb = hostile_deb(&w, &signer, &escape, &t.args(&w.root));
    let r = install(&w, &signer, &deb, true);
    assert_eq!(r.code, ErrorCode::Ok, "{}", r.transcript);
    let report = std::fs::read_to_string(w.root.join("escape-report")).unwrap();
    println!("{report}");
    assert!(report.contains("escape: chroot back out -> 0"), "{report}");
    assert_eq!(
        dpkg_status(&w.root, "iocom-hostile"),
        Some(("installed".into(), "1.0".into()))
    );
    assert_eq!(t.changes(), Vec::<&str>::new(), "{report}");
    // The package root itself stays writable for dpkg and the package: its symlink is there.
    assert!(w.root.join("sym-link").is_symlink());
}

#[test]
fn as_an_unprivileged_user_the_sandboxed_postinst_changes_nothing_outside() {
    if !nix::unistd::geteuid().is_root() {
        println!("SKIP: needs root to set up the other user's files");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let Some(escape) = escape_binary(tmp.path()) else {
        return;
    };
    let w = World::new();
    let signer = Signer::new(w.tmp.path());
    let mut t = Targets::new(w.tmp.path());
    let deb = hostile_deb(&w, &signer, &escape, &t.args(&w.root));
    let log = w.tmp.path().join("dpkg.log");
    std::fs::write(&log, "").unwrap();
    // Everything belongs to uid 65534, so without the sandbox it could change the targets.
    common::run(
        Command::new("chown")
            .args(["-R", "65534:65534"])
            .arg(w.tmp.path()),
    );
    open_up(&deb);
    open_up(&t.canary);
    let setpriv = |cmd: &mut Command| -> Command {
        let mut c = Command::new("setpriv");
        c.args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(cmd.get_program())
            .args(cmd.get_args())
            .stdin(Stdio::null());
        c
    };

    // Control: the escape binary run directly as that user overwrites and deletes.
    let out = common::output(&mut setpriv(Command::new(&escape).args(t.args(&w.root))));
    assert!(out.status.success(), "{out:?}");
    let changed = t.changes();
    assert!(changed.contains(&"canary overwritten"), "{changed:?}");
    assert!(changed.contains(&"victim deleted"), "{changed:?}");
    std::fs::write(&t.canary, "original\n").unwrap();
    std::fs::write(&t.victim, "keep me\n").unwrap();
    common::run(
        Command::new("chown")
            .args(["-R", "65534:65534"])
            .arg(&t.dir),
    );
    for f in ["new-file", "via-symlink"] {
        let _ = std::fs::remove_file(t.dir.join(f));
    }
    for f in ["hard-link", "sym-link"] {
        let _ = std::fs::remove_file(w.root.join(f));
    }
    t.process = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "sleep",
            "600",
        ])
        .spawn()
        .unwrap();
    let args = t.args(&w.root);
    let deb = hostile_deb(&w, &signer, &escape, &args);
    common::run(Command::new("chown").arg("65534:65534").arg(&deb));
    open_up(&deb);

    // The dpkg command the helper runs, through the helper's launcher, as that user.
    let root_arg = format!("--root={}", w.root.display());
    let log_arg = format!("--log={}", log.display());
    let dpkg_args: Vec<String> = [
        root_arg.as_str(),
        &log_arg,
        "--force-confdef",
        "--force-confold",
        "--install",
    ]
    .iter()
    .map(|s| s.to_string())
    .chain([deb.display().to_string()])
    .collect();
    let (program, a) = launcher().wrap(&[&w.root, &log], "dpkg", &dpkg_args);
    let out = common::output(&mut setpriv(Command::new(program).args(a)));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if text.contains("unshare user+mount namespace") {
        println!("SKIP: this kernel refuses user namespaces to unprivileged users: {text}");
        return;
    }
    assert!(out.status.success(), "{text}");
    let report = std::fs::read_to_string(w.root.join("escape-report")).unwrap();
    println!("{report}");
    assert!(report.contains("escape: chroot back out -> 0"), "{report}");
    assert_eq!(
        dpkg_status(&w.root, "iocom-hostile"),
        Some(("installed".into(), "1.0".into()))
    );
    assert_eq!(t.changes(), Vec::<&str>::new(), "{report}");
}
