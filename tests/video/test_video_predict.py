"""`emorec predict MODEL VIDEO [--faces]`: frames chosen as a stream, one row per face per frame,
tracks that keep their number, smoothing, and broken videos that keep what decoded."""

from __future__ import annotations

import csv

import numpy as np
import pytest
from PIL import Image
from video_files import numbered_frames, sliding_portrait, write_video

from emorec.errors import EmorecError
from emorec.faces.detect import Face
from emorec.video.frames import VideoFrames, is_video
from emorec.video.predict import FrameRowWriter, VideoPrediction
from emorec.video.track import IouTracker, TrackSmoother


@pytest.fixture(scope="module")
def counted_video(tmp_path_factory):
    """3 s at 10 fps of flat frames numbered by their grey level."""
    return write_video(tmp_path_factory.mktemp("v") / "count.mp4", numbered_frames(30))


def test_fps_picks_frames_by_time_and_every_by_count(counted_video):
    chosen = [(f.index, round(f.time_s, 2)) for f in VideoFrames(counted_video, fps=2)]
    assert chosen == [(i, i / 10) for i in range(0, 30, 5)]
    assert [f.index for f in VideoFrames(counted_video, fps=None, every=7)] == [0, 7, 14, 21, 28]
    grey = [f.image.getpixel((5, 5))[0] for f in VideoFrames(counted_video, fps=None, every=10)]
    assert grey == pytest.approx([0, 100, 200], abs=6)  # the right frames, decoded to RGB
    assert VideoFrames(counted_video, fps=2).expected() in (6, 7)


def test_frames_are_streamed_not_collected(counted_video):
    frames = iter(VideoFrames(counted_video, fps=None, every=1))
    first = next(frames)
    assert first.index == 0  # a generator: the rest is not decoded yet
    frames.close()


def test_a_truncated_video_keeps_the_frames_before_the_break_and_says_where(tmp_path):
    rng = np.random.default_rng(0)
    noise = [Image.fromarray(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)) for _ in range(30)]
    data = write_video(tmp_path / "whole.mkv", noise).read_bytes()
    cut = tmp_path / "cut.mkv"
    cut.write_bytes(data[: len(data) // 2])
    source = VideoFrames(cut, fps=None, every=1)
    frames = [f.index for f in source]
    assert 5 < len(frames) < 30 and frames == list(range(len(frames)))
    assert source.stopped.startswith(f"stopped after frame {frames[-1]} (") and "declares 3.00 s" in source.stopped
    whole = VideoFrames(tmp_path / "whole.mkv", fps=None, every=1)
    assert len(list(whole)) == 30 and whole.stopped is None


def test_a_file_that_is_not_a_video_is_a_one_line_error(tmp_path):
    bad = tmp_path / "fake.mp4"
    bad.write_bytes(b"this is not a video at all" * 20)
    with pytest.raises(EmorecError) as info:
        list(VideoFrames(bad))
    assert "fake.mp4" in str(info.value) and "\n" not in str(info.value)
    assert is_video(bad) and not is_video(tmp_path / "a.jpg")


def test_the_tracker_keeps_numbers_while_faces_move_and_starts_new_ones_after_a_gap():
    tracker = IouTracker(min_iou=0.3, max_gap_s=1.0)
    assert tracker.update([(0, 0, 10, 10), (50, 50, 60, 60)], 0.0) == [1, 2]
    assert tracker.update([(52, 51, 62, 61), (1, 0, 11, 10)], 0.25) == [2, 1]  # order of detection does not matter
    assert tracker.update([(2, 0, 12, 10)], 0.5) == [1]  # face 2 out of view
    assert tracker.update([(3, 0, 13, 10), (53, 52, 63, 62)], 0.75) == [1, 2]  # back within the gap
    assert tracker.update([(54, 52, 64, 62)], 2.5) == [3]  # gone for longer than max_gap_s: a new track


def test_smoothing_averages_each_track_over_the_trailing_window():
    smoother = TrackSmoother(1.0)
    assert smoother.smooth(1, 0.0, [1.0, 0.0]).tolist() == [1.0, 0.0]
    assert smoother.smooth(1, 0.5, [0.0, 1.0]).tolist() == [0.5, 0.5]
    assert smoother.smooth(2, 0.5, [0.2, 0.8]).tolist() == [0.2, 0.8]  # tracks are apart
    assert smoother.smooth(1, 1.2, [0.0, 1.0]).tolist() == [0.0, 1.0]  # t=0 left the window (>= 1 s old)


class _Stub:
    """A predictor whose answer is fixed, and a detector that finds a box following a bright square."""

    labels = ["happy", "sad"]

    def __init__(self):
        self.calls = 0

    def predict_images(self, images):
        self.calls += 1
        return np.tile([0.9, 0.1] if self.calls % 2 else [0.1, 0.9], (len(images), 1))


class _BrightSquare:
    def detect(self, image):
        pixels = np.asarray(image.convert("L"))
        ys, xs = np.nonzero(pixels > 240)
        if not len(xs):
            return []
        return [Face((float(xs.min()), float(ys.min()), float(xs.max()) + 1, float(ys.max()) + 1), 0.99)]


def _square_frames(count: int, gap: range = range(0)) -> list[Image.Image]:
    frames = []
    for i in range(count):
        frame = Image.new("RGB", (96, 64), (40, 40, 40))
        if i not in gap:
            frame.paste((255, 255, 255), (10 + 2 * i, 10, 40 + 2 * i, 40))
        frames.append(frame)
    return frames


def test_rows_per_face_per_frame_with_tracks_no_face_rows_and_smoothed_labels(tmp_path):
    video = write_video(tmp_path / "square.mp4", _square_frames(10, gap=range(4, 5)), fps=5)
    prediction = VideoPrediction(_Stub(), video, _BrightSquare(), fps=None, every=1, top_k=2, smooth_s=10.0)
    rows = list(prediction.rows())
    assert [r.frame for r in rows] == list(range(10))
    assert rows[4].top[0][0] == "no_face" and rows[4].box is None and rows[4].track is None
    faces = [r for r in rows if r.box is not None]
    assert {r.track for r in faces} == {1}  # one person, kept across the one-frame gap (0.2 s < 1 s)
    x1 = [r.box[0] for r in faces]
    assert x1 == sorted(x1) and x1[-1] - x1[0] >= 12  # the box follows the square (H.264 blurs its edge)
    # The stub alternates happy / sad: raw labels flip, the 10 s average settles on the first answer.
    assert [r.raw_top[0][0] for r in faces][:4] == ["happy", "sad", "happy", "sad"]
    assert [r.top[0] for r in faces[:4]] == [("happy", pytest.approx(0.9)), ("happy", pytest.approx(0.5)),
                                             ("happy", pytest.approx(1.9 / 3)), ("happy", pytest.approx(0.5))]
    assert prediction.stats.frames == 10 and prediction.stats.tracks == 1 and prediction.stats.stopped is None

    out = tmp_path / "rows.csv"
    writer = FrameRowWriter(out, 2, faces=True, smoothed=True)
    for row in rows:
        writer.write(row)
    writer.close()
    table = list(csv.DictReader(out.open()))
    assert list(table[0])[:9] == ["path", "frame", "time_s", "track", "x1", "y1", "x2", "y2", "det_score"]
    assert table[4]["label_1"] == "no_face" and table[4]["x1"] == "" and table[4]["track"] == ""
    assert table[1]["raw_label_1"] == "sad" and table[1]["label_1"] == "happy"


def test_without_a_detector_the_whole_frame_is_classified(counted_video):
    rows = list(VideoPrediction(_Stub(), counted_video, None, fps=1, top_k=1).rows())
    assert [(r.frame, r.box, r.top[0][0]) for r in rows] == [(0, None, "happy"), (10, None, "sad"), (20, None, "happy")]


def test_cli_predict_faces_on_a_folder_mixing_a_video_a_photo_and_a_broken_file(tmp_path, class_images, capsys):
    pytest.importorskip("facenet_pytorch")
    from face_photos import shipped_photo
    from run_factory import make_run

    from emorec.cli import main

    run = make_run(tmp_path / "run", class_images(tmp_path / "data", {"happy": 3, "sad": 3, "angry": 3}))
    folder = tmp_path / "inputs"
    folder.mkdir()
    portrait = shipped_photo("astronaut")
    write_video(folder / "walk.mp4", sliding_portrait(portrait, 20), fps=10)
    portrait.save(folder / "still.jpg")
    (folder / "broken.mov").write_bytes(b"not a video" * 50)
    out = tmp_path / "rows.csv"
    code = main(["predict", str(run), str(folder), "--faces", "--fps", "5", "--smooth", "1", "--output", str(out),
                 "--device", "cpu", "--annotate", str(tmp_path / "drawn")])
    err = capsys.readouterr().err
    assert code == 0, err
    table = list(csv.DictReader(out.open()))
    video_rows = [r for r in table if r["path"].endswith("walk.mp4")]
    assert [int(r["frame"]) for r in video_rows] == [0, 2, 4, 6, 8, 10, 12, 14, 16, 18]  # 5 of 10 fps
    assert {r["track"] for r in video_rows} == {"1"}  # one face, one track all along
    x1 = [float(r["x1"]) for r in video_rows]
    assert x1 == sorted(x1) and 60 <= x1[-1] - x1[0] <= 90  # the face moved 4 px a frame: 72 px
    assert all(r["raw_label_1"] for r in video_rows)
    photo_rows = [r for r in table if r["path"].endswith("still.jpg")]
    assert len(photo_rows) == 1 and photo_rows[0]["frame"] == "0" and photo_rows[0]["x1"] != ""
    assert "skipped" in err and "broken.mov" in err and "skipped 1 unreadable" in err
    assert "analysed 11 frames of 2 inputs" in err
    import av

    with av.open(str(tmp_path / "drawn" / "walk.annotated.mp4")) as container:
        rate = float(container.streams.video[0].average_rate)
        drawn = [f.to_image() for f in container.decode(video=0)]
    assert len(drawn) == 10 and drawn[0].size == (640, 480)
    assert rate == pytest.approx(5)  # the analysed rate: as long as the input
    box = [float(video_rows[0][k]) for k in ("x1", "y1", "x2", "y2")]
    diff = np.abs(np.asarray(drawn[0]).astype(int) - np.asarray(sliding_portrait(portrait, 1)[0]).astype(int)).mean(axis=2)
    x1, y1, x2, y2 = (int(v) for v in box)
    assert diff[y1 + 5: y2 - 5, x1 - 1: x1 + 2].mean() > 30  # the box's left edge is drawn
    assert diff[400:470, 560:630].mean() < 15  # far from the face: only the codec's noise
    timeline = Image.open(tmp_path / "drawn" / "walk.timeline.png")
    assert timeline.size[0] >= 600


def test_detect_every_n_runs_the_detector_on_every_nth_frame_and_reuses_its_boxes(counted_video):
    class Counting(_BrightSquare):
        calls = 0

        def detect(self, image):
            Counting.calls += 1
            return [Face((5.0, 5.0, 30.0, 30.0), 0.9)]

    prediction = VideoPrediction(_Stub(), counted_video, Counting(), fps=None, every=1, top_k=1, detect_every=4)
    rows = list(prediction.rows())
    assert len(rows) == 30 and Counting.calls == 8 == prediction.stats.detected  # frames 0, 4, ..., 28
    assert {tuple(r.box) for r in rows} == {(5.0, 5.0, 30.0, 30.0)} and {r.track for r in rows} == {1}
    with pytest.raises(EmorecError, match="--detect-every"):
        list(VideoPrediction(_Stub(), counted_video, Counting(), detect_every=0).rows())
