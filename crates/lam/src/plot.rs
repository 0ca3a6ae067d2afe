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

/// The records of a run's metrics.jsonl.
fn read_records(run: &Path) -> Result<Vec<Value>> {
    let path = run.join(lam_data::metrics::METRICS_FILE);
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read {}", path.display()))?;
    Ok(text
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .collect())
}

/// The curve of `key` (a dotted path into the record, e.g. `stats.frames.effective_rank`) over
/// the records whose `split` is `split`.
fn series_of(records: &[Value], split: &str, key: &str) -> Series {
    let pointer = format!("/{}", key.replace('.', "/"));
    let points = records
        .iter()
        .filter(|r| r["split"] == split)
        .filter_map(|r| Some((r["step"].as_f64()?, r.pointer(&pointer)?.as_f64()?)))
        .collect();
    Series {
        name: format!("{split} {key}"),
        points,
    }
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
/// Labelled ticks of a log axis: 1, 2 and 5 times the powers of ten inside `[lo, hi]`, and
/// more steps between them when the range spans less than a factor of 20.
fn log_ticks(lo: f64, hi: f64) -> Vec<f64> {
    let steps: &[f64] = if hi / lo > 20.0 {
        &[1.0, 2.0, 5.0]
    } else {
        &[1.0, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0]
    };
    let mut ticks = Vec::new();
    let mut p = 10f64.powf(lo.log10().floor());
    while p <= hi {
        ticks.extend(
            steps
                .iter()
                .map(|m| m * p)
                .filter(|t| (lo..=hi).contains(t)),
        );
        p *= 10.0;
    }
    ticks
}

pub fn line_plot(out: &Path, title: &str, y_desc: &str, series: &[Series]) -> Result<()> {
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
        .build_cartesian_2d(
            0.0..x_max,
            (y_min..y_max)
                .log_scale()
                .with_key_points(log_ticks(y_min, y_max)),
        )?;
    chart
        .configure_mesh()
        .x_desc("step")
        .y_desc(y_desc)
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

/// The loss curves of any lam run (stage 1, encoder pretraining, controller fit, LAWM): every
/// numeric term of its `train` and `val` records that is not always zero, to `out`. An encoder
/// pretraining run also gets `collapse.png` beside it: effective rank and mean std of the
/// frame and token embeddings at every check, and the state probe's R^2 where measured.
/// Returns the files written.
pub fn plot_run(run: &Path, out: &Path) -> Result<Vec<std::path::PathBuf>> {
    let records = read_records(run)?;
    let mut series = Vec::new();
    for split in ["train", "val"] {
        let mut keys: Vec<&String> = records
            .iter()
            .filter(|r| r["split"] == split)
            .filter_map(|r| r.as_object())
            .flat_map(|o| o.iter().filter(|(_, v)| v.is_number()).map(|(k, _)| k))
            .filter(|k| !matches!(k.as_str(), "step" | "lr"))
            .collect();
        keys.sort();
        keys.dedup();
        series.extend(
            keys.into_iter()
                .map(|k| series_of(&records, split, k))
                .filter(|s| s.points.iter().any(|p| p.1 > 0.0)),
        );
    }
    line_plot(
        out,
        &format!("losses of {}", run.display()),
        "loss",
        &series,
    )?;
    let mut written = vec![out.to_path_buf()];
    let collapse: Vec<Series> = [
        ("eval", "stats.frames.effective_rank"),
        ("eval", "stats.tokens.effective_rank"),
        ("eval", "stats.frames.mean_std"),
        ("eval", "stats.tokens.mean_std"),
        ("probe", "probe.pooled.agent"),
        ("probe", "probe.keypoints.agent"),
        ("probe", "probe.pooled.objects"),
    ]
    .iter()
    .map(|(split, key)| series_of(&records, split, key))
    .filter(|s| s.points.iter().any(|p| p.1 > 0.0))
    .collect();
    if !collapse.is_empty() {
        let path = out.with_file_name("collapse.png");
        line_plot(
            &path,
            "embedding collapse statistics and state probe R^2",
            "value",
            &collapse,
        )?;
        written.push(path);
    }
    Ok(written)
}

/// Closed-loop success against the planning budget (rollouts per plan: samples x
/// iterations), one line per method, from `lam plan eval` output folders (their
/// `plan_eval_*.json`), to `out`.
pub fn plot_budget(evals: &[std::path::PathBuf], out: &Path) -> Result<()> {
    ensure_font()?;
    let mut lines: std::collections::BTreeMap<String, Vec<(f64, f64)>> = Default::default();
    for dir in evals {
        let files: Vec<_> = std::fs::read_dir(dir)
            .with_context(|| format!("cannot read {}", dir.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("plan_eval_") && n.ends_with(".json"))
            })
            .collect();
        ensure!(
            !files.is_empty(),
            "{} holds no plan_eval_*.json (a `lam plan eval --out` folder)",
            dir.display()
        );
        for f in files {
            let v: Value = serde_json::from_str(
                &std::fs::read_to_string(&f)
                    .with_context(|| format!("cannot read {}", f.display()))?,
            )
            .with_context(|| format!("malformed {}", f.display()))?;
            let ps = &v["planner_settings"];
            let budget =
                ps["samples"].as_f64().unwrap_or(0.0) * ps["iterations"].as_f64().unwrap_or(0.0);
            ensure!(
                budget > 0.0,
                "{}: no planner samples x iterations",
                f.display()
            );
            for s in v["summaries"].as_array().into_iter().flatten() {
                let (Some(m), Some(rate)) = (s["method"].as_str(), s["success_rate"].as_f64())
                else {
                    continue;
                };
                let name = format!("{} ({})", m, v["task"].as_str().unwrap_or("?"));
                lines.entry(name).or_default().push((budget, rate));
            }
        }
    }
    ensure!(!lines.is_empty(), "no method summaries in {evals:?}");
    for pts in lines.values_mut() {
        pts.sort_by(|a, b| a.0.total_cmp(&b.0));
    }
    // From the power of ten below the smallest budget, so that the axis has labelled ticks
    // under every point.
    let smallest = lines
        .values()
        .flatten()
        .map(|p| p.0)
        .fold(f64::INFINITY, f64::min);
    let x_min = 10f64.powf((smallest * 0.8).log10().floor());
    let x_max = lines.values().flatten().map(|p| p.0).fold(0.0, f64::max) * 1.25;
    let root = BitMapBackend::new(out, (900, 540)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption("closed-loop success vs planning budget", ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d((x_min..x_max).log_scale(), 0.0..1.0)?;
    chart
        .configure_mesh()
        .x_desc("rollouts per plan (samples x iterations)")
        .y_desc("success rate")
        .x_label_formatter(&|v| tick_label(*v))
        .y_label_formatter(&|v| format!("{:.0}%", v * 100.0))
        .draw()?;
    for (i, (name, pts)) in lines.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        chart
            .draw_series(LineSeries::new(pts.iter().copied(), color.stroke_width(2)))?
            .label(name.clone())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
        chart.draw_series(pts.iter().map(|&p| Circle::new(p, 4, color.filled())))?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .border_style(BLACK)
        .background_style(WHITE.mix(0.8))
        .draw()?;
    root.present()
        .with_context(|| format!("cannot write {}", out.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn any_run_plots_its_losses_and_an_encoder_run_its_collapse_statistics() {
        let tmp = tempfile::tempdir().unwrap();
        let run = tmp.path();
        let lines = [
            r#"{"split":"eval","step":0,"stats":{"frames":{"effective_rank":11.4,"mean_std":0.008},"tokens":{"effective_rank":4.3,"mean_std":0.1}}}"#,
            r#"{"split":"probe","step":0,"probe":{"pooled":{"agent":0.87,"objects":null}}}"#,
            r#"{"split":"train","step":1,"loss":6.5,"prediction":0.02,"reconstruction":3.2,"sigreg":0.0,"lr":0.001}"#,
            r#"{"split":"train","step":2,"loss":4.1,"prediction":0.01,"reconstruction":1.2,"sigreg":0.0,"lr":0.001}"#,
            r#"{"split":"eval","step":2,"stats":{"frames":{"effective_rank":2.1,"mean_std":0.07},"tokens":{"effective_rank":2.4,"mean_std":0.1}}}"#,
            r#"{"split":"probe","step":2,"probe":{"pooled":{"agent":0.97,"objects":null}}}"#,
        ];
        std::fs::write(run.join("metrics.jsonl"), lines.join("\n")).unwrap();
        let written = plot_run(run, &run.join("loss.png")).unwrap();
        assert_eq!(written, [run.join("loss.png"), run.join("collapse.png")]);
        for f in &written {
            let bytes = std::fs::read(f).unwrap();
            assert_eq!(&bytes[1..4], b"PNG", "{}", f.display());
        }
        // The terms plotted: those ever above zero, never the learning rate.
        let records = read_records(run).unwrap();
        assert!(
            series_of(&records, "train", "sigreg")
                .points
                .iter()
                .all(|p| p.1 == 0.0)
        );
        assert_eq!(
            series_of(&records, "eval", "stats.frames.effective_rank").points,
            [(0.0, 11.4), (2.0, 2.1)]
        );
    }

    #[test]
    fn success_against_budget_from_plan_eval_folders() {
        let tmp = tempfile::tempdir().unwrap();
        let mut dirs = Vec::new();
        for (samples, rate) in [(30, 0.2), (100, 0.5), (300, 0.8)] {
            let d = tmp.path().join(format!("plan-{samples}"));
            std::fs::create_dir_all(&d).unwrap();
            let v = serde_json::json!({"task": "reach",
                "planner_settings": {"samples": samples, "iterations": 10},
                "summaries": [{"method": "action-conditioned WM + CEM", "success_rate": rate}]});
            std::fs::write(d.join("plan_eval_reach.json"), v.to_string()).unwrap();
            dirs.push(d);
        }
        let out = tmp.path().join("budget.png");
        plot_budget(&dirs, &out).unwrap();
        assert_eq!(&std::fs::read(&out).unwrap()[1..4], b"PNG");
        // A folder without an evaluation is named.
        let empty = tmp.path().join("nothing");
        std::fs::create_dir_all(&empty).unwrap();
        let err = format!("{:#}", plot_budget(&[empty], &out).unwrap_err());
        assert!(
            err.contains("nothing") && err.contains("plan_eval_"),
            "{err}"
        );
    }

    #[test]
    fn log_scale_tick_labels_stay_short() {
        assert_eq!(tick_label(0.05), "0.05");
        assert_eq!(tick_label(2.0), "2");
        assert_eq!(tick_label(0.1234), "0.1234");
        assert_eq!(tick_label(1e-9), "1.0e-9");
        assert_eq!(tick_label(25000.0), "2.5e4");
    }
}

/// One panel of bars: a label per bar, its mean and standard error (0 draws no whisker).
pub struct BarPanel {
    pub title: String,
    pub y_desc: String,
    pub bars: Vec<(String, f64, f64)>,
    /// Show the y axis as percentages of 1.
    pub percent: bool,
    /// Fixed y range (bars beyond it are cut at its edge); else from 0 (or the lowest bar)
    /// to above the highest.
    pub range: Option<(f64, f64)>,
}

/// Panels of bars side by side in one PNG (experiment reports).
pub fn bar_panels(out: &Path, panels: &[BarPanel]) -> Result<()> {
    ensure_font()?;
    ensure!(!panels.is_empty(), "no panels to plot");
    let root = BitMapBackend::new(out, (480 * panels.len() as u32, 420)).into_drawing_area();
    root.fill(&WHITE)?;
    for (area, p) in root.split_evenly((1, panels.len())).iter().zip(panels) {
        ensure!(!p.bars.is_empty(), "panel `{}` has no bars", p.title);
        let finite = || p.bars.iter().filter(|b| b.1.is_finite());
        let (y_min, y_max) = p.range.unwrap_or_else(|| {
            let top = finite().map(|b| b.1 + b.2).fold(0.0f64, f64::max);
            let low = finite().map(|b| b.1 - b.2).fold(0.0f64, f64::min);
            (low * 1.15, (top * 1.15).max(1e-9))
        });
        let n = p.bars.len();
        let mut chart = ChartBuilder::on(area)
            .caption(&p.title, ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(60)
            .y_label_area_size(60)
            .build_cartesian_2d(0.0..n as f64, y_min..y_max)?;
        let labels: Vec<String> = p.bars.iter().map(|b| b.0.clone()).collect();
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(n * 2 + 1)
            .x_label_formatter(&|x| {
                let i = x.floor() as usize;
                if (x - i as f64 - 0.5).abs() < 1e-6 && i < labels.len() {
                    labels[i].clone()
                } else {
                    String::new()
                }
            })
            .y_desc(p.y_desc.as_str())
            .y_label_formatter(&|v| {
                if p.percent {
                    format!("{:.0}%", v * 100.0)
                } else {
                    tick_label(*v)
                }
            })
            .draw()?;
        for (i, (_, mean, se)) in p.bars.iter().enumerate() {
            if !mean.is_finite() {
                continue;
            }
            let x = i as f64;
            let color = Palette99::pick(i).to_rgba();
            chart.draw_series(std::iter::once(Rectangle::new(
                [(x + 0.15, 0.0), (x + 0.85, mean.clamp(y_min, y_max))],
                color.filled(),
            )))?;
            if *se > 0.0 {
                chart.draw_series(std::iter::once(PathElement::new(
                    vec![
                        (x + 0.5, (mean - se).max(y_min)),
                        (x + 0.5, (mean + se).min(y_max)),
                    ],
                    BLACK.stroke_width(2),
                )))?;
            }
        }
    }
    root.present()
        .with_context(|| format!("cannot write {}", out.display()))?;
    Ok(())
}
