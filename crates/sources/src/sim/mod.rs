//! The simulated exchange: a deterministic, seeded market served on loopback in the exchanges'
//! real REST formats, so the whole pipeline runs offline through the real adapters over HTTP.

mod market;
mod server;

pub use market::{OKX_FUNDING_DAYS, SimCandle, SimFunding, SimMarket};
pub use server::{ExchangeStats, Fault, FaultPlan, SimClock, SimOptions, SimServer};
