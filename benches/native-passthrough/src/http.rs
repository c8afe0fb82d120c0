//! `http_passthrough`: an HTTP filter that passes every request and response
//! on, and shows on the way that it read and changed them, so a test can
//! hold each part of the HTTP bindings to what Envoy and the server did.
//!
//! - Request bodies are buffered whole (as the Kubernetes filter must before
//!   it decides) and then passed on; the response body streams through.
//! - Every request reaches the server with `x-gatehouse-passthrough: <n>`
//!   (the body's length) and without `x-gatehouse-strip`; every response
//!   reaches the client with `x-gatehouse-passthrough: seen`.
//! - At the end of each stream, filter state `gatehouse.http_passthrough`
//!   holds `request=<n> response=<n> source=<addr>`, and the counters
//!   `http_passthrough_request_bytes` / `http_passthrough_response_bytes` grow
//!   and `http_passthrough_streams_completed` counts it (local replies and
//!   resets included: their end arrives during the hook that sent them);
//!   `http_passthrough_requests{method}` counts requests by method.
//! - With `{"hold_responses": true}` every response is held whole and written
//!   back unchanged: the native cost of holding a body for masking (bench).
//! - A request with `x-gatehouse-probe: local-reply` is answered by the
//!   filter (418); with `x-gatehouse-probe: callout` the filter asks
//!   `GET /version` of the configured `callout_cluster` and answers with what
//!   came back; with `x-gatehouse-probe: rewrite` it holds the response whole
//!   and passes on `{"rewritten": <the server's body>}` (as masking must);
//!   with `x-gatehouse-probe: reset` it resets the stream; with
//!   `x-gatehouse-probe: panic` it panics (the boundary must
//!   answer 500 and Envoy serve on).

use gatehouse_dynamic_modules_abi::http::{
    Body, BodyStatus, CalloutResponse, HeaderMap, HeadersStatus, HttpConfigEnvoy, HttpFilter,
    HttpFilterConfig, LabelledCounterId, Message, MetricId, Stream,
};

pub fn new_config(
    name: &str,
    config: &[u8],
    envoy: &mut HttpConfigEnvoy,
) -> Result<Box<dyn HttpFilterConfig>, String> {
    if name != "http_passthrough" {
        return Err(format!(
            "unknown HTTP filter {name:?} (this module has \"http_passthrough\")"
        ));
    }
    let config: serde_json::Value = if config.is_empty() {
        serde_json::Value::Null
    } else {
        serde_json::from_slice(config).map_err(|e| format!("configuration: {e}"))?
    };
    let callout_cluster = config
        .get("callout_cluster")
        .and_then(serde_json::Value::as_str)
        .map(str::to_owned);
    let hold_responses = config
        .get("hold_responses")
        .and_then(serde_json::Value::as_bool)
        .unwrap_or(false);
    Ok(Box::new(PassthroughConfig {
        request_bytes: envoy.define_counter("http_passthrough_request_bytes"),
        response_bytes: envoy.define_counter("http_passthrough_response_bytes"),
        completed: envoy.define_counter("http_passthrough_streams_completed"),
        by_method: envoy.define_labelled_counter("http_passthrough_requests", &["method"]),
        callout_cluster,
        hold_responses,
    }))
}

struct PassthroughConfig {
    request_bytes: Option<MetricId>,
    response_bytes: Option<MetricId>,
    completed: Option<MetricId>,
    by_method: Option<LabelledCounterId>,
    callout_cluster: Option<String>,
    hold_responses: bool,
}

impl HttpFilterConfig for PassthroughConfig {
    fn new_filter(&self, _stream: &mut Stream) -> Option<Box<dyn HttpFilter>> {
        Some(Box::new(Passthrough {
            request_bytes: self.request_bytes,
            response_bytes: self.response_bytes,
            completed: self.completed,
            by_method: self.by_method,
            callout_cluster: self.callout_cluster.clone(),
            request: 0,
            response: 0,
            rewrite: false,
            hold: self.hold_responses,
        }))
    }
}

struct Passthrough {
    request_bytes: Option<MetricId>,
    response_bytes: Option<MetricId>,
    completed: Option<MetricId>,
    by_method: Option<LabelledCounterId>,
    callout_cluster: Option<String>,
    request: usize,
    response: usize,
    /// Hold the response whole and rewrite it.
    rewrite: bool,
    /// Hold the response whole and write it back unchanged.
    hold: bool,
}

impl Passthrough {
    /// Marks the request for the server with its body's length, strips the
    /// header the test asks to strip, and lets it go.
    fn release_request(&mut self, stream: &mut Stream) {
        stream.set_header(
            HeaderMap::RequestHeaders,
            "x-gatehouse-passthrough",
            self.request.to_string().as_bytes(),
        );
        stream.remove_header(HeaderMap::RequestHeaders, "x-gatehouse-strip");
        if let Some(id) = self.request_bytes {
            stream.increment_counter(id, self.request as u64);
        }
    }
}

impl HttpFilter for Passthrough {
    fn on_request_headers(&mut self, stream: &mut Stream, end_stream: bool) -> HeadersStatus {
        if let Some(id) = self.by_method {
            let method = stream
                .header(HeaderMap::RequestHeaders, ":method")
                .map(|m| String::from_utf8_lossy(m).into_owned())
                .unwrap_or_default();
            stream.increment_labelled(id, &[&method], 1);
        }
        match stream.header(HeaderMap::RequestHeaders, "x-gatehouse-probe") {
            Some(b"local-reply") => {
                stream.send_response(
                    418,
                    &[("x-gatehouse-probe", b"answered")],
                    b"answered by the module\n",
                    "gatehouse_probe",
                );
                return HeadersStatus::StopIteration;
            }
            Some(b"callout") => {
                let Some(cluster) = self.callout_cluster.clone() else {
                    stream.send_response(500, &[], b"no callout_cluster\n", "gatehouse_probe");
                    return HeadersStatus::StopIteration;
                };
                let headers = [(":method", "GET"), (":path", "/version"), ("host", "kube")];
                if let Err(error) = stream.http_callout(&cluster, &headers, b"", 5_000) {
                    let body = format!("callout refused: {error}\n");
                    stream.send_response(502, &[], body.as_bytes(), "gatehouse_probe");
                }
                return HeadersStatus::StopIteration;
            }
            Some(b"rewrite") => self.rewrite = true,
            Some(b"reset") => {
                stream.reset_stream("gatehouse_probe");
                return HeadersStatus::StopIteration;
            }
            Some(b"panic") => {
                // The test's deliberate panic: the boundary must catch it.
                #[allow(clippy::panic)]
                {
                    panic!("deliberate panic on a probed request");
                }
            }
            _ => {}
        }
        if end_stream {
            self.release_request(stream);
            return HeadersStatus::Continue;
        }
        // Hold the headers with the body: they can still change once it is read.
        HeadersStatus::StopIteration
    }

    fn on_request_body(&mut self, stream: &mut Stream, end_stream: bool) -> BodyStatus {
        if !end_stream {
            return BodyStatus::StopIterationAndBuffer;
        }
        // The whole body: what Envoy buffered, then the last chunk.
        self.request = stream.whole_body_size(Message::Request);
        self.release_request(stream);
        BodyStatus::Continue
    }

    fn on_response_headers(&mut self, stream: &mut Stream, end_stream: bool) -> HeadersStatus {
        stream.set_header(
            HeaderMap::ResponseHeaders,
            "x-gatehouse-passthrough",
            b"seen",
        );
        if (self.rewrite || self.hold) && !end_stream {
            // Held with the body, whose length changes.
            return HeadersStatus::StopIteration;
        }
        HeadersStatus::Continue
    }

    fn on_response_body(&mut self, stream: &mut Stream, end_stream: bool) -> BodyStatus {
        if self.rewrite {
            if !end_stream {
                return BodyStatus::StopIterationAndBuffer;
            }
            let original = stream.whole_body(Message::Response);
            let mut rewritten = b"{\"rewritten\": ".to_vec();
            rewritten.extend_from_slice(&original);
            rewritten.extend_from_slice(b"}");
            stream.replace_whole_body(Message::Response, &rewritten);
            stream.set_header(
                HeaderMap::ResponseHeaders,
                "content-length",
                rewritten.len().to_string().as_bytes(),
            );
            self.response = rewritten.len();
            return BodyStatus::Continue;
        }
        if self.hold {
            if !end_stream {
                return BodyStatus::StopIterationAndBuffer;
            }
            let whole = stream.whole_body(Message::Response);
            stream.replace_whole_body(Message::Response, &whole);
            self.response = whole.len();
            return BodyStatus::Continue;
        }
        let length = stream.body_size(Body::ReceivedResponse);
        self.response += length;
        if let Some(id) = self.response_bytes {
            stream.increment_counter(id, length as u64);
        }
        BodyStatus::Continue
    }

    fn on_http_callout_done(
        &mut self,
        stream: &mut Stream,
        _callout_id: u64,
        response: CalloutResponse<'_>,
    ) {
        let status = response.header(":status").unwrap_or(b"none").to_vec();
        stream.send_response(
            200,
            &[("x-callout-status", &status)],
            &response.body_bytes(),
            "gatehouse_callout",
        );
    }

    fn on_stream_complete(&mut self, stream: &mut Stream) {
        let source = stream.source_address().unwrap_or_default();
        let summary = format!(
            "request={} response={} source={source}",
            self.request, self.response
        );
        stream.set_filter_state("gatehouse.http_passthrough", summary.as_bytes());
        if let Some(id) = self.completed {
            stream.increment_counter(id, 1);
        }
    }
}
