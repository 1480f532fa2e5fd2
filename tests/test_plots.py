"""The shared figures (lea_tiny.plots), and the demo's two figures drawn with them."""

import pytest
import torch
from matplotlib.figure import Figure

from lea_tiny.__main__ import plot_attention, plot_maps
from lea_tiny.attention import apply_attention, make_model
from lea_tiny.plots import attention_figure, attention_views, maps_figure, points_figure

SIZE = 32


def _model(attention_point, variant="caan_mobilenet"):
    torch.manual_seed(0)
    return make_model(variant, adn="cnn", attention_point=attention_point, image_size=SIZE).eval()


@pytest.mark.parametrize("attention_point", [3, (1, 3)])
def test_attention_views_hold_eq_2_and_3_at_each_attention_point(dataset, folds, attention_point):
    model = _model(attention_point)
    views = attention_views(model, dataset.images[:4], folds[0].scaled_maps[:4])
    assert list(views) == list(model.attention_points)
    for point, view in views.items():
        size = SIZE // 2**point
        assert view["attention"].shape == (4, 1, size, size) and view["before"].shape[-2:] == (size, size)
        torch.testing.assert_close(view["after"], apply_attention(view["before"], view["attention"]))


def test_attention_views_refuse_a_model_without_attention(dataset, folds):
    with pytest.raises(ValueError, match="no attention point"):
        attention_views(make_model("baseline", adn="cnn", image_size=SIZE), dataset.images[:2], folds[0].scaled_maps[:2])


def test_the_attention_figure_has_a_row_per_shown_image_and_point(dataset, folds):
    views = attention_views(_model((1, 3)), dataset.images[:4], folds[0].scaled_maps[:4])
    figure = attention_figure(dataset.subset(range(4)), folds[0].scaled_maps[:4], views, shown=[0, 3])
    assert isinstance(figure, Figure)
    assert len(figure.axes) == 2 * 2 * 6 + 1  # two images x two points, six panels a row, and M's colour bar


def test_the_maps_and_points_figures_draw_every_panel(dataset, folds):
    assert len(maps_figure(dataset, folds[0].scaled_maps, shown=[0, 1, 2]).axes) == 2 * 3
    views = {point: attention_views(_model(point), dataset.images, folds[0].scaled_maps)[point] for point in (1, 2)}
    assert len(points_figure(dataset, folds[0].scaled_maps, views, index=0).axes) == 3 * 3 + 1


@pytest.mark.parametrize("attention_point", [3, (1, 3)])
def test_the_demo_figures_are_written_for_one_point_or_several(dataset, folds, tmp_path, attention_point):
    plot_maps(dataset, folds[0], tmp_path / "maps.png")
    plot_attention(_model(attention_point), dataset, folds[0], tmp_path / "attention.png")
    assert (tmp_path / "maps.png").stat().st_size > 0 and (tmp_path / "attention.png").stat().st_size > 0
