//! FetchFacts/ConfirmReceipt semantics against a real nats-server: deterministic replay, cursor
//! movement, and both surviving restarts of the node and of nats-server.

mod common;

use common::{PEER, PRODUCER, Zone, append_json, clients::offsets};

fn append_n(zone: &Zone, from: u32, to: u32) {
    let mes = zone.curl(PRODUCER);
    for i in from..=to {
        let reply = mes.append(&append_json(
            &format!("replay-{i}"),
            "plant-a",
            &format!("{{\"n\":{i}}}"),
        ));
        assert_eq!(reply.status, 200, "append {i}: {:?}", reply.json());
    }
}

/// The consumer's ack floor as JetStream itself reports it (what `nats consumer info` shows).
fn ack_floor(zone: &Zone, consumer: &str) -> u64 {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        let client = async_nats::connect(zone.nats.url())
            .await
            .expect("connect to nats");
        let js = async_nats::jetstream::new(client);
        let stream = js.get_stream("facts_operational").await.expect("stream");
        let mut c: async_nats::jetstream::consumer::PullConsumer =
            stream.get_consumer(consumer).await.expect("consumer");
        c.info()
            .await
            .expect("consumer info")
            .ack_floor
            .stream_sequence
    })
}

#[test]
fn fetch_without_confirm_replays_the_same_page_and_confirm_moves_on() {
    let zone = Zone::start();
    append_n(&zone, 1, 7);
    let peer = zone.curl(PEER);

    let first = peer.fetch("to-idmz", 3);
    assert_eq!(first.status, 200, "{:?}", first.json());
    assert_eq!(offsets(&first), vec![1, 2, 3]);
    assert_eq!(first.json()["highWatermark"], "7");
    let again = peer.fetch("to-idmz", 3);
    assert_eq!(
        again.json(),
        first.json(),
        "a second fetch without confirm must return the same page"
    );

    // Confirming beyond what was fetched is refused and moves nothing.
    let beyond = peer.confirm("to-idmz", 5);
    assert_eq!(beyond.status, 400);
    assert_eq!(beyond.code(), "failed_precondition");
    assert_eq!(ack_floor(&zone, "to-idmz"), 0);

    let confirmed = peer.confirm("to-idmz", 2);
    assert_eq!(confirmed.json()["cursorAdvancedTo"], "2");
    assert_eq!(
        ack_floor(&zone, "to-idmz"),
        2,
        "the cursor is JetStream's ack floor"
    );
    // At or below the cursor: a no-op that returns the cursor.
    assert_eq!(peer.confirm("to-idmz", 1).json()["cursorAdvancedTo"], "2");
    assert_eq!(peer.confirm("to-idmz", 2).json()["cursorAdvancedTo"], "2");

    assert_eq!(offsets(&peer.fetch("to-idmz", 3)), vec![3, 4, 5]);
    assert_eq!(offsets(&peer.fetch("to-idmz", 10)), vec![3, 4, 5, 6, 7]);
    assert_eq!(peer.confirm("to-idmz", 7).json()["cursorAdvancedTo"], "7");
    let empty = peer.fetch("to-idmz", 10);
    assert_eq!(offsets(&empty), Vec::<u64>::new());
    assert_eq!(empty.json()["highWatermark"], "7");
}

#[test]
fn page_size_is_capped_by_the_server_and_max_ack_pending() {
    let zone = Zone::start();
    append_n(&zone, 1, 60);
    // max_ack_pending of to-idmz is 50 in the test config, max_page is 100.
    let page = zone.curl(PEER).fetch("to-idmz", 1000);
    assert_eq!(offsets(&page), (1..=50).collect::<Vec<u64>>());
}

#[test]
fn cursor_and_replay_survive_node_and_nats_server_restarts() {
    let mut zone = Zone::start();
    append_n(&zone, 1, 5);
    let peer = zone.curl(PEER);
    let page = peer.fetch("to-idmz", 2);
    assert_eq!(offsets(&page), vec![1, 2]);

    zone.restart_node();
    assert_eq!(
        peer.fetch("to-idmz", 2).json(),
        page.json(),
        "same page after a node restart"
    );
    assert_eq!(peer.confirm("to-idmz", 2).json()["cursorAdvancedTo"], "2");

    zone.nats.restart();
    zone.restart_node();
    let next = peer.fetch("to-idmz", 2);
    assert_eq!(
        offsets(&next),
        vec![3, 4],
        "cursor kept across a nats-server restart: {:?}",
        next.json()
    );
    zone.nats.restart();
    // The node reconnects to the restarted nats-server by itself.
    let mut same = peer.fetch("to-idmz", 2);
    for _ in 0..50 {
        if same.status == 200 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
        same = peer.fetch("to-idmz", 2);
    }
    assert_eq!(
        same.json(),
        next.json(),
        "replay survives a nats-server restart under a running node"
    );
    // "Beyond what was fetched" is JetStream state too: it survives restarts.
    assert_eq!(peer.confirm("to-idmz", 5).code(), "failed_precondition");
    assert_eq!(peer.confirm("to-idmz", 4).json()["cursorAdvancedTo"], "4");
    assert_eq!(ack_floor(&zone, "to-idmz"), 4);
}

/// Issue 8 item 1: a page trimmed to the response byte budget counts only the facts it carried,
/// so a confirm can never pass facts the client did not receive.
#[test]
fn a_page_trimmed_to_the_byte_budget_counts_only_what_it_carried() {
    let zone = Zone::start();
    let mes = zone.curl(PRODUCER);
    // 40 facts of ~60 KiB against a 1 MiB response budget (max_fact_bytes is 64 KiB here).
    let pad = "x".repeat(60 * 1024);
    for i in 1..=40 {
        let reply = mes.append(&append_json(
            &format!("big-{i}"),
            "plant-a",
            &format!("{{\"n\":{i},\"pad\":\"{pad}\"}}"),
        ));
        assert_eq!(reply.status, 200, "append {i}: {:?}", reply.json());
    }
    let peer = zone.curl(PEER);
    let first = peer.fetch("to-idmz", 40);
    assert_eq!(first.status, 200, "{}", first.stderr);
    let carried = offsets(&first);
    let last = *carried.last().expect("a non-empty page");
    assert!(
        carried.len() < 40,
        "the response budget must trim the page: {} facts carried",
        carried.len()
    );
    assert_eq!(carried, (1..=last).collect::<Vec<u64>>());

    // Every offset after the last one carried is beyond what was fetched.
    for beyond in [last + 1, 40] {
        let reply = peer.confirm("to-idmz", beyond);
        assert_eq!(
            reply.code(),
            "failed_precondition",
            "confirming {beyond} after a page that carried 1..={last}: {:?}",
            reply.json()
        );
    }
    assert_eq!(ack_floor(&zone, "to-idmz"), 0, "nothing moved");

    // Confirming what was carried and fetching on delivers every remaining fact, in order.
    let mut received = carried;
    let mut cursor = last;
    assert_eq!(
        peer.confirm("to-idmz", cursor).json()["cursorAdvancedTo"],
        cursor.to_string()
    );
    while cursor < 40 {
        let page = peer.fetch("to-idmz", 40);
        let got = offsets(&page);
        assert!(!got.is_empty(), "no progress after {cursor}");
        cursor = *got.last().expect("non-empty");
        assert_eq!(
            peer.confirm("to-idmz", cursor + 1).code(),
            "failed_precondition"
        );
        assert_eq!(
            peer.confirm("to-idmz", cursor).json()["cursorAdvancedTo"],
            cursor.to_string()
        );
        received.extend(got);
    }
    assert_eq!(received, (1..=40).collect::<Vec<u64>>());
}
