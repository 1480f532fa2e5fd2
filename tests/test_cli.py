"""The command line (python -m lea_tiny): help, one-line errors with exit code 2, and a tiny demo run."""

import json

import pytest
import torch

import lea_tiny.__main__ as cli
from lea_tiny.__main__ import main
from lea_tiny.ablation import prepare_folds
from lea_tiny.compare import load_results
from lea_tiny.data import make_dataset
from lea_tiny.detector import load_comparison
from lea_tiny.train import evaluate, load_checkpoint

TINY = ["--image-size", "32", "--epochs", "1", "--colorizer-epochs", "1", "--folds", "2", "--repeats", "1",
        "--n-normal", "12", "--n-anomalous", "4", "--quiet"]


def _exit_code(argv):
    """main's exit code, whether argparse exits (bad option) or main returns (bad value found later)."""
    try:
        return main(argv)
    except SystemExit as exit:
        return exit.code


def test_the_demo_explains_its_options(capsys):
    # in this process: `python -m lea_tiny` itself is run by tests/test_resume.py's killed run
    assert _exit_code(["demo", "--help"]) == 0
    out = capsys.readouterr().out
    for option in ("--data", "--image-size", "--epochs", "--folds", "--adn", "--variants", "--attention-points",
                   "--device", "--out", "--seed", "--n-normal", "--n-anomalous", "--repeats", "--augment",
                   "--no-augment", "--normal-classes", "--choose-points"):
        assert option in out
    assert "the paper: 256" in out


def test_the_top_level_help_lists_both_commands(capsys):
    assert _exit_code(["--help"]) == 0
    out = capsys.readouterr().out
    assert "demo" in out and "ablation" in out


@pytest.mark.parametrize("argv, message", [
    ([], "required: {demo,ablation,relatives}"),
    (["demo", "--adn", "alexnet"], "invalid choice: 'alexnet'"),
    (["demo", "--variants", "baseline,lea"], "unknown variant(s) lea"),
    (["demo", "--attention-points", "0,2"], "attention points must lie in 1..5"),
    (["demo", "--epochs", "zero"], "expected a positive integer"),
    (["demo", "--seed", "-3"], "non-negative integer"),
    (["demo", "--lr", "-1"], "expected a positive number"),
    (["demo", "--device", "toaster"], "--device"),
    (["ablation", "--folds", "0"], "expected a positive integer"),
])
def test_a_bad_option_ends_with_one_line_and_exit_code_2(capsys, argv, message):
    assert _exit_code(argv) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and message in err and "Traceback" not in err


@pytest.mark.parametrize("argv, message", [
    (["--data", "no/such/folder"], "neither retina nor leaves nor a folder"),
    (["--image-size", "10"], "10"),
    (["--n-anomalous", "1"], "fewer than folds=2"),
])
def test_a_bad_value_found_later_ends_with_one_line_and_exit_code_2(capsys, tmp_path, argv, message):
    assert _exit_code(["demo", *TINY, "--out", str(tmp_path), *argv]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and message in err and err.startswith("lea-tiny demo: error:")


def test_a_folder_with_embedded_data_counts_is_refused(capsys, tmp_path):
    assert _exit_code(["demo", "--data", str(tmp_path), "--n-normal", "5"]) == 2
    assert "apply to the embedded data only" in capsys.readouterr().err
    assert _exit_code(["demo", "--normal-classes", "healthy"]) == 2
    assert "--normal-classes applies to a folder" in capsys.readouterr().err


def test_normal_classes_name_the_normal_folders_of_a_plantvillage_layout(tmp_path, monkeypatch):
    asked = {}

    def fake_load_folder(root, image_size, normal_classes):
        asked.update(root=root, normal_classes=normal_classes)
        raise ValueError("stop here")

    monkeypatch.setattr(cli, "load_folder", fake_load_folder)
    assert _exit_code(["demo", "--data", str(tmp_path), "--normal-classes", "Potato___healthy, Other"]) == 2
    assert asked["normal_classes"] == ["Potato___healthy", "Other"]


def test_a_tiny_demo_writes_its_table_figures_and_checkpoint(capsys, tmp_path):
    argv = ["demo", *TINY, "--repeats", "2", "--variants", "baseline,caan_mobilenet", "--attention-points", "1,3",
            "--out", str(tmp_path)]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "| CNN |" in out and "| CNN + MobileNet-small CAAN |" in out
    assert sorted(path.name for path in tmp_path.iterdir()) == \
        ["attention.png", "fold_maps", "lea_net.pt", "maps.png", "results.csv", "results.json", "results.md"]
    results = load_results(tmp_path)
    assert results.config["image_size"] == 32 and results.config["attention_points"] == [1, 3]
    # the map alone, the baseline, LEA-Net at two points and at the point chosen on validation
    assert [(result.variant, result.attention_point) for result in results.results] == \
        [("map_alone", None), ("baseline", None), ("caan_mobilenet", 1), ("caan_mobilenet", 3), ("caan_mobilenet", None)]
    assert results.config["augment"] is True and results.config["repeats"] == 2
    assert "cannot be told apart" in out or "beat the baseline" in out or "fall behind" in out
    assert str(results) in out
    model, config = load_checkpoint(tmp_path / "lea_net.pt")
    best = next(row for row in results.rows if row.variant == "caan_mobilenet")
    assert (config["variant"], config["attention_point"], config["image_size"]) == \
        ("caan_mobilenet", best.attention_point, 32)
    assert config["map_scale"] > 0
    # the checkpoint is the model the cross-validation trained and scored on fold 0, not a new one
    dataset = make_dataset("retina", n_normal=12, n_anomalous=4, image_size=32, seed=0)
    fold = prepare_folds(dataset, folds=2, colorizer_epochs=1, progress=False, cache_dir=tmp_path / "fold_maps")[0]
    test = torch.from_numpy(fold.test_index)
    row = next(result for result in results.results if (result.variant, result.attention_point) ==
               ("caan_mobilenet", best.attention_point))
    assert evaluate(model, dataset.images[test], fold.scaled_maps[test], dataset.labels[test])["auroc"] == \
        row.folds[0]["auroc"]
    assert json.loads((tmp_path / "results.json").read_text())["config"]["seed"] == 0


def test_the_relatives_command_runs_the_chosen_methods_and_saves_them(capsys, tmp_path):
    argv = ["relatives", "--methods", "atacnet", "--image-size", "32", "--n-normal", "8", "--n-anomalous", "4",
            "--folds", "2", "--epochs", "1", "--quiet", "--out", str(tmp_path)]
    assert main(argv) == 0
    rows, config = load_comparison(tmp_path / "results.json")
    assert [row.label for row in rows] == ["ATAC-Net", "ATAC-Net without zoom"] and config["folds"] == 2
    assert (tmp_path / "results.md").read_text() in capsys.readouterr().out
    assert _exit_code(["relatives", "--methods", "atacnet,lea"]) == 2
    assert "unknown method(s) lea" in capsys.readouterr().err


def test_the_relatives_command_resumes_a_saved_run_and_refuses_other_options(capsys, tmp_path):
    argv = ["relatives", "--methods", "baseline", "--image-size", "32", "--n-normal", "8", "--n-anomalous", "4",
            "--folds", "2", "--epochs", "1", "--quiet", "--out", str(tmp_path)]
    assert main(argv) == 0
    first = (tmp_path / "results.json").read_text()
    capsys.readouterr()
    assert main([*argv, "--resume"]) == 0
    assert "1 finished method(s) kept" in capsys.readouterr().out
    assert load_comparison(tmp_path / "results.json")[0][0].folds == json.loads(first)["results"][0]["folds"]
    assert _exit_code([*argv, "--resume", "--epochs", "2"]) == 2
    assert "cannot resume the run in" in capsys.readouterr().err
