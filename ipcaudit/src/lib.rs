//! ipcaudit: who owns which System V IPC object, right now, and what leaked.
//!
//! Data flows one way, and the modules follow it:
//!
//! ```text
//! kernel (ipcaudit-ebpf) ─► probe (aya: load, attach, ring buffer) ─► decode (bytes → Event)
//!   ─► model (pure: ownership, actions, findings) ─► sink (json / text)
//! snapshot (/proc/sysvipc, /proc/PID/maps, semctl) ─► model (bootstrap, resync)
//! ```
//!
//! Everything but `probe`, `snapshot::read` and the command runners is pure: no IO, no clock.

pub mod cli;
pub mod clock;
pub mod collector;
pub mod control;
pub mod decode;
pub mod enrich;
pub mod event;
pub mod explain;
pub mod filter;
pub mod generate;
pub mod leaks;
pub mod limits;
pub mod ls;
pub mod metrics;
pub mod model;
pub mod names;
pub mod policy;
pub mod privdrop;
pub mod probe;
pub mod reap;
pub mod reap_posix;
pub mod replay;
pub mod report;
pub mod sink;
pub mod snapshot;
pub mod stack;
pub mod status;
