"""Names of what a study stores in Optuna, shared by the search and reporting layers.

Study user attrs: the validated study YAML, the MLflow parent run and tracking URI.
Trial user attrs: everything a report needs without MLflow.
"""

# study.user_attrs
STUDY_CONFIG = "study_config"  # dict: the validated study YAML
PARENT_RUN_ID = "mlflow_parent_run_id"  # str
TRACKING_URI = "mlflow_tracking_uri"  # str, password redacted
BASE_CONFIG = "base_config"  # dict: the resolved base training config (base + overrides + budget)

# trial.user_attrs
SEED = "seed"  # int: the trial's training seed (repeats share params, differ in seed)
REPEAT = "repeat"  # int: 0..repeats-1
CONFIG = "config"  # dict: the full resolved training config of the trial
CONFIG_HASH = "config_hash"  # str: Config.hash() (seed excluded): repeats share it
RUN_DIR = "run_dir"  # str: the trial's run directory
FAIL_REASON = "fail_reason"  # str: why a trial failed or was pruned
BEST_EPOCH = "best_epoch"  # int
VAL_PSNR_BEST = "val_psnr_best"  # float: best validation PSNR over epochs (mean of samples)
VAL_PSNR_FINAL = "val_psnr_final"  # float: validation PSNR at the last evaluated epoch
VAL_SSIM_BEST = "val_ssim_best"  # float: SSIM at the best-PSNR epoch
BASELINE_PSNR = "baseline_psnr"  # float: copy-last-context-frame PSNR on the same sequences
FRAME_PSNR = "frame_psnr"  # list[float]: per-frame PSNR of the best evaluation
TRAIN_SECONDS = "train_seconds"  # float: wall time of fit()
MLFLOW_RUN_ID = "mlflow_run_id"  # str
WORKER = "worker"  # str: host:pid of the worker that ran it
DEVICE = "device"  # str
RETRY_OF = "retry_of"  # int | None: the trial this one re-runs (its worker died or was interrupted)
SKOPT_POINT = "skopt_point"  # list: the full scikit-optimize point (sampler skopt), replayed on restart
# Per-epoch validation PSNR is the trial's intermediate values (trial.report), so learning
# curves need no MLflow; KL-weight and teacher-forcing curves follow from CONFIG through
# the pure schedules in vpsearch.training.schedules.
