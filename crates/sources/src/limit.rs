//! A per-exchange request budget shared by every request to that exchange.
//!
//! Exchanges limit the *weight* a client spends per time window (Binance: a weight per endpoint
//! against a per-minute budget; Coinbase and Kraken: requests per second, i.e. weight 1). The
//! limiter keeps a log of what it sent and admits a request only if, over any span of one window
//! plus a slack for transit time, the weight sent stays within the budget. So the exchange's own
//! window, wherever its boundaries fall, never sees more than the budget from us.
//!
//! On top of that it carries the exchange-wide signals a single request learns: `Retry-After`
//! pauses every request to the exchange, a 418 ban stops them all until it expires, and a
//! used-weight header saying the budget is (nearly) spent waits for the next window.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

/// The budget of one exchange.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Budget {
    /// Weight allowed per `interval`.
    pub weight: u32,
    pub interval: Duration,
}

impl Budget {
    /// Binance spot: 6000 request weight per minute.
    pub const BINANCE: Budget = Budget {
        weight: 6000,
        interval: Duration::from_secs(60),
    };
    /// Binance USDⓈ-M futures: 2400 request weight per minute.
    pub const BINANCE_FUTURES: Budget = Budget {
        weight: 2400,
        interval: Duration::from_secs(60),
    };
    /// Coinbase Exchange public endpoints: 10 requests per second.
    pub const COINBASE: Budget = Budget {
        weight: 10,
        interval: Duration::from_secs(1),
    };
    /// OKX: history candles allow 20 requests per 2 seconds per IP (the stricter of its two
    /// candle endpoints, so either may be asked). Spot and swaps count against the same IP
    /// budget, so each market takes half by default: both at once stay within it.
    pub const OKX: Budget = Budget {
        weight: 10,
        interval: Duration::from_secs(2),
    };
    /// Bybit public market endpoints: 600 requests per 5 seconds per IP, half of it for each
    /// of the two markets (spot, linear), as for OKX.
    pub const BYBIT: Budget = Budget {
        weight: 300,
        interval: Duration::from_secs(5),
    };
    /// Kraken public endpoints: about one request per second.
    pub const KRAKEN: Budget = Budget {
        weight: 1,
        interval: Duration::from_secs(1),
    };
}

#[derive(Debug)]
struct State {
    /// Weight sent, by time sent, oldest first.
    log: VecDeque<(Instant, u32)>,
    paused_until: Option<Instant>,
    banned_until: Option<DateTime<Utc>>,
    spent: u64,
    requests: u64,
}

#[derive(Debug)]
pub struct Limiter {
    budget: Budget,
    /// Added to the window: a request sent just before the exchange's window starts may arrive
    /// just after.
    slack: Duration,
    state: Mutex<State>,
}

impl Limiter {
    pub fn new(budget: Budget) -> Limiter {
        let slack = (budget.interval / 10).clamp(Duration::from_millis(50), Duration::from_secs(2));
        Limiter {
            budget,
            slack,
            state: Mutex::new(State {
                log: VecDeque::new(),
                paused_until: None,
                banned_until: None,
                spent: 0,
                requests: 0,
            }),
        }
    }

    pub fn budget(&self) -> Budget {
        self.budget
    }

    /// Waits until `weight` fits the budget and records it as sent. `Err(until)` when the
    /// exchange has banned this client.
    pub async fn acquire(&self, weight: u32) -> Result<(), DateTime<Utc>> {
        let weight = weight.min(self.budget.weight).max(1);
        loop {
            let wait = {
                let mut s = self.state.lock().expect("limiter lock");
                if let Some(until) = s.banned_until {
                    if until > Utc::now() {
                        return Err(until);
                    }
                    s.banned_until = None;
                }
                let now = Instant::now();
                let span = self.budget.interval + self.slack;
                while s.log.front().is_some_and(|(t, _)| now - *t >= span) {
                    s.log.pop_front();
                }
                let used: u32 = s.log.iter().map(|(_, w)| *w).sum();
                match s.paused_until {
                    Some(until) if until > now => until - now,
                    _ if used + weight <= self.budget.weight => {
                        s.log.push_back((now, weight));
                        s.spent += u64::from(weight);
                        s.requests += 1;
                        return Ok(());
                    }
                    _ => {
                        // Wait until enough old weight leaves the span.
                        let mut freed = 0;
                        let mut until = now;
                        for (t, w) in &s.log {
                            freed += w;
                            until = *t + span;
                            if used - freed + weight <= self.budget.weight {
                                break;
                            }
                        }
                        until.saturating_duration_since(now)
                    }
                }
            };
            tokio::time::sleep(wait.max(Duration::from_millis(1))).await;
        }
    }

    /// `Retry-After`: every request to the exchange waits this long.
    pub fn pause_for(&self, wait: Duration) {
        let until = Instant::now() + wait;
        let mut s = self.state.lock().expect("limiter lock");
        if s.paused_until.is_none_or(|p| p < until) {
            s.paused_until = Some(until);
        }
    }

    /// HTTP 418: nothing more is sent to the exchange until `until`.
    pub fn ban(&self, until: DateTime<Utc>) {
        let mut s = self.state.lock().expect("limiter lock");
        if s.banned_until.is_none_or(|b| b < until) {
            s.banned_until = Some(until);
        }
    }

    pub fn banned_until(&self) -> Option<DateTime<Utc>> {
        let s = self.state.lock().expect("limiter lock");
        s.banned_until.filter(|u| *u > Utc::now())
    }

    /// The exchange's own count of weight used in its current window (e.g. Binance's
    /// `X-MBX-USED-WEIGHT-1M`). If another client on the same address spent the budget, wait
    /// for the exchange's next window.
    pub fn observe_used(&self, used: u32) {
        if used >= self.budget.weight {
            let interval_ms = self.budget.interval.as_millis().max(1) as i64;
            let now_ms = Utc::now().timestamp_millis();
            let next = (now_ms.div_euclid(interval_ms) + 1) * interval_ms;
            self.pause_for(Duration::from_millis((next - now_ms) as u64) + self.slack);
        }
    }

    /// Total weight and requests sent through this limiter.
    pub fn spent(&self) -> (u64, u64) {
        let s = self.state.lock().expect("limiter lock");
        (s.spent, s.requests)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn never_more_than_the_budget_in_any_window() {
        let budget = Budget {
            weight: 5,
            interval: Duration::from_millis(200),
        };
        let limiter = std::sync::Arc::new(Limiter::new(budget));
        let sent = std::sync::Arc::new(Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        for _ in 0..4 {
            let (l, s) = (limiter.clone(), sent.clone());
            tasks.push(tokio::spawn(async move {
                for _ in 0..5 {
                    l.acquire(2).await.unwrap();
                    s.lock().unwrap().push((Instant::now(), 2u32));
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        let sent = sent.lock().unwrap().clone();
        assert_eq!(sent.len(), 20);
        for (i, (t0, _)) in sent.iter().enumerate() {
            let in_window: u32 = sent
                .iter()
                .filter(|(t, _)| *t >= *t0 && *t - *t0 < budget.interval)
                .map(|(_, w)| *w)
                .sum();
            assert!(
                in_window <= budget.weight,
                "window from #{i} holds {in_window}"
            );
        }
        assert_eq!(limiter.spent(), (40, 20));
    }

    #[tokio::test]
    async fn a_ban_stops_every_request_until_it_expires() {
        let limiter = Limiter::new(Budget::KRAKEN);
        let until = Utc::now() + chrono::Duration::seconds(60);
        limiter.ban(until);
        assert_eq!(limiter.acquire(1).await, Err(until));
        limiter.ban(Utc::now() - chrono::Duration::seconds(1));
        assert_eq!(
            limiter.banned_until(),
            Some(until),
            "a ban is never shortened"
        );
    }

    #[tokio::test]
    async fn pause_delays_everyone() {
        let limiter = Limiter::new(Budget::BINANCE);
        limiter.pause_for(Duration::from_millis(150));
        let t = Instant::now();
        limiter.acquire(1).await.unwrap();
        assert!(t.elapsed() >= Duration::from_millis(140));
    }
}
