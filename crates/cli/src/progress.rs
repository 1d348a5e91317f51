//! Progress of a backfill, part by part (candles, then a perpetual market's mark prices and
//! funding): bars per symbol and overall (rate, ETA) on a terminal, plain log lines otherwise.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use cryptolake_model::{Exchange, Symbol};
use cryptolake_pipeline::{BackfillPart, BackfillProgress};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use tracing::info;

/// The part under way: its plan and what has landed.
struct Part {
    part: BackfillPart,
    /// Pages planned per symbol; `None` where the venue's answers decide.
    totals: HashMap<Symbol, Option<u64>>,
    total: Option<u64>,
    done: HashMap<Symbol, (u64, u64)>,
    pages: u64,
    rows: u64,
    started: Instant,
    last_line: Instant,
    bars: Option<(ProgressBar, HashMap<Symbol, ProgressBar>)>,
}

pub struct Progress {
    exchange: Exchange,
    multi: Option<MultiProgress>,
    current: Mutex<Option<Part>>,
}

fn style(template: &str) -> ProgressStyle {
    ProgressStyle::with_template(template).expect("valid template")
}

impl Progress {
    /// Bars when stderr is a terminal (and `bars` is allowed), log lines otherwise.
    pub fn new(exchange: Exchange, bars: bool) -> Progress {
        let multi = (bars && std::io::stderr().is_terminal())
            .then(|| MultiProgress::with_draw_target(ProgressDrawTarget::stderr()));
        Progress {
            exchange,
            multi,
            current: Mutex::new(None),
        }
    }

    fn bars(
        &self,
        part: BackfillPart,
        planned: &[(Symbol, Option<usize>)],
        total: Option<u64>,
    ) -> Option<(ProgressBar, HashMap<Symbol, ProgressBar>)> {
        let multi = self.multi.as_ref()?;
        let unit = part.rows_name();
        let overall = multi.add(match total {
            Some(n) => ProgressBar::new(n).with_style(style(
                "{prefix:>28} [{elapsed_precise}] {wide_bar} {pos}/{len} pages · {msg} · {per_sec} · ETA {eta}",
            )),
            None => ProgressBar::new_spinner().with_style(style(
                "{prefix:>28} [{elapsed_precise}] {spinner} {pos} pages · {msg} · {per_sec}",
            )),
        });
        overall.set_prefix(format!("{} {}", self.exchange, part.as_str()));
        overall.set_message(format!("0 {unit}"));
        let per_symbol = planned
            .iter()
            .map(|(s, n)| {
                let bar = multi.add(match n {
                    Some(n) => ProgressBar::new(*n as u64)
                        .with_style(style("{prefix:>28} {bar:40} {pos}/{len} pages · {msg}")),
                    None => ProgressBar::new_spinner()
                        .with_style(style("{prefix:>28} {spinner} {pos} pages · {msg}")),
                });
                bar.set_prefix(s.to_string());
                (s.clone(), bar)
            })
            .collect();
        Some((overall, per_symbol))
    }

    /// Ends the bars of the part under way.
    pub fn finish(&self) {
        let mut current = self.current.lock().expect("progress lock");
        if let Some(part) = current.take() {
            Self::end(&part);
        }
    }

    fn end(part: &Part) {
        match &part.bars {
            Some((overall, per_symbol)) => {
                for bar in per_symbol.values() {
                    bar.finish();
                }
                overall.finish();
            }
            None => {
                info!(
                    part = part.part.as_str(),
                    pages = part.pages,
                    rows = part.rows,
                    secs = format!("{:.1}", part.started.elapsed().as_secs_f64()),
                    "backfill part done"
                );
            }
        }
    }
}

impl BackfillProgress for Progress {
    fn start(&self, part: BackfillPart, planned: &[(Symbol, Option<usize>)]) {
        let mut current = self.current.lock().expect("progress lock");
        if let Some(previous) = current.take() {
            Self::end(&previous);
        }
        let totals: HashMap<Symbol, Option<u64>> = planned
            .iter()
            .map(|(s, n)| (s.clone(), n.map(|n| n as u64)))
            .collect();
        let total = totals.values().copied().sum::<Option<u64>>();
        if self.multi.is_none() {
            info!(exchange = %self.exchange, part = part.as_str(), symbols = planned.len(), pages = ?total, "backfill part starts");
        }
        *current = Some(Part {
            part,
            bars: self.bars(part, planned, total),
            totals,
            total,
            done: HashMap::new(),
            pages: 0,
            rows: 0,
            started: Instant::now(),
            last_line: Instant::now(),
        });
    }

    fn page(&self, part: BackfillPart, symbol: &Symbol, rows: usize) {
        let mut current = self.current.lock().expect("progress lock");
        let Some(p) = current.as_mut().filter(|p| p.part == part) else {
            return;
        };
        let unit = part.rows_name();
        p.pages += 1;
        p.rows += rows as u64;
        let entry = p.done.entry(symbol.clone()).or_insert((0, 0));
        entry.0 += 1;
        entry.1 += rows as u64;
        let (done, symbol_rows) = *entry;
        if let Some((overall, per_symbol)) = &p.bars {
            overall.inc(1);
            overall.set_message(format!("{} {unit}", p.rows));
            if let Some(bar) = per_symbol.get(symbol) {
                bar.inc(1);
                bar.set_message(format!("{symbol_rows} {unit}"));
            }
            return;
        }
        // Plain lines: a symbol's every tenth and its end (every page where the total is
        // not known), and the overall state every 10 s.
        let planned = p.totals.get(symbol).copied().flatten();
        let tenth = |n: u64, of: u64| n * 10 / of.max(1);
        let report = planned.is_none_or(|of| done == of || tenth(done, of) != tenth(done - 1, of));
        if report {
            info!(exchange = %self.exchange, part = part.as_str(), symbol = %symbol, pages = done, of = ?planned, rows = symbol_rows, "backfill progress");
        }
        if p.last_line.elapsed() >= Duration::from_secs(10) {
            p.last_line = Instant::now();
            let secs = p.started.elapsed().as_secs_f64().max(0.001);
            let rate = p.pages as f64 / secs;
            let eta = p
                .total
                .map(|t| (t.saturating_sub(p.pages) as f64 / rate.max(1e-9)).round() as u64);
            info!(exchange = %self.exchange, part = part.as_str(), pages = p.pages, of = ?p.total, rows = p.rows, pages_per_s = format!("{rate:.1}"), eta_s = ?eta, "backfill overall");
        }
    }
}
