//! Stand-in Kubernetes API server for gatehouse's tests and demo.
//!
//! Plain HTTP/1.1 (Envoy in front terminates TLS). Real kubectl (1.27–1.33)
//! works against it: `/version`, aggregated and legacy discovery, namespaces,
//! pods, secrets, configmaps, events and deployments (get, list as List or
//! Table, watch, create, update, merge patch, delete, deletecollection), pod
//! logs, and exec/attach over WebSocket (`v5.channel.k8s.io`) running a fixed
//! echo of the argv. Errors are `metav1.Status` bodies. Every request is
//! recorded so tests can check what reached the upstream.
//!
//! ```no_run
//! let server = kube_standin::StandIn::start_demo()?;
//! println!("kubectl --server {} get pods -A", server.url());
//! # anyhow::Ok(())
//! ```

mod api;
pub mod discovery;
pub mod exec;
pub mod protobuf;
pub mod resources;
pub mod route;
pub mod selector;
mod server;
pub mod status;
pub mod store;
pub mod table;
pub mod watch;

pub use server::{SeenRequest, StandIn};
pub use status::Status;
pub use store::Store;
