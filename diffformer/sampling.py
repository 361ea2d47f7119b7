"""`diffformer sample`: what a trained model says.

Text runs: the prompt is encoded with the run's own tokenizer and continued (generation.py), the
text streamed as it comes. Synthetic runs: a prompt is token ids ("3 17 5"); without one, held-out
examples are shown position by position — input, the model's greedy prediction, the target.
"""

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from diffformer.checkpoint import LoadedModel, load_trained_model
from diffformer.data import IGNORE, prepare_data
from diffformer.data.tokenizers import END_OF_TEXT
from diffformer.devices import resolve_device
from diffformer.errors import RecipeError
from diffformer.generation import SamplingSettings, generate


@dataclass
class Sample:
    prompt: str
    continuation: str
    tokens: list[int] = field(default_factory=list)  # the new token ids


@dataclass
class ExampleRow:
    position: int
    input: int
    prediction: int
    target: int | None  # None where the position is not scored


def load_for_sampling(
    path: Path | str, device: str = "auto", command: str = "sample"
) -> tuple[LoadedModel, object | None]:
    """The run's model, and its tokenizer for a text run (None for synthetic tasks); a run `command` cannot
    read (its experiment says: focus-lab runs) is refused."""
    loaded = load_trained_model(path, resolve_device(device))
    loaded.experiment.refuse(command, loaded.path)
    if loaded.task != "text":
        return loaded, None
    from tokenizers import Tokenizer

    loaded.data_config()  # refuses a text run without its tokenizer.json
    return loaded, Tokenizer.from_file(str(loaded.folder.tokenizer_file))


def sample_text(
    loaded: LoadedModel,
    tokenizer,
    prompt: str,
    max_new_tokens: int,
    settings: SamplingSettings,
    samples: int = 1,
    on_text: Callable[[int, str], None] | None = None,
) -> list[Sample]:
    """`samples` continuations of `prompt` (sample i uses seed + i); on_text(i, new text) streams them."""
    if not isinstance(prompt, str):
        raise RecipeError(f"a prompt is text (got {type(prompt).__name__})")
    device = next(loaded.model.parameters()).device
    ids = prompt_ids(prompt, tokenizer, loaded.model.config.vocab_size)
    loaded.check_length(len(ids) + max_new_tokens)
    results = []
    for index in range(samples):
        new: list[int] = []
        shown = [""]

        def tell(text: str, shown=shown, index=index) -> None:
            if on_text is not None and text.startswith(shown[0]) and len(text) > len(shown[0]):
                on_text(index, text[len(shown[0]) :])
                shown[0] = text

        def heard(column: torch.Tensor, new=new) -> None:
            new.append(int(column[0]))
            # A byte-level token may end inside a character: hold its replacement mark back until the
            # next tokens complete it, so the stream never shows "\ufffd" for a character still coming.
            tell(_decode(tokenizer, new).rstrip(UNFINISHED_CHARACTER))

        seeded = SamplingSettings(**{**settings.__dict__, "seed": settings.seed + index})
        generate(loaded.model, torch.tensor([ids], device=device), max_new_tokens, seeded, heard)
        text = _decode(tokenizer, new)
        tell(text)  # whatever is still held back is what the tokens really decode to
        results.append(Sample(prompt, text, new))
    return results


def synthetic_examples(
    loaded: LoadedModel, indices: list[int], seed: int | None = None, overrides=()
) -> list[list[ExampleRow]]:
    """Held-out examples of a synthetic run (its data, or with `--set data.*` overrides), position by
    position: input, greedy prediction, target."""
    data = prepare_data(loaded.data_config(overrides))
    device = next(loaded.model.parameters()).device
    seed = loaded.trained_recipe().seed if seed is None else seed
    examples = []
    for index in indices:
        batch = data.batch(seed, "val", index, 1).to(device)
        with torch.no_grad():
            predictions = loaded.model.eval()(batch.inputs).argmax(-1)[0].tolist()
        targets = batch.targets[0].tolist()
        examples.append(
            [
                ExampleRow(t, token, predictions[t], None if target == IGNORE else target)
                for t, (token, target) in enumerate(zip(batch.inputs[0].tolist(), targets))
            ]
        )
    return examples


def prompt_ids(prompt: str, tokenizer, vocab_size: int) -> list[int]:
    """A prompt's token ids: encoded with the run's tokenizer (empty: the start-of-document token), or, for a
    synthetic task, read as ids ("3 17 5")."""
    if tokenizer is None:
        return _token_ids(prompt, vocab_size)
    ids = tokenizer.encode(prompt).ids if prompt else []
    if not ids:  # an empty prompt starts where a document starts
        start = tokenizer.token_to_id(END_OF_TEXT)
        ids = [start if start is not None else 0]
    return ids


def _token_ids(prompt: str, vocab_size: int) -> list[int]:
    try:
        ids = [int(part) for part in prompt.replace(",", " ").split()]
    except ValueError:
        raise RecipeError(f"a synthetic-task model reads token ids, e.g. --prompt '3 17 5' (got {prompt!r})") from None
    if not ids or any(not 0 <= i < vocab_size for i in ids):
        raise RecipeError(f"--prompt needs token ids between 0 and {vocab_size - 1}")
    return ids


UNFINISHED_CHARACTER = "\ufffd"  # what decoding shows for the bytes of a character not yet complete


def _decode(tokenizer, ids: list[int]) -> str:
    return " ".join(map(str, ids)) if tokenizer is None else tokenizer.decode(ids)
