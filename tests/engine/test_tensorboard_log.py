"""TensorBoard logging (fcoslab.engine.tensorboard_log): which training steps reach the event file."""

import pytest

pytest.importorskip("tensorboard")

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402

from fcoslab.config import TrainConfig, load_config  # noqa: E402
from fcoslab.data import CocoDetection  # noqa: E402
from fcoslab.errors import FcoslabError  # noqa: E402
from fcoslab.evaluation.coco import Evaluation  # noqa: E402
from fcoslab.engine.tensorboard_log import TensorBoardLog  # noqa: E402


def scalars(run_dir, tag: str) -> list[tuple[int, float]]:
    events = EventAccumulator(str(run_dir / "tensorboard"))
    events.Reload()
    return [(e.step, round(e.value, 4)) for e in events.Scalars(tag)]


def steps(log: TensorBoardLog, first: int, last: int) -> None:
    for step in range(first, last + 1):
        log.step({"epoch": 0, "step": step, "loss": step / 10, "lr": 0.01})


def test_first_every_nth_and_last_step_before_an_evaluation_and_the_end(shapes_dir, tmp_path):
    log = TensorBoardLog(tmp_path, every=5)
    steps(log, 1, 7)
    val = CocoDetection(shapes_dir / "val.json", shapes_dir / "val")
    log.evaluation({"epoch": 1, "step": 7, "AP": 0.25}, Evaluation({}, [], None, list(val.index.names)), val)
    steps(log, 8, 9)
    log.close()
    assert scalars(tmp_path, "train/loss") == [(1, 0.1), (5, 0.5), (7, 0.7), (9, 0.9)]
    assert [s for s, _ in scalars(tmp_path, "train/lr")] == [1, 5, 7, 9]
    assert scalars(tmp_path, "val/AP") == [(7, 0.25)]


def test_a_run_shorter_than_the_interval_still_has_points(tmp_path):
    log = TensorBoardLog(tmp_path)  # the default, train.log_every's
    assert log.every == TrainConfig().log_every == 20
    steps(log, 1, 3)
    log.close()
    assert scalars(tmp_path, "train/loss") == [(1, 0.1), (3, 0.3)]


def test_log_every_is_a_config_key_of_at_least_one():
    assert load_config("shapes", ["train.log_every=5"]).train.log_every == 5
    with pytest.raises(FcoslabError, match="config key 'train.log_every' must be at least 1, got 0"):
        load_config("shapes", ["train.log_every=0"])
