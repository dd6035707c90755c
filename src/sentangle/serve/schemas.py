"""The API's request and response bodies (pydantic): what /docs shows and what is checked."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, FiniteFloat


class PredictRequest(BaseModel):
    """One clip as JSON. Media files go as multipart/form-data instead (fields text, model, audio, video)."""

    model_config = ConfigDict(extra="forbid")

    text: str | None = Field(None, description="the transcript; omitted: text is missing")
    model: str | None = Field(None, description="a name from GET /v1/models; default: the first model served")
    features: dict[str, list[list[FiniteFloat]]] | None = Field(
        None,
        description="features per modality as the model's extractor gives them (frames x dims, before "
        "normalisation), e.g. {'audio': [[...], ...]}",
    )


class BatchRequest(BaseModel):
    """Several texts (a bare JSON list of strings is read as `texts`); a CSV of clips goes as
    multipart/form-data (fields file, model)."""

    model_config = ConfigDict(extra="forbid")

    texts: list[str] = Field(description="one transcript per clip")
    model: str | None = None


class Prediction(BaseModel):
    model: str = Field(description="the model that predicted")
    id: str | None = Field(None, description="batch only: the clip's id (its index, or video_id$_$clip_id)")
    score: float | None = Field(None, description="regression: the predicted sentiment (the model's label range)")
    polarity: str | None = Field(None, description="regression on a symmetric scale: negative, neutral or positive")
    label: str | None = Field(None, description="classification: the predicted class")
    probabilities: dict[str, float] | None = Field(None, description="classification: per class")
    contributions: dict[str, float] = Field(
        description="per modality given: the score minus the score with that modality missing (for a classifier, "
        "the change in the predicted class's probability)"
    )
    diagnostics: dict[str, float] = Field(description="the model's gates and branch weights, where it has them")
    missing: list[str] = Field(description="modalities the model reads that the input lacked (read as missing)")


class BatchError(BaseModel):
    id: str
    error: str


class BatchResponse(BaseModel):
    model: str
    predictions: list[Prediction]
    errors: list[BatchError] = Field(description="clips that could not be predicted, with the reason")


class MetricsTable(BaseModel):
    caption: str
    seeds: list[int]
    rows: list[dict[str, str]]


class ModelCard(BaseModel):
    name: str = Field(description="what `model` in a request names")
    title: str
    model: str | None = Field(description="the architecture")
    options: dict
    task: str
    class_names: list[str] | None
    label_range: list[float] | None
    dataset: dict | None = Field(description="what it was trained on")
    modalities: list[str]
    input_dims: dict[str, int]
    text_encoder: dict | None
    extractors: dict = Field(description="how audio and vision features were extracted (media input)")
    metrics: list[MetricsTable] = Field(description="the card's metric tables: this seed, and the run over its seeds")
    card: str = Field(description="the model card (README.md of the model folder), Markdown")


class Models(BaseModel):
    default: str
    models: list[ModelCard]


class Health(BaseModel):
    status: str
    version: str
    models: list[str]


class Problem(BaseModel):
    detail: str
