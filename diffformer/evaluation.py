"""`diffformer eval`: held-out metrics of a run folder or checkpoint, on its own data or on other data, and
with weights and activations rounded to fewer bits (quantization.py)."""

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from diffformer.checkpoint import load_trained_model
from diffformer.data import prepare_data
from diffformer.devices import resolve_device
from diffformer.errors import RecipeError
from diffformer.quantization import QuantizationScheme, QuantizedEval, evaluate_quantized


@dataclass
class EvalReport:
    checkpoint: str
    step: int
    task: str
    seq_len: int
    split: str
    metrics: dict[str, float]
    quantized: list[QuantizedEval] = field(default_factory=list)
    unfinished: str | None = None  # "unfinished: step N of M" when the weights predate the recipe's last step


def evaluate_checkpoint(
    path: Path | str,
    overrides: Sequence[str] = (),
    batches: int | None = None,
    batch_size: int | None = None,
    seed: int | None = None,
    split: str = "val",
    device: str = "auto",
    cache_dir: Path | None = None,
    on_batch=None,
    quantize: Sequence[QuantizationScheme] = (),
) -> EvalReport:
    """Held-out metrics of a run folder or checkpoint, on its own data or on `--set data.*` overrides, and under
    each of `quantize`'s schemes with the change against full precision.

    Defaults (batches, batch size, seed) are the run's own eval settings.
    """
    if split not in ("val", "train"):
        raise RecipeError(f"--split must be val or train (got {split!r})")
    device = resolve_device(device)
    loaded = load_trained_model(path, device)
    recipe = loaded.trained_recipe()
    data_config = loaded.data_config(overrides)
    loaded.check_length(data_config.max_length)
    data = prepare_data(data_config, cache_dir)
    if data.vocab_size > loaded.model.config.vocab_size:
        raise RecipeError(
            f"the data uses {data.vocab_size} token ids but the model knows {loaded.model.config.vocab_size}"
        )
    if quantize:
        loaded.experiment.refuse("quantize", loaded.path)
    where = (
        data,
        recipe.seed if seed is None else seed,
        batches or recipe.eval.batches,
        batch_size or recipe.eval.batch_size or recipe.train.batch_size,
        device,
        loaded.precision,
    )
    metrics = loaded.experiment.objective(recipe.focus).evaluate(loaded.model, *where, split=split, on_batch=on_batch)
    report = EvalReport(str(loaded.path), loaded.step, data_config.task, data_config.max_length, split, metrics)
    report.unfinished = loaded.unfinished
    if quantize:
        report.quantized = evaluate_quantized(loaded.model, where, quantize, split, on_batch)
    return report
