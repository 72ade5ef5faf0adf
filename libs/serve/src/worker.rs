//! The one thread that owns the model: it takes requests from the bounded queue one at a time, writes
//! each request's images into a private temporary folder, predicts them there, and hands back the
//! answer's bytes. Nothing of a request names a path: the folder and the file names are the worker's.

use crate::{CaseOptions, Model};
use nntools_ensembling::{Step, postprocess_folder};
use nntools_io::{Error, ErrorKind};
use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

/// The case identifier every request's files are saved under (`case_0000.nii.gz`, ...).
const CASE: &str = "case";

/// One channel of a request: its bytes and the ending they are saved under.
pub struct Channel {
    pub ending: &'static str,
    pub bytes: axum::body::Bytes,
}

/// A request waiting in the queue.
pub struct Job {
    pub channels: Vec<Channel>,
    /// Tiff3DIO's spacing sidecar (`{"spacing": [z, y, x]}`) for a 3-D TIFF.
    pub spacing: Option<[f64; 3]>,
    pub tta: bool,
    pub postprocess: bool,
    pub probabilities: bool,
    /// Past it the case is cancelled at its next tile.
    pub deadline: Instant,
    /// Set when the client gave up or its time ran out: the case is cancelled at its next tile.
    pub cancelled: Arc<AtomicBool>,
    pub reply: tokio::sync::oneshot::Sender<Result<Answer, Failure>>,
}

/// A finished request's body.
pub struct Answer {
    pub bytes: Vec<u8>,
    /// The file name it would have on disk (`prediction.nii.gz`, `prediction.zip`).
    pub name: String,
}

/// Why a request failed.
#[derive(Debug)]
pub enum Failure {
    /// The request's images are bad (400), with a message naming no server path.
    BadInput(String),
    /// Cancelled at a tile: out of time, or the client left (504).
    Cancelled,
    /// Anything else (500); the message is logged, never sent.
    Internal(String),
}

/// Predicts every job of `queue` with `model` until the queue is closed.
pub fn run(model: &dyn Model, queue: std::sync::mpsc::Receiver<Job>, postprocessing: &[Step], quiet: bool) {
    for job in queue {
        // a panic in one case (a bug) fails that request; the model goes on serving the others
        let answer = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| predict(model, &job, postprocessing)))
            .unwrap_or_else(|_| Err(Failure::Internal("the prediction panicked".into())));
        if let Err(Failure::Internal(message)) = &answer {
            // the server's log may name server paths; the answer never does
            if !quiet {
                eprintln!("nn-serve: error: {message}");
            }
        }
        // a client that left no longer waits
        let _ = job.reply.send(answer);
    }
}

fn predict(model: &dyn Model, job: &Job, postprocessing: &[Step]) -> Result<Answer, Failure> {
    let cancelled = || job.cancelled.load(Ordering::Relaxed) || Instant::now() >= job.deadline;
    if cancelled() {
        return Err(Failure::Cancelled);
    }
    let dir = tempfile::Builder::new()
        .prefix("nn-serve-")
        .tempdir()
        .map_err(|e| Failure::Internal(format!("temporary folder: {e}")))?;
    let root = dir.path();
    let outcome = predict_in(model, job, postprocessing, root, &cancelled);
    let hide =
        |message: String| message.replace(&format!("{}/", root.display()), "").replace(&root.display().to_string(), "");
    match outcome {
        Ok(answer) => Ok(answer),
        Err(_) if cancelled() => Err(Failure::Cancelled),
        Err(e) if e.kind == ErrorKind::BadInput => Err(Failure::BadInput(hide(e.message))),
        Err(e) => Err(Failure::Internal(e.message)),
    }
}

fn predict_in(
    model: &dyn Model,
    job: &Job,
    postprocessing: &[Step],
    root: &Path,
    cancelled: &dyn Fn() -> bool,
) -> nntools_io::Result<Answer> {
    let mut images = Vec::new();
    for (index, channel) in job.channels.iter().enumerate() {
        let path = root.join(format!("{CASE}_{index:04}{}", channel.ending));
        std::fs::write(&path, &channel.bytes).map_err(|e| Error::io(&path, &e))?;
        images.push(path);
    }
    if let Some(spacing) = job.spacing {
        let sidecar = root.join(format!("{CASE}.json"));
        nntools_io::write_json(&sidecar, &serde_json::json!({ "spacing": spacing }))?;
    }
    let out = root.join("out");
    std::fs::create_dir(&out).map_err(|e| Error::io(&out, &e))?;
    let options = CaseOptions { tta: job.tta, save_probabilities: job.probabilities };
    let mut keep_going = || !cancelled();
    let label_map = model.predict_case(CASE, &images, &out, options, &mut keep_going)?;
    if job.postprocess && !postprocessing.is_empty() {
        // nn-ensemble postprocess --plan, on a folder holding this case's label map alone
        let (raw, postprocessed) = (root.join("raw"), root.join("postprocessed"));
        let name = label_map.file_name().expect("a label map file").to_owned();
        std::fs::create_dir(&raw).map_err(|e| Error::io(&raw, &e))?;
        std::fs::rename(&label_map, raw.join(&name)).map_err(|e| Error::io(&label_map, &e))?;
        postprocess_folder(&raw, &postprocessed, postprocessing)?;
        std::fs::rename(postprocessed.join(&name), &label_map).map_err(|e| Error::io(&label_map, &e))?;
    }
    if job.probabilities {
        return zip_folder(&out);
    }
    let name = label_map.file_name().expect("a label map file").to_string_lossy().replacen(CASE, "prediction", 1);
    let bytes = std::fs::read(&label_map).map_err(|e| Error::io(&label_map, &e))?;
    Ok(Answer { bytes, name })
}

/// Every file nn-infer wrote for the case, in a zip under its own name (stored: the label map and
/// `.npz` are compressed already).
fn zip_folder(out: &Path) -> nntools_io::Result<Answer> {
    let mut names: Vec<String> = std::fs::read_dir(out)
        .map_err(|e| Error::io(out, &e))?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|name| !name.starts_with('.'))
        .collect();
    names.sort();
    let runtime = |e: &dyn std::fmt::Display| Error::runtime(out, format!("zip: {e}"));
    let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let options = zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    for name in names {
        let path = out.join(&name);
        let bytes = std::fs::read(&path).map_err(|e| Error::io(&path, &e))?;
        zip.start_file(name, options).map_err(|e| runtime(&e))?;
        zip.write_all(&bytes).map_err(|e| runtime(&e))?;
    }
    let bytes = zip.finish().map_err(|e| runtime(&e))?.into_inner();
    Ok(Answer { bytes, name: "prediction.zip".into() })
}
