//! Evaluating a folder of predictions against a folder of references, and nnU-Net's `summary.json`.

use crate::metrics::{ClassMetrics, class_metrics};
use crate::overlay::write_overlay;
use crate::surface::surface_metrics;
use ndarray::ArrayView3;
use nntools_dataset::Descriptor;
use nntools_io::{Error, Result, read_label_map, split_image_ending, write_atomically};
use nntools_layout::predictions;
use rayon::prelude::*;
use serde::Serialize;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

/// How far two geometries may differ (relative, as float32 headers round) and still be the same.
const GEOMETRY_TOLERANCE: f64 = 1e-4;

/// One case's metrics per class key (`"1"`, or `"(1, 2)"` for a region).
#[derive(Debug, Clone, Serialize)]
pub struct CaseResult {
    pub metrics: BTreeMap<String, ClassMetrics>,
    pub prediction_file: PathBuf,
    pub reference_file: PathBuf,
}

/// nnU-Net's `summary.json` (keys sorted as Python's `json.dump(sort_keys=True)` writes them).
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub foreground_mean: BTreeMap<&'static str, f64>,
    pub mean: BTreeMap<String, BTreeMap<&'static str, f64>>,
    pub metric_per_case: Vec<CaseResult>,
}

/// The metric names and values of a class, in `summary.json`'s names.
fn named(m: &ClassMetrics) -> Vec<(&'static str, f64)> {
    let mut named = vec![
        ("Dice", m.dice),
        ("FN", m.fn_ as f64),
        ("FP", m.fp as f64),
        ("IoU", m.iou),
        ("TN", m.tn as f64),
        ("TP", m.tp as f64),
        ("n_pred", m.n_pred as f64),
        ("n_ref", m.n_ref as f64),
    ];
    named.extend(m.hd95.map(|v| ("HD95", v)));
    named.extend(m.nsd.map(|v| ("NSD", v)));
    named
}

/// Averages as nnU-Net does: per class over cases ignoring NaN, then over classes (NaN if any class's
/// mean is NaN).
pub fn summarize(metric_per_case: Vec<CaseResult>) -> Summary {
    let mut mean: BTreeMap<String, BTreeMap<&'static str, f64>> = BTreeMap::new();
    let classes: Vec<String> = metric_per_case.first().map(|c| c.metrics.keys().cloned().collect()).unwrap_or_default();
    for class in &classes {
        let mut sums: BTreeMap<&'static str, (f64, usize)> = BTreeMap::new();
        for case in &metric_per_case {
            for (name, value) in named(&case.metrics[class]) {
                let entry = sums.entry(name).or_insert((0.0, 0));
                if !value.is_nan() {
                    *entry = (entry.0 + value, entry.1 + 1);
                }
            }
        }
        let means =
            sums.into_iter().map(|(name, (sum, n))| (name, if n == 0 { f64::NAN } else { sum / n as f64 })).collect();
        mean.insert(class.clone(), means);
    }
    let mut foreground_mean = BTreeMap::new();
    if let Some(first) = mean.values().next() {
        for &name in first.keys() {
            let total: f64 = mean.values().map(|m| m[name]).sum();
            foreground_mean.insert(name, total / mean.len() as f64);
        }
    }
    Summary { foreground_mean, mean, metric_per_case }
}

/// The classes to evaluate with their keys: the foreground labels, or the foreground regions.
pub fn classes(descriptor: &Descriptor) -> Vec<(String, Vec<i64>)> {
    descriptor
        .foreground_entries()
        .map(|l| {
            let key = match l.values.as_slice() {
                [one] => one.to_string(),
                many => format!("({})", many.iter().map(i64::to_string).collect::<Vec<_>>().join(", ")),
            };
            (key, l.values.clone())
        })
        .collect()
}

/// What differs between a prediction and its reference, each as `WHAT PREDICTION vs REFERENCE` (shape,
/// spacing, origin, direction: only those that differ); empty when they match.
fn geometry_differences(
    (shape, geometry): (&[usize], &nntools_io::Geometry),
    (reference_shape, reference): (&[usize], &nntools_io::Geometry),
) -> Vec<String> {
    let close = |x: &[f64], y: &[f64]| {
        x.iter().zip(y).all(|(p, q)| (p - q).abs() <= GEOMETRY_TOLERANCE * p.abs().max(q.abs()).max(1.0))
    };
    let mut differences = Vec::new();
    if shape != reference_shape {
        differences.push(format!("shape {shape:?} vs {reference_shape:?}"));
    }
    for (what, value, reference_value) in [
        ("spacing", &geometry.spacing[..], &reference.spacing[..]),
        ("origin", &geometry.origin[..], &reference.origin[..]),
        ("direction", &geometry.direction[..], &reference.direction[..]),
    ] {
        if !close(value, reference_value) {
            differences.push(format!("{what} {value:?} vs {reference_value:?}"));
        }
    }
    differences
}

/// What to compute beyond nnU-Net's metrics.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// HD95 and NSD at this tolerance (mm).
    pub surface_tolerance: Option<f64>,
    /// Evaluate only the references that have a prediction (nnU-Net's `--chill`).
    pub chill: bool,
    /// Write `CASE.png` overlays into the first folder, over the images (`CASE_0000<ending>`) of the
    /// second.
    pub overlays: Option<(PathBuf, PathBuf)>,
}

fn evaluate_case(
    reference: &Path,
    prediction: &Path,
    classes: &[(String, Vec<i64>)],
    ignore: Option<i64>,
    options: &Options,
) -> Result<CaseResult> {
    let truth = read_label_map(reference)?;
    let predicted = read_label_map(prediction)?;
    let differences =
        geometry_differences((predicted.data.shape(), &predicted.geometry), (truth.data.shape(), &truth.geometry));
    if !differences.is_empty() {
        return Err(Error::bad_input(
            prediction,
            format!(
                "differs from the reference {} (prediction vs reference): {}",
                reference.display(),
                differences.join(", ")
            ),
        ));
    }
    // a value that dataset.json does not declare means the wrong dataset.json or a broken label map;
    // nnU-Net would silently count it as background
    let declared: Vec<i64> =
        std::iter::once(0).chain(classes.iter().flat_map(|(_, values)| values.iter().copied())).chain(ignore).collect();
    for (path, map) in [(reference, &truth), (prediction, &predicted)] {
        if let Some(value) = nntools_dataset::undeclared_labels(&map.data, &declared).first() {
            return Err(Error::bad_input(path, format!("holds label {value}, which dataset.json does not declare")));
        }
    }
    if let Some((out, images)) = &options.overlays {
        let name = reference.file_name().expect("a file").to_string_lossy();
        let (id, ending) = split_image_ending(&name).expect("references are listed by their ending");
        let image = nntools_io::read_image(&images.join(format!("{id}_0000{ending}")))?;
        write_overlay(&out.join(format!("{id}.png")), image.data.view(), truth.data.view(), predicted.data.view())?;
    }
    let metrics =
        case_metrics(truth.data.view(), predicted.data.view(), truth.geometry.spacing, classes, ignore, options);
    Ok(CaseResult { metrics, prediction_file: prediction.to_owned(), reference_file: reference.to_owned() })
}

/// Every class's metrics for one case (`spacing` in array axis order, for the surface metrics).
pub fn case_metrics(
    reference: ArrayView3<i32>,
    prediction: ArrayView3<i32>,
    spacing: [f64; 3],
    classes: &[(String, Vec<i64>)],
    ignore: Option<i64>,
    options: &Options,
) -> BTreeMap<String, ClassMetrics> {
    classes
        .iter()
        .map(|(key, labels)| {
            let mut metrics = class_metrics(reference, prediction, labels, ignore);
            if let Some(tolerance) = options.surface_tolerance {
                let mask = |image: ArrayView3<i32>| image.mapv(|v| labels.contains(&i64::from(v)));
                let (hd95, nsd) = surface_metrics(mask(reference).view(), mask(prediction).view(), spacing, tolerance);
                (metrics.hd95, metrics.nsd) = (Some(hd95), Some(nsd));
            }
            (key.clone(), metrics)
        })
        .collect()
}

/// Evaluates every reference `CASE<ending>` in `reference_dir` (dataset.json's ending) against
/// `prediction_dir/CASE<ending>`, or, where there is none, the prediction of that case in another image
/// format (nnU-Net requires one ending for both folders; reading any format is a convenience).
pub fn evaluate_folders(
    reference_dir: &Path,
    prediction_dir: &Path,
    descriptor: &Descriptor,
    options: &Options,
) -> Result<Summary> {
    let ending = &descriptor.file_ending;
    let entries = std::fs::read_dir(reference_dir).map_err(|e| Error::io(reference_dir, &e))?;
    let mut names: Vec<String> = entries
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(ending.as_str()) && !n.starts_with('.'))
        .collect();
    names.sort();
    let prediction_of =
        |name: &str| predictions::existing_label_map(prediction_dir, &name[..name.len() - ending.len()], ending);
    let mut pairs: Vec<(PathBuf, PathBuf)> = names.iter().map(|n| (reference_dir.join(n), prediction_of(n))).collect();
    if options.chill {
        pairs.retain(|(_, prediction)| prediction.is_file());
    }
    let missing: Vec<String> = pairs
        .iter()
        .filter(|(_, p)| !p.is_file())
        .map(|(reference, p)| format!("{}: no prediction for reference {}", p.display(), reference.display()))
        .collect();
    if !missing.is_empty() {
        return Err(Error::bad_input_lines(missing));
    }
    if pairs.is_empty() {
        return Err(Error::bad_input(reference_dir, format!("no reference label maps (*{ending}) with predictions")));
    }
    let classes = classes(descriptor);
    if let Some((out, _)) = &options.overlays {
        nntools_io::create_output_folder(out)?;
    }
    let cases = pairs
        .par_iter()
        .map(|(reference, prediction)| evaluate_case(reference, prediction, &classes, descriptor.ignore_label, options))
        .collect::<Result<Vec<_>>>()?;
    Ok(summarize(cases))
}

/// Writes Python's JSON for non-finite numbers (`NaN`), as nnU-Net's summary.json has them; serde_json
/// hands every non-finite float to `write_null`, and a summary has no other nulls.
struct NanAsPython(serde_json::ser::PrettyFormatter<'static>);

impl serde_json::ser::Formatter for NanAsPython {
    fn write_null<W: ?Sized + Write>(&mut self, writer: &mut W) -> std::io::Result<()> {
        writer.write_all(b"NaN")
    }
    fn begin_array<W: ?Sized + Write>(&mut self, w: &mut W) -> std::io::Result<()> {
        self.0.begin_array(w)
    }
    fn end_array<W: ?Sized + Write>(&mut self, w: &mut W) -> std::io::Result<()> {
        self.0.end_array(w)
    }
    fn begin_array_value<W: ?Sized + Write>(&mut self, w: &mut W, first: bool) -> std::io::Result<()> {
        self.0.begin_array_value(w, first)
    }
    fn end_array_value<W: ?Sized + Write>(&mut self, w: &mut W) -> std::io::Result<()> {
        self.0.end_array_value(w)
    }
    fn begin_object<W: ?Sized + Write>(&mut self, w: &mut W) -> std::io::Result<()> {
        self.0.begin_object(w)
    }
    fn end_object<W: ?Sized + Write>(&mut self, w: &mut W) -> std::io::Result<()> {
        self.0.end_object(w)
    }
    fn begin_object_key<W: ?Sized + Write>(&mut self, w: &mut W, first: bool) -> std::io::Result<()> {
        self.0.begin_object_key(w, first)
    }
    fn begin_object_value<W: ?Sized + Write>(&mut self, w: &mut W) -> std::io::Result<()> {
        self.0.begin_object_value(w)
    }
    fn end_object_value<W: ?Sized + Write>(&mut self, w: &mut W) -> std::io::Result<()> {
        self.0.end_object_value(w)
    }
}

impl Summary {
    /// The summary as JSON text, NaN written as Python writes it.
    pub fn to_json(&self) -> String {
        let mut bytes = Vec::new();
        let formatter = NanAsPython(serde_json::ser::PrettyFormatter::with_indent(b"    "));
        let mut serializer = serde_json::Serializer::with_formatter(&mut bytes, formatter);
        self.serialize(&mut serializer).expect("a summary serialises");
        bytes.push(b'\n');
        String::from_utf8(bytes).expect("JSON is UTF-8")
    }

    /// The per-class means as a table: Dice, IoU, HD95 (mm) and NSD, three decimals, `nan` where a
    /// mean is NaN or a metric was not computed.
    pub fn class_table(&self) -> String {
        let cell = |value: Option<&f64>| match value {
            Some(v) if !v.is_nan() => format!("{v:.3}"),
            _ => "nan".to_owned(),
        };
        let mut table = format!("  {:<8}{:>8}{:>8}{:>10}{:>8}\n", "class", "Dice", "IoU", "HD95 mm", "NSD");
        for (class, means) in &self.mean {
            let [dice, iou, hd95, nsd] = ["Dice", "IoU", "HD95", "NSD"].map(|name| cell(means.get(name)));
            table.push_str(&format!("  {class:<8}{dice:>8}{iou:>8}{hd95:>10}{nsd:>8}\n"));
        }
        table
    }

    /// Writes the summary to `path` (atomically), or to stdout for `-`.
    pub fn write(&self, path: &Path) -> Result<()> {
        let text = self.to_json();
        if path == Path::new("-") {
            return std::io::stdout().write_all(text.as_bytes()).map_err(|e| Error::runtime("<stdout>", e));
        }
        write_atomically(path, |tmp| std::fs::write(tmp, &text).map_err(|e| Error::io(path, &e)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    const IDENTITY: [f64; 9] = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0];

    fn case(dice: [f64; 2]) -> CaseResult {
        let metrics = |d: f64| ClassMetrics {
            dice: d,
            fn_: 0,
            fp: 0,
            hd95: None,
            iou: d,
            nsd: None,
            tn: 0,
            tp: 1,
            n_pred: 1,
            n_ref: 1,
        };
        CaseResult {
            metrics: [("1".to_owned(), metrics(dice[0])), ("2".to_owned(), metrics(dice[1]))].into(),
            prediction_file: "p".into(),
            reference_file: "r".into(),
        }
    }

    #[test]
    fn geometry_differences_name_only_what_differs_with_both_values() {
        let reference = nntools_io::Geometry { spacing: [2.0, 1.0, 1.0], origin: [0.0; 3], direction: IDENTITY };
        // within the tolerance: float32 headers round
        let close = nntools_io::Geometry { spacing: [2.000_01, 1.0, 1.0], ..reference };
        assert!(geometry_differences((&[3, 4, 5], &close), (&[3, 4, 5], &reference)).is_empty());
        let moved = nntools_io::Geometry { origin: [0.0, 0.0, 7.5], ..reference };
        assert_eq!(
            geometry_differences((&[3, 4, 5], &moved), (&[3, 4, 5], &reference)),
            ["origin [0.0, 0.0, 7.5] vs [0.0, 0.0, 0.0]"]
        );
        let other = nntools_io::Geometry {
            spacing: [3.0, 1.0, 1.0],
            direction: [-1.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 1.0],
            ..reference
        };
        assert_eq!(
            geometry_differences((&[3, 4, 6], &other), (&[3, 4, 5], &reference)),
            [
                "shape [3, 4, 6] vs [3, 4, 5]",
                "spacing [3.0, 1.0, 1.0] vs [2.0, 1.0, 1.0]",
                "direction [-1.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 1.0] vs [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]",
            ]
        );
    }

    #[test]
    fn the_class_table_has_a_row_per_class() {
        let mut summary = summarize(vec![case([0.5, f64::NAN]), case([0.25, f64::NAN])]);
        summary.mean.get_mut("2").unwrap().insert("HD95", 1.23456);
        let expected = "  class       Dice     IoU   HD95 mm     NSD\n  1          0.375   0.375       nan     nan\n  2            nan     nan     1.235     nan\n";
        assert_eq!(summary.class_table(), expected);
    }

    #[test]
    fn means_ignore_nan_per_class_and_propagate_it_across_classes() {
        let summary = summarize(vec![case([0.5, f64::NAN]), case([1.0, f64::NAN])]);
        assert_eq!(summary.mean["1"]["Dice"], 0.75);
        assert!(summary.mean["2"]["Dice"].is_nan());
        assert!(summary.foreground_mean["Dice"].is_nan());
        assert_eq!(summary.foreground_mean["TP"], 1.0);
        let summary = summarize(vec![case([0.5, 1.0]), case([1.0, f64::NAN])]);
        assert_eq!(summary.foreground_mean["Dice"], (0.75 + 1.0) / 2.0);
        let text = summary.to_json();
        assert!(text.contains("\"Dice\": NaN"), "{text}");
    }
}
