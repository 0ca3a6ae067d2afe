//! The wire format: every message is one binary WebSocket message holding one msgpack map.
//!
//! Request: `{"call": "info" | "reset" | "act", "id": any (optional, echoed back), ...}`.
//!
//! - `info`: no other fields.
//! - `reset`: `goal` (image, optional), `instruction` (string, optional), `seed` (integer,
//!   optional: seeds the planner's or the diffusion head's draws for this episode).
//! - `act`: `image` (the current observation), `state` (1-D array, optional).
//!
//! Reply: `{"ok": true, "call": ..., "id": ..., ...}` or
//! `{"ok": false, "call": ..., "id": ..., "error": "what is wrong"}`.
//!
//! Arrays travel the way numpy describes them: `{"dtype": "uint8", "shape": [H, W, 3],
//! "data": <bytes, C order, little endian>}`. dtype is a numpy name (`uint8`, `float32`,
//! `float64`, `int32`, `int64`) or its array-protocol string (`|u1`, `<f4`, `<f8`, `<i4`,
//! `<i8`). Images are RGB `[H, W, 3]` (or `[1, H, W, 3]`) of any size: `uint8` in 0..=255
//! or a float dtype in 0..=1.

use rmpv::Value;

/// Version of this message format, reported by `info`.
pub const PROTOCOL_VERSION: u64 = 1;

/// A request whose envelope (`call`, `id`) has been read.
#[derive(Debug)]
pub struct Request {
    pub call: String,
    pub id: Option<Value>,
    /// Every other field, by name.
    pub fields: Vec<(String, Value)>,
}

/// What went wrong with a request, with whatever of its envelope could be read.
#[derive(Debug)]
pub struct RequestError {
    pub call: Option<String>,
    pub id: Option<Value>,
    pub message: String,
}

/// Element types accepted in arrays.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dtype {
    U8,
    I32,
    I64,
    F32,
    F64,
}

impl Dtype {
    pub fn parse(s: &str) -> Result<Self, String> {
        Ok(match s {
            "uint8" | "|u1" | "u1" | "<u1" => Self::U8,
            "int32" | "<i4" | "i4" => Self::I32,
            "int64" | "<i8" | "i8" => Self::I64,
            "float32" | "<f4" | "f4" => Self::F32,
            "float64" | "<f8" | "f8" => Self::F64,
            s if s.starts_with('>') => {
                return Err(format!(
                    "dtype `{s}` is big-endian; send little-endian data (numpy: arr.astype(arr.dtype.newbyteorder('<')))"
                ));
            }
            s => {
                return Err(format!(
                    "dtype `{s}` is not supported (expected uint8, int32, int64, float32 or float64)"
                ));
            }
        })
    }

    pub fn size(self) -> usize {
        match self {
            Self::U8 => 1,
            Self::I32 | Self::F32 => 4,
            Self::I64 | Self::F64 => 8,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::U8 => "uint8",
            Self::I32 => "int32",
            Self::I64 => "int64",
            Self::F32 => "float32",
            Self::F64 => "float64",
        }
    }

    fn is_float(self) -> bool {
        matches!(self, Self::F32 | Self::F64)
    }
}

/// A decoded array.
#[derive(Debug)]
pub struct Array {
    pub dtype: Dtype,
    pub shape: Vec<usize>,
    pub data: Vec<u8>,
}

impl Array {
    /// Reads the `{dtype, shape, data}` map of field `field`.
    pub fn from_value(field: &str, v: Value) -> Result<Self, String> {
        let Value::Map(entries) = v else {
            return Err(format!(
                "`{field}` must be an array map {{dtype, shape, data}}, got {}",
                kind(&v)
            ));
        };
        let (mut dtype, mut shape, mut data) = (None, None, None);
        for (k, v) in entries {
            match k.as_str() {
                Some("dtype") => {
                    let s = v
                        .as_str()
                        .ok_or_else(|| format!("`{field}.dtype` must be a string"))?;
                    dtype = Some(Dtype::parse(s).map_err(|e| format!("`{field}`: {e}"))?);
                }
                Some("shape") => {
                    let dims = v
                        .as_array()
                        .ok_or_else(|| format!("`{field}.shape` must be a list of integers"))?;
                    let mut s = Vec::with_capacity(dims.len());
                    for d in dims {
                        let d = d.as_u64().ok_or_else(|| {
                            format!("`{field}.shape` must hold non-negative integers, got {d}")
                        })?;
                        s.push(usize::try_from(d).map_err(|_| {
                            format!("`{field}.shape` has a dimension {d} that is too large")
                        })?);
                    }
                    shape = Some(s);
                }
                Some("data") => match v {
                    Value::Binary(b) => data = Some(b),
                    other => {
                        return Err(format!(
                            "`{field}.data` must be bytes (msgpack bin), got {}",
                            kind(&other)
                        ));
                    }
                },
                Some(other) => {
                    return Err(format!(
                        "`{field}` has an unknown key `{other}` (expected dtype, shape, data)"
                    ));
                }
                None => return Err(format!("`{field}` has a key that is not a string")),
            }
        }
        let dtype = dtype.ok_or_else(|| format!("`{field}` has no `dtype`"))?;
        let shape = shape.ok_or_else(|| format!("`{field}` has no `shape`"))?;
        let data = data.ok_or_else(|| format!("`{field}` has no `data`"))?;
        let count = shape
            .iter()
            .try_fold(1usize, |a, &d| a.checked_mul(d))
            .ok_or_else(|| format!("`{field}.shape` {shape:?} overflows"))?;
        let want = count.saturating_mul(dtype.size());
        if data.len() != want {
            return Err(format!(
                "`{field}` is {} {shape:?}, which takes {want} bytes, but `data` has {}",
                dtype.name(),
                data.len()
            ));
        }
        Ok(Self { dtype, shape, data })
    }

    /// The values as f64 (little-endian decode).
    fn values(&self) -> Vec<f64> {
        let d = &self.data;
        match self.dtype {
            Dtype::U8 => d.iter().map(|&v| v as f64).collect(),
            Dtype::I32 => d
                .chunks_exact(4)
                .map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]) as f64)
                .collect(),
            Dtype::I64 => d
                .chunks_exact(8)
                .map(|c| i64::from_le_bytes(c.try_into().expect("8 bytes")) as f64)
                .collect(),
            Dtype::F32 => d
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]) as f64)
                .collect(),
            Dtype::F64 => d
                .chunks_exact(8)
                .map(|c| f64::from_le_bytes(c.try_into().expect("8 bytes")))
                .collect(),
        }
    }
}

/// An RGB frame in its native size, row-major `height x width x 3` bytes.
#[derive(Clone, Debug)]
pub struct Image {
    pub width: usize,
    pub height: usize,
    pub rgb: Vec<u8>,
}

/// Largest image side accepted, in pixels. Frames are cropped to a centred square and
/// resized to the encoder's input (at most a few hundred pixels), so nothing larger is
/// useful, and an extreme shape such as 5,000,000 x 1 would cost the resize unbounded
/// memory or minutes of CPU.
pub const MAX_IMAGE_SIDE: usize = 4096;

/// Reads an RGB image from field `field`.
pub fn image(field: &str, v: Value) -> Result<Image, String> {
    let a = Array::from_value(field, v)?;
    let (h, w) = match a.shape.as_slice() {
        [h, w, 3] | [1, h, w, 3] => (*h, *w),
        s => {
            return Err(format!(
                "`{field}` has shape {s:?}; expected an RGB image [height, width, 3] (or [1, height, width, 3])"
            ));
        }
    };
    if h == 0 || w == 0 {
        return Err(format!("`{field}` is empty ({h}x{w})"));
    }
    if h > MAX_IMAGE_SIDE || w > MAX_IMAGE_SIDE {
        return Err(format!(
            "`{field}` is {h}x{w}; images may be at most {MAX_IMAGE_SIDE} pixels on a side (send frames near the encoder's input size)"
        ));
    }
    let rgb = match a.dtype {
        Dtype::U8 => a.data,
        d if d.is_float() => {
            let vals = a.values();
            let mut out = Vec::with_capacity(vals.len());
            for (i, v) in vals.iter().enumerate() {
                if !(0.0..=1.0).contains(v) {
                    return Err(format!(
                        "`{field}` is {} with value {v} at flat index {i}; float images must be in [0, 1] (or send uint8 0..255)",
                        d.name()
                    ));
                }
                out.push((v * 255.0).round() as u8);
            }
            out
        }
        d => {
            return Err(format!(
                "`{field}` has dtype {}; images must be uint8 (0..255) or float32/float64 (0..1)",
                d.name()
            ));
        }
    };
    Ok(Image {
        width: w,
        height: h,
        rgb,
    })
}

/// Reads a 1-D numeric vector from field `field` (e.g. a proprioceptive state).
pub fn vector(field: &str, v: Value) -> Result<Vec<f32>, String> {
    let a = Array::from_value(field, v)?;
    if a.shape.len() != 1 {
        return Err(format!(
            "`{field}` has shape {:?}; expected a 1-D vector",
            a.shape
        ));
    }
    let vals = a.values();
    if let Some(i) = vals.iter().position(|v| !v.is_finite()) {
        return Err(format!(
            "`{field}` holds a non-finite value {} at index {i}",
            vals[i]
        ));
    }
    Ok(vals.into_iter().map(|v| v as f32).collect())
}

/// A float32 array value.
pub fn f32_array(shape: &[usize], values: &[f32]) -> Value {
    debug_assert_eq!(shape.iter().product::<usize>(), values.len());
    let mut data = Vec::with_capacity(values.len() * 4);
    for v in values {
        data.extend_from_slice(&v.to_le_bytes());
    }
    map(vec![
        ("dtype", Value::from("float32")),
        (
            "shape",
            Value::Array(shape.iter().map(|&d| Value::from(d as u64)).collect()),
        ),
        ("data", Value::Binary(data)),
    ])
}

/// A msgpack map with string keys.
pub fn map(pairs: Vec<(&str, Value)>) -> Value {
    Value::Map(
        pairs
            .into_iter()
            .map(|(k, v)| (Value::from(k), v))
            .collect(),
    )
}

/// A short description of a value's msgpack type, for error messages.
pub fn kind(v: &Value) -> &'static str {
    match v {
        Value::Nil => "nil",
        Value::Boolean(_) => "a boolean",
        Value::Integer(_) => "an integer",
        Value::F32(_) | Value::F64(_) => "a float",
        Value::String(_) => "a string",
        Value::Binary(_) => "bytes",
        Value::Array(_) => "a list",
        Value::Map(_) => "a map",
        Value::Ext(..) => "an extension value",
    }
}

/// Decodes one request message.
pub fn parse_request(bytes: &[u8]) -> Result<Request, RequestError> {
    let err = |call: Option<String>, id: Option<Value>, message: String| RequestError {
        call,
        id,
        message,
    };
    let mut cursor = bytes;
    let value = rmpv::decode::read_value_with_max_depth(&mut cursor, 16).map_err(|e| {
        err(
            None,
            None,
            format!("malformed msgpack ({} bytes): {e}", bytes.len()),
        )
    })?;
    if !cursor.is_empty() {
        return Err(err(
            None,
            None,
            format!(
                "malformed msgpack: {} trailing bytes after the request map",
                cursor.len()
            ),
        ));
    }
    let Value::Map(entries) = value else {
        return Err(err(
            None,
            None,
            format!(
                "a request must be a msgpack map with a `call` key, got {}",
                kind(&value)
            ),
        ));
    };
    let mut call = None;
    let mut id = None;
    let mut fields = Vec::new();
    let mut bad_key = None;
    for (k, v) in entries {
        match k.as_str() {
            Some("call") => call = Some(v),
            Some("id") => id = Some(v),
            Some(name) => fields.push((name.to_string(), v)),
            None => bad_key = Some(format!("a request key is {}, not a string", kind(&k))),
        }
    }
    let call = match call {
        Some(Value::String(s)) if s.as_str().is_some() => s.into_str().expect("checked"),
        Some(other) => {
            return Err(err(
                None,
                id,
                format!("`call` must be a string, got {}", kind(&other)),
            ));
        }
        None => {
            return Err(err(
                None,
                id,
                "the request has no `call` (expected info, reset or act)".into(),
            ));
        }
    };
    if let Some(m) = bad_key {
        return Err(err(Some(call), id, m));
    }
    Ok(Request { call, id, fields })
}

/// Encodes a reply.
pub fn encode(v: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    rmpv::encode::write_value(&mut out, v).expect("writing to a Vec cannot fail");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn arr(dtype: &str, shape: &[u64], data: Vec<u8>) -> Value {
        map(vec![
            ("dtype", Value::from(dtype)),
            (
                "shape",
                Value::Array(shape.iter().map(|&d| Value::from(d)).collect()),
            ),
            ("data", Value::Binary(data)),
        ])
    }

    #[test]
    fn images_decode_and_bad_ones_are_named() {
        let img = image("image", arr("uint8", &[2, 3, 3], vec![7; 18])).unwrap();
        assert_eq!((img.width, img.height, img.rgb.len()), (3, 2, 18));
        let f: Vec<u8> = [0.0f32, 1.0, 0.5]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        let img = image("image", arr("<f4", &[1, 1, 1, 3], f)).unwrap();
        assert_eq!(img.rgb, vec![0, 255, 128]);
        let e = image("image", arr("uint8", &[2, 3], vec![0; 6])).unwrap_err();
        assert!(
            e.contains("[2, 3]") && e.contains("[height, width, 3]"),
            "{e}"
        );
        let e = image("image", arr("uint8", &[2, 3, 3], vec![0; 5])).unwrap_err();
        assert!(e.contains("18 bytes") && e.contains("has 5"), "{e}");
        let e = image("image", arr("int16", &[1, 1, 3], vec![0; 6])).unwrap_err();
        assert!(e.contains("int16"), "{e}");
        let e = image("image", arr("int64", &[1, 1, 3], vec![0; 24])).unwrap_err();
        assert!(e.contains("int64"), "{e}");
        let e = image(
            "image",
            arr("uint8", &[5_000_000, 1, 3], vec![0; 15_000_000]),
        )
        .unwrap_err();
        assert!(e.contains("5000000x1") && e.contains("4096"), "{e}");
        let e = image(
            "image",
            arr("uint8", &[1, 5_000_000, 3], vec![0; 15_000_000]),
        )
        .unwrap_err();
        assert!(e.contains("1x5000000"), "{e}");
        let e = image("goal", Value::from(3)).unwrap_err();
        assert!(e.contains("`goal`") && e.contains("an integer"), "{e}");
    }

    #[test]
    fn requests_parse_and_malformed_ones_are_errors() {
        let msg = encode(&map(vec![
            ("call", Value::from("act")),
            ("id", Value::from(4)),
            ("image", Value::Nil),
        ]));
        let r = parse_request(&msg).unwrap();
        assert_eq!(r.call, "act");
        assert_eq!(r.fields.len(), 1);
        let e = parse_request(&[0xc1, 0x00]).unwrap_err();
        assert!(e.message.contains("malformed msgpack"), "{}", e.message);
        let e = parse_request(&encode(&Value::from(3))).unwrap_err();
        assert!(e.message.contains("map"), "{}", e.message);
        let e = parse_request(&encode(&map(vec![("id", Value::from(1))]))).unwrap_err();
        assert!(e.message.contains("no `call`"), "{}", e.message);
        assert_eq!(e.id, Some(Value::from(1)));
    }
}
