//! Receiver-driven replication under faults (SPEC §6): kill -9 of nodes and nats-servers at
//! seeded pseudo-random moments along plant-a → idmz → enterprise, and a proxy that cuts the
//! pull's connection mid-response. Afterwards every destination holds every source fact exactly
//! once, in source order, byte for byte, with its artifact — and no cursor was ever ahead of what
//! the receiving zone had stored. A third test pins down one case the kill -9 rounds hit only
//! sometimes: a consumer whose ack floor nats-server lost must still confirm a full page.
//!
//! The fault schedule is printed with its seed; `BSFG_FAULT_SEED=<seed>` replays the schedule
//! (not the exact timing). `BSFG_TEST_ECHO=1` echoes every process's output.

mod common;
mod faults;

use common::{
    NatsServer, PRODUCER, Pki, Zone, ZoneOptions,
    chain::{Chain, start_chain},
    free_port, producer,
};
use faults::{
    NodeLogs, STREAM, assert_artifact, assert_exactly_once_in_order,
    feed::{self, Feed, Plan},
    prng::Prng,
    probe,
    proxy::Proxy,
    status, wait_for_count,
};
use std::{
    sync::{Arc, atomic::Ordering},
    time::{Duration, Instant},
};

#[derive(Clone, Copy, Debug, PartialEq)]
enum Z {
    Plant,
    Idmz,
    Enterprise,
}

#[derive(Clone, Copy, Debug)]
enum Fault {
    /// kill -9 the node, keep it down a while, start it again.
    Node(Z),
    /// kill -9 the zone's nats-server, keep it down a while, start it on the same port and store;
    /// the node reconnects on its own.
    Nats(Z),
    /// kill -9 both; nats-server comes back first, then the node.
    Both(Z),
}

fn name(z: Z) -> &'static str {
    match z {
        Z::Plant => "plant-a",
        Z::Idmz => "idmz",
        Z::Enterprise => "enterprise",
    }
}

fn zone(chain: &mut Chain, z: Z) -> &mut Zone {
    match z {
        Z::Plant => &mut chain.plant,
        Z::Idmz => &mut chain.idmz,
        Z::Enterprise => &mut chain.enterprise,
    }
}

fn kill_nats(zone: &mut Zone) {
    zone.nats.process.kill();
}

fn start_nats(zone: &mut Zone) {
    let port = zone.nats.port;
    let extra = zone.options.nats_jetstream.clone();
    zone.nats = NatsServer::start_with(&zone.dir.path().join("nats"), port, &extra);
}

fn inject(chain: &mut Chain, logs: &mut NodeLogs, fault: Fault, down: Duration) {
    match fault {
        Fault::Node(z) => {
            let zone = zone(chain, z);
            logs.kill_node(name(z), zone);
            std::thread::sleep(down);
            zone.node = zone.start_node();
        }
        Fault::Nats(z) => {
            let zone = zone(chain, z);
            kill_nats(zone);
            std::thread::sleep(down);
            start_nats(zone);
        }
        Fault::Both(z) => {
            let zone = zone(chain, z);
            kill_nats(zone);
            logs.kill_node(name(z), zone);
            std::thread::sleep(down);
            start_nats(zone);
            zone.node = zone.start_node();
        }
    }
}

/// One hop: `sender`'s consumer is pulled by `receiver`.
#[derive(Clone, Copy)]
struct Hop {
    sender: Z,
    consumer: &'static str,
    receiver: Z,
}

const HOPS: [Hop; 2] = [
    Hop {
        sender: Z::Plant,
        consumer: "to-idmz",
        receiver: Z::Idmz,
    },
    Hop {
        sender: Z::Idmz,
        consumer: "to-enterprise",
        receiver: Z::Enterprise,
    },
];

#[derive(Default)]
struct Samples {
    taken: u64,
    /// Taken right after the receiving zone's nats-server was killed and restarted.
    after_receiver_restart: u64,
    /// Largest gap seen between a consumer's confirmed mark and its JetStream ack floor (acks
    /// lost by a kill -9 of the sending nats-server).
    ack_floor_behind: u64,
}

/// "Nothing was confirmed that was not durable": the sender's cursor (read first) is never
/// beyond the receiving stream's last offset (read after). Offsets line up along the chain, since
/// each receiving stream holds only what its one pull brought.
fn check_confirms_durable(
    chain: &Chain,
    hop: Hop,
    context: &str,
    samples: &mut Samples,
) -> Option<()> {
    let url = |z: Z| match z {
        Z::Plant => chain.plant.nats.url(),
        Z::Idmz => chain.idmz.nats.url(),
        Z::Enterprise => chain.enterprise.nats.url(),
    };
    let cursor = probe::cursor(&url(hop.sender), STREAM, hop.consumer)?;
    // Right after a restart the receiving server may need a moment before it answers.
    let start = Instant::now();
    let stored = loop {
        if let Some(last) = probe::last_sequence(&url(hop.receiver), STREAM) {
            break last;
        }
        if start.elapsed() > Duration::from_secs(3) {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    samples.taken += 1;
    samples.ack_floor_behind = samples
        .ack_floor_behind
        .max(cursor.mark.saturating_sub(cursor.ack_floor));
    assert!(
        stored >= cursor.value(),
        "{context}: {}'s consumer {} is confirmed up to {} (ack floor {}, mark {}), but {} stores only {stored} facts: a confirm ran ahead of a durable append",
        name(hop.sender),
        hop.consumer,
        cursor.value(),
        cursor.ack_floor,
        cursor.mark,
        name(hop.receiver),
    );
    Some(())
}

fn chain_diagnostics(chain: &Chain, logs: &NodeLogs) -> String {
    let mut out = String::new();
    for (n, zone) in [
        ("plant-a", &chain.plant),
        ("idmz", &chain.idmz),
        ("enterprise", &chain.enterprise),
    ] {
        out.push_str(&format!(
            "\n=== {n}: bsfg status\n{}\n=== {n}: pull warnings (newest 25)\n{}\n",
            status(zone),
            logs.pull_lines(n, zone, 25)
        ));
    }
    for hop in HOPS {
        let url = match hop.sender {
            Z::Plant => chain.plant.nats.url(),
            _ => chain.idmz.nats.url(),
        };
        out.push_str(&format!(
            "\n{} {}\n",
            name(hop.sender),
            probe::consumer_state(&url, STREAM, hop.consumer)
        ));
    }
    out
}

#[test]
fn kill_nine_rounds() {
    const ROUNDS: usize = 4;
    let started = Instant::now();
    let mut rng = Prng::from_env("kill_nine_rounds");
    let mut chain = start_chain("");
    let mut logs = NodeLogs::default();
    let plan = Plan {
        url: chain.plant.url(),
        node_identity: "plant-a-bsfg".into(),
        pki_dir: chain.plant.pki.dir.clone(),
        ca: chain.plant.pki.ca_path.clone(),
        who: PRODUCER.into(),
        from_zone: "plant-a".into(),
        total: 3_000,
        artifact_every: 100,
        batch: 30,
        pause: Duration::from_millis(150),
        padding: 100,
        deadline: Duration::from_secs(100),
    };
    let expected: Vec<String> = (0..plan.total).map(feed::message_id).collect();
    let mut feed = Feed::start(plan.clone());

    let mut samples = Samples::default();
    let mut injected = 0;
    for round in 0..ROUNDS {
        let spare = [Z::Plant, Z::Idmz, Z::Enterprise][rng.range(0, 3) as usize];
        let mut schedule = vec![
            Fault::Node(Z::Idmz),
            Fault::Node(Z::Plant),
            Fault::Node(Z::Enterprise),
            Fault::Nats(Z::Plant),
            Fault::Nats(Z::Idmz),
            Fault::Nats(Z::Enterprise),
            Fault::Both(spare),
        ];
        rng.shuffle(&mut schedule);
        for fault in schedule {
            let wait = rng.millis(100, 900);
            let down = rng.millis(0, 600);
            std::thread::sleep(wait);
            let at = started.elapsed();
            inject(&mut chain, &mut logs, fault, down);
            injected += 1;
            eprintln!(
                "[kill_nine_rounds] round {round} at {at:.1?}: {fault:?} down {down:?}; producer at {}/{}",
                feed.appended(),
                plan.total
            );
            for hop in HOPS {
                let receiver_restarted =
                    matches!(fault, Fault::Nats(z) | Fault::Both(z) if z == hop.receiver);
                let context = format!("round {round}, right after {fault:?}");
                if check_confirms_durable(&chain, hop, &context, &mut samples).is_some()
                    && receiver_restarted
                {
                    samples.after_receiver_restart += 1;
                }
            }
        }
    }
    eprintln!(
        "[kill_nine_rounds] {injected} faults injected by {:.1?}; waiting for the producer ({}/{})",
        started.elapsed(),
        feed.appended(),
        plan.total
    );
    feed.join();
    let progress = &feed.progress;
    eprintln!(
        "[kill_nine_rounds] producer done at {:.1?}: {} retried calls, {} appends answered duplicate",
        started.elapsed(),
        progress.retries.load(Ordering::SeqCst),
        progress.duplicates.load(Ordering::SeqCst)
    );

    for (z, url) in [
        (Z::Idmz, chain.idmz.nats.url()),
        (Z::Enterprise, chain.enterprise.nats.url()),
    ] {
        wait_for_count(
            &url,
            plan.total,
            Duration::from_secs(45),
            &format!("catch-up of {}", name(z)),
            || chain_diagnostics(&chain, &logs),
        );
    }
    // Anything late (a second copy) would land now.
    std::thread::sleep(Duration::from_millis(1500));
    eprintln!("[kill_nine_rounds] caught up at {:.1?}", started.elapsed());
    assert_exactly_once_in_order(
        ("plant-a", &chain.plant.nats.url()),
        &[
            ("idmz", &chain.idmz.nats.url()),
            ("enterprise", &chain.enterprise.nats.url()),
        ],
        &expected,
    );
    for i in (0..plan.total).filter(|i| feed::is_artifact(&plan, *i)) {
        let data = feed::artifact_bytes(i);
        let key = feed::artifact_key(i);
        assert_artifact(&chain.idmz, "idmz-bsfg", "idmz-bsfg", &key, &data);
        assert_artifact(
            &chain.enterprise,
            "enterprise-bsfg",
            "idmz-bsfg",
            &key,
            &data,
        );
    }
    // Every cursor comes to rest at the end of the log, never beyond it.
    let deadline = Instant::now() + Duration::from_secs(20);
    for hop in HOPS {
        loop {
            check_confirms_durable(&chain, hop, "after catch-up", &mut samples);
            let url = match hop.sender {
                Z::Plant => chain.plant.nats.url(),
                _ => chain.idmz.nats.url(),
            };
            let cursor = probe::cursor(&url, STREAM, hop.consumer).map(|c| c.value());
            if cursor == Some(plan.total) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{}'s consumer {} should be confirmed up to {} once everything arrived, it is at {cursor:?}\n{}",
                name(hop.sender),
                hop.consumer,
                plan.total,
                chain_diagnostics(&chain, &logs)
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    assert!(
        samples.after_receiver_restart >= ROUNDS as u64,
        "the cursor check ran right after too few receiver restarts ({})",
        samples.after_receiver_restart
    );
    eprintln!(
        "[kill_nine_rounds] passed in {:.1?}: {injected} faults, {} cursor checks ({} right after a receiving nats-server restart; ack floor up to {} behind the mark)",
        started.elapsed(),
        samples.taken,
        samples.after_receiver_restart,
        samples.ack_floor_behind
    );
}

/// Waits until the proxy made a cut beyond `cuts_before`.
fn wait_for_cut(proxy: &Proxy, cuts_before: u64, deadline: Duration) -> bool {
    let start = Instant::now();
    while start.elapsed() < deadline {
        if proxy.stats().cuts.load(Ordering::SeqCst) > cuts_before {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    false
}

/// The IDMZ side's consumer for enterprise and the access that goes with it.
const TO_ENTERPRISE: &str = r#"
[[consumers]]
name = "to-enterprise"
category = "operational"
[[access]]
identity = "enterprise-bsfg"
fetch = ["to-enterprise"]
get_objects = ["batch-files"]
"#;

#[test]
fn connection_cut_mid_response() {
    let started = Instant::now();
    let mut rng = Prng::from_env("connection_cut_mid_response");
    let estate = tempfile::tempdir().expect("tempdir");
    let pki = Arc::new(Pki::new(&estate.path().join("pki"), "estate CA"));
    let p_idmz = free_port();
    let idmz = Zone::start_with(ZoneOptions {
        zone: "idmz".into(),
        extra_toml: TO_ENTERPRISE.into(),
        pki: Some(pki.clone()),
        port: Some(p_idmz),
        ..Default::default()
    });
    // A node with another identity serving the same consumer: reached through the proxy, it must
    // be refused before any request (TLS is end to end, the proxy only moves bytes).
    let impostor = Zone::start_with(ZoneOptions {
        zone: "plant-a".into(),
        extra_toml: TO_ENTERPRISE.into(),
        pki: Some(pki.clone()),
        ..Default::default()
    });
    let proxy = Proxy::start(p_idmz);
    let enterprise = Zone::start_with(ZoneOptions {
        zone: "enterprise".into(),
        extra_toml: format!(
            "[[pulls]]\nname = \"from-idmz\"\npeer_url = \"{}\"\npeer_identity = \"idmz-bsfg\"\nconsumer = \"to-enterprise\"\ncategory = \"operational\"\npage_size = 500\nidle_wait = \"1s\"\n",
            proxy.url()
        ),
        pki: Some(pki.clone()),
        peer_fetch: vec![],
        ..Default::default()
    });
    let impostor_facts = (0..40)
        .map(|i| {
            producer::fact(
                &format!("impostor-{i}"),
                "plant-a",
                format!("{{\"n\":{i}}}"),
                "",
            )
        })
        .collect();
    producer::append_all(
        producer::client(
            &impostor.url(),
            "plant-a-bsfg",
            &pki.dir,
            &pki.ca_path,
            PRODUCER,
        ),
        impostor_facts,
        4,
    );

    let plan = Plan {
        url: idmz.url(),
        node_identity: "idmz-bsfg".into(),
        pki_dir: pki.dir.clone(),
        ca: pki.ca_path.clone(),
        who: PRODUCER.into(),
        from_zone: "idmz".into(),
        total: 2_000,
        artifact_every: 100,
        batch: 100,
        pause: Duration::from_millis(1000),
        padding: 700,
        deadline: Duration::from_secs(90),
    };
    let expected: Vec<String> = (0..plan.total).map(feed::message_id).collect();
    let mut feed = Feed::start(plan.clone());
    let hop = |what: &str| {
        // idmz's cursor for enterprise never runs ahead of enterprise's log.
        if let Some(cursor) = probe::cursor(&idmz.nats.url(), STREAM, "to-enterprise")
            && let Some(stored) = probe::last_sequence(&enterprise.nats.url(), STREAM)
        {
            assert!(
                stored >= cursor.value(),
                "{what}: to-enterprise confirmed up to {} (ack floor {}, mark {}) but enterprise stores {stored}",
                cursor.value(),
                cursor.ack_floor,
                cursor.mark
            );
        }
    };

    // After each fault, let the pull confirm something before the next one (or give up waiting
    // after a while: the backlog may be empty), so faults and progress interleave.
    let confirmed =
        || probe::cursor(&idmz.nats.url(), STREAM, "to-enterprise").map_or(0, |c| c.value());
    let await_progress = |before: u64| {
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(8) && confirmed() <= before {
            std::thread::sleep(Duration::from_millis(50));
        }
    };

    // Phase 1, a few times: let a backlog build behind refused connections, then let one
    // connection through and cut it a few KB into its first large FetchFacts page.
    for round in 0..3 {
        let hold = rng.millis(1200, 2000);
        proxy.drop_all();
        proxy.refuse_for(hold);
        std::thread::sleep(hold);
        let after = rng.range(6_000, 40_000);
        let cuts = proxy.stats().cuts.load(Ordering::SeqCst);
        let before = confirmed();
        proxy.cut_after(after);
        let cut = wait_for_cut(&proxy, cuts, Duration::from_secs(8));
        eprintln!(
            "[connection_cut_mid_response] phase 1 round {round} at {:.1?}: refused {hold:?}, then {} after {after} response bytes; producer at {}, confirmed {before}",
            started.elapsed(),
            if cut { "cut" } else { "NOT cut" },
            feed.appended()
        );
        await_progress(before);
        hop("phase 1");
    }

    // Phase 2: cuts at random points of the response stream, drops and refusals while the
    // producer runs; once, the proxy leads to the impostor instead.
    let mut impostor_checked = false;
    let phase2 = Instant::now();
    while phase2.elapsed() < Duration::from_secs(30)
        && !(feed.is_finished() && phase2.elapsed() > Duration::from_secs(5))
    {
        let before = confirmed();
        let roll = rng.range(0, 100);
        if roll < 70 {
            let cuts = proxy.stats().cuts.load(Ordering::SeqCst);
            proxy.cut_after(rng.range(200, 40_000));
            wait_for_cut(&proxy, cuts, Duration::from_secs(4));
        } else if roll < 85 {
            proxy.drop_all();
        } else {
            proxy.refuse_for(rng.millis(200, 1000));
        }
        await_progress(before);
        std::thread::sleep(rng.millis(0, 300));
        if !impostor_checked && phase2.elapsed() > Duration::from_secs(3) {
            impostor_checked = true;
            proxy.disarm();
            proxy.refuse_for(Duration::ZERO);
            proxy.set_upstream(impostor.port);
            proxy.drop_all();
            let seen = enterprise.node.wait_for_log(
                "presented identity \"plant-a-bsfg\"",
                Duration::from_secs(15),
            );
            proxy.set_upstream(p_idmz);
            proxy.drop_all();
            assert!(
                seen,
                "enterprise should refuse the impostor behind the proxy:\n{}",
                enterprise.node.log()
            );
            eprintln!(
                "[connection_cut_mid_response] impostor refused at {:.1?}",
                started.elapsed()
            );
        }
        hop("phase 2");
    }
    proxy.disarm();
    proxy.refuse_for(Duration::ZERO);
    feed.join();
    let stats = proxy.stats();
    eprintln!(
        "[connection_cut_mid_response] faults over at {:.1?}: {} connections, {} response bytes, {} cut ({} mid-burst), {} dropped, {} refused; producer retried {} calls",
        started.elapsed(),
        stats.accepted.load(Ordering::SeqCst),
        stats.response_bytes.load(Ordering::SeqCst),
        stats.cuts.load(Ordering::SeqCst),
        stats.cuts_mid_burst.load(Ordering::SeqCst),
        stats.dropped.load(Ordering::SeqCst),
        stats.refused.load(Ordering::SeqCst),
        feed.progress.retries.load(Ordering::SeqCst),
    );

    wait_for_count(
        &enterprise.nats.url(),
        plan.total,
        Duration::from_secs(45),
        "catch-up of enterprise through the proxy",
        || {
            format!(
                "{}\n{}\n{}",
                status(&enterprise),
                probe::consumer_state(&idmz.nats.url(), STREAM, "to-enterprise"),
                enterprise
                    .node
                    .log()
                    .lines()
                    .filter(|l| l.contains("pull"))
                    .collect::<Vec<_>>()
                    .join("\n")
            )
        },
    );
    std::thread::sleep(Duration::from_millis(1500));
    assert_exactly_once_in_order(
        ("idmz", &idmz.nats.url()),
        &[("enterprise", &enterprise.nats.url())],
        &expected,
    );
    for i in (0..plan.total).filter(|i| feed::is_artifact(&plan, *i)) {
        assert_artifact(
            &enterprise,
            "enterprise-bsfg",
            "idmz-bsfg",
            &feed::artifact_key(i),
            &feed::artifact_bytes(i),
        );
    }
    hop("after catch-up");
    let rest = Instant::now();
    while confirmed() != plan.total {
        assert!(
            rest.elapsed() < Duration::from_secs(15),
            "to-enterprise should come to rest at {}: {}",
            plan.total,
            probe::consumer_state(&idmz.nats.url(), STREAM, "to-enterprise")
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        stats.cuts.load(Ordering::SeqCst) >= 5 && stats.cuts_mid_burst.load(Ordering::SeqCst) >= 3,
        "the proxy should have cut connections mid-response"
    );
    let log = enterprise.node.log();
    let failed = log.lines().filter(|l| l.contains("pull failed")).count();
    let mid_response = log
        .lines()
        .filter(|l| l.contains("reading the response"))
        .count();
    eprintln!(
        "[connection_cut_mid_response] passed in {:.1?}; the pull failed {failed} times ({mid_response} after the response headers)",
        started.elapsed()
    );
}

/// A kill -9 of the sending zone's nats-server right after a confirm may lose the consumer's
/// latest acks (nats-server writes consumer state lazily), while the node's own confirmed mark
/// survives. The next full page (as many facts as the consumer's max_ack_pending) must still be
/// confirmable. Acts as the receiving node itself (FetchFacts / ConfirmReceipt as `idmz-bsfg`),
/// so the kill lands within a millisecond of the confirm.
#[test]
fn full_page_confirms_after_the_sender_nats_server_lost_acks() {
    const CONSUMER: &str = "to-idmz"; // max_ack_pending 50 in the harness config
    let mut plant = Zone::start();
    let requests = (0..400)
        .map(|i| {
            producer::fact(
                &feed::message_id(i),
                "plant-a",
                format!("{{\"n\":{i}}}"),
                "",
            )
        })
        .collect();
    producer::append_all(
        producer::client(
            &plant.url(),
            "plant-a-bsfg",
            &plant.pki.dir,
            &plant.pki.ca_path,
            PRODUCER,
        ),
        requests,
        4,
    );
    let peer = producer::client(
        &plant.url(),
        "plant-a-bsfg",
        &plant.pki.dir,
        &plant.pki.ca_path,
        common::PEER,
    );
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let fetch = |peer: &bsfg::rpc::client::PeerClient| -> bsfg::proto::FetchFactsResponse {
        let request = bsfg::proto::FetchFactsRequest {
            consumer_name: CONSUMER.into(),
            limit: 50,
            max_wait_ms: 0,
        };
        let start = Instant::now();
        loop {
            match runtime.block_on(peer.unary(
                "/bsfg.v1.BoundaryService/FetchFacts",
                &request,
                Duration::from_secs(5),
            )) {
                Ok(page) => return page,
                Err(e) => {
                    assert!(start.elapsed() < Duration::from_secs(15), "FetchFacts: {e}");
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        }
    };
    let confirm = |peer: &bsfg::rpc::client::PeerClient,
                   offset: u64,
                   timeout: Duration|
     -> Result<u64, bsfg::rpc::client::ClientError> {
        let request = bsfg::proto::ConfirmReceiptRequest {
            consumer_name: CONSUMER.into(),
            offset,
        };
        runtime
            .block_on(peer.unary::<_, bsfg::proto::ConfirmReceiptResponse>(
                "/bsfg.v1.BoundaryService/ConfirmReceipt",
                &request,
                timeout,
            ))
            .map(|r| r.cursor_advanced_to)
    };

    // Confirm a page, kill -9 nats-server at once; until an ack is lost.
    let mut lost = None;
    for attempt in 0..6 {
        let page = fetch(&peer);
        let last = page.facts.last().expect("a page").offset;
        assert_eq!(
            confirm(&peer, last, Duration::from_secs(5)),
            Ok(last),
            "confirm of a fresh page"
        );
        plant.nats.process.kill();
        start_nats(&mut plant);
        let cursor = probe::cursor(&plant.nats.url(), STREAM, CONSUMER).expect("cursor");
        eprintln!(
            "[lost_acks] attempt {attempt}: confirmed {last}, after kill -9 the ack floor is {} and the mark {}",
            cursor.ack_floor, cursor.mark
        );
        assert_eq!(
            cursor.mark, last,
            "the node's confirmed mark survives kill -9"
        );
        if cursor.ack_floor < cursor.mark {
            lost = Some(cursor);
            break;
        }
    }
    let Some(lost) = lost else {
        panic!("precondition: nats-server never lost a consumer ack across six kill -9s");
    };

    // The next page starts after the mark; confirming it must work (after at most an ack wait
    // or two for deliveries of an interrupted call).
    let page = fetch(&peer);
    let first = page.facts.first().expect("a page").offset;
    let last = page.facts.last().expect("a page").offset;
    assert_eq!(
        first,
        lost.mark + 1,
        "the page starts right after the cursor"
    );
    let start = Instant::now();
    let outcome = loop {
        match confirm(&peer, last, Duration::from_secs(12)) {
            Ok(cursor) => break Ok(cursor),
            Err(e) if start.elapsed() > Duration::from_secs(14) => break Err(e),
            Err(_) => std::thread::sleep(Duration::from_millis(500)),
        }
    };
    assert_eq!(
        outcome,
        Ok(last),
        "confirming {first}..={last} after the ack floor fell back to {} (mark {}) should succeed within a few ack waits (5 s); {}",
        lost.ack_floor,
        lost.mark,
        probe::consumer_state(&plant.nats.url(), STREAM, CONSUMER)
    );
}

/// A 6 MiB artifact whose transfer is cut midway (after ~3 MiB of GetObject chunks): idmz shows no
/// part of it — no object, and none of the chunks its streamed put had already written (they are
/// purged, not left to fill the bucket) — and the retry brings it whole, stored once.
#[test]
fn an_artifact_cut_midway_leaves_nothing_behind_and_the_retry_brings_it_whole() {
    const SIZE: usize = 6 * 1024 * 1024;
    let estate = tempfile::tempdir().expect("tempdir");
    let pki = Arc::new(Pki::new(&estate.path().join("pki"), "estate CA"));
    let p_plant = free_port();
    let plant = Zone::start_with(ZoneOptions {
        zone: "plant-a".into(),
        pki: Some(pki.clone()),
        port: Some(p_plant),
        max_object_chunk_bytes: 512 * 1024,
        ..Default::default()
    });
    let proxy = Proxy::start(p_plant);
    let idmz = Zone::start_with(ZoneOptions {
        zone: "idmz".into(),
        extra_toml: format!(
            "[[pulls]]\nname = \"from-plant\"\npeer_url = \"{}\"\npeer_identity = \"plant-a-bsfg\"\nconsumer = \"to-idmz\"\ncategory = \"operational\"\naccept_from_zones = [\"plant-a\"]\nidle_wait = \"1s\"\n",
            proxy.url()
        ),
        pki: Some(pki),
        ..Default::default()
    });
    let data: Vec<u8> = (0..SIZE).map(|i| (i % 251) as u8).collect();
    let digest = format!(
        "sha256:{}",
        hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&data))
    );
    let key = "fw/bundle-2.raucb";
    common::js::put_object_direct(
        &plant.nats.url(),
        "batch-files",
        key,
        "application/octet-stream",
        &data,
    );
    assert_eq!(
        common::js::object_stream_messages(&idmz.nats.url(), "batch-files"),
        0
    );

    // The pull's connection is live (its long polls); the next one is refused for a while, so
    // the state after the cut can be seen before the retry.
    proxy.cut_after(3 * 1024 * 1024);
    proxy.refuse_for(Duration::from_secs(12));
    let cuts_before = proxy.stats().cuts.load(Ordering::SeqCst);
    producer::append_all(
        producer::client(
            &plant.url(),
            "plant-a-bsfg",
            &plant.pki.dir,
            &plant.pki.ca_path,
            PRODUCER,
        ),
        vec![producer::fact(
            "bundle-2",
            "plant-a",
            format!(
                "{{\"bucket\":\"batch-files\",\"digest\":\"{digest}\",\"key\":\"{key}\",\"media_type\":\"application/octet-stream\",\"size\":{SIZE}}}"
            ),
            "application/octet-stream",
        )],
        1,
    );
    common::observe::eventually("the transfer is cut", Duration::from_secs(8), || {
        proxy.stats().cuts.load(Ordering::SeqCst) > cuts_before
    });
    common::observe::eventually(
        "the failed put's chunks are purged",
        Duration::from_secs(3),
        || common::js::object_stream_messages(&idmz.nats.url(), "batch-files") == 0,
    );
    assert!(
        idmz.node
            .wait_for_log("pull failed; retrying", Duration::from_secs(1))
            && idmz
                .node
                .log_contains("purged the chunks of an object that was never completed"),
        "the put failed midway and its chunks were purged:\n{}",
        idmz.node.log()
    );
    assert!(
        common::js::get_object_direct(&idmz.nats.url(), "batch-files", key).is_none(),
        "no object after the cut"
    );
    assert_eq!(
        common::js::last_sequence(&idmz.nats.url(), STREAM),
        0,
        "nor its fact"
    );

    wait_for_count(
        &idmz.nats.url(),
        1,
        Duration::from_secs(60),
        "the bundle's fact in idmz after the retry",
        || idmz.node.log(),
    );
    let arrived = common::js::get_object_direct(&idmz.nats.url(), "batch-files", key)
        .expect("the object after the retry");
    assert!(arrived == data, "byte-identical");
    // One object: its chunks and its metadata, nothing of the failed attempt.
    assert_eq!(
        common::js::object_stream_messages(&idmz.nats.url(), "batch-files"),
        common::js::object_chunks(&idmz.nats.url(), "batch-files", key) + 1
    );
}
