//! The sandbox's seccomp filter: `socket(2)` fails with `EACCES` and `io_uring_setup(2)` (which
//! could open sockets behind the filter's back) with `ENOSYS`; so does every system call of a
//! foreign ABI (32-bit x86, x32). Everything else is allowed.

use libc::{sock_filter, sock_fprog};

#[cfg(target_arch = "x86_64")]
const AUDIT_ARCH: u32 = 0xC000_003E;
#[cfg(target_arch = "aarch64")]
const AUDIT_ARCH: u32 = 0xC000_00B7;
/// System call numbers at or above this are x32 on x86_64 (never on aarch64).
#[cfg(target_arch = "x86_64")]
const FOREIGN_NR: u32 = 0x4000_0000;
#[cfg(target_arch = "aarch64")]
const FOREIGN_NR: u32 = u32::MAX;

const LD_W_ABS: u16 = (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16;
const JEQ: u16 = (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16;
const JGE: u16 = (libc::BPF_JMP | libc::BPF_JGE | libc::BPF_K) as u16;
const RET: u16 = (libc::BPF_RET | libc::BPF_K) as u16;
/// Offsets in `struct seccomp_data`.
const NR: u32 = 0;
const ARCH: u32 = 4;

fn op(code: u16, jt: u8, jf: u8, k: u32) -> sock_filter {
    sock_filter { code, jt, jf, k }
}

fn errno(e: i32) -> u32 {
    libc::SECCOMP_RET_ERRNO | (e as u32 & libc::SECCOMP_RET_DATA)
}

/// The filter program.
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
fn program() -> Vec<sock_filter> {
    vec![
        op(LD_W_ABS, 0, 0, ARCH),
        op(JEQ, 1, 0, AUDIT_ARCH),
        op(RET, 0, 0, errno(libc::ENOSYS)),
        op(LD_W_ABS, 0, 0, NR),
        op(JGE, 3, 0, FOREIGN_NR),
        op(JEQ, 3, 0, libc::SYS_socket as u32),
        op(JEQ, 1, 0, libc::SYS_io_uring_setup as u32),
        op(RET, 0, 0, libc::SECCOMP_RET_ALLOW),
        op(RET, 0, 0, errno(libc::ENOSYS)),
        op(RET, 0, 0, errno(libc::EACCES)),
    ]
}

/// Installs the filter on the calling thread (inherited by its children). Needs
/// no_new_privs (or CAP_SYS_ADMIN).
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
#[allow(unsafe_code)]
pub fn install() -> Result<(), String> {
    let prog = program();
    let fprog = sock_fprog {
        len: u16::try_from(prog.len()).map_err(|_| "filter too long")?,
        filter: prog.as_ptr() as *mut sock_filter,
    };
    // SAFETY: `fprog` points at `prog`, which outlives the call; the kernel copies the program.
    let r = unsafe {
        libc::prctl(
            libc::PR_SET_SECCOMP,
            libc::SECCOMP_MODE_FILTER,
            &fprog as *const sock_fprog,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(format!("seccomp: {}", std::io::Error::last_os_error()))
    }
}

/// No filter is known for this architecture: the sandbox refuses to start.
#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
pub fn install() -> Result<(), String> {
    Err("no seccomp filter for this architecture".into())
}
