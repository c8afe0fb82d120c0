//! Stand-in Kubernetes API server for gatehouse's tests and demo.
//!
//! Plain HTTP/1.1 (Envoy in front terminates TLS). Real kubectl (1.27–1.33)
//! works against it:
//!
//! - `/version` (minor configurable: the `kubectl` dispatcher picks its client by it);
//! - discovery, aggregated (`apidiscovery.k8s.io` v2 or v2beta1, only in a version
//!   the client asked for) or legacy, and a minimal `/openapi/v3` that lets
//!   `kubectl apply` leave validation to the server (`/openapi/v2` is 404);
//! - namespaces, pods, secrets, configmaps, events, deployments,
//!   controllerrevisions and two custom resources (`databasecredentials` and
//!   `workflows` in `example.com`): get, list (a `List`, or the `Table` kubectl
//!   asks for; paged by `limit`/`continue`), watch (current objects or
//!   replayed changes, then live ones), create (JSON, or the protobuf
//!   kubectl's typed `create` commands send), update, merge patch, delete,
//!   deletecollection, each also as a dry run (`dryRun=All`); field and label
//!   selectors;
//! - the `status`, `ephemeralcontainers` and `scale` subresources (read, and
//!   written one part of the object at a time);
//! - object answers in JSON, YAML, or protobuf for a client that accepts only
//!   protobuf ([`media`]), and `reports` in `legacy.example.com`, an API that
//!   answers YAML whatever it is asked;
//! - pod logs (fixed lines), and exec/attach over WebSocket (`v5.channel.k8s.io`
//!   or `v4`) and SPDY/3.1 (`v4.channel.k8s.io`), running a small interactive
//!   shell ([`shell`]: a prompt, echo on a terminal, a few commands);
//!   port-forward is refused with a Status;
//! - errors are `metav1.Status` bodies shaped as the apiserver's.
//!
//! Every request is recorded ([`StandIn::requests`]) so tests can check which
//! headers reached the upstream. The `kube-standin` binary serves the demo data
//! until SIGTERM: `kube-standin --listen 127.0.0.1:0 [--pods N]
//! [--pods-namespace NS] [--minor 33] [--port-file PATH]`.
//!
//! ```no_run
//! let server = kube_standin::StandIn::start_demo()?;
//! println!("kubectl --server {} get pods -A", server.url());
//! # anyhow::Ok(())
//! ```

mod api;
pub mod discovery;
pub mod exec;
pub mod media;
pub mod protobuf;
pub mod resources;
pub mod route;
pub mod selector;
mod server;
pub mod shell;
pub mod spdy;
pub mod status;
pub mod store;
pub mod table;
pub mod watch;

pub use server::{SeenRequest, StandIn};
pub use status::Status;
pub use store::Store;
