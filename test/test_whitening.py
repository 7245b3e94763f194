"""Learned PCA whitening (models/whitening.py): the fit, the model that carries it, the encoder."""

import numpy as np
import pytest
import torch

from structvpr_core.config import ConfigError
from structvpr_core.models.branches import ModelConfig, RGBBranch
from structvpr_core.models.checkpoint import load_checkpoint, save_checkpoint
from structvpr_core.models.label_config import LabelFeatureConfig
from structvpr_core.models.whitening import fit_whitening
from structvpr_core.runtime.encoder import load_encoder
from test_inference import _gardens_point


def test_plain_whitening_decorrelates_and_equalises_the_training_descriptors():
    rng = np.random.default_rng(0)
    mixing = rng.normal(size=(12, 12)) * np.linspace(0.1, 3.0, 12)  # correlated, unequal spreads
    x = rng.normal(size=(2000, 12)) @ mixing + 5.0
    w = fit_whitening(x, 12, shrink=0.0)
    y = ((torch.from_numpy(x).float() - w.mean) @ w.projection).numpy()  # before the L2 step
    np.testing.assert_allclose(np.cov(y.T), np.eye(12), atol=1e-3)
    # shrink regularises: every axis divided by at least sqrt(shrink x the largest eigenvalue)
    top = np.linalg.eigvalsh(np.cov(x.T)).max()
    assert np.abs(fit_whitening(x, 4, shrink=1.0).projection.numpy()).max() <= 1 / np.sqrt(top) + 1e-6
    out = fit_whitening(x, 4, shrink=0.1)(torch.from_numpy(x[:5]).float())
    assert out.shape == (5, 4) and torch.allclose(out.norm(dim=1), torch.ones(5))


@pytest.mark.parametrize("dim, shrink, message", [(13, 0.1, "out_dim"), (4, -1.0, "shrink"),
                                                  (4, float("nan"), "shrink")])
def test_fit_refuses_what_it_cannot_fit(dim, shrink, message):
    with pytest.raises(ValueError, match=message):
        fit_whitening(np.random.default_rng(0).normal(size=(100, 12)), dim, shrink)
    with pytest.raises(ValueError, match="need more than 12"):
        fit_whitening(np.ones((12, 12)), 12, 0.1)


@pytest.mark.parametrize("kwargs, message", [
    ({"whitening_dim": 473}, "1..472"),
    ({"whitening_dim": 64, "label_features": LabelFeatureConfig()}, "not whitened"),
])
def test_config_refuses_impossible_whitening(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        ModelConfig("rgb", (128, 64), trunk="efficientnet-lite0", **kwargs)


def test_whitened_checkpoint_runs_the_same_in_every_runtime_on_real_frames(tmp_path, shared):
    """The whitening travels in the checkpoint; torch and the exported runtimes apply it alike."""
    torch.manual_seed(0)
    plain = RGBBranch(ModelConfig("rgb", (160, 96), trunk="efficientnet-lite0"))
    model = RGBBranch(ModelConfig("rgb", (160, 96), trunk="efficientnet-lite0", whitening_dim=32))
    model.load_state_dict(plain.state_dict(), strict=False)
    with torch.no_grad():
        training = plain.eval()(torch.randn(200, 3, 96, 160))
    model.whitening.load_state_dict(fit_whitening(training.numpy(), 32, 0.1).state_dict())
    save_checkpoint(tmp_path / "w.pt", model)
    loaded, _ = load_checkpoint(tmp_path / "w.pt", expect_dim=32)
    assert torch.equal(loaded.whitening.projection, model.whitening.projection)
    images = _gardens_point(shared)
    ref = load_encoder(str(tmp_path / "w.pt"), "cpu", runtime="torch", precision="fp32").encode(images)
    assert ref.shape == (3, 32) and np.allclose(np.linalg.norm(ref, axis=1), 1, atol=1e-5)
    for runtime in ("onnxruntime", "openvino"):
        got = load_encoder(str(tmp_path / "w.pt"), "cpu", runtime=runtime, precision="fp32").encode(images)
        assert np.sum(ref * got, axis=1).min() > 0.9999, runtime
