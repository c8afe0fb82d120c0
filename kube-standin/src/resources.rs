//! The resource types the stand-in serves, described once for routing,
//! discovery and storage.

/// One served resource type (a row of the apiserver's discovery document).
#[derive(Debug, PartialEq, Eq)]
pub struct Resource {
    /// Plural, as in the URL (`pods`).
    pub plural: &'static str,
    pub singular: &'static str,
    pub kind: &'static str,
    /// `""` for the core group.
    pub group: &'static str,
    pub version: &'static str,
    pub namespaced: bool,
    pub short_names: &'static [&'static str],
    pub categories: &'static [&'static str],
    pub verbs: &'static [&'static str],
    /// `(subresource, response kind, verbs)`.
    pub subresources: &'static [(&'static str, &'static str, &'static [&'static str])],
    /// Answers in YAML whatever the client accepts, as an aggregated API
    /// server that does not negotiate might.
    pub yaml_only: bool,
}

impl Resource {
    /// `apps/v1`, or `v1` for the core group.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_string()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// `pods`, or `deployments.apps` for named groups (how apiserver errors name resources).
    pub fn qualified(&self) -> String {
        if self.group.is_empty() {
            self.plural.to_string()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }

    pub fn list_kind(&self) -> String {
        format!("{}List", self.kind)
    }
}

const OBJECT_VERBS: &[&str] = &[
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];
const NAMESPACE_VERBS: &[&str] = &[
    "create", "delete", "get", "list", "patch", "update", "watch",
];
const STATUS_VERBS: &[&str] = &["get", "patch", "update"];
const CONNECT_VERBS: &[&str] = &["create", "get"];

pub static NAMESPACES: Resource = Resource {
    plural: "namespaces",
    singular: "namespace",
    kind: "Namespace",
    group: "",
    version: "v1",
    namespaced: false,
    short_names: &["ns"],
    categories: &[],
    verbs: NAMESPACE_VERBS,
    subresources: &[
        ("finalize", "Namespace", &["update"]),
        ("status", "Namespace", STATUS_VERBS),
    ],
    yaml_only: false,
};

pub static PODS: Resource = Resource {
    plural: "pods",
    singular: "pod",
    kind: "Pod",
    group: "",
    version: "v1",
    namespaced: true,
    short_names: &["po"],
    categories: &["all"],
    verbs: OBJECT_VERBS,
    subresources: &[
        ("attach", "PodAttachOptions", CONNECT_VERBS),
        ("exec", "PodExecOptions", CONNECT_VERBS),
        ("ephemeralcontainers", "Pod", STATUS_VERBS),
        ("log", "Pod", &["get"]),
        ("portforward", "PodPortForwardOptions", CONNECT_VERBS),
        ("status", "Pod", STATUS_VERBS),
    ],
    yaml_only: false,
};

pub static SECRETS: Resource = Resource {
    plural: "secrets",
    singular: "secret",
    kind: "Secret",
    group: "",
    version: "v1",
    namespaced: true,
    short_names: &[],
    categories: &[],
    verbs: OBJECT_VERBS,
    subresources: &[],
    yaml_only: false,
};

pub static CONFIGMAPS: Resource = Resource {
    plural: "configmaps",
    singular: "configmap",
    kind: "ConfigMap",
    group: "",
    version: "v1",
    namespaced: true,
    short_names: &["cm"],
    categories: &[],
    verbs: OBJECT_VERBS,
    subresources: &[],
    yaml_only: false,
};

/// Served (always empty unless created) so that `kubectl describe` finds events.
pub static EVENTS: Resource = Resource {
    plural: "events",
    singular: "event",
    kind: "Event",
    group: "",
    version: "v1",
    namespaced: true,
    short_names: &["ev"],
    categories: &[],
    verbs: OBJECT_VERBS,
    subresources: &[],
    yaml_only: false,
};

pub static DEPLOYMENTS: Resource = Resource {
    plural: "deployments",
    singular: "deployment",
    kind: "Deployment",
    group: "apps",
    version: "v1",
    namespaced: true,
    short_names: &["deploy"],
    categories: &["all"],
    verbs: OBJECT_VERBS,
    subresources: &[
        ("scale", "Scale", STATUS_VERBS),
        ("status", "Deployment", STATUS_VERBS),
    ],
    yaml_only: false,
};

/// History of a StatefulSet's or DaemonSet's pod template (`kubectl rollout
/// history`): `data` holds the template, environment and all.
pub static CONTROLLER_REVISIONS: Resource = Resource {
    plural: "controllerrevisions",
    singular: "controllerrevision",
    kind: "ControllerRevision",
    group: "apps",
    version: "v1",
    namespaced: true,
    short_names: &[],
    categories: &[],
    verbs: OBJECT_VERBS,
    subresources: &[],
    yaml_only: false,
};

/// A custom resource that holds a credential in `spec.password` (operators
/// configure its masking by kind).
pub static DATABASE_CREDENTIALS: Resource = Resource {
    plural: "databasecredentials",
    singular: "databasecredential",
    kind: "DatabaseCredential",
    group: "example.com",
    version: "v1",
    namespaced: true,
    short_names: &["dbcred"],
    categories: &[],
    verbs: OBJECT_VERBS,
    subresources: &[("status", "DatabaseCredential", STATUS_VERBS)],
    yaml_only: false,
};

/// A custom resource that embeds containers (`spec.steps[].container`), as
/// workflow and pipeline operators' do.
pub static WORKFLOWS: Resource = Resource {
    plural: "workflows",
    singular: "workflow",
    kind: "Workflow",
    group: "example.com",
    version: "v1",
    namespaced: true,
    short_names: &["wf"],
    categories: &[],
    verbs: OBJECT_VERBS,
    subresources: &[],
    yaml_only: false,
};

/// A resource of an aggregated API server that answers YAML whatever it is
/// asked for: what a gateway cannot read, it must not pass.
pub static REPORTS: Resource = Resource {
    plural: "reports",
    singular: "report",
    kind: "Report",
    group: "legacy.example.com",
    version: "v1",
    namespaced: true,
    short_names: &[],
    categories: &[],
    verbs: OBJECT_VERBS,
    subresources: &[],
    yaml_only: true,
};

/// Every served resource, core group first.
pub static ALL: [&Resource; 10] = [
    &NAMESPACES,
    &PODS,
    &SECRETS,
    &CONFIGMAPS,
    &EVENTS,
    &DEPLOYMENTS,
    &CONTROLLER_REVISIONS,
    &DATABASE_CREDENTIALS,
    &WORKFLOWS,
    &REPORTS,
];

/// The served group versions.
pub const GROUP_VERSIONS: [(&str, &str); 4] = [
    ("", "v1"),
    ("apps", "v1"),
    ("example.com", "v1"),
    ("legacy.example.com", "v1"),
];

/// The resources of one group version.
pub fn in_group_version(group: &str, version: &str) -> impl Iterator<Item = &'static Resource> {
    ALL.iter()
        .copied()
        .filter(move |r| r.group == group && r.version == version)
}

/// Looks a resource up by group, version and plural.
pub fn find(group: &str, version: &str, plural: &str) -> Option<&'static Resource> {
    in_group_version(group, version).find(|r| r.plural == plural)
}
