//! Answers encoded for the wire, once: JSON, CSV or an Arrow IPC stream, with an entity tag. A
//! hot answer (the week of candles every open chart asks for) is encoded and hashed once per
//! snapshot and kept in the read model's bounded cache, so a repeat costs a lookup.

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use bytes::Bytes;
use cryptolake_query::OutputFormat;

use super::cache::Weigh;
use crate::{Error, Result};

/// How an answer is put on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Encoding {
    /// A JSON array of row objects.
    Json,
    /// CSV with a header line.
    Csv,
    /// An Arrow IPC stream.
    Arrow,
}

impl Encoding {
    pub fn content_type(self) -> &'static str {
        match self {
            Encoding::Json => "application/json",
            Encoding::Csv => "text/csv; charset=utf-8",
            Encoding::Arrow => "application/vnd.apache.arrow.stream",
        }
    }
}

/// An encoded answer and its entity tag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Encoded {
    pub encoding: Encoding,
    pub body: Bytes,
    /// The quoted entity tag of `body` ([`entity_tag`]).
    pub tag: String,
}

impl Weigh for Encoded {
    fn bytes(&self) -> usize {
        self.body.len() + self.tag.len() + std::mem::size_of::<Encoded>()
    }
}

/// `batches` (of `schema`) encoded as `encoding`, tagged.
pub fn encode(schema: &SchemaRef, batches: &[RecordBatch], encoding: Encoding) -> Result<Encoded> {
    let body = match encoding {
        Encoding::Json => {
            Bytes::from(cryptolake_query::render(batches, OutputFormat::Json)?.into_bytes())
        }
        Encoding::Csv => {
            Bytes::from(cryptolake_query::render(batches, OutputFormat::Csv)?.into_bytes())
        }
        Encoding::Arrow => {
            let mut buf = Vec::new();
            let written = (|| {
                let mut w = arrow::ipc::writer::StreamWriter::try_new(&mut buf, schema)?;
                for b in batches {
                    w.write(b)?;
                }
                w.finish()
            })();
            written.map_err(|e| Error::Invalid(format!("encoding an Arrow stream: {e}")))?;
            Bytes::from(buf)
        }
    };
    let tag = entity_tag(&body);
    Ok(Encoded {
        encoding,
        body,
        tag,
    })
}

/// The entity tag of a body: the first 128 bits of its SHA-256, quoted, so equal bodies have
/// equal tags in every process and across restarts.
pub fn entity_tag(body: &[u8]) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(body);
    let hex: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
    format!("\"{hex}\"")
}
