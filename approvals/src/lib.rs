//! gatehouse's approval service: people approve risky statements and requests
//! that gatehouse's filters hold back, and grant time windows.
//!
//! - [`config`]: the configuration document;
//! - [`store`]: requests, records and the outbox in PostgreSQL (migrations at
//!   start; row locks make replicas safe);
//! - [`api`]: the HTTP JSON API for filters, the CLI and people;
//! - [`notify`]: webhook notifications and record delivery;
//! - [`client`]: the service's own outgoing HTTP calls.
//!
//! The rules (who may approve, how many, single use or window) are the state
//! machine in `gatehouse_core::approval`; this crate stores and serves it.

pub mod api;
pub mod client;
pub mod config;
pub mod notify;
pub mod store;

use config::Config;
use gatehouse_core::identity::Verifier;
use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, RwLock};
use std::time::Duration;
use store::{Deliveries, Store, now_us};

/// Why the service could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("configuration: {0}")]
    Config(#[from] gatehouse_core::config::ConfigError),
    #[error("database: {0}")]
    Store(#[from] store::StoreError),
    #[error("listening on {0}: {1}")]
    Listen(SocketAddr, std::io::Error),
}

/// Connects, migrates and starts listening; returns the bound address and the
/// future that serves until the process ends.
pub async fn start(
    config: Config,
) -> Result<(SocketAddr, impl std::future::Future<Output = ()>), StartError> {
    let store = Arc::new(Store::new(
        &config.database_url,
        Deliveries {
            records: config.records_url.is_some(),
            webhook: config.webhook.is_some(),
        },
    ));
    let applied = store.migrate().await?;
    if applied > 0 {
        eprintln!("gatehouse-approvals: applied {applied} schema migration(s)");
    }
    let verifier = Arc::new(RwLock::new(Verifier::from_config(&config.identity)?));
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|e| StartError::Listen(config.listen, e))?;
    let address = listener
        .local_addr()
        .map_err(|e| StartError::Listen(config.listen, e))?;
    tokio::spawn(keys::refresh(
        Arc::clone(&verifier),
        config.clusters.clone(),
    ));
    tokio::spawn(sweep(Arc::clone(&store), config.sweep_ms));
    tokio::spawn(notify::run(
        Arc::clone(&store),
        notify::Targets {
            webhook: config.webhook.clone(),
            records_url: config.records_url.clone(),
        },
    ));
    let api = Arc::new(api::Api {
        store,
        verifier,
        filter_key: config.filter_key,
        scopes: config.scopes,
        max_pending_per_requester: config.max_pending_per_requester,
        counter: AtomicU64::new(0),
    });
    Ok((address, serve(listener, api)))
}

async fn serve(listener: tokio::net::TcpListener, api: Arc<api::Api>) {
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                eprintln!("gatehouse-approvals: accept: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let api = Arc::clone(&api);
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request| {
                let api = Arc::clone(&api);
                async move { Ok::<_, std::convert::Infallible>(api.handle(request).await) }
            });
            let io = hyper_util::rt::TokioIo::new(stream);
            let _ =
                hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new())
                    .serve_connection(io, service)
                    .await;
        });
    }
}

/// Expires what is due, every `period_ms`.
async fn sweep(store: Arc<Store>, period_ms: u64) {
    loop {
        tokio::time::sleep(Duration::from_millis(period_ms)).await;
        if let Err(e) = store.sweep(now_us()).await {
            eprintln!("gatehouse-approvals: expiry sweep: {e}");
        }
    }
}

/// Remote key sets, fetched as the filters' glue does.
mod keys {
    use super::*;

    pub async fn refresh(
        verifier: Arc<RwLock<Verifier>>,
        clusters: std::collections::BTreeMap<String, String>,
    ) {
        loop {
            let now = i64::try_from(now_us() / 1_000_000).unwrap_or(i64::MAX);
            let due = match verifier.write() {
                Ok(mut v) => v.refreshes_due(now),
                Err(_) => return,
            };
            for fetch in due {
                let url = clusters
                    .get(&fetch.cluster)
                    .map(|base| format!("{}{}", base.trim_end_matches('/'), fetch.path));
                let result = match url {
                    Some(url) => crate::client::call(crate::client::Outgoing::new("GET", &url))
                        .await
                        .map_err(|e| e.to_string()),
                    None => Err(format!("no URL for cluster {}", fetch.cluster)),
                };
                if let Ok(mut v) = verifier.write() {
                    let outcome = match result {
                        Ok(body) => v.keys_fetched(&fetch.issuer, &body, now),
                        Err(e) => Err(e),
                    };
                    if let Err(e) = outcome {
                        v.keys_failed(&fetch.issuer, now, &e);
                        eprintln!("gatehouse-approvals: keys of {}: {e}", fetch.issuer);
                    }
                }
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
}
