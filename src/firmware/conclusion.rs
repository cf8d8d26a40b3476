//! How an install ended (blessed, rolled back, failed), kept on the data partition until the
//! install's record in `bsfg_firmware` says so. The boot that learns the outcome runs early,
//! often before nats-server answers; the conclusion waits here, like the audit records in the
//! outbox, and every later flush (the firmware agent's, each pass) applies it after them.

use super::{agent, host::write_durably};
use crate::store::Store;
use serde::{Deserialize, Serialize};
use std::{
    fs,
    path::{Path, PathBuf},
};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Conclusion {
    pub attempt: String,
    /// `blessed`, `rolled_back` or `failed`.
    pub state: String,
    pub message: String,
}

/// The conclusions not yet in their install records: one file per attempt.
pub struct Conclusions {
    dir: PathBuf,
}

impl Conclusions {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    /// The attempt id is the operator's door's; the file name is its hex, whatever it holds.
    fn file(&self, attempt: &str) -> PathBuf {
        self.dir.join(format!("{}.json", hex::encode(attempt)))
    }

    /// Keeps `conclusion` durably (file and directory synced).
    pub fn keep(&self, conclusion: &Conclusion) -> Result<(), String> {
        let path = self.file(&conclusion.attempt);
        let body = serde_json::to_vec_pretty(conclusion)
            .map_err(|e| format!("encoding the conclusion: {e}"))?;
        write_durably(&path, &path.with_extension("json.tmp"), &body)
    }

    /// The conclusions waiting, in no particular order (each names its own attempt).
    pub fn pending(&self) -> Result<Vec<(PathBuf, Conclusion)>, String> {
        let entries = match fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(format!("reading {}: {e}", self.dir.display())),
        };
        let mut found = Vec::new();
        for entry in entries.flatten() {
            let path = entry.path();
            if path.extension().and_then(|e| e.to_str()) != Some("json") {
                continue;
            }
            found.push((path.clone(), read(&path)?));
        }
        found.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(found)
    }

    /// Writes each waiting conclusion into its install record and forgets it; a record that is
    /// gone (expired from the bucket) is nothing to update. Returns how many were applied.
    pub async fn apply<S: Store>(&self, store: &S) -> Result<usize, String> {
        let mut applied = 0;
        for (path, c) in self.pending()? {
            agent::conclude(store, &c.attempt, &c.state, &c.message).await?;
            fs::remove_file(&path).map_err(|e| format!("removing {}: {e}", path.display()))?;
            applied += 1;
        }
        Ok(applied)
    }
}

fn read(path: &Path) -> Result<Conclusion, String> {
    let body = fs::read(path).map_err(|e| format!("reading {}: {e}", path.display()))?;
    serde_json::from_slice(&body).map_err(|e| {
        format!(
            "{} is not an install's conclusion ({e}); move it aside to let the others through",
            path.display()
        )
    })
}
