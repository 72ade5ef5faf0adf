//! The pipeline's stage rules, once: for the plans' configurations (or a requested subset) and folds,
//! which preprocessed folder each configuration trains on and which configuration nn-resample makes it
//! with, its run folder, the extra nn-train arguments of nnU-Net's cascade, the configurations it
//! needs and the next-stage marks it writes or waits for. scripts/nnunet.sh, scripts/Makefile and the
//! Slurm script read them from `nn-plan stages` and hold no such rule of their own.
//!
//! The cascade follows the plans' `previous_stage`/`next_stage` rather than configuration names:
//! a configuration with a `next_stage` writes its validation cases' labels for that stage
//! (nnunetv2/training/nnUNetTrainer/nnUNetTrainer.py: `perform_actual_validation`, into
//! `predicted_next_stage/NEXT`), and a configuration with a `previous_stage` trains on them
//! (`nnUNetTrainer.__init__`: `folder_with_segs_from_previous_stage`).

use crate::plans::Plans;
use nntools_io::Error;
use nntools_layout::run::{Checkpoint, Fold, next_stage_mark};
use nntools_layout::work::Work;
use serde::Serialize;
use serde_json::Value;
use std::path::{Path, PathBuf};

/// nnU-Net's cross-validation folds (nnunetv2/training/nnUNetTrainer/nnUNetTrainer.py: `do_split`, a
/// 5-fold KFold). A configuration with a previous stage trains on every case's prediction by that
/// stage, which only the validation of all of its folds covers.
pub const CROSS_VALIDATION_FOLDS: usize = 5;

/// What to lay out: the plans, the work folder, the configurations asked for and the folds.
pub struct StageRequest<'a> {
    pub plans: &'a Plans,
    /// The plans' file, named by errors about the plans.
    pub plans_path: &'a Path,
    pub work: &'a Work,
    /// The configurations asked for (`--configs`, any order), or `None` for every configuration the
    /// plans have.
    pub configurations: Option<&'a [String]>,
    pub folds: &'a [usize],
}

/// The stages to run, each after the stages it needs, and the configurations left out.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Stages {
    pub stages: Vec<Stage>,
    pub skipped: Vec<Skipped>,
}

/// One configuration's training, with what it trains on and what it writes for a next stage.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Stage {
    pub configuration: String,
    /// The configuration nn-resample makes `data` with (`nn-resample -c`).
    pub data_configuration: String,
    /// The preprocessed folder it trains on (`nn-train --data`).
    pub data: PathBuf,
    /// `data`'s manifest, written last by nn-resample.
    pub manifest: PathBuf,
    /// Its run folder (`nn-train -o`).
    pub run: PathBuf,
    /// nn-train's arguments beyond plans, configuration, data, dataset, fold and run folder.
    pub train_args: Vec<String>,
    /// The configurations whose folds it needs trained first.
    pub needs: Vec<Need>,
    /// The configuration its folds' validation writes labels for, when that configuration runs too.
    pub next_stage: Option<NextStage>,
    pub folds: Vec<FoldStage>,
}

impl Stage {
    /// The marks of every stage this one needs: its folds' inputs beside its preprocessed data.
    pub fn needed_marks(&self) -> impl Iterator<Item = &Path> {
        self.needs.iter().flat_map(|need| need.marks.iter().map(PathBuf::as_path))
    }
}

/// A configuration another one needs.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Need {
    pub configuration: String,
    /// Whether it needs all of that configuration's cross-validation folds, not the same folds.
    pub all_folds: bool,
    /// The files that say those folds are done for it (next-stage marks): its folds' inputs.
    pub marks: Vec<PathBuf>,
}

/// The next stage a configuration's validation writes labels for.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NextStage {
    pub configuration: String,
    /// The next stage's preprocessed data's manifest: the labels are written on that grid, and a fold
    /// validated before it existed or changed is validated again (`nn-train --validate-only`).
    pub data_manifest: PathBuf,
    /// The folder the labels go to.
    pub output: PathBuf,
}

/// One fold of a stage.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FoldStage {
    pub fold: usize,
    /// The final checkpoint's sidecar, written last by nn-train: the fold is trained.
    #[serde(rename = "final")]
    pub final_checkpoint: PathBuf,
    /// The fold's validation predictions.
    pub validation: PathBuf,
    /// The mark of the fold's labels for the next stage, when it writes them.
    pub next_stage_mark: Option<PathBuf>,
}

/// A configuration left out because what it needs does not run, when it was not asked for by name.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Skipped {
    pub configuration: String,
    #[serde(rename = "skipped")]
    pub reason: String,
}

/// The stages of `request`. A configuration asked for by name whose previous stage is not asked for,
/// or whose previous stage cannot cover every case with these folds, is a bad input; when every
/// configuration runs by default it is left out with the reason in [`Stages::skipped`].
pub fn stages(request: &StageRequest) -> Result<Stages, Error> {
    let StageRequest { plans, plans_path, work, configurations: requested, folds } = *request;
    let bad_plans = |problem: String| Error::bad_input(plans_path, problem);
    let names = plans.configuration_names();
    if let Some(unknown) = requested.into_iter().flatten().find(|name| !names.contains(name)) {
        return Err(bad_plans(format!("no configuration {unknown} (plans have: {})", names.join(", "))));
    }
    let mut candidates = Vec::new();
    for name in names.iter().filter(|name| requested.is_none_or(|requested| requested.contains(name))) {
        candidates.push((previous_stages(plans, name).map_err(&bad_plans)?, name));
    }
    // a previous stage trains first, whatever order the plans list them in
    candidates.sort_by_key(|(previous, _)| previous.len());

    let every_fold = {
        let mut sorted = folds.to_vec();
        sorted.sort_unstable();
        sorted.dedup();
        sorted == (0..CROSS_VALIDATION_FOLDS).collect::<Vec<_>>()
    };
    let mut chosen: Vec<&String> = Vec::new();
    let mut skipped = Vec::new();
    for (previous, name) in candidates {
        let reason = match previous.first() {
            Some(previous) if !chosen.contains(&previous) => Some(format!("it needs {previous}")),
            Some(previous) if !every_fold => Some(format!(
                "it trains on every case's {previous} prediction, which needs --folds 0-{}",
                CROSS_VALIDATION_FOLDS - 1
            )),
            _ => None,
        };
        match reason {
            None => chosen.push(name),
            Some(reason) if requested.is_some() => {
                return Err(Error::bad_input("--configs", format!("{name}: {reason}")));
            }
            Some(reason) => skipped.push(Skipped { configuration: name.clone(), reason }),
        }
    }

    let mut stages = Vec::new();
    for &name in &chosen {
        let configuration = plans.configuration(name).map_err(&bad_plans)?;
        let data_of = data_configuration(plans, name);
        let data = work.preprocessed(&data_of);
        let run = work.run(name);
        let mut train_args = Vec::new();
        let mut needs = Vec::new();
        if let Some(previous) = &configuration.previous_stage {
            let labels = work.run(previous).next_stage_output(name);
            train_args.extend(["--prev-stage".to_owned(), labels.display().to_string()]);
            let marks = (0..CROSS_VALIDATION_FOLDS).map(|fold| next_stage_mark(&labels, fold)).collect();
            needs.push(Need { configuration: previous.clone(), all_folds: true, marks });
        }
        let next_stage = configuration.next_stage.filter(|next| chosen.contains(&next)).map(|next| {
            let next_data = work.preprocessed(&data_configuration(plans, &next));
            train_args.extend(["--next-stage-data".to_owned(), next_data.path().display().to_string()]);
            NextStage { output: run.next_stage_output(&next), configuration: next, data_manifest: next_data.manifest() }
        });
        let folds = folds
            .iter()
            .map(|&fold| {
                let fold_dir = run.fold(Fold::Index(fold));
                FoldStage {
                    fold,
                    final_checkpoint: fold_dir.sidecar(Checkpoint::Final),
                    validation: fold_dir.validation(),
                    next_stage_mark: next_stage.as_ref().map(|next| next_stage_mark(&next.output, fold)),
                }
            })
            .collect();
        stages.push(Stage {
            configuration: name.clone(),
            data_configuration: data_of,
            manifest: data.manifest(),
            data: data.path().to_owned(),
            run: run.path().to_owned(),
            train_args,
            needs,
            next_stage,
            folds,
        });
    }
    Ok(Stages { stages, skipped })
}

/// The chain of previous stages of `name`, nearest first, each checked to name `name`'s chain as its
/// next stage (so that its validation writes what the later stage trains on).
fn previous_stages(plans: &Plans, name: &str) -> Result<Vec<String>, String> {
    let mut chain: Vec<String> = Vec::new();
    let mut current = name.to_owned();
    while let Some(previous) = plans.configuration(&current)?.previous_stage {
        if chain.contains(&previous) || previous == name {
            return Err(format!("configuration {name}: previous_stage loops through {previous}"));
        }
        if plans.configuration(&previous)?.next_stage.as_deref() != Some(current.as_str()) {
            return Err(format!(
                "configuration {current} has previous_stage {previous}, whose next_stage is not {current}"
            ));
        }
        chain.push(previous.clone());
        current = previous;
    }
    Ok(chain)
}

/// The configuration whose preprocessed data `name` trains on: its own, except that a later stage of
/// the cascade trains on the data of the configuration it inherits from, as in nnU-Net, where
/// `3d_cascade_fullres` inherits 3d_fullres's `data_identifier` and nnUNetv2_preprocess makes no folder
/// of its own for it (nnunetv2/experiment_planning/experiment_planners/default_experiment_planner.py:
/// `plan_experiment`).
fn data_configuration(plans: &Plans, name: &str) -> String {
    let configuration = plans.configurations.get(name);
    let has_previous_stage = configuration.is_some_and(|c| c.get("previous_stage").is_some());
    let parent = configuration.and_then(|c| c.get("inherits_from")).and_then(Value::as_str);
    match parent {
        Some(parent) if has_previous_stage => parent.to_owned(),
        _ => name.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cascade_plans() -> Plans {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../tests/fixtures/nnunet_plans/ct_lowres_cascade/nnUNetPlans.json"
        );
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
    }

    fn stages_of(plans: &Plans, configurations: Option<&[&str]>, folds: &[usize]) -> Result<Stages, Error> {
        let configurations: Option<Vec<String>> =
            configurations.map(|names| names.iter().map(|&n| n.to_owned()).collect());
        stages(&StageRequest {
            plans,
            plans_path: Path::new("w/plans.json"),
            work: &Work::new("w"),
            configurations: configurations.as_deref(),
            folds,
        })
    }

    fn names(stages: &Stages) -> Vec<&str> {
        stages.stages.iter().map(|s| s.configuration.as_str()).collect()
    }

    const ALL_FOLDS: [usize; 5] = [0, 1, 2, 3, 4];

    #[test]
    fn every_configuration_with_all_folds_includes_the_cascade() {
        let plans = cascade_plans();
        let stages = stages_of(&plans, None, &ALL_FOLDS).unwrap();
        assert_eq!(names(&stages), ["2d", "3d_lowres", "3d_fullres", "3d_cascade_fullres"]);
        assert!(stages.skipped.is_empty());

        let lowres = &stages.stages[1];
        assert_eq!(lowres.data, Path::new("w/preprocessed/3d_lowres"));
        assert_eq!(lowres.train_args, ["--next-stage-data", "w/preprocessed/3d_fullres"]);
        let next = lowres.next_stage.as_ref().unwrap();
        assert_eq!(next.configuration, "3d_cascade_fullres");
        assert_eq!(next.data_manifest, Path::new("w/preprocessed/3d_fullres/manifest.json"));
        assert_eq!(
            lowres.folds[3].next_stage_mark.as_deref(),
            Some(Path::new("w/runs/3d_lowres/predicted_next_stage/3d_cascade_fullres/fold_3.json"))
        );
        assert_eq!(lowres.folds[3].final_checkpoint, Path::new("w/runs/3d_lowres/fold_3/checkpoint_final.json"));

        let cascade = &stages.stages[3];
        assert_eq!(cascade.data_configuration, "3d_fullres");
        assert_eq!(cascade.data, Path::new("w/preprocessed/3d_fullres"));
        assert_eq!(cascade.manifest, Path::new("w/preprocessed/3d_fullres/manifest.json"));
        assert_eq!(cascade.run, Path::new("w/runs/3d_cascade_fullres"));
        assert_eq!(cascade.train_args, ["--prev-stage", "w/runs/3d_lowres/predicted_next_stage/3d_cascade_fullres"]);
        assert_eq!(cascade.needs.len(), 1);
        assert_eq!(cascade.needs[0].configuration, "3d_lowres");
        assert!(cascade.needs[0].all_folds);
        assert_eq!(cascade.needs[0].marks.len(), 5);
        assert_eq!(cascade.needs[0].marks[4], lowres.folds[4].next_stage_mark.clone().unwrap());
        assert!(cascade.next_stage.is_none());

        for plain in [&stages.stages[0], &stages.stages[2]] {
            assert!(plain.train_args.is_empty() && plain.needs.is_empty() && plain.next_stage.is_none());
            assert_eq!(plain.data_configuration, plain.configuration);
        }
    }

    #[test]
    fn the_cascade_without_all_folds_is_skipped_unless_asked_for() {
        let plans = cascade_plans();
        let stages = stages_of(&plans, None, &[0, 1]).unwrap();
        assert_eq!(names(&stages), ["2d", "3d_lowres", "3d_fullres"]);
        assert_eq!(stages.skipped.len(), 1);
        assert_eq!(stages.skipped[0].configuration, "3d_cascade_fullres");
        assert!(stages.skipped[0].reason.contains("--folds 0-4"), "{}", stages.skipped[0].reason);
        // without the cascade, lowres writes nothing for it
        assert!(stages.stages[1].train_args.is_empty() && stages.stages[1].next_stage.is_none());
        assert_eq!(stages.stages[1].folds.iter().map(|f| f.fold).collect::<Vec<_>>(), [0, 1]);

        let error = stages_of(&plans, Some(&["3d_lowres", "3d_cascade_fullres"]), &[0, 1]).unwrap_err();
        assert_eq!(error.exit_code(), 2);
        assert!(error.message.starts_with("--configs: 3d_cascade_fullres: it trains on"), "{}", error.message);
    }

    #[test]
    fn a_requested_subset_runs_in_the_plans_order_and_needs_its_previous_stage() {
        let plans = cascade_plans();
        let stages = stages_of(&plans, Some(&["3d_cascade_fullres", "3d_lowres"]), &ALL_FOLDS).unwrap();
        assert_eq!(names(&stages), ["3d_lowres", "3d_cascade_fullres"]);
        let error = stages_of(&plans, Some(&["3d_cascade_fullres"]), &ALL_FOLDS).unwrap_err();
        assert_eq!(error.message, "--configs: 3d_cascade_fullres: it needs 3d_lowres");
        let error = stages_of(&plans, Some(&["3d_midres"]), &ALL_FOLDS).unwrap_err();
        assert!(error.message.starts_with("w/plans.json: no configuration 3d_midres"), "{}", error.message);
        // lowres alone: plain training, no labels for a cascade that does not run
        let stages = stages_of(&plans, Some(&["3d_lowres"]), &[0]).unwrap();
        assert!(stages.stages[0].train_args.is_empty());
    }

    #[test]
    fn the_cascade_follows_the_plans_not_the_names() {
        let mut plans = cascade_plans();
        // a plans file listing the later stage first, under other names
        let mut renamed = indexmap::IndexMap::new();
        for (name, mut value) in plans.configurations.clone().into_iter().rev() {
            let rename = |n: &str| n.replace("3d_lowres", "coarse").replace("3d_cascade_fullres", "fine");
            for key in ["next_stage", "previous_stage"] {
                if let Some(Value::String(s)) = value.get_mut(key) {
                    *s = rename(s);
                }
            }
            renamed.insert(rename(&name), value);
        }
        plans.configurations = renamed;
        let stages = stages_of(&plans, Some(&["fine", "coarse"]), &ALL_FOLDS).unwrap();
        assert_eq!(names(&stages), ["coarse", "fine"]);
        assert_eq!(stages.stages[1].train_args, ["--prev-stage", "w/runs/coarse/predicted_next_stage/fine"]);
        assert_eq!(stages.stages[0].train_args, ["--next-stage-data", "w/preprocessed/3d_fullres"]);

        // a previous stage that does not name this one as its next stage is a bad plans file
        plans.configurations["coarse"].as_object_mut().unwrap().remove("next_stage");
        let error = stages_of(&plans, None, &ALL_FOLDS).unwrap_err();
        assert_eq!(error.exit_code(), 2);
        assert!(
            error.message.starts_with("w/plans.json: configuration fine has previous_stage coarse"),
            "{}",
            error.message
        );
    }
}
