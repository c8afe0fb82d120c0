//! Notifications and record delivery from the outbox.
//!
//! A notification is a Slack-compatible incoming-webhook body (`{"text": …}`,
//! which Slack, Mattermost, Rocket.Chat and Teams' Slack-compatible hooks
//! read). It is queued in the same transaction as the change it reports and
//! delivered by a background loop with retries and backoff, so a failing
//! webhook never delays or blocks a decision, and a restart loses none.

use crate::client::{self, Outgoing};
use crate::store::{OutboxItem, Store, now_us};
use gatehouse_core::approval::{ApprovalRequest, Event, Principal, format_duration};
use std::time::Duration;

/// The webhook body for `event`, or `None` for events nobody is told about
/// (a partial approval, a grant being used).
pub fn message(event: Event, request: &ApprovalRequest, actor: &Principal) -> Option<String> {
    let id = &request.id;
    let what = request.target.describe();
    let requester = &request.requester.subject;
    let reason = request
        .reason
        .as_deref()
        .map(|r| format!("\nReason: {r}"))
        .unwrap_or_default();
    let review_reason = request
        .reviews
        .last()
        .and_then(|r| r.reason.as_deref())
        .map(|r| format!(": {r}"))
        .unwrap_or_default();
    let text = match event {
        Event::Requested => format!(
            ":lock: gatehouse approval {id}: {requester} asks to run {what} (rule {rule}){reason}\n\
             Approvers ({groups}): gatehouse approve {id}   or   gatehouse deny {id} --reason …",
            rule = request.rule,
            groups = request.requirement.approvers.join(", "),
        ),
        Event::Approved if request.forced => format!(
            ":rotating_light: gatehouse BREAK-GLASS {id}: {requester} approved their own request \
             for {what} (rule {rule}){review_reason}\nSkipped approvers: {groups}. Valid for {valid}.",
            rule = request.rule,
            groups = request.requirement.approvers.join(", "),
            valid = format_duration(request.grant_seconds),
        ),
        Event::Approved => format!(
            ":white_check_mark: gatehouse approval {id} approved by {approvers}: {requester} may run \
             {what} ({grant}, valid for {valid})",
            approvers = request
                .reviews
                .iter()
                .map(|r| r.by.subject.as_str())
                .collect::<Vec<_>>()
                .join(", "),
            grant = request.requirement.grant.as_str().replace('_', "-"),
            valid = format_duration(request.grant_seconds),
        ),
        Event::Denied => format!(
            ":no_entry: gatehouse approval {id} denied by {by}{review_reason}: {requester} may not run {what}",
            by = actor.subject,
        ),
        Event::Expired => {
            format!(":hourglass: gatehouse approval {id} expired ({requester}: {what})")
        }
        Event::Reviewed | Event::Used => return None,
    };
    Some(serde_json::json!({ "text": text }).to_string())
}

/// Where outbox entries go.
#[derive(Debug, Clone)]
pub struct Targets {
    pub webhook: Option<crate::config::WebhookConfig>,
    pub records_url: Option<String>,
}

/// Delivers the outbox until the process ends.
pub async fn run(store: std::sync::Arc<Store>, targets: Targets) {
    loop {
        match deliver_due(&store, &targets).await {
            Ok(0) => tokio::time::sleep(Duration::from_millis(200)).await,
            Ok(_) => {}
            Err(e) => {
                eprintln!("gatehouse-approvals: outbox: {e}");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

/// One round: claims what is due and tries it once; returns how many.
pub async fn deliver_due(
    store: &Store,
    targets: &Targets,
) -> Result<usize, crate::store::StoreError> {
    let items = store.claim_outbox(now_us(), 20).await?;
    let count = items.len();
    for item in items {
        let outcome = deliver(&item, targets).await;
        let finish = match outcome {
            Ok(()) => Ok(()),
            Err((error, attempts_allowed)) => {
                let attempts = u32::try_from(item.attempts).unwrap_or(0) + 1;
                eprintln!(
                    "gatehouse-approvals: {} delivery {} attempt {attempts} failed: {error}",
                    item.kind, item.id
                );
                let next = (attempts < attempts_allowed).then(|| now_us() + backoff_us(attempts));
                Err((error, next))
            }
        };
        store.finish_outbox(item.id, finish).await?;
    }
    Ok(count)
}

/// 200 ms doubling to 10 s.
fn backoff_us(attempts: u32) -> u64 {
    (200_000u64 << attempts.min(6)).min(10_000_000)
}

async fn deliver(item: &OutboxItem, targets: &Targets) -> Result<(), (String, u32)> {
    let (outgoing, attempts) = match (item.kind.as_str(), targets) {
        (
            "webhook",
            Targets {
                webhook: Some(hook),
                ..
            },
        ) => (
            Outgoing {
                timeout: Duration::from_millis(hook.timeout_ms),
                ..Outgoing::new("POST", &hook.url)
            },
            hook.attempts,
        ),
        // Records are evidence: retried until the sink takes them. Envoy's
        // record listener speaks HTTP/2 only.
        (
            "record",
            Targets {
                records_url: Some(url),
                ..
            },
        ) => (
            Outgoing {
                content_type: "application/x-ndjson",
                http2: true,
                ..Outgoing::new("POST", url)
            },
            u32::MAX,
        ),
        (kind, _) => return Err((format!("no {kind} target configured"), 0)),
    };
    let outgoing = Outgoing {
        body: item.body.clone().into_bytes(),
        ..outgoing
    };
    client::call(outgoing)
        .await
        .map(|_| ())
        .map_err(|e| (e.to_string(), attempts))
}

#[cfg(test)]
#[allow(clippy::indexing_slicing)]
mod tests {
    use super::*;
    use gatehouse_core::approval::{ApprovalRequirement, Holding, NewRequest, Target, Verdict};

    fn who(subject: &str, groups: &[&str]) -> Principal {
        Principal {
            subject: subject.into(),
            groups: groups.iter().map(|g| g.to_string()).collect(),
        }
    }

    fn request() -> ApprovalRequest {
        ApprovalRequest::new(
            "apr-abcd1234".into(),
            NewRequest {
                id: None,
                rule: "customer-writes".into(),
                requirement: ApprovalRequirement::from_value(
                    serde_json::json!({"approvers": ["dba"], "break_glass": ["oncall"]}),
                    Holding::NotPossible,
                )
                .unwrap(),
                reason: Some("ticket 42".into()),
                target: Target::Scope {
                    name: "customer-writes".into(),
                },
                grant_seconds: None,
            },
            who("dev", &["developer", "oncall"]),
            0,
        )
        .unwrap()
    }

    fn text(body: &str) -> String {
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        v["text"].as_str().unwrap().to_owned()
    }

    #[test]
    fn a_new_request_tells_approvers_how_to_answer() {
        let r = request();
        let t = text(&message(Event::Requested, &r, &r.requester).unwrap());
        assert!(t.contains("apr-abcd1234") && t.contains("dev asks"), "{t}");
        assert!(
            t.contains("Reason: ticket 42") && t.contains("gatehouse approve apr-abcd1234"),
            "{t}"
        );
        assert!(t.contains("Approvers (dba)"), "{t}");
    }

    #[test]
    fn decisions_name_who_and_break_glass_names_the_skipped_approvers() {
        let mut r = request();
        let dana = who("dana", &["dba"]);
        r.review(&dana, Verdict::Approve, None, 1).unwrap();
        let t = text(&message(Event::Approved, &r, &dana).unwrap());
        assert!(
            t.contains("approved by dana") && t.contains("single-use"),
            "{t}"
        );
        let mut forced = request();
        let dev = forced.requester.clone();
        forced
            .review(&dev, Verdict::Approve, Some("outage".into()), 1)
            .unwrap();
        let t = text(&message(Event::Approved, &forced, &dev).unwrap());
        assert!(
            t.contains("BREAK-GLASS")
                && t.contains("Skipped approvers: dba")
                && t.contains("outage"),
            "{t}"
        );
        let mut denied = request();
        denied
            .review(&dana, Verdict::Deny, Some("no ticket".into()), 1)
            .unwrap();
        let t = text(&message(Event::Denied, &denied, &dana).unwrap());
        assert!(t.contains("denied by dana: no ticket"), "{t}");
        assert_eq!(message(Event::Used, &r, &dana), None);
    }

    #[test]
    fn retries_back_off_up_to_ten_seconds() {
        assert_eq!(backoff_us(1), 400_000);
        assert_eq!(backoff_us(20), 10_000_000);
    }
}
