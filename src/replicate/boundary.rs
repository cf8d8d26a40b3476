//! The boundary checks of a pulled page (SPEC §6 step 3), run over the whole page before any of
//! it is appended: every fact must be in the category this pull keeps (it is stored in its own
//! category, never re-filed into another), and must come from a zone this peer may relay
//! (`accept_from_zones`). A fact that fails either check stops the pull like a conflict; since
//! the page is checked first, nothing of it is appended or confirmed.
//!
//! Limits: a pull keeps exactly one category (its peer consumer reads one stream).

use super::PullError;
use crate::{config::PullSpec, fact::Category, proto::StoredFact};

/// The category's name as the peer sent it, including values this version does not know.
fn wire_name(value: i32) -> String {
    match crate::proto::Category::try_from(value) {
        Ok(crate::proto::Category::Unspecified) => "unspecified".into(),
        Ok(_) => Category::from_wire(value).map_or_else(|| value.to_string(), |c| c.to_string()),
        Err(_) => format!("{value} (unknown to this version)"),
    }
}

/// Checks every fact of a page; the first one outside the pull's boundary is the error.
pub fn check_page(spec: &PullSpec, facts: &[StoredFact]) -> Result<(), PullError> {
    for stored in facts {
        let unspecified = stored.category == crate::proto::Category::Unspecified as i32;
        if unspecified || Category::from_wire(stored.category) != Some(spec.category) {
            return Err(PullError::Category {
                offset: stored.offset,
                category: wire_name(stored.category),
                keeps: spec.category,
            });
        }
        let Some(accepted) = &spec.accept_from_zones else {
            continue;
        };
        let (message_id, from_zone) = stored
            .envelope
            .as_ref()
            .map(|e| (e.message_id.as_str(), e.from_zone.as_str()))
            .unwrap_or_default();
        if !accepted.iter().any(|zone| zone == from_zone) {
            return Err(PullError::Origin {
                offset: stored.offset,
                message_id: message_id.to_string(),
                from_zone: from_zone.to_string(),
                accepted: accepted.clone(),
            });
        }
    }
    Ok(())
}
