//! The admin HTTP server (`[daemon] listen`): health and readiness probes,
//! Prometheus metrics, a JSON API and the status page.
//!
//! Reads come from the database on a read-only connection per request (WAL
//! lets them run beside the writer), so they show what the writer has
//! committed: state changes at once, online runs within `history_flush`,
//! rollups within `history_flush` too. Two routes change something, and both need
//! the bearer token (`admin_token`), compared in constant time:
//! `POST /api/v1/connections/{id}/probe` asks the running engine for one
//! probe now (through the same gates as a scheduled probe), and
//! `POST /api/v1/events/{id}/replay` re-queues an event's deliveries. With
//! no token configured those routes answer 403. On an address that is not
//! loopback (allowed only with a token) every route but `/healthz` and
//! `/readyz` needs the token.
//!
//! Every error is JSON of one shape: `{"error": {"code": "...", "message": "..."}}`.

pub mod conn_page;
pub mod page;

use crate::config::Secret;
use crate::engine::{ProbeNow, ProbeNowAnswer};
use crate::model::{now_ms, rfc3339, UnixMs};
use crate::ops::audit::Audit;
use crate::ops::notify::Liveness;
use crate::store::{outbox, query, Store};
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;
use sha2::{Digest, Sha256};
use std::future::Future;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;
use subtle::ConstantTimeEq;
use tokio::sync::{mpsc, oneshot, Notify};

/// The most history items `GET /api/v1/connections/{id}` returns.
pub const MAX_HISTORY_LIMIT: usize = 10_000;
/// The most events `GET /api/v1/events` returns.
pub const MAX_EVENTS_LIMIT: usize = 10_000;
/// Request bodies are refused past this (no route reads a body).
pub const MAX_BODY: usize = 1024;
/// Connections served at once; a connection beyond them is closed at once,
/// so no client can take more than this many file descriptors.
pub const MAX_CONNECTIONS: usize = 64;
/// A client must send its whole request head within this (slowloris).
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// Every request is answered within this (503 `timeout` otherwise).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest request head (request line and headers): a longer one gets 431.
pub const MAX_HEAD: usize = 16 * 1024;
/// Most request headers.
pub const MAX_HEADERS: usize = 64;

/// What the admin server shares with the rest of the daemon. The parts a
/// reload changes (token, engine handle, sinks) are swapped in place.
pub struct AdminState {
    database: PathBuf,
    token: RwLock<Option<Secret>>,
    probe_tx: RwLock<Option<mpsc::Sender<ProbeNow>>>,
    sinks: RwLock<Vec<String>>,
    wake: Arc<Notify>,
    liveness: Liveness,
    audit: Option<Audit>,
    started: std::time::Instant,
    /// Reads need the token too (the address is not loopback).
    guard_reads: bool,
}

impl AdminState {
    pub fn new(
        config: &crate::config::Config,
        wake: Arc<Notify>,
        liveness: Liveness,
        audit: Option<Audit>,
    ) -> Arc<AdminState> {
        let guard_reads = config.daemon.listen.is_some_and(|l| !l.ip().is_loopback());
        let s = AdminState {
            database: config.daemon.database.clone(),
            token: RwLock::new(None),
            probe_tx: RwLock::new(None),
            sinks: RwLock::new(Vec::new()),
            wake,
            liveness,
            audit,
            started: std::time::Instant::now(),
            guard_reads,
        };
        s.apply(config);
        Arc::new(s)
    }

    /// Takes the token and sinks of a (re)loaded configuration.
    pub fn apply(&self, config: &crate::config::Config) {
        *self.token.write().unwrap_or_else(|e| e.into_inner()) = config.daemon.admin_token.clone();
        *self.sinks.write().unwrap_or_else(|e| e.into_inner()) =
            config.sinks.iter().map(|s| s.id.clone()).collect();
    }

    /// The running engine to send "probe now" to (`None` between
    /// generations).
    pub fn set_engine(&self, tx: Option<mpsc::Sender<ProbeNow>>) {
        *self.probe_tx.write().unwrap_or_else(|e| e.into_inner()) = tx;
    }

    fn record(&self, action: &str, detail: serde_json::Value) {
        if let Some(a) = &self.audit {
            a.record(action, detail);
        }
    }
}

/// Serves until `shutdown` resolves.
/// Serves the admin API until `shutdown`. hyper directly rather than
/// `axum::serve`, for the limits that one does not set: connections at once,
/// a deadline for the request head, head size and header count, and a
/// deadline per request.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: Arc<AdminState>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use hyper_util::rt::{TokioIo, TokioTimer};
    use tower::ServiceExt as _;
    let app = router(state);
    let permits = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut conns = tokio::task::JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            r = listener.accept() => match r {
                Ok((s, _)) => s,
                Err(e) => {
                    // Out of file descriptors, say: wait rather than spin.
                    tracing::warn!(error = %e, "admin API: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        while conns.try_join_next().is_some() {}
        let Ok(permit) = Arc::clone(&permits).try_acquire_owned() else {
            drop(stream);
            continue;
        };
        let app = app.clone();
        let mut stop = stop_rx.clone();
        conns.spawn(async move {
            let _permit = permit;
            let service = hyper::service::service_fn(move |req: hyper::Request<_>| {
                let app = app.clone();
                async move {
                    let req = req.map(axum::body::Body::new);
                    match tokio::time::timeout(REQUEST_TIMEOUT, app.oneshot(req)).await {
                        Ok(r) => r,
                        Err(_) => Ok(ApiError::new(
                            StatusCode::SERVICE_UNAVAILABLE,
                            "timeout",
                            "the request took too long",
                        )
                        .into_response()),
                    }
                }
            });
            let mut http = hyper::server::conn::http1::Builder::new();
            http.timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .max_buf_size(MAX_HEAD)
                .max_headers(MAX_HEADERS);
            let conn = http.serve_connection(TokioIo::new(stream), service);
            tokio::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => {}
                _ = stop.changed() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = tokio::time::timeout(Duration::from_secs(5), conn).await;
                }
            }
        });
    }
    let _ = stop_tx.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(6), async {
        while conns.join_next().await.is_some() {}
    })
    .await;
    Ok(())
}

pub fn router(state: Arc<AdminState>) -> Router {
    Router::new()
        .route("/", get(status_page))
        .route("/connections/{id}", get(connection_page))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/api/v1/connections", get(connections))
        .route("/api/v1/connections/{id}", get(connection))
        .route("/api/v1/connections/{id}/uptime", get(uptime))
        .route("/api/v1/connections/{id}/probe", post(probe))
        .route("/api/v1/events", get(events))
        .route("/api/v1/events/{id}/replay", post(replay))
        .route("/api/v1/silences", get(silences).post(add_silence))
        .route("/api/v1/silences/{id}", delete(end_silence))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(state)
}

/// The page may run exactly its own inline script and style (by hash): an
/// injected script would not run even if escaping were ever missed.
static CSP: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    use base64::Engine as _;
    let h =
        |s: &str| base64::engine::general_purpose::STANDARD.encode(Sha256::digest(s.as_bytes()));
    format!(
        "default-src 'none'; script-src 'sha256-{}'; style-src 'sha256-{}' 'sha256-{}'; img-src data:; base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
        h(page::SCRIPT),
        h(page::STYLE),
        h(conn_page::EXTRA)
    )
});

/// An error with a stable JSON shape.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    extra: Option<serde_json::Value>,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
            extra: None,
        }
    }

    fn internal(e: impl std::fmt::Display) -> ApiError {
        tracing::error!(component = "admin", error = %e, "admin request failed");
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = json!({"code": self.code, "message": self.message});
        if let (Some(extra), Some(obj)) = (self.extra, body.as_object_mut()) {
            if let Some(e) = extra.as_object() {
                for (k, v) in e {
                    obj.insert(k.clone(), v.clone());
                }
            }
        }
        let mut resp = (self.status, Json(json!({ "error": body }))).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            resp.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer realm=\"connwatch\""),
            );
        }
        resp
    }
}

type ApiResult<T> = Result<T, ApiError>;

async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such route")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this route does not take that method",
    )
}

/// Checks `Authorization: Bearer <token>` in constant time (both sides are
/// hashed first, so not even the length leaks through timing).
fn authorize(state: &AdminState, headers: &HeaderMap) -> ApiResult<()> {
    let token = state
        .token
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    let Some(token) = token else {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "disabled",
            "this route needs `admin_token` in [daemon]; none is configured",
        ));
    };
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        });
    let Some(given) = given else {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "missing `Authorization: Bearer <admin_token>`",
        ));
    };
    let a = Sha256::digest(given.trim().as_bytes());
    let b = Sha256::digest(token.expose().as_bytes());
    if bool::from(a.as_slice().ct_eq(b.as_slice())) {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "wrong admin token",
        ))
    }
}

fn authorize_read(state: &AdminState, headers: &HeaderMap) -> ApiResult<()> {
    if state.guard_reads {
        authorize(state, headers)
    } else {
        Ok(())
    }
}

/// Runs a read on its own read-only connection, off the async thread.
async fn read<T, F>(state: &AdminState, f: F) -> ApiResult<T>
where
    T: Send + 'static,
    F: FnOnce(&Store) -> Result<T, ApiError> + Send + 'static,
{
    let path = state.database.clone();
    tokio::task::spawn_blocking(move || {
        let store = Store::open_read_only(&path).map_err(ApiError::internal)?;
        f(&store)
    })
    .await
    .map_err(ApiError::internal)?
}

async fn healthz() -> Json<serde_json::Value> {
    Json(json!({"status": "ok"}))
}

async fn readyz(State(state): State<Arc<AdminState>>) -> Response {
    let now = now_ms();
    // The writer's loop turns, and its last transaction committed.
    let writer = state.liveness.writer_fresh(now)
        && crate::ops::metrics::metrics().writer_failing.get() == 0;
    let engine = state.liveness.engine_fresh(now)
        && state
            .probe_tx
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .is_some();
    let database = read(&state, |s| {
        s.schema_version().map_err(ApiError::internal)?;
        Ok(())
    })
    .await
    .is_ok();
    let word = |ok: bool| if ok { "ok" } else { "failing" };
    let ready = writer && engine && database;
    let body = json!({
        "status": if ready { "ready" } else { "not_ready" },
        "checks": {"database": word(database), "writer": word(writer), "scheduler": word(engine)},
    });
    let code = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, Json(body)).into_response()
}

async fn metrics(State(state): State<Arc<AdminState>>, headers: HeaderMap) -> ApiResult<Response> {
    authorize_read(&state, &headers)?;
    let uptime = state.started.elapsed().as_secs_f64();
    let db = state.database.clone();
    let text = read(&state, move |s| {
        let now = now_ms();
        let rows = query::health_and_circuit(s).map_err(ApiError::internal)?;
        let scopes = query::scope_health(s).map_err(ApiError::internal)?;
        let slo = crate::store::report::slo_budgets(s, now).map_err(ApiError::internal)?;
        let depth = outbox::depth(s).map_err(ApiError::internal)?;
        let size = |p: PathBuf| std::fs::metadata(p).map(|m| m.len() as i64).unwrap_or(0);
        let mut wal = db.clone().into_os_string();
        wal.push("-wal");
        let scrape = crate::ops::metrics::Scrape {
            connections: &rows,
            scopes: &scopes,
            slo_budget: &slo,
            outbox_pending: depth.pending,
            outbox_dead: depth.dead,
            oldest_pending_age_s: depth
                .oldest_pending_at
                .map(|t| (now - t).max(0) as f64 / 1000.0)
                .unwrap_or(0.0),
            database_bytes: size(db.clone()) + size(PathBuf::from(wal)),
            uptime_s: uptime,
        };
        crate::ops::metrics::render(&scrape).map_err(ApiError::internal)
    })
    .await?;
    Ok((
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response())
}

async fn connections(
    State(state): State<Arc<AdminState>>,
    headers: HeaderMap,
) -> ApiResult<Json<serde_json::Value>> {
    authorize_read(&state, &headers)?;
    let rows = read(&state, |s| {
        query::status(s, now_ms()).map_err(ApiError::internal)
    })
    .await?;
    Ok(Json(
        json!({"generated_at": rfc3339(now_ms()), "connections": rows}),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HistoryParams {
    since: Option<String>,
    limit: Option<usize>,
    /// The history (and hourly figures) of one of its scopes instead.
    scope: Option<String>,
}

fn bad_query(e: QueryRejection) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, "bad_request", e.body_text())
}

async fn connection(
    State(state): State<Arc<AdminState>>,
    Path(id): Path<String>,
    params: Result<Query<HistoryParams>, QueryRejection>,
    headers: HeaderMap,
) -> ApiResult<Json<serde_json::Value>> {
    authorize_read(&state, &headers)?;
    let Query(params) = params.map_err(bad_query)?;
    let since = match params.since.as_deref() {
        None => Duration::from_secs(86_400),
        Some(s) => crate::config::parse_duration(s).map_err(|e| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "bad_request",
                format!("since: {e}"),
            )
        })?,
    };
    let limit = params.limit.unwrap_or(200).clamp(1, MAX_HISTORY_LIMIT);
    read(&state, move |s| {
        let now = now_ms();
        let Some(row) = query::status_of(s, now, &id).map_err(ApiError::internal)? else {
            return Err(unknown_connection(&id));
        };
        let from = now - since.as_millis() as UnixMs;
        let key = match &params.scope {
            None => row.key,
            Some(scope) => s
                .key_of(&crate::store::scope_row_id(&id, scope))
                .map_err(ApiError::internal)?
                .filter(|_| row.scopes.iter().any(|x| x.id == *scope))
                .ok_or_else(|| {
                    ApiError::new(
                        StatusCode::NOT_FOUND,
                        "unknown_scope",
                        format!("connection {id:?} has no scope {scope:?}"),
                    )
                })?,
        };
        let history = query::history(s, key, from, limit).map_err(ApiError::internal)?;
        let hourly = query::hourly(s, key, now - 7 * 86_400_000).map_err(ApiError::internal)?;
        Ok(Json(json!({
            "connection": row,
            "scope": params.scope,
            "history_since": rfc3339(from),
            "history": history,
            "hourly": hourly.iter().map(|h| json!({
                "hour": rfc3339(h.hour), "count": h.count, "failures": h.failures,
                "latency_p50_ms": h.latency_p50_ms, "latency_p95_ms": h.latency_p95_ms,
            })).collect::<Vec<_>>(),
        })))
    })
    .await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UptimeParams {
    /// The period: from this long ago until now (default 30d).
    since: Option<String>,
}

/// `GET /api/v1/connections/{id}/uptime?since=30d`: the report of one
/// connection (docs/uptime.md), as `connwatch report --json` gives it.
async fn uptime(
    State(state): State<Arc<AdminState>>,
    Path(id): Path<String>,
    params: Result<Query<UptimeParams>, QueryRejection>,
    headers: HeaderMap,
) -> ApiResult<Json<crate::store::report::Report>> {
    authorize_read(&state, &headers)?;
    let Query(params) = params.map_err(bad_query)?;
    let since =
        crate::config::parse_duration(params.since.as_deref().unwrap_or("30d")).map_err(|e| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "bad_request",
                format!("since: {e}"),
            )
        })?;
    read(&state, move |s| {
        let to = now_ms();
        let from = to - since.as_millis() as UnixMs;
        crate::store::report::reports(s, from, to, Some(&id))
            .map_err(ApiError::internal)?
            .pop()
            .map(Json)
            .ok_or_else(|| unknown_connection(&id))
    })
    .await
}

fn unknown_connection(id: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "unknown_connection",
        format!("no connection {id:?} in the running configuration"),
    )
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EventParams {
    /// `all` (default), `pending` or `dead`.
    state: Option<String>,
    connection: Option<String>,
    limit: Option<usize>,
}

async fn events(
    State(state): State<Arc<AdminState>>,
    params: Result<Query<EventParams>, QueryRejection>,
    headers: HeaderMap,
) -> ApiResult<Json<serde_json::Value>> {
    authorize_read(&state, &headers)?;
    let Query(params) = params.map_err(bad_query)?;
    let filter = match params.state.as_deref() {
        None | Some("all") => outbox::Filter::All,
        Some("pending") => outbox::Filter::Pending,
        Some("dead") => outbox::Filter::Dead,
        Some(other) => {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "bad_request",
                format!("state: {other:?} is not one of all, pending, dead"),
            ))
        }
    };
    let limit = params.limit.unwrap_or(100).clamp(1, MAX_EVENTS_LIMIT);
    let rows = read(&state, move |s| {
        outbox::list(s, filter, params.connection.as_deref(), limit).map_err(ApiError::internal)
    })
    .await?;
    Ok(Json(json!({ "events": rows })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ProbeParams {
    /// Lift the open circuit's wait and the auth and rate-limit holds for
    /// this one probe.
    force: Option<bool>,
}

async fn probe(
    State(state): State<Arc<AdminState>>,
    Path(id): Path<String>,
    params: Result<Query<ProbeParams>, QueryRejection>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    authorize(&state, &headers)?;
    let Query(params) = params.map_err(bad_query)?;
    let force = params.force.unwrap_or(false);
    let tx = state
        .probe_tx
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    let Some(tx) = tx else {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "reloading",
            "the configuration is being reloaded; try again",
        ));
    };
    let (reply, answer) = oneshot::channel();
    let req = ProbeNow {
        id: id.clone(),
        force,
        reply,
    };
    let unavailable = || {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "the scheduler did not take the request; try again",
        )
    };
    tx.send_timeout(req, Duration::from_secs(5))
        .await
        .map_err(|_| unavailable())?;
    let answer = tokio::time::timeout(Duration::from_secs(5), answer)
        .await
        .map_err(|_| unavailable())?
        .map_err(|_| unavailable())?;
    state.record(
        "api_probe",
        json!({"connection_id": id, "force": force, "answer": answer.to_string()}),
    );
    match answer {
        ProbeNowAnswer::Started => Ok((
            StatusCode::ACCEPTED,
            Json(json!({"connection_id": id, "probe": "started"})),
        )
            .into_response()),
        ProbeNowAnswer::Unknown => Err(unknown_connection(&id)),
        ProbeNowAnswer::Busy => Err(ApiError::new(
            StatusCode::CONFLICT,
            "busy",
            "a probe of this connection is running",
        )),
        ProbeNowAnswer::Held { reason, until } => {
            let mut e = ApiError::new(
                StatusCode::CONFLICT,
                "held",
                match until {
                    Some(t) => format!("not probed: {reason} until {}", rfc3339(t)),
                    None => format!("not probed: {reason}"),
                },
            );
            e.extra = Some(json!({"reason": reason, "until": until.map(rfc3339)}));
            Err(e)
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReplayParams {
    sink: Option<String>,
}

async fn silences(
    State(state): State<Arc<AdminState>>,
    headers: HeaderMap,
) -> ApiResult<Json<serde_json::Value>> {
    authorize_read(&state, &headers)?;
    let now = now_ms();
    let list = read(&state, move |s| {
        crate::store::silences::list(s, now - 86_400_000).map_err(ApiError::internal)
    })
    .await?;
    let views: Vec<_> = list.into_iter().map(|s| s.view(now)).collect();
    Ok(Json(json!({"silences": views})))
}

/// `POST /api/v1/silences`: `{"connections": ["erp"] | "all": true,
/// "for": "1h" | "until": "2026-12-02T18:00:00Z", "reason": "…"}`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewSilence {
    #[serde(default)]
    connections: Vec<String>,
    #[serde(default)]
    all: bool,
    #[serde(rename = "for")]
    length: Option<String>,
    until: Option<String>,
    reason: String,
}

async fn add_silence(
    State(state): State<Arc<AdminState>>,
    headers: HeaderMap,
    body: Result<Json<NewSilence>, JsonRejection>,
) -> ApiResult<Response> {
    authorize(&state, &headers)?;
    let Json(b) =
        body.map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "bad_request", e.body_text()))?;
    let bad = |m: String| ApiError::new(StatusCode::BAD_REQUEST, "bad_request", m);
    let length = b
        .length
        .as_deref()
        .map(crate::config::parse_duration)
        .transpose()
        .map_err(|e| bad(format!("for: {e}")))?;
    let req = crate::store::silences::Request {
        connections: b.connections,
        all: b.all,
        length,
        until: b.until,
        reason: b.reason,
    };
    let path = state.database.clone();
    let now = now_ms();
    let added = tokio::task::spawn_blocking(move || {
        let mut store = Store::open(&path).map_err(ApiError::internal)?;
        let (connections, length) = crate::store::silences::check(&store, &req, now)
            .map_err(|m| ApiError::new(StatusCode::BAD_REQUEST, "bad_request", m))?;
        crate::store::silences::add(&mut store, connections, now, length, &req.reason, "api")
            .map_err(ApiError::internal)
    })
    .await
    .map_err(ApiError::internal)??;
    state.record(
        "api_silence_add",
        json!({"silence_id": added.id, "connections": added.connections,
               "until": rfc3339(added.ends_ms), "reason": added.reason}),
    );
    Ok((StatusCode::CREATED, Json(added.view(now))).into_response())
}

async fn end_silence(
    State(state): State<Arc<AdminState>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> ApiResult<Json<crate::store::silences::SilenceView>> {
    authorize(&state, &headers)?;
    let path = state.database.clone();
    let now = now_ms();
    let sid = id.clone();
    let ended = tokio::task::spawn_blocking(move || {
        let mut store = Store::open(&path).map_err(ApiError::internal)?;
        crate::store::silences::end(&mut store, &sid, now).map_err(ApiError::internal)
    })
    .await
    .map_err(ApiError::internal)??;
    let Some(s) = ended else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "unknown_silence",
            format!("no silence {id:?}"),
        ));
    };
    state.record("api_silence_end", json!({"silence_id": s.id}));
    Ok(Json(s.view(now)))
}

async fn replay(
    State(state): State<Arc<AdminState>>,
    Path(id): Path<String>,
    params: Result<Query<ReplayParams>, QueryRejection>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    authorize(&state, &headers)?;
    let Query(params) = params.map_err(bad_query)?;
    if let Some(s) = &params.sink {
        let known = state
            .sinks
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .contains(s);
        if !known {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "unknown_sink",
                format!("no sink {s:?} in the running configuration"),
            ));
        }
    }
    let path = state.database.clone();
    let (eid, sink) = (id.clone(), params.sink.clone());
    let n = tokio::task::spawn_blocking(move || {
        let mut store = Store::open(&path).map_err(ApiError::internal)?;
        outbox::replay(&mut store, &eid, sink.as_deref(), now_ms()).map_err(ApiError::internal)
    })
    .await
    .map_err(ApiError::internal)??;
    let Some(n) = n else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "unknown_event",
            format!("no event {id:?}"),
        ));
    };
    state.wake.notify_one();
    state.record(
        "api_replay",
        json!({"event_id": id, "sink": params.sink, "deliveries": n}),
    );
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({"event_id": id, "deliveries_queued": n})),
    )
        .into_response())
}

/// A page: never cached, scripts and styles only those hashed in [`CSP`].
fn html_page(html: String) -> Response {
    (
        [
            (header::CACHE_CONTROL, "no-store"),
            (header::CONTENT_SECURITY_POLICY, CSP.as_str()),
        ],
        Html(html),
    )
        .into_response()
}

/// `/connections/{id}`: the page of one connection.
async fn connection_page(
    State(state): State<Arc<AdminState>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    authorize_read(&state, &headers)?;
    let html = read(&state, move |s| {
        conn_page::render(s, &id, now_ms())
            .map_err(ApiError::internal)?
            .ok_or_else(|| unknown_connection(&id))
    })
    .await?;
    Ok(html_page(html))
}

async fn status_page(
    State(state): State<Arc<AdminState>>,
    params: Result<Query<page::ListFilter>, QueryRejection>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    authorize_read(&state, &headers)?;
    let Query(filter) = params.map_err(bad_query)?;
    let html = read(&state, move |s| {
        page::render_filtered(s, now_ms(), &filter).map_err(ApiError::internal)
    })
    .await?;
    Ok(html_page(html))
}
