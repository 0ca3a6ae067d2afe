//! Running a source to the end whatever its files look like: bad items are
//! skipped and reported, never fatal; items can be decoded on several
//! threads while the sink sees them in item order.

use crate::clip::Clip;
use crate::error::{IngestError, Result};
use crate::report::IngestReport;
use crate::source::{ClipSource, Item};
use crate::spec::ClipSpec;
use crate::split::{Part, Split, Subset};
use crate::video::ItemStats;
use std::collections::BTreeMap;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex, mpsc};

/// Which items a run takes and how.
#[derive(Clone, Debug, PartialEq)]
pub struct RunOptions {
    /// Keep only items whose group falls on this side of this split.
    /// Default `None`: all items.
    pub split: Option<(Split, Subset)>,
    /// Keep only the items of this part of the source (after the split). Default `None`.
    pub part: Option<Part>,
    /// Items decoded at the same time, each on its own thread. Default 1.
    pub workers: usize,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            split: None,
            part: None,
            workers: 1,
        }
    }
}

type Outcome = std::thread::Result<Result<(Vec<Clip>, ItemStats)>>;

/// Reads every selected item of `source` and hands its clips to `sink`,
/// one call per item, in item order.
///
/// An item's clips reach the sink only once the whole item decoded, so the
/// sink never sees part of a file that later turns out truncated; the clips
/// of one item are in memory together (bound them with
/// [`ClipSpec::max_clips`] for very long videos). Items that fail (corrupt,
/// truncated, unreadable, empty, a panic inside a decoder library) or are too
/// short for one clip are listed in the report with the reason. The run
/// stops with an error only for an invalid `spec` or an error returned by
/// `sink`.
pub fn run(
    source: &dyn ClipSource,
    spec: &ClipSpec,
    options: &RunOptions,
    sink: &mut dyn FnMut(&Item, Vec<Clip>) -> Result<()>,
) -> Result<IngestReport> {
    spec.validate()?;
    let mut report = IngestReport::default();
    for (p, r) in source.listing_problems() {
        report.skip(p.clone(), r.clone());
    }
    let items: Vec<&Item> = source
        .items()
        .iter()
        .filter(|it| {
            options
                .split
                .is_none_or(|(split, side)| split.subset(&it.group) == side)
        })
        .collect();
    let items = match options.part {
        Some(part) => part.select(&items),
        None => items,
    };
    let mut handle = |item: &Item, outcome: Outcome| -> Result<()> {
        match outcome {
            Ok(Ok((clips, stats))) => {
                if clips.is_empty() {
                    report.skip(
                        item.path.clone(),
                        format!(
                            "too short: {} frames at {} fps, a clip needs {} ({})",
                            stats.positions, spec.fps, spec.frames, item.id
                        ),
                    );
                } else {
                    report.ok += 1;
                    report.clips += clips.len();
                    sink(item, clips)?;
                }
            }
            Ok(Err(IngestError::Sink(e))) => return Err(IngestError::Sink(e)),
            Ok(Err(e)) => report.skip(item.path.clone(), with_item(e.reason(), item)),
            Err(panic) => {
                let msg = crate::error::panic_message(panic.as_ref())
                    .unwrap_or_else(|| "unknown panic".into());
                report.skip(
                    item.path.clone(),
                    with_item(format!("decoder panicked: {msg}"), item),
                );
            }
        }
        Ok(())
    };
    let workers = options.workers.max(1).min(items.len().max(1));
    if workers == 1 {
        for item in &items {
            handle(item, read_item(source, item, spec))?;
        }
    } else {
        run_parallel(source, spec, &items, workers, &mut handle)?;
    }
    Ok(report)
}

fn with_item(reason: String, item: &Item) -> String {
    if item.episode.is_some() {
        format!("{reason} ({})", item.id)
    } else {
        reason
    }
}

fn read_item(source: &dyn ClipSource, item: &Item, spec: &ClipSpec) -> Outcome {
    catch_unwind(AssertUnwindSafe(|| {
        let mut clips = Vec::new();
        let stats = source.for_each_clip(item, spec, &mut |c| {
            clips.push(c);
            Ok(())
        })?;
        Ok((clips, stats))
    }))
}

/// Workers take items in order; at most `2 * workers` finished items wait
/// for the sink, which sees them in item order.
fn run_parallel(
    source: &dyn ClipSource,
    spec: &ClipSpec,
    items: &[&Item],
    workers: usize,
    handle: &mut dyn FnMut(&Item, Outcome) -> Result<()>,
) -> Result<()> {
    let next = AtomicUsize::new(0);
    let gate = (Mutex::new(0usize), Condvar::new());
    let ahead = 2 * workers;
    let (tx, rx) = mpsc::channel::<(usize, Outcome)>();
    std::thread::scope(|scope| {
        for _ in 0..workers {
            let tx = tx.clone();
            let (next, gate) = (&next, &gate);
            scope.spawn(move || {
                loop {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    if i >= items.len() {
                        break;
                    }
                    {
                        let (lock, cv) = gate;
                        let mut done = lock.lock().unwrap_or_else(|p| p.into_inner());
                        while *done != usize::MAX && i >= *done + ahead {
                            done = cv.wait(done).unwrap_or_else(|p| p.into_inner());
                        }
                        if *done == usize::MAX {
                            break;
                        }
                    }
                    if tx.send((i, read_item(source, items[i], spec))).is_err() {
                        break;
                    }
                }
            });
        }
        drop(tx);
        let mut pending = BTreeMap::new();
        let mut emitted = 0usize;
        let mut result = Ok(());
        for (i, outcome) in rx.iter() {
            pending.insert(i, outcome);
            while let Some(outcome) = pending.remove(&emitted) {
                if result.is_ok() {
                    result = handle(items[emitted], outcome);
                }
                emitted += 1;
                let (lock, cv) = &gate;
                let mut done = lock.lock().unwrap_or_else(|p| p.into_inner());
                // On a sink error, release and stop every worker.
                *done = if result.is_ok() { emitted } else { usize::MAX };
                cv.notify_all();
            }
            if result.is_err() {
                break;
            }
        }
        if result.is_err() {
            let (lock, cv) = &gate;
            *lock.lock().unwrap_or_else(|p| p.into_inner()) = usize::MAX;
            cv.notify_all();
            next.store(items.len(), Ordering::SeqCst);
        }
        drop(rx);
        result
    })
}
