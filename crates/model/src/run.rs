//! What the run history records of each step: which step it was and how it ended.

use serde::Serialize;

use crate::Exchange;

/// A step of the pipeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Step {
    Ingest,
    Refetch,
    Silver,
    Gold,
    Check,
    Gaps,
    Backfill,
    Import,
    /// Funding of perpetual markets: its ingest (`funding:okx-swap`) and its build.
    Funding,
}

impl Step {
    pub const ALL: [Step; 9] = [
        Step::Ingest,
        Step::Refetch,
        Step::Silver,
        Step::Gold,
        Step::Check,
        Step::Gaps,
        Step::Backfill,
        Step::Import,
        Step::Funding,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Step::Ingest => "ingest",
            Step::Refetch => "refetch",
            Step::Silver => "silver",
            Step::Gold => "gold",
            Step::Check => "check",
            Step::Gaps => "gaps",
            Step::Backfill => "backfill",
            Step::Import => "import",
            Step::Funding => "funding",
        }
    }

    /// The step as `crypto_ops.runs` names it: `ingest:binance` for a step of one exchange.
    pub fn label(self, exchange: Option<Exchange>) -> String {
        match exchange {
            Some(e) => format!("{}:{e}", self.as_str()),
            None => self.as_str().to_string(),
        }
    }
}

impl std::fmt::Display for Step {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a step ended. Written as `status` in `crypto_ops.runs`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// Everything it set out to do.
    Ok,
    /// It finished, but part of it failed (some symbols, a range the exchange no longer
    /// serves); what did arrive is kept.
    Partial,
    /// It failed; nothing of it is committed.
    Failed,
    /// Another run held the lease.
    Busy,
    /// The exchange has banned this address (HTTP 418) and the ban still lasts.
    Banned,
}

impl Outcome {
    pub const ALL: [Outcome; 5] = [
        Outcome::Ok,
        Outcome::Partial,
        Outcome::Failed,
        Outcome::Busy,
        Outcome::Banned,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Partial => "partial",
            Outcome::Failed => "failed",
            Outcome::Busy => "busy",
            Outcome::Banned => "banned",
        }
    }

    pub fn is_ok(self) -> bool {
        self == Outcome::Ok
    }
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Step {
    /// The step a name written by [`Step::as_str`] stands for.
    pub fn parse(s: &str) -> Option<Step> {
        Step::ALL.into_iter().find(|x| x.as_str() == s)
    }

    /// A label of `crypto_ops.runs` (`ingest:binance`, `silver`) as the step and its exchange.
    pub fn parse_label(label: &str) -> Option<(Step, Option<Exchange>)> {
        match label.split_once(':') {
            Some((step, exchange)) => Some((Step::parse(step)?, Some(exchange.parse().ok()?))),
            None => Some((Step::parse(label)?, None)),
        }
    }
}

impl Outcome {
    /// The outcome a status written by [`Outcome::as_str`] stands for.
    pub fn parse(s: &str) -> Option<Outcome> {
        Outcome::ALL.into_iter().find(|x| x.as_str() == s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_and_statuses_round_trip() {
        for step in Step::ALL {
            assert_eq!(Step::parse_label(&step.label(None)), Some((step, None)));
            for e in Exchange::ALL {
                assert_eq!(
                    Step::parse_label(&step.label(Some(e))),
                    Some((step, Some(e)))
                );
            }
        }
        for o in Outcome::ALL {
            assert_eq!(Outcome::parse(o.as_str()), Some(o));
        }
        assert_eq!(Step::parse_label("ingest:nowhere"), None);
        assert_eq!(Step::parse_label("bake"), None);
        assert_eq!(Outcome::parse("fine"), None);
    }
}
