"""The keys ``train.py`` accepts, without importing torch or Lightning.

``train.py`` checks config files and ``--trainer.*``/``--model.*`` options against these lists
before it loads torch (~10 s), so a typo answers at once. They mirror the signatures of
``pl.Trainer.__init__`` and ``DiffusionModule.__init__`` and LightningCLI's top-level options;
``tests/unit/test_train_cli.py`` compares them, so they cannot fall behind.
"""

from __future__ import annotations

TOP_LEVEL_KEYS = ("seed_everything", "trainer", "model", "data", "optimizer", "lr_scheduler", "ckpt_path")
"""The sections a config file may hold."""

TOP_LEVEL_OPTIONS = (*TOP_LEVEL_KEYS, "config", "print_config", "help")
"""``--NAME`` (or ``--NAME.sub``) options of the command line."""

TRAINER_KEYS = (
    "accelerator", "strategy", "devices", "num_nodes", "precision", "logger", "callbacks", "fast_dev_run",
    "max_epochs", "min_epochs", "max_steps", "min_steps", "max_time", "limit_train_batches",
    "limit_val_batches", "limit_test_batches", "limit_predict_batches", "overfit_batches",
    "val_check_interval", "check_val_every_n_epoch", "num_sanity_val_steps", "log_every_n_steps",
    "enable_checkpointing", "enable_progress_bar", "enable_model_summary", "accumulate_grad_batches",
    "gradient_clip_val", "gradient_clip_algorithm", "deterministic", "benchmark", "inference_mode",
    "use_distributed_sampler", "profiler", "detect_anomaly", "barebones", "plugins", "sync_batchnorm",
    "reload_dataloaders_every_n_epochs", "default_root_dir", "enable_autolog_hparams", "model_registry",
)
"""``pl.Trainer.__init__``'s arguments: the keys of a config's ``trainer:`` section."""

MODEL_KEYS = (
    "backbone", "loss", "prediction", "logsnr_loc", "logsnr_scale", "logsnr_clip", "cond_dropout",
    "word_dropout", "stable_target", "ema_decay", "lr", "weight_decay", "betas", "warmup_steps",
    "min_lr_ratio", "compile", "init_from",
)
"""``DiffusionModule.__init__``'s arguments: the keys of a config's ``model:`` section."""

SECTION_KEYS = {"trainer": TRAINER_KEYS, "model": MODEL_KEYS}
