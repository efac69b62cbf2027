"""Detectors find the faces in real photos, none in photos without faces, and nearly all of the
faces of a FER-2013 collage at the right places."""

from __future__ import annotations

import pytest
from face_photos import FACE_PHOTOS, NO_FACE_PHOTOS, fer_faces, shipped_photo, textured_background
from PIL import Image

from emorec.errors import EmorecError
from emorec.faces.collage import box_iou, make_collage, match_boxes
from emorec.faces.detect import LANDMARK_NAMES, create_detector, largest_face

# The astronaut's (Eileen Collins') face in scikit-image's 512 x 512 photo, hairline to chin and
# cheek to cheek, read off the photo on a 20 px grid.
ASTRONAUT_FACE = (175, 75, 270, 168)


@pytest.mark.parametrize("name", FACE_PHOTOS)
def test_mtcnn_finds_the_one_face_of_a_portrait(mtcnn, name):
    photo = shipped_photo(name)
    faces = mtcnn.detect(photo)
    assert len(faces) == 1
    x1, y1, x2, y2 = faces[0].box
    assert 0 <= x1 < x2 <= photo.width and 0 <= y1 < y2 <= photo.height
    assert 0.9 <= faces[0].score <= 1.0
    assert set(faces[0].landmarks) == set(LANDMARK_NAMES)
    for x, y in faces[0].landmarks.values():
        assert x1 <= x <= x2 and y1 <= y <= y2
    left, right = faces[0].landmarks["left_eye"], faces[0].landmarks["right_eye"]
    assert left[0] < right[0]  # "left" is the eye on the left of the photo


def test_the_astronauts_box_is_her_face(mtcnn):
    face = mtcnn.detect(shipped_photo("astronaut"))[0]
    assert box_iou(face.box, ASTRONAUT_FACE) > 0.6


@pytest.mark.parametrize("name", NO_FACE_PHOTOS)
def test_mtcnn_finds_no_face_where_there_is_none(mtcnn, name):
    assert mtcnn.detect(shipped_photo(name)) == []


def test_blank_and_tiny_images_have_no_face(mtcnn):
    assert mtcnn.detect(Image.new("RGB", (300, 200), "gray")) == []
    assert mtcnn.detect(Image.new("RGB", (8, 8), "white")) == []
    assert mtcnn.detect(Image.new("L", (64, 64), 30)) == []


def test_mtcnn_finds_the_faces_of_a_fer2013_collage_in_reading_order(mtcnn, fer2013):
    faces = [image for image, _ in fer_faces(fer2013, 8, seed=3)]
    photo, truth = make_collage(faces, textured_background(), columns=4, sizes=(120, 160), seed=3)
    found = mtcnn.detect(photo)
    hits, false = match_boxes(truth, [f.box for f in found], iou=0.3)
    assert hits >= 7 and false == 0
    assert [f.box[0] for f in found] == sorted(f.box[0] for f in found)


def test_haar_cascade_is_available_behind_the_same_interface():
    haar = create_detector("haar")
    faces = haar.detect(shipped_photo("astronaut"))
    assert len(faces) == 1 and faces[0].landmarks is None
    assert box_iou(faces[0].box, ASTRONAUT_FACE) > 0.5


def test_unknown_detector_names_the_choices():
    with pytest.raises(EmorecError, match="mtcnn, haar"):
        create_detector("yolo")


def test_largest_face_is_the_subject():
    from emorec.faces.detect import Face

    small, big = Face((0, 0, 10, 10), 0.99), Face((50, 50, 90, 100), 0.91)
    assert largest_face([small, big]) is big
    assert largest_face([]) is None


class _ScriptedMTCNN:
    """Stands in for facenet-pytorch's MTCNN: returns fixed boxes and records what it was shown."""

    def __init__(self, boxes):
        self.boxes, self.seen = boxes, []

    def detect(self, image, landmarks=True):
        import numpy as np

        self.seen.append(image)
        marks = [[(b[0], b[1])] * 5 for b in self.boxes]
        return np.array(self.boxes, dtype=float), np.ones(len(self.boxes)), np.array(marks, dtype=float)


def _scripted(boxes):
    from emorec.faces.detect import MTCNNDetector

    detector = MTCNNDetector.__new__(MTCNNDetector)
    detector.mtcnn, detector.min_score, detector.min_face_size = _ScriptedMTCNN(boxes), 0.9, 20
    return detector


def test_a_box_with_nothing_left_inside_the_photo_is_dropped_and_others_are_clipped():
    detector = _scripted([(-50, 10, -5, 60), (20, 30, 60, 80), (90, 10, 140, 50), (100, 200, 140, 260)])
    faces = detector.detect(Image.new("RGB", (120, 100)))
    # Left of the photo and below it: zero area after clipping, dropped (not a 1 x 1 crop).
    assert [f.box for f in faces] == [(20.0, 30.0, 60.0, 80.0), (90.0, 10.0, 120.0, 50.0)]


@pytest.mark.parametrize("make_detector", ["mtcnn", "haar"])
def test_transparent_pixels_reach_the_detector_as_white(make_detector):
    photo = Image.new("RGBA", (80, 60), (0, 0, 0, 0))  # fully transparent black: white once composited
    if make_detector == "mtcnn":
        detector = _scripted([])
        detector.detect(photo)
        seen = detector.mtcnn.seen[0]
    else:
        detector = create_detector("haar")
        seen = []
        real = detector.cascade

        class Recording:
            def detectMultiScale(self, gray, **kwargs):
                seen.append(Image.fromarray(gray))
                return real.detectMultiScale(gray, **kwargs)

        detector.cascade = Recording()
        detector.detect(photo)
        seen = seen[0]
    assert min(seen.convert("L").getextrema()) == 255


def test_detection_on_a_large_photo_runs_scaled_down_and_boxes_come_back_in_its_pixels(mtcnn):
    from emorec.faces.detect import detect_faces

    photo = shipped_photo("astronaut")  # 512 x 512
    big = photo.resize((2048, 2048), Image.Resampling.BICUBIC)
    shown = []
    real_detect = mtcnn.detect

    class Spy:
        def detect(self, image):
            shown.append(image.size)
            return real_detect(image)

    faces = detect_faces(Spy(), big, detect_size=600)
    assert shown == [(600, 600)]
    assert len(faces) == 1
    assert box_iou(faces[0].box, tuple(4 * v for v in ASTRONAUT_FACE)) > 0.6
    assert all(0 <= x <= 2048 and 0 <= y <= 2048 for x, y in faces[0].landmarks.values())
    assert detect_faces(Spy(), photo, detect_size=600) and shown[-1] == (512, 512)  # small photos as they are
