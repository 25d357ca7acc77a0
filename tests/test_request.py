"""One checked request (sdlite.options) shared by the API, the CLI, Pillow and Ray; the newcomer's CLI
edges (flags after the subcommand, output formats, resumed batches); one cache; manifests written in one place."""

from __future__ import annotations

import ast
import json
import pickle
import shutil

import numpy as np
import pytest
from PIL import Image

import sdlite
import sdlite.pillow
from sdlite import CompressOptions, OptionError, tae
from sdlite.cli import main

from .conftest import EXPORT_STACK, ROOT
from .tae_folder import write_tae_folder


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    """A tiny random TAE bundle built with numpy + onnx (no shared models needed)."""
    root = tmp_path_factory.mktemp("tae")
    tae.build_bundle(write_tae_folder(root / "taesd"), root / "bundle")
    return root / "bundle"


@pytest.fixture
def png(tmp_path):
    y, x = np.mgrid[0:48, 0:80]
    path = tmp_path / "photo.png"
    Image.fromarray(np.stack([x * 3, y * 5, x + y], -1).astype(np.uint8)).save(path)
    return path


# -- the options object --------------------------------------------------------------------------------------


def test_options_are_frozen_checked_and_picklable():
    request = CompressOptions(quality=60)
    with pytest.raises(Exception):
        request.quality = 70
    assert pickle.loads(pickle.dumps(request)) == request
    for bad, message in [({"quality": 0}, "quality must be"), ({"quality": 50, "target_bytes": 10}, "quality or target_bytes"),
                         ({"method": "jpeg"}, "palette"), ({"dither": 0.5}, "'dither' does not apply"),
                         ({"scale": 9}, "scale must be"), ({"effort": 4}, "effort must be one of 1, 2, 3"),
                         ({"tile": 3}, "tile must be"), ({"max_pixels": 0}, "max_pixels must be")]:
        with pytest.raises(OptionError, match=message):
            CompressOptions(**bad)


def test_compress_takes_one_request_or_keywords_not_both(bundle, png):
    request = CompressOptions(target_bytes=250)
    assert sdlite.compress(png, model=bundle, options=request) == sdlite.compress(png, model=bundle, target_bytes=250)
    with pytest.raises(OptionError, match="not both"):
        sdlite.compress(png, model=bundle, options=request, quality=10)


def test_model_dependent_checks(bundle, tmp_path, png):
    encoder_only = tmp_path / "encoder-only"
    shutil.copytree(bundle, encoder_only)
    manifest = json.loads((encoder_only / "manifest.json").read_text())
    del manifest["components"]["vae_decoder"]
    (encoder_only / "manifest.json").chmod(0o644)
    (encoder_only / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(OptionError, match="no vae_decoder"):
        sdlite.compress(png, model=encoder_only, effort=2)


# -- the same checks at every entry point --------------------------------------------------------------------


def test_cli_usage_errors_name_flags_and_come_before_any_work(png, tmp_path, capsys):
    missing_model = str(tmp_path / "no-such-bundle")
    for flags, message in [(["--quality", "50", "--target-bytes", "100"], "pass --quality or --target-bytes, not both"),
                           (["--quality", "0"], "--quality must be"), (["--dither", "0.5"], "option --dither does not apply"),
                           (["--scale", "9"], "--scale must be"), (["--max-pixels", "0"], "--max-pixels must be"),
                           (["--tile", "3"], "--tile must be")]:
        assert main(["compress", str(png), "--model", missing_model, *flags]) == 2, flags
        err = capsys.readouterr().err
        assert message in err and "no-such-bundle" not in err, (flags, err)  # the option, not the missing model


def test_pillow_and_ray_refuse_the_same_request(png, bundle, tmp_path):
    with pytest.raises(OSError, match="quality or target_bytes"):
        Image.open(png).save(tmp_path / "x.sdz", quality=50, target_bytes=100, model=str(bundle))
    assert not (tmp_path / "x.sdz").exists()
    ray = pytest.importorskip("ray")
    import sdlite.ray

    with pytest.raises(OptionError, match="quality or target_bytes"):  # on the driver, before any worker
        sdlite.ray.compress_dataset(ray.data.from_items([{"image": b""}]), model=str(bundle), quality=50, target_bytes=100)
    with pytest.raises(OptionError, match="unknown option 'qualty'"):
        sdlite.ray.compress_dataset(ray.data.from_items([{"image": b""}]), model=str(bundle), qualty=50)


def test_dither_flag_and_verbose_after_the_subcommand(png, bundle, tmp_path, caplog):
    out = tmp_path / "p.sdz"
    with caplog.at_level("NOTSET"):
        assert main(["compress", str(png), "-o", str(out), "--model", str(bundle), "--method", "palette", "--dither", "0.25", "-v"]) == 0
    assert any(r.getMessage().startswith("compressed 80x48") for r in caplog.records)
    assert sdlite.info(out.read_bytes())["method"] == "palette"
    caplog.clear()
    with caplog.at_level("NOTSET"):
        assert main(["compress", str(png), "-o", str(out), "--model", str(bundle), "--force"]) == 0
    assert not any(r.getMessage().startswith("compressed") for r in caplog.records)  # without -v


def test_no_entry_point_imports_private_names_of_codec():
    for module in ("cli", "pillow", "ray"):
        tree = ast.parse((ROOT / "sdlite" / f"{module}.py").read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.endswith("codec"):
                private = [a.name for a in node.names if a.name.startswith("_")]
                assert not private, f"sdlite/{module}.py imports {private} from codec"


# -- the CLI as a newcomer meets it ------------------------------------------------------------------------------


def test_output_format_follows_the_name(png, bundle, tmp_path, capsys):
    stream = tmp_path / "p.sdz"
    assert main(["compress", str(png), "-o", str(stream), "--model", str(bundle), "--target-bytes", "300"]) == 0
    assert main(["decompress", str(stream), "-o", str(tmp_path / "x.jpg"), "--model", str(bundle)]) == 0
    assert Image.open(tmp_path / "x.jpg").format == "JPEG"
    assert main(["decompress", str(stream), "-o", str(tmp_path / "x.webp"), "--model", str(bundle)]) == 0
    assert Image.open(tmp_path / "x.webp").format == "WEBP"
    assert main(["decompress", str(stream), "-o", str(tmp_path / "x.xyz"), "--model", str(bundle)]) == 2
    assert "cannot write images named .xyz" in capsys.readouterr().err and not (tmp_path / "x.xyz").exists()


def test_a_resumed_batch_succeeds_when_every_output_exists(png, bundle, tmp_path, capsys):
    out = tmp_path / "out"
    args = ["compress", str(png.parent), "--out-dir", str(out), "--model", str(bundle), "--target-bytes", "300"]
    assert main(args) == 0
    summary = capsys.readouterr().err.strip().splitlines()[-1]
    assert "bpp" in summary
    assert main(args) == 0  # a rerun keeps what is there and counts it done
    assert "1 already done" in capsys.readouterr().err
    assert main([*args, "--skip-existing"]) == 0


def test_first_load_says_it_verifies_model_files(bundle, tmp_path, monkeypatch, caplog):
    from sdlite import verified

    copy = tmp_path / "copy"
    shutil.copytree(bundle, copy)
    monkeypatch.setattr(verified, "VERIFY_NOTICE_BYTES", 0)
    with caplog.at_level("INFO", logger="sdlite.progress"):
        sdlite.load_model(copy).session("vae_decoder")
    assert any("verifying model file" in r.getMessage() for r in caplog.records)


# -- one cache -----------------------------------------------------------------------------------------------------


def test_one_cache_follows_reexports_and_clears(bundle, tmp_path):
    from sdlite import manifest as manifests

    folder = tmp_path / "m"
    shutil.copytree(bundle, folder)
    first = sdlite.load_model(folder)
    assert sdlite.load_model(folder) is first
    staging = tmp_path / "staging"
    tae.build_bundle(write_tae_folder(tmp_path / "other" / "taesd", seed=5), staging)
    manifests.install(staging, folder)  # what a re-export does
    second = sdlite.load_model(folder)
    assert second is not first and second.model_id != first.model_id
    sdlite.clear_cache()
    assert sdlite.load_model(folder) is not second


# -- manifests written in one place ----------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.skipif(not EXPORT_STACK, reason="export extra not installed (pip install -e .[export])")
def test_two_opsets_of_the_same_weights_share_the_model_id(tmp_path):
    from export import export_bundle

    ids = {opset: export_bundle(tiny=True, components=["vae_encoder", "vae_decoder"], output=tmp_path / str(opset), opset=opset)["model_id"]
           for opset in (17, 18)}
    assert ids[17] == ids[18]


@pytest.mark.slow
@pytest.mark.skipif(not EXPORT_STACK, reason="export extra not installed (pip install -e .[export])")
def test_quantizing_an_optimised_bundle_keeps_a_correct_manifest(tiny_bundle, tmp_path, png):
    from export.optimize import optimize_bundle
    from export.quantize import quantize_bundle
    from sdlite.bundle import check_files, read_bundle

    optimised = tmp_path / "optimised"
    shutil.copytree(tiny_bundle, optimised)
    optimize_bundle(optimised, components=["unet"])
    info = read_bundle(optimised)
    quantize_bundle(optimised, tmp_path / "int8", images=png.parent, components=["vae_encoder"])
    quantized = read_bundle(tmp_path / "int8")
    for component in quantized.components:
        check_files(quantized, component)
        assert (quantized.path / quantized.component_files[component]).is_file()
    assert quantized.component_files["unet"] == info.component_files["unet"]
    assert quantized.manifest["components"]["vae_encoder"]["dtype"] == "int8"
    assert "vae_encoder" not in (quantized.manifest.get("optimization") or {}).get("components", {})
    data = sdlite.compress(png, model=tmp_path / "int8", target_bytes=300)
    assert sdlite.decompress(data, model=tmp_path / "int8", denoise=False).size == (80, 48)


@pytest.mark.skipif(not EXPORT_STACK, reason="export extra not installed (pip install -e .[export])")
def test_export_side_errors_are_one_line(tmp_path, capsys, bundle):
    from export.optimize import main as optimize_main
    from export.quantize import main as quantize_main

    assert quantize_main([str(tmp_path / "no-such-bundle"), "--images", str(tmp_path), "--output", str(tmp_path / "out")]) == 2
    assert optimize_main([str(tmp_path / "no-such-bundle")]) == 2
    broken = tmp_path / "broken"
    shutil.copytree(bundle, broken)
    (broken / "manifest.json").chmod(0o644)
    (broken / "manifest.json").write_text("{")
    assert optimize_main([str(broken)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 3 and "Traceback" not in err and all(line.startswith("error: ") for line in err.splitlines())


@pytest.mark.slow
@pytest.mark.skipif(not EXPORT_STACK, reason="export extra not installed (pip install -e .[export])")
def test_optimising_a_bundle_with_external_data_works_on_a_copy(tiny_bundle, tmp_path):
    """The optimiser's copy must not hard-link the graphs it reads: onnx refuses external data with several
    links (found on the full-size U-Net, whose weights are external)."""
    import onnx

    from export.optimize import optimize_bundle
    from sdlite import manifest as manifests
    from sdlite.bundle import check_files, read_bundle

    folder = tmp_path / "external"
    shutil.copytree(tiny_bundle, folder)
    unet = folder / "unet" / "model.onnx"
    graph = onnx.load(str(unet))
    unet.chmod(0o644)
    onnx.save_model(graph, str(unet), save_as_external_data=True, all_tensors_to_one_file=True, location="model.onnx_data",
                    size_threshold=0)
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["components"]["unet"] = manifests.component_entry(folder, "unet", dtype="fp32", validation_max_abs_diff=None)
    (folder / "manifest.json").chmod(0o644)
    manifests.write(folder, manifest)
    optimize_bundle(folder, components=["unet"])
    info = read_bundle(folder)
    check_files(info, "unet")
    assert not list(tmp_path.glob(".external.*"))  # no staging folder left


def test_long_single_images_show_progress(bundle, caplog):
    """Tiled networks log each tile on sdlite.progress, which the CLI shows without -v."""
    y, x = np.mgrid[0:320, 0:320]
    picture = np.stack([x % 256, y % 256, (x + y) % 256], -1).astype(np.uint8)
    with caplog.at_level("INFO", logger="sdlite.progress"):
        data = sdlite.compress(picture, model=bundle, target_bytes=2000, tile=32)
        sdlite.decompress(data, model=bundle, tile=32)
    messages = [r.getMessage() for r in caplog.records if r.name == "sdlite.progress"]
    assert any(m.startswith("encoder: tile 1 of ") for m in messages) and any(m.startswith("decoder: tile 4 of 4") for m in messages)
