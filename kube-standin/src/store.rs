//! The object store: JSON objects keyed by resource, namespace and name, one
//! global resourceVersion counter, and a broadcast of changes for watches.

use std::collections::{BTreeMap, VecDeque};
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde_json::{Map, Value, json};
use tokio::sync::broadcast;

use crate::resources::{
    self, CONFIGMAPS, CONTROLLER_REVISIONS, DATABASE_CREDENTIALS, DEPLOYMENTS, NAMESPACES, PODS,
    REPORTS, Resource, SECRETS, WORKFLOWS,
};
use crate::selector::Selector;
use crate::status::Status;

/// How many changes a slow watcher may fall behind before it gets `410 Expired`.
const CHANGE_BACKLOG: usize = 4096;
/// How many past changes a watch from an older resourceVersion can replay.
const HISTORY_LEN: usize = 4096;
/// Upper bound on stored objects, so a runaway client cannot exhaust memory.
const MAX_OBJECTS: usize = 100_000;
/// Creation time of the demo objects (fixed, so demo output is stable).
const DEMO_TIME: &str = "2026-11-01T08:00:00Z";

/// The namespaces of the demo data and the password every credential in
/// each holds: a value that must never leave a masking gateway in clear.
pub const DEMO_PASSWORDS: [(&str, &str); 2] = [("dev", "dev-Passw0rd!"), ("prod", "pr0d-S3cret!")];

/// `(resource plural, namespace or "", name)`.
type Key = (&'static str, String, String);

/// What happened to an object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeKind {
    Added,
    Modified,
    Deleted,
}

impl ChangeKind {
    /// The watch event `type`.
    pub fn as_str(self) -> &'static str {
        match self {
            ChangeKind::Added => "ADDED",
            ChangeKind::Modified => "MODIFIED",
            ChangeKind::Deleted => "DELETED",
        }
    }
}

/// One change, as broadcast to watchers.
#[derive(Debug, Clone)]
pub struct Change {
    pub resource: &'static str,
    pub namespace: String,
    pub kind: ChangeKind,
    pub resource_version: u64,
    pub object: Value,
}

/// The stand-in's state. Build one with [`Store::demo`] (or [`Store::new`]) and
/// hand it to [`crate::StandIn::start`].
#[derive(Debug)]
pub struct Store {
    objects: BTreeMap<Key, Value>,
    resource_version: u64,
    uid_counter: u64,
    version_minor: u32,
    changes: broadcast::Sender<Change>,
    /// The latest changes, oldest first, for watches that start in the past.
    history: VecDeque<Change>,
    /// Changes after this resourceVersion are all in `history`.
    history_floor: u64,
    /// Inside a dry run: changes are not broadcast.
    quiet: bool,
}

impl Default for Store {
    fn default() -> Self {
        Store::new()
    }
}

impl Store {
    /// An empty store (not even the `default` namespace) reporting Kubernetes v1.33.
    pub fn new() -> Store {
        Store {
            objects: BTreeMap::new(),
            resource_version: 1000,
            uid_counter: 0,
            version_minor: 33,
            changes: broadcast::channel(CHANGE_BACKLOG).0,
            history: VecDeque::new(),
            history_floor: 1000,
            quiet: false,
        }
    }

    /// The demo cluster: namespaces `default`, `dev`, `prod`, `kube-system`; pod
    /// `web-0`, configmap `app-config`, deployment `web`, its controller
    /// revision `web-1`, database credential `orders-db` and workflow
    /// `nightly` in `dev` and `prod`; secret `db-credentials` (keys `password`,
    /// `username`, and a `last-applied-configuration` annotation that repeats
    /// them) and report `quarterly` in `prod`. Every object that holds a
    /// credential holds the namespace's password (see [`DEMO_PASSWORDS`]).
    pub fn demo() -> Store {
        let mut store = Store::new();
        // Fixed data (the tests check it seeds cleanly).
        let _ = store.seed_demo();
        store.forget_history();
        store
    }

    fn seed_demo(&mut self) -> Result<(), Status> {
        for ns in ["default", "dev", "prod", "kube-system"] {
            self.seed(&NAMESPACES, "", json!({"metadata": {"name": ns}}))?;
        }
        for (ns, password) in DEMO_PASSWORDS {
            self.seed(&PODS, ns, demo_pod("web-0", ns, password))?;
            self.seed(&DEPLOYMENTS, ns, demo_deployment(ns, password))?;
            let template = json!({"$patch": "replace", "metadata": {"labels": {"app": "web"}},
                                  "spec": {"containers": [app_container(ns, password)]}});
            self.seed(
                &CONTROLLER_REVISIONS,
                ns,
                json!({"metadata": {"name": "web-1", "labels": {"app": "web"}},
                       "revision": 1, "data": {"spec": {"template": template}}}),
            )?;
            self.seed(
                &DATABASE_CREDENTIALS,
                ns,
                json!({"metadata": {"name": "orders-db"},
                       "spec": {"host": format!("db.{ns}.svc.cluster.local"), "user": "orders",
                                "password": password}}),
            )?;
            self.seed(
                &WORKFLOWS,
                ns,
                json!({"metadata": {"name": "nightly"},
                       "spec": {"schedule": "0 2 * * *", "steps": [
                           {"name": "backup", "container": app_container(ns, password)}]}}),
            )?;
            self.seed(
                &CONFIGMAPS,
                ns,
                json!({"metadata": {"name": "app-config", "labels": {"app": "web"}},
                       "data": {"LOG_LEVEL": if ns == "prod" { "info" } else { "debug" },
                                "DB_HOST": format!("db.{ns}.svc.cluster.local")}}),
            )?;
        }
        let data =
            json!({"password": BASE64.encode("pr0d-S3cret!"), "username": BASE64.encode("app")});
        let applied = json!({"apiVersion": "v1", "kind": "Secret", "type": "Opaque", "data": data,
                             "metadata": {"annotations": {}, "name": "db-credentials", "namespace": "prod"}});
        self.seed(
            &SECRETS,
            "prod",
            json!({"metadata": {"name": "db-credentials", "annotations": {
                        "kubectl.kubernetes.io/last-applied-configuration": format!("{applied}\n")}},
                   "type": "Opaque", "data": data}),
        )?;
        self.seed(
            &REPORTS,
            "prod",
            json!({"metadata": {"name": "quarterly"},
                   "spec": {"env": [{"name": "DB_PASSWORD", "value": "pr0d-S3cret!"}]}}),
        )
    }

    /// Runs `change` as a dry run (`?dryRun=All`): its answer is computed as
    /// for real, and the store is left as it was, with nothing broadcast.
    pub fn dry_run<T>(
        &mut self,
        change: impl FnOnce(&mut Store) -> Result<T, Status>,
    ) -> Result<T, Status> {
        let objects = self.objects.clone();
        let counters = (self.resource_version, self.uid_counter);
        self.quiet = true;
        let answer = change(self);
        self.quiet = false;
        self.objects = objects;
        (self.resource_version, self.uid_counter) = counters;
        answer
    }

    /// Replaces a stored object with `object` (a subresource's write, which
    /// changes one part of it), as `PUT` does after its checks.
    pub fn replace(
        &mut self,
        resource: &'static Resource,
        namespace: &str,
        name: &str,
        object: Value,
    ) -> Result<Value, Status> {
        self.get(resource, namespace, name)?;
        self.store_modified(resource, namespace, name, object)
    }

    /// Adds `count` running pods `pod-0000`, `pod-0001`, … to `namespace`
    /// (creating the namespace if needed), for list benchmarks. An invalid
    /// namespace name adds nothing; [`Store::add_pods`] says why.
    pub fn with_pods(mut self, namespace: &str, count: usize) -> Store {
        let _ = self.add_pods(namespace, count);
        self
    }

    /// [`Store::with_pods`] on a borrowed store, reporting a bad namespace name.
    pub fn add_pods(&mut self, namespace: &str, count: usize) -> Result<(), Status> {
        if self.get(&NAMESPACES, "", namespace).is_err() {
            self.seed(&NAMESPACES, "", json!({"metadata": {"name": namespace}}))?;
        }
        for i in 0..count {
            let name = format!("pod-{i:04}");
            self.seed(
                &PODS,
                namespace,
                demo_pod(&name, namespace, "bench-Passw0rd!"),
            )?;
        }
        self.forget_history();
        Ok(())
    }

    /// Sets the minor version `/version` reports (the `kubectl` dispatcher picks its client by it).
    pub fn with_version_minor(mut self, minor: u32) -> Store {
        self.version_minor = minor;
        self
    }

    pub fn version_minor(&self) -> u32 {
        self.version_minor
    }

    /// The current (latest) resourceVersion.
    pub fn resource_version(&self) -> u64 {
        self.resource_version
    }

    /// Creates a seed object, backdated to the demo's creation time.
    fn seed(
        &mut self,
        resource: &'static Resource,
        namespace: &str,
        object: Value,
    ) -> Result<(), Status> {
        let mut object = self.create(resource, namespace, object)?;
        if let Some(meta) = object.get_mut("metadata").and_then(Value::as_object_mut) {
            meta.insert("creationTimestamp".into(), DEMO_TIME.into());
        }
        let key = key_of(resource, namespace, &object);
        self.objects.insert(key, object);
        Ok(())
    }

    /// Seeding is not history: watches may start from now on.
    fn forget_history(&mut self) {
        self.history.clear();
        self.history_floor = self.resource_version;
    }

    /// Subscribes to changes. Call while holding the store's lock together with
    /// the snapshot, so no change falls between them.
    pub fn subscribe(&self) -> broadcast::Receiver<Change> {
        self.changes.subscribe()
    }

    pub fn get(&self, resource: &Resource, namespace: &str, name: &str) -> Result<Value, Status> {
        let key = (
            resource.plural,
            scope(resource, namespace),
            name.to_string(),
        );
        self.objects
            .get(&key)
            .cloned()
            .ok_or_else(|| Status::not_found(resource, name))
    }

    /// Objects of one resource type, in one namespace or (`None`) all, in name order.
    pub fn list(
        &self,
        resource: &'static Resource,
        namespace: Option<&str>,
        selector: &Selector,
    ) -> Vec<Value> {
        self.objects
            .iter()
            .filter(|((plural, ns, _), object)| {
                *plural == resource.plural
                    && namespace.is_none_or(|want| !resource.namespaced || ns == want)
                    && selector.matches(object)
            })
            .map(|(_, object)| object.clone())
            .collect()
    }

    /// Creates an object as `POST` does: validates, fills in server-side metadata
    /// and defaults, and broadcasts `ADDED`.
    pub fn create(
        &mut self,
        resource: &'static Resource,
        namespace: &str,
        mut object: Value,
    ) -> Result<Value, Status> {
        check_type(resource, &object)?;
        if self.objects.len() >= MAX_OBJECTS {
            return Err(Status::internal("the stand-in's object limit is reached"));
        }
        if resource.namespaced {
            let exists = self.objects.contains_key(&(
                NAMESPACES.plural,
                String::new(),
                namespace.to_string(),
            ));
            if !exists {
                return Err(Status::not_found(&NAMESPACES, namespace));
            }
        }
        let uid = self.next_uid();
        let rv = self.next_resource_version();
        let Some(obj) = object.as_object_mut() else {
            return Err(Status::bad_request(
                "the body of the request must be a JSON object",
            ));
        };
        obj.insert("kind".into(), resource.kind.into());
        obj.insert("apiVersion".into(), resource.api_version().into());
        let meta = obj
            .entry("metadata")
            .or_insert_with(|| json!({}))
            .as_object_mut()
            .ok_or_else(|| Status::bad_request("metadata must be an object"))?;
        let name = match (meta.get("name"), meta.get("generateName")) {
            (Some(Value::String(name)), _) => name.clone(),
            (None, Some(Value::String(prefix))) => {
                format!("{prefix}{}", uid.get(..5).unwrap_or_default())
            }
            _ => {
                return Err(Status::invalid(
                    resource,
                    "",
                    "metadata.name",
                    "name or generateName is required",
                ));
            }
        };
        check_name(resource, &name)?;
        if resource.namespaced {
            match meta.get("namespace").and_then(Value::as_str) {
                Some(ns) if ns != namespace => {
                    return Err(Status::bad_request(
                        "the namespace of the provided object does not match the namespace sent on the request",
                    ));
                }
                _ => meta.insert("namespace".into(), namespace.into()),
            };
        }
        meta.insert("name".into(), name.clone().into());
        meta.insert("uid".into(), uid.into());
        meta.insert("resourceVersion".into(), rv.to_string().into());
        meta.insert("creationTimestamp".into(), now_rfc3339().into());
        apply_defaults(resource, &name, obj);
        let key = (resource.plural, scope(resource, namespace), name.clone());
        if self.objects.contains_key(&key) {
            return Err(Status::already_exists(resource, &name));
        }
        self.objects.insert(key, object.clone());
        self.publish(resource, namespace, ChangeKind::Added, rv, &object);
        Ok(object)
    }

    /// Replaces an object (`PUT`); a stale `metadata.resourceVersion` is a conflict.
    pub fn update(
        &mut self,
        resource: &'static Resource,
        namespace: &str,
        name: &str,
        mut object: Value,
    ) -> Result<Value, Status> {
        check_type(resource, &object)?;
        let current = self.get(resource, namespace, name)?;
        let sent_name = object.pointer("/metadata/name").and_then(Value::as_str);
        if sent_name.is_some_and(|n| n != name) {
            return Err(Status::bad_request(
                "the name of the object does not match the name on the URL",
            ));
        }
        let sent_rv = object
            .pointer("/metadata/resourceVersion")
            .and_then(Value::as_str);
        let current_rv = current
            .pointer("/metadata/resourceVersion")
            .and_then(Value::as_str);
        if sent_rv.is_some_and(|rv| Some(rv) != current_rv) {
            return Err(Status::conflict(resource, name));
        }
        let Some(obj) = object.as_object_mut() else {
            return Err(Status::bad_request(
                "the body of the request must be a JSON object",
            ));
        };
        obj.insert("kind".into(), resource.kind.into());
        obj.insert("apiVersion".into(), resource.api_version().into());
        // Server-owned metadata survives an update.
        let mut meta = current
            .get("metadata")
            .cloned()
            .unwrap_or_else(|| json!({}));
        if let (Some(Value::Object(sent)), Value::Object(kept)) = (obj.get("metadata"), &mut meta) {
            for field in ["labels", "annotations", "finalizers", "ownerReferences"] {
                match sent.get(field) {
                    Some(v) => kept.insert(field.into(), v.clone()),
                    None => kept.remove(field),
                };
            }
        }
        obj.insert("metadata".into(), meta);
        self.store_modified(resource, namespace, name, object)
    }

    /// Applies a JSON merge patch (RFC 7386; strategic merge patches are applied
    /// the same way, which is right for maps such as labels and annotations).
    pub fn merge_patch(
        &mut self,
        resource: &'static Resource,
        namespace: &str,
        name: &str,
        patch: &Value,
    ) -> Result<Value, Status> {
        let mut object = self.get(resource, namespace, name)?;
        let keep_meta = object.get("metadata").cloned();
        merge(&mut object, patch);
        // Identity fields are not patchable.
        if let (Some(Value::Object(old)), Some(Value::Object(new))) =
            (keep_meta, object.get_mut("metadata"))
        {
            for field in ["name", "namespace", "uid", "creationTimestamp"] {
                match old.get(field) {
                    Some(v) => new.insert(field.into(), v.clone()),
                    None => new.remove(field),
                };
            }
        }
        self.store_modified(resource, namespace, name, object)
    }

    fn store_modified(
        &mut self,
        resource: &'static Resource,
        namespace: &str,
        name: &str,
        mut object: Value,
    ) -> Result<Value, Status> {
        let rv = self.next_resource_version();
        if let Some(meta) = object.get_mut("metadata").and_then(Value::as_object_mut) {
            meta.insert("resourceVersion".into(), rv.to_string().into());
        }
        if resource.kind == DEPLOYMENTS.kind
            && let Some(obj) = object.as_object_mut()
        {
            let generation = obj
                .get("metadata")
                .and_then(|m| m.get("generation"))
                .and_then(Value::as_u64)
                .unwrap_or(0);
            roll_out(obj, generation + 1);
        }
        let key = (
            resource.plural,
            scope(resource, namespace),
            name.to_string(),
        );
        self.objects.insert(key, object.clone());
        self.publish(resource, namespace, ChangeKind::Modified, rv, &object);
        Ok(object)
    }

    /// Deletes an object at once (no graceful period, no finalizers). Deleting a
    /// namespace deletes everything in it. Returns the deleted object.
    pub fn delete(
        &mut self,
        resource: &'static Resource,
        namespace: &str,
        name: &str,
    ) -> Result<Value, Status> {
        let key = (
            resource.plural,
            scope(resource, namespace),
            name.to_string(),
        );
        let mut object = self
            .objects
            .remove(&key)
            .ok_or_else(|| Status::not_found(resource, name))?;
        if resource.plural == NAMESPACES.plural {
            let inside: Vec<Key> = self
                .objects
                .keys()
                .filter(|(_, ns, _)| ns == name)
                .cloned()
                .collect();
            for key in inside {
                if let Some(child) = self.objects.remove(&key) {
                    self.publish_deleted(key.0, name, child);
                }
            }
            if let Some(status) = object.as_object_mut() {
                status.insert("status".into(), json!({"phase": "Terminating"}));
            }
        }
        if let Some(meta) = object.get_mut("metadata").and_then(Value::as_object_mut) {
            meta.insert("deletionTimestamp".into(), now_rfc3339().into());
            meta.insert("deletionGracePeriodSeconds".into(), 0.into());
        }
        Ok(self.publish_deleted(resource.plural, namespace, object))
    }

    fn publish_deleted(
        &mut self,
        plural: &'static str,
        namespace: &str,
        mut object: Value,
    ) -> Value {
        let rv = self.next_resource_version();
        if let Some(meta) = object.get_mut("metadata").and_then(Value::as_object_mut) {
            meta.insert("resourceVersion".into(), rv.to_string().into());
        }
        if let Some(resource) = resources::ALL.iter().find(|r| r.plural == plural) {
            self.publish(resource, namespace, ChangeKind::Deleted, rv, &object);
        }
        object
    }

    /// Every change after resourceVersion `since`, oldest first; `410 Expired`
    /// when some of them are no longer remembered.
    pub fn changes_since(&self, since: u64) -> Result<Vec<Change>, Status> {
        if since < self.history_floor {
            return Err(Status::expired());
        }
        Ok(self
            .history
            .iter()
            .filter(|c| c.resource_version > since)
            .cloned()
            .collect())
    }

    fn publish(
        &mut self,
        resource: &Resource,
        namespace: &str,
        kind: ChangeKind,
        rv: u64,
        object: &Value,
    ) {
        if self.quiet {
            return;
        }
        let change = Change {
            resource: resource.plural,
            namespace: scope(resource, namespace),
            kind,
            resource_version: rv,
            object: object.clone(),
        };
        if self.history.len() >= HISTORY_LEN
            && let Some(oldest) = self.history.pop_front()
        {
            self.history_floor = oldest.resource_version;
        }
        self.history.push_back(change.clone());
        // No receivers is fine: nobody is watching.
        let _ = self.changes.send(change);
    }

    fn next_resource_version(&mut self) -> u64 {
        self.resource_version += 1;
        self.resource_version
    }

    /// A v4-shaped UUID from a deterministic sequence (stable demo data).
    fn next_uid(&mut self) -> String {
        self.uid_counter += 1;
        let a = splitmix64(self.uid_counter);
        let b = splitmix64(a);
        format!(
            "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
            a >> 32,
            (a >> 16) & 0xffff,
            a & 0xfff,
            0x8000 | ((b >> 48) & 0x3fff),
            b & 0xffff_ffff_ffff
        )
    }
}

fn scope(resource: &Resource, namespace: &str) -> String {
    if resource.namespaced {
        namespace.to_string()
    } else {
        String::new()
    }
}

fn key_of(resource: &'static Resource, namespace: &str, object: &Value) -> Key {
    let name = object
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default();
    (
        resource.plural,
        scope(resource, namespace),
        name.to_string(),
    )
}

/// The body's `kind`/`apiVersion`, when present, must match the URL.
fn check_type(resource: &Resource, object: &Value) -> Result<(), Status> {
    let kind = object.get("kind").and_then(Value::as_str);
    let api_version = object.get("apiVersion").and_then(Value::as_str);
    if kind.is_some_and(|k| k != resource.kind)
        || api_version.is_some_and(|v| v != resource.api_version())
    {
        return Err(Status::bad_request(format!(
            "the API version in the data ({}) does not match the expected API version ({}) or kind {} does not match {}",
            api_version.unwrap_or_default(),
            resource.api_version(),
            kind.unwrap_or_default(),
            resource.kind
        )));
    }
    Ok(())
}

/// DNS-1123: a label (≤63) for namespaces, a subdomain (≤253) otherwise.
fn check_name(resource: &Resource, name: &str) -> Result<(), Status> {
    let max = if resource.plural == NAMESPACES.plural {
        63
    } else {
        253
    };
    let allowed = |c: char| {
        c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || (c == '.' && max == 253)
    };
    let edge_ok = |c: Option<char>| c.is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    if name.len() > max
        || !name.chars().all(allowed)
        || !edge_ok(name.chars().next())
        || !edge_ok(name.chars().last())
    {
        return Err(Status::invalid(
            resource,
            name,
            "metadata.name",
            "a lowercase RFC 1123 name must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character",
        ));
    }
    Ok(())
}

/// The defaults the apiserver (and, for status, the controllers) would fill in.
fn apply_defaults(resource: &Resource, name: &str, obj: &mut Map<String, Value>) {
    match resource.kind {
        "Namespace" => {
            if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
                let labels = meta.entry("labels").or_insert_with(|| json!({}));
                if let Some(labels) = labels.as_object_mut() {
                    labels.insert("kubernetes.io/metadata.name".into(), name.into());
                }
            }
            obj.insert("spec".into(), json!({"finalizers": ["kubernetes"]}));
            obj.insert("status".into(), json!({"phase": "Active"}));
        }
        "Secret" => {
            obj.entry("type").or_insert_with(|| "Opaque".into());
            // stringData is write-only: fold it into data as base64.
            if let Some(Value::Object(plain)) = obj.remove("stringData") {
                let data = obj.entry("data").or_insert_with(|| json!({}));
                if let Some(data) = data.as_object_mut() {
                    for (k, v) in plain {
                        data.insert(k, BASE64.encode(v.as_str().unwrap_or_default()).into());
                    }
                }
            }
        }
        "Pod" => {
            // The apiserver defaults an empty pod security context (kubectl
            // debug reads it).
            if let Some(spec) = obj.get_mut("spec").and_then(Value::as_object_mut) {
                spec.entry("securityContext").or_insert_with(|| json!({}));
            }
            if obj.get("status").is_none_or(|s| s == &json!({})) {
                obj.insert("status".into(), running_status(obj.get("spec")));
            }
        }
        "Deployment" => roll_out(obj, 1),
        _ => {}
    }
}

/// Plays the deployment controller: every replica is at once ready.
fn roll_out(obj: &mut Map<String, Value>, generation: u64) {
    let replicas = obj
        .get("spec")
        .and_then(|s| s.get("replicas"))
        .and_then(Value::as_u64)
        .unwrap_or(1);
    if let Some(spec) = obj.get_mut("spec").and_then(Value::as_object_mut) {
        spec.insert("replicas".into(), replicas.into());
    }
    if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.insert("generation".into(), generation.into());
    }
    obj.insert(
        "status".into(),
        json!({"observedGeneration": generation, "replicas": replicas, "updatedReplicas": replicas,
               "readyReplicas": replicas, "availableReplicas": replicas,
               "conditions": [{"type": "Available", "status": "True", "reason": "MinimumReplicasAvailable"}]}),
    );
}

/// A Running pod status whose containers are all ready.
fn running_status(spec: Option<&Value>) -> Value {
    let containers: Vec<Value> = spec
        .and_then(|s| s.get("containers"))
        .and_then(Value::as_array)
        .map(|cs| {
            cs.iter()
                .map(|c| {
                    json!({"name": c.get("name"), "image": c.get("image"), "ready": true, "started": true,
                           "restartCount": 0, "state": {"running": {"startedAt": DEMO_TIME}}})
                })
                .collect()
        })
        .unwrap_or_default();
    json!({"phase": "Running", "podIP": "10.244.0.12", "hostIP": "192.168.49.2", "startTime": DEMO_TIME,
           "qosClass": "BestEffort",
           "conditions": [{"type": "Ready", "status": "True"}, {"type": "ContainersReady", "status": "True"}],
           "containerStatuses": containers})
}

fn app_container(namespace: &str, password: &str) -> Value {
    json!({"name": "app", "image": "nginx:1.27",
           "ports": [{"containerPort": 8080, "protocol": "TCP"}],
           "env": [{"name": "APP_ENV", "value": namespace},
                   {"name": "DB_USER", "value": "app"},
                   {"name": "DB_PASSWORD", "value": password}]})
}

fn demo_pod(name: &str, namespace: &str, password: &str) -> Value {
    json!({"metadata": {"name": name, "labels": {"app": "web"}},
           "spec": {"containers": [app_container(namespace, password)], "nodeName": "node-1",
                    "restartPolicy": "Always", "serviceAccountName": "default"}})
}

fn demo_deployment(namespace: &str, password: &str) -> Value {
    json!({"metadata": {"name": "web", "labels": {"app": "web"}},
           "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "web"}},
                    "template": {"metadata": {"labels": {"app": "web"}},
                                 "spec": {"containers": [app_container(namespace, password)]}}}})
}

/// RFC 7386 merge: objects merge recursively, `null` deletes, anything else replaces.
pub fn merge(target: &mut Value, patch: &Value) {
    let Value::Object(patch) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = json!({});
    }
    if let Value::Object(target) = target {
        for (key, value) in patch {
            if value.is_null() {
                target.remove(key);
            } else {
                merge(target.entry(key.clone()).or_insert(Value::Null), value);
            }
        }
    }
}

fn splitmix64(seed: u64) -> u64 {
    let mut z = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The current time as `2006-01-02T15:04:05Z`.
pub fn now_rfc3339() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    rfc3339(secs)
}

/// Formats unix seconds as `2006-01-02T15:04:05Z`.
fn rfc3339(unix_secs: u64) -> String {
    let time = i64::try_from(unix_secs)
        .ok()
        .and_then(|secs| chrono::DateTime::from_timestamp(secs, 0))
        .unwrap_or(chrono::DateTime::<chrono::Utc>::MAX_UTC);
    time.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

#[cfg(test)]
#[allow(clippy::indexing_slicing)] // a missing key is a failed test
mod tests {
    use super::*;

    #[test]
    fn formats_timestamps() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_795_000_000), "2026-11-18T11:06:40Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
    }

    #[test]
    fn demo_data_seeds_cleanly() {
        assert_eq!(Store::new().seed_demo(), Ok(()));
        let mut store = Store::new();
        assert_eq!(store.add_pods("Bad_Name", 1).unwrap_err().code, 422);
    }

    #[test]
    fn demo_holds_the_masking_material() {
        let store = Store::demo();
        let secret = store.get(&SECRETS, "prod", "db-credentials").unwrap();
        assert_eq!(secret["data"]["password"], BASE64.encode("pr0d-S3cret!"));
        let applied =
            secret["metadata"]["annotations"]["kubectl.kubernetes.io/last-applied-configuration"]
                .as_str()
                .unwrap();
        assert!(applied.contains(&BASE64.encode("pr0d-S3cret!")));
        let pod = store.get(&PODS, "dev", "web-0").unwrap();
        assert_eq!(
            pod["spec"]["containers"][0]["env"][2]["name"],
            "DB_PASSWORD"
        );
        assert_eq!(pod["status"]["phase"], "Running");
        assert_eq!(pod["metadata"]["uid"].as_str().unwrap().len(), 36);
    }

    #[test]
    fn create_checks_names_namespaces_and_duplicates() {
        let mut store = Store::demo();
        let cm = json!({"metadata": {"name": "x"}});
        assert!(store.create(&CONFIGMAPS, "dev", cm.clone()).is_ok());
        assert_eq!(
            store
                .create(&CONFIGMAPS, "dev", cm.clone())
                .unwrap_err()
                .code,
            409
        );
        assert_eq!(store.create(&CONFIGMAPS, "nope", cm).unwrap_err().code, 404);
        let bad = json!({"metadata": {"name": "Bad_Name"}});
        assert_eq!(store.create(&CONFIGMAPS, "dev", bad).unwrap_err().code, 422);
        assert_eq!(
            store
                .create(&CONFIGMAPS, "dev", json!([1]))
                .unwrap_err()
                .code,
            400
        );
    }

    #[test]
    fn deleting_a_namespace_removes_its_objects() {
        let mut store = Store::demo();
        let mut changes = store.subscribe();
        store.delete(&NAMESPACES, "", "dev").unwrap();
        assert_eq!(store.get(&NAMESPACES, "", "dev").unwrap_err().code, 404);
        assert!(
            store
                .list(&PODS, Some("dev"), &Selector::default())
                .is_empty()
        );
        assert_eq!(store.list(&PODS, None, &Selector::default()).len(), 1);
        let first = changes.try_recv().unwrap();
        assert_eq!(first.kind, ChangeKind::Deleted);
    }

    #[test]
    fn merge_patch_changes_labels_but_not_identity() {
        let mut store = Store::demo();
        let patch = json!({"metadata": {"name": "evil", "labels": {"tier": "front", "app": null}}});
        let pod = store.merge_patch(&PODS, "dev", "web-0", &patch).unwrap();
        assert_eq!(pod["metadata"]["name"], "web-0");
        assert_eq!(pod["metadata"]["labels"], json!({"tier": "front"}));
    }

    #[test]
    fn with_pods_seeds_a_namespace() {
        let store = Store::new().with_pods("load", 100);
        assert_eq!(
            store.list(&PODS, Some("load"), &Selector::default()).len(),
            100
        );
    }
}
