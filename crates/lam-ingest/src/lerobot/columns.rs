//! Reading selected parquet columns into plain vectors.
//!
//! LeRobot files store scalars as Arrow Float32/Float64/Int64 (sometimes
//! other widths) and vectors as FixedSizeList (sometimes List) of floats;
//! these helpers accept all of those.

use crate::error::{IngestError, Result};
use arrow_array::{
    Array, ArrayRef, BooleanArray, FixedSizeListArray, Float16Array, Float32Array, Float64Array,
    Int8Array, Int16Array, Int32Array, Int64Array, LargeListArray, LargeStringArray, ListArray,
    RecordBatch, StringArray, StringViewArray, UInt8Array, UInt16Array, UInt32Array, UInt64Array,
};
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use std::collections::HashMap;
use std::path::Path;

/// Named columns of one parquet file, each concatenated over its row groups.
pub struct Columns {
    path: std::path::PathBuf,
    rows: usize,
    columns: HashMap<String, Vec<ArrayRef>>,
}

impl Columns {
    /// Reads the columns of `path` named in `wanted` that exist (absent ones
    /// are simply not there; [`Columns::has`] tells).
    pub fn read(path: &Path, wanted: &[&str]) -> Result<Columns> {
        // The parquet crate asserts on some corrupt metadata (a negative column offset)
        // instead of returning an error: such a panic is this file's error.
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            Self::read_file(path, wanted)
        }))
        .unwrap_or_else(|panic| {
            let why = crate::error::panic_message(panic.as_ref()).unwrap_or_default();
            Err(IngestError::dataset(
                path,
                format!("corrupt Parquet file: {why}"),
            ))
        })
    }

    fn read_file(path: &Path, wanted: &[&str]) -> Result<Columns> {
        let pq = |source| IngestError::Parquet {
            path: path.to_path_buf(),
            source,
        };
        let file = std::fs::File::open(path).map_err(|e| IngestError::io(path, e))?;
        let builder = ParquetRecordBatchReaderBuilder::try_new(file).map_err(pq)?;
        let schema = builder.schema().clone();
        let picked: Vec<(usize, String)> = schema
            .fields()
            .iter()
            .enumerate()
            .filter(|(_, f)| wanted.contains(&f.name().as_str()))
            .map(|(i, f)| (i, f.name().clone()))
            .collect();
        let mask = ProjectionMask::roots(builder.parquet_schema(), picked.iter().map(|(i, _)| *i));
        let reader = builder
            .with_projection(mask)
            .with_batch_size(65_536)
            .build()
            .map_err(pq)?;
        let mut columns: HashMap<String, Vec<ArrayRef>> = picked
            .iter()
            .map(|(_, n)| (n.clone(), Vec::new()))
            .collect();
        let mut rows = 0;
        for batch in reader {
            let batch: RecordBatch =
                batch.map_err(|e| IngestError::dataset(path, format!("parquet: {e}")))?;
            rows += batch.num_rows();
            for (name, arrays) in columns.iter_mut() {
                if let Some(a) = batch.column_by_name(name) {
                    arrays.push(a.clone());
                }
            }
        }
        Ok(Columns {
            path: path.to_path_buf(),
            rows,
            columns,
        })
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    pub fn has(&self, name: &str) -> bool {
        self.columns.contains_key(name)
    }

    fn arrays(&self, name: &str) -> Result<&[ArrayRef]> {
        self.columns
            .get(name)
            .map(|v| v.as_slice())
            .ok_or_else(|| IngestError::dataset(&self.path, format!("no column {name:?}")))
    }

    fn bad(&self, name: &str, what: &str, a: &dyn Array) -> IngestError {
        IngestError::dataset(
            &self.path,
            format!("column {name:?}: expected {what}, found {}", a.data_type()),
        )
    }

    /// An integer column; nulls are an error.
    pub fn ints(&self, name: &str) -> Result<Vec<i64>> {
        let mut out = Vec::with_capacity(self.rows);
        for a in self.arrays(name)? {
            if a.null_count() > 0 {
                return Err(IngestError::dataset(
                    &self.path,
                    format!("column {name:?} has null values"),
                ));
            }
            ints_into(a.as_ref(), &mut out)
                .ok_or_else(|| self.bad(name, "integers", a.as_ref()))?;
        }
        Ok(out)
    }

    /// A boolean column; nulls are an error.
    pub fn bools(&self, name: &str) -> Result<Vec<bool>> {
        let mut out = Vec::with_capacity(self.rows);
        for a in self.arrays(name)? {
            let b = a
                .as_any()
                .downcast_ref::<BooleanArray>()
                .ok_or_else(|| self.bad(name, "booleans", a.as_ref()))?;
            if b.null_count() > 0 {
                return Err(IngestError::dataset(
                    &self.path,
                    format!("column {name:?} has null values"),
                ));
            }
            out.extend(b.values().iter());
        }
        Ok(out)
    }

    /// A numeric column as f64; nulls become NaN.
    pub fn floats(&self, name: &str) -> Result<Vec<f64>> {
        let mut out = Vec::with_capacity(self.rows);
        for a in self.arrays(name)? {
            floats_into(a.as_ref(), &mut out)
                .ok_or_else(|| self.bad(name, "numbers", a.as_ref()))?;
        }
        Ok(out)
    }

    /// A vector column (fixed-size or variable list of numbers, or plain
    /// numbers as 1-vectors) as a row-major matrix; every row must have the
    /// same length.
    pub fn matrix(&self, name: &str) -> Result<super::Matrix> {
        let mut data = Vec::new();
        let mut cols: Option<usize> = None;
        let mut rows = 0;
        for a in self.arrays(name)? {
            let a = a.as_ref();
            let mut push_rows =
                |lens: &mut dyn Iterator<Item = usize>, values: &dyn Array| -> Result<()> {
                    let mut flat = Vec::new();
                    floats_into(values, &mut flat)
                        .ok_or_else(|| self.bad(name, "lists of numbers", a))?;
                    let mut at = 0;
                    for len in lens {
                        if *cols.get_or_insert(len) != len {
                            return Err(IngestError::dataset(
                                &self.path,
                                format!(
                                    "column {name:?}: rows of different lengths ({} and {len})",
                                    cols.unwrap_or(0)
                                ),
                            ));
                        }
                        data.extend(flat[at..at + len].iter().map(|&v| v as f32));
                        at += len;
                        rows += 1;
                    }
                    Ok(())
                };
            if let Some(l) = a.as_any().downcast_ref::<FixedSizeListArray>() {
                let n = l.value_length() as usize;
                let values = l.values().slice(l.offset() * n, l.len() * n);
                push_rows(&mut (0..l.len()).map(|_| n), values.as_ref())?;
            } else if let Some(l) = a.as_any().downcast_ref::<ListArray>() {
                let off = l.value_offsets();
                let (start, end) = (off[0] as usize, off[l.len()] as usize);
                let values = l.values().slice(start, end - start);
                push_rows(
                    &mut off.windows(2).map(|w| (w[1] - w[0]) as usize),
                    values.as_ref(),
                )?;
            } else if let Some(l) = a.as_any().downcast_ref::<LargeListArray>() {
                let off = l.value_offsets();
                let (start, end) = (off[0] as usize, off[l.len()] as usize);
                let values = l.values().slice(start, end - start);
                push_rows(
                    &mut off.windows(2).map(|w| (w[1] - w[0]) as usize),
                    values.as_ref(),
                )?;
            } else {
                push_rows(&mut (0..a.len()).map(|_| 1), a)?;
            }
        }
        Ok(super::Matrix {
            rows,
            cols: cols.unwrap_or(0),
            data,
        })
    }

    /// A list-of-strings column (episode tasks); a plain string column gives
    /// one-element lists.
    pub fn string_lists(&self, name: &str) -> Result<Vec<Vec<String>>> {
        let mut out = Vec::with_capacity(self.rows);
        for a in self.arrays(name)? {
            let a = a.as_ref();
            let lists: Vec<Option<ArrayRef>> =
                if let Some(l) = a.as_any().downcast_ref::<ListArray>() {
                    (0..l.len())
                        .map(|i| l.is_valid(i).then(|| l.value(i)))
                        .collect()
                } else if let Some(l) = a.as_any().downcast_ref::<LargeListArray>() {
                    (0..l.len())
                        .map(|i| l.is_valid(i).then(|| l.value(i)))
                        .collect()
                } else {
                    let s = strings(a).ok_or_else(|| self.bad(name, "strings", a))?;
                    out.extend(s.into_iter().map(|x| x.into_iter().collect()));
                    continue;
                };
            for l in lists {
                match l {
                    None => out.push(Vec::new()),
                    Some(v) => out.push(
                        strings(v.as_ref())
                            .ok_or_else(|| self.bad(name, "lists of strings", a))?
                            .into_iter()
                            .flatten()
                            .collect(),
                    ),
                }
            }
        }
        Ok(out)
    }
}

fn strings(a: &dyn Array) -> Option<Vec<Option<String>>> {
    let any = a.as_any();
    if let Some(s) = any.downcast_ref::<StringArray>() {
        Some(s.iter().map(|x| x.map(String::from)).collect())
    } else if let Some(s) = any.downcast_ref::<LargeStringArray>() {
        Some(s.iter().map(|x| x.map(String::from)).collect())
    } else {
        any.downcast_ref::<StringViewArray>()
            .map(|s| s.iter().map(|x| x.map(String::from)).collect())
    }
}

macro_rules! try_prim {
    ($a:expr, $out:expr, $conv:expr, $($t:ty),*) => {
        $(
            if let Some(x) = $a.as_any().downcast_ref::<$t>() {
                $out.extend(x.iter().map($conv));
                return Some(());
            }
        )*
    };
}

fn ints_into(a: &dyn Array, out: &mut Vec<i64>) -> Option<()> {
    try_prim!(
        a,
        out,
        |v: Option<_>| v.map_or(0, i64::from),
        Int8Array,
        Int16Array,
        Int32Array,
        Int64Array,
        UInt8Array,
        UInt16Array,
        UInt32Array
    );
    if let Some(x) = a.as_any().downcast_ref::<UInt64Array>() {
        out.extend(x.iter().map(|v| v.map_or(0, |v| v as i64)));
        return Some(());
    }
    None
}

fn floats_into(a: &dyn Array, out: &mut Vec<f64>) -> Option<()> {
    try_prim!(
        a,
        out,
        |v: Option<_>| v.map_or(f64::NAN, f64::from),
        Float32Array,
        Float64Array,
        Int8Array,
        Int16Array,
        Int32Array,
        UInt8Array,
        UInt16Array,
        UInt32Array
    );
    if let Some(x) = a.as_any().downcast_ref::<Float16Array>() {
        out.extend(
            x.iter()
                .map(|v| v.map_or(f64::NAN, |v| f64::from(v.to_f32()))),
        );
        return Some(());
    }
    if let Some(x) = a.as_any().downcast_ref::<Int64Array>() {
        out.extend(x.iter().map(|v| v.map_or(f64::NAN, |v| v as f64)));
        return Some(());
    }
    if let Some(x) = a.as_any().downcast_ref::<UInt64Array>() {
        out.extend(x.iter().map(|v| v.map_or(f64::NAN, |v| v as f64)));
        return Some(());
    }
    if let Some(x) = a.as_any().downcast_ref::<arrow_array::BooleanArray>() {
        out.extend(
            x.iter()
                .map(|v| v.map_or(f64::NAN, |b| if b { 1.0 } else { 0.0 })),
        );
        return Some(());
    }
    None
}
