//! Path and query parsing: which document or resource a request addresses.

use crate::resources::{self, NAMESPACES, Resource};

/// What a request path addresses.
#[derive(Debug, PartialEq)]
pub enum Route {
    /// `/`: the list of served paths.
    Paths,
    Version,
    Health,
    /// `/api` (`core`) or `/apis`.
    DiscoveryRoot {
        core: bool,
    },
    /// `/apis/<group>`.
    Group(String),
    /// `/api/v1`, `/apis/<group>/<version>`.
    ResourceList {
        group: String,
        version: String,
    },
    Resource(Target),
    /// `/openapi/v3`.
    OpenApiRoot,
    /// `/openapi/v3/api/v1`, `/openapi/v3/apis/<group>/<version>`.
    OpenApiGroupVersion {
        group: String,
        version: String,
    },
    /// Anything else, including `/openapi/v2`.
    Unknown,
}

/// A resource request (the apiserver's RequestInfo, reduced to what is served).
#[derive(Debug, PartialEq)]
pub struct Target {
    pub resource: &'static Resource,
    /// The namespace for namespaced resources; `""` for cluster-scoped ones.
    pub namespace: String,
    /// Whether the path named a namespace (`None` lists across all of them).
    pub namespaced_path: bool,
    pub name: Option<String>,
    pub subresource: Option<String>,
    /// The deprecated `/watch/` path prefix.
    pub watch_prefix: bool,
}

/// Parses a request path (percent-decoded segment by segment).
pub fn parse(path: &str) -> Route {
    let segments: Vec<String> = path
        .trim_matches('/')
        .split('/')
        .filter(|s| !s.is_empty())
        .map(|s| percent_decode(s, false))
        .collect();
    let parts: Vec<&str> = segments.iter().map(String::as_str).collect();
    match parts.as_slice() {
        [] => Route::Paths,
        ["version"] => Route::Version,
        ["healthz" | "livez" | "readyz"] => Route::Health,
        ["api"] => Route::DiscoveryRoot { core: true },
        ["apis"] => Route::DiscoveryRoot { core: false },
        ["api", version] => Route::ResourceList {
            group: String::new(),
            version: version.to_string(),
        },
        ["apis", group] => Route::Group(group.to_string()),
        ["apis", group, version] => Route::ResourceList {
            group: group.to_string(),
            version: version.to_string(),
        },
        ["openapi", "v3"] => Route::OpenApiRoot,
        ["openapi", "v3", "api", version] => Route::OpenApiGroupVersion {
            group: String::new(),
            version: version.to_string(),
        },
        ["openapi", "v3", "apis", group, version] => Route::OpenApiGroupVersion {
            group: group.to_string(),
            version: version.to_string(),
        },
        ["api", version, rest @ ..] => resource_route("", version, rest),
        ["apis", group, version, rest @ ..] => resource_route(group, version, rest),
        _ => Route::Unknown,
    }
}

fn resource_route(group: &str, version: &str, rest: &[&str]) -> Route {
    let (watch_prefix, rest) = match rest {
        ["watch", rest @ ..] => (true, rest),
        _ => (false, rest),
    };
    let (namespace, rest) = match rest {
        // The namespace object itself, or its status/finalize subresources.
        ["namespaces", ns] | ["namespaces", ns, "status" | "finalize"] if group.is_empty() => {
            let sub = rest.get(2).map(|s| s.to_string());
            return match resources::find(group, version, NAMESPACES.plural) {
                Some(resource) => Route::Resource(Target {
                    resource,
                    namespace: String::new(),
                    namespaced_path: false,
                    name: Some(ns.to_string()),
                    subresource: sub,
                    watch_prefix,
                }),
                None => Route::Unknown,
            };
        }
        ["namespaces", ns, rest @ ..] => (Some(*ns), rest),
        _ => (None, rest),
    };
    let (plural, name, subresource) = match rest {
        [plural] => (*plural, None, None),
        [plural, name] => (*plural, Some(*name), None),
        [plural, name, sub] => (*plural, Some(*name), Some(*sub)),
        _ => return Route::Unknown,
    };
    let Some(resource) = resources::find(group, version, plural) else {
        return Route::Unknown;
    };
    if namespace.is_some() && !resource.namespaced {
        return Route::Unknown;
    }
    Route::Resource(Target {
        resource,
        namespace: namespace.unwrap_or_default().to_string(),
        namespaced_path: namespace.is_some(),
        name: name.map(str::to_string),
        subresource: subresource.map(str::to_string),
        watch_prefix,
    })
}

/// Query parameters in order, decoded (`+` is a space).
#[derive(Debug, Default)]
pub struct Query(Vec<(String, String)>);

impl Query {
    pub fn parse(query: Option<&str>) -> Query {
        Query(
            query
                .unwrap_or("")
                .split('&')
                .filter(|p| !p.is_empty())
                .map(|p| {
                    let (k, v) = p.split_once('=').unwrap_or((p, ""));
                    (percent_decode(k, true), percent_decode(v, true))
                })
                .collect(),
        )
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// Every value of a repeated parameter (exec's `command`).
    pub fn all(&self, name: &str) -> Vec<String> {
        self.0
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .collect()
    }

    /// apimachinery's bool conversion: present and not `0`/`false` means true
    /// (a bare `?watch` counts as true).
    pub fn flag(&self, name: &str) -> bool {
        self.get(name)
            .is_some_and(|v| v != "0" && !v.eq_ignore_ascii_case("false"))
    }
}

/// Decodes `%XX` escapes (invalid ones stay as they are); `plus_is_space` for queries.
pub fn percent_decode(text: &str, plus_is_space: bool) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        let hex = |at: usize| bytes.get(at).and_then(|c| (*c as char).to_digit(16));
        match (b, hex(i + 1), hex(i + 2)) {
            (b'%', Some(hi), Some(lo)) => {
                out.push((hi * 16 + lo) as u8);
                i += 3;
            }
            (b'+', _, _) if plus_is_space => {
                out.push(b' ');
                i += 1;
            }
            _ => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::{DEPLOYMENTS, PODS};

    fn target(path: &str) -> Target {
        match parse(path) {
            Route::Resource(t) => t,
            other => panic!("{path}: {other:?}"),
        }
    }

    #[test]
    fn routes_discovery_documents() {
        assert_eq!(parse("/api"), Route::DiscoveryRoot { core: true });
        assert_eq!(parse("/apis/"), Route::DiscoveryRoot { core: false });
        assert_eq!(parse("/apis/apps"), Route::Group("apps".into()));
        assert_eq!(
            parse("/api/v1"),
            Route::ResourceList {
                group: String::new(),
                version: "v1".into()
            }
        );
        assert_eq!(parse("/openapi/v2"), Route::Unknown);
    }

    #[test]
    fn routes_namespaces_as_cluster_scoped_objects() {
        let t = target("/api/v1/namespaces/prod");
        assert_eq!(t.resource, &NAMESPACES);
        assert_eq!(t.name.as_deref(), Some("prod"));
        assert_eq!(t.namespace, "");
        let t = target("/api/v1/namespaces/prod/finalize");
        assert_eq!(t.subresource.as_deref(), Some("finalize"));
    }

    #[test]
    fn routes_namespaced_resources_and_subresources() {
        let t = target("/api/v1/namespaces/dev/pods/web-0/exec");
        assert_eq!((t.resource, t.namespace.as_str()), (&PODS, "dev"));
        assert_eq!(t.subresource.as_deref(), Some("exec"));
        let t = target("/apis/apps/v1/watch/namespaces/dev/deployments");
        assert!(t.watch_prefix && t.name.is_none() && t.resource == &DEPLOYMENTS);
        let t = target("/api/v1/pods");
        assert!(!t.namespaced_path);
        // An encoded slash is decoded into the name, as the apiserver would not split it.
        assert_eq!(
            target("/api/v1/namespaces/dev/pods/a%2Fb").name.as_deref(),
            Some("a/b")
        );
        assert_eq!(parse("/api/v1/namespaces/dev/widgets"), Route::Unknown);
        assert_eq!(
            parse("/api/v1/namespaces/dev/pods/a/log/extra"),
            Route::Unknown
        );
    }

    #[test]
    fn parses_queries() {
        let q = Query::parse(Some(
            "command=echo&command=hi+there&fieldSelector=metadata.name%3Dweb-0&watch",
        ));
        assert_eq!(q.all("command"), vec!["echo", "hi there"]);
        assert_eq!(q.get("fieldSelector"), Some("metadata.name=web-0"));
        assert!(q.flag("watch"));
        assert!(!Query::parse(Some("watch=false")).flag("watch"));
        assert!(!Query::parse(Some("watch=0")).flag("watch"));
        assert_eq!(percent_decode("%zz%4", false), "%zz%4");
    }
}
