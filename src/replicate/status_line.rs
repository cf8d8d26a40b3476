//! systemd's `STATUS=` line, refreshed every 2 s while the node serves (SPEC §7): the pulls up
//! and down (a pull is up when its last exchange with the peer succeeded and it is not stopped),
//! the pulls' backlog (facts the peers hold that this node has not pulled yet, as of the last
//! exchange) and the backlog of this node's consumers (facts its peers have not confirmed).
//!
//! Limits: the consumers' backlog is read from the store with a 1 s budget; when the store does
//! not answer in time the line says `consumers ?` instead of waiting.

use super::{SharedPullStatus, lock, status::PullStatus};
use crate::{ops::notify, rpc::Node, store::Store};
use std::{sync::Arc, time::Duration};

const REFRESH: Duration = Duration::from_secs(2);
const STORE_BUDGET: Duration = Duration::from_secs(1);

/// `serving …; pulls 1 up, 1 down (from-plant down); backlog: pulls 12 facts, consumers 30 facts`.
pub fn summary(serving: &str, pulls: &[PullStatus], consumer_backlog: Option<u64>) -> String {
    let is_up = |p: &PullStatus| p.peer_up && p.state != "stopped";
    let up = pulls.iter().filter(|p| is_up(p)).count();
    let down: Vec<String> = pulls
        .iter()
        .filter(|p| !is_up(p))
        .map(|p| {
            if p.state == "stopped" {
                format!("{} stopped", p.pull)
            } else {
                format!("{} down, lag {:.0} s", p.pull, p.lag_seconds)
            }
        })
        .collect();
    let mut line = format!("{serving}; pulls {up} up, {} down", down.len());
    if !down.is_empty() {
        line.push_str(&format!(" ({})", down.join(", ")));
    }
    let pull_backlog: u64 = pulls.iter().map(|p| p.lag_facts).sum();
    let consumers = consumer_backlog.map_or_else(|| "?".to_string(), |n| format!("{n} facts"));
    line.push_str(&format!(
        "; backlog: pulls {pull_backlog} facts, consumers {consumers}"
    ));
    line
}

/// Sends `STATUS=` every 2 s, forever; `serving` is the node's own part of the line.
pub async fn refresh<S: Store>(node: Arc<Node<S>>, pulls: Vec<SharedPullStatus>, serving: String) {
    loop {
        tokio::time::sleep(REFRESH).await;
        let statuses: Vec<PullStatus> = pulls.iter().map(|s| lock(s).clone()).collect();
        let backlog = tokio::time::timeout(STORE_BUDGET, consumer_backlog(&node))
            .await
            .ok()
            .flatten();
        notify::status(&summary(&serving, &statuses, backlog));
    }
}

async fn consumer_backlog<S: Store>(node: &Node<S>) -> Option<u64> {
    let mut total = 0u64;
    for spec in node.config.consumers.values() {
        let (cursor, high) = node.store.cursor(spec).await.ok()?;
        total += high.saturating_sub(cursor);
    }
    Some(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_line_counts_pulls_up_and_down_and_the_backlog() {
        let up = PullStatus {
            pull: "from-plant".into(),
            peer_up: true,
            state: "running".into(),
            lag_facts: 5,
            ..Default::default()
        };
        let down = PullStatus {
            pull: "from-enterprise".into(),
            state: "retrying".into(),
            lag_seconds: 12.4,
            lag_facts: 2,
            ..Default::default()
        };
        assert_eq!(
            summary("serving zone idmz", &[up, down], Some(30)),
            "serving zone idmz; pulls 1 up, 1 down (from-enterprise down, lag 12 s); backlog: pulls 7 facts, consumers 30 facts"
        );
        assert_eq!(
            summary("serving zone idmz", &[], None),
            "serving zone idmz; pulls 0 up, 0 down; backlog: pulls 0 facts, consumers ?"
        );
    }
}
