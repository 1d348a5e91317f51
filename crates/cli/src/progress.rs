//! Progress of a backfill: bars per symbol and overall (rate, ETA) on a terminal, plain log
//! lines otherwise.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use cryptolake_model::{Exchange, Symbol};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use tracing::info;

struct Plain {
    done: HashMap<Symbol, (u64, u64)>,
    total_done: u64,
    candles: u64,
    last_line: Instant,
}

pub struct Progress {
    exchange: Exchange,
    bars: Option<(MultiProgress, ProgressBar, HashMap<Symbol, ProgressBar>)>,
    totals: HashMap<Symbol, u64>,
    total: u64,
    plain: Mutex<Plain>,
    started: Instant,
}

impl Progress {
    /// Bars when stderr is a terminal (and `bars` is allowed), log lines otherwise.
    pub fn new(exchange: Exchange, pages: &[(Symbol, usize)], bars: bool) -> Progress {
        let totals: HashMap<Symbol, u64> =
            pages.iter().map(|(s, n)| (s.clone(), *n as u64)).collect();
        let total = totals.values().sum();
        let bars = (bars && std::io::stderr().is_terminal()).then(|| {
            let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr());
            let overall = multi.add(ProgressBar::new(total));
            overall.set_style(
                ProgressStyle::with_template(
                    "{prefix:>16} [{elapsed_precise}] {wide_bar} {pos}/{len} pages · {msg} · {per_sec} · ETA {eta}",
                )
                .expect("valid template"),
            );
            overall.set_prefix(exchange.to_string());
            overall.set_message("0 candles");
            let per_symbol = pages
                .iter()
                .map(|(s, n)| {
                    let bar = multi.add(ProgressBar::new(*n as u64));
                    bar.set_style(
                        ProgressStyle::with_template(
                            "{prefix:>16} {bar:40} {pos}/{len} pages · {msg}",
                        )
                        .expect("valid template"),
                    );
                    bar.set_prefix(s.to_string());
                    (s.clone(), bar)
                })
                .collect();
            (multi, overall, per_symbol)
        });
        Progress {
            exchange,
            bars,
            totals,
            total,
            plain: Mutex::new(Plain {
                done: HashMap::new(),
                total_done: 0,
                candles: 0,
                last_line: Instant::now(),
            }),
            started: Instant::now(),
        }
    }

    /// One page of `symbol` landed in bronze with `rows` candles.
    pub fn page(&self, symbol: &Symbol, rows: usize) {
        let mut p = self.plain.lock().expect("progress lock");
        p.total_done += 1;
        p.candles += rows as u64;
        let total_symbol = self.totals.get(symbol).copied().unwrap_or(0);
        let entry = p.done.entry(symbol.clone()).or_insert((0, 0));
        entry.0 += 1;
        entry.1 += rows as u64;
        let (done, candles) = *entry;
        if let Some((_, overall, per_symbol)) = &self.bars {
            overall.inc(1);
            overall.set_message(format!("{} candles", p.candles));
            if let Some(bar) = per_symbol.get(symbol) {
                bar.inc(1);
                bar.set_message(format!("{candles} candles"));
            }
            return;
        }
        // Plain lines: a symbol's every tenth, its end, and the overall state every 10 s.
        let tenth = |n: u64| n * 10 / total_symbol.max(1);
        if done == total_symbol || tenth(done) != tenth(done - 1) {
            info!(exchange = %self.exchange, symbol = %symbol, pages = done, of = total_symbol, candles, "backfill progress");
        }
        if p.last_line.elapsed() >= Duration::from_secs(10) {
            p.last_line = Instant::now();
            let secs = self.started.elapsed().as_secs_f64().max(0.001);
            let rate = p.total_done as f64 / secs;
            let eta = (self.total.saturating_sub(p.total_done)) as f64 / rate.max(1e-9);
            info!(exchange = %self.exchange, pages = p.total_done, of = self.total, candles = p.candles, pages_per_s = format!("{rate:.1}"), eta_s = eta.round() as u64, "backfill overall");
        }
    }

    pub fn finish(&self) {
        if let Some((_, overall, per_symbol)) = &self.bars {
            for bar in per_symbol.values() {
                bar.finish();
            }
            overall.finish();
        }
    }
}
