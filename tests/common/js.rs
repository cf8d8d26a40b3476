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

/// Puts `data` straight into a zone's Object Store (as the node stores a PutObject: its media
/// type in the object's metadata), for artifacts larger than a PutObject request may be.
pub fn put_object_direct(url: &str, bucket: &str, key: &str, media_type: &str, data: &[u8]) {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        let client = async_nats::connect(url).await.expect("connect to nats");
        let store = jetstream::new(client)
            .get_object_store(bucket)
            .await
            .expect("bucket");
        let meta = jetstream::object_store::ObjectMetadata {
            name: key.into(),
            metadata: [("bsfg-media-type".to_string(), media_type.to_string())].into(),
            ..Default::default()
        };
        store
            .put(meta, &mut &data[..])
            .await
            .expect("put the object");
    });
}

/// A whole object read straight from a zone's Object Store, or `None` when there is none.
pub fn get_object_direct(url: &str, bucket: &str, key: &str) -> Option<Vec<u8>> {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        let client = async_nats::connect(url).await.expect("connect to nats");
        let store = jetstream::new(client)
            .get_object_store(bucket)
            .await
            .expect("bucket");
        let mut object = store.get(key).await.ok()?;
        let mut bytes = Vec::new();
        tokio::io::AsyncReadExt::read_to_end(&mut object, &mut bytes)
            .await
            .expect("read the object");
        Some(bytes)
    })
}

/// Messages in a bucket's stream (`OBJ_<bucket>`): every chunk of every object, and their metadata.
pub fn object_stream_messages(url: &str, bucket: &str) -> u64 {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        let client = async_nats::connect(url).await.expect("connect to nats");
        let mut stream = jetstream::new(client)
            .get_stream(format!("OBJ_{bucket}"))
            .await
            .expect("bucket stream");
        stream.info().await.expect("stream info").state.messages
    })
}

/// How many chunks an object of a zone's Object Store is stored in.
pub fn object_chunks(url: &str, bucket: &str, key: &str) -> u64 {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        let client = async_nats::connect(url).await.expect("connect to nats");
        let store = jetstream::new(client)
            .get_object_store(bucket)
            .await
            .expect("bucket");
        store.info(key).await.expect("object info").chunks as u64
    })
}
