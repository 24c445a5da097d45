//! A simulated integration platform on loopback: status
//! endpoints that go through each state on a cycle, and a webhook receiver
//! that verifies Standard Webhooks signatures and stores nothing.
//!
//! Routes (`{id}` below is the connection name):
//! - `GET /api/v1/connections/{id}/status`
//!   - `stable`: always online;
//!   - `cycling`: online for 20 s, then HTTP 503 for 25 s, and again;
//!   - `expiring`: online for 20 s, then 401 `CREDENTIALS_EXPIRED` for 30 s;
//!   - `ratelimited`: online for 20 s, then 429 with `Retry-After: 15` for 20 s;
//!   - `flapping`: online and HTTP 503 by turns, answer by answer;
//!   - `slow`: online after 2.5 s (above a 2 s `degraded_after`);
//!   - `malformed`: a body that is not JSON;
//!   - `syncing`: online, with a `sync` object whose runs complete, fail,
//!     or stall on a 90 s cycle;
//!   - `scoped`: online (but see its entities);
//!   - anything else: 404.
//! - `GET /api/v1/connections/{id}/entities/{entity}`: one record of that
//!   entity type; for `scoped`, `purchase_orders` is refused (403
//!   `PERMISSION_DENIED`: a permission was taken away in the source
//!   system) while `work_orders` works.
//! - `GET /api/v1/connections`: the platform's list of tenant connections,
//!   for `[[discovery]]`: `tenant-acme` and `tenant-globex` always,
//!   `tenant-initech` for the second minute of every two (it joins, then
//!   leaves); each `tenant-*` status is online.
//! - `POST /webhook`: 204 when the signature verifies (or no secret is set),
//!   401 when it does not, 400 when the headers are missing.
//! - `GET /`: the list of scenarios.

use crate::config::Secret;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// The scenarios served, in the order `GET /` lists them.
pub const SCENARIOS: &[&str] = &[
    "stable",
    "cycling",
    "expiring",
    "ratelimited",
    "flapping",
    "slow",
    "malformed",
    "syncing",
    "scoped",
];
/// Signed webhooks older or newer than this are refused (Standard Webhooks).
pub const WEBHOOK_TOLERANCE: Duration = Duration::from_secs(300);

#[derive(Clone, Default)]
pub struct Options {
    /// `whsec_…`; without it the receiver accepts any POST.
    pub webhook_secret: Option<Secret>,
}

struct Sim {
    start: Instant,
    /// Wall-clock time of `start` (unix ms).
    start_wall: crate::model::UnixMs,
    flap_counter: AtomicU64,
    opts: Options,
}

/// The router, for embedding (tests) or [`serve`].
pub fn router(opts: Options) -> Router {
    let sim = Arc::new(Sim {
        start: Instant::now(),
        start_wall: crate::model::now_ms(),
        flap_counter: AtomicU64::new(0),
        opts,
    });
    Router::new()
        .route("/", get(index))
        .route("/api/v1/connections", get(list))
        .route("/api/v1/connections/{id}/status", get(status))
        .route("/api/v1/connections/{id}/entities/{entity}", get(entity))
        .route("/webhook", post(webhook))
        .with_state(sim)
}

/// Serves on `listener` until `shutdown` completes.
pub async fn serve(
    listener: tokio::net::TcpListener,
    opts: Options,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(opts))
        .with_graceful_shutdown(shutdown)
        .await
}

async fn index() -> Json<serde_json::Value> {
    Json(json!({
        "scenarios": SCENARIOS
            .iter()
            .map(|s| format!("/api/v1/connections/{s}/status"))
            .collect::<Vec<_>>(),
        "entities": "/api/v1/connections/{id}/entities/{entity}",
        "webhook": "/webhook",
    }))
}

fn online() -> Response {
    Json(json!({"status": "online"})).into_response()
}

/// The tenants' connections, as a platform lists them.
async fn list(State(sim): State<Arc<Sim>>) -> Json<serde_json::Value> {
    let t = sim.start.elapsed().as_secs();
    let mut data = vec![
        json!({"id": "tenant-acme", "name": "ACME (SAP S/4HANA)"}),
        json!({"id": "tenant-globex", "name": "Globex (Maximo)"}),
    ];
    if t % 120 >= 60 {
        data.push(json!({"id": "tenant-initech", "name": "Initech (Dynamics 365)"}));
    }
    Json(json!({"data": data, "total": data.len()}))
}

async fn status(State(sim): State<Arc<Sim>>, Path(id): Path<String>) -> Response {
    let t = sim.start.elapsed().as_secs();
    match id.as_str() {
        "stable" | "scoped" => online(),
        tenant if tenant.starts_with("tenant-") => online(),
        "cycling" => {
            if t % 45 < 20 {
                online()
            } else {
                (StatusCode::SERVICE_UNAVAILABLE, Json(json!({"status": "offline", "error": {"code": "UPSTREAM_DOWN", "message": "ERP not answering"}}))).into_response()
            }
        }
        "expiring" => {
            if t % 50 < 20 {
                online()
            } else {
                (StatusCode::UNAUTHORIZED, Json(json!({"status": "auth_required", "error": {"code": "CREDENTIALS_EXPIRED", "message": "refresh token expired"}}))).into_response()
            }
        }
        "ratelimited" => {
            if t % 40 < 20 {
                online()
            } else {
                let mut h = HeaderMap::new();
                h.insert("retry-after", "15".parse().expect("static header"));
                (
                    StatusCode::TOO_MANY_REQUESTS,
                    h,
                    Json(json!({"error": {"code": "RATE_LIMIT_EXCEEDED"}})),
                )
                    .into_response()
            }
        }
        "flapping" => {
            let n = sim.flap_counter.fetch_add(1, Ordering::Relaxed);
            if n % 2 == 0 {
                online()
            } else {
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    Json(json!({"status": "offline"})),
                )
                    .into_response()
            }
        }
        "slow" => {
            tokio::time::sleep(Duration::from_millis(2500)).await;
            online()
        }
        "malformed" => (
            StatusCode::OK,
            [("content-type", "application/json")],
            "{\"status\": \"online\", \"conn",
        )
            .into_response(),
        "syncing" => {
            // 90 s cycle: a run completes at the cycle's start, the next one
            // fails 30 s later, and the third stalls for 60 s (finished_at
            // stays where it was). Times are whole seconds from the start,
            // so every answer of one run names the same finish time.
            let cycle = t - t % 90;
            let (status, finished) = match t % 90 {
                0..=29 => ("completed", cycle),
                30..=59 => ("failed", cycle + 30),
                _ => ("running", cycle + 30),
            };
            let finished_at = crate::model::rfc3339(sim.start_wall + finished as i64 * 1000);
            Json(
                json!({"status": "online", "sync": {"status": status, "finished_at": finished_at}}),
            )
            .into_response()
        }
        _ => (
            StatusCode::NOT_FOUND,
            Json(json!({"error": {"code": "NOT_FOUND", "message": "no such connection"}})),
        )
            .into_response(),
    }
}

async fn entity(Path((id, entity)): Path<(String, String)>) -> Response {
    if id == "scoped" && entity == "purchase_orders" {
        return (
            StatusCode::FORBIDDEN,
            Json(json!({"error": {"code": "PERMISSION_DENIED",
                "message": "the integration user may no longer read purchase orders"}})),
        )
            .into_response();
    }
    Json(json!({"data": [{"id": 1, "type": entity}]})).into_response()
}

async fn webhook(State(sim): State<Arc<Sim>>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let kind = serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v.get("type").and_then(|t| t.as_str()).map(str::to_string))
        .unwrap_or_default();
    let Some(secret) = &sim.opts.webhook_secret else {
        tracing::info!(component = "sandbox", event_type = %kind, "webhook received (no secret set, not verified)");
        return StatusCode::NO_CONTENT;
    };
    let h = |n: &str| {
        headers
            .get(n)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let (Some(id), Some(ts), Some(sigs)) = (
        h("webhook-id"),
        h("webhook-timestamp"),
        h("webhook-signature"),
    ) else {
        tracing::warn!(
            component = "sandbox",
            "webhook without webhook-id/-timestamp/-signature headers"
        );
        return StatusCode::BAD_REQUEST;
    };
    match verify(
        secret,
        &id,
        &ts,
        &body,
        &sigs,
        crate::model::now_ms() / 1000,
    ) {
        Ok(()) => {
            tracing::info!(component = "sandbox", event_type = %kind, webhook_id = %id, "webhook received, signature valid");
            StatusCode::NO_CONTENT
        }
        Err(why) => {
            tracing::warn!(component = "sandbox", webhook_id = %id, why, "webhook refused");
            StatusCode::UNAUTHORIZED
        }
    }
}

/// Verifies a Standard Webhooks signature header (`v1,<base64>` entries,
/// space-separated) against `whsec_` `secret`, at `now` (unix seconds).
pub fn verify(
    secret: &Secret,
    id: &str,
    ts: &str,
    body: &[u8],
    sigs: &str,
    now: i64,
) -> Result<(), &'static str> {
    use base64::Engine;
    use hmac::Mac;
    let t: i64 = ts.parse().map_err(|_| "timestamp is not a number")?;
    if (now - t).unsigned_abs() > WEBHOOK_TOLERANCE.as_secs() {
        return Err("timestamp outside the 5 minute tolerance");
    }
    let key = secret
        .expose()
        .strip_prefix("whsec_")
        .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
        .ok_or("secret is not whsec_<base64>")?;
    for sig in sigs.split_whitespace() {
        let Some(b64) = sig.strip_prefix("v1,") else {
            continue;
        };
        let Ok(given) = base64::engine::general_purpose::STANDARD.decode(b64) else {
            continue;
        };
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(&key).map_err(|_| "bad key")?;
        mac.update(id.as_bytes());
        mac.update(b".");
        mac.update(ts.as_bytes());
        mac.update(b".");
        mac.update(body);
        if mac.verify_slice(&given).is_ok() {
            return Ok(());
        }
    }
    Err("no signature matches")
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;
    use hmac::Mac;

    fn sign(key: &[u8], id: &str, ts: &str, body: &[u8]) -> String {
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(key).unwrap();
        mac.update(format!("{id}.{ts}.").as_bytes());
        mac.update(body);
        format!(
            "v1,{}",
            base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
        )
    }

    #[tokio::test(flavor = "current_thread")]
    async fn serves_the_scenarios_on_loopback() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(serve(listener, Options::default(), std::future::pending()));
        let get = |path: &str| {
            let url = format!("http://{addr}/api/v1/connections/{path}/status");
            async move {
                let r = reqwest::get(url).await.unwrap();
                let status = r.status().as_u16();
                (status, r.text().await.unwrap())
            }
        };
        assert_eq!(
            get("stable").await,
            (200, r#"{"status":"online"}"#.to_string())
        );
        assert_eq!(get("nope").await.0, 404);
        assert_eq!(get("malformed").await.0, 200);
        assert!(serde_json::from_str::<serde_json::Value>(&get("malformed").await.1).is_err());
        // One sync run names one finish time, however often it is asked.
        let (_, a) = get("syncing").await;
        let (_, b) = get("syncing").await;
        let a: serde_json::Value = serde_json::from_str(&a).unwrap();
        let b: serde_json::Value = serde_json::from_str(&b).unwrap();
        assert_eq!(a["sync"]["status"], "completed");
        assert_eq!(a["sync"]["finished_at"], b["sync"]["finished_at"]);
        // The webhook receiver without a secret accepts any POST.
        let r = reqwest::Client::new()
            .post(format!("http://{addr}/webhook"))
            .body("{}")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 204);
    }

    #[test]
    fn verifies_standard_webhooks_signatures() {
        let key = b"0123456789abcdef0123456789abcdef";
        let secret = Secret::new(format!(
            "whsec_{}",
            base64::engine::general_purpose::STANDARD.encode(key)
        ));
        let body = br#"{"type":"connection.status_changed"}"#;
        let good = sign(key, "evt_1", "1700000000", body);
        assert_eq!(
            verify(&secret, "evt_1", "1700000000", body, &good, 1_700_000_100),
            Ok(())
        );
        // Rotation: several signatures, one of them valid.
        let both = format!("v1,AAAA {good}");
        assert_eq!(
            verify(&secret, "evt_1", "1700000000", body, &both, 1_700_000_000),
            Ok(())
        );
        // Tampered body, wrong id, stale timestamp, junk.
        assert!(verify(&secret, "evt_1", "1700000000", b"{}", &good, 1_700_000_000).is_err());
        assert!(verify(&secret, "evt_2", "1700000000", body, &good, 1_700_000_000).is_err());
        assert!(verify(&secret, "evt_1", "1700000000", body, &good, 1_700_000_301).is_err());
        assert!(verify(&secret, "evt_1", "x", body, &good, 0).is_err());
        assert!(verify(
            &secret,
            "evt_1",
            "1700000000",
            body,
            "v2,zzz",
            1_700_000_000
        )
        .is_err());
    }
}
