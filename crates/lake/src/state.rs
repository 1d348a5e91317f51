//! Small JSON documents under `_state/`, written whole and atomically.

use bytes::Bytes;
use object_store::path::Path;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::{Error, Lake, Result};

/// The version of an object, as the store reports it: its e-tag, else its size and
/// modification time. Plans compare versions to see what changed since they last looked.
pub fn version(meta: &object_store::ObjectMeta) -> String {
    match &meta.e_tag {
        Some(tag) => tag.clone(),
        None => format!("{}-{}", meta.size, meta.last_modified.timestamp_micros()),
    }
}

/// Reads a state document; `None` if it does not exist yet.
pub async fn read<T: DeserializeOwned>(lake: &Lake, key: &Path) -> Result<Option<T>> {
    let Some(bytes) = lake.get_opt(key).await? else {
        return Ok(None);
    };
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|e| Error::State {
            key: key.to_string(),
            reason: e.to_string(),
        })
}

pub async fn write<T: Serialize>(lake: &Lake, key: &Path, doc: &T) -> Result<()> {
    let bytes = serde_json::to_vec_pretty(doc).map_err(|e| Error::State {
        key: key.to_string(),
        reason: e.to_string(),
    })?;
    lake.put(key, Bytes::from(bytes)).await
}
