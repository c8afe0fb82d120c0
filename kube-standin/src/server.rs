//! The HTTP/1.1 server, its request log, and the [`StandIn`] handle.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::Context as _;
use hyper::body::Incoming;
use hyper::header::HeaderValue;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::oneshot;

use crate::api::{self, Body, SharedStore};
use crate::store::Store;

/// Requests remembered (oldest dropped first).
const MAX_SEEN: usize = 10_000;

/// One request as the stand-in received it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeenRequest {
    pub method: String,
    /// Path and query, exactly as sent.
    pub uri: String,
    /// Every header, names lowercase, in arrival order.
    pub headers: Vec<(String, String)>,
}

impl SeenRequest {
    /// The first value of a header (name in any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Every value of a repeated header (`Impersonate-Group`).
    pub fn header_all(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// The path without the query.
    pub fn path(&self) -> &str {
        self.uri.split('?').next().unwrap_or("")
    }
}

type SeenLog = Arc<Mutex<VecDeque<SeenRequest>>>;

/// A running stand-in API server on its own thread and tokio runtime.
/// Dropping it stops the server and every open stream.
pub struct StandIn {
    addr: SocketAddr,
    seen: SeenLog,
    store: SharedStore,
    shutdown: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl StandIn {
    /// Serves [`Store::demo`] on `127.0.0.1` at a free port.
    pub fn start_demo() -> anyhow::Result<StandIn> {
        StandIn::start(Store::demo(), SocketAddr::from(([127, 0, 0, 1], 0)))
    }

    /// Serves `store` on `bind` (port 0 picks a free port; see [`StandIn::addr`]).
    pub fn start(store: Store, bind: SocketAddr) -> anyhow::Result<StandIn> {
        let listener =
            std::net::TcpListener::bind(bind).with_context(|| format!("binding {bind}"))?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let seen = SeenLog::default();
        let store: SharedStore = Arc::new(Mutex::new(store));
        let (shutdown, stop) = oneshot::channel();
        let (ready, started) = std::sync::mpsc::channel::<anyhow::Result<()>>();
        let (task_seen, task_store) = (seen.clone(), store.clone());
        // The runtime lives and dies on its own thread, so starting and dropping
        // a StandIn is safe from inside another runtime (async tests).
        let thread = std::thread::Builder::new()
            .name(format!("kube-standin-{}", addr.port()))
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .thread_name("kube-standin")
                    .enable_all()
                    .build()
                {
                    Ok(runtime) => runtime,
                    Err(e) => {
                        let _ = ready.send(Err(
                            anyhow::Error::new(e).context("starting the tokio runtime")
                        ));
                        return;
                    }
                };
                runtime.block_on(async move {
                    match TcpListener::from_std(listener) {
                        Ok(listener) => {
                            let _ = ready.send(Ok(()));
                            serve(listener, task_store, task_seen, async {
                                let _ = stop.await;
                            })
                            .await;
                        }
                        Err(e) => {
                            let _ = ready.send(Err(e.into()));
                        }
                    }
                });
                // Open watches and exec sessions end with the runtime.
                runtime.shutdown_timeout(Duration::from_secs(1));
            })
            .context("spawning the server thread")?;
        started
            .recv()
            .context("the server thread ended before it was ready")??;
        Ok(StandIn {
            addr,
            seen,
            store,
            shutdown: Some(shutdown),
            thread: Some(thread),
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every request seen so far (up to the last 10,000), oldest first.
    pub fn requests(&self) -> Vec<SeenRequest> {
        self.seen
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .cloned()
            .collect()
    }

    /// Forgets the requests seen so far.
    pub fn clear_requests(&self) {
        self.seen.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }

    /// Runs `f` on the live store (to add or inspect objects; changes reach watchers).
    pub fn with_store<T>(&self, f: impl FnOnce(&mut Store) -> T) -> T {
        f(&mut self.store.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

impl Drop for StandIn {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Accepts connections until `shutdown` completes.
async fn serve(
    listener: TcpListener,
    store: SharedStore,
    seen: SeenLog,
    shutdown: impl Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            _ = &mut shutdown => return,
            accepted = listener.accept() => accepted,
        };
        let stream = match accepted {
            Ok((stream, _)) => {
                // Watch events and exec frames are small writes that must not wait.
                let _ = stream.set_nodelay(true);
                stream
            }
            Err(e) => {
                // Typically EMFILE: back off instead of spinning.
                eprintln!("kube-standin: accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let (store, seen) = (store.clone(), seen.clone());
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let (store, seen) = (store.clone(), seen.clone());
                async move { Ok::<_, std::convert::Infallible>(answer(store, seen, req).await) }
            });
            // Connection errors (client resets) only end that connection.
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .with_upgrades()
                .await;
        });
    }
}

async fn answer(store: SharedStore, seen: SeenLog, req: Request<Incoming>) -> Response<Body> {
    record(&seen, &req);
    // The apiserver adopts a client's Audit-ID and echoes it.
    let audit_id = req.headers().get("audit-id").cloned();
    let mut response = api::handle(store, req).await;
    let headers = response.headers_mut();
    headers.insert(
        "cache-control",
        HeaderValue::from_static("no-cache, private"),
    );
    if let Some(id) = audit_id {
        headers.insert("audit-id", id);
    }
    response
}

fn record(seen: &SeenLog, req: &Request<Incoming>) {
    let entry = SeenRequest {
        method: req.method().to_string(),
        uri: req
            .uri()
            .path_and_query()
            .map(|pq| pq.to_string())
            .unwrap_or_default(),
        headers: req
            .headers()
            .iter()
            .map(|(n, v)| {
                (
                    n.as_str().to_string(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect(),
    };
    let mut log = seen.lock().unwrap_or_else(|p| p.into_inner());
    if log.len() >= MAX_SEEN {
        log.pop_front();
    }
    log.push_back(entry);
}
