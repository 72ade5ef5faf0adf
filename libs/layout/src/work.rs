//! The pipeline's work folder, as scripts/nnunet.sh, scripts/Makefile and the Slurm script lay it out.
