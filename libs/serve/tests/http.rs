//! The HTTP layer against a fake model, through a real HTTP client: tokens, limits, the queue, time
//! limits, error bodies and shutdown. The real model's answers are tested end to end in tests/serve.rs.

use nntools_io::{Error, Result};
use nntools_serve::{CaseOptions, Config, Model, Server};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// Answers with the first image's own bytes after `tiles` tiles of `tile` each; an image starting
/// with `BAD!` is bad input naming its (server) path, as a reader's error does; `BUG!` panics.
struct Echo {
    tiles: usize,
    tile: Duration,
    tiles_run: Arc<AtomicUsize>,
}

impl Model for Echo {
    fn info(&self) -> serde_json::Value {
        serde_json::json!({"labels": {"background": 0, "x": 1}, "channels": 1})
    }
    fn channels(&self) -> usize {
        1
    }
    fn predict_case(
        &self,
        id: &str,
        images: &[PathBuf],
        out_dir: &Path,
        case: CaseOptions,
        keep_going: &mut dyn FnMut() -> bool,
    ) -> Result<PathBuf> {
        let bytes = std::fs::read(&images[0]).unwrap();
        if bytes.windows(4).any(|w| w == b"BAD!") {
            return Err(Error::bad_input(&images[0], "truncated"));
        }
        assert!(!bytes.windows(4).any(|w| w == b"BUG!"), "a bug in {}", images[0].display());
        for _ in 0..self.tiles {
            if !keep_going() {
                return Err(Error::runtime(id, "cancelled"));
            }
            std::thread::sleep(self.tile);
            self.tiles_run.fetch_add(1, Ordering::Relaxed);
        }
        let name = images[0].file_name().unwrap().to_string_lossy().replace("_0000", "");
        let label_map = out_dir.join(name);
        std::fs::write(&label_map, &bytes).unwrap();
        if case.save_probabilities {
            std::fs::write(out_dir.join(format!("{id}.npz")), b"npz").unwrap();
        }
        Ok(label_map)
    }
}

fn config(token: Option<&str>) -> Config {
    Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        token: token.map(str::to_owned),
        queue: 4,
        max_body_bytes: 4000,
        max_voxels: 1000,
        timeout: Duration::from_secs(20),
        postprocessing: Vec::new(),
        quiet: true,
    }
}

/// A server on its own thread, stopped (gracefully) by sending on the returned channel.
struct Running {
    url: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<Result<()>>>,
    tiles_run: Arc<AtomicUsize>,
}

impl Running {
    fn start(config: Config, tiles: usize, tile_ms: u64, load_ms: u64) -> Self {
        let server = Server::bind(config).unwrap();
        let url = format!("http://{}", server.local_addr());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let tiles_run = Arc::new(AtomicUsize::new(0));
        let model = Echo { tiles, tile: Duration::from_millis(tile_ms), tiles_run: tiles_run.clone() };
        let thread = std::thread::spawn(move || {
            let load = move || {
                std::thread::sleep(Duration::from_millis(load_ms));
                Ok(model)
            };
            server.run_until(load, async {
                let _ = stopped.await;
            })
        });
        Self { url, stop: Some(stop), thread: Some(thread), tiles_run }
    }

    fn wait_ready(&self) {
        let started = Instant::now();
        while agent().get(format!("{}/healthz", self.url)).call().unwrap().status() != 200 {
            assert!(started.elapsed() < Duration::from_secs(10), "not ready");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn stop(&mut self) -> Result<()> {
        let _ = self.stop.take().unwrap().send(());
        self.thread.take().unwrap().join().unwrap()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(30)))
        .build()
        .into()
}

/// A NIfTI-1 header claiming `dims` (the fake model never decodes it).
fn nifti(dims: &[i16]) -> Vec<u8> {
    let mut header = vec![0u8; 352];
    header[..4].copy_from_slice(&348i32.to_le_bytes());
    header[70..72].copy_from_slice(&2i16.to_le_bytes()); // datatype uint8
    header[108..112].copy_from_slice(&352f32.to_le_bytes()); // vox_offset
    header[344..348].copy_from_slice(b"n+1\0");
    header[40..42].copy_from_slice(&(dims.len() as i16).to_le_bytes());
    for (i, d) in dims.iter().enumerate() {
        header[42 + 2 * i..44 + 2 * i].copy_from_slice(&d.to_le_bytes());
    }
    header
}

/// Status and body of a POST.
fn post(
    url: &str,
    token: Option<&str>,
    content_type: Option<&str>,
    body: &[u8],
) -> (u16, Vec<u8>, ureq::http::HeaderMap) {
    let mut request = agent().post(url);
    if let Some(token) = token {
        request = request.header("Authorization", format!("Bearer {token}"));
    }
    if let Some(content_type) = content_type {
        request = request.header("Content-Type", content_type);
    }
    let mut response = request.send(body).unwrap();
    let headers = response.headers().clone();
    (response.status().as_u16(), response.body_mut().read_to_vec().unwrap(), headers)
}

/// The error of a refusal: one JSON line naming no server path.
fn error_of(body: &[u8]) -> String {
    let text = String::from_utf8(body.to_vec()).unwrap();
    assert!(text.ends_with('\n') && text.trim_end().lines().count() == 1, "{text:?}");
    let error = serde_json::from_str::<serde_json::Value>(&text).unwrap()["error"].as_str().unwrap().to_owned();
    let temp = std::env::temp_dir().display().to_string();
    assert!(!error.contains(&temp) && !error.contains("nn-serve-"), "{error}");
    error
}

#[test]
fn tokens_limits_and_bad_bodies() {
    let running = Running::start(config(Some("s3cret")), 0, 0, 300);
    let url = &running.url;
    // still loading: /healthz says so without a token, and predictions wait for it
    assert_eq!(agent().get(format!("{url}/healthz")).call().unwrap().status(), 503);
    running.wait_ready();
    let model = |token: &str| {
        let mut response = agent().get(format!("{url}/v1/model")).header("Authorization", token).call().unwrap();
        (response.status().as_u16(), response.body_mut().read_to_string().unwrap())
    };
    assert_eq!(model("").0, 401);
    assert_eq!(model("Bearer s3cre").0, 401);
    assert_eq!(model("Bearer s3cret2").0, 401);
    assert_eq!(model("Basic s3cret").0, 401);
    let (status, info) = model("Bearer s3cret");
    assert_eq!(
        (status, serde_json::from_str::<serde_json::Value>(&info).unwrap()["channels"].as_u64()),
        (200, Some(1))
    );

    let predict = format!("{url}/v1/predict");
    let image = nifti(&[10, 10, 10]);
    let (status, body, _) = post(&predict, None, None, &image);
    assert_eq!((status, error_of(&body).as_str()), (401, "missing or wrong bearer token"));
    let (status, body, headers) = post(&predict, Some("s3cret"), None, &image);
    assert_eq!((status, &body), (200, &image));
    assert_eq!(headers["content-disposition"], "attachment; filename=\"prediction.nii\"");

    // one voxel over the limit, from the header alone
    let (status, body, _) = post(&predict, Some("s3cret"), None, &nifti(&[10, 10, 10, 2]));
    assert_eq!(status, 413);
    assert!(error_of(&body).contains("2000 voxels"));
    let (status, body, _) = post(&predict, Some("s3cret"), None, &vec![0u8; 4001]);
    assert_eq!(status, 413);
    assert!(error_of(&body).contains("4000 bytes"));
    let (status, body, _) = post(&predict, Some("s3cret"), None, b"<html>hello</html>");
    assert_eq!(status, 400);
    assert!(error_of(&body).contains("not an image"));
    let detached = b"NRRD0004\ntype: uint8\ndimension: 1\nsizes: 4\ndata file: /etc/passwd\nencoding: raw\n\n";
    let (status, body, _) = post(&predict, Some("s3cret"), None, detached);
    assert_eq!(status, 400);
    assert!(error_of(&body).contains("multi-file"));
    let (status, body, _) = post(&format!("{predict}?format=mhd"), Some("s3cret"), None, &image);
    assert_eq!(status, 400);
    assert!(error_of(&body).contains("multi-file"));
    let (status, body, _) = post(&format!("{predict}?path=/etc"), Some("s3cret"), None, &image);
    assert_eq!(status, 400);
    assert!(error_of(&body).contains("unknown option"));
    // a reader's error names the server's temporary file: the answer names the file alone
    let mut bad = image.clone();
    bad.extend_from_slice(b"BAD!");
    let (status, body, _) = post(&predict, Some("s3cret"), None, &bad);
    assert_eq!((status, error_of(&body).as_str()), (400, "case_0000.nii: truncated"));
    // a panic (a bug) fails its request alone, and says nothing of it but that
    let bug = [&image[..], b"BUG!"].concat();
    let (status, body, _) = post(&predict, Some("s3cret"), None, &bug);
    assert_eq!((status, error_of(&body).as_str()), (500, "the prediction failed (see the server's log)"));

    // multipart: parts named 0000, ...
    let multipart = |name: &str| {
        let mut body =
            format!("--XyZ\r\nContent-Disposition: form-data; name=\"{name}\"; filename=\"a\"\r\n\r\n").into_bytes();
        body.extend_from_slice(&image);
        body.extend_from_slice(b"\r\n--XyZ--\r\n");
        body
    };
    let form = Some("multipart/form-data; boundary=XyZ");
    let (status, body, _) = post(&predict, Some("s3cret"), form, &multipart("0000"));
    assert_eq!((status, &body), (200, &image));
    let (status, body, _) = post(&predict, Some("s3cret"), form, &multipart("image"));
    assert_eq!(status, 400);
    assert!(error_of(&body).contains("expected \"0000\""));
    let (status, body, _) = post(&predict, Some("s3cret"), form, &multipart("0000")[..60]);
    assert_eq!(status, 400, "{}", String::from_utf8_lossy(&body));

    // probabilities: a zip of every file the case has
    let (status, body, _) = post(&format!("{predict}?probabilities=true"), Some("s3cret"), None, &image);
    assert_eq!(status, 200);
    let mut zip = zip::ZipArchive::new(std::io::Cursor::new(body)).unwrap();
    let names: Vec<String> = zip.file_names().map(str::to_owned).collect();
    assert_eq!(names, ["case.nii", "case.npz"]);
    let mut label_map = Vec::new();
    std::io::Read::read_to_end(&mut zip.by_name("case.nii").unwrap(), &mut label_map).unwrap();
    assert_eq!(label_map, image);
    // still serving after all that
    assert_eq!(post(&predict, Some("s3cret"), None, &image).0, 200);
}

#[test]
fn a_full_queue_answers_429_and_a_slow_case_504() {
    // one case predicted, one waiting; each takes 4 x 100 ms
    let mut running = Running::start(Config { queue: 1, ..config(None) }, 4, 100, 0);
    running.wait_ready();
    let predict = format!("{}/v1/predict", running.url);
    let client = |predict: String| std::thread::spawn(move || post(&predict, None, None, &nifti(&[2, 2, 2])));
    // the first is taken by the worker, then one of the four others finds room in the queue
    let mut clients = vec![client(predict.clone())];
    std::thread::sleep(Duration::from_millis(150));
    clients.extend((0..4).map(|_| client(predict.clone())));
    let answers: Vec<_> = clients.into_iter().map(|c| c.join().unwrap()).collect();
    let statuses: Vec<u16> = answers.iter().map(|a| a.0).collect();
    assert_eq!(statuses.iter().filter(|&&s| s == 200).count(), 2, "{statuses:?}");
    assert_eq!(statuses.iter().filter(|&&s| s == 429).count(), 3, "{statuses:?}");
    for (_, body, headers) in answers.iter().filter(|a| a.0 == 429) {
        assert_eq!(headers["retry-after"], "1");
        assert!(error_of(body).contains("queue is full"));
    }
    running.stop().unwrap();

    // 250 ms allowed for a case of 4 x 100 ms: refused at the deadline, the case stopped at its next tile
    let mut running = Running::start(Config { timeout: Duration::from_millis(250), ..config(None) }, 4, 100, 0);
    running.wait_ready();
    let (status, body, _) = post(&format!("{}/v1/predict", running.url), None, None, &nifti(&[2, 2, 2]));
    assert_eq!(status, 504);
    assert!(error_of(&body).contains("time limit"));
    std::thread::sleep(Duration::from_millis(500));
    let tiles = running.tiles_run.load(Ordering::Relaxed);
    assert!((1..4).contains(&tiles), "{tiles} tiles run: the cancel was not seen at a tile");
    running.stop().unwrap();
}

#[test]
fn shutdown_answers_what_was_accepted() {
    let mut running = Running::start(config(None), 3, 100, 0);
    running.wait_ready();
    let predict = format!("{}/v1/predict", running.url);
    let clients: Vec<_> = (0..3)
        .map(|_| {
            let predict = predict.clone();
            std::thread::spawn(move || post(&predict, None, None, &nifti(&[2, 2, 2])).0)
        })
        .collect();
    std::thread::sleep(Duration::from_millis(150));
    let started = Instant::now();
    running.stop().unwrap();
    // three cases of 300 ms, one under way: the stop waited for the other two
    assert!(started.elapsed() >= Duration::from_millis(400), "{:?}", started.elapsed());
    let statuses: Vec<u16> = clients.into_iter().map(|c| c.join().unwrap()).collect();
    assert_eq!(statuses, [200, 200, 200]);
    assert!(agent().get(format!("{}/healthz", running.url)).call().is_err(), "still accepting connections");
}

#[test]
fn a_public_address_needs_a_token() {
    let error = Server::bind(Config { listen: "0.0.0.0:0".parse().unwrap(), ..config(None) }).err().unwrap();
    assert_eq!(error.exit_code(), 2);
    assert!(error.message.contains("--token-file"), "{}", error.message);
    assert!(Server::bind(Config { listen: "0.0.0.0:0".parse().unwrap(), ..config(Some("t")) }).is_ok());
}
