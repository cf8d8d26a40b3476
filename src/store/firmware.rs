//! Firmware records in the KV bucket `bsfg_firmware`: install requests the operator's door
//! writes (`request.<attempt>`) and the firmware agent's status (`status`). The node never installs
//! anything; the agent (root, outside the node's sandbox, on loopback) reads the requests.

use super::{
    StoreError,
    jetstream::{JetStreamStore, unavailable},
};
use futures::TryStreamExt;

impl JetStreamStore {
    pub(super) async fn put_firmware_record(
        &self,
        key: &str,
        json: Vec<u8>,
    ) -> Result<(), StoreError> {
        self.firmware
            .put(key, json.into())
            .await
            .map_err(|e| unavailable(&format!("recording firmware record {key}"), e))?;
        Ok(())
    }

    pub(super) async fn get_firmware_record(
        &self,
        key: &str,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        let value = self
            .firmware
            .get(key)
            .await
            .map_err(|e| unavailable(&format!("reading firmware record {key}"), e))?;
        Ok(value.map(|v| v.to_vec()))
    }

    pub(super) async fn firmware_record_keys(&self) -> Result<Vec<String>, StoreError> {
        let keys = self
            .firmware
            .keys()
            .await
            .map_err(|e| unavailable("listing firmware records", e))?;
        keys.try_collect()
            .await
            .map_err(|e| unavailable("listing firmware records", e))
    }
}
