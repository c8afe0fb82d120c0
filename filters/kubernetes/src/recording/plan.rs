//! From an admitted request to a recorded session: what the gate decides at
//! the request's headers, and what the glue checks when the upgrade is
//! answered.

use super::config::RecordingConfig;
use super::recorder::SessionInfo;
use super::session::{ExecSession, Output, TransportKind};
use crate::exec::{StreamKind, StreamRequest, Transport};
use crate::request_info::RequestInfo;
use gatehouse_core::identity::Identity;
use std::sync::Arc;

/// The channel protocols whose WebSocket framing gatehouse reads (binary
/// messages with a channel byte); the `base64.channel.k8s.io` ones are not.
pub const WEBSOCKET_PROTOCOLS: [&str; 5] = [
    "v5.channel.k8s.io",
    "v4.channel.k8s.io",
    "v3.channel.k8s.io",
    "v2.channel.k8s.io",
    "channel.k8s.io",
];

/// An admitted exec or attach request, as the recording names it.
#[derive(Debug, Clone, Copy)]
pub struct SessionRequest<'a> {
    pub info: &'a RequestInfo,
    pub stream: &'a StreamRequest,
    pub identity: &'a Identity,
    /// The rule that admitted it.
    pub rule: Option<&'a str>,
    pub audit_id: &'a str,
    pub policy_hash: &'a str,
}

/// A session to record once the API server accepts the upgrade.
#[derive(Debug, Clone)]
pub struct RecordingPlan {
    pub config: Arc<RecordingConfig>,
    pub info: SessionInfo,
    pub transport: TransportKind,
}

impl RecordingPlan {
    /// The plan for an exec or attach (port-forward carries no terminal and
    /// is not recorded); `None` when the request asks for no known upgrade,
    /// which the API server refuses anyway.
    pub fn for_request(
        config: Arc<RecordingConfig>,
        request: &SessionRequest<'_>,
    ) -> Option<RecordingPlan> {
        let stream = request.stream;
        if stream.kind == StreamKind::PortForward {
            return None;
        }
        let transport = match stream.transport {
            Transport::WebSocket => TransportKind::WebSocket,
            Transport::Spdy => TransportKind::Spdy,
            Transport::NotUpgraded => return None,
        };
        let info = SessionInfo {
            audit_id: request.audit_id.to_owned(),
            user: request.identity.subject.clone(),
            groups: request.identity.groups.clone(),
            namespace: request.info.namespace.clone(),
            pod: request.info.name.clone(),
            container: stream.container.clone(),
            subresource: stream.kind.subresource().to_owned(),
            command: stream.command.clone(),
            tty: stream.tty,
            stdin: stream.stdin,
            rule: request.rule.unwrap_or_default().to_owned(),
            policy_hash: Some(request.policy_hash.to_owned()),
        };
        Some(RecordingPlan {
            config,
            info,
            transport,
        })
    }

    /// Starts the session for the API server's 101: `protocol` is the
    /// `Sec-WebSocket-Protocol` (or `X-Stream-Protocol-Version`) it chose and
    /// `extensions` its `Sec-WebSocket-Extensions`. A stream gatehouse could
    /// not read (base64 framing, a compression extension) is not let through
    /// unrecorded: the output then says to end it.
    pub fn start(self, protocol: &str, extensions: &str, now_us: u64) -> (ExecSession, Output) {
        let refusal = match self.transport {
            TransportKind::WebSocket if !extensions.trim().is_empty() => Some(format!(
                "the API server negotiated WebSocket extensions ({extensions}) gatehouse cannot read"
            )),
            TransportKind::WebSocket if !WEBSOCKET_PROTOCOLS.contains(&protocol) => Some(format!(
                "the API server chose stream protocol \"{protocol}\", which gatehouse cannot record"
            )),
            _ => None,
        };
        let (mut session, mut output) =
            ExecSession::start(self.info, self.config, self.transport, protocol, now_us);
        if let Some(reason) = refusal {
            output.records.extend(session.abort(&reason, now_us));
            output.end = true;
        }
        (session, output)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn plan(transport: TransportKind) -> RecordingPlan {
        RecordingPlan {
            config: Arc::new(RecordingConfig::from_value(json!({})).unwrap()),
            info: SessionInfo {
                audit_id: "a".into(),
                stdin: true,
                ..SessionInfo::default()
            },
            transport,
        }
    }

    #[test]
    fn a_stream_gatehouse_cannot_read_is_ended_and_recorded_as_such() {
        for (transport, protocol, extensions, readable) in [
            (TransportKind::WebSocket, "v5.channel.k8s.io", "", true),
            (TransportKind::WebSocket, "v4.channel.k8s.io", "", true),
            (
                TransportKind::WebSocket,
                "v4.base64.channel.k8s.io",
                "",
                false,
            ),
            (TransportKind::WebSocket, "", "", false),
            (
                TransportKind::WebSocket,
                "v5.channel.k8s.io",
                "permessage-deflate",
                false,
            ),
            (TransportKind::Spdy, "v4.channel.k8s.io", "", true),
        ] {
            let (_, output) = plan(transport).start(protocol, extensions, 1);
            assert_eq!(output.end, !readable, "{protocol} {extensions}");
            let last: Value = serde_json::from_str(output.records.last().unwrap()).unwrap();
            let ended =
                last["type"] == "k8s.exec.session_end" && last["reason"] == "protocol_error";
            assert_eq!(ended, !readable, "{last}");
        }
    }
}
