//! Step 3: landlock, best effort across ABI versions. The filesystem: read-only beneath the
//! configured directories, nothing elsewhere. The network (ABI 4+): bind only the listener port,
//! connect only to nats-server's and the peers' ports.

use super::{SandboxError, SandboxPlan};
use landlock::{
    ABI, Access, AccessFs, AccessNet, CompatLevel, Compatible, NetPort, PathBeneath, PathFd,
    Ruleset, RulesetAttr, RulesetCreatedAttr, RulesetStatus,
};

/// The newest ABI this node asks for; older kernels get what they support.
const TARGET_ABI: ABI = ABI::V5;

/// The ABI the running kernel offers (0 without landlock).
pub fn kernel_abi() -> i32 {
    // SAFETY: landlock_create_ruleset(NULL, 0, LANDLOCK_CREATE_RULESET_VERSION) reads no memory
    // (the attribute pointer is null and its size zero) and only returns the ABI version.
    let version = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<libc::c_void>(),
            0usize,
            1u32,
        )
    };
    i32::try_from(version).unwrap_or(0).max(0)
}

/// Returns (kernel ABI, `full`/`partial`/`none`, network rules enforced).
pub fn restrict(plan: &SandboxPlan) -> Result<(i32, &'static str, bool), SandboxError> {
    let fail = |e: &dyn std::fmt::Display| SandboxError::Landlock(e.to_string());
    let abi = kernel_abi();
    let network = abi >= 4;
    let mut ruleset = Ruleset::default()
        .set_compatibility(CompatLevel::BestEffort)
        .handle_access(AccessFs::from_all(TARGET_ABI))
        .map_err(|e| fail(&e))?;
    if network {
        ruleset = ruleset
            .handle_access(AccessNet::BindTcp | AccessNet::ConnectTcp)
            .map_err(|e| fail(&e))?;
    }
    let mut created = ruleset.create().map_err(|e| fail(&e))?;
    let read = AccessFs::from_read(TARGET_ABI);
    let write = AccessFs::from_all(TARGET_ABI);
    let paths = plan
        .read_only
        .iter()
        .map(|p| (p, read))
        .chain(plan.read_write.iter().map(|p| (p, write)));
    for (path, access) in paths {
        // A rule on a single file may only carry file rights (no directory listing).
        let access = if path.is_file() {
            access & AccessFs::from_file(TARGET_ABI)
        } else {
            access
        };
        let fd = PathFd::new(path)
            .map_err(|e| SandboxError::Landlock(format!("{}: {e}", path.display())))?;
        created = created
            .add_rule(PathBeneath::new(fd, access))
            .map_err(|e| fail(&e))?;
    }
    if network {
        created = created
            .add_rule(NetPort::new(plan.bind_port, AccessNet::BindTcp))
            .map_err(|e| fail(&e))?;
        for port in &plan.connect_ports {
            created = created
                .add_rule(NetPort::new(*port, AccessNet::ConnectTcp))
                .map_err(|e| fail(&e))?;
        }
    }
    let status = created.restrict_self().map_err(|e| fail(&e))?;
    let level = match status.ruleset {
        RulesetStatus::FullyEnforced => "full",
        RulesetStatus::PartiallyEnforced => "partial",
        RulesetStatus::NotEnforced => "none",
    };
    Ok((abi, level, network && level != "none"))
}
