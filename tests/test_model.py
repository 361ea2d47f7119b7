"""ModelConfig validation, the public module contract, GQA, bf16 and numerical robustness."""

import pytest
import torch
from conftest import ATTENTION_VARIANTS, small_model
from pydantic import ValidationError

from diffformer import ModelConfig, Transformer
from diffformer.model.attention import ATTENTION_KINDS

KINDS = list(ATTENTION_KINDS)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"d_model": 30, "n_heads": 4}, "d_model (30) must be divisible by n_heads (4)"),
        ({"n_heads": 4, "n_kv_heads": 3}, "n_heads (4) must be divisible by n_kv_heads (3)"),
        ({"n_heads": 3, "d_model": 48, "attention": {"kind": "differential"}}, "n_heads must be even"),
        ({"n_heads": 4, "n_kv_heads": 1, "attention": {"kind": "differential"}}, "n_kv_heads must be even"),
        ({"attention": {"kind": "doubly_normalized", "mix": 1.5}}, "mix must be a number in [0, 1]"),
        ({"attention": {"kind": "sparse"}}, "does not match any of the expected tags"),
        ({"attention": {"kind": "vanilla", "sink": True}}, "Extra inputs are not permitted"),
        ({"dropout": 1.0}, "less than 1"),
        ({"position": "xpos"}, "'rope', 'none', 'learned' or 'alibi'"),
        ({"n_layer": 2}, "Extra inputs are not permitted"),
        ({"d_model": 36, "n_heads": 4}, "d_model/n_heads must be even"),
        ({"attention": {"kind": "differential", "lambda_init": {"schedule": "constant", "value": 1.2}}}, "less than 1"),
    ],
)
def test_invalid_model_configs_are_rejected_with_a_clear_message(settings, message):
    with pytest.raises(ValidationError) as error:
        ModelConfig(**{"vocab_size": 10, "d_model": 32, **settings})
    assert message in str(error.value)


def test_defaults():
    config = ModelConfig(vocab_size=100, d_model=128)
    assert config.kv_heads == config.n_heads == 8
    assert config.mlp_hidden == 384  # 8/3·128 = 341.3, rounded up to a multiple of 64
    assert config.attention.kind == "vanilla"
    assert config.tie_embeddings is False and config.init_std is None
    assert ModelConfig(vocab_size=100, attention={"kind": "differential"}).attention.lambda_init.schedule == "exp"
    dn = ModelConfig(vocab_size=100, attention={"kind": "doubly_normalized"}).attention
    assert dn.sink is True and dn.mix == 1.0


@pytest.mark.parametrize("kind", KINDS)
def test_blocks_expose_attention_on_hidden_states(kind):
    model = small_model({"kind": kind})
    out = model.blocks[0].attention(torch.randn(3, 9, 32))
    assert out.shape == (3, 9, 32)
    assert model(torch.randint(0, 37, (3, 9))).shape == (3, 9, 37)


@pytest.mark.parametrize("kind", KINDS)
def test_grouped_query_attention_shapes(kind):
    config = ModelConfig(vocab_size=50, d_model=64, n_layers=1, n_heads=8, n_kv_heads=2, attention={"kind": kind})
    model = Transformer(config)
    attention = model.blocks[0].attention
    assert attention.k_proj.weight.shape == (2 * 8, 64)  # n_kv_heads × d_head
    assert attention.v_proj.weight.shape == (2 * 8, 64)
    assert model(torch.randint(0, 50, (2, 10))).shape == (2, 10, 50)


def test_gpt2_init_with_init_std_and_depth_scaled_residual_projections():
    config = ModelConfig(vocab_size=500, d_model=256, n_layers=8, n_heads=8, init_std=0.02)
    model = Transformer(config)
    assert model.blocks[3].attention.out_proj.weight.std().item() == pytest.approx(0.02 / 4, rel=0.05)
    assert model.blocks[3].mlp.down.weight.std().item() == pytest.approx(0.02 / 4, rel=0.05)
    assert model.blocks[3].attention.q_proj.weight.std().item() == pytest.approx(0.02, rel=0.05)
    assert model.embed.weight.std().item() == pytest.approx(0.02, rel=0.05)
    assert not any("bias" in name for name, _ in model.named_parameters())


def test_default_init_scales_with_fan_in():
    model = Transformer(ModelConfig(vocab_size=500, d_model=192, n_layers=2, n_heads=6, ffn_hidden=512))
    assert model.blocks[0].attention.q_proj.weight.std().item() == pytest.approx((3 * 192) ** -0.5, rel=0.05)
    assert model.blocks[0].mlp.down.weight.std().item() == pytest.approx((3 * 512) ** -0.5 / 2, rel=0.05)
    assert model.embed.weight.std().item() == pytest.approx(1.0, rel=0.05)
    assert model.lm_head.weight.std().item() == pytest.approx((3 * 192) ** -0.5, rel=0.05)
    tied = Transformer(ModelConfig(vocab_size=500, d_model=192, n_heads=6, tie_embeddings=True))
    assert tied.embed.weight.std().item() == pytest.approx(192**-0.5, rel=0.05)


def test_tied_embeddings_share_one_tensor():
    tied = Transformer(ModelConfig(vocab_size=50, d_model=32, n_heads=4, tie_embeddings=True))
    untied = Transformer(ModelConfig(vocab_size=50, d_model=32, n_heads=4, tie_embeddings=False))
    assert tied.lm_head.weight is tied.embed.weight
    assert untied.num_parameters() == tied.num_parameters() + 50 * 32


@pytest.mark.parametrize("variant", ATTENTION_VARIANTS)
def test_bf16_autocast_forward_and_backward(variant):
    model = small_model(ATTENTION_VARIANTS[variant], n_kv_heads=2)
    tokens = torch.randint(0, 37, (2, 24))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = model(tokens)
        loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1).float(), tokens.flatten())
    loss.backward()
    assert logits.dtype == torch.bfloat16
    assert torch.isfinite(loss)
    for name, parameter in model.named_parameters():
        assert parameter.grad is not None and torch.isfinite(parameter.grad).all(), name


@pytest.mark.parametrize("variant", ATTENTION_VARIANTS)
def test_no_nan_on_long_constant_or_extreme_inputs(variant):
    model = small_model(ATTENTION_VARIANTS[variant], max_seq_len=512)
    for block in model.blocks:
        if hasattr(block.attention, "query_block"):
            block.attention.query_block = 128
    long_tokens = torch.randint(0, 37, (1, 512))
    constant_tokens = torch.full((2, 300), 7)
    with torch.no_grad():
        model.embed.weight.mul_(50)  # very large scores stress every softmax and log-sum-exp
    for tokens in (long_tokens, constant_tokens):
        logits = model(tokens)
        logits.float().logsumexp(-1).sum().backward()
        assert torch.isfinite(logits).all()
        assert all(torch.isfinite(p.grad).all() for p in model.parameters())
        model.zero_grad()


def test_learned_positions_refuse_sequences_longer_than_max_seq_len():
    model = small_model({"kind": "vanilla"}, position="learned", max_seq_len=16)
    with pytest.raises(ValueError, match="exceeds max_seq_len 16"):
        model(torch.randint(0, 37, (1, 17)))


def test_rope_extrapolates_beyond_max_seq_len_consistently():
    model = small_model({"kind": "vanilla"}, position="rope", max_seq_len=16).eval()
    tokens = torch.randint(0, 37, (1, 24))
    with torch.no_grad():
        torch.testing.assert_close(model(tokens)[:, :16], model(tokens[:, :16]), atol=1e-5, rtol=1e-5)


def test_each_kind_owns_its_initialisation():
    """The model's matrix rule does not overwrite a kind's own choice: differential_v2's λ gate keeps
    PyTorch's Linear default (uniform within ±1/√fan_in), as in the reference implementation."""
    torch.manual_seed(0)
    d_model = 64
    model = Transformer(
        ModelConfig(vocab_size=50, d_model=d_model, n_layers=2, n_heads=4, attention={"kind": "differential_v2"})
    )
    for block in model.blocks:
        gate = block.attention.lambda_proj.weight
        assert gate.abs().max() <= d_model**-0.5, "a normal init of the same std exceeds the uniform bound"
        projection = block.attention.q_proj.weight
        assert projection.abs().max() > d_model**-0.5, "the projections follow the model's normal rule"
        residual = block.attention.residual_projection.weight
        assert residual.std().item() == pytest.approx((3 * d_model) ** -0.5 / 2, rel=0.1), "÷√(2·n_layers)"


def test_alibi_slopes_follow_the_paper():
    from diffformer.model.position import alibi_slopes

    assert alibi_slopes(8).tolist() == [2.0**-k for k in range(1, 9)]  # 1/2, 1/4, ..., 1/256
    assert alibi_slopes(4).tolist() == [2.0**-2, 2.0**-4, 2.0**-6, 2.0**-8]
    six = alibi_slopes(6).tolist()  # the 4-head slopes, then every other slope of 8 heads
    assert six == [2.0**-2, 2.0**-4, 2.0**-6, 2.0**-8, 2.0**-1, 2.0**-3]


@pytest.mark.parametrize("kind", KINDS)
def test_alibi_models_run_beyond_max_seq_len_and_keep_no_position_weights(kind):
    model = Transformer(
        ModelConfig(
            vocab_size=20, d_model=32, n_layers=1, n_heads=4, max_seq_len=16, position="alibi", attention={"kind": kind}
        )
    )
    assert not any("alibi" in name for name in model.state_dict()), "slopes are derived, not stored"
    assert model(torch.randint(0, 20, (1, 40))).shape == (1, 40, 20)


@pytest.mark.parametrize("kind", KINDS)
def test_activation_checkpointing_gives_the_same_loss_and_gradients(kind):
    """Recomputed blocks (with dropout: the RNG state is restored for the recomputation) change nothing."""
    model = small_model(ATTENTION_VARIANTS[kind], dropout=0.2)
    tokens = torch.randint(0, 37, (2, 24))
    gradients = []
    for recompute in (False, True):
        model.zero_grad()
        model.activation_checkpointing = recompute
        torch.manual_seed(7)
        loss = model(tokens).float().logsumexp(-1).mean()
        loss.backward()
        gradients.append({name: p.grad.clone() for name, p in model.named_parameters()})
    assert gradients[0].keys() == gradients[1].keys()
    for name in gradients[0]:
        torch.testing.assert_close(gradients[1][name], gradients[0][name], rtol=1e-5, atol=1e-7, msg=name)


def _train_a_few_steps(model, steps=5):
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    for _ in range(steps):
        tokens = torch.randint(0, 37, (4, 20))
        loss = torch.nn.functional.cross_entropy(model(tokens[:, :-1]).flatten(0, 1), tokens[:, 1:].flatten())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


@pytest.mark.parametrize("kind", KINDS)
def test_identical_heads_stay_identical_and_identical_qkv_heads_drift_apart(kind):
    from diffformer.model.heads import head_spread

    config = dict(vocab_size=37, d_model=32, n_layers=2, n_heads=4, max_seq_len=64, attention={"kind": kind})
    identical = Transformer(ModelConfig(**config, head_init="identical"))
    shared_reading = Transformer(ModelConfig(**config, head_init="identical_qkv"))
    assert all(head_spread(b.attention) == 0.0 for b in identical.blocks)
    assert all(head_spread(b.attention, outputs_too=False) == 0.0 for b in shared_reading.blocks)
    assert all(head_spread(b.attention) > 0.05 for b in shared_reading.blocks)  # output columns differ
    _train_a_few_steps(identical)
    _train_a_few_steps(shared_reading)
    for block in identical.blocks:
        assert head_spread(block.attention) < 1e-6, "symmetric heads get symmetric gradients"
    for block in shared_reading.blocks:
        assert head_spread(block.attention, outputs_too=False) > 1e-4, "different output columns break the symmetry"
