//! nn-serve end to end with the shared reference model (../shared/reference/infer), through a real HTTP
//! client against the binary on 127.0.0.1: concurrent clients get nn-infer's files byte for byte, tokens,
//! limits and hostile bodies are refused with JSON errors while the server goes on, a full queue answers
//! 429, and SIGTERM under load answers what was accepted and exits 0. Every server is killed when its
//! test ends, and every request has a time limit.

use nntools_tests::{os_args, run, shared, stderr};
use std::ffi::OsStr;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

const TOKEN: &str = "tok-3f9c2a7e";

/// A running nn-serve, killed when dropped; its stderr is collected.
struct Serve {
    child: Child,
    url: String,
    log: Arc<Mutex<String>>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl Serve {
    /// Starts nn-serve with `args` on a free port of 127.0.0.1 and waits (up to a minute) until its model
    /// is loaded.
    fn start(args: &[&dyn AsRef<OsStr>]) -> Self {
        let serve = Self::spawn(args);
        let started = Instant::now();
        while agent().get(format!("{}/healthz", serve.url)).call().map(|r| r.status().as_u16()).ok() != Some(200) {
            assert!(started.elapsed() < Duration::from_secs(60), "model not loaded: {}", serve.log());
            std::thread::sleep(Duration::from_millis(50));
        }
        serve
    }

    /// Starts nn-serve with `args` on a free port of 127.0.0.1, returning once it prints its address.
    fn spawn(args: &[&dyn AsRef<OsStr>]) -> Self {
        let mut child = Command::new(nntools_tests::binary("nn-serve"))
            .args(["--listen", "127.0.0.1:0", "--device", "cpu", "-j", "1"])
            .args(os_args(args))
            .stderr(Stdio::piped())
            .spawn()
            .expect("nn-serve starts");
        let (address_tx, address_rx) = std::sync::mpsc::channel();
        let log = Arc::new(Mutex::new(String::new()));
        let lines = BufReader::new(child.stderr.take().unwrap());
        let reader = {
            let log = log.clone();
            std::thread::spawn(move || {
                for line in lines.lines().map_while(std::result::Result::ok) {
                    if let Some(address) = line.strip_prefix("nn-serve: listening on ") {
                        let _ = address_tx.send(address.to_owned());
                    }
                    log.lock().unwrap().push_str(&(line + "\n"));
                }
            })
        };
        let url = address_rx.recv_timeout(Duration::from_secs(60)).expect("nn-serve prints its address");
        Self { child, url, log, reader: Some(reader) }
    }

    fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    fn predict(&self, query: &str, token: Option<&str>, body: &[u8]) -> (u16, Vec<u8>) {
        post(&format!("{}/v1/predict{query}", self.url), token, body)
    }

    /// SIGTERM, then the exit status (within a minute) and the whole log.
    fn terminate(mut self) -> (Option<i32>, String) {
        let pid = self.child.id().to_string();
        assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
        let started = Instant::now();
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            assert!(started.elapsed() < Duration::from_secs(60), "no exit after SIGTERM: {}", self.log());
            std::thread::sleep(Duration::from_millis(20));
        };
        self.reader.take().unwrap().join().unwrap();
        (status.code(), self.log())
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(300)))
        .build()
        .into()
}

fn post(url: &str, token: Option<&str>, body: &[u8]) -> (u16, Vec<u8>) {
    let mut request = agent().post(url);
    if let Some(token) = token {
        request = request.header("Authorization", format!("Bearer {token}"));
    }
    let mut response = request.send(body).expect("an answer");
    let status = response.status().as_u16();
    (status, response.body_mut().with_config().limit(1 << 30).read_to_vec().unwrap())
}

/// The `error` of a refusal: one JSON line that names no path of the server.
fn error_of(body: &[u8], shared: &Path) -> String {
    let text = String::from_utf8(body.to_vec()).unwrap();
    assert_eq!(text.trim_end().lines().count(), 1, "{text:?}");
    let error = serde_json::from_str::<serde_json::Value>(&text).unwrap()["error"].as_str().unwrap().to_owned();
    let server_paths = [std::env::temp_dir(), shared.canonicalize().unwrap()];
    assert!(server_paths.iter().all(|p| !error.contains(&*p.to_string_lossy())), "{error}");
    error
}

/// The reference model, 9 of its images, and nn-infer --no-tta -j 1's label map of each (made once per test
/// executable).
struct Reference {
    model: PathBuf,
    images: Vec<PathBuf>,
    predictions: PathBuf,
}

fn reference(shared: &Path) -> &'static Reference {
    static REFERENCE: OnceLock<(tempfile::TempDir, Reference)> = OnceLock::new();
    &REFERENCE
        .get_or_init(|| {
            let infer = shared.join("reference/infer");
            let model = infer.join("model");
            let mut images: Vec<PathBuf> =
                std::fs::read_dir(infer.join("images")).unwrap().map(|e| e.unwrap().path()).collect();
            images.sort();
            images.truncate(9);
            let out = tempfile::tempdir().unwrap();
            let predictions = out.path().join("pred");
            let output = Command::new(nntools_tests::binary("nn-infer"))
                .args(["-m".as_ref(), model.as_os_str(), "-i".as_ref()])
                .args(&images)
                .args(["-o".as_ref(), predictions.as_os_str()])
                .args(["--no-tta", "--device", "cpu", "-q", "-j", "1"])
                .output()
                .unwrap();
            assert!(output.status.success(), "{}", stderr(&output));
            (out, Reference { model, images, predictions })
        })
        .1
}

impl Reference {
    /// nn-infer's label map for image `index`.
    fn expected(&self, index: usize) -> Vec<u8> {
        let name = self.images[index].file_name().unwrap().to_string_lossy().replace("_0000", "");
        std::fs::read(self.predictions.join(name)).unwrap()
    }
}

#[test]
fn concurrent_clients_get_nn_infers_files_and_tokens_are_checked() {
    let Some(shared) = shared() else { return };
    let reference = reference(&shared);
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, format!("{TOKEN}\n")).unwrap();
    let serve = Serve::start(&[&"-m", &reference.model, &"--queue", &"32", &"--token-file", &token_file]);
    let image = std::fs::read(&reference.images[0]).unwrap();
    for token in [None, Some("tok-3f9c2a7"), Some("tok-3f9c2a7e0"), Some("")] {
        let (status, body) = serve.predict("?tta=false", token, &image);
        assert_eq!((status, error_of(&body, &shared).as_str()), (401, "missing or wrong bearer token"));
    }
    let (status, _) = serve.predict("", Some(TOKEN), &[]);
    assert_eq!(status, 400);
    // 16 clients, 2 cases each, all at once
    let clients: Vec<_> = (0..16)
        .map(|client| {
            let url = serve.url.clone();
            std::thread::spawn(move || {
                [2 * client % 9, (2 * client + 1) % 9]
                    .map(|index| {
                        let bytes = std::fs::read(&reference.images[index]).unwrap();
                        (index, post(&format!("{url}/v1/predict?tta=false"), Some(TOKEN), &bytes))
                    })
                    .to_vec()
            })
        })
        .collect();
    let mut answered = 0;
    for client in clients {
        for (index, (status, body)) in client.join().unwrap() {
            assert_eq!(status, 200, "image {index}: {}", String::from_utf8_lossy(&body));
            assert!(body == reference.expected(index), "image {index}: not nn-infer's file");
            answered += 1;
        }
    }
    assert_eq!(answered, 32);
    let model: serde_json::Value = serde_json::from_str(
        &agent()
            .get(format!("{}/v1/model", serve.url))
            .header("Authorization", format!("Bearer {TOKEN}"))
            .call()
            .unwrap()
            .body_mut()
            .read_to_string()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(model["labels"], serde_json::json!({"background": 0, "Anterior": 1, "Posterior": 2}));
    assert_eq!(model["channels"], 1);
    let (code, log) = serve.terminate();
    assert_eq!(code, Some(0), "{log}");
    assert!(!log.contains(TOKEN), "the token is in the log");
    assert_eq!(log.matches("POST /v1/predict 200 ").count(), 32, "{log}");
    assert_eq!(log.matches("POST /v1/predict 401 ").count(), 4, "{log}");
}

#[test]
fn limits_and_hostile_bodies_are_refused_and_the_server_goes_on() {
    let Some(shared) = shared() else { return };
    let reference = reference(&shared);
    let serve = Serve::start(&[&"-m", &reference.model, &"--max-body-mb", &"1", &"--max-voxels", &"100000", &"-q"]);
    let image = std::fs::read(&reference.images[3]).unwrap();
    let (status, body) = serve.predict("", None, &vec![0u8; (1 << 20) + 1]);
    assert_eq!(status, 413);
    assert!(error_of(&body, &shared).contains("limit of 1048576 bytes"));
    // a header claiming 200^3 voxels: refused before anything is decoded
    let mut huge = vec![0u8; 352];
    huge[..4].copy_from_slice(&348i32.to_le_bytes());
    huge[70..72].copy_from_slice(&2i16.to_le_bytes()); // datatype uint8
    huge[108..112].copy_from_slice(&352f32.to_le_bytes()); // vox_offset
    huge[344..348].copy_from_slice(b"n+1\0");
    for (i, d) in [3i16, 200, 200, 200].iter().enumerate() {
        huge[40 + 2 * i..42 + 2 * i].copy_from_slice(&d.to_le_bytes());
    }
    let (status, body) = serve.predict("", None, &huge);
    assert_eq!(status, 413);
    assert!(error_of(&body, &shared).contains("8000000 voxels"));
    let hostile: [(&str, Vec<u8>); 5] = [
        ("truncated .nii.gz", image[..image.len() / 2].to_vec()),
        ("NIfTI header without voxels", huge[..352].iter().map(|&b| if b == 200 { 2 } else { b }).collect()),
        ("detached NRRD", b"NRRD0004\ntype: uint8\ndimension: 3\nsizes: 2 2 2\ndata file: /etc/passwd\n\n".to_vec()),
        ("garbage", b"\x00\x01 definitely not an image".to_vec()),
        ("MetaImage with a foreign data file", b"ObjectType = Image\nNDims = 3\nDimSize = 2 2 2\nElementType = MET_UCHAR\nElementDataFile = /etc/hostname\n".to_vec()),
    ];
    for (what, body) in &hostile {
        let (status, answer) = serve.predict("", None, body);
        assert_eq!(status, 400, "{what}: {}", String::from_utf8_lossy(&answer));
        error_of(&answer, &shared);
    }
    let (status, body) = serve.predict("?format=nhdr", None, &image);
    assert_eq!(status, 400);
    assert!(error_of(&body, &shared).contains("multi-file"));
    // still serving, and right
    let (status, body) = serve.predict("?tta=false", None, &image);
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    assert!(body == reference.expected(3));
}

#[test]
fn a_full_queue_answers_429_and_sigterm_answers_what_was_accepted() {
    let Some(shared) = shared() else { return };
    let reference = reference(&shared);
    let serve = Serve::start(&[&"-m", &reference.model, &"--queue", &"1"]);
    let url = format!("{}/v1/predict", serve.url);
    let send = |index: usize, query: &str| {
        let url = format!("{url}{query}");
        std::thread::spawn(move || (index, post(&url, None, &std::fs::read(&reference.images[index]).unwrap())))
    };
    // the first case is being predicted (with mirroring: several seconds), one more may wait: of four
    // others, three find the queue full
    let first = send(4, "");
    std::thread::sleep(Duration::from_millis(300));
    let others: Vec<_> = (5..9).map(|index| send(index, "?tta=false")).collect();
    std::thread::sleep(Duration::from_millis(300));
    let started = Instant::now();
    let (code, log) = serve.terminate();
    assert_eq!(code, Some(0), "{log}");
    let (_, (status, _)) = first.join().unwrap();
    assert_eq!(status, 200, "{log}");
    let answers: Vec<_> = others.into_iter().map(|c| c.join().unwrap()).collect();
    let mut statuses: Vec<u16> = answers.iter().map(|(_, (status, _))| *status).collect();
    statuses.sort();
    assert_eq!(statuses, [200, 429, 429, 429], "{log}");
    for (index, (status, body)) in &answers {
        match status {
            200 => assert!(*body == reference.expected(*index), "image {index}: not nn-infer's file"),
            _ => assert!(error_of(body, &shared).contains("queue is full")),
        }
    }
    assert!(started.elapsed() < Duration::from_secs(60));
    assert!(agent().get(&url).call().is_err(), "still accepting connections after SIGTERM");
}

/// SIGTERM sent as soon as the address is printed, while the model loads, stops the server gracefully:
/// the signal is caught from the bind on, not left to its default action (exit 143).
#[test]
fn sigterm_right_after_the_address_is_printed_exits_0() {
    let Some(shared) = shared() else { return };
    let (code, log) = Serve::spawn(&[&"-m", &shared.join("reference/infer/model")]).terminate();
    assert_eq!(code, Some(0), "{log}");
}

#[test]
fn a_plan_postprocesses_as_nn_ensemble_and_probabilities_come_zipped() {
    let Some(shared) = shared() else { return };
    let reference = reference(&shared);
    let dir = tempfile::tempdir().unwrap();
    let plan = dir.path().join("inference_plan.json");
    let steps = serde_json::json!([{"keep_largest_component_of": [1]}, {"keep_largest_component_of": [2]}]);
    let text = serde_json::json!({
        "models": [{"run": reference.model, "configuration": "3d_fullres"}], "folds": [0], "postprocessing": steps,
        "cross_validation": [], "foreground_dice_before_postprocessing": 0.0,
        "foreground_dice_after_postprocessing": 0.0, "class_dice_after_postprocessing": {}, "commands": []
    });
    std::fs::write(&plan, text.to_string()).unwrap();
    // what the batch tools make of image 5: nn-infer --plan, then nn-ensemble postprocess --plan
    let (raw, post) = (dir.path().join("raw"), dir.path().join("post"));
    let image = &reference.images[5];
    // with nn-serve's -j 1 here: libtorch's thread count changes the order of float sums
    let flags: [&dyn AsRef<OsStr>; 12] = [
        &"--plan",
        &plan,
        &"-i",
        image,
        &"-o",
        &raw,
        &"--no-tta",
        &"--save-probabilities",
        &"--device",
        &"cpu",
        &"-j",
        &"1",
    ];
    let output = run("nn-infer", &flags);
    assert!(output.status.success(), "{}", stderr(&output));
    let output = run("nn-ensemble", &[&"postprocess", &"-i", &raw, &"-o", &post, &"--plan", &plan]);
    assert!(output.status.success(), "{}", stderr(&output));
    let name = image.file_name().unwrap().to_string_lossy().replace("_0000", "");
    let case = name.strip_suffix(".nii.gz").unwrap();
    let (raw_labels, post_labels) = (std::fs::read(raw.join(&name)).unwrap(), std::fs::read(post.join(&name)).unwrap());
    assert!(raw_labels != post_labels, "postprocessing changes nothing here: the test would not see it");

    let serve = Serve::start(&[&"--plan", &plan, &"-q"]);
    let bytes = std::fs::read(image).unwrap();
    let (status, body) = serve.predict("?tta=false", None, &bytes);
    assert!(status == 200 && body == post_labels, "{status}: not nn-ensemble postprocess's file");
    let (status, body) = serve.predict("?tta=false&postprocess=false", None, &bytes);
    assert!(status == 200 && body == raw_labels, "{status}: not nn-infer's file");
    let (status, body) = serve.predict("?tta=false&probabilities=true", None, &bytes);
    assert_eq!(status, 200);
    let mut zip = zip::ZipArchive::new(std::io::Cursor::new(body)).unwrap();
    let mut names: Vec<String> = zip.file_names().map(str::to_owned).collect();
    names.sort();
    assert_eq!(names, ["case.json", "case.made_by.json", "case.nii.gz", "case.npz"]);
    let mut member = |name: &str| {
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(&mut zip.by_name(name).unwrap(), &mut bytes).unwrap();
        bytes
    };
    assert!(member("case.nii.gz") == post_labels, "the zipped label map is not postprocessed");
    assert!(member("case.npz") == std::fs::read(raw.join(format!("{case}.npz"))).unwrap(), "probabilities differ");
    let properties: serde_json::Value = serde_json::from_slice(&member("case.json")).unwrap();
    let expected: serde_json::Value =
        serde_json::from_slice(&std::fs::read(raw.join(format!("{case}.json"))).unwrap()).unwrap();
    assert_eq!(properties, expected);
}
