"""How each built-in model is made, scored and meant to be used: the parts of its card that are
not measurements.

`commands` are `emorec` command lines with `{shared}` (the folder holding datasets/ and weights/,
`../shared` in this project) and `{work}` (where the runs go) filled in by `zoo.build`; they are
the card's "how to reproduce" and what `emorec models build NAME` runs.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from emorec.errors import EmorecError


@dataclass(frozen=True)
class Scoring:
    """Which images a figure is measured on: `data` (a CSV, `{shared}` filled in, or "splits.csv"
    shipped beside the model) and the `split` of it."""

    data: str
    split: str
    description: str


@dataclass(frozen=True)
class Recipe:
    name: str
    title: str
    input: str
    data: str  # the dataset, with its licence and where it comes from
    split: str  # the exact split, in words
    commands: tuple[tuple[str, ...], ...]
    run: str  # the run directory the commands leave, `{work}` filled in
    check: Scoring  # the figure a test re-scores from `{shared}` (the card's headline scoring)
    extra: tuple[Scoring, ...] = ()  # further figures measured at build time only
    tta: str | None = None  # the TTA mode also measured on `check` (the headline when set)
    ship_splits: bool = False  # ship the run's split as splits.csv (paths relative to the dataset)
    dataset_root: str = ""  # `{shared}`-relative folder the shipped split's paths are relative to
    intended_use: str = ""
    limits: tuple[str, ...] = ()
    not_for: tuple[str, ...] = ()
    size_note: str = ""
    training_note: str = ""
    speed_image_side: int = 256  # the side of the inputs the speed is measured on: what users feed it
    references: tuple[str, ...] = field(default=())


NOT_FOR_PEOPLE = (
    "Decisions about individual people: hiring, grading, policing, credit, insurance, medical or legal "
    "judgements, or any inference about a person's inner state, character or intent. A facial expression is "
    "not a felt emotion (Barrett et al., 2019), and this model labels pixels, not people.",
    "Surveillance or monitoring of people who have not agreed to it.",
)

FACES = Recipe(
    name="faces",
    title="Facial expression of a face crop (FER-2013, 7 expressions)",
    input="a face crop (any size and mode; decoded to RGB, resized to 96 px); for photos use `--faces`, which "
          "finds each face (MTCNN) and classifies its crop",
    data="FER-2013 (Goodfellow et al., ICML 2013 workshop challenge; collected by Google image search): 35,887 "
         "48x48 grayscale face crops, 7 expressions. Distributed for research through the Kaggle challenge; "
         "no licence beyond that is stated, so treat the weights as research-only as well. This build reads "
         "the copy in `../shared/datasets/fer2013` (28,709 Training + 3,589 PublicTest images).",
    split="the official split: trained on all 28,709 Training images; validation, checkpoint choice and every "
          "figure here on the 3,589 PublicTest images (`split=val` in labels.csv). PrivateTest is not part of "
          "the shared copy, so PublicTest was used to pick the epoch: its figure is slightly optimistic. The "
          "copy-free figure drops the PublicTest images that have an exact copy in Training.",
    commands=(
        ("train", "--config", "configs/faces.yaml", "--set", "data.source={shared}/datasets/fer2013",
         "train.epochs=12", "augment.rotation=10", "augment.random_erasing=0.25", "train.name=faces",
         "train.output_dir={work}"),
        ("train", "--resume", "{work}/faces", "--set", "train.epochs=15", "optim.max_lr=0.0003", "optim.lr=0.00003"),
    ),
    run="{work}/faces",
    check=Scoring("{shared}/datasets/fer2013/labels.csv", "val", "PublicTest (FER-2013's official val split)"),
    extra=(Scoring("uncopied:{shared}/datasets/fer2013/labels.csv", "val",
                   "PublicTest without the images that have an exact copy in Training"),),
    tta="ten-crop",
    speed_image_side=48,
    intended_use="Research on facial expressions in images: labelling face crops or the faces in photos and "
                 "videos (`emorec predict faces PHOTO --faces`), as a baseline, or as a starting point to "
                 "fine-tune on your own faces.",
    limits=(
        "Trained on 48 px grayscale, mostly frontal faces from web image search: expect lower accuracy on "
        "profile views, occlusion, strong lighting, small or blurred faces, and on children and older people, "
        "who are rare in FER-2013.",
        "FER-2013's labels are noisy (human accuracy on it is about 65%) and posed expressions dominate; "
        "'disgust' has 1.5% of the training images and is the least reliable class.",
        "FER-2013 is skewed in age, gender and skin tone (it was gathered from search engines); accuracy across "
        "groups was not measured here, so do not assume it is even.",
        "Seven basic expressions only; mixtures, intensity and context are not modelled.",
    ),
    not_for=NOT_FOR_PEOPLE,
    size_note="tf_efficientnet_lite0 and a one-hidden-layer head at 96 px; weights stored as float16 "
              "(loaded as float32), which halves the file; the figures below were measured on these stored weights.",
    training_note="configs/faces.yaml (pretrained ImageNet tf_efficientnet_lite0 from `../shared/weights`, faces "
                  "upsampled from 48 to 96 px, crop + flip, label smoothing 0.1, AdamW + OneCycle), run for 12 "
                  "epochs instead of the one-hour 8, with rotation 10 and random erasing 0.25 against the "
                  "overfitting of the longer run, then extended by 3 epochs: a second, shorter OneCycle from the "
                  "finished run (warm-up from 3e-5 to a peak of 3e-4, a third of the first cycle's). The best epoch "
                  "by PublicTest accuracy is kept (epoch 15; the first cycle's best was epoch 11 at 69.3% one "
                  "view, 69.7% ten-crop).",
    references=("Goodfellow et al., Challenges in Representation Learning: A report on three machine learning "
                "contests, 2013.", "Mitchell et al., Model Cards for Model Reporting, FAT* 2019.",
                "Barrett et al., Emotional Expressions Reconsidered, Psychological Science in the Public Interest, 2019."),
)

PHOTOS = Recipe(
    name="photos",
    title="Emotion a photo evokes (Emotion6, 6 emotions)",
    input="a whole photo (any size and mode; decoded to RGB, resized to the model's input size)",
    data="Emotion6 (Peng et al., CVPR 2015): 1,980 Flickr photos in the original, 1,584 in this project's copy "
         "(264 per emotion: anger, disgust, fear, joy, sadness, surprise), each labelled by the emotion most "
         "of its 15 annotators felt. Released for research; the photos keep their Flickr owners' copyright, "
         "so treat the weights as research-only as well. This build reads `../shared/datasets/emotion6`.",
    split="`emorec fit`'s stratified split of all 1,584 images (seed 42; 80% train, 10% val, 10% test), shipped "
          "beside the model as splits.csv: the test split was read once by the search, after choosing. Probes are "
          "chosen by 5-fold "
          "cross-validation over train + val and then refit on both, so for a probe the val split is seen and "
          "the held-out test split is the figure re-checked here.",
    commands=(
        ("fit", "{shared}/datasets/emotion6", "--budget", "25m", "--backbone",
         "tf_efficientnet_lite0={shared}/weights/tf_efficientnet_lite0/model.safetensors", "--output",
         "{work}/photos-fit"),
    ),
    run="{work}/photos-fit/best",
    check=Scoring("splits.csv", "test", "the held-out test split of splits.csv (read once by fit, after choosing)"),
    extra=(Scoring("splits.csv", "val", "the val split of splits.csv (seen in training when the chosen model is a refit probe)"),),
    tta="views",
    ship_splits=True,
    dataset_root="{shared}/datasets/emotion6",
    intended_use="Research on the emotions images evoke (affective image analysis): scoring collections of "
                 "photos, a baseline for Emotion6-style data, or the starting point of a model for your own "
                 "label set (`emorec fit` on your folder).",
    limits=(
        "Emotion6 is small (1,584 photos) and drawn from Flickr searches for emotion words: scenes, animals "
        "and people in Western, English-language photography dominate. Expect lower accuracy on other "
        "cultures' imagery, screenshots, memes, illustrations and medical or news photos.",
        "A label is the majority of 15 viewers' felt emotions; many photos split their votes, so one "
        "label per photo is a simplification (votes.csv in the dataset has the distributions).",
        "Six emotions (Ekman's basic set minus contempt); Mikels' eight (FI, EmoSet) are not covered.",
    ),
    not_for=NOT_FOR_PEOPLE,
    size_note="one tf_efficientnet_lite0 backbone: `emorec fit` was given only lite0, since an ensemble of the "
              "three Lite backbones (about 3 points more macro-F1, issue 23) needs about 25 MB even as float16. "
              "Weights stored as float16 (loaded as float32); the figures below were measured on these stored weights.",
    training_note="`emorec fit` with a 25-minute budget on 2 CPU cores searched frozen-feature probes and heads of "
                  "lite0 (last-level and multi-level features) and chose by validation, probes by 5-fold "
                  "cross-validation: a linear probe on the multi-level features (mean and std of every stage), refit "
                  "on train + val. On the build machine, shared with other work, the LP-FT and the full fine-tunes "
                  "did not fit in what was left of the budget and were skipped (fit's leaderboard lists them); on "
                  "Emotion6 the probe beat the 224 px LP-FT before (issue 23), so little is lost.",
    references=("Peng et al., A Mixed Bag of Emotions: Model, Predict, and Transfer Emotion Distributions, CVPR 2015.",
                "Mitchell et al., Model Cards for Model Reporting, FAT* 2019."),
)

RECIPES = {recipe.name: recipe for recipe in (FACES, PHOTOS)}


def recipe_of(name: str) -> Recipe:
    if name not in RECIPES:
        raise EmorecError(f"unknown built-in model '{name}'; the built-in models are {', '.join(RECIPES)}")
    return RECIPES[name]
