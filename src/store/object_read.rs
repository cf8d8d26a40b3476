//! Reading a stored object one chunk per request: `STREAM.MSG.GET` for the next message of the
//! object's chunk subject from a sequence on, answered by the stream's leader. async-nats's own
//! reader is an ordered push consumer, which nats-server lets run up to 32 MiB ahead of the
//! reader (its flow-control window, `JsFlowControlMaxPending`): memory the node held for every
//! GetObject it served and every bundle it copied out, whatever the chunk it was asked for.
//! [`ChunkReader`] holds one chunk (128 KiB as async-nats stores them).
//!
//! GetObject at an offset does not use it: it reads only the chunks it answers with, through an
//! index of the object's chunks (`object_index.rs`).
//!
//! Limits: a chunk is fetched only when the previous one is used up (one round trip per chunk, no
//! read-ahead); objects that are links to others are not followed (the node never makes links).

use super::{
    ObjectInfo, StoreError,
    jetstream::JetStreamStore,
    objects::{to_info, unavailable},
};
use async_nats::jetstream::{
    message::StreamMessage,
    object_store::InfoErrorKind,
    stream::{RawMessageError, RawMessageErrorKind, Stream},
};
use bytes::Bytes;
use futures::future::BoxFuture;
use sha2::{Digest, Sha256};
use std::{
    io,
    pin::Pin,
    task::{Context, Poll, ready},
};
use tokio::io::{AsyncRead, ReadBuf};

type ChunkFuture = BoxFuture<'static, Result<StreamMessage, RawMessageError>>;

pub struct ChunkReader {
    stream: Stream<()>,
    subject: String,
    size: u64,
    /// The next chunk's search starts here.
    next_sequence: u64,
    chunk: Bytes,
    /// Bytes of the object fetched so far.
    fetched: u64,
    /// Of every byte fetched, checked against `digest` at the end (taken then).
    hasher: Option<Sha256>,
    digest: String,
    pending: Option<ChunkFuture>,
}

impl ChunkReader {
    /// A reader of the object whose chunks are published on `subject` in `stream`, `size` bytes
    /// with `digest` (`sha256:<hex>`), from its first byte; the digest is checked at the end.
    pub fn new(stream: Stream<()>, subject: String, size: u64, digest: String) -> Self {
        ChunkReader {
            stream,
            subject,
            size,
            next_sequence: 1,
            chunk: Bytes::new(),
            fetched: 0,
            hasher: Some(Sha256::new()),
            digest,
            pending: None,
        }
    }

    fn fetch(&self) -> ChunkFuture {
        let stream = self.stream.clone();
        let subject = self.subject.clone();
        let sequence = self.next_sequence;
        Box::pin(async move {
            stream
                .raw_message_builder()
                .sequence(sequence)
                .next_by_subject(subject)
                .send()
                .await
        })
    }

    fn take(&mut self, message: StreamMessage) -> io::Result<()> {
        let payload = message.payload;
        if self.fetched + payload.len() as u64 > self.size {
            return Err(damaged("its chunks hold more bytes than its size"));
        }
        if let Some(hasher) = &mut self.hasher {
            hasher.update(&payload);
        }
        self.fetched += payload.len() as u64;
        self.next_sequence = message.sequence + 1;
        self.chunk = payload;
        Ok(())
    }

    fn check_digest(&mut self) -> io::Result<()> {
        if let Some(hasher) = self.hasher.take() {
            let digest = format!("sha256:{}", hex::encode(hasher.finalize()));
            if digest != self.digest {
                return Err(damaged(&format!(
                    "its chunks have digest {digest}, its metadata says {}",
                    self.digest
                )));
            }
        }
        Ok(())
    }
}

fn damaged(problem: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("object damaged: {problem}"),
    )
}

impl AsyncRead for ChunkReader {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if !this.chunk.is_empty() {
                let n = buf.remaining().min(this.chunk.len());
                buf.put_slice(&this.chunk.split_to(n));
                return Poll::Ready(Ok(()));
            }
            if this.fetched == this.size {
                return Poll::Ready(this.check_digest());
            }
            if this.pending.is_none() {
                this.pending = Some(this.fetch());
            }
            let Some(pending) = this.pending.as_mut() else {
                continue;
            };
            let answer = ready!(pending.as_mut().poll(cx));
            this.pending = None;
            match answer {
                Ok(message) => this.take(message)?,
                Err(e) if e.kind() == RawMessageErrorKind::NoMessageFound => {
                    return Poll::Ready(Err(damaged("its chunks hold fewer bytes than its size")));
                }
                Err(e) => return Poll::Ready(Err(io::Error::other(e))),
            }
        }
    }
}

impl JetStreamStore {
    /// The object, and the subject its chunks are published on.
    async fn locate(&self, bucket: &str, key: &str) -> Result<(ObjectInfo, String), StoreError> {
        let not_found = || StoreError::ObjectNotFound {
            bucket: bucket.to_string(),
            key: key.to_string(),
        };
        let info = match self.bucket(bucket)?.info(key).await {
            Ok(info) if info.deleted => return Err(not_found()),
            Ok(info) => info,
            Err(e) if e.kind() == InfoErrorKind::NotFound => return Err(not_found()),
            Err(e) => return Err(unavailable(&format!("object info of {key:?}"), e)),
        };
        if info.options.as_ref().is_some_and(|o| o.link.is_some()) {
            return Err(StoreError::Corrupt(format!(
                "object {key:?} in {bucket:?} is a link, which this node does not follow"
            )));
        }
        let subject = format!("$O.{bucket}.C.{}", info.nuid);
        Ok((to_info(bucket, key, &info)?, subject))
    }

    async fn chunk_reader(
        &self,
        info: &ObjectInfo,
        subject: &str,
    ) -> Result<ChunkReader, StoreError> {
        let stream = self
            .js
            .get_stream_no_info(format!("OBJ_{}", info.bucket))
            .await
            .map_err(|e| unavailable(&format!("opening bucket {:?}", info.bucket), e))?;
        Ok(ChunkReader::new(
            stream,
            subject.to_string(),
            info.size,
            info.digest.clone(),
        ))
    }

    /// The object and a reader from its first byte, the digest checked at the end.
    pub(super) async fn read_object_impl(
        &self,
        bucket: &str,
        key: &str,
    ) -> Result<(ObjectInfo, ChunkReader), StoreError> {
        let (info, subject) = self.locate(bucket, key).await?;
        let reader = self.chunk_reader(&info, &subject).await?;
        Ok((info, reader))
    }
}
