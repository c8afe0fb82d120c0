//! Kubernetes API requests as gatehouse sees them: RequestInfo, decisions, masking, audit events.
