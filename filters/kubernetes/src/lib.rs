//! Kubernetes API requests as gatehouse sees them: RequestInfo, decisions, masking, audit events.

pub mod audit;
pub mod exec;
pub mod request_info;
pub mod status;
