//! mysmshook's delivery engine: everything between a claimed job and its recorded outcome,
//! with no dependency on PostgreSQL's server code. Two hosts run it: the extension, inside a
//! backend (SPI), and mysmshook-worker, over a client connection. Both reach the queue only
//! through the functions of sql/queue.sql, behind [`worker::Host`].

pub mod chain;
pub mod config;
pub mod delivery;
pub mod event;
pub mod http;
pub mod job;
pub mod pause;
pub mod phone;
pub mod pool;
pub mod providers;
pub mod queue_sql;
pub mod receipts;
pub mod render;
pub mod retry;
pub mod routing;
pub mod settings;
pub mod worker;

#[cfg(test)]
mod test_support;

#[cfg(test)]
mod properties;
