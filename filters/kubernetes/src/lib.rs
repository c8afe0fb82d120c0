//! Kubernetes API requests as gatehouse sees them: RequestInfo, decisions, masking, audit events.

pub mod audit;
pub mod config;
pub mod exec;
pub mod gate;
mod label_selector;
pub mod masking;
pub mod policy;
pub mod recording;
pub mod request_info;
pub mod status;
