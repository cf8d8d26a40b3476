//! `bsfg status`: reads, without changing anything, what an operator needs first — for each
//! local consumer its cursor, high watermark and backlog; for each pull the status the running
//! node last recorded. Talks to the zone's nats-server only.

use super::{
    StoreError,
    gap::{Gap, gap_at},
    jetstream::{MARKS_BUCKET, STATUS_BUCKET, confirmed_key, connect, read_mark, unavailable},
};
use crate::{config::Config, replicate::status::PullStatus};
use async_nats::jetstream;

#[derive(Debug, Clone, PartialEq)]
pub struct ConsumerReport {
    pub name: String,
    pub category: String,
    pub cursor: u64,
    pub high_watermark: u64,
    pub backlog: u64,
    /// Facts after the cursor evicted before anyone confirmed them (FetchFacts answers
    /// `data_loss` until an operator runs `bsfg skip-gap`).
    pub gap: Option<Gap>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct StatusReport {
    pub consumers: Vec<ConsumerReport>,
    /// Pull name and what the node last recorded (None: never recorded).
    pub pulls: Vec<(String, Option<PullStatus>)>,
}

pub async fn read_report(config: &Config) -> Result<StatusReport, StoreError> {
    let js = connect(config, "bsfg-status").await?;
    let marks = js.get_key_value(MARKS_BUCKET).await.ok();
    let mut consumers = Vec::new();
    for spec in config.consumers.values() {
        let mut stream = js
            .get_stream(spec.category.stream_name())
            .await
            .map_err(|e| unavailable(&format!("stream {}", spec.category.stream_name()), e))?;
        let state = stream
            .info()
            .await
            .map_err(|e| unavailable("stream info", e))?
            .state
            .clone();
        let high_watermark = state.last_sequence;
        let mut consumer: jetstream::consumer::PullConsumer = stream
            .get_consumer(&spec.name)
            .await
            .map_err(|e| unavailable(&format!("consumer {}", spec.name), e))?;
        let floor = consumer
            .info()
            .await
            .map_err(|e| unavailable("consumer info", e))?
            .ack_floor
            .stream_sequence;
        let confirmed = match &marks {
            Some(kv) => read_mark(kv, &confirmed_key(&spec.name)).await?,
            None => 0,
        };
        let cursor = floor.max(confirmed);
        consumers.push(ConsumerReport {
            name: spec.name.clone(),
            category: spec.category.to_string(),
            cursor,
            high_watermark,
            backlog: high_watermark.saturating_sub(cursor),
            gap: gap_at(&stream, &spec.category.subject_filter(), cursor, &state).await?,
        });
    }
    let statuses = js.get_key_value(STATUS_BUCKET).await.ok();
    let mut pulls = Vec::new();
    for spec in &config.pulls {
        let recorded = match &statuses {
            Some(kv) => kv
                .get(&spec.name)
                .await
                .ok()
                .flatten()
                .and_then(|v| serde_json::from_slice::<PullStatus>(&v).ok()),
            None => None,
        };
        pulls.push((spec.name.clone(), recorded));
    }
    Ok(StatusReport { consumers, pulls })
}
