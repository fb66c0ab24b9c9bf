"""Ablation sweeps: every variant of a config file's grid, trained one after another, and a report
that compares them at equal token budget.

  python -m gptjax.sweep --config=configs/ablation.py --workdir=runs/ablation [--sweep=default]
  python -m gptjax.sweep --config=configs/ablation.py --workdir=runs/ablation --report_only
  python -m gptjax.sweep --config=configs/ablation.py --workdir=runs/mine \\
      --variant=mlp=swiglu,seed=0 --variant=mlp=swiglu,seed=1 --config.train.steps=600
  python -m gptjax.sweep --config=configs/small.py --workdir=runs/norms --seeds=3 \\
      --grid=model.norm=layernorm,rmsnorm --grid=model.position=learned,rope

Any config file, any field: --grid=KEY=V1,V2 axes multiply, --zip axes advance together,
--tune=KEY=LO:HI:N trains every arm at N log-spaced values and reports each at its own best
(gptjax.sweep.tuned), --ladder=KEY=V1,V2 axes make a scaling ladder whose rungs train on
--tokens_per_param tokens per parameter, fitted per arm (gptjax.sweep.ladder), and --seeds=N runs
every arm with seeds 0..N-1 (gptjax.sweep.grid); on a sweep config the axes multiply its named
variants. Every run's config is checked before the first one starts. --parallel=N trains N runs
at once, each on its own share of the CPU cores (gptjax.sweep.parallel).

For named sweeps (--sweep, --variant) the runner knows nothing of any one ablation; a sweep config
file tells it what it needs:
  get_config(variant, overrides=None)  required: one run's ConfigDict; `--config.KEY=VALUE`
                                       flags become `overrides` ({'train.steps': 600}), applied
                                       to every run alike.
  SWEEPS = {name: [variant, ...]}      required: the grids that --sweep names.
  TUNE = {name: 'KEY=LO:HI:N'}         optional: the field a named sweep tunes per arm, as
                                       --tune would (--tune replaces it).
  variant_label(variant) -> str        optional: the variant's canonical name without its seed,
                                       which groups seeds (default: the variant less its seed=
                                       items, or 'baseline').
  factors(config) -> {name: value}     optional: what tells the runs apart, one JSON scalar per
                                       name, in column order, for the baseline too: the report's
                                       per-run columns and the final-loss-by-factor plot (default:
                                       the config keys whose values differ between the runs, the
                                       seed aside).

WORKDIR holds
  sweep.json                 the planned runs in order, so a report also shows what is pending
  <slug>/config.json         the run's exact config (the checkpoints carry it too)
  <slug>/status.json         {'status': 'running'|'done'|'diverged'|'failed'|'interrupted',
                              'reason': ..., 'seconds': ..., 'factors': {...}, ...}
  <slug>/metrics.jsonl, checkpoints/, tensorboard/: the trainer's
  <slug>/train.log           a --parallel run's own output
  runs.csv, results.csv, results.md, val_loss_curves.png, final_loss_by_factor.png: the report,
  and tuned.png (--tune: each arm's final loss at every value), scaling.png (--ladder: the fits)
Rerunning the command skips finished runs (a checkpoint at train.steps) and diverged ones
(training is deterministic: they would diverge again), resumes interrupted ones and retries failed
ones. The report reads only these files, so `--report_only` works at any time, also while the
sweep runs.

Modules: plan (what runs), grid (runs from --grid/--zip/--ladder/--tune), run (running and
resuming), parallel and worker (--parallel), report (records, summary, CSV and Markdown), stats
(intervals, Welch's test), tuned (each arm at its best --tune value), scaling (power-law fits,
compute multipliers), ladder (the report's scaling section), plots (the PNGs), __main__ (the
command line). The functions `plan` and
`report` re-exported here shadow their modules as attributes of this package: import from the
modules by their full names (`from gptjax.sweep.report import load_run`).
"""

from gptjax.sweep.grid import GridSweep
from gptjax.sweep.plan import (PlannedRun, as_json, flatten, load_sweep_module, plan, slugify,
                               sweep_variants)
from gptjax.sweep.report import load_run, read_status, report, summarize
from gptjax.sweep.run import run_sweep

__all__ = [
    'GridSweep', 'PlannedRun', 'as_json', 'flatten', 'load_run', 'load_sweep_module', 'plan',
    'read_status', 'report', 'run_sweep', 'slugify', 'summarize', 'sweep_variants'
]
