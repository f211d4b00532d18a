# %% [markdown]
# # 12 · Reproducing a table of the paper
#
# `minirattn reproduce TABLE` runs one of the paper's experiments as a grid of training runs over
# seeds and tests each of the paper's orderings over those seeds. Here Table 4 (soft mask against
# local convolutions) runs at a *tiny* scale, seconds a run, so that the whole path (the grid, the
# runs, the JSON, the statistics) can be followed; `minirattn reproduce table4` runs the small scale
# (docs/results.md), `--scale paper` the paper's. Run with `python tutorials/12_reproducing_a_table.py`.

# %%
import json
import math
import os
import tempfile

from scipy import stats

from minirattn import experiments as E

FAST = os.environ.get("MINIRATTN_FAST") == "1"
seeds = 3
tiny = dict(dataset="shapes", n_train=256 if FAST else 1024, n_test=200, batch_size=16,
            iterations=8 if FAST else 60, eval_every=4 if FAST else 30, log_every=4,
            model_kwargs=dict(widths=(8, 8, 16), stem_width=4, final_width=16, final_units=1))

# %% [markdown]
# ## The grid: variants times seeds, each a training configuration
# A table declares its variants (here the mask) and the orderings the paper claims; the scale gives
# every other setting, the same for all variants.

# %%
table = E.TABLES["table4"]
print([v.label for v in table.variants], "claims:", [(o.better, "<", o.worse) for o in table.orderings])
plan = E.plan("table4", seeds=seeds, out="unused")
assert [(v.label, s) for v, s, _ in plan.runs] == [(m, s) for m in ("soft", "local") for s in range(seeds)]
config = E.run_config(table, plan.runs[0][0], "small", 0, "unused")
print("small scale:", config.arch, config.dataset, config.iterations, "iterations, widths",
      config.model_kwargs["widths"])

# %% [markdown]
# ## Run it (tiny), then run it again: finished runs are skipped

# %%
out = tempfile.mkdtemp()
results = E.reproduce("table4", seeds=seeds, out=out, overrides=tiny, progress=False)
again = E.reproduce("table4", seeds=seeds, out=out, overrides=tiny, progress=False)
assert again["summary"] == results["summary"]

# %% [markdown]
# ## Read the JSON and compute the ordering by hand
# The claim "soft has a lower error than local" is tested with the seeds paired: the same seed gives
# both runs the same data order and augmentation, so $d_s = \text{err}_{local,s} - \text{err}_{soft,s}$
# removes what they share. The 95% interval of the mean of $d$ is
# $\bar d \pm t_{0.975,\,n-1}\, s_d/\sqrt n$.

# %%
with open(os.path.join(out, "table4-small.json")) as f:
    saved = json.load(f)
err = {(r["label"], r["seed"]): 100 * r["final_error"] for r in saved["runs"]}
d = [err["local", s] - err["soft", s] for s in range(seeds)]
mean = sum(d) / seeds
sd = math.sqrt(sum((v - mean) ** 2 for v in d) / (seeds - 1))
half = stats.t.ppf(0.975, seeds - 1) * sd / math.sqrt(seeds)
print(f"d per seed: {[round(v, 2) for v in d]}, mean {mean:+.2f}, 95% interval "
      f"[{mean - half:+.2f}, {mean + half:+.2f}]")
(lib,) = saved["summary"]["orderings"]
assert math.isclose(lib["mean"], mean, abs_tol=1e-9)
assert math.isclose(lib["low"], mean - half, abs_tol=1e-9) and math.isclose(lib["high"], mean + half, abs_tol=1e-9)
assert lib["holds"] == (mean > 0) and lib["sure"] == (mean - half > 0)
print("the library:", "holds" if lib["holds"] else "does not hold",
      "and the interval", "excludes" if lib["sure"] else "includes", "0")

# %% [markdown]
# With 3 seeds the t factor is 4.30 (below): only a difference large against its spread gives an
# interval that excludes 0. The JSON keeps everything behind the numbers: each run's configuration,
# curve, wall time, commit and machine, and the command that made it.

# %%
assert round(stats.t.ppf(0.975, seeds - 1), 2) == 4.30
run = saved["runs"][0]
print(sorted(run), "\ncommand:", saved["command"][:60])
assert run["config"]["mask"] == "soft" and run["curve"][-1][0] == tiny["iterations"]
