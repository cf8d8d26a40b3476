//! The node's own sandbox, applied once at start-up — after the listener is bound and the config,
//! certificates and keys are read, before the async runtime starts any thread — in one ordered
//! sequence ([`apply`]). If the node is compromised, the damage stops here:
//!
//! 1. `no_new_privs`: nothing this process executes can gain privileges (and seccomp needs it);
//! 2. every capability dropped from every set, bounding and ambient included;
//! 3. landlock: read-only access to the config and certificate directories (so reload still
//!    works), nothing else on the filesystem; with landlock ABI 4+, TCP bind only to the listener
//!    port and TCP connect only to nats-server's and the peers' ports;
//! 4. seccomp: the allow-list `hardening/seccomp/<arch>.json`, compiled at build time; any other
//!    syscall kills the process (or is only logged with `--seccomp-log`).
//!
//! This is the only module where `unsafe` is allowed; each block says why it is sound.
//!
//! Limits: landlock rules bind the calling thread and threads it creates later, so `apply` must
//! run before the runtime's threads exist; Debian 12's 6.1 kernel has landlock ABI 2 (no network
//! rules), the status says so and `/metrics` exports the ABI reached.
#![allow(unsafe_code)]

mod capabilities;
mod filesystem;
mod syscalls;

use std::path::PathBuf;

/// What the sandbox must still allow the node to do.
#[derive(Debug, Clone, Default)]
pub struct SandboxPlan {
    /// Directories the node reads after start-up (certificates, config); files are accepted too.
    pub read_only: Vec<PathBuf>,
    /// Directories the node writes (none today).
    pub read_write: Vec<PathBuf>,
    /// The listener's port (already bound).
    pub bind_port: u16,
    /// TCP ports the node connects to: nats-server and every peer.
    pub connect_ports: Vec<u16>,
    /// Log syscalls outside the policy instead of killing the process.
    pub seccomp_log: bool,
}

/// What was achieved, for the log and `/metrics`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SandboxReport {
    pub no_new_privs: bool,
    pub capabilities_dropped: bool,
    /// The landlock ABI the kernel offers (0: none).
    pub landlock_abi: i32,
    /// `full`, `partial` or `none`.
    pub landlock: &'static str,
    pub landlock_network_rules: bool,
    /// `kill` or `log`.
    pub seccomp: &'static str,
}

#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error("no_new_privs: {0}")]
    NoNewPrivs(std::io::Error),
    #[error("dropping capabilities: {0}")]
    Capabilities(String),
    #[error("landlock: {0}")]
    Landlock(String),
    #[error("seccomp: {0}")]
    Seccomp(String),
}

/// Applies the whole sequence to the calling (only) thread. Any failure is returned and the
/// caller refuses to serve.
pub fn apply(plan: &SandboxPlan) -> Result<SandboxReport, SandboxError> {
    // 1. no_new_privs first: required for unprivileged seccomp, and it makes every later step
    //    irreversible for anything this process might execute.
    set_no_new_privs().map_err(SandboxError::NoNewPrivs)?;
    // 2. Capabilities, while CAP_SETPCAP may still be held to shrink the bounding set.
    capabilities::drop_all()?;
    // 3. Landlock: the filesystem and TCP ports the node still needs, nothing more.
    let (abi, landlock, network) = filesystem::restrict(plan)?;
    // 4. Seccomp last: it also forbids the syscalls the steps above used.
    let seccomp = syscalls::install(plan.seccomp_log)?;
    Ok(SandboxReport {
        no_new_privs: true,
        capabilities_dropped: true,
        landlock_abi: abi,
        landlock,
        landlock_network_rules: network,
        seccomp,
    })
}

fn set_no_new_privs() -> std::io::Result<()> {
    // SAFETY: prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) takes no pointers; it only sets a flag on
    // the calling process.
    let rc = unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Test-only triggers, compiled in only with the `sandbox-selftest` feature (never in release or
/// image builds): SIGUSR1 tries to open `BSFG_SELFTEST_OPEN` and logs the outcome; SIGUSR2 makes
/// a syscall outside the seccomp policy (`ptrace`).
#[cfg(feature = "sandbox-selftest")]
pub async fn selftest_triggers() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut usr1), Ok(mut usr2)) = (
        signal(SignalKind::user_defined1()),
        signal(SignalKind::user_defined2()),
    ) else {
        return;
    };
    loop {
        tokio::select! {
            _ = usr1.recv() => {
                let path = std::env::var("BSFG_SELFTEST_OPEN").unwrap_or_else(|_| "/etc/passwd".into());
                match std::fs::File::open(&path) {
                    Ok(_) => tracing::warn!(path, "selftest: open succeeded"),
                    Err(e) => tracing::warn!(path, error = %e, "selftest: open refused"),
                }
            }
            _ = usr2.recv() => {
                tracing::warn!("selftest: calling ptrace, outside the seccomp policy");
                // SAFETY: PTRACE_TRACEME takes no pointers; under the sandbox the call never runs.
                let rc = unsafe { libc::ptrace(libc::PTRACE_TRACEME, 0, 0, 0) };
                tracing::warn!(rc, "selftest: ptrace returned (seccomp did not stop it)");
            }
        }
    }
}
