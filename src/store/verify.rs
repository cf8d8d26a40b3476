//! The check every streamed put goes through: a reader that counts and hashes the bytes on their
//! way into the store and fails — with an `io::Error`, so the store's own put fails before it
//! writes the object's metadata — on the first byte past the announced size, at an end short of
//! it, on a digest other than the announced one, or when its source fails. What went wrong is
//! kept for [`VerifyingReader::failure`], as the [`StoreError`] the caller gets.
//!
//! Holds nothing but the hash state: the bytes pass through the caller's buffer.

use super::{ExpectedObject, StoreError};
use sha2::{Digest, Sha256};
use std::{
    io,
    pin::Pin,
    task::{Context, Poll},
};
use tokio::io::{AsyncRead, ReadBuf};

pub struct VerifyingReader<R> {
    inner: R,
    size: u64,
    digest: String,
    received: u64,
    hasher: Sha256,
    failure: Option<Failure>,
}

enum Failure {
    Mismatch(String),
    Source(String),
}

impl<R> VerifyingReader<R> {
    pub fn new(inner: R, expected: &ExpectedObject<'_>) -> Self {
        VerifyingReader {
            inner,
            size: expected.size,
            digest: expected.digest.to_string(),
            received: 0,
            hasher: Sha256::new(),
            failure: None,
        }
    }

    /// Why the bytes were refused, or `None` when they were not (yet).
    pub fn failure(&self, key: &str) -> Option<StoreError> {
        self.failure.as_ref().map(|f| match f {
            Failure::Mismatch(problem) => StoreError::ObjectMismatch {
                key: key.to_string(),
                problem: problem.clone(),
            },
            Failure::Source(error) => StoreError::ObjectSource {
                key: key.to_string(),
                received: self.received,
                error: error.clone(),
            },
        })
    }

    fn refuse(&mut self, failure: Failure) -> Poll<io::Result<()>> {
        let text = match &failure {
            Failure::Mismatch(t) | Failure::Source(t) => t.clone(),
        };
        self.failure = Some(failure);
        Poll::Ready(Err(io::Error::new(io::ErrorKind::InvalidData, text)))
    }
}

impl<R: AsyncRead + Unpin> AsyncRead for VerifyingReader<R> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.failure.is_some() {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "the object was already refused",
            )));
        }
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Err(e)) => this.refuse(Failure::Source(e.to_string())),
            Poll::Ready(Ok(())) => {
                let new = &buf.filled()[before..];
                if new.is_empty() {
                    // The end: all of it, and the announced bytes?
                    let digest = format!("sha256:{}", hex::encode(this.hasher.clone().finalize()));
                    if this.received != this.size || digest != this.digest {
                        let problem = format!(
                            "received {} bytes with digest {digest}, referenced {} bytes with {}",
                            this.received, this.size, this.digest
                        );
                        return this.refuse(Failure::Mismatch(problem));
                    }
                    return Poll::Ready(Ok(()));
                }
                this.received += new.len() as u64;
                if this.received > this.size {
                    // An error hands out no bytes (AsyncRead's contract).
                    buf.set_filled(before);
                    let problem = format!("received more than the referenced {} bytes", this.size);
                    return this.refuse(Failure::Mismatch(problem));
                }
                this.hasher.update(new);
                Poll::Ready(Ok(()))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fact::sha256_digest;
    use tokio::io::AsyncReadExt;

    fn read_all(data: &[u8], size: u64, digest: &str) -> (io::Result<Vec<u8>>, Option<StoreError>) {
        let expected = ExpectedObject {
            bucket: "b",
            key: "k",
            media_type: "text/plain",
            size,
            digest,
        };
        let mut reader = VerifyingReader::new(data, &expected);
        let mut out = Vec::new();
        let result = tokio::runtime::Builder::new_current_thread()
            .build()
            .map(|rt| rt.block_on(reader.read_to_end(&mut out)))
            .unwrap_or_else(|e| panic!("runtime: {e}"));
        (result.map(|_| out), reader.failure("k"))
    }

    #[test]
    fn passes_the_announced_bytes_and_refuses_any_other() {
        let digest = sha256_digest(b"report");
        let (ok, failure) = read_all(b"report", 6, &digest);
        assert_eq!(ok.ok(), Some(b"report".to_vec()));
        assert_eq!(failure, None);

        for (data, size, problem) in [
            (&b"tampered"[..6], 6, "received 6 bytes with digest"),
            (&b"repo"[..], 6, "received 4 bytes with digest"),
            (
                &b"reports"[..],
                6,
                "received more than the referenced 6 bytes",
            ),
        ] {
            let (result, failure) = read_all(data, size, &digest);
            assert!(result.is_err(), "{data:?} refused");
            match failure {
                Some(StoreError::ObjectMismatch { key, problem: p }) => {
                    assert_eq!(key, "k");
                    assert!(p.contains(problem), "{p}");
                }
                other => panic!("{data:?}: {other:?}"),
            }
        }
    }
}
