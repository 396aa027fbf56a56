"""The pages' pure logic (ui.learning_curves, ui.error_explorer, ui.attention_maps), called without Streamlit
running: small hand-made frames, expectations worked out by hand."""

from __future__ import annotations

from collections import namedtuple
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from ui import attention_maps as attention
from ui import error_explorer as errors
from ui import learning_curves as curves

HISTORY_COLUMNS = ["epoch", "phase", "loss", "accuracy", "val_loss", "val_accuracy", "lr", "seconds"]


def _history() -> pd.DataFrame:
    """Three tl epochs (lowest val_loss at 2) then two ft epochs (lowest val_loss at 4)."""
    return pd.DataFrame([
        (1, "tl", 1.0, 0.50, 0.90, 0.55, 1e-3, 10.0),
        (2, "tl", 0.8, 0.60, 0.70, 0.65, 1e-3, 11.0),
        (3, "tl", 0.6, 0.70, 0.75, 0.60, 1e-3, 12.0),
        (4, "ft", 0.5, 0.80, 0.60, 0.70, 1e-5, 20.0),
        (5, "ft", 0.4, 0.85, 0.65, 0.72, 1e-5, 21.0),
    ], columns=HISTORY_COLUMNS)


# ---------------------------------------------------------------- learning curves

def test_long_history_has_a_train_and_a_validation_row_per_epoch():
    long = curves.long_history(_history(), "run A", "accuracy")
    assert len(long) == 10
    assert set(long["run"]) == {"run A"}
    train, val = long[long["split"] == "train"], long[long["split"] == "validation"]
    assert train["value"].tolist() == [0.50, 0.60, 0.70, 0.80, 0.85]
    assert val["value"].tolist() == [0.55, 0.65, 0.60, 0.70, 0.72]
    assert val["phase"].tolist() == ["tl", "tl", "tl", "ft", "ft"]


def test_without_run_json_the_best_epoch_is_the_lowest_val_loss_of_each_phase():
    assert curves.best_epochs(_history(), None) == {"tl": 2, "ft": 4}


def test_the_best_epoch_comes_from_run_json_when_it_names_an_epoch_of_the_phase():
    assert curves.best_epochs(_history(), {"tl": 3, "ft": 5}) == {"tl": 3, "ft": 5}


def test_a_recorded_best_epoch_outside_its_phase_or_not_a_number_falls_back_to_the_lowest_val_loss():
    assert curves.best_epochs(_history(), {"tl": 4, "ft": "5"}) == {"tl": 2, "ft": 4}


def test_a_phase_without_any_val_loss_has_no_best_epoch():
    history = _history()
    history.loc[history["phase"] == "ft", "val_loss"] = np.nan
    assert curves.best_epochs(history, None) == {"tl": 2}


def test_fine_tuning_starts_half_an_epoch_after_the_last_tl_epoch():
    assert curves.fine_tune_boundary(_history()) == 3.5


def test_a_run_without_fine_tuning_has_no_boundary():
    history = _history()
    assert curves.fine_tune_boundary(history[history["phase"] == "tl"]) is None


def test_best_points_mark_the_validation_metric_at_each_best_epoch():
    points = curves.best_points(_history(), "run A", "loss", {"tl": 2, "ft": 4})
    assert points == [{"run": "run A", "phase": "tl", "epoch": 2, "value": 0.70},
                      {"run": "run A", "phase": "ft", "epoch": 4, "value": 0.60}]


def test_phase_summary_gives_the_last_epoch_and_the_val_accuracy_at_the_best_epoch():
    tl, ft = curves.phase_summary(_history(), "run A", {"tl": 2, "ft": 4})
    assert (tl["phase"], tl["epochs"], tl["last epoch"], tl["loss"], tl["val accuracy"]) == ("tl", 3, 3, 0.6, 0.60)
    assert (tl["best epoch"], tl["val accuracy at best"], tl["learning rate"]) == (2, 0.65, 1e-3)
    assert tl["seconds"] == pytest.approx(33.0)
    assert (ft["epochs"], ft["last epoch"], ft["val accuracy at best"], ft["seconds"]) == (2, 5, 0.70, 41.0)


def test_curve_tables_on_a_log_scale_leave_out_values_that_are_not_positive():
    history = _history()
    history.loc[0, "loss"] = 0.0
    linear = curves.curve_tables([("A", history, None)], "loss", log_scale=False)
    log = curves.curve_tables([("A", history, None)], "loss", log_scale=True)
    assert len(linear.long) == 10
    assert len(log.long) == 9
    assert (log.long["value"] > 0).all()


def test_curve_tables_draw_a_boundary_only_for_the_runs_that_fine_tuned():
    history = _history()
    tables = curves.curve_tables([("A", history, None), ("B", history[history["phase"] == "tl"], None)],
                                 "accuracy", log_scale=False)
    assert tables.boundaries.to_dict("records") == [{"run": "A", "epoch": 3.5}]
    assert sorted(zip(tables.summary["run"], tables.summary["phase"])) == [("A", "ft"), ("A", "tl"), ("B", "tl")]
    assert sorted(zip(tables.bests["run"], tables.bests["epoch"])) == [("A", 2), ("A", 4), ("B", 2)]


# ---------------------------------------------------------------- error explorer

def _predictions() -> pd.DataFrame:
    return pd.DataFrame([
        ("a.png", "cat", "cat", 0.90),
        ("b.png", "cat", "dog", 0.60),
        ("c.png", "dog", "cat", 0.80),
        ("d.png", "dog", "dog", 0.70),
        ("e.png", "bird", "cat", 0.95),
        ("f.png", "cat", "cat", 0.99),
        ("g.png", "bird", "bird", 0.50),
        ("h.png", "cat", "dog", 0.70),
    ], columns=["path", "label", "pred", "confidence"])


def _confusion() -> pd.DataFrame:
    """_predictions() counted by hand: rows true class, columns predicted class."""
    classes = ["bird", "cat", "dog"]
    return pd.DataFrame([[1, 1, 0],
                         [0, 2, 2],
                         [0, 1, 1]], index=classes, columns=classes)


def _paths(rows: pd.DataFrame) -> list[str]:
    return rows["path"].tolist()


def test_false_positives_of_a_class_are_the_other_classes_predicted_as_it_most_confident_first():
    rows, _ = errors.class_groups(_predictions(), "cat")["False positives"]
    assert _paths(rows) == ["e.png", "c.png"]  # bird -> cat 95 %, dog -> cat 80 %


def test_true_positives_of_a_class_are_its_images_predicted_as_it_most_confident_first():
    rows, _ = errors.class_groups(_predictions(), "cat")["True positives"]
    assert _paths(rows) == ["f.png", "a.png"]


def test_false_negatives_of_a_class_are_its_images_predicted_as_another_most_confident_first():
    rows, _ = errors.class_groups(_predictions(), "cat")["False negatives"]
    assert _paths(rows) == ["h.png", "b.png"]


def test_a_class_without_false_alarms_has_an_empty_false_positive_group():
    rows, what = errors.class_groups(_predictions(), "bird")["False positives"]
    assert rows.empty
    assert what == "other classes predicted as bird"


def test_cell_rows_are_the_images_of_that_true_and_predicted_class_most_confident_first():
    assert _paths(errors.cell_rows(_predictions(), "cat", "dog")) == ["h.png", "b.png"]


def test_equal_confidences_keep_their_predictions_order():
    rows = pd.DataFrame({"path": ["x", "y", "z"], "confidence": [0.5, 0.9, 0.5]})
    assert _paths(errors.by_confidence(rows)) == ["y", "x", "z"]


def test_the_default_cell_is_the_most_frequent_confusion():
    assert errors.default_cell(_confusion()) == ("cat", "dog")


def test_the_default_cell_on_a_tie_is_the_first_in_row_order():
    cm = _confusion()
    cm.loc["cat", "dog"] = 1  # now bird->cat, cat->dog and dog->cat all count 1
    assert errors.default_cell(cm) == ("bird", "cat")


def test_the_default_cell_without_any_confusion_is_the_first_class_on_the_diagonal():
    classes = ["bird", "cat"]
    assert errors.default_cell(pd.DataFrame([[3, 0], [0, 2]], index=classes, columns=classes)) == ("bird", "bird")


def test_top_confusions_list_the_off_diagonal_cells_largest_first_with_their_row_share():
    top = errors.top_confusions(_confusion())
    assert top.columns.tolist() == ["true", "predicted", "images", "share of true class"]
    assert list(zip(top["true"], top["predicted"], top["images"])) == [
        ("cat", "dog", 2), ("bird", "cat", 1), ("dog", "cat", 1)]
    assert top["share of true class"].tolist() == [0.5, 0.5, 0.5]  # 2 of 4 cats, 1 of 2 birds, 1 of 2 dogs


def test_top_confusions_stop_at_n():
    assert len(errors.top_confusions(_confusion(), n=1)) == 1


def test_a_diagonal_matrix_has_no_top_confusion():
    classes = ["bird", "cat"]
    assert errors.top_confusions(pd.DataFrame([[3, 0], [0, 2]], index=classes, columns=classes)).empty


def _report(rows) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["class", "precision", "recall", "f1", "support"])


def test_per_class_table_puts_support_first_then_each_stages_metrics():
    reports = {"tl": _report([("cat", 0.5, 0.4, 0.44, 5), ("dog", 0.6, 0.7, 0.65, 4)]),
               "ft": _report([("cat", 0.9, 0.8, 0.85, 5), ("dog", 0.7, 0.9, 0.79, 4)])}
    table = errors.per_class_table(reports)
    assert table.columns.tolist() == ["class", "support", "precision tl", "recall tl", "f1 tl",
                                      "precision ft", "recall ft", "f1 ft"]
    cat = table.set_index("class").loc["cat"]
    assert (cat["support"], cat["recall tl"], cat["recall ft"]) == (5, 0.4, 0.8)


def test_per_class_table_keeps_a_class_of_one_stage_only_with_empty_cells_for_the_other():
    reports = {"tl": _report([("cat", 0.5, 0.4, 0.44, 5)]),
               "ft": _report([("cat", 0.9, 0.8, 0.85, 5), ("dog", 0.7, 0.9, 0.79, 4)])}
    dog = errors.per_class_table(reports).set_index("class").loc["dog"]
    assert np.isnan(dog["f1 tl"])
    assert dog["f1 ft"] == 0.79


def test_per_class_long_has_one_row_per_class_metric_and_stage():
    reports = {"tl": _report([("cat", 0.5, 0.4, 0.44, 5), ("dog", 0.6, 0.7, 0.65, 4)]),
               "ft": _report([("cat", 0.9, 0.8, 0.85, 5), ("dog", 0.7, 0.9, 0.79, 4)])}
    long = errors.per_class_long(reports)
    assert len(long) == 2 * 3 * 2
    assert set(long["metric"]) == {"precision", "recall", "f1"}
    row = long[(long["class"] == "dog") & (long["metric"] == "recall") & (long["stage"] == "ft")]
    assert row["value"].tolist() == [0.9]


def _event(selection) -> SimpleNamespace:
    return SimpleNamespace(selection=selection)


def test_a_clicked_cell_is_read_from_the_chart_selection():
    assert errors.clicked_cell(_event({"cell": [{"true_class": "cat", "pred_class": "dog"}]})) == ("cat", "dog")
    assert errors.clicked_cell(_event({"cell": {"true_class": "cat", "pred_class": "dog"}})) == ("cat", "dog")


def test_no_click_or_an_incomplete_point_is_no_cell():
    assert errors.clicked_cell(None) is None
    assert errors.clicked_cell(_event({})) is None
    assert errors.clicked_cell(_event({"cell": [{"true_class": "cat"}]})) is None
    assert errors.clicked_cell(SimpleNamespace()) is None  # an event without a selection


def test_candidates_are_the_compared_runs_then_the_completed_ones_then_the_rest_each_once():
    ordered = errors.order_candidates(["r1", "r2", "r3", "r4"], selected=["r3", "r9"], completed=["r4", "r3"])
    assert ordered == ["r3", "r4", "r1", "r2"]


def test_gallery_captions_say_true_predicted_and_confidence():
    Row = namedtuple("Row", "label pred confidence")
    assert errors.gallery_caption(Row("cat", "dog", 0.876)) == "true cat → pred dog · 88%"
    assert errors.gallery_caption(Row("cat", "dog", float("nan"))) == "true cat → pred dog · ?"


# ---------------------------------------------------------------- attention maps

def test_runs_are_grouped_by_family_completed_first_and_newest_first():
    board = pd.DataFrame([
        ("v1", "completed", "2024-01-01T00:00:00Z", "vit"),
        ("v2", "completed", "2024-02-01T00:00:00Z", "vit"),
        ("v3", "running", "2024-03-01T00:00:00Z", "vit"),
        ("c1", "completed", "2024-01-15T00:00:00Z", "cnn"),
        ("h1", "failed", "2024-01-20T00:00:00Z", "hub"),
    ], columns=["id", "status", "created", "family"])
    families, _ = attention.group_by_family(board)
    assert families == {"vit": ["v2", "v1", "v3"], "cnn": ["c1"], "hub": ["h1"]}


def test_an_empty_board_has_no_family():
    families, board = attention.group_by_family(pd.DataFrame(columns=["id", "status", "created", "family"]))
    assert families == {}
    assert board.empty


def test_a_prediction_is_marked_correct_when_its_label_is_its_prediction():
    assert attention.correct_mark({"label": "cat", "pred": "cat"}) == "✓"
    assert attention.correct_mark({"label": "cat", "pred": "dog"}) == "✗"


def test_the_selection_text_names_the_class_and_the_outcome():
    assert attention.selection_text("cat", "incorrect") == "class cat, incorrect only"
    assert attention.selection_text("all", "correct") == "all classes, correct only"
    assert attention.selection_text("all", "all") == "all classes"


def test_no_rows_message_names_outcome_class_and_stage():
    assert attention.no_rows_message("cat", "incorrect", "tl") == "No incorrect test image of class cat in stage tl."


def test_the_cnn_shows_the_vits_stage_else_its_last_one():
    assert attention.cnn_stage("tl", ["tl", "ft"]) == "tl"
    assert attention.cnn_stage("ft", ["tl"]) == "tl"


def test_matched_rows_find_the_vits_images_among_the_cnns_in_the_vits_order():
    cnn_rows = attention.path_index(pd.DataFrame({"path": ["x.png", "y.png", "z.png"]}))
    assert cnn_rows == {"x.png": 0, "y.png": 1, "z.png": 2}
    assert attention.matched_rows(["z.png", "q.png", "x.png"], cnn_rows) == [2, 0]


def test_a_tile_caption_gives_each_models_prediction_or_says_the_cnn_never_saw_the_image():
    vit_row = {"label": "cat", "pred": "cat", "confidence": 0.9}
    cnn_row = {"label": "cat", "pred": "dog", "confidence": 0.75}
    path = "/data/demo/cat/a.png"
    assert attention.tile_caption(path, vit_row) == "cat/a.png · ViT: cat ✓ 90%"
    assert attention.tile_caption(path, vit_row, cnn_row, True) == "cat/a.png · ViT: cat ✓ 90% · CNN: dog ✗ 75%"
    assert attention.tile_caption(path, vit_row, None, True) == ("cat/a.png · ViT: cat ✓ 90% · CNN: not in its "
                                                                  "test split")
