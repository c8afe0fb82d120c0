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
use crate::store::{Change, ChangeKind};
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
                let rv = object
                    .pointer("/metadata/resourceVersion")
                    .and_then(Value::as_str)
                    .and_then(|rv| rv.parse().ok())
                    .unwrap_or(0);
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

/// Starts a watch: `current` is the snapshot taken together with `changes`
/// (under one lock, at resourceVersion `snapshot_rv`). Returns the body to send.
pub fn start(
    spec: WatchSpec,
    current: Vec<Value>,
    snapshot_rv: u64,
    changes: broadcast::Receiver<Change>,
) -> ChannelBody {
    let (tx, rx) = mpsc::channel(CLIENT_BUFFER);
    tokio::spawn(run(spec, current, snapshot_rv, changes, tx));
    ChannelBody(rx)
}

async fn run(
    spec: WatchSpec,
    current: Vec<Value>,
    snapshot_rv: u64,
    mut changes: broadcast::Receiver<Change>,
    tx: mpsc::Sender<Bytes>,
) {
    for object in current {
        let rv = object
            .pointer("/metadata/resourceVersion")
            .and_then(Value::as_str)
            .and_then(|rv| rv.parse::<u64>().ok())
            .unwrap_or(0);
        if rv > spec.since
            && tx
                .send(encode_event(ChangeKind::Added.as_str(), &object))
                .await
                .is_err()
        {
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
            Ok(c)
                if c.resource != spec.resource.plural
                    || c.resource_version <= snapshot_rv.max(spec.since) =>
            {
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
        let changes = store.subscribe();
        let current = store.list(&PODS, Some("dev"), &Selector::default());
        let mut body = start(
            spec(Selector::default(), 0),
            current,
            store.resource_version(),
            changes,
        );
        let added = next_line(&mut body).await;
        assert_eq!(added["type"], "ADDED");
        assert_eq!(added["object"]["metadata"]["name"], "web-0");
        // Changes elsewhere are filtered out; the matching delete arrives.
        store
            .create(&CONFIGMAPS, "dev", json!({"metadata": {"name": "c"}}))
            .unwrap();
        store
            .create(
                &PODS,
                "prod",
                json!({"metadata": {"name": "p"}, "spec": {"containers": []}}),
            )
            .unwrap();
        store.delete(&PODS, "dev", "web-0").unwrap();
        let deleted = next_line(&mut body).await;
        assert_eq!(deleted["type"], "DELETED");
        assert_eq!(deleted["object"]["metadata"]["name"], "web-0");
    }

    #[tokio::test]
    async fn honours_the_name_selector_and_resource_version() {
        let mut store = Store::demo().with_pods("dev", 3);
        let changes = store.subscribe();
        let current = store.list(&PODS, Some("dev"), &Selector::default());
        let selector = Selector::default().and_name("pod-0001");
        let rv = store.resource_version();
        let mut body = start(spec(selector, rv), current, rv, changes);
        store.delete(&PODS, "dev", "pod-0000").unwrap();
        store.delete(&PODS, "dev", "pod-0001").unwrap();
        let event = next_line(&mut body).await;
        assert_eq!(event["type"], "DELETED");
        assert_eq!(event["object"]["metadata"]["name"], "pod-0001");
    }

    #[tokio::test]
    async fn ends_when_the_timeout_elapses() {
        let store = Store::new();
        let mut s = spec(Selector::default(), 0);
        s.timeout = Duration::from_millis(10);
        let mut body = start(s, Vec::new(), store.resource_version(), store.subscribe());
        assert!(body.frame().await.is_none());
    }
}
