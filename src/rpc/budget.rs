//! The node-wide budget for request bodies being read (`limits.max_buffered_request_bytes`): a
//! semaphore of bytes. Each data frame of a body takes its size from the budget as it arrives;
//! the bytes go back when the call that read them ends (its [`BodyGrant`] is dropped). A body that
//! finds the budget exhausted is refused at once with `resource_exhausted` — it never waits, so a
//! flood of slow or large bodies cannot make other calls queue behind it.
//!
//! Every protocol that reads a request body (Connect here, gRPC and gRPC-Web too) reads it through
//! [`collect_body`], so they share one budget. Limits: decompressed bytes are bounded by
//! `limits.max_request_bytes` per call but are not taken from the budget; response bodies are not
//! counted.

use crate::ops::metrics::Metrics;
use bytes::{Buf, Bytes, BytesMut};
use http_body_util::BodyExt;
use std::sync::Arc;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BodyError {
    #[error("request body larger than {max} bytes")]
    TooLarge { max: usize },
    #[error(
        "the node's budget for request bodies being read ({budget} bytes) is exhausted; retry later"
    )]
    BudgetExhausted { budget: usize },
    #[error("reading the request body failed: {0}")]
    Read(String),
}

/// The budget, shared by every connection of the node.
#[derive(Clone)]
pub struct BodyBudget {
    bytes: Arc<Semaphore>,
    total: usize,
    metrics: Arc<Metrics>,
}

/// Bytes taken from the budget for one call; given back on drop.
pub struct BodyGrant {
    permit: Option<OwnedSemaphorePermit>,
    budget: BodyBudget,
}

impl Drop for BodyGrant {
    fn drop(&mut self) {
        drop(self.permit.take());
        self.budget.publish();
    }
}

impl BodyBudget {
    pub fn new(total: usize, metrics: Arc<Metrics>) -> Self {
        let total = total.min(Semaphore::MAX_PERMITS);
        let budget = BodyBudget {
            bytes: Arc::new(Semaphore::new(total)),
            total,
            metrics,
        };
        budget.publish();
        budget
    }

    pub fn metrics(&self) -> Arc<Metrics> {
        self.metrics.clone()
    }

    /// Bytes currently held by bodies being read or calls still running.
    pub fn in_use(&self) -> usize {
        self.total - self.bytes.available_permits()
    }

    fn publish(&self) {
        self.metrics.set_gauge(
            "bsfg_request_body_buffered_bytes".into(),
            self.in_use() as f64,
        );
    }

    fn take(&self, grant: &mut BodyGrant, n: usize) -> Result<(), BodyError> {
        let exhausted = || BodyError::BudgetExhausted { budget: self.total };
        let n = u32::try_from(n).map_err(|_| exhausted())?;
        let permit = self
            .bytes
            .clone()
            .try_acquire_many_owned(n)
            .map_err(|_| exhausted())?;
        match grant.permit.as_mut() {
            Some(held) => held.merge(permit),
            None => grant.permit = Some(permit),
        }
        self.publish();
        Ok(())
    }
}

/// Counts one refused request by reason (`body_budget`, `body_too_large`, `body_timeout`, ...).
pub fn record_refused(metrics: &Metrics, reason: &str) {
    metrics.add_counter(
        format!("bsfg_requests_refused_total{{reason=\"{reason}\"}}"),
        1,
    );
}

/// Reads a whole body of at most `max` bytes, taking each frame's size from `budget` as it
/// arrives. The bytes stay taken until the returned grant is dropped.
pub async fn collect_body<B>(
    mut body: B,
    max: usize,
    budget: &BodyBudget,
) -> Result<(Bytes, BodyGrant), BodyError>
where
    B: hyper::body::Body + Unpin,
    B::Error: std::fmt::Display,
{
    let mut grant = BodyGrant {
        permit: None,
        budget: budget.clone(),
    };
    let mut out = BytesMut::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| BodyError::Read(e.to_string()))?;
        let Ok(mut data) = frame.into_data() else {
            continue; // trailers
        };
        let len = data.remaining();
        if out.len() + len > max {
            record_refused(&budget.metrics, "body_too_large");
            return Err(BodyError::TooLarge { max });
        }
        if let Err(e) = budget.take(&mut grant, len) {
            record_refused(&budget.metrics, "body_budget");
            return Err(e);
        }
        out.extend_from_slice(&data.copy_to_bytes(len));
    }
    Ok((out.freeze(), grant))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::Full;

    fn body(n: usize) -> Full<Bytes> {
        Full::new(Bytes::from(vec![7u8; n]))
    }

    #[tokio::test]
    async fn bodies_share_the_budget_until_their_calls_end() {
        let metrics = Arc::new(Metrics::default());
        let budget = BodyBudget::new(1000, metrics.clone());
        let (first, grant) = collect_body(body(600), 1000, &budget).await.expect("fits");
        assert_eq!(first.len(), 600);
        assert_eq!(budget.in_use(), 600);
        assert_eq!(
            collect_body(body(600), 1000, &budget).await.err(),
            Some(BodyError::BudgetExhausted { budget: 1000 })
        );
        assert_eq!(budget.in_use(), 600, "a refused body gives its bytes back");
        drop(grant);
        assert_eq!(budget.in_use(), 0);
        assert!(collect_body(body(600), 1000, &budget).await.is_ok());
        assert_eq!(
            collect_body(body(1001), 1000, &budget).await.err(),
            Some(BodyError::TooLarge { max: 1000 })
        );
        let text = metrics.render();
        assert!(
            text.contains("bsfg_requests_refused_total{reason=\"body_budget\"} 1"),
            "{text}"
        );
    }
}
