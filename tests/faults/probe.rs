//! Reads of a zone's JetStream that may fail (the server may be down): a consumer's cursor and a
//! stream's last sequence, for the "nothing was confirmed that was not durable" invariant.

use async_nats::jetstream;
use std::{cell::RefCell, collections::HashMap, time::Duration};

/// A consumer's cursor as the node defines it (SPEC §3 and `store/consumers.rs`): JetStream's ack
/// floor, and the confirmed mark the node also records in KV `bsfg_consumer_marks`.
#[derive(Debug, Clone, Copy)]
pub struct Cursor {
    pub ack_floor: u64,
    pub mark: u64,
}

impl Cursor {
    pub fn value(&self) -> u64 {
        self.ack_floor.max(self.mark)
    }
}

/// One runtime and one connection per server for each test thread: polling opens no new TCP
/// connection per read (they would use up ephemeral ports the harness's `free_port` hands out).
struct Probe {
    runtime: tokio::runtime::Runtime,
    clients: HashMap<String, jetstream::Context>,
}

thread_local! {
    static PROBE: RefCell<Option<Probe>> = const { RefCell::new(None) };
}

/// Runs `read` against `url`'s JetStream; a failed read drops the cached connection.
fn with_js<T>(url: &str, read: impl AsyncFnOnce(&jetstream::Context) -> Option<T>) -> Option<T> {
    PROBE.with(|cell| {
        let mut slot = cell.borrow_mut();
        let probe = slot.get_or_insert_with(|| Probe {
            runtime: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime"),
            clients: HashMap::new(),
        });
        let Probe { runtime, clients } = probe;
        let result = runtime.block_on(async {
            let js = match clients.get(url) {
                Some(js) => js.clone(),
                None => {
                    let client = async_nats::ConnectOptions::new()
                        .connection_timeout(Duration::from_secs(2))
                        .request_timeout(Some(Duration::from_secs(2)))
                        .connect(url)
                        .await
                        .ok()?;
                    let js = jetstream::new(client);
                    clients.insert(url.to_string(), js.clone());
                    js
                }
            };
            read(&js).await
        });
        if result.is_none() {
            clients.remove(url);
        }
        result
    })
}

/// `None` when the server or the consumer cannot be read right now.
pub fn cursor(url: &str, stream: &str, consumer: &str) -> Option<Cursor> {
    with_js(url, async |js| {
        let mut c: jetstream::consumer::PullConsumer = js
            .get_stream(stream)
            .await
            .ok()?
            .get_consumer(consumer)
            .await
            .ok()?;
        let ack_floor = c.info().await.ok()?.ack_floor.stream_sequence;
        let mark = match js.get_key_value("bsfg_consumer_marks").await {
            Ok(kv) => kv
                .get(format!("{consumer}.confirmed"))
                .await
                .ok()?
                .and_then(|v| std::str::from_utf8(&v).ok()?.parse().ok())
                .unwrap_or(0),
            Err(_) => 0,
        };
        Some(Cursor { ack_floor, mark })
    })
}

/// The stream's last sequence; `None` when it cannot be read right now.
pub fn last_sequence(url: &str, stream: &str) -> Option<u64> {
    with_js(url, async |js| {
        let mut s = js.get_stream(stream).await.ok()?;
        Some(s.info().await.ok()?.state.last_sequence)
    })
}

/// JetStream's own view of a consumer, for failure messages.
pub fn consumer_state(url: &str, stream: &str, consumer: &str) -> String {
    let Some(c) = cursor(url, stream, consumer) else {
        return format!("{consumer}: cannot be read");
    };
    with_js(url, async |js| {
        let info = match js.get_stream(stream).await {
            Ok(s) => match s.get_consumer::<jetstream::consumer::pull::Config>(consumer).await {
                Ok(mut c) => c.info().await.ok().cloned(),
                Err(_) => None,
            },
            Err(_) => None,
        };
        Some(match info {
            Some(i) => format!(
                "{consumer}: ack floor {} (mark {}), delivered up to {}, {} delivered unacked, {} redelivered, {} not yet delivered, max_ack_pending {}, ack_wait {:?}",
                i.ack_floor.stream_sequence,
                c.mark,
                i.delivered.stream_sequence,
                i.num_ack_pending,
                i.num_redelivered,
                i.num_pending,
                i.config.max_ack_pending,
                i.config.ack_wait
            ),
            None => format!("{consumer}: no info"),
        })
    })
    .unwrap_or_else(|| format!("{consumer}: cannot connect"))
}
