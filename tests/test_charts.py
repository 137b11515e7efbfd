"""Server-side SVG line charts: escaped labels, points where the data says, empty and odd data."""
import re
import xml.etree.ElementTree as ET

from prefcore.charts import line_chart, nice_ticks

SVG = "{http://www.w3.org/2000/svg}"


def test_labels_are_escaped():
    svg = line_chart({'<img src=x onerror="alert(1)">': [(0, 1), (1, 2)]}, title="</svg><script>alert(1)</script>",
                     hlines={"<b>ref</b>": 1.5})
    assert "<script" not in svg and "<img" not in svg and "<b>" not in svg
    assert "&lt;script&gt;" in svg and "&lt;img src=x onerror=&quot;alert(1)&quot;&gt;" in svg
    ET.fromstring(svg)  # still well-formed XML


def test_points_follow_the_data():
    svg = line_chart({"loss": [(0, 0.7), (5, 0.5), (10, 0.3)]}, width=300, height=200, title="Loss")
    root = ET.fromstring(svg)
    (line,) = root.iter(f"{SVG}polyline")
    points = [tuple(map(float, p.split(","))) for p in line.get("points").split()]
    assert len(points) == 3
    xs, ys = zip(*points, strict=True)
    assert xs[0] < xs[1] < xs[2] and abs((xs[1] - xs[0]) - (xs[2] - xs[1])) < 0.2  # evenly spaced steps
    assert ys[0] < ys[1] < ys[2]  # falling loss goes down the screen (SVG y grows downwards)
    assert abs((ys[1] - ys[0]) - (ys[2] - ys[1])) < 0.2  # rounded to 0.1 px


def test_non_finite_points_are_skipped_and_empty_charts_say_so():
    svg = line_chart({"kl": [(0, float("nan")), (1, 0.1), (2, float("inf")), (3, 0.2)]}, title="KL")
    (line,) = ET.fromstring(svg).iter(f"{SVG}polyline")
    assert len(line.get("points").split()) == 2
    empty = line_chart({"kl": []}, title="KL")
    assert "no data yet" in empty
    ET.fromstring(empty)
    single = line_chart({"kl": [(3, 0.5)]}, title="KL")
    assert len(list(ET.fromstring(single).iter(f"{SVG}circle"))) == 1


def test_two_series_get_two_lines_and_a_legend():
    svg = line_chart({"chosen": [(0, 0), (1, -0.2)], "rejected": [(0, 0), (1, -0.9)]}, title="Rewards")
    root = ET.fromstring(svg)
    assert len(list(root.iter(f"{SVG}polyline"))) == 2
    legend = [t.text for t in root.iter(f"{SVG}text") if t.get("class") == "chart-legend"]
    assert sorted(legend) == ["chosen", "rejected"]


def test_reference_line_is_drawn_when_near_the_data():
    svg = line_chart({"loss": [(0, 0.6931), (1, 0.6930)]}, title="Loss", hlines={"ln 2": 0.6931})
    assert re.search(r'class="chart-ref"', svg) and "ln 2" in svg


def test_nice_ticks_are_round_and_cover_the_range():
    assert nice_ticks(0, 1) == [0.0, 0.25, 0.5, 0.75, 1.0]
    ticks = nice_ticks(0.13, 0.91)
    assert all(0.13 <= t <= 0.91 for t in ticks) and len(ticks) >= 3


def test_a_range_a_float_wide_ends_its_ticks():
    """A loss flat one float above ln 2 (the run page draws ln 2 beside it): the tick step was under half a float's
    spacing, `value += step` never moved, and the run's page never answered."""
    import math

    a = math.log(2)
    assert nice_ticks(a, math.nextafter(a, 1)) == [a, math.nextafter(a, 1)]
    chart = line_chart({"loss": [(1, math.nextafter(a, 1)), (2, math.nextafter(a, 1))]}, hlines={"ln 2": a})
    assert "<polyline" in chart and "ln 2" in chart


def test_values_near_the_float_limit_draw_without_an_error():
    """Finite values of ±1e308 made the range infinite, and the chart a 500 (OverflowError)."""
    chart = line_chart({"metric": [(1, -1e308), (2, 1e308), (3, 0.0)]})
    assert chart.startswith("<svg") and chart.endswith("</svg>")
    assert line_chart({"metric": [(1, 1.7e308), (2, 1.7e308)]}).endswith("</svg>")
