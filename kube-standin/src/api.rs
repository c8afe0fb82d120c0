//! Request handling: discovery, CRUD, list/watch, logs and exec.

use std::convert::Infallible;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};

use crate::discovery::{self, DiscoveryFormat};
use crate::exec;
use crate::media::Media;
use crate::protobuf;
use crate::resources::{self, NAMESPACES, PODS, Resource};
use crate::route::{self, Query, Route, Target};
use crate::selector::Selector;
use crate::spdy;
use crate::status::{self, Status};
use crate::store::{self, Store};
use crate::table;
use crate::watch::{self, WatchSpec};

/// Response body: a whole buffer or a stream (watch).
pub type Body = BoxBody<Bytes, Infallible>;
type Answer = Result<Response<Body>, Status>;

/// Largest request body accepted (the apiserver's limit is 3 MiB).
const MAX_BODY: usize = 3 << 20;

/// The store shared by all connections.
pub type SharedStore = Arc<Mutex<Store>>;

fn lock(store: &SharedStore) -> MutexGuard<'_, Store> {
    // A panic while holding the lock cannot leave the map half-written in a way
    // that matters for a test server; keep serving.
    store
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Answers one request.
pub async fn handle(store: SharedStore, req: Request<Incoming>) -> Response<Body> {
    let result = match route::parse(req.uri().path()) {
        Route::Resource(target) => resource_request(&store, target, req).await,
        Route::Paths => Ok(json_response(StatusCode::OK, &paths())),
        Route::Health => Ok(response(StatusCode::OK, "text/plain; charset=utf-8", "ok")),
        Route::Version => {
            let minor = lock(&store).version_minor();
            Ok(json_response(StatusCode::OK, &discovery::version(minor)))
        }
        Route::DiscoveryRoot { core } => {
            let format = discovery::negotiate(Some(header(&req, "accept")));
            let body = discovery::root(core, format);
            Ok(discovery_response(format, &body))
        }
        Route::Group(group) => discovery::api_group(&group)
            .map(|g| json_response(StatusCode::OK, &g))
            .ok_or_else(Status::no_such_path),
        Route::ResourceList { group, version } => discovery::resource_list(&group, &version)
            .map(|l| json_response(StatusCode::OK, &l))
            .ok_or_else(Status::no_such_path),
        Route::OpenApiRoot => Ok(json_response(StatusCode::OK, &discovery::openapi_v3_root())),
        Route::OpenApiGroupVersion { group, version } => {
            discovery::openapi_v3_group_version(&group, &version)
                .map(|doc| json_response(StatusCode::OK, &doc))
                .ok_or_else(Status::no_such_path)
        }
        Route::Unknown => Err(Status::no_such_path()),
    };
    result.unwrap_or_else(|status| status_response(&status))
}

async fn resource_request(store: &SharedStore, target: Target, req: Request<Incoming>) -> Answer {
    let query = Query::parse(req.uri().query());
    let resource = target.resource;
    let method = req.method().clone();
    // `Some(include_object)` when the client asked for a Table (kubectl get).
    let as_table = (table::wanted(header(&req, "accept")) && !resource.yaml_only)
        .then(|| query.get("includeObject") == Some("Object"));
    let media = if resource.yaml_only {
        Ok(Media::Yaml)
    } else {
        Media::negotiate(header(&req, "accept")).ok_or_else(Status::not_acceptable)
    };
    let dry_run = dry_run(&query)?;
    if let Some(sub) = target.subresource.clone() {
        return subresource_request(store, &target, &sub, &query, req, (media, dry_run)).await;
    }
    let ns = target.namespace.as_str();
    // A write that is a dry run is computed on the store and forgotten.
    let write = |change: &dyn Fn(&mut Store) -> Result<Value, Status>| {
        let mut store = lock(store);
        if dry_run {
            store.dry_run(|store| change(store))
        } else {
            change(&mut store)
        }
    };
    match (&target.name, &method) {
        (None, &Method::GET | &Method::HEAD) if target.watch_prefix || query.flag("watch") => {
            start_watch(store, &target, &query, None, as_table)
        }
        (None, &Method::GET | &Method::HEAD) => list(store, &target, &query, as_table, media),
        (None, &Method::POST) => {
            let object = read_json(req, false).await?;
            let created = write(&|store| store.create(resource, ns, object.clone()))?;
            object_response(media, StatusCode::CREATED, &created)
        }
        (None, &Method::DELETE) => {
            read_body(req).await?;
            let selector = selector(&query)?;
            let namespace = target.namespaced_path.then_some(ns);
            let list = write(&|store| {
                let doomed = store.list(resource, namespace, &selector);
                let mut deleted = Vec::with_capacity(doomed.len());
                for object in doomed {
                    let (obj_ns, name) = identity(&object);
                    deleted.push(store.delete(resource, &obj_ns, &name)?);
                }
                let rv = store.resource_version();
                Ok(list_body(resource, deleted, rv, None))
            })?;
            object_response(media, StatusCode::OK, &list)
        }
        // The deprecated `/watch/` prefix watches one object; a `?watch` on
        // a named GET is ignored, as the apiserver's item GET ignores it.
        (Some(name), &Method::GET | &Method::HEAD) if target.watch_prefix => {
            start_watch(store, &target, &query, Some(name), as_table)
        }
        (Some(name), &Method::GET | &Method::HEAD) => {
            let object = lock(store).get(resource, ns, name)?;
            match as_table {
                Some(include_object) => {
                    let one = std::slice::from_ref(&object);
                    let table = table::build(
                        resource,
                        one,
                        resource_version(&object),
                        None,
                        include_object,
                    );
                    Ok(json_response(StatusCode::OK, &table))
                }
                None => object_response(media, StatusCode::OK, &object),
            }
        }
        (Some(name), &Method::PUT) => {
            let object = read_json(req, false).await?;
            let updated = write(&|store| store.update(resource, ns, name, object.clone()))?;
            object_response(media, StatusCode::OK, &updated)
        }
        (Some(name), &Method::PATCH) => {
            let patch = read_json(req, true).await?;
            let patched = write(&|store| store.merge_patch(resource, ns, name, &patch))?;
            object_response(media, StatusCode::OK, &patched)
        }
        (Some(name), &Method::DELETE) => {
            read_body(req).await?;
            let deleted = write(&|store| store.delete(resource, ns, name))?;
            // Objects with graceful deletion or finalizers come back whole; the
            // rest answer with a Success Status, as in the apiserver.
            if resource.plural == PODS.plural || resource.plural == NAMESPACES.plural {
                return object_response(media, StatusCode::OK, &deleted);
            }
            let mut body = status::success();
            if let Value::Object(map) = &mut body {
                let uid = deleted
                    .pointer("/metadata/uid")
                    .cloned()
                    .unwrap_or(Value::Null);
                let mut details = serde_json::Map::new();
                details.insert("name".into(), name.as_str().into());
                details.insert("kind".into(), resource.plural.into());
                details.insert("uid".into(), uid);
                if !resource.group.is_empty() {
                    details.insert("group".into(), resource.group.into());
                }
                map.insert("details".into(), Value::Object(details));
            }
            Ok(json_response(StatusCode::OK, &body))
        }
        _ => Err(Status::method_not_supported(
            resource,
            &resource.qualified(),
            &verb(&method),
        )),
    }
}

/// Whether the request is a dry run: `dryRun=All` (the only value the
/// apiserver accepts).
fn dry_run(query: &Query) -> Result<bool, Status> {
    let values = query.all("dryRun");
    match values.iter().find(|value| value.as_str() != "All") {
        Some(other) => Err(Status::bad_request(format!(
            "Invalid value: {other:?}: supported values: \"All\""
        ))),
        None => Ok(!values.is_empty()),
    }
}

/// The part of an object a subresource reads and writes.
fn subresource_part(sub: &str) -> Option<&'static str> {
    match sub {
        "status" => Some("/status"),
        "ephemeralcontainers" => Some("/spec/ephemeralContainers"),
        "scale" => Some("/spec/replicas"),
        _ => None,
    }
}

/// Marks every ephemeral container of a pod running, as a kubelet soon
/// would: `kubectl debug` waits for that before it attaches.
fn start_ephemeral_containers(pod: &mut Value) {
    let started = store::now_rfc3339();
    let statuses: Vec<Value> = pod
        .pointer("/spec/ephemeralContainers")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|container| {
            json!({
                "name": container.get("name").cloned().unwrap_or_default(),
                "image": container.get("image").cloned().unwrap_or_default(),
                "imageID": "",
                "ready": false,
                "restartCount": 0,
                "state": {"running": {"startedAt": started}},
            })
        })
        .collect();
    if let Some(Value::Object(status)) = pod.get_mut("status") {
        status.insert(
            "ephemeralContainerStatuses".to_owned(),
            Value::Array(statuses),
        );
    }
}

/// A Deployment seen through its `scale` subresource.
fn scale_of(object: &Value) -> Value {
    let replicas = object
        .pointer("/spec/replicas")
        .cloned()
        .unwrap_or_else(|| 0.into());
    let ready = object
        .pointer("/status/replicas")
        .cloned()
        .unwrap_or_else(|| 0.into());
    let metadata = object.get("metadata").cloned().unwrap_or_else(|| json!({}));
    json!({"kind": "Scale", "apiVersion": "autoscaling/v1", "metadata": metadata,
           "spec": {"replicas": replicas}, "status": {"replicas": ready, "selector": "app=web"}})
}

async fn subresource_request(
    store: &SharedStore,
    target: &Target,
    sub: &str,
    query: &Query,
    req: Request<Incoming>,
    (media, dry_run): (Result<Media, Status>, bool),
) -> Answer {
    let resource = target.resource;
    let name = target.name.as_deref().unwrap_or_default();
    let known = resource.subresources.iter().any(|(s, _, _)| *s == sub);
    if !known {
        return Err(Status::no_such_path());
    }
    let qualified = format!("{}/{sub}", resource.qualified());
    let ns = target.namespace.as_str();
    // What the subresource answers with: the whole object, or its Scale.
    let view = |object: &Value| {
        if sub == "scale" {
            scale_of(object)
        } else {
            object.clone()
        }
    };
    match (sub, req.method()) {
        ("exec" | "attach", &Method::GET | &Method::POST) => {
            let pod = lock(store).get(resource, &target.namespace, name)?;
            let argv = check_connect(&pod, sub, query)?;
            let spec = exec::ExecSpec {
                argv,
                tty: query.flag("tty"),
                stdin: query.flag("stdin"),
                stdout: query.flag("stdout") || sub == "attach",
                stderr: query.flag("stderr"),
                hostname: name.to_owned(),
            };
            if req.method() == Method::POST {
                connect_spdy(spec, req)
            } else {
                connect_websocket(spec, req)
            }
        }
        ("portforward", &Method::GET | &Method::POST) => {
            lock(store).get(resource, &target.namespace, name)?;
            Err(Status::bad_request(
                "port-forward is not supported by this server",
            ))
        }
        ("log", &Method::GET) => {
            let pod = lock(store).get(resource, &target.namespace, name)?;
            let container = container(&pod, query.get("container"))?;
            Ok(response(
                StatusCode::OK,
                "text/plain",
                log_lines(name, &container, query),
            ))
        }
        ("status" | "ephemeralcontainers" | "scale", &Method::GET) => {
            let object = lock(store).get(resource, ns, name)?;
            object_response(media, StatusCode::OK, &view(&object))
        }
        ("status" | "ephemeralcontainers" | "scale", &Method::PUT | &Method::PATCH) => {
            let patch = req.method() == Method::PATCH;
            let sent = read_json(req, patch).await?;
            let pointer = subresource_part(sub).unwrap_or_default();
            let change = |store: &mut Store| {
                let current = store.get(resource, ns, name)?;
                // What the client asked for, in the subresource's own shape.
                let mut wanted = if patch { view(&current) } else { sent.clone() };
                if patch {
                    store::merge(&mut wanted, &sent);
                }
                let part = match sub {
                    "scale" => wanted.pointer("/spec/replicas").cloned(),
                    _ => wanted.pointer(pointer).cloned(),
                };
                // Only that part changes; the rest of the object stays.
                let mut object = current;
                let (parent, field) = pointer.rsplit_once('/').unwrap_or_default();
                if let Some(Value::Object(parent)) = object.pointer_mut(parent) {
                    match part {
                        Some(value) => parent.insert(field.to_owned(), value),
                        None => parent.remove(field),
                    };
                }
                if sub == "ephemeralcontainers" {
                    start_ephemeral_containers(&mut object);
                }
                store.replace(resource, ns, name, object)
            };
            let mut guard = lock(store);
            let stored = if dry_run {
                guard.dry_run(change)?
            } else {
                change(&mut guard)?
            };
            object_response(media, StatusCode::OK, &view(&stored))
        }
        (_, method) => Err(Status::method_not_supported(
            resource,
            &qualified,
            &verb(method),
        )),
    }
}

/// Checks an exec/attach request against the pod as the apiserver and kubelet
/// would, and returns the argv to echo (empty for attach).
fn check_connect(pod: &Value, sub: &str, query: &Query) -> Result<Vec<String>, Status> {
    let name = pod
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let phase = pod
        .pointer("/status/phase")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if phase == "Succeeded" || phase == "Failed" {
        return Err(Status::bad_request(format!(
            "cannot {sub} into a container in a completed pod; current phase is {phase}"
        )));
    }
    container(pod, query.get("container"))?;
    let argv = if sub == "exec" {
        query.all("command")
    } else {
        Vec::new()
    };
    if sub == "exec" && argv.is_empty() {
        return Err(Status::bad_request(format!(
            "you must specify at least one command for the container of pod {name}"
        )));
    }
    Ok(argv)
}

/// The exec/attach over SPDY/3.1: answer 101 with the chosen stream
/// protocol, then run the session on the upgraded connection.
fn connect_spdy(spec: exec::ExecSpec, mut req: Request<Incoming>) -> Answer {
    let upgrade_header = header(&req, "upgrade").to_ascii_lowercase();
    if !upgrade_header.starts_with("spdy/3.1") {
        return Err(Status::bad_request("expected an Upgrade: SPDY/3.1 request"));
    }
    let offered = req
        .headers()
        .get_all("x-stream-protocol-version")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect::<Vec<_>>();
    let protocol = spdy::negotiate(offered.iter().copied()).ok_or_else(|| {
        Status::bad_request(format!(
            "none of the offered stream protocols {offered:?} is supported (want one of {:?})",
            spdy::PROTOCOLS
        ))
    })?;
    let upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        if let Ok(upgraded) = upgrade.await
            && let Err(error) = spdy::run_session(TokioIo::new(upgraded), spec).await
        {
            eprintln!("kube-standin: SPDY exec session: {error:#}");
        }
    });
    let mut response = Response::new(empty());
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = response.headers_mut();
    headers.insert("upgrade", HeaderValue::from_static("SPDY/3.1"));
    headers.insert("connection", HeaderValue::from_static("Upgrade"));
    headers.insert(
        "x-stream-protocol-version",
        HeaderValue::from_static(protocol),
    );
    Ok(response)
}

/// The exec/attach WebSocket: answer 101, then run the session on the
/// upgraded connection.
fn connect_websocket(spec: exec::ExecSpec, mut req: Request<Incoming>) -> Answer {
    let handshake = exec::handshake(req.headers())?;
    let upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        if let Ok(upgraded) = upgrade.await {
            // A client that vanishes mid-session is not an error worth reporting.
            let _ = exec::run_session(TokioIo::new(upgraded), spec).await;
        }
    });
    let mut response = Response::new(empty());
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = response.headers_mut();
    headers.insert("upgrade", HeaderValue::from_static("websocket"));
    headers.insert("connection", HeaderValue::from_static("Upgrade"));
    headers.insert(
        "sec-websocket-protocol",
        HeaderValue::from_static(handshake.protocol),
    );
    let accept =
        HeaderValue::from_str(&handshake.accept).map_err(|e| Status::internal(e.to_string()))?;
    headers.insert("sec-websocket-accept", accept);
    Ok(response)
}

fn list(
    store: &SharedStore,
    target: &Target,
    query: &Query,
    as_table: Option<bool>,
    media: Result<Media, Status>,
) -> Answer {
    let selector = selector(query)?;
    let (items, rv) = {
        let store = lock(store);
        let namespace = target.namespaced_path.then_some(target.namespace.as_str());
        (
            store.list(target.resource, namespace, &selector),
            store.resource_version(),
        )
    };
    let offset = match query.get("continue").filter(|c| !c.is_empty()) {
        Some(token) => token
            .parse::<usize>()
            .ok()
            .filter(|o| *o <= items.len())
            .ok_or_else(|| Status::bad_request("continue key is not valid"))?,
        None => 0,
    };
    let limit = query
        .get("limit")
        .and_then(|l| l.parse::<usize>().ok())
        .filter(|l| *l > 0);
    let end = limit.map_or(items.len(), |l| offset.saturating_add(l).min(items.len()));
    let page: Vec<Value> = items
        .iter()
        .skip(offset)
        .take(end - offset)
        .cloned()
        .collect();
    let more = (end < items.len()).then(|| (end, items.len() - end));
    if let Some(include_object) = as_table {
        return Ok(json_response(
            StatusCode::OK,
            &table::build(target.resource, &page, rv, more, include_object),
        ));
    }
    object_response(
        media,
        StatusCode::OK,
        &list_body(target.resource, page, rv, more),
    )
}

/// A list's `metadata`: its resource version, and where the next page
/// starts when paged (`more` is `(next offset, remaining count)`).
pub(crate) fn list_metadata(rv: u64, more: Option<(usize, usize)>) -> Value {
    let mut metadata = serde_json::Map::new();
    metadata.insert("resourceVersion".into(), rv.to_string().into());
    if let Some((next, remaining)) = more {
        metadata.insert("continue".into(), next.to_string().into());
        metadata.insert("remainingItemCount".into(), remaining.into());
    }
    Value::Object(metadata)
}

/// A `<Kind>List`; `more` is `(next offset, remaining count)` when paged.
fn list_body(
    resource: &Resource,
    items: Vec<Value>,
    rv: u64,
    more: Option<(usize, usize)>,
) -> Value {
    // Items in a list carry no kind/apiVersion, as from the apiserver.
    let items: Vec<Value> = items
        .into_iter()
        .map(|mut item| {
            if let Some(map) = item.as_object_mut() {
                map.remove("kind");
                map.remove("apiVersion");
            }
            item
        })
        .collect();
    let metadata = list_metadata(rv, more);
    json!({"kind": resource.list_kind(), "apiVersion": resource.api_version(), "metadata": metadata, "items": items})
}

fn start_watch(
    store: &SharedStore,
    target: &Target,
    query: &Query,
    name: Option<&str>,
    as_table: Option<bool>,
) -> Answer {
    let mut selector = selector(query)?;
    if let Some(name) = name {
        selector = selector.and_name(name);
    }
    let since = match query.get("resourceVersion").filter(|v| !v.is_empty()) {
        Some(v) => v
            .parse::<u64>()
            .map_err(|_| Status::bad_request(format!("invalid resource version: {v:?}")))?,
        None => 0,
    };
    let timeout = query
        .get("timeoutSeconds")
        .and_then(|t| t.parse::<u64>().ok())
        .map_or(watch::MAX_WATCH, |t| {
            Duration::from_secs(t).min(watch::MAX_WATCH)
        });
    let namespace = target.namespaced_path.then(|| target.namespace.clone());
    let spec = WatchSpec {
        resource: target.resource,
        namespace,
        selector,
        since,
        initial_events_bookmark: query.flag("sendInitialEvents"),
        timeout,
        as_table,
    };
    let body = watch::start(spec, &lock(store))?;
    let mut response = Response::new(body.boxed());
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/json;stream=watch"),
    );
    Ok(response)
}

fn selector(query: &Query) -> Result<Selector, Status> {
    Selector::parse(query.get("fieldSelector"), query.get("labelSelector"))
}

/// The named container, or the only one when none is named.
fn container(pod: &Value, wanted: Option<&str>) -> Result<String, Status> {
    let name = pod
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let names: Vec<&str> = pod
        .pointer("/spec/containers")
        .and_then(Value::as_array)
        .map(|cs| {
            cs.iter()
                .filter_map(|c| c.get("name").and_then(Value::as_str))
                .collect()
        })
        .unwrap_or_default();
    // Ephemeral containers (`kubectl debug`) may be named, never defaulted to.
    let ephemeral = pod
        .pointer("/spec/ephemeralContainers")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|c| c.get("name").and_then(Value::as_str));
    match (wanted, names.as_slice()) {
        (Some(w), _) if names.contains(&w) || ephemeral.clone().any(|e| e == w) => {
            Ok(w.to_string())
        }
        (Some(w), _) => Err(Status::bad_request(format!(
            "container {w} is not valid for pod {name}"
        ))),
        (None, [only]) => Ok(only.to_string()),
        (None, _) => Err(Status::bad_request(format!(
            "a container name must be specified for pod {name}, choose one of: {names:?}"
        ))),
    }
}

/// Fixed log text (honours `tailLines`).
fn log_lines(pod: &str, container: &str, query: &Query) -> String {
    let lines = [
        format!("2026-11-01T08:00:01Z {pod}/{container} starting"),
        format!("2026-11-01T08:00:02Z {pod}/{container} listening on :8080"),
        format!("2026-11-01T08:00:03Z {pod}/{container} ready"),
    ];
    let tail = query
        .get("tailLines")
        .and_then(|t| t.parse::<usize>().ok())
        .unwrap_or(lines.len());
    let skip = lines.len().saturating_sub(tail);
    lines.iter().skip(skip).map(|l| format!("{l}\n")).collect()
}

/// An object's `metadata.resourceVersion` as a number (0 when absent).
pub(crate) fn resource_version(object: &Value) -> u64 {
    object
        .pointer("/metadata/resourceVersion")
        .and_then(Value::as_str)
        .and_then(|rv| rv.parse().ok())
        .unwrap_or(0)
}

fn identity(object: &Value) -> (String, String) {
    let text = |p: &str| {
        object
            .pointer(p)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    (text("/metadata/namespace"), text("/metadata/name"))
}

/// The RequestInfo verb of a method, for 405 messages.
fn verb(method: &Method) -> String {
    match *method {
        Method::POST => "create".into(),
        Method::GET | Method::HEAD => "get".into(),
        Method::PUT => "update".into(),
        Method::PATCH => "patch".into(),
        Method::DELETE => "delete".into(),
        ref other => other.as_str().to_ascii_lowercase(),
    }
}

fn paths() -> Value {
    let mut paths = vec![
        "/api".to_string(),
        "/api/v1".to_string(),
        "/apis".to_string(),
    ];
    for (group, version) in resources::GROUP_VERSIONS
        .iter()
        .filter(|(g, _)| !g.is_empty())
    {
        paths.push(format!("/apis/{group}"));
        paths.push(format!("/apis/{group}/{version}"));
    }
    paths.extend(["/healthz", "/livez", "/readyz", "/version"].map(String::from));
    json!({"paths": paths})
}

fn header<'a>(req: &'a Request<Incoming>, name: &str) -> &'a str {
    req.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

async fn read_body(req: Request<Incoming>) -> Result<Bytes, Status> {
    Limited::new(req.into_body(), MAX_BODY)
        .collect()
        .await
        .map(|b| b.to_bytes())
        .map_err(|_| Status::too_large(MAX_BODY))
}

/// Reads a JSON (or, for create and update, Kubernetes protobuf) body; `patch` accepts the merge-patch media types instead of plain JSON.
async fn read_json(req: Request<Incoming>, patch: bool) -> Result<Value, Status> {
    let content_type = header(&req, "content-type").to_string();
    let media = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    let protobuf = !patch && media == protobuf::MEDIA_TYPE;
    let accepted = if patch {
        matches!(
            media.as_str(),
            "application/merge-patch+json" | "application/strategic-merge-patch+json"
        )
    } else {
        matches!(media.as_str(), "application/json" | "") || protobuf
    };
    if !accepted {
        return Err(Status::unsupported_media_type(&content_type));
    }
    let body = read_body(req).await?;
    if protobuf {
        // kubectl's typed clients (`create namespace`, `create deployment`) send protobuf.
        return protobuf::decode(&body).map_err(Status::bad_request);
    }
    serde_json::from_slice(&body).map_err(|e| {
        Status::bad_request(format!("couldn't get version/kind; json parse error: {e}"))
    })
}

fn empty() -> Body {
    Full::new(Bytes::new()).boxed()
}

fn response(
    code: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> Response<Body> {
    let mut response = Response::new(Full::new(body.into()).boxed());
    *response.status_mut() = code;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

/// An object answer in the negotiated media.
fn object_response(media: Result<Media, Status>, code: StatusCode, body: &Value) -> Answer {
    let (content_type, bytes) = media?.write(body)?;
    Ok(response(code, content_type, bytes))
}

fn json_response(code: StatusCode, body: &Value) -> Response<Body> {
    response(code, "application/json", body.to_string())
}

fn discovery_response(format: DiscoveryFormat, body: &Value) -> Response<Body> {
    let mut response = json_response(StatusCode::OK, body);
    if let Ok(content_type) = HeaderValue::from_str(&format.content_type()) {
        response.headers_mut().insert(CONTENT_TYPE, content_type);
    }
    response
        .headers_mut()
        .insert("vary", HeaderValue::from_static("Accept"));
    response
}

/// A Status error; the HTTP status equals its `code`.
pub fn status_response(status: &Status) -> Response<Body> {
    let code = StatusCode::from_u16(status.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    json_response(code, &status.to_json())
}
