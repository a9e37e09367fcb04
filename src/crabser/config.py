"""Typed run configuration, loaded from YAML and overridable with ``key.sub=value`` strings.

Defaults follow the Crab paper (section III) and, where the paper is silent, the reference
implementation (../shared/REFERENCE.md): tau = 0.1, leg sizes 256/512 -> 512, dropout 0.5.
``configs/demo.yaml`` departs from them for the CPU demo and says why.

Every value is checked on load: numbers must be finite (no ``nan`` / ``inf``) and in range (counts
>= 1, learning rates and ``loss.tau`` > 0, rates and shares within [0, 1]); a bad value, an unknown
key or invalid YAML is a :class:`ConfigError` of one line naming the file and the key.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from crabser.errors import ConfigError
from crabser.io import file_in_the_way

Count = Annotated[int, Field(ge=1)]  #: a size or a number of things: at least 1
Positive = Annotated[float, Field(gt=0)]  #: a learning rate, temperature, duration: above 0
NonNegative = Annotated[float, Field(ge=0)]  #: a weight or a strength: 0 switches it off
Fraction = Annotated[float, Field(ge=0, le=1)]  #: a share, ratio or probability
Dropout = Annotated[float, Field(ge=0, lt=1)]  #: 1 would drop everything


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class CorpusSource(_Section):
    """One corpus of a multi-corpus run (``data.corpora``)."""

    corpus: str  #: adapter name (crabser.data.corpora.CORPORA)
    root: str  #: the corpus folder (or CSV) handed to the adapter
    options: dict[str, Any] = {}  #: keyword arguments of the adapter
    #: its name in the ``corpus`` column and speaker ids (default: the adapter name); set it when
    #: one adapter reads two sources (two ``folder`` or ``csv`` roots)
    name: str | None = None


class DataConfig(_Section):
    """Where the utterances come from and how they are split."""

    #: adapter name (crabser.data.corpora.CORPORA); ignored when ``manifest`` is set
    corpus: str = "emodb"
    root: str = "data/emodb"  #: the corpus folder (or CSV) handed to the adapter
    options: dict[str, Any] = {}  #: keyword arguments of the adapter (e.g. IEMOCAP ``classes``)
    #: several corpora in one run, instead of corpus / root / options: their manifests are joined
    #: with a ``corpus`` column, and speakers become ``<corpus>:<speaker>`` (data.multicorpus)
    corpora: list[CorpusSource] = []
    manifest: str | None = None  #: an existing manifest (CSV/Parquet) to use instead of an adapter
    #: labels renamed or merged (``old: new``) or dropped (``old: null``) before data.labels
    #: applies, in every corpus an adapter reads (a ``manifest`` file is taken as it is), e.g.
    #: ``{boredom: null, calm: neutral}``
    label_map: dict[str, str | None] = {}
    labels: list[str] | None = None  #: the class set; None = every label in the manifest
    #: speaker_holdout = named/seeded speakers; given = the corpus's official split;
    #: folds = group k-fold (``crabser crossval``); random = stratified random split (corpora
    #: without speakers; not speaker-independent)
    protocol: Literal["speaker_holdout", "given", "folds", "random"] = "speaker_holdout"
    test_speakers: list[str] = []
    val_speakers: list[str] = []
    folds: int | None = Field(None, ge=2)  #: folds: number of folds (None = leave one group out)
    fold_by: str = "speaker"  #: folds: the grouping column (speaker, session)
    #: folds: validation speakers drawn from the training folds
    val_speakers_per_fold: int = Field(2, ge=0)
    #: folds: draw the validation speakers at random from all training speakers (none), or evenly
    #: from each training corpus (corpus; several corpora in data.corpora), so that the epoch
    #: chosen on them is not the best for the corpus with the most speakers only
    val_balance: Literal["none", "corpus"] = "none"
    val_fraction: Fraction = 0.1  #: random: share of each class held out for validation
    test_fraction: Fraction = 0.1  #: random: share of each class held out for test
    seed: int = 0  #: draws the held-out speakers (random: the utterances) when none are named
    on_error: Literal["skip", "raise"] = "skip"  #: bad audio: skip it with a warning, or stop

    @model_validator(mode="after")
    def _one_source(self) -> DataConfig:
        # a saved config states every field, so only values other than the defaults conflict
        defaults = {
            name: DataConfig.model_fields[name].default for name in ("corpus", "root", "options")
        }
        both = sorted(name for name, default in defaults.items() if getattr(self, name) != default)
        if self.corpora and both:
            raise ValueError(f"data.corpora lists the corpora: remove data.{', data.'.join(both)}")
        return self


class EncoderConfig(_Section):
    """One feature extractor; ``model: embedded`` is the offline default shipped in a PyPI
    package."""

    kind: Literal["whisper-ct2", "hf-speech", "hf-text", "egemaps"]
    model: str = "embedded"
    layer: int | Literal["all"] = -1
    pad_to_seconds: Positive | None = None  #: Whisper only: None = the clip's own length
    max_seconds: Positive | None = None  #: speech: crop longer clips (the reference crops at 12 s)
    max_tokens: Count = 128  #: text: tokens kept (the reference uses 128)
    batch_size: Count = 16
    #: inputs sorted by length within this many batches (1 or 0 = manifest order)
    bucket_batches: Annotated[int, Field(ge=0)] = 8


class ASRConfig(_Section):
    """Offline ASR for utterances without a transcript (when the text modality is used)."""

    fill_missing: bool = True  #: transcribe rows with no text; False = leave them out of training
    model: str = "embedded"  #: "embedded" (Whisper tiny.en) or a CTranslate2 Whisper folder
    language: str | None = "en"  #: multilingual models only; None = detect per clip
    beam_size: Count = 1


class ModelConfig(_Section):
    """The model (crabser.models.registry) and its sizes (Crab paper: h = 512, one attention
    head)."""

    #: crab, a compared system (wavlm_baseline, focalser, memocmt, medusa), or mll (multi-loss
    #: learning; train it with loss.name: multi_loss)
    name: Literal["crab", "wavlm_baseline", "focalser", "memocmt", "medusa", "mll"] = "crab"
    hidden: Count = 512
    heads: Count = 1
    dropout: Dropout = 0.5
    attention_dropout: Dropout = 0.5
    leg_dim: Count = 512
    leg_hidden_unimodal: Count = 256
    leg_hidden: Count = 512
    #: where the unimodal legs read: "gru" = mean of the bi-GRU outputs (paper),
    #: "projection" = mean of the FC+LayerNorm output before the GRU (reference code)
    unimodal_leg_input: Literal["gru", "projection"] = "gru"
    #: Crab only: the classifier also reads the mean and std over time of each modality's
    #: normalised input frames, beside the attention-pooled sequences (a linear-probe path into
    #: the head; not in the paper)
    input_statistics: bool = False
    #: average runs of this many speech frames before the bi-GRU (1 = the paper; >1 saves CPU time)
    speech_frame_stride: Count = 1
    #: the input streams, in order ("speech", "text", "paralinguistic"); one = a unimodal Crab
    modalities: list[Literal["speech", "text", "paralinguistic"]] = ["speech", "text"]
    #: average runs of this many paralinguistic frames (eGeMAPS LLDs come at 100 Hz)
    paralinguistic_frame_stride: Count = 4
    #: z-normalise speech and text inputs with the training split's mean/std (reference code)
    normalize_inputs: bool = True
    #: speaker (or corpus) normalisation of the speech frames, on cached features: each
    #: utterance's frames are z-normalised with the mean/std over all frames of its speaker's
    #: (corpus's) utterances in the manifest, the held-out ones included (their audio, never their
    #: labels), then mapped onto the training split's statistics, which the model keeps.
    #: Prediction without a group's statistics is therefore the plain training-split
    #: normalisation; with them (``Recognizer.adapt_to``, ``crabser predict --adapt``) it is the
    #: group's. Not in the paper (Schuller et al.'s cross-corpus speaker/corpus normalisation).
    #: None = off
    normalize_per: Literal["speaker", "corpus"] | None = None
    aggregation: Literal["min", "mean", "max"] = "min"  #: memocmt: pooling of the fused sequence
    #: medusa: MixUp of the branch embeddings, lambda ~ Beta(a, a); 0 = off
    mixup_alpha: NonNegative = 0.0
    embedding_dim: Count = 64  #: mll: the center-loss and frame SupCon space (the paper: 64)
    #: training only, every model: speech frames zeroed in spans of ``mask_span`` frames (each frame
    #: starts one with probability mask_time / mask_span: .18 of the frames at .2), and each speech
    #: channel zeroed per clip with probability mask_features (after input normalisation;
    #: models.blocks.InputMasking). A regulariser for heads on frozen features; 0 = off
    mask_time: Fraction = 0.0
    mask_features: Fraction = 0.0
    mask_span: Count = 5


class LossConfig(_Section):
    """Classification loss + alpha * mean leg loss (paper eq. 8; the rows of table IV:
    training.objective), or (``name: multi_loss``) the multi-loss paper's KL + focal + center +
    frame SupCon."""

    name: Literal["standard", "multi_loss"] = "standard"
    classifier: Literal["ce", "focal"] = "ce"  #: the loss on the logits
    focal_gamma: NonNegative = 2.0  #: focal loss only
    class_weights: bool = True  #: w_j = N / N_j from the training split (eq. 9)
    #: where the supervision legs attach: every tap (MLCS), the classifier's tap only, or nowhere
    legs: Literal["all", "final", "none"] = "all"
    #: ce = multi-layer supervision with CE heads
    leg_loss: Literal["mpcl", "supcon", "ce"] = "mpcl"
    supcon_variant: Literal["out", "in"] = "out"  #: leg_loss supcon: Khosla et al.'s L_out or L_in
    alpha: NonNegative = 2.0
    tau: Positive = 0.1
    #: MPCL's mean: over all anchors, those without a positive in the batch counting 0 (the
    #: reference code), or over the anchors with a positive only (losses.mpcl explains the
    #: difference)
    mpcl_anchors: Literal["all", "with_positive"] = "all"
    #: StackingSER's neutral (train.neutral_label) vs. expressive soft-margin term; 0 = off,
    #: theirs: 1
    soft_margin_weight: NonNegative = 0.0
    #: multi_loss: weights of KL, focal, center and frame-level SupCon (eq. 11; the paper gives
    #: none)
    multi_loss_weights: tuple[NonNegative, NonNegative, NonNegative, NonNegative] = (
        1.0,
        1.0,
        1.0,
        1.0,
    )
    center_lr: Positive = 5.0e-3  #: multi_loss: the class centres' own learning rate (the paper's)
    #: multi_loss: frames sampled per batch for the frame SupCon (memory bound)
    max_frames: Count = 4096


class TrainConfig(_Section):
    """Optimisation (paper: AdamW, cosine, head 1e-5 / encoders 1e-6, batch 32, accumulation 4)."""

    epochs: Count = 20
    #: stop when the val UAR has not improved for this many epochs (the best checkpoint is kept);
    #: None trains all ``epochs`` (the paper). The cosine schedule still spans ``epochs``.
    patience: int | None = Field(None, ge=1)
    #: after the fit, train again from scratch on the training and validation utterances together
    #: for the number of epochs validation chose (same schedule), and make that the run's model
    #: (training.fit.refit). Not in the paper; as scikit-learn's refit after a grid search. False =
    #: the best checkpoint by validation UAR
    refit: bool = False
    batch_size: Count = 32
    accumulate: Count = 4
    lr_head: Positive = 1e-5
    lr_encoder: NonNegative = 1e-6  #: 0 keeps the encoders as they are (fine-tuning)
    #: the learnable layer weights (``speech.layer: all``) in a group of their own at this LR,
    #: without weight decay; None = with the head. Their softmax starts uniform, and at the head's
    #: LR a few hundred steps hardly move it
    lr_layer_weights: Positive | None = None
    min_lr_ratio: Fraction = 0.1  #: cosine floor as a fraction of the peak (reference: 1e-6 / 1e-5)
    weight_decay: NonNegative = 0.01
    seed: int = 0
    accelerator: str = "auto"
    devices: int | str = "auto"  #: a count >= 1, -1 (all), "auto" or Lightning's device list
    strategy: str = "auto"
    precision: str = "32-true"
    threads: Count | None = None  #: torch CPU threads; None = leave torch's default
    #: train the speech/text encoders too (hf-speech / hf-text), from raw audio (training.finetune)
    finetune: bool = False
    gradient_checkpointing: bool = True  #: fine-tuning: trade compute for encoder activation memory
    workers: int = Field(0, ge=0)  #: fine-tuning: DataLoader worker processes decoding audio
    progress: bool = True
    #: adam (no weight decay) for the multi-loss recipe
    optimizer: Literal["adamw", "adam"] = "adamw"
    #: cosine to min_lr_ratio (Crab), or exponential: x lr_decay per epoch (multi-loss: 7/8)
    schedule: Literal["cosine", "exponential"] = "cosine"
    lr_decay: Positive = 0.875
    #: optimizer steps over which every LR rises linearly to its value (training.optim); not in
    #: the paper or the reference code (none); fine-tuning at the CPU recipes' higher LRs may
    #: need it
    warmup_steps: int = Field(0, ge=0)
    #: energy-adaptive mixup of training waveforms (data.augment); needs raw audio: train.finetune
    eam: bool = False
    #: training batches (data.sampling): shuffle; length_bucketed (similar lengths, less padding);
    #: every class alike; neutral_share neutral; or (data.corpora) every corpus alike, with class
    #: weights from the classes as these batches hold them. Fine-tuning from raw audio buckets by
    #: length unless a balanced sampler is asked for.
    sampler: Literal[
        "shuffle", "length_bucketed", "class_balanced", "neutral_expressive", "corpus_balanced"
    ] = "length_bucketed"
    #: length_bucketed: batches per pool sorted by length (more: less padding, less random). 4: 1.4x
    #: (EmoDB, MELD text) faster training than shuffle at the same validation UAR (README)
    bucket_pool: Count = 4
    neutral_label: str = "neutral"  #: neutral_expressive: the neutral class
    #: neutral_expressive: its share of each batch (StackingSER: 0.5)
    neutral_share: Annotated[float, Field(gt=0, lt=1)] = 0.5

    @field_validator("devices")
    @classmethod
    def _some_devices(cls, value: int | str) -> int | str:
        if isinstance(value, int) and value < 1 and value != -1:
            raise ValueError("must be a count >= 1, -1 (all devices) or 'auto'")
        return value


#: model settings that only some models read (the constructor arguments of each model in
#: crabser.models.registry; tests/test_baselines.py holds the two equal)
MODEL_SETTINGS: dict[str, frozenset[str]] = {
    "heads": frozenset({"crab", "focalser", "memocmt", "mll"}),
    "attention_dropout": frozenset({"crab", "focalser", "memocmt", "mll"}),
    "unimodal_leg_input": frozenset({"crab"}),
    "input_statistics": frozenset({"crab"}),
    "aggregation": frozenset({"memocmt"}),
    "mixup_alpha": frozenset({"medusa"}),
    "embedding_dim": frozenset({"mll"}),
}
#: encoder settings and the encoder kinds that read them
ENCODER_SETTINGS: dict[str, frozenset[str]] = {
    "layer": frozenset({"hf-speech", "hf-text"}),
    "pad_to_seconds": frozenset({"whisper-ct2", "hf-speech"}),
    "max_seconds": frozenset({"hf-speech"}),
    "max_tokens": frozenset({"hf-text"}),
}


def _loss_reads(loss: LossConfig) -> set[str]:
    """The loss settings that ``loss`` reads, of those only some objectives read."""
    if loss.name == "multi_loss":
        return {"focal_gamma", "tau", "multi_loss_weights", "center_lr", "max_frames"}
    reads = {"classifier", "soft_margin_weight"}
    reads |= {"focal_gamma"} if loss.classifier == "focal" else set()
    if loss.legs != "none":
        reads |= {"alpha"}
        reads |= {"tau"} if loss.leg_loss in ("mpcl", "supcon") else set()
        reads |= {"mpcl": {"mpcl_anchors"}, "supcon": {"supcon_variant"}}.get(loss.leg_loss, set())
    return reads


#: loss settings only some objectives read (_loss_reads says which)
LOSS_SETTINGS = (
    "focal_gamma",
    "tau",
    "alpha",
    "mpcl_anchors",
    "supcon_variant",
    "multi_loss_weights",
    "center_lr",
    "max_frames",
    "classifier",
    "soft_margin_weight",
)


def _objective(loss: LossConfig) -> str:
    """The objective a loss section describes, in the settings that choose it."""
    if loss.name == "multi_loss":
        return "loss.name multi_loss"
    return (
        f"loss.classifier {loss.classifier}, loss.legs {loss.legs}, loss.leg_loss {loss.leg_loss}"
    )


def ignored_settings(config: RunConfig) -> list[str]:
    """Settings given a value other than their default that the chosen model, loss or encoder
    does not read, each with why (a misplaced or forgotten setting would otherwise do nothing)."""
    found = []
    model = config.model
    for name, models in MODEL_SETTINGS.items():
        if (
            getattr(model, name) != ModelConfig.model_fields[name].default
            and model.name not in models
        ):
            found.append(f"model.{name} (read by {', '.join(sorted(models))}, not {model.name})")
    if model.normalize_per is not None and (
        not model.normalize_inputs or config.train.finetune or "speech" not in model.modalities
    ):
        found.append(
            "model.normalize_per (read on cached speech features with model.normalize_inputs)"
        )
    data = config.data
    if data.val_balance != "none" and (data.protocol != "folds" or not data.corpora):
        found.append("data.val_balance (read with data.protocol folds over several data.corpora)")
    reads = _loss_reads(config.loss)
    for name in LOSS_SETTINGS:
        if (
            name not in reads
            and getattr(config.loss, name) != LossConfig.model_fields[name].default
        ):
            found.append(f"loss.{name} (not read by {_objective(config.loss)})")
    for section in ("speech", "text", "paralinguistic"):
        encoder = config.encoder_config(section)
        for name, kinds in ENCODER_SETTINGS.items():
            default = EncoderConfig.model_fields[name].default
            if getattr(encoder, name) != default and encoder.kind not in kinds:
                found.append(
                    f"{section}.{name} (read by {', '.join(sorted(kinds))}, not {encoder.kind})"
                )
    return found


class RunConfig(_Section):
    """Everything one run needs; stored resolved in the run folder."""

    name: str = "crab"
    output_dir: str = "runs"
    cache_dir: str = "cache/features"
    data: DataConfig = DataConfig()
    speech: EncoderConfig = EncoderConfig(kind="whisper-ct2")
    text: EncoderConfig = EncoderConfig(kind="hf-text")
    paralinguistic: EncoderConfig = EncoderConfig(kind="egemaps")
    asr: ASRConfig = ASRConfig()
    model: ModelConfig = ModelConfig()
    loss: LossConfig = LossConfig()
    train: TrainConfig = TrainConfig()

    def encoder_config(self, modality: str) -> EncoderConfig:
        """The encoder settings of one modality."""
        return getattr(self, modality)

    @field_validator("speech", "text", "paralinguistic", mode="before")
    @classmethod
    def _default_kind(cls, value: Any, info: ValidationInfo) -> Any:
        # a section given in part (``-o speech.layer=2``) keeps its modality's default kind
        if isinstance(value, dict) and "kind" not in value:
            default = cls.model_fields[str(info.field_name)].default
            return {"kind": default.kind, **value}
        return value

    @property
    def run_dir(self) -> Path:
        """The folder of this run's checkpoints and report."""
        return Path(self.output_dir) / self.name

    @model_validator(mode="after")
    def _nothing_ignored(self, info: ValidationInfo) -> RunConfig:
        if (info.context or {}).get("saved"):  # a run saved before the check existed still loads
            return self
        ignored = ignored_settings(self)
        if ignored:
            raise ValueError(
                "settings the chosen model, loss or encoder does not read (set them back to their "
                f"defaults or remove them): {'; '.join(ignored)}"
            )
        return self


#: settings whose default changed: the value a run saved before the setting existed had, where it
#: differs from today's default (read by saved_section)
SAVED_BEFORE: dict[str, dict[str, Any]] = {"loss": {"mpcl_anchors": "with_positive"}}
SAVED_SECTIONS: dict[str, type[_Section]] = {
    "model": ModelConfig,
    "loss": LossConfig,
    "train": TrainConfig,
}


def saved_section(name: str, saved: Mapping[str, Any]) -> Any:
    """The ``model``, ``loss`` or ``train`` section from the settings a checkpoint or an exported
    model saved (a dump of the section when it was trained), re-validated: a setting it lacks takes
    the value it had before it existed (:data:`SAVED_BEFORE`), else today's default; a setting since
    removed is dropped. The one place where older checkpoints are upgraded, so the models, losses
    and training read every setting from a complete section."""
    section = SAVED_SECTIONS[name]
    known = {key: value for key, value in saved.items() if key in section.model_fields}
    legacy = {key: value for key, value in SAVED_BEFORE.get(name, {}).items() if key not in saved}
    return section.model_validate({**legacy, **known})


def _parse_yaml(text: str, source: str) -> Any:
    """YAML text as Python values; ConfigError naming ``source`` and the line if it is not YAML."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        problem = getattr(error, "problem", None) or type(error).__name__
        raise ConfigError(f"{source}: invalid YAML{where}: {problem}") from None


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Set ``a.b=value`` entries (value parsed as YAML) in a nested dict."""
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not of the form key.sub=value")
        key, value = item.split("=", 1)
        node = raw
        parts = key.strip().split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {item!r}: {part!r} is not a section")
        node[parts[-1]] = _parse_yaml(value, f"override {item!r}")
    return raw


def validation_message(error: ValidationError) -> str:
    """A pydantic error as one line: ``key.sub: problem (got value)`` for each bad value."""
    parts = []
    for item in error.errors():
        key = ".".join(str(part) for part in item["loc"])
        whole = not item["loc"] and isinstance(item.get("input"), dict)  # a check across sections
        shown = (
            whole
            or item["type"] in ("missing", "extra_forbidden")
            or str(item.get("input")) in item["msg"]
        )
        got = "" if shown else f" (got {item.get('input')!r})"
        problem = (
            "unknown key"
            if item["type"] == "extra_forbidden"
            else item["msg"].replace("Value error, ", "")
        )
        parts.append(f"{key}: {problem}{got}" if key else f"{problem}{got}")
    return "; ".join(parts)


Model = TypeVar("Model", bound=BaseModel)


def read_yaml_file(path: str | Path, what: str = "config file") -> dict[str, Any]:
    """The mapping in a YAML file (empty file: {}); ConfigError naming the file when it is missing,
    unreadable, not UTF-8, not YAML or not a mapping."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: {what} not found")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(f"{path}: cannot read the {what} ({error})") from None
    raw = _parse_yaml(text, str(path)) or {}
    if not isinstance(raw, dict):
        raise ConfigError(
            f"{path}: a {what} is a YAML mapping of sections, got {type(raw).__name__}"
        )
    return raw


def validated(
    model: type[Model], raw: dict[str, Any], source: object, saved: bool = False
) -> Model:
    """``model`` validated from ``raw``; one-line ConfigError naming ``source`` and each bad key.
    ``saved``: a config a run saved (settings it would not read are let through)."""
    try:
        return model.model_validate(raw, context={"saved": saved})
    except ValidationError as error:
        raise ConfigError(f"{source}: {validation_message(error)}") from None


def load_config(
    path: str | Path | None = None,
    overrides: list[str] | None = None,
    check_outputs: bool = True,
    saved: bool = False,
) -> RunConfig:
    """Read a YAML config (or the defaults), apply overrides, and validate; ``check_outputs``:
    refuse an ``output_dir`` / ``cache_dir`` that is (or lies under) a file, before anything
    runs; ``saved``: a run folder's config (see :func:`validated`)."""
    raw = read_yaml_file(path) if path is not None else {}
    config = validated(RunConfig, apply_overrides(raw, overrides or []), path or "config", saved)
    if check_outputs:
        for key in ("output_dir", "cache_dir"):
            blocker = file_in_the_way(getattr(config, key))
            if blocker is not None:
                raise ConfigError(f"{path or 'config'}: {key}: {blocker} is a file, not a folder")
    return config


def dump_config(config: RunConfig) -> str:
    """The resolved config as YAML."""
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)


def _field_comments(section: type[BaseModel]) -> dict[str, str]:
    """Each field's ``#:`` comment in this module's source (the lines above it and the one beside
    it, joined)."""
    import inspect

    comments: dict[str, str] = {}
    above: list[str] = []
    for line in inspect.getsource(section).splitlines()[1:]:
        text = line.strip()
        if text.startswith("#:"):
            above.append(text[2:].strip())
            continue
        name, colon, rest = text.partition(":")
        if colon and name.isidentifier() and name in section.model_fields:
            beside = rest.split("#:", 1)[1].strip() if "#:" in rest else ""
            comments[name] = " ".join([*above, beside]).strip()
        above = []
    return comments


def commented_yaml(config: RunConfig) -> str:
    """``config`` as YAML with each setting's comment from the schema above it (``crabser
    config``): the defaults, or a resolved config, readable as a reference of every setting."""
    import textwrap

    def dumped(item: Any) -> Any:
        if isinstance(item, BaseModel):
            return item.model_dump(mode="json")
        if isinstance(item, list):
            return [dumped(i) for i in item]
        return item

    def block(section: BaseModel, indent: str) -> list[str]:
        lines = []
        comments = _field_comments(type(section))
        for name in type(section).model_fields:
            item = getattr(section, name)
            width = 100 - len(indent) - 2
            lines += [f"{indent}# {text}" for text in textwrap.wrap(comments.get(name, ""), width)]
            if isinstance(item, _Section):
                lines.append(f"{indent}{name}:")
                lines += block(item, indent + "  ")
            else:
                flow = yaml.safe_dump(dumped(item), default_flow_style=True, width=10**6)
                lines.append(f"{indent}{name}: {flow.strip().removesuffix('...').strip()}")
        return lines

    return "\n".join(block(config, "")) + "\n"


def load_run_config(run_dir: Path, overrides: list[str] | None = None) -> RunConfig:
    """The resolved config stored in a run folder."""
    path = Path(run_dir) / "config.yaml"
    if not path.is_file():
        raise ConfigError(f"{run_dir}: not a run folder (no config.yaml)")
    run_dir = Path(run_dir)
    # a saved run is read to evaluate, predict or export: its cache_dir may not exist where it is
    # read
    overrides = [f"output_dir={run_dir.parent}", f"name={run_dir.name}", *(overrides or [])]
    return load_config(path, overrides, check_outputs=False, saved=True)
