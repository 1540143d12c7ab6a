//! The sandbox dpkg runs in for an isolated root (`iocomd --demo`, `--root`): whatever a signed
//! package contains, dpkg and its maintainer scripts can change nothing but the package root
//! and dpkg's log, even when the helper runs as real root. Production (the system root) never
//! uses it.
//!
//! The helper re-executes itself as `iocom-install-helper --sandbox-exec --writable DIR...
//! -- PROGRAM ARGS` (a fresh single-threaded process, [`exec_main`]), which:
//! 1. closes every inherited fd but stdio (stdin is `/dev/null`, stdout/stderr pipes: no fd
//!    of a terminal) and arranges to be killed with the helper; it stays in the helper's
//!    process group, so killing that group kills the whole sandbox;
//! 2. enters a new user and mount namespace, mapping uid/gid 0 to the caller's own (so dpkg
//!    runs "as root" also for an unprivileged demo, and files belong to the caller);
//! 3. makes every mount private, bind-mounts the writable paths and `/dev/{null,zero,full,
//!    random,urandom}` onto themselves, covers `/proc` with an empty tmpfs (no
//!    `/proc/<pid>/root` into the host's namespace), then sets read-only, nosuid and nodev on
//!    the whole tree (`mount_setattr`, recursive) and clears read-only again on the writable
//!    paths and nodev on the five device binds;
//! 4. enters a second user namespace (uid 0 → 0) with new mount, PID, network, IPC and UTS
//!    namespaces: the mounts are copied into a namespace owned by a less privileged user
//!    namespace, so the kernel locks their flags — the sandboxed root cannot remount anything
//!    writable or unmount a cover; it sees only its own processes (no signals or ptrace to the
//!    host), has only a loopback-less network and no abstract sockets of the host;
//! 5. sets no_new_privs and a seccomp filter refusing `socket(2)` (so no connection to a
//!    path-based Unix socket such as systemd's or D-Bus's, where uid 0 would be trusted) and
//!    io_uring;
//! 6. forks the program as PID 1 of the new PID namespace (killed with the launcher:
//!    `PR_SET_PDEATHSIG`; when it exits the kernel kills whatever it left behind) and exits
//!    with its status.
//!
//! A hard link from outside into a writable path fails (`EXDEV`: different mounts), writes
//! through a symlink land on a read-only mount (`EROFS`). Limits: package files must be owned
//! by root (only uid/gid 0 are mapped), and the sandbox needs user namespaces (an
//! unprivileged demo on a kernel that forbids them cannot install).

use std::ffi::{CString, OsString};
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use nix::mount::{MsFlags, mount};
use nix::sched::{CloneFlags, unshare};

mod seccomp;

/// The flag that makes the helper binary act as the sandbox launcher.
pub const SANDBOX_FLAG: &str = "--sandbox-exec";
/// Exit status of the launcher when the sandbox cannot be set up.
pub const SETUP_FAILED: i32 = 125;
/// Device nodes usable inside (every other device node is on a nodev mount).
const DEVICES: [&str; 5] = [
    "/dev/null",
    "/dev/zero",
    "/dev/full",
    "/dev/random",
    "/dev/urandom",
];

/// How the helper starts sandboxed commands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sandbox {
    /// The helper binary (re-executed with [`SANDBOX_FLAG`]).
    pub launcher: PathBuf,
}

impl Sandbox {
    /// The program and arguments that run `program args` confined, with `writable` paths.
    pub fn wrap(
        &self,
        writable: &[&Path],
        program: &str,
        args: &[String],
    ) -> (String, Vec<String>) {
        let mut a = vec![SANDBOX_FLAG.to_string()];
        for w in writable {
            a.push("--writable".into());
            a.push(w.display().to_string());
        }
        a.push("--".into());
        a.push(program.into());
        a.extend(args.iter().cloned());
        (self.launcher.display().to_string(), a)
    }
}

/// The launcher's entry point: `args` are the arguments after [`SANDBOX_FLAG`]. Never returns.
pub fn exec_main(args: Vec<OsString>) -> ! {
    let code = match parse(args).and_then(|(w, cmd)| run(&w, &cmd)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("iocom-install-helper sandbox: {e}");
            SETUP_FAILED
        }
    };
    std::process::exit(code)
}

fn parse(args: Vec<OsString>) -> Result<(Vec<PathBuf>, Vec<CString>), String> {
    let mut it = args.into_iter();
    let mut writable = Vec::new();
    loop {
        match it.next() {
            Some(a) if a == "--writable" => {
                let p = PathBuf::from(it.next().ok_or("--writable needs a path")?);
                let p = p
                    .canonicalize()
                    .map_err(|e| format!("{}: {e}", p.display()))?;
                if p == Path::new("/") {
                    return Err("the whole root cannot be writable".into());
                }
                writable.push(p);
            }
            Some(a) if a == "--" => break,
            _ => return Err("usage: --sandbox-exec [--writable PATH]... -- PROGRAM ARGS".into()),
        }
    }
    let cmd: Vec<CString> = it
        .map(|a| CString::new(a.as_bytes()).map_err(|_| "NUL in an argument".to_string()))
        .collect::<Result<_, _>>()?;
    if cmd.is_empty() {
        return Err("no program".into());
    }
    Ok((writable, cmd))
}

fn step<T, E: std::fmt::Display>(what: &str, r: Result<T, E>) -> Result<T, String> {
    r.map_err(|e| format!("{what}: {e}"))
}

/// Writes `0 <uid> 1` maps for the current (new) user namespace through `/proc/self` (`dir`).
fn map_root(dir: &OwnedFd, uid: u32, gid: u32) -> Result<(), String> {
    for (file, text) in [
        ("setgroups", "deny".to_string()),
        ("uid_map", format!("0 {uid} 1")),
        ("gid_map", format!("0 {gid} 1")),
    ] {
        let fd = step(
            file,
            nix::fcntl::openat(
                dir,
                file,
                nix::fcntl::OFlag::O_WRONLY | nix::fcntl::OFlag::O_CLOEXEC,
                nix::sys::stat::Mode::empty(),
            ),
        )?;
        step(file, nix::unistd::write(&fd, text.as_bytes()))?;
    }
    Ok(())
}

#[allow(unsafe_code)]
fn set_attr(path: &Path, recursive: bool, set: u64, clear: u64) -> Result<(), String> {
    let c = CString::new(path.as_os_str().as_bytes()).map_err(|_| "NUL in a path")?;
    let attr = libc::mount_attr {
        attr_set: set,
        attr_clr: clear,
        propagation: 0,
        userns_fd: 0,
    };
    let flags = if recursive { libc::AT_RECURSIVE } else { 0 };
    // SAFETY: `c` is a valid NUL-terminated path and `attr` a valid mount_attr of the size
    // passed; the kernel only reads both.
    let r = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            libc::AT_FDCWD,
            c.as_ptr(),
            flags,
            &attr as *const libc::mount_attr,
            std::mem::size_of::<libc::mount_attr>(),
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(format!(
            "mount_setattr {}: {}",
            path.display(),
            std::io::Error::last_os_error()
        ))
    }
}

#[allow(unsafe_code)]
fn close_inherited_fds() -> Result<(), String> {
    // SAFETY: close_range on fds 3.. owned by nobody else in this single-threaded process
    // (std has not opened any it still uses).
    let r = unsafe { libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32) };
    if r == 0 {
        Ok(())
    } else {
        Err(format!("close_range: {}", std::io::Error::last_os_error()))
    }
}

fn run(writable: &[PathBuf], cmd: &[CString]) -> Result<i32, String> {
    close_inherited_fds()?;
    // Dies with the helper (which may be killed with its process group, which we stay in).
    let parent = nix::unistd::getppid();
    step(
        "parent death signal",
        nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL),
    )?;
    if nix::unistd::getppid() != parent {
        return Err("the helper exited".into());
    }
    let (uid, gid) = (
        nix::unistd::geteuid().as_raw(),
        nix::unistd::getegid().as_raw(),
    );
    let proc_self = step(
        "/proc/self",
        nix::fcntl::open(
            "/proc/self",
            nix::fcntl::OFlag::O_PATH
                | nix::fcntl::OFlag::O_DIRECTORY
                | nix::fcntl::OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::empty(),
        ),
    )?;

    // First namespace: build the view.
    step(
        "unshare user+mount namespace",
        unshare(CloneFlags::CLONE_NEWUSER | CloneFlags::CLONE_NEWNS),
    )?;
    map_root(&proc_self, uid, gid)?;
    let none: Option<&str> = None;
    step(
        "make mounts private",
        mount(none, "/", none, MsFlags::MS_REC | MsFlags::MS_PRIVATE, none),
    )?;
    for w in writable {
        step(
            &format!("bind {}", w.display()),
            mount(Some(w), w, none, MsFlags::MS_BIND | MsFlags::MS_REC, none),
        )?;
    }
    let devices: Vec<&Path> = DEVICES
        .iter()
        .map(Path::new)
        .filter(|d| d.exists())
        .collect();
    for d in &devices {
        step(
            &format!("bind {}", d.display()),
            mount(Some(*d), *d, none, MsFlags::MS_BIND, none),
        )?;
    }
    step(
        "cover /proc",
        mount(
            Some("none"),
            "/proc",
            Some("tmpfs"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
            Some("size=4k,mode=555"),
        ),
    )?;
    let all = libc::MOUNT_ATTR_RDONLY | libc::MOUNT_ATTR_NOSUID | libc::MOUNT_ATTR_NODEV;
    set_attr(Path::new("/"), true, all, 0)?;
    for w in writable {
        set_attr(w, true, 0, libc::MOUNT_ATTR_RDONLY)?;
    }
    for d in &devices {
        set_attr(d, false, 0, libc::MOUNT_ATTR_NODEV)?;
    }

    // Second namespace: the kernel locks what the first one set up.
    step(
        "unshare the sandbox namespaces",
        unshare(
            CloneFlags::CLONE_NEWUSER
                | CloneFlags::CLONE_NEWNS
                | CloneFlags::CLONE_NEWPID
                | CloneFlags::CLONE_NEWNET
                | CloneFlags::CLONE_NEWIPC
                | CloneFlags::CLONE_NEWUTS,
        ),
    )?;
    map_root(&proc_self, 0, 0)?;
    drop(proc_self);
    step("no_new_privs", nix::sys::prctl::set_no_new_privs())?;
    seccomp::install()?;
    spawn_and_wait(cmd)
}

#[allow(unsafe_code)]
fn spawn_and_wait(cmd: &[CString]) -> Result<i32, String> {
    use nix::sys::wait::{WaitStatus, waitpid};
    use nix::unistd::{ForkResult, execvp, fork};
    // SAFETY: this process is single-threaded (the launcher runs before any runtime starts),
    // so the child may run arbitrary code before exec.
    match step("fork", unsafe { fork() })? {
        ForkResult::Child => {
            let _ = nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL);
            let e = execvp(&cmd[0], cmd).unwrap_err();
            eprintln!(
                "iocom-install-helper sandbox: exec {}: {e}",
                cmd[0].to_string_lossy()
            );
            std::process::exit(127);
        }
        ForkResult::Parent { child } => loop {
            match waitpid(child, None) {
                Ok(WaitStatus::Exited(_, code)) => return Ok(code),
                Ok(WaitStatus::Signaled(_, sig, _)) => return Ok(128 + sig as i32),
                Ok(_) | Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => return Err(format!("waitpid: {e}")),
            }
        },
    }
}
