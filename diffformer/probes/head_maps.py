"""`diffformer attention`: every head's full attention map for one prompt, as pictures and one HTML page.

Per layer, a grid: a panel per head (differential: per pair, A1, A2 and A1 − λ·A2, with λ; one map
per head: the map, and under it each key's coverage r̃_j = Σ_i p_ij / H_j, docs/formulas.md §6), each
panel with its key and query axes, token ticks and a colour bar; signed maps on a diverging scale centred
on 0, with what their rows sum to. One overview puts every layer × head of the effective map side by side.
PNG by default, SVG or PDF for papers.
The HTML page holds every layer, head and map with its tokens, draws them on a canvas, and shows the
query token, key token and weight under the pointer; it needs no server and no network. It stores only
each row's visible part (keys 0…i) in thousandths, so it stays small (about a quarter of the full
matrices as decimals).
"""

import html
import json
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from diffformer.atomic import atomic_write  # noqa: E402
from diffformer.model.capture import capture_attention  # noqa: E402
from diffformer.probes.attention_stats import as_distribution, causal_uniform_baseline  # noqa: E402
from diffformer.run_folder import ATTENTION_PICTURES  # noqa: E402


@dataclass
class HeadMaps:
    """One layer's maps: name -> (heads, T, T), e.g. {"A": ...} or {"A1", "A2", "A1 − λ·A2"}; λ per head or None."""

    layer: int
    maps: dict[str, torch.Tensor]
    lam: list[float] | None = None
    coverage: torch.Tensor | None = None  # doubly normalized: (heads, T) r̃_j


def capture_head_maps(model, tokens: torch.Tensor) -> list[HeadMaps]:
    """Every layer's full maps for one sequence (1, T)."""
    with torch.no_grad(), capture_attention(model) as capture:
        model(tokens)
    layers = []
    for layer, maps in sorted(capture.maps.items()):
        weights = maps.weights[0]
        if maps.differential is not None:
            parts = maps.differential
            lam = parts.lam.reshape(-1) if parts.lam.dim() == 0 else parts.lam[0].mean(-1)  # V2: mean over tokens
            named = {"A1": parts.a1[0], "A2": parts.a2[0], "A1 − λ·A2": weights}
            layers.append(HeadMaps(layer, named, [float(x) for x in lam.expand(weights.shape[0])]))
        else:  # one map per head: what each key receives against uniform attention (explaining away)
            received = as_distribution(weights).sum(-2)
            coverage = received / causal_uniform_baseline(weights.shape[-1]).float()
            layers.append(HeadMaps(layer, {"A": weights}, coverage=coverage))
    return layers


def draw_layer(layer: HeadMaps, labels: list[str], title: str, path: Path) -> Path:
    """One picture: rows = the layer's maps (A, or A1 / A2 / A1 − λ·A2), columns = heads; coverage under single
    maps. The format follows the file's suffix (.png, .svg, .pdf)."""
    names = list(layer.maps)
    heads = layer.maps[names[0]].shape[0]
    rows = len(names) + (1 if layer.coverage is not None else 0)
    size = 3.0 if len(labels) <= 32 else 3.6
    figure, axes = plt.subplots(rows, heads, figsize=(size * heads, size * rows), squeeze=False)
    for row, name in enumerate(names):
        for head in range(heads):
            lam = layer.lam[head] if layer.lam is not None and name.startswith("A1 −") else None
            _draw_map(figure, axes[row][head], layer.maps[name][head], labels, f"head {head} · {name}", lam)
    if layer.coverage is not None:
        for head in range(heads):
            axis = axes[-1][head]
            axis.bar(range(len(labels)), layer.coverage[head].numpy(), width=0.8)
            axis.axhline(1.0, color="k", linewidth=0.6, linestyle="--")
            axis.set_title(f"head {head} · key coverage r̃", fontsize=7)
            axis.set_xlim(-0.5, len(labels) - 0.5)
    figure.suptitle(f"{title} · layer {layer.layer}", fontsize=9)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


def _draw_map(figure, axis, weights: torch.Tensor, labels: list[str], title: str, lam: float | None) -> None:
    """One (T, T) map with its axes, ticks and colour bar. A signed map (lam given: A1 − λ·A2, whose rows sum
    to 1 − λ) gets a diverging scale centred on 0, so negative weight reads as negative."""
    values = weights.float().numpy()
    limit = max(abs(values).max(), 1e-9)
    signed = lam is not None or values.min() < 0
    image = axis.imshow(values, cmap="RdBu_r" if signed else "viridis", vmin=-limit if signed else 0, vmax=limit)
    figure.colorbar(image, ax=axis, fraction=0.046, pad=0.03).ax.tick_params(labelsize=5)
    sums = f"\nrows sum to 1 − λ = {1 - lam:.3f} (λ = {lam:.3f})" if lam is not None else ""
    axis.set_title(title + sums, fontsize=7)
    axis.set_xlabel("key", fontsize=6)
    axis.set_ylabel("query", fontsize=6)
    _tick(axis, labels)


def _tick(axis, labels: list[str]) -> None:
    """Token ticks: every token up to 32, else every k-th so that about 16 show."""
    every = 1 if len(labels) <= 32 else -(-len(labels) // 16)
    shown = list(range(0, len(labels), every))
    visible = [labels[i].replace(" ", "␣").replace("\n", "⏎") for i in shown]  # spaces and line breaks show
    axis.set_xticks(shown, visible, fontsize=5, rotation=90)
    axis.set_yticks(shown, visible, fontsize=5)


def draw_overview(layers: list[HeadMaps], labels: list[str], title: str, path: Path) -> Path:
    """Every layer × head of the effective map (A, or A1 − λ·A2) in one picture, each with its colour bar."""
    heads = max(next(iter(reversed(layer.maps.values()))).shape[0] for layer in layers)
    size = 2.8
    figure, axes = plt.subplots(len(layers), heads, figsize=(size * heads, size * len(layers)), squeeze=False)
    for row, layer in enumerate(layers):
        name = list(layer.maps)[-1]  # the effective map: A, or A1 − λ·A2
        maps = layer.maps[name]
        for head in range(heads):
            axis = axes[row][head]
            if head >= maps.shape[0]:
                axis.axis("off")
                continue
            lam = layer.lam[head] if layer.lam is not None else None
            _draw_map(figure, axis, maps[head], labels, f"layer {layer.layer} · head {head} · {name}", lam)
    figure.suptitle(f"{title} · every head", fontsize=9)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


def page_data(layers: list[HeadMaps], labels: list[str], title: str) -> dict:
    """What the HTML page embeds: tokens and, per layer and map, every head's rows — row i holds keys 0…i
    only (the rest are 0 by causality), in integer thousandths."""

    def lower_rows(maps: torch.Tensor) -> list:
        thousandths = torch.round(maps.float() * 1000).int()
        return [[row[: i + 1] for i, row in enumerate(head.tolist())] for head in thousandths]

    return {
        "title": title,
        "tokens": labels,
        "scale": 1000,
        "layers": [
            {
                "layer": layer.layer,
                "lambda": layer.lam,
                "maps": {name: lower_rows(m) for name, m in layer.maps.items()},
                "coverage": None if layer.coverage is None else torch.round(layer.coverage, decimals=4).tolist(),
            }
            for layer in layers
        ],
    }


def page_html(layers: list[HeadMaps], labels: list[str], title: str) -> str:
    """The interactive page (pick layer, map and head; the pointer shows query, key and weight)."""
    data = json.dumps(page_data(layers, labels, title)).replace("</", "<\\/")  # no early end of the script
    return PAGE.replace("__TITLE__", html.escape(title)).replace("__DATA__", data)


def write_page(layers: list[HeadMaps], labels: list[str], title: str, path: Path) -> Path:
    atomic_write(path, page_html(layers, labels, title))
    return path


@dataclass
class AttentionView:
    """Every layer's maps for one sequence, shown in Jupyter as the interactive page (`attention_view`)."""

    layers: list[HeadMaps]
    labels: list[str]
    title: str = "attention"

    def _repr_html_(self) -> str:
        # In an iframe: the page's script and element ids stay out of the notebook's own.
        page = html.escape(page_html(self.layers, self.labels, self.title), quote=True)
        return f'<iframe srcdoc="{page}" style="width:100%;height:680px;border:0"></iframe>'


def attention_view(model, tokens: torch.Tensor, labels: list[str] | None = None, title: str = "attention"):
    """Capture every layer's maps for one sequence (1, T) and return a view Jupyter renders; `labels` name
    the tokens (default: their ids)."""
    layers = capture_head_maps(model.eval(), tokens)
    return AttentionView(layers, labels or [str(t) for t in tokens[0].tolist()], title)


PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>__TITLE__</title>
<style>
body { font: 13px system-ui, sans-serif; margin: 16px; }
#controls label { margin-right: 12px; }
#map { border: 1px solid #ccc; image-rendering: pixelated; cursor: crosshair; }
#tip { position: fixed; pointer-events: none; background: #222; color: #fff; padding: 3px 6px;
       border-radius: 3px; font: 12px monospace; display: none; white-space: pre; }
</style></head>
<body>
<h3 id="title"></h3>
<div id="controls">
  <label>layer <select id="layer"></select></label>
  <label>map <select id="name"></select></label>
  <label>head <select id="head"></select></label>
  <span id="note"></span>
</div>
<canvas id="map" width="560" height="560"></canvas>
<div id="tip"></div>
<script id="data" type="application/json">__DATA__</script>
<script>
"use strict";
const data = JSON.parse(document.getElementById("data").textContent);
const $ = (id) => document.getElementById(id);
const canvas = $("map"), context = canvas.getContext("2d"), tip = $("tip");
$("title").textContent = data.title;
function fill(select, values) {
  select.innerHTML = "";
  for (const [value, text] of values) {
    const option = document.createElement("option");
    option.value = value; option.textContent = text; select.appendChild(option);
  }
}
function current() {
  const layer = data.layers[Number($("layer").value)];
  const stored = layer.maps[$("name").value][Number($("head").value)];  // row i: keys 0..i, in thousandths
  const n = stored.length;
  const rows = stored.map((row) => [...row.map((w) => w / data.scale), ...new Array(n - row.length).fill(0)]);
  return { layer, rows };
}
function colour(w, signed, limit) {
  const t = Math.min(1, Math.abs(w) / limit);
  const fade = 255 - 200 * t;
  if (signed) return w >= 0 ? `rgb(255,${fade},${fade})` : `rgb(${fade},${fade},255)`;
  return `rgb(${255 - 230 * t},${255 - 180 * t},${255 - 60 * t})`;
}
function draw() {
  const { layer, rows } = current();
  const n = rows.length, cell = canvas.width / n;
  const signed = $("name").value.startsWith("A1 \u2212");
  let limit = 1e-9;
  for (const row of rows) for (const w of row) limit = Math.max(limit, Math.abs(w));
  context.clearRect(0, 0, canvas.width, canvas.height);
  rows.forEach((row, i) => row.forEach((w, j) => {
    context.fillStyle = colour(w, signed, limit);
    context.fillRect(j * cell, i * cell, Math.ceil(cell), Math.ceil(cell));
  }));
  const head = Number($("head").value);
  $("note").textContent = layer.lambda ? `\u03bb = ${layer.lambda[head].toFixed(3)}` : "";
}
function choose() {
  const layer = data.layers[Number($("layer").value)];
  const names = Object.keys(layer.maps);
  if (!names.includes($("name").value)) fill($("name"), names.map((n) => [n, n]));
  const heads = layer.maps[$("name").value].length;
  if ($("head").options.length !== heads) fill($("head"), [...Array(heads).keys()].map((h) => [h, h]));
  draw();
}
fill($("layer"), data.layers.map((l, i) => [i, l.layer]));
for (const id of ["layer", "name", "head"]) $(id).addEventListener("change", choose);
canvas.addEventListener("mousemove", (event) => {
  const { rows } = current();
  const box = canvas.getBoundingClientRect(), n = rows.length;
  const j = Math.floor((event.clientX - box.left) / box.width * n);
  const i = Math.floor((event.clientY - box.top) / box.height * n);
  if (i < 0 || j < 0 || i >= n || j >= n) { tip.style.display = "none"; return; }
  const query = `query ${i} ${JSON.stringify(data.tokens[i])}`, key = `key   ${j} ${JSON.stringify(data.tokens[j])}`;
  tip.textContent = `${query}\\n${key}\\nweight ${rows[i][j].toFixed(4)}`;
  tip.style.left = `${event.clientX + 12}px`; tip.style.top = `${event.clientY + 12}px`; tip.style.display = "block";
});
canvas.addEventListener("mouseleave", () => { tip.style.display = "none"; });
choose();
</script>
</body></html>
"""


IMAGE_FORMATS = ("png", "svg", "pdf")


def attention_pictures(
    path: Path | str,
    prompt: str | None,
    example: int | None,
    output: Path | None,
    device: str = "auto",
    image_format: str = "png",
    overrides=(),
) -> list[Path]:
    """Capture one prompt's maps (text or token ids) or held-out example's, and write layer_<l>.<format> per
    layer, overview.<format> (every layer × head) and attention.html into `output` (default RUN/attention)."""
    from diffformer.data import prepare_data
    from diffformer.errors import RecipeError
    from diffformer.sampling import load_for_sampling, prompt_ids

    if (prompt is None) == (example is None):
        raise RecipeError("give exactly one of --prompt TEXT and --example N")
    if image_format not in IMAGE_FORMATS:
        raise RecipeError(f"--format must be one of {', '.join(IMAGE_FORMATS)} (got {image_format!r})")
    loaded, tokenizer = load_for_sampling(path, device, command="attention")
    model = loaded.model.eval()
    model_device = next(model.parameters()).device
    if prompt is not None:
        ids = prompt_ids(prompt, tokenizer, model.config.vocab_size)
        source = f"prompt {prompt[:40]!r}"
    else:
        data = prepare_data(loaded.data_config(overrides))
        ids = data.batch(loaded.trained_recipe().seed, "val", example, 1).inputs[0].tolist()
        source = f"held-out example {example}"
    loaded.check_length(len(ids))
    labels = [tokenizer.decode([i]) if tokenizer is not None else str(i) for i in ids]
    layers = capture_head_maps(model, torch.tensor([ids], device=model_device))
    folder = output or loaded.folder.path / ATTENTION_PICTURES
    folder.mkdir(parents=True, exist_ok=True)
    title = f"{loaded.folder.path.name} · step {loaded.step} · {model.config.attention.kind} · {source}"
    files = [draw_layer(layer, labels, title, folder / f"layer_{layer.layer}.{image_format}") for layer in layers]
    files.append(draw_overview(layers, labels, title, folder / f"overview.{image_format}"))
    return [*files, write_page(layers, labels, title, folder / "attention.html")]
