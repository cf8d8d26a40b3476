//! A page appended as one (the pull's path, `Store::append_page`) on the real JetStream store:
//! the same idempotency as one append at a time — duplicates answered with the original offset,
//! a conflict ends the page with nothing after it written, one id twice in a page stored once —
//! and the page's new facts stored in page order.

mod common;

use bsfg::{
    config::Config,
    fact::{Category, content_hash},
    proto::{Envelope, Fact},
    store::{Appended, NewFact, Store, StoreError, jetstream::JetStreamStore},
};
use common::{PEER, Zone, clients::message_ids};

struct Facts {
    items: Vec<(Category, Envelope, Fact)>,
}

impl Facts {
    fn new(specs: &[(&str, &str)]) -> Facts {
        Facts::in_categories(
            &specs
                .iter()
                .map(|(id, object)| (*id, *object, Category::Operational))
                .collect::<Vec<_>>(),
        )
    }

    fn in_categories(specs: &[(&str, &str, Category)]) -> Facts {
        let items = specs
            .iter()
            .map(|(id, object, category)| {
                let envelope = Envelope {
                    message_id: id.to_string(),
                    from_zone: "plant-a".into(),
                    to_zone: "idmz".into(),
                    produced_at_unix_ms: 1_700_000_000_000,
                    ..Default::default()
                };
                let fact = Fact {
                    subject: "batch:B-1".into(),
                    predicate: "measured".into(),
                    object_json: object.to_string(),
                };
                (*category, envelope, fact)
            })
            .collect();
        Facts { items }
    }

    fn page(&self) -> Vec<NewFact<'_>> {
        self.items
            .iter()
            .map(|(category, envelope, fact)| NewFact {
                category: *category,
                envelope,
                fact,
                content_hash: content_hash(envelope, fact),
            })
            .collect()
    }
}

fn with_store<T>(zone: &Zone, body: impl AsyncFnOnce(&JetStreamStore) -> T) -> T {
    let config = Config::load(&zone.config_path).expect("the zone's config");
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(async {
            let store = JetStreamStore::open(&config)
                .await
                .expect("the zone's store");
            body(&store).await
        })
}

fn summary(results: &[Result<Appended, StoreError>]) -> Vec<String> {
    results
        .iter()
        .map(|r| match r {
            Ok(a) if a.duplicate => format!("dup {}", a.offset),
            Ok(a) => format!("new {}", a.offset),
            Err(StoreError::Conflict { offset, .. }) => format!("conflict with {offset}"),
            Err(e) => format!("error {e}"),
        })
        .collect()
}

/// The message ids of the zone's `to-idmz` consumer's stream (operational), in stream order.
fn stored_ids(zone: &Zone) -> Vec<String> {
    message_ids(&zone.curl(PEER).fetch("to-idmz", 100))
}

#[test]
fn a_page_keeps_its_order_and_answers_its_duplicates() {
    let zone = Zone::start();
    let earlier = Facts::new(&[("p-1", "1"), ("p-2", "2"), ("p-3", "3")]);
    let page = Facts::new(&[
        ("p-2", "2"),
        ("p-4", "4"),
        ("p-5", "5"),
        ("p-3", "3"),
        ("p-6", "6"),
    ]);
    let (before, results) = with_store(&zone, async |store| {
        let before = summary(&store.append_page(&earlier.page()).await);
        (before, summary(&store.append_page(&page.page()).await))
    });
    assert_eq!(before, ["new 1", "new 2", "new 3"]);
    assert_eq!(results, ["dup 2", "new 4", "new 5", "dup 3", "new 6"]);
    assert_eq!(
        stored_ids(&zone),
        ["p-1", "p-2", "p-3", "p-4", "p-5", "p-6"]
    );
}

#[test]
fn a_conflict_ends_the_page_and_nothing_after_it_is_written() {
    let zone = Zone::start();
    let earlier = Facts::new(&[("c-2", "2")]);
    let page = Facts::new(&[("c-1", "1"), ("c-2", "other content"), ("c-3", "3")]);
    let results = with_store(&zone, async |store| {
        store.append_page(&earlier.page()).await;
        summary(&store.append_page(&page.page()).await)
    });
    assert_eq!(results, ["new 2", "conflict with 1"]);
    assert_eq!(stored_ids(&zone), ["c-2", "c-1"], "c-3 is not written");
}

#[test]
fn one_id_twice_in_a_page_is_stored_once_whatever_the_categories() {
    let zone = Zone::start();
    let page = Facts::in_categories(&[
        ("d-1", "1", Category::Operational),
        ("d-1", "1", Category::Operational),
        ("d-2", "2", Category::Operational),
        ("d-2", "2", Category::Audit),
    ]);
    let results = with_store(&zone, async |store| {
        summary(&store.append_page(&page.page()).await)
    });
    // The key is the node's: the same fact in another category is the first one again.
    assert_eq!(results, ["new 1", "dup 1", "new 2", "dup 2"]);
    assert_eq!(stored_ids(&zone), ["d-1", "d-2"]);
}

#[test]
fn a_page_of_many_is_stored_whole_and_in_order() {
    let zone = Zone::start();
    let specs: Vec<(String, String)> = (1..=500)
        .map(|i| (format!("m-{i}"), i.to_string()))
        .collect();
    let borrowed: Vec<(&str, &str)> = specs
        .iter()
        .map(|(a, b)| (a.as_str(), b.as_str()))
        .collect();
    let page = Facts::new(&borrowed);
    let results = with_store(&zone, async |store| store.append_page(&page.page()).await);
    let offsets: Vec<u64> = results
        .iter()
        .map(|r| r.as_ref().map(|a| a.offset).expect("appended"))
        .collect();
    assert_eq!(offsets, (1..=500).collect::<Vec<u64>>());
    // Stored as one atomic batch (one write): the first and the last carry the same batch id.
    let batch_ids = tokio::runtime::Runtime::new()
        .expect("runtime")
        .block_on(async {
            let client = async_nats::connect(zone.nats.url()).await.expect("nats");
            let stream = async_nats::jetstream::new(client)
                .get_stream("facts_operational")
                .await
                .expect("stream");
            let mut ids = Vec::new();
            for offset in [1, 500] {
                let message = stream.direct_get(offset).await.expect("stored");
                ids.push(
                    message
                        .headers
                        .get("Nats-Batch-Id")
                        .map(|v| v.as_str().to_string()),
                );
            }
            ids
        });
    assert!(batch_ids[0].is_some(), "{batch_ids:?}");
    assert_eq!(batch_ids[0], batch_ids[1]);
}

#[test]
fn a_node_of_the_earlier_version_can_still_open_the_streams() {
    // Zones are upgraded one at a time and firmware rolls back: the earlier node's start updates
    // the streams without `allow_atomic` (it never sends batches), and this node's start sets
    // it again. Neither update may be refused.
    let zone = Zone::start();
    let cleared = tokio::runtime::Runtime::new()
        .expect("runtime")
        .block_on(async {
            let client = async_nats::connect(zone.nats.url()).await.expect("nats");
            let js = async_nats::jetstream::new(client);
            let mut stream = js.get_stream("facts_operational").await.expect("stream");
            let mut config = stream.info().await.expect("info").config.clone();
            assert!(config.allow_atomic_publish, "this node allows batches");
            config.allow_atomic_publish = false;
            js.update_stream(config)
                .await
                .map(|i| i.config.allow_atomic_publish)
        });
    assert_eq!(
        cleared.ok(),
        Some(false),
        "the earlier node's update is taken"
    );
    let page = Facts::new(&[("v-1", "1"), ("v-2", "2")]);
    let results = with_store(&zone, async |store| {
        summary(&store.append_page(&page.page()).await)
    });
    assert_eq!(results, ["new 1", "new 2"]);
}

#[test]
fn the_cursor_consumer_carries_no_payloads_and_an_earlier_node_can_still_open_it() {
    // A confirm takes the consumer's deliveries only to acknowledge them: headers only. The
    // earlier node's start updates the consumer to whole messages, this node's start back to
    // headers only; neither update may be refused, and confirms work either way.
    let zone = Zone::start();
    let headers_only = |zone: &Zone| {
        tokio::runtime::Runtime::new()
            .expect("runtime")
            .block_on(async {
                let client = async_nats::connect(zone.nats.url()).await.expect("nats");
                let js = async_nats::jetstream::new(client);
                let stream = js.get_stream("facts_operational").await.expect("stream");
                let mut consumer: async_nats::jetstream::consumer::PullConsumer =
                    stream.get_consumer("to-idmz").await.expect("consumer");
                consumer.info().await.expect("info").config.headers_only
            })
    };
    assert!(
        headers_only(&zone),
        "this node's consumer carries headers only"
    );
    let earlier = tokio::runtime::Runtime::new()
        .expect("runtime")
        .block_on(async {
            let client = async_nats::connect(zone.nats.url()).await.expect("nats");
            let js = async_nats::jetstream::new(client);
            let stream = js.get_stream("facts_operational").await.expect("stream");
            let mut consumer: async_nats::jetstream::consumer::PullConsumer =
                stream.get_consumer("to-idmz").await.expect("consumer");
            let mut config = consumer.info().await.expect("info").config.clone();
            config.headers_only = false;
            stream
                .create_consumer(config)
                .await
                .map(|c| c.cached_info().config.headers_only)
        });
    assert_eq!(
        earlier.ok(),
        Some(false),
        "the earlier node's update is taken"
    );
    let page = Facts::new(&[("h-1", "1"), ("h-2", "2")]);
    let results = with_store(&zone, async |store| {
        summary(&store.append_page(&page.page()).await)
    });
    assert_eq!(results, ["new 1", "new 2"]);
    assert!(
        headers_only(&zone),
        "this node's start sets headers only again"
    );
    let peer = zone.curl(PEER);
    let page = peer.fetch("to-idmz", 100);
    assert_eq!(message_ids(&page), ["h-1", "h-2"]);
    let confirmed = peer.confirm("to-idmz", 2);
    assert_eq!(
        confirmed.status,
        200,
        "{}",
        String::from_utf8_lossy(&confirmed.body)
    );
    assert!(message_ids(&peer.fetch("to-idmz", 100)).is_empty());
}
