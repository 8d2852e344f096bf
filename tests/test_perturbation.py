"""``encshield.attacks.Perturbation``: applying, budget checks, files and rendering."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from PIL import Image

from encshield.attacks import Perturbation
from encshield.attacks.perturbation import PerturbationError, paste_patch
from encshield.checkpoints.native import read_native, write_native
from encshield.errors import CheckpointError, ChecksumMismatchError, ImageRangeError

EPS = 10 / 255


def _additive(h: int = 8, w: int = 8, seed: int = 0) -> Perturbation:
    g = torch.Generator().manual_seed(seed)
    delta = (torch.rand(3, h, w, generator=g) * 2 - 1) * EPS
    return Perturbation("additive", delta, eps=EPS,
                        metadata={"attack": "test", "seed": seed, "nested": {"a": [1, 2]}})


def _patch() -> Perturbation:
    g = torch.Generator().manual_seed(1)
    return Perturbation("patch", torch.rand(3, 3, 2, generator=g), position=(4, 5),
                        metadata={"attack": "test_patch", "image_size": [10, 9]})


def _images(n: int = 4, h: int = 8, w: int = 8) -> torch.Tensor:
    return torch.rand(n, 3, h, w, generator=torch.Generator().manual_seed(2))


def test_additive_apply_clamps_and_compat_option_does_not() -> None:
    p = _additive()
    x = _images()
    x[0] = 1.0
    x[1] = 0.0
    out = p.apply(x)
    assert out.min() >= 0 and out.max() <= 1
    assert torch.equal(out, (x + p.delta).clamp(0, 1))
    raw = p.apply(x, clamp=False)
    assert torch.equal(raw, x + p.delta)
    assert raw.max() > 1 and raw.min() < 0  # unclamped CGCL-style x + delta
    assert torch.equal(p(x), out)
    assert p.image_size == (8, 8) and p.linf() <= EPS + 1e-6


def test_patch_apply_pastes_and_leaves_the_rest() -> None:
    p = _patch()
    x = _images(h=10, w=9)
    out = p.apply(x)
    assert torch.equal(out[:, :, 4:7, 5:7], p.delta.expand(4, -1, -1, -1))
    mask = torch.zeros(10, 9, dtype=torch.bool)
    mask[4:7, 5:7] = True
    assert torch.equal(out[:, :, ~mask], x[:, :, ~mask])
    assert torch.equal(p.mask()[0].bool(), mask)
    assert p.image_size == (10, 9)
    assert p.linf() == pytest.approx(float(torch.maximum(p.delta, 1 - p.delta).max()))


def test_paste_patch_is_differentiable() -> None:
    patch = torch.full((3, 2, 2), 0.5, requires_grad=True)
    x = _images()
    (grad,) = torch.autograd.grad(paste_patch(x, patch, (1, 1)).sum(), patch)
    assert torch.equal(grad, torch.full((3, 2, 2), 4.0))


def test_size_mismatch_names_both_sizes() -> None:
    with pytest.raises(PerturbationError, match=r"16x16.*8x8"):
        _additive().apply(_images(h=16, w=16))
    with pytest.raises(PerturbationError, match=r"12x12.*10x9"):
        _patch().apply(_images(h=12, w=12))
    with pytest.raises(PerturbationError, match="channels"):
        _additive().apply(torch.rand(2, 1, 8, 8))
    with pytest.raises(ImageRangeError):
        _additive().apply((_images() * 255).to(torch.uint8))


def test_constructor_refuses_inconsistent_perturbations() -> None:
    with pytest.raises(PerturbationError, match="outside its declared budget"):
        Perturbation("additive", torch.full((3, 4, 4), 0.1), eps=EPS)
    with pytest.raises(PerturbationError, match="eps"):
        Perturbation("additive", torch.zeros(3, 4, 4))
    with pytest.raises(PerturbationError, match=r"\[0, 1\]"):
        Perturbation("patch", torch.full((3, 2, 2), 1.5), position=(0, 0))
    with pytest.raises(PerturbationError, match="position"):
        Perturbation("patch", torch.rand(3, 2, 2))
    with pytest.raises(PerturbationError, match="does not fit"):
        Perturbation("patch", torch.rand(3, 4, 4), position=(6, 6), metadata={"image_size": [8, 8]})
    with pytest.raises(PerturbationError, match="kind"):
        Perturbation("blend", torch.zeros(3, 4, 4), eps=EPS)  # type: ignore[arg-type]
    with pytest.raises(PerturbationError, match="NaN"):
        Perturbation("additive", torch.full((3, 4, 4), float("nan")), eps=EPS)


@pytest.mark.parametrize("make", [_additive, _patch])
def test_save_load_round_trip(tmp_path: Path, make) -> None:
    p = make()
    path = tmp_path / "sub" / "delta.safetensors"
    digest = p.save(path)
    assert len(digest) == 64 and path.is_file()
    assert not [f for f in path.parent.iterdir() if f.name.endswith(".tmp")]
    q = Perturbation.load(path)
    assert q.kind == p.kind and q.eps == p.eps and q.position == p.position
    assert torch.equal(q.delta, p.delta) and q.delta.dtype == torch.float32
    assert q.metadata == json.loads(json.dumps(p.metadata))
    assert q.image_size == p.image_size


def test_tampered_budget_is_refused(tmp_path: Path) -> None:
    p = _additive()
    path = tmp_path / "delta.safetensors"
    p.save(path)
    tensors, meta = read_native(path)
    assert meta is not None
    meta["eps"] = 2 / 255  # declare a smaller budget than the stored delta uses
    meta.pop("payload_sha256")
    meta.pop("format_version")
    write_native(path, tensors, meta)
    with pytest.raises(PerturbationError, match=r"refused.*outside its declared budget"):
        Perturbation.load(path)

    # a delta altered behind the checksum's back is refused too
    p.save(path)
    raw = bytearray(path.read_bytes())
    raw[-4:] = b"\x00\x00\x80\x7f"  # last float becomes +inf
    path.write_bytes(bytes(raw))
    with pytest.raises(ChecksumMismatchError):
        Perturbation.load(path)


def test_load_refuses_other_files(tmp_path: Path) -> None:
    from encshield.checkpoints import load_encoder, save_encoder
    from encshield.models import build_encoder

    encoder_path = tmp_path / "encoder.safetensors"
    save_encoder(build_encoder("resnet18", width=4, input_size=8), encoder_path)
    with pytest.raises(CheckpointError, match="not an encshield perturbation"):
        Perturbation.load(encoder_path)
    delta_path = tmp_path / "delta.safetensors"
    _additive().save(delta_path)
    with pytest.raises(CheckpointError, match="perturbation"):
        load_encoder(delta_path)
    with pytest.raises(CheckpointError):
        Perturbation.load(tmp_path / "missing.safetensors")


def test_png_rendering(tmp_path: Path) -> None:
    p = _additive(6, 5)
    rendered = p.render(scale=2)
    assert rendered.shape == (3, 12, 10)
    exact = Perturbation("additive", torch.tensor([-EPS, 0.0, EPS]).view(1, 1, 3).expand(3, 1, 3),
                         eps=EPS)
    assert torch.allclose(exact.render(1)[0, 0], torch.tensor([0.0, 0.5, 1.0]))
    path = p.to_png(tmp_path / "delta.png", scale=4)
    with Image.open(path) as image:
        assert image.size == (20, 24) and image.mode == "RGB"
    patch = _patch()
    path = patch.to_png(tmp_path / "patch.png", scale=3, example=_images(1, 10, 9))
    with Image.open(path) as image:
        image.load()
        assert image.size[1] == 30 and image.size[0] > 2 * 27
    with Image.open(patch.to_png(tmp_path / "patch_only.png", scale=3)) as image:
        assert image.size == (6, 9)


def test_summary_is_json() -> None:
    summary = _patch().summary()
    assert json.loads(json.dumps(summary))["position"] == [4, 5]
    assert "attack='test'" in repr(_additive())
