//! Watch streams: newline-delimited `{"type": ..., "object": ...}` events
//! (`application/json;stream=watch`), sent as chunks while the client listens.

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::body::{Body, Bytes, Frame};
use serde_json::{Value, json};
use tokio::sync::{broadcast, mpsc};

use crate::resources::Resource;
use crate::selector::Selector;
use crate::status::Status;
use crate::store::{Change, ChangeKind, Store};
use crate::table;

/// Longest watch the server keeps open (the apiserver's is 30–60 minutes).
pub const MAX_WATCH: Duration = Duration::from_secs(3600);
/// Events buffered for a client before the watch waits on it.
const CLIENT_BUFFER: usize = 256;

/// One encoded event line.
pub fn encode_event(event_type: &str, object: &Value) -> Bytes {
    let mut line = json!({"type": event_type, "object": object}).to_string();
    line.push('\n');
    Bytes::from(line)
}

/// What one watch wants to see.
#[derive(Debug)]
pub struct WatchSpec {
    pub resource: &'static Resource,
    /// `None` watches every namespace.
    pub namespace: Option<String>,
    pub selector: Selector,
    /// The client's `resourceVersion`: only objects and changes newer than it are
    /// sent (`0`, or absent, sends every current object as `ADDED` first).
    pub since: u64,
    /// `sendInitialEvents=true`: end the initial events with a bookmark.
    pub initial_events_bookmark: bool,
    pub timeout: Duration,
    /// Send each object as a one-row Table (`Some(include_object)`), as kubectl
    /// asks for with `Accept: ...;as=Table`.
    pub as_table: Option<bool>,
}

impl WatchSpec {
    fn wants(&self, namespace: &str, object: &Value) -> bool {
        self.namespace
            .as_deref()
            .is_none_or(|ns| !self.resource.namespaced || ns == namespace)
            && self.selector.matches(object)
    }

    fn event(&self, event_type: &str, object: &Value) -> Bytes {
        match self.as_table {
            Some(include_object) => {
                let rv = crate::api::resource_version(object);
                let table = table::build(
                    self.resource,
                    std::slice::from_ref(object),
                    rv,
                    None,
                    include_object,
                );
                encode_event(event_type, &table)
            }
            None => encode_event(event_type, object),
        }
    }
}

/// A response body fed by a channel; dropping the body (the client went away)
/// closes the channel, which ends the task that feeds it.
pub struct ChannelBody(mpsc::Receiver<Bytes>);

impl Body for ChannelBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.0
            .poll_recv(cx)
            .map(|chunk| chunk.map(|b| Ok(Frame::data(b))))
    }
}

/// Starts a watch and returns the body to send. The initial events are every
/// current object as `ADDED` (no `resourceVersion`, `0`, or
/// `sendInitialEvents`), or else the remembered changes after the client's
/// `resourceVersion`. Taking them and subscribing under the one store borrow
/// means no change falls in between.
pub fn start(spec: WatchSpec, store: &Store) -> Result<ChannelBody, Status> {
    let initial: Vec<(ChangeKind, Value)> = if spec.since == 0 || spec.initial_events_bookmark {
        store
            .list(spec.resource, spec.namespace.as_deref(), &spec.selector)
            .into_iter()
            .map(|object| (ChangeKind::Added, object))
            .collect()
    } else {
        store
            .changes_since(spec.since)?
            .into_iter()
            .filter(|c| c.resource == spec.resource.plural && spec.wants(&c.namespace, &c.object))
            .map(|c| (c.kind, c.object))
            .collect()
    };
    let (tx, rx) = mpsc::channel(CLIENT_BUFFER);
    let snapshot_rv = store.resource_version();
    tokio::spawn(run(spec, initial, snapshot_rv, store.subscribe(), tx));
    Ok(ChannelBody(rx))
}

async fn run(
    spec: WatchSpec,
    initial: Vec<(ChangeKind, Value)>,
    snapshot_rv: u64,
    mut changes: broadcast::Receiver<Change>,
    tx: mpsc::Sender<Bytes>,
) {
    for (kind, object) in initial {
        if tx.send(spec.event(kind.as_str(), &object)).await.is_err() {
            return;
        }
    }
    if spec.initial_events_bookmark {
        let bookmark = json!({"kind": spec.resource.kind, "apiVersion": spec.resource.api_version(),
                              "metadata": {"resourceVersion": snapshot_rv.to_string(),
                                           "annotations": {"k8s.io/initial-events-end": "true"}}});
        if tx.send(encode_event("BOOKMARK", &bookmark)).await.is_err() {
            return;
        }
    }
    let deadline = tokio::time::sleep(spec.timeout);
    tokio::pin!(deadline);
    loop {
        let change = tokio::select! {
            _ = tx.closed() => return,
            _ = &mut deadline => return,
            change = changes.recv() => change,
        };
        let line = match change {
            Ok(c) if c.resource != spec.resource.plural || c.resource_version <= snapshot_rv => {
                continue;
            }
            Ok(c) if !spec.wants(&c.namespace, &c.object) => continue,
            Ok(c) => spec.event(c.kind.as_str(), &c.object),
            Err(broadcast::error::RecvError::Lagged(_)) => {
                // The client must relist, as after an apiserver's 410.
                let _ = tx
                    .send(encode_event("ERROR", &Status::expired().to_json()))
                    .await;
                return;
            }
            Err(broadcast::error::RecvError::Closed) => return,
        };
        if tx.send(line).await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
#[allow(clippy::indexing_slicing)] // a missing key is a failed test
mod tests {
    use super::*;
    use crate::resources::{CONFIGMAPS, PODS};
    use crate::store::Store;
    use http_body_util::BodyExt;

    fn spec(selector: Selector, since: u64) -> WatchSpec {
        WatchSpec {
            resource: &PODS,
            namespace: Some("dev".into()),
            selector,
            since,
            initial_events_bookmark: false,
            timeout: Duration::from_secs(30),
            as_table: None,
        }
    }

    async fn next_line(body: &mut ChannelBody) -> Value {
        let frame = body.frame().await.unwrap().unwrap();
        let bytes = frame.into_data().unwrap();
        assert_eq!(bytes.last(), Some(&b'\n'), "one event per line");
        serde_json::from_slice(&bytes).unwrap()
    }

    #[test]
    fn encodes_one_json_object_per_line() {
        let line = encode_event("ADDED", &json!({"kind": "Pod"}));
        assert_eq!(
            &line[..],
            b"{\"object\":{\"kind\":\"Pod\"},\"type\":\"ADDED\"}\n"
        );
    }

    #[tokio::test]
    async fn sends_current_objects_then_later_changes() {
        let mut store = Store::demo();
        let mut body = start(spec(Selector::default(), 0), &store).unwrap();
        let added = next_line(&mut body).await;
        assert_eq!(added["type"], "ADDED");
        assert_eq!(added["object"]["metadata"]["name"], "web-0");
        // Changes elsewhere are filtered out; the matching delete arrives.
        let cm = json!({"metadata": {"name": "c"}});
        store.create(&CONFIGMAPS, "dev", cm).unwrap();
        let pod = json!({"metadata": {"name": "p"}, "spec": {"containers": []}});
        store.create(&PODS, "prod", pod).unwrap();
        store.delete(&PODS, "dev", "web-0").unwrap();
        let deleted = next_line(&mut body).await;
        assert_eq!(deleted["type"], "DELETED");
        assert_eq!(deleted["object"]["metadata"]["name"], "web-0");
    }

    #[tokio::test]
    async fn honours_the_name_selector() {
        let mut store = Store::demo().with_pods("dev", 3);
        let selector = Selector::default().and_name("pod-0001");
        let mut body = start(spec(selector, store.resource_version()), &store).unwrap();
        store.delete(&PODS, "dev", "pod-0000").unwrap();
        store.delete(&PODS, "dev", "pod-0001").unwrap();
        let event = next_line(&mut body).await;
        assert_eq!(event["type"], "DELETED");
        assert_eq!(event["object"]["metadata"]["name"], "pod-0001");
    }

    #[tokio::test]
    async fn replays_changes_after_an_older_resource_version() {
        let mut store = Store::demo();
        let listed_at = store.resource_version();
        // Happens between kubectl's list and its watch request.
        store.delete(&PODS, "dev", "web-0").unwrap();
        let mut body = start(spec(Selector::default(), listed_at), &store).unwrap();
        let event = next_line(&mut body).await;
        assert_eq!(event["type"], "DELETED");
        assert_eq!(event["object"]["metadata"]["name"], "web-0");
        // Too old to replay: the client must relist.
        let expired = start(spec(Selector::default(), 5), &store).err().unwrap();
        assert_eq!(expired.code, 410);
    }

    #[tokio::test]
    async fn table_watches_wrap_each_object_in_a_row() {
        let store = Store::demo();
        let mut s = spec(Selector::default(), 0);
        s.as_table = Some(false);
        let mut body = start(s, &store).unwrap();
        let added = next_line(&mut body).await;
        assert_eq!(added["object"]["kind"], "Table");
        assert_eq!(added["object"]["rows"][0]["cells"][0], "web-0");
    }

    #[tokio::test]
    async fn ends_when_the_timeout_elapses() {
        let store = Store::new();
        let mut s = spec(Selector::default(), 0);
        s.timeout = Duration::from_millis(10);
        let mut body = start(s, &store).unwrap();
        assert!(body.frame().await.is_none());
    }
}
