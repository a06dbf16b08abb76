//! ONNX tensors (initializers, `Constant` values) decoded into import-time constants.
//!
//! Every size is checked against the declared dims *before* anything is allocated: a hostile
//! file can declare dims of 2^40 elements or a `raw_data` that disagrees with them.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Component, Path};

use super::Problem;
use super::proto::TensorProto;
use super::proto::tensor_proto::{DataLocation, DataType};
use crate::engine::tensor::MAX_ELEMENTS;

/// An integer known at import time: a plain number, or `k` times the (dynamic) batch size.
/// Shape arithmetic on `Shape(x)` yields the latter for the batch dimension.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Int {
    Known(i64),
    Batch(i64),
}

/// The elements of a constant: weights become `f32`, integer types stay exact for shape maths.
#[derive(Clone, Debug, PartialEq)]
pub enum Data {
    F32(Vec<f32>),
    I64(Vec<Int>),
}

/// A tensor whose value is known at import time.
#[derive(Clone, Debug, PartialEq)]
pub struct Const {
    pub dims: Vec<usize>,
    pub data: Data,
}

impl Const {
    pub fn f32(dims: Vec<usize>, v: Vec<f32>) -> Self {
        Self {
            dims,
            data: Data::F32(v),
        }
    }

    pub fn ints(dims: Vec<usize>, v: Vec<i64>) -> Self {
        Self {
            dims,
            data: Data::I64(v.into_iter().map(Int::Known).collect()),
        }
    }

    /// The elements as plain integers; `what` names the use in the error.
    pub fn to_i64(&self, what: &str) -> Result<Vec<i64>, Problem> {
        match &self.data {
            Data::F32(v) => Ok(v.iter().map(|&x| x as i64).collect()),
            Data::I64(v) => v
                .iter()
                .map(|i| match i {
                    Int::Known(k) => Ok(*k),
                    Int::Batch(_) => Err(Problem::Invalid(format!(
                        "{what} depends on the batch size, which is only known at run time"
                    ))),
                })
                .collect(),
        }
    }

    /// The elements as `f32`, without a copy when they already are.
    pub fn into_f32(self, what: &str) -> Result<Vec<f32>, Problem> {
        match self.data {
            Data::F32(v) => Ok(v),
            Data::I64(_) => self.to_f32(what),
        }
    }

    /// The elements as `f32` (weights, operands of arithmetic).
    pub fn to_f32(&self, what: &str) -> Result<Vec<f32>, Problem> {
        match &self.data {
            Data::F32(v) => Ok(v.clone()),
            Data::I64(_) => Ok(self.to_i64(what)?.into_iter().map(|k| k as f32).collect()),
        }
    }

    /// The single element of a scalar or one-element tensor.
    pub fn scalar_f32(&self, what: &str) -> Result<f32, Problem> {
        let v = self.to_f32(what)?;
        match v.as_slice() {
            [x] => Ok(*x),
            _ => Err(Problem::Invalid(format!(
                "{what} must hold one number, it has shape {:?}",
                self.dims
            ))),
        }
    }
}

/// Element count of declared dims, refusing negative dims and more than 2^32 elements.
pub fn checked_dims(name: &str, dims: &[i64]) -> Result<(Vec<usize>, usize), Problem> {
    let mut out = Vec::with_capacity(dims.len());
    let mut n: u128 = 1;
    for &d in dims {
        if d < 0 {
            return Err(Problem::Invalid(format!(
                "tensor '{name}' has a negative dimension in {dims:?}"
            )));
        }
        n = n.saturating_mul(d as u128);
        out.push(d as usize);
    }
    if n > MAX_ELEMENTS as u128 {
        return Err(Problem::Invalid(format!(
            "tensor '{name}' declares dims {dims:?} ({n} elements), more than the limit of 2^32"
        )));
    }
    Ok((out, n as usize))
}

/// Bytes per element in `raw_data` for the types we decode.
fn elem_size(dt: DataType) -> Option<usize> {
    Some(match dt {
        DataType::Float | DataType::Int32 | DataType::Uint32 => 4,
        DataType::Double | DataType::Int64 | DataType::Uint64 => 8,
        DataType::Float16 | DataType::Bfloat16 | DataType::Int16 | DataType::Uint16 => 2,
        DataType::Int8 | DataType::Uint8 | DataType::Bool => 1,
        _ => return None,
    })
}

fn is_float(dt: DataType) -> bool {
    matches!(
        dt,
        DataType::Float | DataType::Double | DataType::Float16 | DataType::Bfloat16
    )
}

/// IEEE half precision bits to f32.
fn f16_to_f32(h: u16) -> f32 {
    let sign = if h & 0x8000 != 0 { -1.0 } else { 1.0 };
    let exp = ((h >> 10) & 0x1f) as i32;
    let frac = (h & 0x3ff) as f32;
    match exp {
        0 => sign * frac * 2f32.powi(-24),
        31 if frac == 0.0 => sign * f32::INFINITY,
        31 => f32::NAN,
        _ => sign * (1.0 + frac / 1024.0) * 2f32.powi(exp - 15),
    }
}

fn bf16_to_f32(h: u16) -> f32 {
    f32::from_bits((h as u32) << 16)
}

/// One little-endian element of `raw_data` as f64 (floats) or i64 (integers).
enum Scalar {
    F(f64),
    I(i64),
}

fn decode_raw(dt: DataType, chunk: &[u8]) -> Scalar {
    let mut b8 = [0u8; 8];
    b8[..chunk.len()].copy_from_slice(chunk);
    let u = u64::from_le_bytes(b8);
    match dt {
        DataType::Float => Scalar::F(f32::from_bits(u as u32) as f64),
        DataType::Double => Scalar::F(f64::from_bits(u)),
        DataType::Float16 => Scalar::F(f16_to_f32(u as u16) as f64),
        DataType::Bfloat16 => Scalar::F(bf16_to_f32(u as u16) as f64),
        DataType::Int8 => Scalar::I(u as u8 as i8 as i64),
        DataType::Int16 => Scalar::I(u as u16 as i16 as i64),
        DataType::Int32 => Scalar::I(u as u32 as i32 as i64),
        DataType::Int64 => Scalar::I(u as i64),
        _ => Scalar::I(u as i64), // unsigned and bool
    }
}

fn collect(dt: DataType, dims: Vec<usize>, it: impl Iterator<Item = Scalar>) -> Const {
    if is_float(dt) {
        let v = it
            .map(|s| match s {
                Scalar::F(f) => f as f32,
                Scalar::I(i) => i as f32,
            })
            .collect();
        Const::f32(dims, v)
    } else {
        let v = it
            .map(|s| match s {
                Scalar::F(f) => f as i64,
                Scalar::I(i) => i,
            })
            .collect();
        Const::ints(dims, v)
    }
}

/// Decodes a tensor; `base_dir` is where external data files live (`None`: not allowed).
pub fn decode(t: &TensorProto, base_dir: Option<&Path>) -> Result<Const, Problem> {
    let name = t.name.clone().unwrap_or_default();
    let raw_type = t.data_type.unwrap_or(0);
    let dt = DataType::try_from(raw_type)
        .ok()
        .filter(|d| elem_size(*d).is_some())
        .ok_or_else(|| {
            let shown = DataType::try_from(raw_type).map(|d| d.as_str_name().to_string());
            Problem::Invalid(format!(
                "tensor '{name}' has data type {}, which the importer does not read",
                shown.unwrap_or_else(|_| raw_type.to_string())
            ))
        })?;
    let (dims, n) = checked_dims(&name, &t.dims)?;
    let size = elem_size(dt).unwrap_or(1);
    if t.data_location == Some(DataLocation::External as i32) {
        let file = open_external(t, &name, n * size, base_dir)?;
        return read_chunked(file, &name, dt, dims, n, size);
    }
    if let Some(raw) = &t.raw_data {
        if raw.len() != n * size {
            return Err(Problem::Invalid(format!(
                "tensor '{name}' declares dims {:?} ({n} elements of {size} bytes) but its raw_data holds {} bytes",
                t.dims,
                raw.len()
            )));
        }
        return Ok(collect(
            dt,
            dims,
            raw.chunks_exact(size).map(|c| decode_raw(dt, c)),
        ));
    }
    let typed_len = match dt {
        DataType::Float => t.float_data.len(),
        DataType::Double => t.double_data.len(),
        DataType::Int64 => t.int64_data.len(),
        DataType::Uint32 | DataType::Uint64 => t.uint64_data.len(),
        _ => t.int32_data.len(),
    };
    if typed_len != n {
        return Err(Problem::Invalid(format!(
            "tensor '{name}' declares dims {:?} ({n} elements) but holds {typed_len} values",
            t.dims
        )));
    }
    Ok(match dt {
        DataType::Float => Const::f32(dims, t.float_data.clone()),
        DataType::Double => Const::f32(dims, t.double_data.iter().map(|&x| x as f32).collect()),
        DataType::Float16 => Const::f32(
            dims,
            t.int32_data.iter().map(|&x| f16_to_f32(x as u16)).collect(),
        ),
        DataType::Bfloat16 => Const::f32(
            dims,
            t.int32_data
                .iter()
                .map(|&x| bf16_to_f32(x as u16))
                .collect(),
        ),
        DataType::Int64 => Const::ints(dims, t.int64_data.clone()),
        DataType::Uint32 | DataType::Uint64 => {
            Const::ints(dims, t.uint64_data.iter().map(|&x| x as i64).collect())
        }
        _ => Const::ints(dims, t.int32_data.iter().map(|&x| x as i64).collect()),
    })
}

/// Decodes `n` elements of `size` bytes from `file` in small chunks, so that a tensor is never
/// resident twice (as bytes and as numbers).
fn read_chunked(
    mut file: File,
    name: &str,
    dt: DataType,
    dims: Vec<usize>,
    n: usize,
    size: usize,
) -> Result<Const, Problem> {
    const CHUNK: usize = 1 << 16;
    let mut buf = vec![0u8; CHUNK * size];
    let mut left = n;
    let mut scalars: Vec<Scalar> = Vec::new();
    let mut floats: Vec<f32> = Vec::new();
    let float = is_float(dt);
    if float {
        floats.reserve_exact(n);
    } else {
        scalars.reserve_exact(n);
    }
    while left > 0 {
        let k = left.min(CHUNK);
        file.read_exact(&mut buf[..k * size]).map_err(|e| {
            Problem::Invalid(format!("tensor '{name}': reading its data failed ({e})"))
        })?;
        for c in buf[..k * size].chunks_exact(size) {
            match decode_raw(dt, c) {
                Scalar::F(f) if float => floats.push(f as f32),
                other => scalars.push(other),
            }
        }
        left -= k;
    }
    Ok(if float {
        Const::f32(dims, floats)
    } else {
        collect(dt, dims, scalars.into_iter())
    })
}

/// Opens the file holding an external-data tensor (inside `base_dir`), positioned at the
/// tensor's `expected` bytes.
fn open_external(
    t: &TensorProto,
    name: &str,
    expected: usize,
    base_dir: Option<&Path>,
) -> Result<File, Problem> {
    let entry = |key: &str| {
        t.external_data
            .iter()
            .find(|e| e.key.as_deref() == Some(key))
            .and_then(|e| e.value.clone())
    };
    let bad = |msg: String| Problem::Invalid(format!("tensor '{name}': {msg}"));
    let location =
        entry("location").ok_or_else(|| bad("external data without a location".into()))?;
    let number = |key: &str| -> Result<Option<u64>, Problem> {
        entry(key)
            .map(|s| {
                s.parse::<u64>()
                    .map_err(|_| bad(format!("external data {key} '{s}' is not a number")))
            })
            .transpose()
    };
    let offset = number("offset")?.unwrap_or(0);
    let length = number("length")?;
    if let Some(len) = length
        && len != expected as u64
    {
        if entry(super::stream::INLINE_KEY).is_some() {
            return Err(Problem::Invalid(format!(
                "tensor '{name}' declares dims {:?} ({expected} bytes) but its raw_data holds {len} bytes",
                t.dims
            )));
        }
        return Err(bad(format!(
            "external data length {len} does not match its dims {:?} ({expected} bytes)",
            t.dims
        )));
    }
    let base = base_dir
        .ok_or_else(|| bad("external data needs the model's directory, none was given".into()))?;
    let rel = Path::new(&location);
    if !rel
        .components()
        .all(|c| matches!(c, Component::Normal(_) | Component::CurDir))
    {
        return Err(bad(format!(
            "external data path '{location}' leaves the model's directory"
        )));
    }
    let path = base.join(rel);
    // Symlinks could still point outside: compare the resolved paths.
    let (canon_base, canon) = match (base.canonicalize(), path.canonicalize()) {
        (Ok(b), Ok(p)) => (b, p),
        _ => {
            return Err(bad(format!(
                "external data file '{}' cannot be opened",
                path.display()
            )));
        }
    };
    if !canon.starts_with(&canon_base) {
        return Err(bad(format!(
            "external data path '{location}' leaves the model's directory"
        )));
    }
    let io = |e: std::io::Error| bad(format!("external data file '{}': {e}", path.display()));
    let mut file = File::open(&canon).map_err(io)?;
    let file_len = file.metadata().map_err(io)?.len();
    if offset
        .checked_add(expected as u64)
        .is_none_or(|end| end > file_len)
    {
        return Err(bad(format!(
            "external data file '{}' holds {file_len} bytes, too few for {expected} bytes at offset {offset}",
            path.display()
        )));
    }
    file.seek(SeekFrom::Start(offset)).map_err(io)?;
    Ok(file)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn half_precision_decodes() {
        assert_eq!(f16_to_f32(0x3c00), 1.0);
        assert_eq!(f16_to_f32(0xc000), -2.0);
        assert_eq!(f16_to_f32(0x0001), 2f32.powi(-24));
        assert_eq!(bf16_to_f32(0x3f80), 1.0);
    }

    #[test]
    fn huge_dims_refused_before_allocation() {
        let err = checked_dims("w", &[1 << 20, 1 << 20]).unwrap_err();
        assert!(err.to_string().contains("2^32"), "{err}");
        assert!(checked_dims("w", &[2, -1]).is_err());
    }
}
