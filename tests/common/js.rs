//! Direct reads of a zone's JetStream for assertions (what `nats stream view` would show).

use async_nats::jetstream;
use std::time::{Duration, Instant};

/// Every message of a stream in order: (sequence, content-hash header, payload).
pub fn stream_messages(url: &str, stream: &str) -> Vec<(u64, String, Vec<u8>)> {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        let client = async_nats::connect(url).await.expect("connect to nats");
        let js = jetstream::new(client);
        let mut s = js.get_stream(stream).await.expect("stream");
        let state = s.info().await.expect("stream info").state.clone();
        let mut out = Vec::new();
        for seq in state.first_sequence..=state.last_sequence {
            if state.messages == 0 {
                break;
            }
            let m = s.direct_get(seq).await.expect("direct get");
            let hash = m
                .headers
                .get("Bsfg-Content-Hash")
                .map(|v| v.as_str().to_string())
                .unwrap_or_default();
            out.push((m.sequence, hash, m.payload.to_vec()));
        }
        out
    })
}

pub fn last_sequence(url: &str, stream: &str) -> u64 {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        let Ok(client) = async_nats::connect(url).await else {
            return 0;
        };
        let js = jetstream::new(client);
        match js.get_stream(stream).await {
            Ok(mut s) => s.info().await.map(|i| i.state.last_sequence).unwrap_or(0),
            Err(_) => 0,
        }
    })
}

/// Waits until `stream` holds at least `count` messages; panics with `what` after `deadline`.
pub fn wait_for_count(url: &str, stream: &str, count: u64, deadline: Duration, what: &str) {
    let start = Instant::now();
    loop {
        let last = last_sequence(url, stream);
        if last >= count {
            return;
        }
        assert!(
            start.elapsed() < deadline,
            "timed out waiting for {what}: {last} of {count} in {stream}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}
