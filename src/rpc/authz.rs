//! Authorization by certificate identity (SPEC §5): which identities may call which method, on
//! which consumers, categories and buckets, and which `from_zone` a producer may assert. Never by
//! network address. Every denial is logged with the identity and counted by the caller.

use super::error::{Code, RpcError};
use crate::{
    config::{AccessPolicy, Grants, Operation},
    fact::Category,
};

/// The caller, as its client certificate names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub common_name: String,
}

fn deny(identity: &Identity, message: String) -> RpcError {
    tracing::warn!(identity = %identity.common_name, reason = %message, "permission denied");
    RpcError::new(Code::PermissionDenied, message)
}

impl AccessPolicy {
    fn grants_of(&self, identity: &Identity) -> Result<&Grants, RpcError> {
        self.grants.get(&identity.common_name).ok_or_else(|| {
            deny(
                identity,
                format!(
                    "identity {:?} is not listed in this node's access policy",
                    identity.common_name
                ),
            )
        })
    }

    pub fn may_append(
        &self,
        who: &Identity,
        category: Category,
        from_zone: &str,
    ) -> Result<(), RpcError> {
        let g = self.grants_of(who)?;
        if !g.append.contains(&category) {
            return Err(deny(
                who,
                format!(
                    "identity {:?} may not append to category {category}",
                    who.common_name
                ),
            ));
        }
        if !g.assert_zones.iter().any(|z| z == from_zone) {
            return Err(deny(
                who,
                format!(
                    "identity {:?} may not assert from_zone {from_zone:?}",
                    who.common_name
                ),
            ));
        }
        Ok(())
    }

    pub fn may_fetch(&self, who: &Identity, consumer: &str) -> Result<(), RpcError> {
        let g = self.grants_of(who)?;
        if !g.fetch.iter().any(|c| c == consumer) {
            return Err(deny(
                who,
                format!(
                    "identity {:?} may not use consumer {consumer:?}",
                    who.common_name
                ),
            ));
        }
        Ok(())
    }

    pub fn may_put(&self, who: &Identity, bucket: &str) -> Result<(), RpcError> {
        let g = self.grants_of(who)?;
        if !g.put_objects.iter().any(|b| b == bucket) {
            return Err(deny(
                who,
                format!(
                    "identity {:?} may not put objects into bucket {bucket:?}",
                    who.common_name
                ),
            ));
        }
        Ok(())
    }

    pub fn may_get(&self, who: &Identity, bucket: &str) -> Result<(), RpcError> {
        let g = self.grants_of(who)?;
        if !g.get_objects.iter().any(|b| b == bucket) {
            return Err(deny(
                who,
                format!(
                    "identity {:?} may not read bucket {bucket:?}",
                    who.common_name
                ),
            ));
        }
        Ok(())
    }

    pub fn may_operate(&self, who: &Identity, operation: Operation) -> Result<(), RpcError> {
        if self.grants_of(who)?.operate.contains(&operation) {
            Ok(())
        } else {
            Err(deny(
                who,
                format!(
                    "identity {:?} may not use the operation {:?} (grant it in [[access]] operate)",
                    who.common_name,
                    operation.name()
                ),
            ))
        }
    }

    pub fn may_read_metrics(&self, who: &Identity) -> Result<(), RpcError> {
        if self.grants_of(who)?.operator {
            Ok(())
        } else {
            Err(deny(
                who,
                format!("identity {:?} is not an operator", who.common_name),
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> AccessPolicy {
        let mut p = AccessPolicy::default();
        p.grants.insert(
            "mes".into(),
            Grants {
                append: vec![Category::Operational],
                assert_zones: vec!["plant-a".into()],
                put_objects: vec!["batch-files".into()],
                ..Default::default()
            },
        );
        p.grants.insert(
            "idmz-bsfg".into(),
            Grants {
                fetch: vec!["to-idmz".into()],
                get_objects: vec!["batch-files".into()],
                ..Default::default()
            },
        );
        p
    }

    fn who(name: &str) -> Identity {
        Identity {
            common_name: name.into(),
        }
    }

    #[test]
    fn grants_are_exact() {
        let p = policy();
        assert!(
            p.may_append(&who("mes"), Category::Operational, "plant-a")
                .is_ok()
        );
        assert!(
            p.may_append(&who("mes"), Category::Audit, "plant-a")
                .is_err()
        );
        assert!(
            p.may_append(&who("mes"), Category::Operational, "enterprise")
                .is_err()
        );
        assert!(
            p.may_append(&who("idmz-bsfg"), Category::Operational, "plant-a")
                .is_err()
        );
        assert!(p.may_fetch(&who("idmz-bsfg"), "to-idmz").is_ok());
        assert!(p.may_fetch(&who("idmz-bsfg"), "other").is_err());
        assert!(p.may_fetch(&who("mes"), "to-idmz").is_err());
        assert!(p.may_put(&who("mes"), "batch-files").is_ok());
        assert!(p.may_get(&who("mes"), "batch-files").is_err());
        assert_eq!(
            p.may_fetch(&who("stranger"), "to-idmz")
                .err()
                .map(|e| e.code),
            Some(Code::PermissionDenied)
        );
        assert!(p.may_read_metrics(&who("mes")).is_err());
    }
}
