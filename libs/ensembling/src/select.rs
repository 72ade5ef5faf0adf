//! Choosing what to predict with (`nnunetv2/evaluation/find_best_configuration.py: find_best_configuration`, then
//! `nnunetv2/postprocessing/remove_connected_components.py: determine_postprocessing`): every trained configuration
//! and every pair of them scored by the foreground-mean Dice of their cross-validation predictions, the best one
//! kept, then postprocessing steps kept where they strictly improve that score.

use crate::components::Step;
use ndarray::{Array3, Array4};
use nntools_dataset::{Descriptor, Labelling};
use nntools_evaluation::{CaseResult, Options, Summary, case_metrics, classes, summarize};
use nntools_io::{Error, Result, read_json, read_label_map, read_npz, write_json};
use nntools_layout::predictions;
use nntools_layout::run::{Fold, RunDir};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// What `nn-ensemble select` is asked.
pub struct SelectRequest {
    /// Run folders as nn-train writes them (`plans.json`, `dataset.json`, `fold_F/validation/`).
    pub runs: Vec<PathBuf>,
    /// Reference label maps (`labelsTr`).
    pub reference: PathBuf,
    pub folds: Vec<usize>,
    pub output: PathBuf,
}

/// One model of the chosen prediction.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Model {
    pub run: PathBuf,
    pub configuration: String,
    /// For a cascade stage: the run of its previous stage, whose predictions are its input.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_stage: Option<PathBuf>,
}

/// A candidate's cross-validation score.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Score {
    pub configurations: Vec<String>,
    pub foreground_dice: f64,
}

/// `inference_plan.json`: what to predict with and how to postprocess, and why.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct InferencePlan {
    pub models: Vec<Model>,
    pub folds: Vec<usize>,
    pub postprocessing: Vec<Step>,
    pub cross_validation: Vec<Score>,
    pub foreground_dice_before_postprocessing: f64,
    pub foreground_dice_after_postprocessing: f64,
    /// Per class mean Dice after postprocessing.
    pub class_dice_after_postprocessing: std::collections::BTreeMap<String, f64>,
    /// Shell commands that apply the plan to a folder of images.
    pub commands: Vec<String>,
}

/// A trained run with its cross-validation cases.
struct Run {
    dir: PathBuf,
    configuration: String,
    /// The configuration whose predictions a cascade stage takes as input.
    previous_stage: Option<String>,
    /// (case, validation folder holding it)
    cases: Vec<(String, PathBuf)>,
}

fn open_run(dir: &Path, folds: &[usize], problems: &mut Vec<String>) -> Result<Run> {
    let mut configuration = None;
    let mut cases = Vec::new();
    let run = RunDir::new(dir);
    for &fold in folds {
        let fold_dir = run.fold(Fold::Index(fold));
        let settings: Option<serde_json::Value> = read_json(&fold_dir.settings()).ok();
        if let Some(name) = settings.as_ref().and_then(|s| s["configuration"].as_str()) {
            configuration.get_or_insert_with(|| name.to_owned());
        }
        let val_cases: Vec<String> =
            settings.as_ref().and_then(|s| serde_json::from_value(s["val_cases"].clone()).ok()).unwrap_or_default();
        let validation = fold_dir.validation();
        let complete =
            !val_cases.is_empty() && val_cases.iter().all(|c| predictions::probabilities(&validation, c).is_file());
        if !complete {
            let config = configuration.clone().unwrap_or_else(|| "CONFIG".into());
            problems.push(format!(
                "{}: validation probabilities missing; make them with: nn-train --plans {} -c {config} --data PREPROCESSED_DIR --dataset {} --fold {fold} -o {} --validate-only",
                validation.display(), run.plans().display(), run.dataset_json().display(), dir.display()
            ));
            continue;
        }
        cases.extend(val_cases.into_iter().map(|c| (c, validation.clone())));
    }
    cases.sort();
    if let Some(pair) = cases.windows(2).find(|p| p[0].0 == p[1].0) {
        return Err(Error::bad_input(dir, format!("case {} is validated in two folds", pair[0].0)));
    }
    let configuration =
        configuration.unwrap_or_else(|| dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default());
    let plans: serde_json::Value = read_json(&run.plans())?;
    let previous_stage = plans["configurations"][&configuration]["previous_stage"].as_str().map(str::to_owned);
    Ok(Run { dir: dir.to_owned(), configuration, previous_stage, cases })
}

/// The run of a cascade stage's previous stage, which must be among the runs, since predicting with the
/// stage needs its predictions first.
fn previous_stage_run(run: &Run, runs: &[Run]) -> Result<Option<PathBuf>> {
    let Some(name) = &run.previous_stage else { return Ok(None) };
    match runs.iter().find(|r| &r.configuration == name) {
        Some(previous) => Ok(Some(previous.dir.clone())),
        None => Err(Error::bad_input(
            &run.dir,
            format!("{} predicts from {name}'s predictions: give its {name} run to --runs too", run.configuration),
        )),
    }
}

/// Candidates: each run alone, then every pair, in itertools.combinations order.
fn candidates(runs: usize) -> Vec<Vec<usize>> {
    let mut all: Vec<Vec<usize>> = (0..runs).map(|i| vec![i]).collect();
    all.extend((0..runs).flat_map(|i| (i + 1..runs).map(move |j| vec![i, j])));
    all
}

/// Everything evaluating a candidate on one case needs.
struct Context<'a> {
    runs: &'a [Run],
    reference: &'a Path,
    descriptor: &'a Descriptor,
    labelling: Labelling,
    classes: Vec<(String, Vec<i64>)>,
}

impl Context<'_> {
    /// The candidate's labels for case `index`: a run's own label map, or the argmax of the averaged
    /// probabilities of several runs.
    fn labels(&self, candidate: &[usize], index: usize) -> Result<Array3<u16>> {
        let ending = &self.descriptor.file_ending;
        if let [only] = candidate {
            let (id, folder) = &self.runs[*only].cases[index];
            let image = read_label_map(&predictions::label_map(folder, id, ending))?;
            return Ok(image.data.mapv(|l| l.max(0) as u16));
        }
        let mut sum: Option<Array4<f32>> = None;
        for &r in candidate {
            let (id, folder) = &self.runs[r].cases[index];
            let probabilities: Array4<f32> = read_npz(&predictions::probabilities(folder, id), "probabilities")?;
            sum = Some(match sum {
                None => probabilities,
                Some(total) => total + probabilities,
            });
        }
        let mean = sum.expect("a pair") / candidate.len() as f32;
        Ok(self.labelling.labels(mean.view()))
    }

    /// Summary of `candidate` over all cases, after `steps`.
    fn summary(&self, candidate: &[usize], steps: &[Step]) -> Result<Summary> {
        let ending = &self.descriptor.file_ending;
        let cases = (0..self.runs[0].cases.len())
            .into_par_iter()
            .map(|index| {
                let id = &self.runs[0].cases[index].0;
                let reference_path = self.reference.join(format!("{id}{ending}"));
                let reference = read_label_map(&reference_path)?;
                let mut labels = self.labels(candidate, index)?;
                if labels.shape() != reference.data.shape() {
                    return Err(Error::bad_input(
                        &reference_path,
                        format!("shape differs from the prediction's {:?}", labels.shape()),
                    ));
                }
                for step in steps {
                    step.apply(&mut labels);
                }
                let prediction = labels.mapv(i32::from);
                let metrics = case_metrics(
                    reference.data.view(),
                    prediction.view(),
                    reference.geometry.spacing,
                    &self.classes,
                    self.descriptor.ignore_label,
                    &Options::default(),
                );
                Ok(CaseResult { metrics, prediction_file: PathBuf::from(id), reference_file: reference_path })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(summarize(cases))
    }
}

fn foreground_dice(summary: &Summary) -> f64 {
    summary.foreground_mean.get("Dice").copied().unwrap_or(f64::NAN)
}

fn class_dice(summary: &Summary, class: &str) -> f64 {
    summary.mean.get(class).and_then(|m| m.get("Dice")).copied().unwrap_or(f64::NAN)
}

/// Runs the selection and writes `inference_plan.json`.
pub fn select(request: &SelectRequest) -> Result<InferencePlan> {
    let mut problems = Vec::new();
    let runs =
        request.runs.iter().map(|dir| open_run(dir, &request.folds, &mut problems)).collect::<Result<Vec<_>>>()?;
    if !problems.is_empty() {
        return Err(Error::bad_input_lines(problems));
    }
    let previous_stages = runs.iter().map(|run| previous_stage_run(run, &runs)).collect::<Result<Vec<_>>>()?;
    let dataset_json = RunDir::new(&runs[0].dir).dataset_json();
    let descriptor = Descriptor::read(&dataset_json)?;
    for run in &runs[1..] {
        let ids = |r: &Run| r.cases.iter().map(|(id, _)| id.clone()).collect::<Vec<_>>();
        if ids(run) != ids(&runs[0]) {
            return Err(Error::bad_input(
                &run.dir,
                format!("its cross-validation cases differ from {}'s", runs[0].dir.display()),
            ));
        }
    }
    let context = Context {
        runs: &runs,
        reference: &request.reference,
        descriptor: &descriptor,
        labelling: Labelling::of(&descriptor).map_err(|p| Error::bad_input(&dataset_json, p))?,
        classes: classes(&descriptor),
    };
    let names = |candidate: &[usize]| candidate.iter().map(|&r| runs[r].configuration.clone()).collect::<Vec<_>>();
    let mut scores = Vec::new();
    let mut best: Option<(Vec<usize>, Summary)> = None;
    for candidate in candidates(runs.len()) {
        let summary = context.summary(&candidate, &[])?;
        let dice = foreground_dice(&summary);
        scores.push(Score { configurations: names(&candidate), foreground_dice: dice });
        // the first of equal scores wins
        if best.as_ref().is_none_or(|(_, b)| dice > foreground_dice(b)) {
            best = Some((candidate, summary));
        }
    }
    let (chosen, baseline) = best.expect("at least one run");
    let (steps, after) = determine_postprocessing(&context, &chosen, baseline.clone())?;
    let models: Vec<Model> = chosen
        .iter()
        .map(|&r| Model {
            run: runs[r].dir.clone(),
            configuration: runs[r].configuration.clone(),
            previous_stage: previous_stages[r].clone(),
        })
        .collect();
    let plan = InferencePlan {
        commands: commands(&request.output),
        models,
        folds: request.folds.clone(),
        postprocessing: steps,
        cross_validation: scores,
        foreground_dice_before_postprocessing: foreground_dice(&baseline),
        foreground_dice_after_postprocessing: foreground_dice(&after),
        class_dice_after_postprocessing: after.mean.keys().map(|k| (k.clone(), class_dice(&after, k))).collect(),
    };
    write_json(&request.output, &plan)?;
    Ok(plan)
}

/// nnU-Net's rule: the whole foreground's largest component, kept if the foreground-mean Dice strictly
/// improves and no class gets worse; then, with several classes, each class's largest component, kept
/// if that class's Dice strictly improves.
fn determine_postprocessing(context: &Context, candidate: &[usize], baseline: Summary) -> Result<(Vec<Step>, Summary)> {
    let mut steps = Vec::new();
    let mut current = baseline;
    let foreground = context.descriptor.foreground_labels();
    let whole = Step { keep_largest_component_of: foreground };
    let trial = context.summary(candidate, std::slice::from_ref(&whole))?;
    let no_class_worse = current
        .mean
        .keys()
        .all(|k| class_dice(&trial, k) >= class_dice(&current, k) || class_dice(&current, k).is_nan());
    if foreground_dice(&trial) > foreground_dice(&current) && no_class_worse {
        steps.push(whole);
        current = trial;
    }
    if context.classes.len() > 1 {
        for (key, labels) in &context.classes {
            let step = Step { keep_largest_component_of: labels.clone() };
            let mut trial_steps = steps.clone();
            trial_steps.push(step.clone());
            let trial = context.summary(candidate, &trial_steps)?;
            if class_dice(&trial, key) > class_dice(&current, key) {
                steps = trial_steps;
                current = trial;
            }
        }
    }
    Ok((steps, current))
}

/// The commands that apply a plan to `IMAGES`, writing `PREDICTIONS`.
fn commands(plan: &Path) -> Vec<String> {
    vec![
        format!("nn-infer --plan {} -i IMAGES -o PREDICTIONS_RAW", plan.display()),
        format!("nn-ensemble postprocess -i PREDICTIONS_RAW -o PREDICTIONS --plan {}", plan.display()),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn candidates_are_singles_then_pairs() {
        assert_eq!(candidates(3), [vec![0], vec![1], vec![2], vec![0, 1], vec![0, 2], vec![1, 2]]);
        assert_eq!(candidates(1), [vec![0]]);
    }
}
