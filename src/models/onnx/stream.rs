//! Reading an `.onnx` file without holding its weights in memory twice.
//!
//! Decoding the whole file with prost needs the file's bytes and a copy of every `raw_data`
//! at once, and the importer then makes a third copy as `f32` (VGG16: 553 MB on disk peaked at
//! 2.2 GB). Here the file is walked field by field: everything except the graph initializers'
//! `raw_data` payloads is read and decoded as usual, and each payload is recorded as ONNX
//! external data pointing back into the model file itself (location = its file name, offset,
//! length). [`tensor::decode`](super::tensor::decode) then reads each tensor straight from
//! the file when it is converted, so only the final weights are resident.

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::Path;

use prost::Message;

use super::Problem;
use super::proto::tensor_proto::DataLocation;
use super::proto::{GraphProto, ModelProto, StringStringEntryProto, TensorProto};

/// The key marking external data that is really the file's own inline `raw_data`, so that
/// errors about it speak of raw_data.
pub const INLINE_KEY: &str = "convscope:inline_raw_data";

const WIRE_VARINT: u64 = 0;
const WIRE_FIXED64: u64 = 1;
const WIRE_LEN: u64 = 2;
const WIRE_FIXED32: u64 = 5;

/// ModelProto.graph, GraphProto.initializer, TensorProto.raw_data.
const MODEL_GRAPH: u64 = 7;
const GRAPH_INITIALIZER: u64 = 5;
const TENSOR_RAW_DATA: u64 = 9;

fn decode_err(msg: impl Into<String>) -> Problem {
    Problem::Decode(msg.into())
}

/// A buffered file reader that knows its offset and the file's length.
struct Reader {
    r: BufReader<File>,
    pos: u64,
    len: u64,
}

impl Reader {
    fn byte(&mut self) -> Result<u8, Problem> {
        let mut b = [0u8; 1];
        self.r
            .read_exact(&mut b)
            .map_err(|_| decode_err("the file ends in the middle of a field"))?;
        self.pos += 1;
        Ok(b[0])
    }

    /// A varint, its raw bytes appended to `copy`.
    fn varint(&mut self, copy: &mut Vec<u8>) -> Result<u64, Problem> {
        let mut v = 0u64;
        for i in 0..10 {
            let b = self.byte()?;
            copy.push(b);
            v |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(decode_err("a varint is longer than 10 bytes"))
    }

    /// `n` bytes appended to `copy`; `n` was checked against the enclosing message.
    fn bytes(&mut self, n: u64, copy: &mut Vec<u8>) -> Result<(), Problem> {
        let start = copy.len();
        let n = usize::try_from(n).map_err(|_| decode_err("a field is too long"))?;
        copy.resize(start + n, 0);
        self.r
            .read_exact(&mut copy[start..])
            .map_err(|_| decode_err("the file ends in the middle of a field"))?;
        self.pos += n as u64;
        Ok(())
    }

    fn skip(&mut self, n: u64) -> Result<(), Problem> {
        let step = i64::try_from(n).map_err(|_| decode_err("a field is too long"))?;
        self.r
            .seek_relative(step)
            .map_err(|e| decode_err(format!("cannot skip a field ({e})")))?;
        self.pos += n;
        Ok(())
    }
}

/// One field header: (field number, wire type, the header's bytes).
fn header(r: &mut Reader) -> Result<(u64, u64, Vec<u8>), Problem> {
    let mut raw = Vec::new();
    let key = r.varint(&mut raw)?;
    Ok((key >> 3, key & 7, raw))
}

/// A length prefix that must fit before `end`.
fn length(r: &mut Reader, end: u64, copy: &mut Vec<u8>) -> Result<u64, Problem> {
    let n = r.varint(copy)?;
    if r.pos.checked_add(n).is_none_or(|e| e > end) {
        return Err(decode_err(format!(
            "a field at byte {} declares {n} bytes, more than its message holds",
            r.pos
        )));
    }
    Ok(n)
}

/// Copies the body of a field whose header was just read (into `copy`, header included).
fn copy_field(
    r: &mut Reader,
    wire: u64,
    end: u64,
    mut copy: Vec<u8>,
    out: &mut Vec<u8>,
) -> Result<(), Problem> {
    match wire {
        WIRE_VARINT => {
            r.varint(&mut copy)?;
        }
        WIRE_FIXED64 => r.bytes(8, &mut copy)?,
        WIRE_FIXED32 => r.bytes(4, &mut copy)?,
        WIRE_LEN => {
            let n = length(r, end, &mut copy)?;
            r.bytes(n, &mut copy)?;
        }
        w => {
            return Err(decode_err(format!(
                "byte {}: wire type {w} is not valid here",
                r.pos
            )));
        }
    }
    if r.pos > end {
        return Err(decode_err("a field runs past the end of its message"));
    }
    out.extend_from_slice(&copy);
    Ok(())
}

/// A TensorProto occupying `[r.pos, end)`, its `raw_data` left in the file.
fn tensor(r: &mut Reader, end: u64, file_name: &str) -> Result<TensorProto, Problem> {
    let mut rest = Vec::new();
    let mut raw: Option<(u64, u64)> = None;
    while r.pos < end {
        let (field, wire, head) = header(r)?;
        if field == TENSOR_RAW_DATA && wire == WIRE_LEN {
            let n = length(r, end, &mut Vec::new())?;
            raw = Some((r.pos, n));
            r.skip(n)?;
        } else {
            copy_field(r, wire, end, head, &mut rest)?;
        }
    }
    let mut t = TensorProto::decode(rest.as_slice())
        .map_err(|e| decode_err(format!("an initializer: {e}")))?;
    if let Some((offset, n)) = raw {
        let entry = |k: &str, v: String| StringStringEntryProto {
            key: Some(k.into()),
            value: Some(v),
        };
        t.data_location = Some(DataLocation::External as i32);
        t.external_data = vec![
            entry("location", file_name.to_string()),
            entry("offset", offset.to_string()),
            entry("length", n.to_string()),
            entry(INLINE_KEY, "1".into()),
        ];
    }
    Ok(t)
}

/// A GraphProto occupying `[r.pos, end)`.
fn graph(r: &mut Reader, end: u64, file_name: &str) -> Result<GraphProto, Problem> {
    let mut rest = Vec::new();
    let mut inits = Vec::new();
    while r.pos < end {
        let (field, wire, head) = header(r)?;
        if field == GRAPH_INITIALIZER && wire == WIRE_LEN {
            let n = length(r, end, &mut Vec::new())?;
            let stop = r.pos + n;
            inits.push(tensor(r, stop, file_name)?);
        } else {
            copy_field(r, wire, end, head, &mut rest)?;
        }
    }
    let mut g =
        GraphProto::decode(rest.as_slice()).map_err(|e| decode_err(format!("the graph: {e}")))?;
    g.initializer = inits;
    Ok(g)
}

/// Reads a model file; initializer payloads become external data into the same file (see the
/// module doc). Errors are plain [`Problem`]s; the caller adds the file name.
pub fn read_model(path: &Path) -> Result<ModelProto, Problem> {
    let file = File::open(path)?;
    let len = file.metadata()?.len();
    let file_name = path
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| Problem::Invalid("its file name is not valid UTF-8".into()))?
        .to_string();
    let mut r = Reader {
        r: BufReader::with_capacity(1 << 16, file),
        pos: 0,
        len,
    };
    let end = r.len;
    let mut rest = Vec::new();
    let mut graph_proto = None;
    while r.pos < end {
        let (field, wire, head) = header(&mut r)?;
        if field == MODEL_GRAPH && wire == WIRE_LEN {
            if graph_proto.is_some() {
                return Err(decode_err("the model holds more than one graph"));
            }
            let n = length(&mut r, end, &mut Vec::new())?;
            let stop = r.pos + n;
            graph_proto = Some(graph(&mut r, stop, &file_name)?);
        } else {
            copy_field(&mut r, wire, end, head, &mut rest)?;
        }
    }
    let mut model = ModelProto::decode(rest.as_slice()).map_err(|e| decode_err(e.to_string()))?;
    model.graph = graph_proto;
    Ok(model)
}
