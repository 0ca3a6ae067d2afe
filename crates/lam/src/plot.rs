//! Loss curves as PNG, from a run's `metrics.jsonl`.

use std::path::Path;

use anyhow::{Context, Result, ensure};
use plotters::prelude::*;
use plotters::style::{FontStyle, register_font};
use serde_json::Value;

const FONT_PATHS: &[&str] = &[
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
];

fn ensure_font() -> Result<()> {
    static ONCE: std::sync::OnceLock<Result<(), String>> = std::sync::OnceLock::new();
    ONCE.get_or_init(|| {
        let path = FONT_PATHS
            .iter()
            .find(|p| Path::new(p).exists())
            .ok_or_else(|| {
                format!(
                    "no DejaVuSans.ttf in {FONT_PATHS:?}; run tools/setup.sh (fonts-dejavu-core)"
                )
            })?;
        let bytes: &'static [u8] = Box::leak(
            std::fs::read(path)
                .map_err(|e| e.to_string())?
                .into_boxed_slice(),
        );
        register_font("sans-serif", FontStyle::Normal, bytes)
            .map_err(|_| "font could not be registered".to_string())
    })
    .clone()
    .map_err(anyhow::Error::msg)
}

/// One named curve of (step, value) points.
pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
}

/// Reads curves `key` of records whose `split` is `split` from metrics.jsonl.
pub fn read_series(run: &Path, split: &str, key: &str) -> Result<Series> {
    let path = run.join(lam_data::metrics::METRICS_FILE);
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read {}", path.display()))?;
    let points = text
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|r| r["split"] == split)
        .filter_map(|r| Some((r["step"].as_f64()?, r[key].as_f64()?)))
        .collect();
    Ok(Series {
        name: format!("{split} {key}"),
        points,
    })
}

/// A short label for a log-scale tick: plain decimals between 0.001 and 10,000 (trailing
/// zeros dropped), scientific notation outside (the default label printed every digit, as in
/// "0.0000000001").
pub fn tick_label(v: f64) -> String {
    if v == 0.0 || !v.is_finite() {
        return format!("{v}");
    }
    let a = v.abs();
    if (1e-3..1e4).contains(&a) {
        let s = format!("{v:.4}");
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        format!("{v:.1e}")
    }
}

/// Draws the curves on a log-scale y axis.
pub fn line_plot(out: &Path, title: &str, series: &[Series]) -> Result<()> {
    ensure_font()?;
    let all: Vec<(f64, f64)> = series
        .iter()
        .flat_map(|s| s.points.iter().copied())
        .filter(|p| p.1 > 0.0)
        .collect();
    ensure!(!all.is_empty(), "nothing to plot for {}", out.display());
    let x_max = all.iter().map(|p| p.0).fold(1.0, f64::max);
    let y_min = all.iter().map(|p| p.1).fold(f64::INFINITY, f64::min) * 0.8;
    let y_max = all.iter().map(|p| p.1).fold(0.0, f64::max) * 1.25;
    let root = BitMapBackend::new(out, (900, 540)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(0.0..x_max, (y_min..y_max).log_scale())?;
    chart
        .configure_mesh()
        .x_desc("step")
        .y_desc("loss")
        .x_label_formatter(&|v| format!("{v:.0}"))
        .y_label_formatter(&|v| tick_label(*v))
        .draw()?;
    for (i, s) in series.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        chart
            .draw_series(LineSeries::new(
                s.points.iter().copied().filter(|p| p.1 > 0.0),
                color.stroke_width(2),
            ))?
            .label(s.name.clone())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
    }
    chart
        .configure_series_labels()
        .border_style(BLACK)
        .background_style(WHITE.mix(0.8))
        .draw()?;
    root.present()
        .with_context(|| format!("cannot write {}", out.display()))?;
    Ok(())
}

/// Train loss, train prediction loss and validation prediction loss of a run.
pub fn plot_run(run: &Path, out: &Path) -> Result<()> {
    let series = vec![
        read_series(run, "train", "loss")?,
        read_series(run, "train", "pred")?,
        read_series(run, "val", "pred")?,
    ];
    line_plot(out, "stage 1: latent action model", &series)
}

#[cfg(test)]
mod tests {
    use super::tick_label;

    #[test]
    fn log_scale_tick_labels_stay_short() {
        assert_eq!(tick_label(0.05), "0.05");
        assert_eq!(tick_label(2.0), "2");
        assert_eq!(tick_label(0.1234), "0.1234");
        assert_eq!(tick_label(1e-9), "1.0e-9");
        assert_eq!(tick_label(25000.0), "2.5e4");
    }
}
