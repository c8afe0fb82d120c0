//! `/version` and API discovery, aggregated (`apidiscovery.k8s.io` v2 and
//! v2beta1) or legacy, chosen from the client's `Accept` header.

use serde_json::{Value, json};

use crate::resources::{self, GROUP_VERSIONS, Resource};

/// Which discovery document a client gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiscoveryFormat {
    /// `APIGroupDiscoveryList` in this `apidiscovery.k8s.io` version (`v2` or `v2beta1`).
    Aggregated(&'static str),
    /// `APIVersions` / `APIGroupList`; the client then fetches each group version.
    Legacy,
}

impl DiscoveryFormat {
    /// The `Content-Type` the answer carries.
    pub fn content_type(self) -> String {
        match self {
            DiscoveryFormat::Aggregated(v) => {
                format!("application/json;g=apidiscovery.k8s.io;v={v};as=APIGroupDiscoveryList")
            }
            DiscoveryFormat::Legacy => "application/json".to_string(),
        }
    }
}

/// Picks the first media range, in the client's order, that this server can
/// produce. Aggregated discovery is served only in a version the client named:
/// kubectl 1.29 understands v2beta1 only and misreads v2.
pub fn negotiate(accept: Option<&str>) -> DiscoveryFormat {
    for range in accept.unwrap_or("").split(',') {
        let mut parts = range.split(';').map(str::trim);
        let media_type = parts.next().unwrap_or("").to_ascii_lowercase();
        let params: Vec<(&str, &str)> = parts.filter_map(|p| p.split_once('=')).collect();
        let param = |name: &str| {
            params
                .iter()
                .find(|(k, _)| k.trim() == name)
                .map(|(_, v)| v.trim())
        };
        if param("q").is_some_and(|q| q.parse::<f32>().is_ok_and(|q| q <= 0.0)) {
            continue;
        }
        match media_type.as_str() {
            "application/json" => match (param("g"), param("v"), param("as")) {
                (Some("apidiscovery.k8s.io"), Some("v2"), Some("APIGroupDiscoveryList")) => {
                    return DiscoveryFormat::Aggregated("v2");
                }
                (Some("apidiscovery.k8s.io"), Some("v2beta1"), Some("APIGroupDiscoveryList")) => {
                    return DiscoveryFormat::Aggregated("v2beta1");
                }
                (_, _, None) => return DiscoveryFormat::Legacy,
                _ => {}
            },
            "*/*" | "application/*" => return DiscoveryFormat::Legacy,
            _ => {}
        }
    }
    DiscoveryFormat::Legacy
}

/// `/version`, reporting Kubernetes `v1.<minor>.2`.
pub fn version(minor: u32) -> Value {
    json!({
        "major": "1",
        "minor": minor.to_string(),
        "gitVersion": format!("v1.{minor}.2"),
        "gitCommit": "a57b6f7709f6c2722b92f07b8b4c48210a51fc40",
        "gitTreeState": "clean",
        "buildDate": "2025-06-17T18:36:06Z",
        "goVersion": "go1.24.4",
        "compiler": "gc",
        "platform": "linux/amd64"
    })
}

/// `/api` or `/apis` in `format`; `core` selects `/api`.
pub fn root(core: bool, format: DiscoveryFormat) -> Value {
    match format {
        DiscoveryFormat::Aggregated(version) => aggregated(core, version),
        DiscoveryFormat::Legacy if core => json!({
            "kind": "APIVersions",
            "versions": ["v1"],
            "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1:6443"}]
        }),
        DiscoveryFormat::Legacy => {
            let groups: Vec<Value> = named_groups().filter_map(api_group).collect();
            json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
        }
    }
}

/// `/apis/<group>`: the legacy `APIGroup`.
pub fn api_group(group: &str) -> Option<Value> {
    let (name, version) = GROUP_VERSIONS
        .iter()
        .find(|(g, _)| !g.is_empty() && *g == group)?;
    let gv = json!({"groupVersion": format!("{name}/{version}"), "version": version});
    Some(json!({"kind": "APIGroup", "apiVersion": "v1", "name": name,
                "versions": [gv], "preferredVersion": gv}))
}

/// `/api/v1` or `/apis/<group>/<version>`: the legacy `APIResourceList`.
pub fn resource_list(group: &str, version: &str) -> Option<Value> {
    if !GROUP_VERSIONS.contains(&(group, version)) {
        return None;
    }
    let mut entries = Vec::new();
    for r in resources::in_group_version(group, version) {
        let mut entry = json!({"name": r.plural, "singularName": r.singular, "namespaced": r.namespaced,
                               "kind": r.kind, "verbs": r.verbs});
        add_names(&mut entry, r);
        entries.push(entry);
        for (sub, kind, verbs) in r.subresources {
            entries.push(
                json!({"name": format!("{}/{sub}", r.plural), "singularName": "",
                                "namespaced": r.namespaced, "kind": kind, "verbs": verbs}),
            );
        }
    }
    let group_version = if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    };
    Some(
        json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": group_version,
                "resources": entries}),
    )
}

/// `/openapi/v3`: where each group version's document is.
pub fn openapi_v3_root() -> Value {
    let paths: serde_json::Map<String, Value> = GROUP_VERSIONS
        .iter()
        .map(|(group, version)| {
            let path = if group.is_empty() {
                format!("api/{version}")
            } else {
                format!("apis/{group}/{version}")
            };
            let url =
                json!({"serverRelativeURL": format!("/openapi/v3/{path}?hash={OPENAPI_HASH}")});
            (path, url)
        })
        .collect();
    json!({"paths": paths})
}

/// Changes whenever the documents below change (clients cache by it).
const OPENAPI_HASH: &str = "5A7E1D0C0FFEE001";

/// `/openapi/v3/api/v1`, `/openapi/v3/apis/<group>/<version>`: a minimal
/// document with one PATCH operation per kind that declares the
/// `fieldValidation` parameter. That is what kubectl (`apply`, `create -f`)
/// checks before leaving validation to the server; without it kubectl insists
/// on schemas for client-side validation. No schemas are served.
pub fn openapi_v3_group_version(group: &str, version: &str) -> Option<Value> {
    if !GROUP_VERSIONS.contains(&(group, version)) {
        return None;
    }
    let paths: serde_json::Map<String, Value> = resources::in_group_version(group, version)
        .map(|r| {
            let prefix = if group.is_empty() {
                format!("/api/{version}")
            } else {
                format!("/apis/{group}/{version}")
            };
            let scope = if r.namespaced { "/namespaces/{namespace}" } else { "" };
            let operation = json!({
                "x-kubernetes-group-version-kind": {"group": group, "version": version, "kind": r.kind},
                "parameters": [{"name": "fieldValidation", "in": "query", "schema": {"type": "string"}}],
                "responses": {"200": {"description": "OK"}}
            });
            (format!("{prefix}{scope}/{}/{{name}}", r.plural), json!({"patch": operation}))
        })
        .collect();
    Some(
        json!({"openapi": "3.0.0", "info": {"title": "Kubernetes", "version": "v1"},
                "paths": paths, "components": {}}),
    )
}

fn named_groups() -> impl Iterator<Item = &'static str> {
    GROUP_VERSIONS
        .iter()
        .map(|(g, _)| *g)
        .filter(|g| !g.is_empty())
}

fn add_names(entry: &mut Value, r: &Resource) {
    if let Value::Object(map) = entry {
        if !r.short_names.is_empty() {
            map.insert("shortNames".into(), json!(r.short_names));
        }
        if !r.categories.is_empty() {
            map.insert("categories".into(), json!(r.categories));
        }
    }
}

fn aggregated(core: bool, discovery_version: &str) -> Value {
    let items: Vec<Value> = GROUP_VERSIONS
        .iter()
        .filter(|(group, _)| group.is_empty() == core)
        .map(|(group, version)| {
            let resources: Vec<Value> = resources::in_group_version(group, version)
                .map(|r| {
                    let kind = |k: &str| json!({"group": r.group, "version": r.version, "kind": k});
                    let subresources: Vec<Value> = r
                        .subresources
                        .iter()
                        .map(|(sub, k, verbs)| json!({"subresource": sub, "responseKind": kind(k), "verbs": verbs}))
                        .collect();
                    let mut entry = json!({
                        "resource": r.plural,
                        "responseKind": kind(r.kind),
                        "scope": if r.namespaced { "Namespaced" } else { "Cluster" },
                        "singularResource": r.singular,
                        "verbs": r.verbs,
                    });
                    add_names(&mut entry, r);
                    if let (Value::Object(map), false) = (&mut entry, subresources.is_empty()) {
                        map.insert("subresources".into(), subresources.into());
                    }
                    entry
                })
                .collect();
            let mut metadata = json!({"creationTimestamp": null});
            if let (Value::Object(map), false) = (&mut metadata, group.is_empty()) {
                map.insert("name".into(), (*group).into());
            }
            json!({"metadata": metadata,
                   "versions": [{"version": version, "resources": resources, "freshness": "Current"}]})
        })
        .collect();
    json!({"kind": "APIGroupDiscoveryList",
           "apiVersion": format!("apidiscovery.k8s.io/{discovery_version}"),
           "metadata": {}, "items": items})
}

#[cfg(test)]
#[allow(clippy::indexing_slicing)]
mod tests {
    use super::*;

    const KUBECTL_1_33: &str = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList,application/json";
    const KUBECTL_1_29: &str = "application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList,application/json";

    #[test]
    fn newer_kubectl_gets_aggregated_v2() {
        assert_eq!(
            negotiate(Some(KUBECTL_1_33)),
            DiscoveryFormat::Aggregated("v2")
        );
        assert_eq!(
            DiscoveryFormat::Aggregated("v2").content_type(),
            "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList"
        );
    }

    #[test]
    fn kubectl_1_29_gets_v2beta1_never_v2() {
        assert_eq!(
            negotiate(Some(KUBECTL_1_29)),
            DiscoveryFormat::Aggregated("v2beta1")
        );
    }

    #[test]
    fn plain_json_or_nothing_gets_legacy() {
        assert_eq!(negotiate(Some("application/json")), DiscoveryFormat::Legacy);
        assert_eq!(negotiate(None), DiscoveryFormat::Legacy);
        assert_eq!(negotiate(Some("*/*")), DiscoveryFormat::Legacy);
        // A protobuf-only or unknown discovery version falls through to legacy.
        assert_eq!(
            negotiate(Some(
                "application/vnd.kubernetes.protobuf;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json;g=apidiscovery.k8s.io;v=v3;as=APIGroupDiscoveryList"
            )),
            DiscoveryFormat::Legacy
        );
        // Order decides: plain JSON first wins over a later aggregated offer.
        assert_eq!(
            negotiate(Some(
                "application/json,application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList"
            )),
            DiscoveryFormat::Legacy
        );
    }

    #[test]
    fn aggregated_documents_list_resources_with_scope_and_subresources() {
        let core = root(true, DiscoveryFormat::Aggregated("v2beta1"));
        assert_eq!(core["apiVersion"], "apidiscovery.k8s.io/v2beta1");
        let resources = core["items"][0]["versions"][0]["resources"]
            .as_array()
            .unwrap();
        let pods = resources.iter().find(|r| r["resource"] == "pods").unwrap();
        assert_eq!(pods["scope"], "Namespaced");
        assert!(
            pods["subresources"]
                .as_array()
                .unwrap()
                .iter()
                .any(|s| s["subresource"] == "exec")
        );
        let ns = resources
            .iter()
            .find(|r| r["resource"] == "namespaces")
            .unwrap();
        assert_eq!(ns["scope"], "Cluster");
        let apps = root(false, DiscoveryFormat::Aggregated("v2"));
        assert_eq!(apps["items"][0]["metadata"]["name"], "apps");
    }

    #[test]
    fn legacy_documents_name_every_group_version() {
        assert_eq!(
            root(true, DiscoveryFormat::Legacy)["versions"],
            json!(["v1"])
        );
        let groups = root(false, DiscoveryFormat::Legacy);
        assert_eq!(
            groups["groups"][0]["preferredVersion"]["groupVersion"],
            "apps/v1"
        );
        let v1 = resource_list("", "v1").unwrap();
        assert!(
            v1["resources"]
                .as_array()
                .unwrap()
                .iter()
                .any(|r| r["name"] == "pods/exec")
        );
        assert!(resource_list("apps", "v2").is_none());
    }

    #[test]
    fn openapi_v3_declares_field_validation_for_every_kind() {
        let root = openapi_v3_root();
        assert!(
            root["paths"]["apis/apps/v1"]["serverRelativeURL"]
                .as_str()
                .unwrap()
                .starts_with("/openapi/v3/apis/apps/v1?hash=")
        );
        let core = openapi_v3_group_version("", "v1").unwrap();
        let patch = &core["paths"]["/api/v1/namespaces/{namespace}/configmaps/{name}"]["patch"];
        assert_eq!(
            patch["x-kubernetes-group-version-kind"]["kind"],
            "ConfigMap"
        );
        assert_eq!(patch["parameters"][0]["name"], "fieldValidation");
        assert!(core["paths"].get("/api/v1/namespaces/{name}").is_some());
    }
}
