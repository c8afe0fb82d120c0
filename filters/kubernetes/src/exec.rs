//! Streaming pod subresources: `exec`, `attach` and `portforward`.
//!
//! kubectl opens each of these twice: first as a WebSocket `GET`
//! (`Sec-WebSocket-Protocol: v5.channel.k8s.io`, or `SPDY/3.1+portforward.k8s.io`
//! for port-forward), then, on any non-101 answer, as a SPDY `POST`
//! (`Upgrade: SPDY/3.1`, `X-Stream-Protocol-Version: ...`). Both forms decode to the
//! same [`StreamRequest`], so one rule covers both attempts. Everything policy needs
//! is in the path and query; port numbers of a port-forward travel inside the
//! tunnel and are not visible here.

use crate::request_info::{Query, RequestInfo};

/// Which streaming subresource a request opens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StreamKind {
    Exec,
    Attach,
    PortForward,
}

impl StreamKind {
    /// The subresource name, as in `pods/exec`.
    pub fn subresource(self) -> &'static str {
        match self {
            StreamKind::Exec => "exec",
            StreamKind::Attach => "attach",
            StreamKind::PortForward => "portforward",
        }
    }

    fn from_subresource(subresource: &str) -> Option<Self> {
        match subresource {
            "exec" => Some(StreamKind::Exec),
            "attach" => Some(StreamKind::Attach),
            "portforward" => Some(StreamKind::PortForward),
            _ => None,
        }
    }
}

/// How the client asked to upgrade the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    /// `Upgrade: websocket` (kubectl 1.30+ first attempt).
    WebSocket,
    /// `Upgrade: SPDY/3.1` (the fallback, and the only form before kubectl 1.30).
    Spdy,
    /// No recognised upgrade. The API server refuses such a request, but policy
    /// still judges it like any other stream request.
    NotUpgraded,
}

/// Largest number of protocol names kept from the negotiation headers.
const MAX_PROTOCOLS: usize = 16;

/// An exec, attach or port-forward request, as policy sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamRequest {
    pub kind: StreamKind,
    pub transport: Transport,
    /// Stream protocols offered (`Sec-WebSocket-Protocol` or
    /// `X-Stream-Protocol-Version`), in order.
    pub protocols: Vec<String>,
    /// The command argv (`command=` repeated, in order); empty unless exec.
    pub command: Vec<String>,
    /// The `container` parameter; `None` lets the API server pick the default.
    pub container: Option<String>,
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
    pub tty: bool,
    /// `ports=` parameters of a port-forward as sent. kubectl sends none: it
    /// names ports inside the tunnel.
    pub ports: Vec<String>,
    /// Whether this is `kubectl cp`: an exec whose program is `tar`.
    pub is_copy: bool,
}

impl StreamRequest {
    /// Recognises `pods/{name}/exec|attach|portforward` in the core group and
    /// reads its options; `None` for every other request. `headers` are the
    /// request headers (names compared case-insensitively).
    pub fn from_request<I, K, V>(info: &RequestInfo, query: &Query, headers: I) -> Option<Self>
    where
        I: IntoIterator<Item = (K, V)>,
        K: AsRef<str>,
        V: AsRef<str>,
    {
        let kind = stream_kind(info).filter(|_| !info.name.is_empty())?;
        let (transport, protocols) = negotiation(headers);
        // Query booleans follow apimachinery's rule, as the API server decodes
        // PodExecOptions / PodAttachOptions with it.
        let command: Vec<String> = match kind {
            StreamKind::Exec => query.all("command").map(str::to_owned).collect(),
            _ => Vec::new(),
        };
        let is_copy =
            kind == StreamKind::Exec && command.first().is_some_and(|program| is_tar(program));
        Some(Self {
            kind,
            transport,
            protocols,
            command,
            container: query.first("container").map(str::to_owned),
            stdin: query.flag("stdin"),
            stdout: query.flag("stdout"),
            stderr: query.flag("stderr"),
            tty: query.flag("tty"),
            ports: match kind {
                StreamKind::PortForward => query.all("ports").map(str::to_owned).collect(),
                _ => Vec::new(),
            },
            is_copy,
        })
    }

    /// The verb policy should judge: `create`, whatever the method. The API server
    /// requires `create` on these subresources for the WebSocket `GET` too
    /// (KEP-4006), and a rule that only covered `get` would let the SPDY `POST`
    /// through. Audit records keep `RequestInfo.verb`.
    pub fn policy_verb(&self) -> &'static str {
        "create"
    }
}

/// The verb authorization uses for a request: `create` for the streaming pod
/// subresources (see [`StreamRequest::policy_verb`]), otherwise `RequestInfo.verb`.
pub fn authorization_verb(info: &RequestInfo) -> &str {
    if stream_kind(info).is_some() {
        "create"
    } else {
        &info.verb
    }
}

/// The streaming subresource a request targets on a core-group pod, if any.
fn stream_kind(info: &RequestInfo) -> Option<StreamKind> {
    let is_pod = info.is_resource_request && info.api_group.is_empty() && info.resource == "pods";
    is_pod
        .then(|| StreamKind::from_subresource(&info.subresource))
        .flatten()
}

/// Whether an exec program is `tar` (as `kubectl cp` runs it), by path or not.
fn is_tar(program: &str) -> bool {
    program.rsplit('/').next() == Some("tar")
}

/// The transport and offered protocols from the upgrade headers.
fn negotiation<I, K, V>(headers: I) -> (Transport, Vec<String>)
where
    I: IntoIterator<Item = (K, V)>,
    K: AsRef<str>,
    V: AsRef<str>,
{
    let mut transport = Transport::NotUpgraded;
    let mut websocket_protocols = Vec::new();
    let mut stream_protocols = Vec::new();
    for (name, value) in headers {
        let (name, value) = (name.as_ref(), value.as_ref());
        if name.eq_ignore_ascii_case("upgrade") {
            let upgrade = value.trim();
            if upgrade.eq_ignore_ascii_case("websocket") {
                transport = Transport::WebSocket;
            } else if upgrade
                .get(..5)
                .is_some_and(|p| p.eq_ignore_ascii_case("spdy/"))
            {
                transport = Transport::Spdy;
            }
        } else if name.eq_ignore_ascii_case("sec-websocket-protocol") {
            push_protocols(&mut websocket_protocols, value);
        } else if name.eq_ignore_ascii_case("x-stream-protocol-version") {
            push_protocols(&mut stream_protocols, value);
        }
    }
    let protocols = match transport {
        Transport::WebSocket => websocket_protocols,
        Transport::Spdy => stream_protocols,
        Transport::NotUpgraded => Vec::new(),
    };
    (transport, protocols)
}

/// Appends the comma-separated protocol names of one header value, up to the cap.
fn push_protocols(protocols: &mut Vec<String>, value: &str) {
    for protocol in value.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        if protocols.len() == MAX_PROTOCOLS {
            return;
        }
        protocols.push(protocol.to_owned());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request_info::decode_request;

    const EXEC_URL: &str = "/api/v1/namespaces/prod/pods/web-0/exec?command=cat&command=/etc/passwd&container=app&stderr=true&stdout=true";

    fn stream(method: &str, url: &str, headers: &[(&str, &str)]) -> Option<StreamRequest> {
        let decoded = decode_request(method, url).unwrap();
        StreamRequest::from_request(&decoded.info, &decoded.query, headers.iter().copied())
    }

    const WEBSOCKET: &[(&str, &str)] = &[
        ("connection", "Upgrade"),
        ("upgrade", "websocket"),
        ("sec-websocket-protocol", "v5.channel.k8s.io"),
        ("sec-websocket-version", "13"),
    ];
    const SPDY: &[(&str, &str)] = &[
        ("Connection", "Upgrade"),
        ("Upgrade", "SPDY/3.1"),
        (
            "X-Stream-Protocol-Version",
            "v5.channel.k8s.io, v4.channel.k8s.io, v3.channel.k8s.io",
        ),
        (
            "X-Stream-Protocol-Version",
            "v2.channel.k8s.io, channel.k8s.io",
        ),
    ];

    #[test]
    fn websocket_and_spdy_exec_attempts_decode_to_the_same_command() {
        let websocket = stream("GET", EXEC_URL, WEBSOCKET).unwrap();
        let spdy = stream("POST", EXEC_URL, SPDY).unwrap();
        assert_eq!(websocket.transport, Transport::WebSocket);
        assert_eq!(websocket.protocols, ["v5.channel.k8s.io"]);
        assert_eq!(spdy.transport, Transport::Spdy);
        assert_eq!(spdy.protocols.len(), 5);
        for request in [&websocket, &spdy] {
            assert_eq!(request.kind, StreamKind::Exec);
            assert_eq!(request.command, ["cat", "/etc/passwd"]);
            assert_eq!(request.container.as_deref(), Some("app"));
            assert!(request.stdout && request.stderr && !request.stdin && !request.tty);
            assert!(!request.is_copy);
            assert_eq!(request.policy_verb(), "create");
        }
    }

    #[test]
    fn policy_verb_is_create_while_audit_verb_follows_the_method() {
        let get = decode_request("GET", EXEC_URL).unwrap().info;
        let post = decode_request("POST", EXEC_URL).unwrap().info;
        assert_eq!((get.verb.as_str(), post.verb.as_str()), ("get", "create"));
        assert_eq!(
            (authorization_verb(&get), authorization_verb(&post)),
            ("create", "create")
        );
        let log = decode_request("GET", "/api/v1/namespaces/prod/pods/web-0/log")
            .unwrap()
            .info;
        assert_eq!(authorization_verb(&log), "get");
    }

    #[test]
    fn interactive_shell_flags_are_read() {
        let url = "/api/v1/namespaces/prod/pods/web-0/exec?command=sh&command=-c&command=id&container=app&stdin=true&stdout=true&stderr=true&tty=true";
        let request = stream("POST", url, SPDY).unwrap();
        assert_eq!(request.command, ["sh", "-c", "id"]);
        assert!(request.stdin && request.tty);
        // apimachinery booleans: bare is true, 0/false are false
        let request = stream(
            "POST",
            "/api/v1/namespaces/p/pods/w/exec?command=ls&stdin&tty=False&stdout=0",
            &[],
        )
        .unwrap();
        assert!(request.stdin && !request.tty && !request.stdout);
        assert_eq!(request.transport, Transport::NotUpgraded);
    }

    #[test]
    fn kubectl_cp_is_an_exec_of_tar() {
        let to_pod = stream("POST", "/api/v1/namespaces/p/pods/w/exec?command=tar&command=-xmf&command=-&command=-C&command=%2Ftmp&stdin=true", SPDY).unwrap();
        let from_pod = stream("GET", "/api/v1/namespaces/p/pods/w/exec?command=%2Fbin%2Ftar&command=cf&command=-&command=%2Fetc", WEBSOCKET).unwrap();
        let not_tar = stream(
            "GET",
            "/api/v1/namespaces/p/pods/w/exec?command=sh&command=tar",
            WEBSOCKET,
        )
        .unwrap();
        assert!(to_pod.is_copy && from_pod.is_copy && !not_tar.is_copy);
    }

    #[test]
    fn attach_and_port_forward_are_stream_requests_without_argv() {
        let attach = stream(
            "POST",
            "/api/v1/namespaces/prod/pods/web-0/attach?container=app&stdin=true&command=ignored",
            SPDY,
        )
        .unwrap();
        assert_eq!(attach.kind, StreamKind::Attach);
        assert!(attach.command.is_empty() && attach.stdin);
        let forward_headers = [
            ("Upgrade", "websocket"),
            ("Sec-WebSocket-Protocol", "SPDY/3.1+portforward.k8s.io"),
        ];
        let forward = stream(
            "GET",
            "/api/v1/namespaces/prod/pods/web-0/portforward",
            &forward_headers,
        )
        .unwrap();
        assert_eq!(
            (forward.kind, forward.transport),
            (StreamKind::PortForward, Transport::WebSocket)
        );
        assert_eq!(forward.protocols, ["SPDY/3.1+portforward.k8s.io"]);
        assert!(forward.ports.is_empty());
        let forward = stream(
            "GET",
            "/api/v1/namespaces/prod/pods/web-0/portforward?ports=8080&ports=9090",
            &[],
        )
        .unwrap();
        assert_eq!(forward.ports, ["8080", "9090"]);
    }

    #[test]
    fn other_requests_are_not_stream_requests() {
        for (method, url) in [
            ("GET", "/api/v1/namespaces/prod/pods/web-0"),
            ("GET", "/api/v1/namespaces/prod/pods/web-0/log?follow=true"),
            ("GET", "/api/v1/namespaces/prod/services/web/exec"),
            (
                "GET",
                "/apis/example.com/v1/namespaces/prod/pods/web-0/exec",
            ),
            ("GET", "/api/v1/namespaces/prod/pods"),
        ] {
            assert_eq!(stream(method, url, WEBSOCKET), None, "{method} {url}");
        }
    }

    #[test]
    fn protocol_lists_are_capped() {
        let many = vec!["p"; MAX_PROTOCOLS + 10].join(",");
        let request = stream(
            "POST",
            EXEC_URL,
            &[
                ("upgrade", "spdy/3.1"),
                ("x-stream-protocol-version", &many),
            ],
        )
        .unwrap();
        assert_eq!(request.protocols.len(), MAX_PROTOCOLS);
    }
}
