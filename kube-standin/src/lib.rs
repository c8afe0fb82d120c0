//! Stand-in Kubernetes API server.
