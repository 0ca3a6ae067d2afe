//! Small helpers for reading and writing Parquet tables through Arrow:
//! a column-by-column table builder and typed column getters whose errors
//! name the file and the column.

use anyhow::{Context as _, anyhow};
use arrow_array::cast::AsArray;
use arrow_array::types::{Float32Type, Float64Type, Int64Type};
use arrow_array::{
    Array, ArrayRef, BooleanArray, FixedSizeListArray, Float32Array, Float64Array, Int64Array,
    RecordBatch, StringArray,
    builder::{ListBuilder, StringBuilder},
};
use arrow_schema::{DataType, Field, Schema};
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;
use std::fs::File;
use std::path::Path;
use std::sync::Arc;

/// A table under construction, one column at a time.
#[derive(Default)]
pub struct TableBuilder {
    fields: Vec<Field>,
    columns: Vec<ArrayRef>,
}

impl TableBuilder {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    fn push(&mut self, name: &str, array: ArrayRef) {
        self.fields
            .push(Field::new(name, array.data_type().clone(), false));
        self.columns.push(array);
    }

    /// A 64-bit integer column.
    pub fn i64(&mut self, name: &str, v: Vec<i64>) -> &mut Self {
        self.push(name, Arc::new(Int64Array::from(v)));
        self
    }

    /// A 32-bit float column.
    pub fn f32(&mut self, name: &str, v: Vec<f32>) -> &mut Self {
        self.push(name, Arc::new(Float32Array::from(v)));
        self
    }

    /// A 64-bit float column.
    pub fn f64(&mut self, name: &str, v: Vec<f64>) -> &mut Self {
        self.push(name, Arc::new(Float64Array::from(v)));
        self
    }

    /// A boolean column.
    pub fn bool(&mut self, name: &str, v: Vec<bool>) -> &mut Self {
        self.push(name, Arc::new(BooleanArray::from(v)));
        self
    }

    /// A string column.
    pub fn str(&mut self, name: &str, v: Vec<String>) -> &mut Self {
        self.push(name, Arc::new(StringArray::from(v)));
        self
    }

    /// A list-of-strings column.
    pub fn str_list(&mut self, name: &str, v: Vec<Vec<String>>) -> &mut Self {
        let mut b = ListBuilder::new(StringBuilder::new());
        for row in v {
            for s in row {
                b.values().append_value(s);
            }
            b.append(true);
        }
        self.push(name, Arc::new(b.finish()));
        self
    }

    /// A fixed-size list of 32-bit floats: `flat` holds `width` numbers per row.
    pub fn f32_vectors(&mut self, name: &str, width: usize, flat: Vec<f32>) -> &mut Self {
        let field = Arc::new(Field::new_list_field(DataType::Float32, true));
        let values: ArrayRef = Arc::new(Float32Array::from(flat));
        self.push(
            name,
            Arc::new(FixedSizeListArray::new(field, width as i32, values, None)),
        );
        self
    }

    /// Writes the table to `path` (zstd-compressed Parquet).
    pub fn write(&self, path: &Path) -> anyhow::Result<()> {
        let schema = Arc::new(Schema::new(self.fields.clone()));
        let batch = RecordBatch::try_new(schema.clone(), self.columns.clone())
            .with_context(|| format!("inconsistent columns for {}", path.display()))?;
        let file =
            File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
        let props = WriterProperties::builder()
            .set_compression(Compression::ZSTD(ZstdLevel::default()))
            .build();
        let mut w = ArrowWriter::try_new(file, schema, Some(props))?;
        w.write(&batch)
            .with_context(|| format!("cannot write {}", path.display()))?;
        w.close()
            .with_context(|| format!("cannot finish {}", path.display()))?;
        Ok(())
    }
}

/// A Parquet table read into memory, with the file name for errors.
pub struct Table {
    path: String,
    batches: Vec<RecordBatch>,
}

impl Table {
    /// Reads every row group of `path`.
    pub fn read(path: &Path) -> anyhow::Result<Self> {
        // The parquet crate asserts on some corrupt metadata (a negative column offset)
        // instead of returning an error: such a panic is this file's error.
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| Self::read_file(path)))
            .unwrap_or_else(|panic| {
                let why = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_default();
                anyhow::bail!("corrupt Parquet file {}: {why}", path.display())
            })
    }

    fn read_file(path: &Path) -> anyhow::Result<Self> {
        anyhow::ensure!(path.is_file(), "file {} does not exist", path.display());
        let file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
        let reader = ParquetRecordBatchReaderBuilder::try_new(file)
            .with_context(|| format!("{} is not a readable Parquet file", path.display()))?
            .build()?;
        let batches = reader
            .collect::<Result<Vec<_>, _>>()
            .with_context(|| format!("corrupt Parquet data in {}", path.display()))?;
        Ok(Self {
            path: path.display().to_string(),
            batches,
        })
    }

    /// Whether the table has a column `name`.
    pub fn has(&self, name: &str) -> bool {
        self.batches
            .first()
            .is_some_and(|b| b.column_by_name(name).is_some())
    }

    fn columns(&self, name: &str) -> anyhow::Result<Vec<&ArrayRef>> {
        self.batches
            .iter()
            .map(|b| {
                b.column_by_name(name)
                    .ok_or_else(|| anyhow!("{} has no column {name:?}", self.path))
            })
            .collect()
    }

    fn wrong(&self, name: &str, want: &str) -> anyhow::Error {
        anyhow!("column {name:?} of {} is not {want}", self.path)
    }

    /// An integer column (int64).
    pub fn i64(&self, name: &str) -> anyhow::Result<Vec<i64>> {
        let mut out = Vec::new();
        for c in self.columns(name)? {
            let a = c
                .as_primitive_opt::<Int64Type>()
                .ok_or_else(|| self.wrong(name, "int64"))?;
            out.extend(a.values().iter().copied());
        }
        Ok(out)
    }

    /// A float column (float32, or float64 narrowed).
    pub fn f64(&self, name: &str) -> anyhow::Result<Vec<f64>> {
        let mut out = Vec::new();
        for c in self.columns(name)? {
            if let Some(a) = c.as_primitive_opt::<Float64Type>() {
                out.extend(a.values().iter().copied());
            } else if let Some(a) = c.as_primitive_opt::<Float32Type>() {
                out.extend(a.values().iter().map(|&x| x as f64));
            } else {
                return Err(self.wrong(name, "a float"));
            }
        }
        Ok(out)
    }

    /// A boolean column.
    pub fn bool(&self, name: &str) -> anyhow::Result<Vec<bool>> {
        let mut out = Vec::new();
        for c in self.columns(name)? {
            let a = c
                .as_boolean_opt()
                .ok_or_else(|| self.wrong(name, "boolean"))?;
            out.extend(a.iter().map(|x| x.unwrap_or(false)));
        }
        Ok(out)
    }

    /// A string column.
    pub fn str(&self, name: &str) -> anyhow::Result<Vec<String>> {
        let mut out = Vec::new();
        for c in self.columns(name)? {
            if let Some(a) = c.as_string_opt::<i32>() {
                out.extend(a.iter().map(|s| s.unwrap_or("").to_string()));
            } else if let Some(a) = c.as_string_opt::<i64>() {
                out.extend(a.iter().map(|s| s.unwrap_or("").to_string()));
            } else {
                return Err(self.wrong(name, "a string"));
            }
        }
        Ok(out)
    }

    /// A list-of-strings column.
    pub fn str_list(&self, name: &str) -> anyhow::Result<Vec<Vec<String>>> {
        let mut out = Vec::new();
        for c in self.columns(name)? {
            let l = c
                .as_list_opt::<i32>()
                .ok_or_else(|| self.wrong(name, "a list of strings"))?;
            for row in l.iter() {
                let row =
                    row.ok_or_else(|| anyhow!("null list in column {name:?} of {}", self.path))?;
                let s = row
                    .as_string_opt::<i32>()
                    .ok_or_else(|| self.wrong(name, "a list of strings"))?;
                out.push(s.iter().map(|x| x.unwrap_or("").to_string()).collect());
            }
        }
        Ok(out)
    }

    /// A fixed-size list column of float32 (or float64), one vector per row.
    pub fn f32_vectors(&self, name: &str) -> anyhow::Result<Vec<Vec<f32>>> {
        let mut out = Vec::new();
        for c in self.columns(name)? {
            let l = c
                .as_fixed_size_list_opt()
                .ok_or_else(|| self.wrong(name, "a fixed-size list"))?;
            for r in 0..l.len() {
                let row = l.value(r);
                if let Some(a) = row.as_primitive_opt::<Float32Type>() {
                    out.push(a.values().to_vec());
                } else if let Some(a) = row.as_primitive_opt::<Float64Type>() {
                    out.push(a.values().iter().map(|&x| x as f32).collect());
                } else {
                    return Err(self.wrong(name, "a list of floats"));
                }
            }
        }
        Ok(out)
    }
}
