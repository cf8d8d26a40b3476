//! Step 4: the seccomp allow-list, compiled from `hardening/seccomp/<arch>.json` at build time
//! (`build.rs`) and installed on every thread (TSYNC).

use super::SandboxError;
use seccompiler::sock_filter;

static KILL: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/seccomp_kill.bpf"));
static LOG: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/seccomp_log.bpf"));

fn program(bytes: &[u8]) -> Vec<sock_filter> {
    bytes
        .chunks_exact(8)
        .map(|i| sock_filter {
            code: u16::from_le_bytes([i[0], i[1]]),
            jt: i[2],
            jf: i[3],
            k: u32::from_le_bytes([i[4], i[5], i[6], i[7]]),
        })
        .collect()
}

/// Installs the policy; returns `kill` or `log`.
pub fn install(log_only: bool) -> Result<&'static str, SandboxError> {
    let program = program(if log_only { LOG } else { KILL });
    if program.is_empty() {
        return Err(SandboxError::Seccomp(format!(
            "no policy for this architecture ({}); add hardening/seccomp/{}.json",
            std::env::consts::ARCH,
            std::env::consts::ARCH
        )));
    }
    seccompiler::apply_filter_all_threads(&program)
        .map_err(|e| SandboxError::Seccomp(e.to_string()))?;
    Ok(if log_only { "log" } else { "kill" })
}
