//! Writing Parquet tables through Arrow, a column at a time (lam's recordings). Reading is
//! [`crate::lerobot`]'s (`Columns`), for every LeRobot dataset alike.

use anyhow::Context as _;
use arrow_array::{
    Array, ArrayRef, BooleanArray, FixedSizeListArray, Float32Array, Float64Array, Int64Array,
    RecordBatch, StringArray,
    builder::{ListBuilder, StringBuilder},
};
use arrow_schema::{DataType, Field, Schema};
use parquet::arrow::ArrowWriter;
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
