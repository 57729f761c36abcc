//! The system-call filter every jailed worker runs under (bubblewrap installs it with
//! `--seccomp` just before the worker's program, setpriv included, runs): a classic BPF
//! program that answers `EPERM` to the calls a function has no use for and an attacker
//! does: reading or writing another process (`ptrace`, `process_vm_readv`/`writev`,
//! `pidfd_getfd`, `kcmp`), new namespaces (`unshare`, `setns`, `clone` with
//! `CLONE_NEWUSER`), mounts (old and new API), the kernel's own surfaces (`bpf`,
//! `perf_event_open`, `userfaultfd`, `io_uring_*`, keyrings, modules, `kexec`, `reboot`,
//! swap, clocks, `syslog`, `acct`, `quotactl`, file handles, `chroot`, x86's port I/O).
//! `clone3` answers `ENOSYS`, so the C library falls back to `clone`, whose flags the
//! filter can see (a new thread or process still works). Any other architecture than the
//! one it was built for is killed, as is every x32 call on x86_64.
//!
//! Built here, by hand, from the kernel's constants: a program of a few dozen instructions
//! that can be read whole, with no rule engine between it and what runs.

/// The calls refused with `EPERM`, by name (for reports) and number.
const DENIED: &[(&str, libc::c_long)] = &[
    ("ptrace", libc::SYS_ptrace),
    ("process_vm_readv", libc::SYS_process_vm_readv),
    ("process_vm_writev", libc::SYS_process_vm_writev),
    ("pidfd_getfd", libc::SYS_pidfd_getfd),
    ("kcmp", libc::SYS_kcmp),
    ("unshare", libc::SYS_unshare),
    ("setns", libc::SYS_setns),
    ("mount", libc::SYS_mount),
    ("umount2", libc::SYS_umount2),
    ("pivot_root", libc::SYS_pivot_root),
    ("chroot", libc::SYS_chroot),
    ("fsopen", libc::SYS_fsopen),
    ("fsconfig", libc::SYS_fsconfig),
    ("fsmount", libc::SYS_fsmount),
    ("fspick", libc::SYS_fspick),
    ("move_mount", libc::SYS_move_mount),
    ("open_tree", libc::SYS_open_tree),
    ("mount_setattr", libc::SYS_mount_setattr),
    ("bpf", libc::SYS_bpf),
    ("perf_event_open", libc::SYS_perf_event_open),
    ("userfaultfd", libc::SYS_userfaultfd),
    ("io_uring_setup", libc::SYS_io_uring_setup),
    ("io_uring_enter", libc::SYS_io_uring_enter),
    ("io_uring_register", libc::SYS_io_uring_register),
    ("keyctl", libc::SYS_keyctl),
    ("add_key", libc::SYS_add_key),
    ("request_key", libc::SYS_request_key),
    ("init_module", libc::SYS_init_module),
    ("finit_module", libc::SYS_finit_module),
    ("delete_module", libc::SYS_delete_module),
    ("kexec_load", libc::SYS_kexec_load),
    ("kexec_file_load", libc::SYS_kexec_file_load),
    ("reboot", libc::SYS_reboot),
    ("swapon", libc::SYS_swapon),
    ("swapoff", libc::SYS_swapoff),
    ("settimeofday", libc::SYS_settimeofday),
    ("clock_settime", libc::SYS_clock_settime),
    ("clock_adjtime", libc::SYS_clock_adjtime),
    ("adjtimex", libc::SYS_adjtimex),
    ("syslog", libc::SYS_syslog),
    ("acct", libc::SYS_acct),
    ("quotactl", libc::SYS_quotactl),
    ("open_by_handle_at", libc::SYS_open_by_handle_at),
    ("name_to_handle_at", libc::SYS_name_to_handle_at),
    ("vhangup", libc::SYS_vhangup),
    #[cfg(target_arch = "x86_64")]
    ("iopl", libc::SYS_iopl),
    #[cfg(target_arch = "x86_64")]
    ("ioperm", libc::SYS_ioperm),
];

/// The names of the calls refused (for `baton doctor`).
pub fn denied_names() -> impl Iterator<Item = &'static str> {
    DENIED
        .iter()
        .map(|(name, _)| *name)
        .chain(["clone3 (ENOSYS)", "clone with CLONE_NEWUSER"])
}

#[cfg(target_arch = "x86_64")]
const AUDIT_ARCH: u32 = 0xc000_003e;
#[cfg(target_arch = "aarch64")]
const AUDIT_ARCH: u32 = 0xc000_00b7;

// Classic BPF, as linux/filter.h and linux/seccomp.h define it.
const LD_W_ABS: u16 = 0x20;
const JEQ_K: u16 = 0x15;
const JGE_K: u16 = 0x35;
const JSET_K: u16 = 0x45;
const RET_K: u16 = 0x06;
const RET_ALLOW: u32 = 0x7fff_0000;
const RET_ERRNO: u32 = 0x0005_0000;
const RET_KILL_PROCESS: u32 = 0x8000_0000;
/// Offsets in `struct seccomp_data`: the call's number, its architecture, and the low
/// 32 bits of its first argument (little-endian).
const NR: u32 = 0;
const ARCH: u32 = 4;
const ARG0_LOW: u32 = 16;

/// One instruction, as the kernel reads it (`struct sock_filter`).
fn insn(code: u16, jt: u8, jf: u8, k: u32) -> [u8; 8] {
    let mut bytes = [0u8; 8];
    bytes[..2].copy_from_slice(&code.to_ne_bytes());
    bytes[2] = jt;
    bytes[3] = jf;
    bytes[4..].copy_from_slice(&k.to_ne_bytes());
    bytes
}

/// The filter as bubblewrap's `--seccomp` reads it (the instructions, back to back), or
/// `None` on an architecture it was not written for.
pub fn program() -> Option<Vec<u8>> {
    #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
    {
        let eperm = RET_ERRNO | libc::EPERM as u32;
        let mut code = vec![
            insn(LD_W_ABS, 0, 0, ARCH),
            insn(JEQ_K, 1, 0, AUDIT_ARCH),
            insn(RET_K, 0, 0, RET_KILL_PROCESS),
            insn(LD_W_ABS, 0, 0, NR),
        ];
        if cfg!(target_arch = "x86_64") {
            // x32 calls (bit 30 set) share the architecture value: none is allowed.
            code.push(insn(JGE_K, 0, 1, 0x4000_0000));
            code.push(insn(RET_K, 0, 0, RET_KILL_PROCESS));
        }
        // Each refused call: if it is this one, answer at once; else go on.
        for &(_, nr) in DENIED {
            code.push(insn(JEQ_K, 0, 1, nr as u32));
            code.push(insn(RET_K, 0, 0, eperm));
        }
        code.push(insn(JEQ_K, 0, 1, libc::SYS_clone3 as u32));
        code.push(insn(RET_K, 0, 0, RET_ERRNO | libc::ENOSYS as u32));
        // clone: refused with a new user namespace in its flags, allowed otherwise.
        code.push(insn(JEQ_K, 0, 3, libc::SYS_clone as u32));
        code.push(insn(LD_W_ABS, 0, 0, ARG0_LOW));
        code.push(insn(JSET_K, 0, 1, libc::CLONE_NEWUSER as u32));
        code.push(insn(RET_K, 0, 0, eperm));
        code.push(insn(RET_K, 0, 0, RET_ALLOW));
        Some(code.concat())
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs the program on one call as the kernel would (the few instructions it uses).
    fn run(program: &[u8], arch: u32, nr: u32, arg0: u64) -> u32 {
        let data = {
            let mut d = [0u8; 64];
            d[0..4].copy_from_slice(&nr.to_ne_bytes());
            d[4..8].copy_from_slice(&arch.to_ne_bytes());
            d[16..24].copy_from_slice(&arg0.to_ne_bytes());
            d
        };
        let insns: Vec<(u16, u8, u8, u32)> = program
            .chunks(8)
            .map(|c| {
                (
                    u16::from_ne_bytes([c[0], c[1]]),
                    c[2],
                    c[3],
                    u32::from_ne_bytes([c[4], c[5], c[6], c[7]]),
                )
            })
            .collect();
        let (mut pc, mut acc) = (0usize, 0u32);
        loop {
            let (code, jt, jf, k) = insns[pc];
            let jump = |taken: bool| pc + 1 + usize::from(if taken { jt } else { jf });
            pc = match code {
                LD_W_ABS => {
                    let at = k as usize;
                    acc = u32::from_ne_bytes(data[at..at + 4].try_into().unwrap());
                    pc + 1
                }
                JEQ_K => jump(acc == k),
                JGE_K => jump(acc >= k),
                JSET_K => jump(acc & k != 0),
                RET_K => return k,
                other => panic!("instruction {other:#x} at {pc}"),
            };
        }
    }

    #[test]
    fn the_filter_refuses_what_it_lists_and_allows_the_rest() {
        let program = program().expect("built for this architecture");
        assert!(program.len() / 8 < 255, "within one jump's reach");
        let eperm = RET_ERRNO | libc::EPERM as u32;
        for &(name, nr) in DENIED {
            assert_eq!(run(&program, AUDIT_ARCH, nr as u32, 0), eperm, "{name}");
        }
        for allowed in [
            libc::SYS_read,
            libc::SYS_write,
            libc::SYS_openat,
            libc::SYS_exit_group,
        ] {
            assert_eq!(run(&program, AUDIT_ARCH, allowed as u32, 0), RET_ALLOW);
        }
        let clone = libc::SYS_clone as u32;
        let thread = (libc::CLONE_VM | libc::CLONE_THREAD | libc::CLONE_SIGHAND) as u64;
        assert_eq!(run(&program, AUDIT_ARCH, clone, thread), RET_ALLOW);
        assert_eq!(
            run(&program, AUDIT_ARCH, clone, libc::SIGCHLD as u64),
            RET_ALLOW
        );
        let new_user = (libc::CLONE_NEWUSER | libc::SIGCHLD) as u64;
        assert_eq!(run(&program, AUDIT_ARCH, clone, new_user), eperm);
        assert_eq!(
            run(&program, AUDIT_ARCH, libc::SYS_clone3 as u32, 0),
            RET_ERRNO | libc::ENOSYS as u32
        );
        // Another architecture's calls, and x32's, end the process.
        assert_eq!(run(&program, 0x4000_0003, 0, 0), RET_KILL_PROCESS);
        if cfg!(target_arch = "x86_64") {
            assert_eq!(
                run(&program, AUDIT_ARCH, 0x4000_0000 | libc::SYS_read as u32, 0),
                RET_KILL_PROCESS
            );
        }
        assert!(denied_names().any(|n| n == "ptrace"));
    }
}
