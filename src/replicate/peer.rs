//! What the pull loop needs from a peer node: the three calls of receiver-driven replication.
//! [`PeerClient`] is the real one (Connect over HTTP/2 + mTLS); tests use a fake.

use crate::{
    proto::{
        ConfirmReceiptRequest, ConfirmReceiptResponse, FetchFactsRequest, FetchFactsResponse,
        GetObjectRequest, GetObjectResponse,
    },
    rpc::client::{ClientError, PeerClient},
};
use std::{future::Future, time::Duration};

pub trait Peer: Send + Sync + 'static {
    fn fetch(
        &self,
        consumer: &str,
        limit: u32,
        max_wait: Duration,
    ) -> impl Future<Output = Result<FetchFactsResponse, ClientError>> + Send;

    fn confirm(
        &self,
        consumer: &str,
        offset: u64,
    ) -> impl Future<Output = Result<u64, ClientError>> + Send;

    fn get_object(
        &self,
        bucket: &str,
        key: &str,
        offset: u64,
    ) -> impl Future<Output = Result<GetObjectResponse, ClientError>> + Send;
}

/// A peer reached through [`PeerClient`], with `timeout` per call (plus the long poll).
pub struct RemotePeer {
    pub client: PeerClient,
    pub timeout: Duration,
}

impl Peer for RemotePeer {
    async fn fetch(
        &self,
        consumer: &str,
        limit: u32,
        max_wait: Duration,
    ) -> Result<FetchFactsResponse, ClientError> {
        let request = FetchFactsRequest {
            consumer_name: consumer.to_string(),
            limit,
            max_wait_ms: u32::try_from(max_wait.as_millis()).unwrap_or(u32::MAX),
        };
        self.client
            .unary(
                "/bsfg.v1.BoundaryService/FetchFacts",
                &request,
                self.timeout + max_wait,
            )
            .await
    }

    async fn confirm(&self, consumer: &str, offset: u64) -> Result<u64, ClientError> {
        let request = ConfirmReceiptRequest {
            consumer_name: consumer.to_string(),
            offset,
        };
        let response: ConfirmReceiptResponse = self
            .client
            .unary(
                "/bsfg.v1.BoundaryService/ConfirmReceipt",
                &request,
                self.timeout,
            )
            .await?;
        Ok(response.cursor_advanced_to)
    }

    async fn get_object(
        &self,
        bucket: &str,
        key: &str,
        offset: u64,
    ) -> Result<GetObjectResponse, ClientError> {
        let request = GetObjectRequest {
            bucket: bucket.to_string(),
            key: key.to_string(),
            offset,
            limit_bytes: 0,
        };
        self.client
            .unary("/bsfg.v1.ArtifactService/GetObject", &request, self.timeout)
            .await
    }
}
