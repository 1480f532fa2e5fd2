"""Nothing lost: an ablation saves as it goes, and a killed run resumes to the table an uninterrupted run gives."""

from dataclasses import replace
import json
import signal
import subprocess
import sys
import time

import pytest
import torch

import lea_tiny.ablation as ablation_module
from lea_tiny.__main__ import main
from lea_tiny.ablation import prepare_folds, run_ablation
from lea_tiny.data import make_dataset
from lea_tiny.protocol import MAP_SOURCES

RUN = dict(adn="cnn", variants=("baseline", "direct_attention"), attention_points=(1, 2), folds=2, epochs=1,
           colorizer_epochs=1, progress=False)


def _results(out_dir):
    """What a saved run measured: every row and fold, without the environment (its date differs)."""
    return json.loads((out_dir / "results.json").read_text())["results"]


def _counting(monkeypatch, name):
    """Wrap ablation_module.<name> (for "fold_anomaly_maps", the colour map source) so that its calls are counted."""
    calls = []
    colour_maps = name == "fold_anomaly_maps"
    original = MAP_SOURCES["colorization"].fold_maps if colour_maps else getattr(ablation_module, name)

    def counted(*args, **kwargs):
        calls.append(args[0] if args else None)
        return original(*args, **kwargs)

    if colour_maps:
        monkeypatch.setitem(MAP_SOURCES, "colorization", replace(MAP_SOURCES["colorization"], fold_maps=counted))
    else:
        monkeypatch.setattr(ablation_module, name, counted)
    return calls


def test_fold_maps_are_saved_and_loaded_back_instead_of_retrained(dataset, tmp_path, monkeypatch):
    made = prepare_folds(dataset, folds=2, colorizer_epochs=1, progress=False, cache_dir=tmp_path)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["repeat0_fold0.pt", "repeat0_fold1.pt"]
    trainings = _counting(monkeypatch, "fold_anomaly_maps")
    loaded = prepare_folds(dataset, folds=2, colorizer_epochs=1, progress=False, cache_dir=tmp_path)
    assert trainings == []
    for first, again in zip(made, loaded):
        assert torch.equal(first.anomaly_maps, again.anomaly_maps) and first.scale == again.scale
    # maps made with other colouriser settings are not taken for these
    prepare_folds(dataset, folds=2, colorizer_epochs=2, progress=False, cache_dir=tmp_path)
    assert len(trainings) == 2


def test_fold_maps_of_another_dataset_of_the_same_size_are_refused(dataset, folds):
    other = make_dataset("leaves", n_normal=16, n_anomalous=8, image_size=dataset.images.shape[-1], seed=0)
    with pytest.raises(ValueError, match="fold_maps were prepared for another dataset"):
        run_ablation(other, fold_maps=folds, **RUN)


def test_a_resumed_run_keeps_finished_work_and_ends_with_the_uninterrupted_table(dataset, tmp_path, monkeypatch):
    uninterrupted = tmp_path / "uninterrupted"
    run_ablation(dataset, out_dir=uninterrupted, **RUN)

    interrupted = tmp_path / "interrupted"
    original = ablation_module.cross_validate

    def interrupt_the_second(variant, *args, **kwargs):
        if variant != "baseline":
            raise KeyboardInterrupt
        return original(variant, *args, **kwargs)

    monkeypatch.setattr(ablation_module, "cross_validate", interrupt_the_second)
    with pytest.raises(KeyboardInterrupt):
        run_ablation(dataset, out_dir=interrupted, **RUN)
    assert [result["variant"] for result in _results(interrupted)] == ["map_alone", "baseline"]

    monkeypatch.setattr(ablation_module, "cross_validate", original)
    trained = _counting(monkeypatch, "cross_validate")
    colourisers = _counting(monkeypatch, "fold_anomaly_maps")
    table = run_ablation(dataset, out_dir=interrupted, resume=True, **RUN)
    assert trained == ["direct_attention", "direct_attention"] and colourisers == []
    assert _results(interrupted) == _results(uninterrupted)
    assert table.environment["resumed_a_run_started"]


@pytest.mark.parametrize("change, named", [(dict(epochs=2), "epochs=1 there, 2 here"),
                                           (dict(attention_points=(1,)), "attention_points")])
def test_resuming_a_run_with_another_configuration_is_refused(dataset, folds, tmp_path, change, named):
    run_ablation(dataset, out_dir=tmp_path, fold_maps=folds, **RUN)
    with pytest.raises(ValueError, match=f"cannot resume the run in .*{named}"):
        run_ablation(dataset, out_dir=tmp_path, fold_maps=folds, resume=True, **(RUN | change))


def test_an_unwritable_out_dir_is_refused_before_any_training(dataset, tmp_path, monkeypatch):
    trainings = _counting(monkeypatch, "fold_anomaly_maps")
    a_file = tmp_path / "results"
    a_file.write_text("")
    with pytest.raises(ValueError, match="is a file, not a folder"):
        run_ablation(dataset, out_dir=a_file, **RUN)
    with pytest.raises(ValueError, match="resume=True needs the out_dir"):
        run_ablation(dataset, resume=True, **RUN)
    assert trainings == []


def _ablation_argv(out_dir, *options):
    # the session's tiny data set (conftest.py), so that its fold maps can be made once, in this process
    return ["ablation", "--adn", "cnn", "--image-size", "32", "--n-normal", "16",
            "--n-anomalous", "8", "--folds", "2", "--epochs", "1", "--colorizer-epochs", "1",
            "--variants", "baseline,direct_attention", "--attention-points", "1", "--quiet",
            "--out", str(out_dir), *options]


def test_a_killed_cli_run_resumes_without_redoing_finished_work(dataset, tmp_path, capsys):
    killed = tmp_path / "killed"
    prepare_folds(dataset, folds=2, colorizer_epochs=1, progress=False, cache_dir=killed / "fold_maps")
    process = subprocess.Popen([sys.executable, "-m", "lea_tiny", *_ablation_argv(killed)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:  # kill it hard as soon as the first cross-validation is saved
        while not (killed / "results.json").is_file() and process.poll() is None:
            time.sleep(0.02)
        process.send_signal(signal.SIGKILL)
    finally:
        process.wait()
    finished = len(_results(killed))
    assert finished == 2  # the map alone comes with the first cross-validation; two were asked for

    # resumed in this process: what is tested is that the killed process left files a run can resume from
    assert main(_ablation_argv(killed, "--resume")) == 0
    assert f"{finished - 1} finished cross-validation(s) kept" in capsys.readouterr().out
    uninterrupted = tmp_path / "uninterrupted"
    saved_maps = prepare_folds(dataset, folds=2, colorizer_epochs=1, progress=False, cache_dir=killed / "fold_maps")
    run_ablation(dataset, out_dir=uninterrupted, fold_maps=saved_maps,
                 **(RUN | dict(attention_points=(1,))))
    assert _results(killed) == _results(uninterrupted)
    assert not list(killed.glob(".*.tmp"))
