"""What a probe run measures and on which prompts: the `probe:` section of a recipe, and the CLI's options."""

from pydantic import Field, model_validator

from diffformer.devices import resolve_device
from diffformer.errors import RecipeError
from diffformer.probes.results import RULER_THRESHOLD
from diffformer.sections import Section

PROBES = ("retrieval", "attention", "outliers", "ablation", "quantization")
DEFAULT_PROBES = ("retrieval", "attention")


# The probe command's flags whose names differ from the recipe's fields (one meaning per flag across commands).
CLI_FLAGS = {"probe": "--probes", "seed": "--prompt-seed"}


class ProbeSettings(Section):
    """Probe settings. In a recipe, a variants sweep probes every variant with them after training."""

    probes: list[str] = Field(
        list(DEFAULT_PROBES), description="retrieval, attention, outliers, ablation, quantization."
    )
    lengths: list[int] | None = Field(None, description="Context lengths; default from `scales`.")
    scales: list[float] = Field(
        [0.5, 1, 2, 4], description="Without `lengths`: context lengths as multiples of the training length."
    )
    depths: list[float] = Field([0.0, 0.25, 0.5, 0.75, 1.0], description="Needle depths in [0, 1].")
    variants: list[str] | None = Field(None, description="Prompt variants (default: as trained; [all] for every one).")
    samples: int = Field(32, description="Prompts per grid cell.")
    batch_size: int = Field(16, description="Prompts per forward pass.")
    held_out_sequences: int = Field(
        256, description="Held-out sequences of the run's own task that ablation and quantization are scored on."
    )
    quantize: list[str] = Field(
        ["w8a8", "w6a6", "w4a4"], description="The quantization probe's schemes (wBITSaBITS; docs/formulas.md §21)."
    )
    granularity: str = Field("tensor", description="Quantization scales: tensor or channel.")
    seed: int = Field(1234, description="Prompt seed: the same seed gives every checkpoint the same prompts.")
    threshold: float = Field(RULER_THRESHOLD, description="Accuracy that counts for the effective length.")
    device: str = Field("auto", description="cpu, cuda, cuda:N or auto.")
    data_overrides: list[str] = Field(
        [], description="--set data.KEY=VALUE: probe on other data settings than the run trained on."
    )

    @model_validator(mode="after")
    def _in_a_recipe(self) -> "ProbeSettings":
        try:
            self.check("probe.")
        except RecipeError as error:
            raise ValueError(str(error)) from None
        return self

    def check(self, prefix: str = "--") -> None:
        """Refuse settings that cannot be probed, before any model is loaded; options named as the user wrote them."""

        def name(field: str) -> str:
            if prefix != "--":
                return prefix + field
            return CLI_FLAGS.get(field, "--" + field.replace("_", "-"))

        unknown = [probe for probe in self.probes if probe not in PROBES]
        if unknown:
            raise RecipeError(f"unknown probe {unknown[0]!r}; available: {', '.join(PROBES)}")
        if not self.probes:
            raise RecipeError(f"{name('probe')} needs at least one of: {', '.join(PROBES)}")
        if not self.depths:
            raise RecipeError(f"{name('depths')} needs at least one depth in [0, 1], e.g. 0,0.5,1")
        if any(not 0 <= d <= 1 for d in self.depths):
            raise RecipeError(f"{name('depths')} must lie in [0, 1] (got {', '.join(map(str, self.depths))})")
        if self.lengths is not None and (not self.lengths or any(n <= 0 for n in self.lengths)):
            got = ", ".join(map(str, self.lengths)) or "none"
            raise RecipeError(f"{name('lengths')} must be positive numbers (got {got})")
        if not self.scales or any(s <= 0 for s in self.scales):
            raise RecipeError(f"{name('scales')} must be positive multiples of the training length")
        if self.samples < 1 or self.batch_size < 1 or self.held_out_sequences < 1:
            raise RecipeError(
                f"{name('samples')}, {name('batch_size')} and {name('held_out_sequences')} must be at least 1"
            )
        if "quantization" in self.probes:
            self.schemes()
        if not 0 <= self.seed <= 2**32 - 1 or not 0 < self.threshold <= 1:
            raise RecipeError(f"{name('seed')} must be in [0, 2^32) and {name('threshold')} in (0, 1]")
        if prefix == "--":
            resolve_device(self.device)  # a recipe may name a device this machine lacks; the run checks it

    def schemes(self):
        """The quantization probe's schemes, parsed (a bad one is a one-line error)."""
        from diffformer.quantization import QuantizationScheme

        return [QuantizationScheme.parse(spec, self.granularity) for spec in self.quantize]

    def lengths_for(self, trained_length: int, longest: int | None) -> list[int]:
        """The probed lengths: `lengths` as given, or `scales` × the training length (up to `longest`, if any)."""
        if self.lengths:
            return sorted(set(self.lengths))
        lengths = {max(1, round(scale * trained_length)) for scale in self.scales}
        return sorted({n for n in lengths if longest is None or n <= longest} or lengths)
