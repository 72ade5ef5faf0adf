//! nn-serve's service: a model kept loaded by one worker thread behind a small HTTP API.
//!
//! - `POST /v1/predict`: one image (or `multipart/form-data`, one part per channel named `0000`, `0001`,
//!   ...) in, its label map out, in the request's format: the file nn-infer writes for the image, or
//!   with `probabilities=true` a zip of every file nn-infer `--save-probabilities` writes for it.
//! - `GET /healthz`: 503 while the model loads, then 200; `GET /v1/model`: the model's description.
//!
//! Requests wait in a bounded queue (429 with `Retry-After` when it is full) and are predicted one at a
//! time, so answers are those of nn-infer for the same image. Bodies and the voxels their headers claim
//! are bounded (413), each request has a time limit (504; its prediction stops at the next tile), and
//! with a token every request but `/healthz` needs it (401). Errors are one JSON line naming no server
//! path. SIGTERM (or SIGINT) stops accepting connections, answers what was accepted, and returns.

mod image;
mod worker;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use futures_util::StreamExt;
use nntools_ensembling::Step;
use nntools_io::{Error, Result};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{SyncSender, TrySendError};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};
use tokio::signal::unix::{Signal, SignalKind, signal};
use worker::{Channel, Failure, Job};

pub use image::{FORMATS, check_header, sniff};

/// How one case is predicted.
#[derive(Debug, Clone, Copy)]
pub struct CaseOptions {
    /// Mirroring test-time augmentation.
    pub tta: bool,
    /// Also write the probabilities and properties (nn-infer's `--save-probabilities`).
    pub save_probabilities: bool,
}

/// A model kept loaded: what the worker thread predicts with.
pub trait Model {
    /// What `GET /v1/model` answers: labels, channels, configurations, folds, versions.
    fn info(&self) -> serde_json::Value;
    /// The image files one case takes.
    fn channels(&self) -> usize;
    /// Predicts case `id` from its `images` and writes into `out_dir` exactly the files nn-infer writes
    /// for it; returns the label map's path. `keep_going` is asked before each tile; when it says no,
    /// the case stops with an error.
    fn predict_case(
        &self,
        id: &str,
        images: &[PathBuf],
        out_dir: &Path,
        case: CaseOptions,
        keep_going: &mut dyn FnMut() -> bool,
    ) -> Result<PathBuf>;
}

/// The service's settings.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    /// The bearer token every request but `/healthz` needs.
    pub token: Option<String>,
    /// Requests that may wait besides the one being predicted.
    pub queue: usize,
    pub max_body_bytes: usize,
    pub max_voxels: u64,
    /// From arrival to answer.
    pub timeout: Duration,
    /// An inference plan's postprocessing (`nn-ensemble postprocess --plan`), unless `postprocess=false`.
    pub postprocessing: Vec<Step>,
    /// No access log.
    pub quiet: bool,
}

/// Reads a token file: its text without surrounding whitespace, which must not be empty.
pub fn read_token(path: &Path) -> Result<String> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, &e))?;
    let token = text.trim();
    if token.is_empty() || token.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(Error::bad_input(path, "the token must be one word of visible characters"));
    }
    Ok(token.to_owned())
}

/// A bound, not yet serving, service.
pub struct Server {
    config: Config,
    listener: std::net::TcpListener,
    runtime: tokio::runtime::Runtime,
    /// SIGTERM and SIGINT, caught from `bind` on: a script that reads the address and signals at once
    /// gets the graceful shutdown too, not the default action's death. Taken by `run`.
    stop_signals: Option<(Signal, Signal)>,
}

impl Server {
    /// Checks the settings and binds the address: a non-loopback address needs a token (bad input).
    pub fn bind(config: Config) -> Result<Self> {
        if !config.listen.ip().is_loopback() && config.token.is_none() {
            return Err(Error::bad_input(
                "--listen",
                format!(
                    "{} is not a loopback address: give --token-file too (and TLS through a reverse proxy)",
                    config.listen
                ),
            ));
        }
        if config.queue == 0 || config.max_body_bytes == 0 || config.max_voxels == 0 || config.timeout.is_zero() {
            return Err(Error::bad_input(
                "nn-serve",
                "--queue, --max-body-mb, --max-voxels and --timeout-s must be positive",
            ));
        }
        let listener = std::net::TcpListener::bind(config.listen)
            .map_err(|e| Error::runtime("--listen", format!("cannot listen on {}: {e}", config.listen)))?;
        listener.set_nonblocking(true).map_err(|e| Error::runtime("--listen", e))?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .map_err(|e| Error::runtime("nn-serve", format!("async runtime: {e}")))?;
        let stop_signals = {
            let _context = runtime.enter();
            let catch = |kind| signal(kind).map_err(|e| Error::runtime("nn-serve", format!("signal handler: {e}")));
            Some((catch(SignalKind::terminate())?, catch(SignalKind::interrupt())?))
        };
        Ok(Self { config, listener, runtime, stop_signals })
    }

    /// The address bound (the port chosen for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().expect("a bound listener has an address")
    }

    /// Serves until SIGTERM or SIGINT; see [`Server::run_until`].
    pub fn run<M: Model + 'static>(mut self, load: impl FnOnce() -> Result<M> + Send + 'static) -> Result<()> {
        let (mut term, mut interrupt) = self.stop_signals.take().expect("bind catches the signals");
        self.run_until(load, async move {
            tokio::select! { _ = term.recv() => {}, _ = interrupt.recv() => {} }
        })
    }

    /// Loads the model on the worker thread (`/healthz` says 503 meanwhile) and serves until `stop`
    /// resolves: then no connection is accepted, the requests accepted are answered, and it returns.
    /// A model that fails to load ends the service with its error.
    pub fn run_until<M: Model + 'static>(
        self,
        load: impl FnOnce() -> Result<M> + Send + 'static,
        stop: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> Result<()> {
        let (queue, jobs) = std::sync::mpsc::sync_channel::<Job>(self.config.queue);
        let ready = Arc::new(OnceLock::new());
        let (failed_tx, failed_rx) = tokio::sync::oneshot::channel::<Error>();
        let worker = {
            let (ready, postprocessing, quiet) = (ready.clone(), self.config.postprocessing.clone(), self.config.quiet);
            std::thread::Builder::new()
                .name("nn-serve model".into())
                .spawn(move || match load() {
                    Ok(model) => {
                        let _ = ready.set(Ready { info: model.info(), channels: model.channels() });
                        if !quiet {
                            eprintln!("nn-serve: model loaded");
                        }
                        worker::run(&model, jobs, &postprocessing, quiet);
                    }
                    Err(e) => {
                        let _ = failed_tx.send(e);
                    }
                })
                .map_err(|e| Error::runtime("nn-serve", format!("worker thread: {e}")))?
        };
        let state = Arc::new(Shared {
            token: self.config.token.clone(),
            queue: std::sync::Mutex::new(Some(queue)),
            ready,
            config: self.config.clone(),
        });
        let router = axum::Router::new()
            .route("/healthz", get(healthz))
            .route("/v1/model", get(model_info))
            .route("/v1/predict", post(predict))
            .fallback(|| async {
                refusal(StatusCode::NOT_FOUND, "no such endpoint (POST /v1/predict, GET /v1/model, GET /healthz)")
            })
            .layer(middleware::from_fn_with_state(state.clone(), authorize))
            .layer(middleware::from_fn_with_state(state.clone(), access_log))
            .with_state(state.clone());
        let outcome = self.runtime.block_on(async move {
            let listener =
                tokio::net::TcpListener::from_std(self.listener).map_err(|e| Error::runtime("--listen", e))?;
            let load_failed = std::sync::Arc::new(std::sync::Mutex::new(None));
            let shutdown = {
                let load_failed = load_failed.clone();
                async move {
                    tokio::select! {
                        _ = stop => {}
                        failed = failed_rx => if let Ok(e) = failed {
                            *load_failed.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
                        },
                    }
                }
            };
            axum::serve(listener, router)
                .with_graceful_shutdown(shutdown)
                .await
                .map_err(|e| Error::runtime("nn-serve", e))?;
            match load_failed.lock().unwrap_or_else(|p| p.into_inner()).take() {
                Some(e) => Err(e),
                None => Ok(()),
            }
        });
        // every accepted request is answered: the queue closes and the worker ends, once its model is
        // loaded if a signal came first (exiting while libtorch loads crashes in its static destructors)
        state.queue.lock().unwrap_or_else(|p| p.into_inner()).take();
        let _ = worker.join();
        outcome
    }
}

/// What the loaded model says about itself.
struct Ready {
    info: serde_json::Value,
    channels: usize,
}

/// What every request handler shares.
struct Shared {
    token: Option<String>,
    /// Closed (`None`) at shutdown.
    queue: std::sync::Mutex<Option<SyncSender<Job>>>,
    ready: Arc<OnceLock<Ready>>,
    config: Config,
}

type AppState = State<Arc<Shared>>;

/// An error answer: one JSON line `{"error": "..."}`.
fn refusal(status: StatusCode, message: &str) -> Response {
    let mut body = serde_json::json!({ "error": message }).to_string();
    body.push('\n');
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// Every request but `/healthz` carries `Authorization: Bearer TOKEN` when the service has a token,
/// compared in constant time.
async fn authorize(State(shared): AppState, request: Request, next: Next) -> Response {
    if let Some(token) = &shared.token
        && request.uri().path() != "/healthz"
    {
        let given = request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.as_bytes().strip_prefix(b"Bearer "))
            .unwrap_or_default();
        if !bool::from(subtle::ConstantTimeEq::ct_eq(given, token.as_bytes())) {
            let mut response = refusal(StatusCode::UNAUTHORIZED, "missing or wrong bearer token");
            response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            return response;
        }
    }
    next.run(request).await
}

/// One line per request on stderr: method, path (without the query), status, body bytes, milliseconds.
async fn access_log(State(shared): AppState, request: Request, next: Next) -> Response {
    let (method, path, started) = (request.method().clone(), request.uri().path().to_owned(), Instant::now());
    let response = next.run(request).await;
    if !shared.config.quiet {
        let bytes = axum::body::HttpBody::size_hint(response.body()).exact().map_or("-".into(), |n| n.to_string());
        let ms = started.elapsed().as_millis();
        eprintln!("nn-serve: {method} {path} {} {bytes} B {ms} ms", response.status().as_u16());
    }
    response
}

async fn healthz(State(shared): AppState) -> Response {
    match shared.ready.get() {
        Some(_) => {
            (StatusCode::OK, [(header::CONTENT_TYPE, "application/json")], "{\"status\": \"ok\"}\n").into_response()
        }
        None => refusal(StatusCode::SERVICE_UNAVAILABLE, "the model is loading"),
    }
}

async fn model_info(State(shared): AppState) -> Response {
    match shared.ready.get() {
        Some(ready) => {
            (StatusCode::OK, [(header::CONTENT_TYPE, "application/json")], format!("{}\n", ready.info)).into_response()
        }
        None => refusal(StatusCode::SERVICE_UNAVAILABLE, "the model is loading"),
    }
}

/// A request's query options.
struct Query {
    tta: bool,
    postprocess: bool,
    probabilities: bool,
    format: Option<&'static str>,
    spacing: Option<[f64; 3]>,
}

fn parse_query(query: Option<&str>) -> std::result::Result<Query, String> {
    let mut options = Query { tta: true, postprocess: true, probabilities: false, format: None, spacing: None };
    let pairs: Vec<(String, String)> = match query {
        Some(query) => {
            axum::extract::Query::<Vec<(String, String)>>::try_from_uri(
                &format!("/?{query}").parse().map_err(|_| "unreadable query".to_owned())?,
            )
            .map_err(|_| "unreadable query".to_owned())?
            .0
        }
        None => Vec::new(),
    };
    for (key, value) in pairs {
        let flag = || match value.as_str() {
            "true" | "1" => Ok(true),
            "false" | "0" => Ok(false),
            _ => Err(format!("{key}={value}: expected true or false")),
        };
        match key.as_str() {
            "tta" => options.tta = flag()?,
            "postprocess" => options.postprocess = flag()?,
            "probabilities" => options.probabilities = flag()?,
            "format" => options.format = Some(image::ending_of(&value)?),
            "spacing" => {
                let values: Vec<f64> = value.split(',').filter_map(|v| v.trim().parse().ok()).collect();
                let spacing = <[f64; 3]>::try_from(values)
                    .ok()
                    .filter(|s| s.iter().all(|v| v.is_finite() && *v > 0.0))
                    .ok_or_else(|| format!("spacing={value}: expected three positive numbers z,y,x"))?;
                options.spacing = Some(spacing);
            }
            _ => {
                return Err(format!("unknown option {key:?} (tta, postprocess, probabilities, format, spacing)"));
            }
        }
    }
    Ok(options)
}

/// The body, read up to the size limit (`Err(true)` past it, `Err(false)` when it breaks off). A body
/// past the limit is read on, and dropped, up to twice the limit: a server that closes a connection with
/// unread bytes resets it, and the client would lose the 413 it was sent.
async fn read_body(body: Body, limit: usize) -> std::result::Result<Bytes, bool> {
    let mut stream = body.into_data_stream();
    let mut bytes = Vec::new();
    let mut seen = 0usize;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|_| seen > limit)?;
        seen = seen.saturating_add(chunk.len());
        if seen > limit.saturating_mul(2) {
            return Err(true);
        }
        if seen <= limit {
            bytes.extend_from_slice(&chunk);
        }
    }
    if seen > limit { Err(true) } else { Ok(bytes.into()) }
}

/// A multipart body's parts `0000`, `0001`, ..., in order.
async fn parts(body: Bytes, boundary: String) -> std::result::Result<Vec<Bytes>, String> {
    let stream = futures_util::stream::once(async move { Ok::<Bytes, std::convert::Infallible>(body) });
    let mut multipart = multer::Multipart::new(stream, boundary);
    let mut parts = Vec::new();
    while let Some(field) = multipart.next_field().await.map_err(|e| format!("multipart body: {e}"))? {
        let expected = format!("{:04}", parts.len());
        if field.name() != Some(expected.as_str()) {
            return Err(format!(
                "multipart part {} is named {:?}: expected {expected:?} (one part per channel, 0000, 0001, ...)",
                parts.len() + 1,
                field.name().unwrap_or_default()
            ));
        }
        parts.push(field.bytes().await.map_err(|e| format!("multipart body: {e}"))?);
    }
    if parts.is_empty() {
        return Err("multipart body without parts".into());
    }
    Ok(parts)
}

/// Sets the request's cancel flag when its handler ends, however: a client that leaves stops its case at
/// the next tile.
struct CancelOnDrop(Arc<AtomicBool>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

async fn predict(State(shared): AppState, headers: HeaderMap, request: Request) -> Response {
    let arrived = Instant::now();
    let config = &shared.config;
    let Some(ready) = shared.ready.get() else {
        return refusal(StatusCode::SERVICE_UNAVAILABLE, "the model is loading");
    };
    let query = match parse_query(request.uri().query()) {
        Ok(query) => query,
        Err(problem) => return refusal(StatusCode::BAD_REQUEST, &problem),
    };
    let too_large = || {
        let limit = format!("the body is larger than this server's limit of {} bytes", config.max_body_bytes);
        refusal(StatusCode::PAYLOAD_TOO_LARGE, &limit)
    };
    let declared = headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|n| n > (config.max_body_bytes as u64).saturating_mul(2)) {
        return too_large();
    }
    let body = match read_body(request.into_body(), config.max_body_bytes).await {
        Ok(body) => body,
        Err(true) => return too_large(),
        Err(false) => return refusal(StatusCode::BAD_REQUEST, "the body broke off"),
    };
    let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or_default();
    let bodies = match multer::parse_boundary(content_type) {
        Ok(boundary) => match parts(body, boundary).await {
            Ok(parts) => parts,
            Err(problem) => return refusal(StatusCode::BAD_REQUEST, &problem),
        },
        Err(_) if content_type.starts_with("multipart/") => {
            return refusal(StatusCode::BAD_REQUEST, "multipart/form-data without a boundary");
        }
        Err(_) => vec![body],
    };
    // one file may hold every channel (an RGB PNG, a 4-D NIfTI)
    if bodies.len() != ready.channels && bodies.len() != 1 {
        let problem = format!("{} image(s) sent; the model takes {} channel(s)", bodies.len(), ready.channels);
        return refusal(StatusCode::BAD_REQUEST, &problem);
    }
    let mut channels = Vec::new();
    for (index, bytes) in bodies.into_iter().enumerate() {
        let ending = match query.format.map_or_else(|| sniff(&bytes), Ok) {
            Ok(ending) => ending,
            Err(problem) => return refusal(StatusCode::BAD_REQUEST, &format!("channel {index:04}: {problem}")),
        };
        if let Err((too_large, problem)) = check_header(&bytes, ending, config.max_voxels) {
            let status = if too_large { StatusCode::PAYLOAD_TOO_LARGE } else { StatusCode::BAD_REQUEST };
            return refusal(status, &format!("channel {index:04}: {problem}"));
        }
        channels.push(Channel { ending, bytes });
    }
    if query.spacing.is_some() && channels.iter().any(|c| c.ending != ".tif") {
        return refusal(StatusCode::BAD_REQUEST, "spacing= is for 3-D TIFF images only");
    }
    let cancelled = Arc::new(AtomicBool::new(false));
    let _cancel_on_drop = CancelOnDrop(cancelled.clone());
    let (reply, answer) = tokio::sync::oneshot::channel();
    let job = Job {
        channels,
        spacing: query.spacing,
        tta: query.tta,
        postprocess: query.postprocess,
        probabilities: query.probabilities,
        deadline: arrived + config.timeout,
        cancelled,
        reply,
    };
    let sent = match shared.queue.lock().unwrap_or_else(|p| p.into_inner()).as_ref() {
        Some(queue) => queue.try_send(job),
        None => Err(TrySendError::Disconnected(job)),
    };
    match sent {
        Ok(()) => {}
        Err(TrySendError::Full(_)) => {
            let mut response = refusal(StatusCode::TOO_MANY_REQUESTS, "the queue is full; try again later");
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            return response;
        }
        Err(TrySendError::Disconnected(_)) => return refusal(StatusCode::SERVICE_UNAVAILABLE, "shutting down"),
    }
    let timed_out = || refusal(StatusCode::GATEWAY_TIMEOUT, "the request took longer than this server's time limit");
    match tokio::time::timeout_at((arrived + config.timeout).into(), answer).await {
        Err(_) | Ok(Ok(Err(Failure::Cancelled))) => timed_out(),
        Ok(Err(_)) | Ok(Ok(Err(Failure::Internal(_)))) => {
            refusal(StatusCode::INTERNAL_SERVER_ERROR, "the prediction failed (see the server's log)")
        }
        Ok(Ok(Err(Failure::BadInput(problem)))) => refusal(StatusCode::BAD_REQUEST, &problem),
        Ok(Ok(Ok(answer))) => {
            let kind = if answer.name.ends_with(".zip") { "application/zip" } else { "application/octet-stream" };
            let disposition = format!("attachment; filename=\"{}\"", answer.name);
            let mut response = (StatusCode::OK, [(header::CONTENT_TYPE, kind)], answer.bytes).into_response();
            if let Ok(value) = HeaderValue::from_str(&disposition) {
                response.headers_mut().insert(header::CONTENT_DISPOSITION, value);
            }
            response
        }
    }
}
