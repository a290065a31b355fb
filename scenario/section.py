"""The base of the scenario's newer sections (curation, its crowd): the schema's kind of model
(unknown fields refused, frozen, no inf/nan, no bool taken for a number), kept apart from
scenario/schema.py so the sections it imports can share it without importing it back."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False, strict=True)
