//! The four fact categories of SPEC §3 and their fixed JetStream names.

use crate::proto;
use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Category {
    Operational,
    Audit,
    Documents,
    Telemetry,
}

impl Category {
    pub const ALL: [Category; 4] = [
        Category::Operational,
        Category::Audit,
        Category::Documents,
        Category::Telemetry,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Category::Operational => "operational",
            Category::Audit => "audit",
            Category::Documents => "documents",
            Category::Telemetry => "telemetry",
        }
    }

    pub fn parse(name: &str) -> Option<Category> {
        Category::ALL.into_iter().find(|c| c.name() == name)
    }

    /// The JetStream stream holding this category, e.g. `facts_operational`.
    pub fn stream_name(self) -> String {
        format!("facts_{}", self.name())
    }

    /// The subject filter of the stream, e.g. `facts.operational.>`.
    pub fn subject_filter(self) -> String {
        format!("facts.{}.>", self.name())
    }

    /// Maps the wire enum; `CATEGORY_UNSPECIFIED` means operational. `None` for unknown values.
    pub fn from_wire(value: i32) -> Option<Category> {
        match proto::Category::try_from(value).ok()? {
            proto::Category::Unspecified | proto::Category::Operational => {
                Some(Category::Operational)
            }
            proto::Category::Audit => Some(Category::Audit),
            proto::Category::Documents => Some(Category::Documents),
            proto::Category::Telemetry => Some(Category::Telemetry),
        }
    }

    pub fn to_wire(self) -> proto::Category {
        match self {
            Category::Operational => proto::Category::Operational,
            Category::Audit => proto::Category::Audit,
            Category::Documents => proto::Category::Documents,
            Category::Telemetry => proto::Category::Telemetry,
        }
    }
}

impl fmt::Display for Category {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}
