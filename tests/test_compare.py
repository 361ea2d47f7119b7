"""Recipe variants and the comparison of runs."""

import json
from dataclasses import replace

import pytest
import yaml
from typer.testing import CliRunner

from diffformer import ModelConfig, Transformer
from diffformer.checkpoint import load_trained_model
from diffformer.cli import app
from diffformer.comparison import RunRecord, compare_records
from diffformer.comparison.fairness import converged
from diffformer.errors import RecipeError
from diffformer.model.effective import effective_settings
from diffformer.recipe import Recipe, expand_variants
from diffformer.recipe.variants import variant_label

runner = CliRunner()

BASE = {
    "name": "shoot",
    "model": {"d_model": 32, "n_layers": 1, "n_heads": 4, "max_seq_len": 32},
    "data": {"task": "mqar", "vocab_size": 32, "num_pairs": 3, "seq_len": 24},
    "train": {"steps": 3, "batch_size": 4, "log_every": 1, "checkpoint_every": 3},
    "eval": {"every": 3, "batches": 1},
}


def _variants_recipe(tmp_path, variants):
    path = tmp_path / "shoot.yaml"
    path.write_text(yaml.safe_dump({**BASE, "output": str(tmp_path / "runs" / "shoot"), "variants": variants}))
    return path


def test_variants_expand_as_a_grid_with_named_folders(tmp_path):
    path = _variants_recipe(tmp_path, {"model.attention.kind": ["vanilla", "differential"], "seed": [1, 2, 3]})
    expanded = expand_variants(path)
    assert len(expanded) == 6
    labels = [recipe.run_dir.name for _, recipe in expanded]
    assert labels[0] == "kind=vanilla+seed=1" and labels[-1] == "kind=differential+seed=3"
    assert all(recipe.run_dir.parent == tmp_path / "runs" / "shoot" for _, recipe in expanded)
    assignment, recipe = expanded[4]
    assert assignment == {"model.attention.kind": "differential", "seed": 2}
    assert recipe.model.attention.kind == "differential" and recipe.seed == 2 and recipe.variants is None
    assert recipe.name == "shoot.kind-differential.seed-2"
    only = expand_variants(path, only=["kind=vanilla", "seed=2"])
    assert [recipe.run_dir.name for _, recipe in only] == ["kind=vanilla+seed=2"]


def test_a_bad_variant_is_reported_before_anything_trains(tmp_path):
    path = _variants_recipe(tmp_path, {"model.n_heads": [4, 3]})
    with pytest.raises(RecipeError, match=r"variant n_heads=3.*divisible by n_heads \(3\)"):
        expand_variants(path)
    with pytest.raises(RecipeError, match="--only nope: not a variant key"):
        expand_variants(_variants_recipe(tmp_path, {"seed": [1, 2]}), only=["nope=1"])


def test_variants_train_skip_finished_and_end_with_a_comparison(tmp_path):
    path = _variants_recipe(tmp_path, {"model.attention.kind": ["vanilla", "doubly_normalized"], "seed": [1, 2]})
    first = runner.invoke(app, ["train", str(path), "--only", "kind=vanilla", "--only", "seed=1"])
    assert first.exit_code == 0, first.output
    assert (tmp_path / "runs" / "shoot" / "kind=vanilla+seed=1" / "summary.json").is_file()
    result = runner.invoke(app, ["train", str(path), "--json"])
    assert result.exit_code == 0, result.output
    assert "kind=vanilla+seed=1: finished already" in result.stderr
    assert result.stderr.count(": final loss") == 3
    comparison = json.loads(result.stdout)
    assert comparison["columns"] == ["kind=vanilla (2 seeds)", "kind=doubly_normalized (2 seeds)"]
    assert comparison["differences"]["model.attention.kind"] == ["vanilla", "doubly_normalized"]
    assert comparison["differences"]["model.attention.sink"] == [None, True]
    loss_row = next(row for row in comparison["rows"] if row["name"] == "loss")
    assert all(u is not None and u >= 0 for u in loss_row["uncertainty"]), "seed spread is reported"
    sweep = sorted(str(p) for p in (tmp_path / "runs" / "shoot").iterdir())  # what runs/shoot/* expands to
    assert any(p.endswith("comparison") for p in sweep)
    again = runner.invoke(app, ["compare", *sweep, "--json", "-o", str(tmp_path / "again")])
    assert again.exit_code == 0, again.output
    assert len(json.loads(again.stdout)["columns"]) == 2, "the sweep's own comparison folder is passed over"


def _record(name, loss, loss_se, seed=0, task="mqar", kind="vanilla", attention=(), train=()):
    recipe = {
        "name": name,
        "seed": seed,
        "model": {"attention": {"kind": kind, **dict(attention)}},
        "data": {"task": task},
        "train": {"steps": 10, **dict(train)},
    }
    return RunRecord(
        path=name,
        recipe=Recipe.model_validate(recipe),
        step=10,
        tokens_seen=100,
        parameters=1000,
        wall_seconds=1.0,
        final_loss=loss,
        eval={"loss": loss, "loss_se": loss_se},
        curve=[],
        probe=None,
    )


def test_a_verdict_names_its_interval_and_n():
    """Single runs: the interval comes from their measurement errors alone, and says so."""
    comparison = compare_records(
        [
            _record("a", 1.00, 0.05),
            _record("b", 1.05, 0.05, kind="differential"),
            _record("c", 2.00, 0.05, kind="doubly_normalized"),
        ]
    )
    loss = next(row for row in comparison.rows if row.section == "eval" and row.name == "loss")
    assert loss.verdicts[0] == "reference"
    half = 1.959964 * (2 * 0.05**2) ** 0.5
    assert loss.differences[1].low == pytest.approx(0.05 - half) and loss.differences[1].high == pytest.approx(
        0.05 + half
    )
    assert loss.verdicts[1] == (
        f"no detectable difference at n = 1 (measurement error only) (95% CI {0.05 - half:+.3g} … {0.05 + half:+.3g})"
    )
    assert loss.verdicts[2] == f"+1 (95% CI {1 - half:+.3g} … {1 + half:+.3g}; n = 1 (measurement error only))"


def test_runs_on_different_data_are_not_compared_on_metrics():
    comparison = compare_records([_record("a", 1.0, 0.01), _record("b", 0.5, 0.01, task="needle")])
    loss = next(row for row in comparison.rows if row.section == "eval" and row.name == "loss")
    assert loss.values == ["not comparable", "not comparable"]
    assert loss.verdicts[1] == "not comparable"
    assert comparison.differences["data.task"] == ["mqar", "needle"]


def _loss_row(records):
    return next(row for row in compare_records(records).rows if row.section == "eval" and row.name == "loss")


def test_seed_groups_use_the_seed_spread_and_pair_by_seed():
    """Seeds 1 and 2 each lose 0.1 more with differential: paired, that is consistent; unpaired it is not."""
    records = [
        _record("a1", 1.0, 0.001, seed=1),
        _record("a2", 1.2, 0.001, seed=2),
        _record("b1", 1.1, 0.001, seed=1, kind="differential"),
        _record("b2", 1.3, 0.001, seed=2, kind="differential"),
    ]
    assert compare_records(records).columns == ["kind=vanilla (2 seeds)", "kind=differential (2 seeds)"]
    loss = _loss_row(records)
    assert loss.values == pytest.approx([1.1, 1.2])
    assert loss.uncertainty == pytest.approx([0.1, 0.1], rel=1e-6), "s/√n over the seeds"
    assert loss.differences[1].n_text == "n = 2 paired seeds" and loss.differences[1].detected
    # Paired differences 0.1 and 0.1: spread 0, so only the runs' errors remain (√(4·0.001²)/2), t with 1 df.
    assert loss.differences[1].high - loss.differences[1].delta == pytest.approx(12.7062 * 0.001, rel=1e-4)
    unpaired = [*records[:2], replace(records[2], recipe=records[2].recipe.model_copy(update={"seed": 3}))]
    unpaired.append(replace(records[3], recipe=records[3].recipe.model_copy(update={"seed": 4})))
    loss = _loss_row(unpaired)
    assert loss.differences[1].n_text == "n = 2" and not loss.differences[1].detected
    assert loss.verdicts[1].startswith("no detectable difference at n = 2 (95% CI")


def test_welch_and_paired_intervals_match_their_formulas():
    """Three seeds: Welch's t (df ≈ 2.62) against unshared seeds, Student's paired t (df 2) against shared ones;
    the bounds are those scipy.stats.ttest_ind(equal_var=False) / ttest_rel give for the same numbers."""
    reference = [_record(f"a{s}", v, None, seed=s) for s, v in zip((1, 2, 3), (0.90, 0.92, 0.94))]
    unshared = [_record(f"b{s}", v, None, seed=s, kind="differential") for s, v in zip((4, 5, 6), (0.80, 0.85, 0.90))]
    welch = _loss_row(reference + unshared).differences[1]
    assert (welch.low, welch.high) == pytest.approx((-0.1774708, 0.0374708), abs=1e-6)
    shared = [_record(f"b{s}", v, None, seed=s, kind="differential") for s, v in zip((1, 2, 3), (0.80, 0.85, 0.90))]
    paired = _loss_row(reference + shared).differences[1]
    assert (paired.low, paired.high) == pytest.approx((-0.1445241, 0.0045241), abs=1e-6)
    assert paired.verdict() == "no detectable difference at n = 3 paired seeds (95% CI -0.145 … +0.00452)"
    assert paired.detectable == pytest.approx((4.302653 + 1.060660) * 0.0173205, rel=1e-4)


def test_compare_cli_errors_and_end_to_end(tmp_path):
    single = runner.invoke(app, ["compare", str(tmp_path)])
    assert single.exit_code == 2 and "at least two runs" in single.stderr
    missing = runner.invoke(app, ["compare", str(tmp_path / "a"), str(tmp_path / "b")])
    assert missing.exit_code == 2 and "does not exist" in missing.stderr
    path = _variants_recipe(tmp_path, {"model.attention.kind": ["vanilla", "differential"]})
    assert runner.invoke(app, ["train", str(path)]).exit_code == 0
    runs = [str(tmp_path / "runs" / "shoot" / f"kind={kind}") for kind in ("vanilla", "differential")]
    result = runner.invoke(app, ["compare", *runs, "--probe", "-o", str(tmp_path / "cmp"), "--json"])
    assert result.exit_code == 0, result.output
    comparison = json.loads(result.stdout)
    names = [row["name"] for row in comparison["rows"]]
    assert "parameters" in names and "mqar accuracy @ 24" in names and "needle share of |w| · layer 0 @ 24" in names
    assert "positional prior" in names and "heads × maps × width" in names
    recorded = json.loads((tmp_path / "runs" / "shoot" / "kind=differential" / "effective.json").read_text())
    assert recorded == json.loads(json.dumps(effective_settings(load_trained_model(runs[1]).model)))
    assert recorded["layout"].startswith("2 heads × 2 maps") and recorded["parameters"]["total"] > 0
    warned = " ".join(comparison["warnings"])
    assert "heads × maps × width differs" in warned and "2 heads × 2 maps" in warned, "V1's pairs are named"
    assert "positional prior differs" not in warned, "both rotary, same base"
    params = next(row for row in comparison["rows"] if row["name"] == "parameters")
    assert params["values"][1] - params["values"][0] == 6 * 8  # differential: +6·d_head per layer
    assert (tmp_path / "cmp" / "curves.png").stat().st_size > 1000


def test_columns_that_shared_keys_leave_alike_are_told_apart_by_the_keys_only_some_set():
    """λ_init {exp, constant 0.8, constant 0.5}: 'value' is unset for exp, yet it alone separates the constants."""
    records = []
    for name, schedule in (("exp", {"schedule": "exp"}), ("c8", {"schedule": "constant", "value": 0.8})):
        records.append(_record(name, 1.0, 0.1, kind="differential", attention={"lambda_init": schedule}))
    constant = {"lambda_init": {"schedule": "constant", "value": 0.5}}
    records.append(_record("c5", 1.0, 0.1, kind="differential", attention=constant))
    columns = compare_records(records).columns
    assert columns == ["schedule=exp", "schedule=constant, value=0.8", "schedule=constant, value=0.5"]
    plain = compare_records([_record("a", 1.0, 0.1), _record("b", 1.0, 0.1, kind="doubly_normalized")]).columns
    assert plain == ["kind=vanilla", "kind=doubly_normalized"], "options only one kind has stay out of labels"


def test_best_of_collapses_a_swept_learning_rate_to_each_kinds_best_and_names_it():
    records = []
    for kind, losses in (("vanilla", {0.001: 1.0, 0.003: 0.7, 0.01: 0.9}), ("differential", {0.001: 0.8, 0.003: 1.1})):
        for lr, loss in losses.items():
            records.append(_record(f"{kind}-{lr}", loss, 0.01, kind=kind, train={"lr": lr}))
    comparison = compare_records(records, best_of="train.lr", by="loss")
    assert comparison.columns == ["kind=vanilla, lr=0.003", "kind=differential, lr=0.001"]
    loss = next(row for row in comparison.rows if row.section == "eval" and row.name == "loss")
    assert loss.values == [0.7, 0.8]
    assert comparison.notes[0].startswith("train.lr = 0.003 is the best of 3 by eval loss")
    assert comparison.notes[1].startswith("train.lr = 0.001 is the best of 2")
    with pytest.raises(Exception, match="no compared run sets model.nothing"):
        compare_records(records, best_of="model.nothing")
    with pytest.raises(Exception, match="no compared run has an eval bits_per_byte"):
        compare_records(records, best_of="train.lr", by="bits_per_byte")


def test_best_of_by_steps_to_learn_prefers_more_seeds_learning_then_fewer_steps():
    records = []
    stopped = {0.001: [None, None], 0.003: [300, 200], 0.01: [150, None]}  # None: never reached the threshold
    for lr, steps in stopped.items():
        for seed, step in enumerate(steps):
            early_stop = {"metric": "exact_match", "at_least": 0.99}
            records.append(_record(f"v-{lr}-{seed}", 0.1, 0.01, seed=seed, train={"lr": lr, "early_stop": early_stop}))
            records[-1].stopped_early_at = step
    comparison = compare_records(records, best_of="train.lr", by="steps_to_learn")
    assert comparison.runs_per_column == [["v-0.003-0", "v-0.003-1"]]
    assert (
        "0.001 → 0/2 learned, 0.003 → 2/2 learned in 250 steps, 0.01 → 1/2 learned in 150 steps" in comparison.notes[0]
    )
    rows = {row.name: row.values for row in compare_records(records).rows}
    assert rows["reached early stop (share of seeds)"] == [0.0, 1.0, 0.5]
    assert rows["steps to learn (early stop; seeds that reached it)"] == [None, 250.0, 150.0]
    without_early_stop = [
        replace(r, recipe=r.recipe.model_copy(update={"train": r.recipe.train.model_copy(update={"early_stop": None})}))
        for r in records
    ]
    with pytest.raises(Exception, match="steps_to_learn needs runs trained with train.early_stop"):
        compare_records(without_early_stop, best_of="train.lr", by="steps_to_learn")


def _effective(kind, **attention):
    config = ModelConfig(
        vocab_size=32, d_model=32, n_heads=4, n_layers=2, position="alibi", attention={"kind": kind, **attention}
    )
    return effective_settings(Transformer(config))


def test_the_fairness_section_shows_what_the_recipes_do_not_name():
    """V1 under the 2026-11 pair slopes lacks vanilla's steep ALiBi slope: a warning says so, naming both sets;
    under the default (per map) the prior is the same and only the layout and the kind's parts differ."""
    vanilla = replace(_record("a", 1.0, 0.01), effective=_effective("vanilla"))
    pairs = replace(
        _record("b", 1.0, 0.01, kind="differential"), effective=_effective("differential", alibi_layout="pair_count")
    )
    warnings = compare_records([vanilla, pairs]).warnings
    prior = next(w for w in warnings if w.startswith("⚠ positional prior differs"))
    assert "vanilla: ALiBi slopes 1/4, 1/16, 1/64, 1/256" in prior and "differential: ALiBi slopes 1/16, 1/256" in prior
    per_map = replace(pairs, effective=_effective("differential"))
    warnings = compare_records([vanilla, per_map]).warnings
    assert not any("positional prior" in w for w in warnings)
    assert any(w.startswith("⚠ heads × maps × width differs") for w in warnings)
    assert any(w.startswith("⚠ parameters: attention (the kind's own) differs") for w in warnings), "V1's λ vectors"
    swept = [replace(_record("a", 1.0, 0.01, train={"lr": lr}), effective=_effective("vanilla")) for lr in (1e-3, 1e-2)]
    assert not any("learning rate" in w for w in compare_records(swept).warnings), (
        "a varied key is not a hidden difference"
    )


def test_convergence_is_a_small_fall_over_the_last_tenth():
    falling = [{"step": s, "loss": 2.0 - s / 100} for s in range(100)]
    flat = [{"step": s, "loss": 1.0 + 0.01 * ((-1) ** s)} for s in range(100)]
    assert converged(falling) is False and converged(flat) is True
    assert converged(falling[:5]) is None, "too few losses to say"
    assert converged(falling, stopped_early=True) is True, "stopped early at its threshold"
    almost = [{"step": s, "loss": 2.0 * 0.5 ** (s / 5)} for s in range(100)]  # fell by 2 and is still falling a hair
    assert converged(almost) is True


def test_a_column_of_seeds_is_never_more_certain_than_its_runs():
    same = [_record(f"s{seed}", 1.0, 0.05, seed=seed) for seed in (1, 2)]  # identical values: spread 0
    loss = next(row for row in compare_records(same).rows if row.section == "eval" and row.name == "loss")
    assert loss.uncertainty == [pytest.approx(0.05 / 2**0.5)], "the runs' own errors: √(2·0.05²)/2"


def test_variant_folder_names_have_no_commas_or_colons_and_old_sweeps_keep_theirs(tmp_path):
    grid = {"model.attention.kind": ["vanilla", "differential"], "probe.lengths": [[64, 128], [256]], "tag": ["a,b:c"]}
    assignment = {key: values[0] for key, values in grid.items()}
    assert variant_label(assignment, grid) == "kind=vanilla+lengths=64_128+tag=a_b_c"
    path = _variants_recipe(tmp_path, {"model.attention.kind": ["vanilla"], "seed": [1, 2]})
    (tmp_path / "runs" / "shoot" / "kind=vanilla,seed=2").mkdir(parents=True)  # begun before the names changed
    expanded = expand_variants(path)
    assert [recipe.run_dir.name for _, recipe in expanded] == ["kind=vanilla+seed=1", "kind=vanilla,seed=2"]
    assert [recipe.name for _, recipe in expanded] == ["shoot.kind-vanilla.seed-1", "shoot.kind-vanilla.seed-2"]


def test_columns_are_named_by_their_runs_and_the_differing_settings_get_rows(tmp_path):
    def named(folder, *args, **kwargs):
        record = _record(*args, **kwargs)
        record.folder_name = folder
        return record

    pair = compare_records([named("baseline", "a", 1.0, 0.05), named("diff-run", "b", 1.1, 0.05, kind="differential")])
    assert pair.columns == ["baseline", "diff-run"]
    assert pair.differences["model.attention.kind"] == ["vanilla", "differential"]
    seeds = [
        named(f"kind={k}+seed={s}", "x", 1.0 + s / 10, 0.01, seed=s, kind=k)
        for k in ("vanilla", "differential")
        for s in (1, 2)
    ]
    assert compare_records(seeds).columns == ["kind=vanilla (2 seeds)", "kind=differential (2 seeds)"]
    legacy = [
        named(f"kind={k},seed={s},lr=0.1", "x", 1.0, 0.01, seed=s, kind=k)
        for k in ("vanilla", "differential")
        for s in (1, 2)
    ]
    assert compare_records(legacy).columns == ["kind=vanilla,lr=0.1 (2 seeds)", "kind=differential,lr=0.1 (2 seeds)"]
    alike = compare_records([named("run", "a", 1.0, 0.05), named("run", "b", 1.1, 0.05, kind="differential")])
    assert alike.columns == ["kind=vanilla", "kind=differential"]  # two folders called run: named by settings


def test_text_runs_compare_with_a_perplexity_axis(tmp_path):
    """The held-out loss panel of text runs carries a perplexity axis; matplotlib hands its functions arrays
    (math.exp on an array was a traceback after every text sweep)."""
    (tmp_path / "text.txt").write_text("the keys and the values of attention, queried again\n" * 100)
    text = {"task": "text", "path": str(tmp_path / "text.txt"), "tokenizer": {"kind": "byte"}, "seq_len": 16}
    recipe = {**BASE, "data": text, "eval": {"every": 1, "batches": 1}, "output": str(tmp_path / "runs" / "t")}
    recipe["variants"] = {"seed": [0, 1]}
    (tmp_path / "t.yaml").write_text(yaml.safe_dump(recipe))
    result = runner.invoke(app, ["train", str(tmp_path / "t.yaml")])  # ends with a comparison of its own
    assert result.exit_code == 0, result.output
    runs = [str(tmp_path / "runs" / "t" / f"seed={seed}") for seed in (0, 1)]
    compared = runner.invoke(app, ["compare", *runs, "-o", str(tmp_path / "c")])
    assert compared.exit_code == 0, compared.output
    assert (tmp_path / "c" / "curves.png").stat().st_size > 1000
