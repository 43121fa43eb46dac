"""The base of every document that crosses from the operator side to the pods or back."""

from __future__ import annotations

from typing import Any, TypeVar, Union

from pydantic import BaseModel, ConfigDict
from pydantic.alias_generators import to_camel

D = TypeVar("D", bound="Document")


class Document(BaseModel):
    """camelCase JSON on the wire; one encode and one decode per document type."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")

    def wire(self) -> dict[str, Any]:
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)

    def encode(self, indent: int | None = None) -> str:
        return self.model_dump_json(by_alias=True, exclude_none=True, indent=indent)

    @classmethod
    def of(cls: type[D], settings: BaseModel, **more: Any) -> D:
        """This document from a model that shares its fields (a spec model derived from it), plus
        the fields only this document has."""
        shared = settings.model_dump(include=set(cls.model_fields) & set(type(settings).model_fields))
        return cls.model_validate({**shared, **more})

    @classmethod
    def decode(cls: type[D], text: Union[str, bytes]) -> D:
        return cls.model_validate_json(text)

    @classmethod
    def read(cls: type[D], message: Union[str, bytes]) -> D:
        """The document in a termination message; an empty one (every field defaulted) when it holds none."""
        try:
            return cls.decode(message)
        except ValueError:
            return cls()
