//! Bringing one referenced artifact over from the peer (SPEC §6 step 2) as a stream: the peer's
//! GetObject chunks are fed to the store's streamed put as they arrive, so the node holds one
//! chunk at a time (the peer's `max_object_chunk_bytes`), never the whole object — firmware
//! bundles of ~120 MB cross an appliance whose node runs under MemoryMax=384M.
//!
//! Every chunk is checked against the reference (size and digest the peer announces, no byte
//! past the referenced size, no empty chunk before the end); the store checks the whole (size and
//! sha256 at the end) and makes the object visible only then. A peer that fails midway leaves no
//! object here, and the pull retries from the first byte.
//!
//! Limits: a retry starts over at offset 0 (no resumption of a partial transfer).

use super::{PullError, PullLoop, peer::Peer};
use crate::{
    fact::{ArtifactRef, parse_artifact_ref},
    proto::GetObjectResponse,
    rpc::client::ClientError,
    store::{ExpectedObject, Store, StoreError},
};
use bytes::Bytes;
use std::{
    future::Future,
    io,
    pin::Pin,
    task::{Context, Poll, ready},
};
use tokio::io::{AsyncRead, ReadBuf};

type ChunkFuture<'a> =
    Pin<Box<dyn Future<Output = Result<GetObjectResponse, ClientError>> + Send + 'a>>;

/// The peer's copy of an artifact as an [`AsyncRead`]: one GetObject at a time, the next one
/// asked for when the previous chunk is used up. Its first failure is kept for
/// [`PeerObjectReader::into_failure`] (the store only sees an `io::Error`).
pub(super) struct PeerObjectReader<'a, P> {
    peer: &'a P,
    reference: &'a ArtifactRef,
    /// Bytes received so far: the offset of the next GetObject.
    received: u64,
    /// What is left of the last chunk.
    chunk: Bytes,
    eof: bool,
    /// The media type the peer stored the object with (may be empty).
    media_type: String,
    pending: Option<ChunkFuture<'a>>,
    failure: Option<PullError>,
}

impl<'a, P: Peer> PeerObjectReader<'a, P> {
    /// Asks for the first chunk (which names the media type the object is stored with).
    pub(super) async fn open(peer: &'a P, reference: &'a ArtifactRef) -> Result<Self, PullError> {
        let mut reader = PeerObjectReader {
            peer,
            reference,
            received: 0,
            chunk: Bytes::new(),
            eof: false,
            media_type: String::new(),
            pending: None,
            failure: None,
        };
        let first = peer
            .get_object(&reference.bucket, &reference.key, 0)
            .await?;
        reader.media_type = first.media_type.clone();
        reader.accept(first)?;
        Ok(reader)
    }

    fn mismatch(&self, problem: String) -> PullError {
        PullError::Artifact {
            key: self.reference.key.clone(),
            problem,
        }
    }

    fn accept(&mut self, chunk: GetObjectResponse) -> Result<(), PullError> {
        let reference = self.reference;
        if chunk.size != reference.size || chunk.digest != reference.digest {
            return Err(self.mismatch(format!(
                "the peer holds {} ({} bytes), the fact references {} ({} bytes)",
                chunk.digest, chunk.size, reference.digest, reference.size
            )));
        }
        if self.received + chunk.data.len() as u64 > reference.size {
            return Err(self.mismatch(format!(
                "the peer sent more than the referenced {} bytes",
                reference.size
            )));
        }
        if chunk.data.is_empty() && !chunk.eof {
            return Err(self.mismatch("the peer sent an empty chunk before the end".into()));
        }
        self.received += chunk.data.len() as u64;
        self.eof = chunk.eof;
        self.chunk = chunk.data;
        Ok(())
    }

    /// Why the transfer stopped, if this reader stopped it.
    pub(super) fn into_failure(self) -> Option<PullError> {
        self.failure
    }
}

impl<P: Peer> AsyncRead for PeerObjectReader<'_, P> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if let Some(failure) = &this.failure {
                return Poll::Ready(Err(io::Error::other(failure.to_string())));
            }
            if !this.chunk.is_empty() {
                let n = buf.remaining().min(this.chunk.len());
                buf.put_slice(&this.chunk.split_to(n));
                return Poll::Ready(Ok(()));
            }
            if this.eof {
                return Poll::Ready(Ok(()));
            }
            let (peer, reference, offset) = (this.peer, this.reference, this.received);
            let pending = this.pending.get_or_insert_with(|| {
                Box::pin(peer.get_object(&reference.bucket, &reference.key, offset))
            });
            let answer = ready!(pending.as_mut().poll(cx));
            this.pending = None;
            if let Err(e) = answer.map_err(PullError::from).and_then(|c| this.accept(c)) {
                this.failure = Some(e);
            }
        }
    }
}

impl<S: Store, P: Peer> PullLoop<S, P> {
    /// Brings the artifact `object_json` references over unless it is here already; returns 1 if
    /// it was brought over.
    pub(super) async fn replicate_artifact(
        &self,
        offset: u64,
        object_json: &str,
        media_type: &str,
    ) -> Result<u64, PullError> {
        let reference =
            parse_artifact_ref(object_json, media_type).map_err(|e| PullError::Invalid {
                offset,
                problem: e.to_string(),
            })?;
        if let Some(local) = self
            .store
            .object_info(&reference.bucket, &reference.key)
            .await?
        {
            if local.digest == reference.digest && local.size == reference.size {
                return Ok(0);
            }
            return Err(PullError::Artifact {
                key: reference.key.clone(),
                problem: format!(
                    "stored here as {} ({} bytes), referenced as {} ({} bytes)",
                    local.digest, local.size, reference.digest, reference.size
                ),
            });
        }
        let mut reader = PeerObjectReader::open(&self.peer, &reference).await?;
        let media = if reader.media_type.is_empty() {
            reference.media_type.clone()
        } else {
            reader.media_type.clone()
        };
        let expected = ExpectedObject {
            bucket: &reference.bucket,
            key: &reference.key,
            media_type: &media,
            size: reference.size,
            digest: &reference.digest,
        };
        match self.store.put_object_stream(expected, &mut reader).await {
            Ok(_) => Ok(1),
            // The reader's own account first: the peer failed (a retry), or it sent other bytes.
            Err(e) => Err(match (reader.into_failure(), e) {
                (Some(failure), _) => failure,
                (None, StoreError::ObjectMismatch { key, problem }) => {
                    PullError::Artifact { key, problem }
                }
                (None, e) => e.into(),
            }),
        }
    }
}
