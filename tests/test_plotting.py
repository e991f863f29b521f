"""Adjacency figures: binned from sparse coordinates, written as real PNG/PDF files."""

import numpy as np

from n2ngraph.plotting import adjacency_image, plot_adjacency


def test_adjacency_image_matches_dense_counts(small_graph):
    image = adjacency_image(small_graph, bins=100)  # bins > n: one pixel per node
    np.testing.assert_array_equal(image, small_graph.adjacency().toarray())
    skip_only = adjacency_image(small_graph, "n2nskip")
    assert skip_only.sum() == 2 and skip_only[5, 0] == 1


def test_adjacency_image_bins_preserve_edge_count(small_graph):
    image = adjacency_image(small_graph, bins=2)
    assert image.shape == (2, 2)
    assert image.sum() == 2 * small_graph.num_edges


def test_plot_adjacency_writes_png_and_pdf(tmp_path, small_graph):
    plot_adjacency([small_graph, small_graph], ["a", "b"], path=tmp_path / "fig")
    png, pdf = tmp_path / "fig.png", tmp_path / "fig.pdf"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000
    assert pdf.read_bytes()[:4] == b"%PDF"
