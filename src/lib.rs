//! Postdesk: an email-first help desk daemon.
//!
//! # Layout
//! Data flows one way: `intake` (IMAP / Maildir / MTA pipe) → [`message`] (parse) → [`guard`]
//! (loops, bounces, auto-replies) → [`thread`] (which ticket?) → [`pipeline`] (decide and commit
//! ONE transaction in [`store`]) → [`outbound`] (queue worker → SMTP or a folder).
//! The pure core ([`message`] with [`html`], [`quote`] and [`tnef`], [`guard`], [`thread`],
//! [`reference`], [`token`], [`render`]) does no I/O and reads no clock. [`daemon`] wires the
//! tasks together; `main.rs` only parses the CLI.
//! See ARCHITECTURE.md for the code map and invariants.

pub mod bounce;
pub mod clock;
pub mod config;
pub mod guard;
pub mod html;
pub mod message;
pub mod quote;
pub mod reference;
pub mod store;
pub mod thread;
pub mod ticket;
pub mod tnef;
pub mod token;
pub mod desk;
pub mod fsmode;
pub mod oauth;
pub mod outbound;
pub mod pipeline;
pub mod render;
pub mod rules;
pub mod shutdown;
pub mod intake;
pub mod commands;
pub mod daemon;
pub mod command;
pub mod authres;
pub mod sla;
pub mod report;
pub mod csat;
pub mod cis;
pub mod catalog;
pub mod search;
pub mod metrics;
